"""Ingestion over REST: PUT/POST/DELETE, transaction and batch Bundles, $ingest, $validate and the
what-to-send page, on SQLite and PostgreSQL (the ``client`` fixture), with the store checked
directly after each write."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from fhir_adapter.api.app import create_app
from fhir_adapter.fhir.resources import ID_RE
from fhir_adapter.ingest.quality import CHECKS, DQ_SYSTEM
from fhir_adapter.settings import Settings
from fhir_adapter.store.db import ParsedResource, Store, canonical_bytes, content_hash
from tests import cohorts as c

FHIR = {"content-type": "application/fhir+json"}
NDJSON = {"content-type": "application/fhir+ndjson"}
Resource = dict[str, Any]


@pytest.fixture
def api_settings(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(update={"spool_dir": tmp_path / "spool"})


@pytest.fixture
def custom_client(store: Store, settings: Settings, tmp_path: Path) -> Iterator[Any]:
    """A client factory for apps with other settings, on the same store."""
    opened: list[TestClient] = []

    def make(**update: Any) -> TestClient:
        app = create_app(settings.model_copy(update={"spool_dir": tmp_path / "spool", **update}), store=store)
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)


def _outcome(response: Any) -> dict[str, Any]:
    assert response.headers["content-type"].startswith("application/fhir+json"), response.headers
    body: dict[str, Any] = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    return body


def _current(store: Store, source: str = "rest") -> dict[tuple[str, str], tuple[int, int]]:
    """(type, id) -> (version, deleted) of the current versions in ``source``."""
    with store.read() as conn:
        rows = conn.execute(
            text(
                "SELECT rtype, rid, version, deleted FROM resources WHERE source = :s AND superseded_at IS NULL"
            ),
            {"s": source},
        )
        return {(t, i): (int(v), int(d)) for t, i, v, d in rows}


def _count(store: Store) -> int:
    with store.read() as conn:
        return int(conn.execute(text("SELECT COUNT(*) FROM resources")).scalar_one())


def _body(store: Store, rtype: str, rid: str, source: str = "rest") -> Resource:
    with store.read() as conn:
        raw = conn.execute(
            text(
                "SELECT b.body FROM resources r JOIN resource_bodies b ON b.rkey = r.rkey WHERE r.source = :s "
                "AND r.rtype = :t AND r.rid = :i AND r.superseded_at IS NULL"
            ),
            {"s": source, "t": rtype, "i": rid},
        ).scalar_one()
    value: Resource = orjson.loads(raw)
    return value


def _details(issues: list[dict[str, Any]]) -> list[str]:
    return [i["details"]["coding"][0]["code"] for i in issues if "details" in i]


def _poll(client: TestClient, url: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(url)
        if response.status_code != 202 or time.monotonic() > deadline:
            return response
        time.sleep(0.05)


# --------------------------------------------------------------------------------------------
# PUT, POST, DELETE: every status path

P1 = c.patient("p1", "2021-01-01")
P1_CHANGED = c.patient("p1", "2021-02-02")

WRITE_CASES = [
    # (seed resources, method, path, headers, body, status, ETag or expression)
    pytest.param([], "PUT", "/fhir/Patient/p1", {}, P1, 201, 'W/"1"', id="put-creates-201"),
    pytest.param([P1], "PUT", "/fhir/Patient/p1", {}, P1_CHANGED, 200, 'W/"2"', id="put-updates-200"),
    pytest.param([P1], "PUT", "/fhir/Patient/p1", {}, P1, 200, 'W/"1"', id="put-unchanged-200-same-version"),
    pytest.param([P1], "PUT", "/fhir/Patient/p1", {"If-Match": 'W/"1"'}, P1_CHANGED, 200, 'W/"2"',
                 id="put-if-match-current"),
    pytest.param([P1, P1_CHANGED], "PUT", "/fhir/Patient/p1", {"If-Match": 'W/"1"'}, P1, 412, "Patient/p1",
                 id="put-if-match-stale-412"),
    pytest.param([], "PUT", "/fhir/Patient/p1", {"If-Match": 'W/"1"'}, P1, 412, "Patient/p1",
                 id="put-if-match-on-nothing-412"),
    pytest.param([P1], "PUT", "/fhir/Patient/p1", {"If-Match": "yesterday"}, P1, 400, "If-Match",
                 id="put-if-match-malformed-400"),
    pytest.param([], "PUT", "/fhir/Patient/p1", {}, b'{"resourceType": "Patient", "id"', 400, None,
                 id="put-malformed-json-400"),
    pytest.param([], "PUT", "/fhir/Patient/p1", {}, b"", 400, None, id="put-empty-body-400"),
    pytest.param([], "PUT", "/fhir/Patient/p1", {}, b"[1, 2]", 422, "Resource", id="put-not-an-object-422"),
    pytest.param([], "PUT", "/fhir/Patient/p1", {}, {"resourceType": "Pateint", "id": "p1"}, 422,
                 "Resource.resourceType", id="put-unknown-resource-type-422"),
    pytest.param([], "PUT", "/fhir/Patient/p1", {}, {"id": "p1"}, 422, "Resource.resourceType",
                 id="put-no-resource-type-422"),
    pytest.param([], "PUT", "/fhir/Patient/p1", {}, c.encounter("p1", "p", "2025-01-01"), 400,
                 "Encounter.resourceType", id="put-type-not-the-url-type-400"),
    pytest.param([], "PUT", "/fhir/Patient/p1", {}, c.patient("p2", None), 400, "Patient.id",
                 id="put-id-not-the-url-id-400"),
    pytest.param([], "PUT", "/fhir/Patient/p1", {}, {"resourceType": "Patient"}, 400, "Patient.id",
                 id="put-no-id-400"),
    pytest.param([], "PUT", "/fhir/Patient/" + "x" * 65, {}, P1, 400, None, id="put-invalid-url-id-400"),
    pytest.param([], "PUT", "/fhir/Widget/w1", {}, {"resourceType": "Widget", "id": "w1"}, 404, None,
                 id="put-unknown-type-404"),
    pytest.param([], "PUT", "/fhir/Measure/m1", {}, {"resourceType": "Measure", "id": "m1"}, 404, None,
                 id="put-type-not-accepted-404"),
    pytest.param([], "PUT", "/fhir/Patient/p1", {"content-type": "text/plain"}, P1, 415, None,
                 id="put-text-plain-415"),
    pytest.param([], "PUT", "/fhir/Patient/p1", {"content-type": "application/xml"}, P1, 415, None,
                 id="put-xml-415"),
    pytest.param([], "POST", "/fhir/Patient", {}, c.patient("ignored", "2021-01-01"), 201, 'W/"1"',
                 id="post-creates-201"),
    pytest.param([], "POST", "/fhir/Patient", {}, c.encounter("e", "p", "2025-01-01"), 400,
                 "Encounter.resourceType", id="post-type-not-the-url-type-400"),
    pytest.param([], "POST", "/fhir/Patient", {}, b"{", 400, None, id="post-malformed-json-400"),
    pytest.param([], "POST", "/fhir/Patient", {"content-type": "text/csv"}, P1, 415, None, id="post-415"),
    pytest.param([P1], "DELETE", "/fhir/Patient/p1", {}, None, 204, 'W/"2"', id="delete-204"),
    pytest.param([], "DELETE", "/fhir/Patient/nobody", {}, None, 204, None, id="delete-missing-204"),
    pytest.param([P1], "DELETE", "/fhir/Patient/p1", {"If-Match": 'W/"7"'}, None, 412, "Patient/p1",
                 id="delete-if-match-stale-412"),
    pytest.param([], "DELETE", "/fhir/Widget/w1", {}, None, 404, None, id="delete-unknown-type-404"),
]  # fmt: skip


@pytest.mark.parametrize(("seed", "method", "path", "headers", "body", "status", "check"), WRITE_CASES)
def test_write_status_paths(
    client: TestClient,
    store: Store,
    seed: list[Resource],
    method: str,
    path: str,
    headers: dict[str, str],
    body: Resource | bytes | None,
    status: int,
    check: str | None,
) -> None:
    for resource in seed:
        assert client.put(f"/fhir/Patient/{resource['id']}", json=resource).status_code in (200, 201)
    before = _current(store)
    content = body if isinstance(body, bytes) or body is None else orjson.dumps(body)
    response = client.request(method, path, content=content, headers={**FHIR, **headers})
    assert response.status_code == status, response.text
    if status >= 400:
        issue = _outcome(response)["issue"][0]
        assert issue["severity"] == "error"
        if check is not None:
            assert issue["expression"] == [check]
        assert _current(store) == before, "a refused write changed the store"
        return
    assert response.headers.get("ETag") == check
    if method == "DELETE":
        assert response.content == b""
        return
    served = response.json()
    rid = served["id"]
    assert ID_RE.match(rid)
    version = served["meta"]["versionId"]
    assert response.headers["Location"] == f"http://testserver/fhir/Patient/{rid}/_history/{version}"
    assert served["meta"]["source"] == "rest"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", served["meta"]["lastUpdated"])
    assert "Last-Modified" in response.headers
    assert _current(store)[("Patient", rid)] == (int(version), 0)
    if method == "POST":
        assert rid != "ignored" and re.fullmatch(r"[0-9a-f]{32}", rid)


def test_delete_writes_a_tombstone_and_put_revives(client: TestClient, store: Store) -> None:
    client.put("/fhir/Patient/p1", json=P1)
    assert client.delete("/fhir/Patient/p1").status_code == 204
    assert _current(store)[("Patient", "p1")] == (2, 1)
    assert client.delete("/fhir/Patient/p1").headers["ETag"] == 'W/"2"'  # idempotent
    revived = client.put("/fhir/Patient/p1", json=P1)
    assert (revived.status_code, revived.headers["ETag"]) == (200, 'W/"3"')


@pytest.mark.parametrize(
    ("prefer", "kind"),
    [
        pytest.param(None, "Patient", id="default-representation"),
        pytest.param("return=representation", "Patient", id="representation"),
        pytest.param("return=minimal", None, id="minimal"),
        pytest.param("return=OperationOutcome", "OperationOutcome", id="operation-outcome"),
    ],
)
def test_prefer_return(client: TestClient, prefer: str | None, kind: str | None) -> None:
    headers = {"Prefer": prefer} if prefer else {}
    response = client.put("/fhir/Patient/p1", json=c.patient("p1", None, unlinked=True), headers=headers)
    assert response.status_code == 201
    assert response.headers["ETag"] == 'W/"1"'
    if kind is None:
        assert response.content == b""
        return
    assert response.json()["resourceType"] == kind
    if kind == "OperationOutcome":
        assert _details(response.json()["issue"]) == ["patient-no-member-id", "patient-no-birth-date"]


def test_writes_are_stored_under_the_callers_source(client: TestClient, store: Store) -> None:
    client.put("/fhir/Patient/p1", json=P1)
    assert _current(store, "rest") == {("Patient", "p1"): (1, 0)}
    assert _body(store, "Patient", "p1") == P1
    assert _current(store, "other") == {}
    client.put("/fhir/Patient/p1", json=P1)
    metrics = client.get("/metrics").text
    assert 'fhir_adapter_resources_written_total{outcome="created"} 1.0' in metrics
    assert 'fhir_adapter_resources_written_total{outcome="unchanged"} 1.0' in metrics


@pytest.mark.parametrize(
    ("existing", "header", "status", "count"),
    [
        pytest.param(0, f"identifier={c.MEMBER}|M-7", 201, 1, id="no-match-creates"),
        pytest.param(1, f"identifier={c.MEMBER}|M-7", 200, 1, id="one-match-returns-it"),
        pytest.param(2, f"identifier={c.MEMBER}|M-7", 412, 2, id="two-matches-412"),
        pytest.param(1, "identifier=M-7", 200, 1, id="any-system"),
        pytest.param(1, "identifier=https://other|M-7", 201, 2, id="other-system-creates"),
        pytest.param(1, "name=Zoe", 400, 1, id="unsupported-criterion-400"),
    ],
)
def test_if_none_exist(
    client: TestClient, store: Store, existing: int, header: str, status: int, count: int
) -> None:
    for n in range(existing):
        client.put(f"/fhir/Patient/old{n}", json=c.patient(f"old{n}", "2021-01-01", member="M-7"))
    # the same identifier in another source never matches: conditional create is per source
    store.write_batch(
        "other-ehr", [ParsedResource("Patient", "elsewhere", c.patient("elsewhere", None, member="M-7"))], 1
    )
    response = client.post(
        "/fhir/Patient", json=c.patient("x", "2021-01-01", member="M-7"), headers={"If-None-Exist": header}
    )
    assert response.status_code == status, response.text
    if status == 200:
        assert response.json()["id"] == "old0"
        assert response.headers["ETag"] == 'W/"1"'
    if status == 412:
        assert "matches 2" in _outcome(response)["issue"][0]["diagnostics"]
    assert len([k for k in _current(store) if k[0] == "Patient"]) == count


def test_concurrent_if_match_puts_one_wins(client: TestClient, store: Store) -> None:
    """Two PUTs with the same If-Match from two threads: exactly one succeeds, the other gets 412,
    and the versions stay 1, 2."""
    client.put("/fhir/Patient/p1", json=P1)
    barrier = threading.Barrier(2)
    statuses: list[int] = []

    def put(birth: str) -> None:
        barrier.wait()
        response = client.put("/fhir/Patient/p1", json=c.patient("p1", birth), headers={"If-Match": 'W/"1"'})
        statuses.append(response.status_code)

    threads = [threading.Thread(target=put, args=(b,)) for b in ("2021-03-03", "2021-04-04")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(statuses) == [200, 412]
    with store.read() as conn:
        versions = [
            (int(v), s is None)
            for v, s in conn.execute(
                text("SELECT version, superseded_at FROM resources WHERE rid = 'p1' ORDER BY version")
            )
        ]
    assert versions == [(1, False), (2, True)]


def test_a_writer_committing_first_gives_409_on_postgresql(
    client: TestClient, store: Store, engine_name: str
) -> None:
    """A bulk writer (no lock) commits version 1 while a PUT waits for it: PostgreSQL's unique
    version constraint fails the PUT (409, send again); SQLite queues writers (the PUT updates)."""
    result: list[int] = []
    thread = threading.Thread(
        target=lambda: result.append(client.put("/fhir/Patient/p1", json=P1).status_code)
    )
    other = c.patient("p1", "2020-01-01")
    body = canonical_bytes(other)
    with store.write() as conn:
        conn.execute(
            text(
                "INSERT INTO resources (rkey, source, rtype, rid, version, ingested_at, superseded_at, deleted, hash) "
                "VALUES (999999, 'rest', 'Patient', 'p1', 1, 1, NULL, 0, :h)"
            ),
            {"h": content_hash(body)},
        )
        conn.execute(text("INSERT INTO resource_bodies (rkey, body) VALUES (999999, :b)"), {"b": body})
        thread.start()
        if engine_name == "postgresql":
            deadline = time.monotonic() + 30
            while True:  # until the PUT waits on our uncommitted row
                with store.engine.connect() as probe:
                    waiting = probe.execute(
                        text("SELECT COUNT(*) FROM pg_locks WHERE NOT granted")
                    ).scalar_one()
                if waiting or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        else:
            time.sleep(0.3)
    thread.join(60)
    if engine_name == "postgresql":
        assert result == [409]
        assert _current(store)[("Patient", "p1")] == (1, 0)
    else:
        assert result == [200]
        assert _current(store)[("Patient", "p1")] == (2, 0)


# --------------------------------------------------------------------------------------------
# transaction and batch

U_PAT = "urn:uuid:0b6f5b8e-9d3c-4d0e-8f57-2c1b7a0f2d11"
U_ENC = "urn:uuid:7a1c0c53-4b88-4b8e-9c43-1f0f3c6c9b22"


def _bundle(kind: str, *entries: Resource) -> Resource:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def _put(resource: Resource, **request: Any) -> Resource:
    return {
        "resource": resource,
        "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}", **request},
    }


def test_transaction_rewrites_urn_uuid_references(client: TestClient, store: Store) -> None:
    patient = c.patient("x", "2021-05-05", member="M-1")
    del patient["id"]
    encounter = c.encounter("enc-1", "x", "2025-02-02") | {"subject": {"reference": U_PAT}}
    condition = c.condition("x", "x") | {"subject": {"reference": U_PAT}, "encounter": {"reference": U_ENC}}
    del condition["id"]
    bundle = _bundle(
        "transaction",
        {"fullUrl": U_PAT, "resource": patient, "request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": U_ENC, **_put(encounter)},
        {"resource": condition, "request": {"method": "POST", "url": "Condition"}},
    )
    response = client.post("/fhir", json=bundle)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["type"] == "transaction-response"
    responses = [e["response"] for e in body["entry"]]
    assert [r["status"] for r in responses] == ["201 Created"] * 3
    pid = responses[0]["location"].split("/")[1]
    cid = responses[2]["location"].split("/")[1]
    assert re.fullmatch(r"[0-9a-f]{32}", pid) and re.fullmatch(r"[0-9a-f]{32}", cid)
    assert responses[1]["location"] == "Encounter/enc-1/_history/1"
    assert all(r["etag"] == 'W/"1"' and r["lastModified"].endswith("Z") for r in responses)
    assert _body(store, "Encounter", "enc-1")["subject"] == {"reference": f"Patient/{pid}"}
    stored_condition = _body(store, "Condition", cid)
    assert stored_condition["subject"] == {"reference": f"Patient/{pid}"}
    assert stored_condition["encounter"] == {"reference": "Encounter/enc-1"}
    # the Condition in the same Bundle names the Encounter: no "no diagnosis" warning
    assert "outcome" not in responses[1]
    assert "outcome" not in responses[0]  # the Patient is clean (member id, birth date)


def test_transaction_response_statuses_and_warnings(client: TestClient, store: Store) -> None:
    client.put("/fhir/Patient/p1", json=P1)
    client.put("/fhir/Patient/p2", json=c.patient("p2", "2021-01-01"))
    bundle = _bundle(
        "transaction",
        _put(P1_CHANGED, ifMatch='W/"1"'),
        _put(c.encounter("e1", "p1", "2025-03", status="planned")),
        {"request": {"method": "DELETE", "url": "Patient/p2"}},
        _put(c.patient("p2b", "2021-01-01")),
    )
    response = client.post("/fhir", json=bundle)
    assert response.status_code == 200, response.text
    responses = [e["response"] for e in response.json()["entry"]]
    assert [r["status"] for r in responses] == ["200 OK", "201 Created", "204 No Content", "201 Created"]
    assert [r.get("etag") for r in responses] == ['W/"2"', 'W/"1"', 'W/"2"', 'W/"1"']
    assert responses[0]["location"] == "Patient/p1/_history/2"
    warnings = responses[1]["outcome"]["issue"]
    assert _details(warnings) == ["encounter-not-finished", "partial-date", "encounter-no-diagnosis"]
    assert {i["severity"] for i in warnings} == {"warning"}
    assert warnings[0]["details"]["coding"][0]["system"] == DQ_SYSTEM
    assert _current(store) == {
        ("Patient", "p1"): (2, 0),
        ("Patient", "p2"): (2, 1),
        ("Patient", "p2b"): (1, 0),
        ("Encounter", "e1"): (1, 0),
    }


GOOD = _put(c.patient("good", "2021-01-01"))
NO_REQUEST: Resource = {"resource": c.patient("q", None)}
TYPE_MISMATCH: Resource = {
    "resource": c.encounter("q", "p", "2025-01-01"),
    "request": {"method": "PUT", "url": "Patient/q"},
}
BAD_ENTRIES = [
    # (bad entry, status, expression of its issue)
    pytest.param("not an object", 400, "Bundle.entry[1]", id="entry-not-an-object"),
    pytest.param(NO_REQUEST, 400, "Bundle.entry[1].request", id="no-request"),
    pytest.param({"request": {"method": "GET", "url": "Patient/q"}}, 400, "Bundle.entry[1].request.method",
                 id="get-not-supported"),
    pytest.param({"resource": c.patient("q", None), "request": {"method": "POST", "url": "Patient/q"}}, 400,
                 "Bundle.entry[1].request.url", id="post-url-with-id"),
    pytest.param({"resource": c.patient("q", None), "request": {"method": "PUT", "url": "Patient"}}, 400,
                 "Bundle.entry[1].request.url", id="put-url-without-id"),
    pytest.param({"resource": c.patient("q", None), "request": {"method": "PUT", "url": "Patient?identifier=x"}},
                 400, "Bundle.entry[1].request.url", id="conditional-url"),
    pytest.param(_put(c.patient("q", None), ifNoneExist="identifier=x"), 400, "Bundle.entry[1].request.ifNoneExist",
                 id="if-none-exist-in-entry"),
    pytest.param({"resource": {"resourceType": "Widget", "id": "w"}, "request": {"method": "PUT", "url": "Widget/w"}},
                 404, "Bundle.entry[1].request.url", id="unknown-type"),
    pytest.param(TYPE_MISMATCH,
                 400, "Bundle.entry[1].resource.resourceType", id="type-not-the-url-type"),
    pytest.param({"resource": c.patient("r", None), "request": {"method": "PUT", "url": "Patient/q"}}, 400,
                 "Bundle.entry[1].resource.id", id="id-not-the-url-id"),
    pytest.param({"resource": {"resourceType": "Pateint", "id": "q"}, "request": {"method": "PUT", "url": "Patient/q"}},
                 422, "Bundle.entry[1].resource.resourceType", id="unknown-resource-type-422"),
    pytest.param({"resource": [1], "request": {"method": "PUT", "url": "Patient/q"}}, 422,
                 "Bundle.entry[1].resource", id="resource-not-an-object-422"),
    pytest.param({"request": {"method": "POST", "url": "Patient"}}, 400, "Bundle.entry[1].resource",
                 id="post-without-resource"),
    pytest.param(_put(c.patient("good", "2020-01-01")), 400, "Bundle.entry[1].request.url",
                 id="same-resource-twice"),
    pytest.param(_put(c.encounter("q", "p", "2025-01-01") | {"subject": {"reference": "urn:uuid:nowhere"}}), 400,
                 "Bundle.entry[1].resource.subject.reference", id="urn-reference-to-no-entry"),
    pytest.param(_put(c.patient("q", None), ifMatch="soon"), 400, "Bundle.entry[1].request.ifMatch",
                 id="malformed-if-match"),
]  # fmt: skip


@pytest.mark.parametrize(("bad", "status", "expression"), BAD_ENTRIES)
def test_transaction_is_all_or_nothing(
    client: TestClient, store: Store, bad: Any, status: int, expression: str
) -> None:
    response = client.post(
        "/fhir", json=_bundle("transaction", GOOD, bad, _put(c.patient("also-good", None)))
    )
    assert response.status_code == status, response.text
    issues = _outcome(response)["issue"]
    assert [i["expression"] for i in issues] == [[expression]]
    assert issues[0]["severity"] == "error"
    assert _count(store) == 0, "a rejected transaction stored something"


def test_transaction_reports_every_bad_entry(client: TestClient, store: Store) -> None:
    bundle = _bundle("transaction", NO_REQUEST, GOOD, TYPE_MISMATCH)
    response = client.post("/fhir", json=bundle)
    assert response.status_code == 400
    assert [i["expression"] for i in _outcome(response)["issue"]] == [
        ["Bundle.entry[0].request"],
        ["Bundle.entry[2].resource.resourceType"],
    ]
    assert _count(store) == 0


def test_transaction_if_match_failure_stores_nothing(client: TestClient, store: Store) -> None:
    client.put("/fhir/Patient/p1", json=P1)
    client.put("/fhir/Patient/p1", json=P1_CHANGED)
    response = client.post("/fhir", json=_bundle("transaction", GOOD, _put(P1, ifMatch='W/"1"')))
    assert response.status_code == 412
    issue = _outcome(response)["issue"][0]
    assert issue["expression"] == ["Bundle.entry[1].request.ifMatch"]
    assert "nothing was stored" in issue["diagnostics"]
    assert _current(store) == {("Patient", "p1"): (2, 0)}


def test_batch_stores_the_good_entries(client: TestClient, store: Store) -> None:
    client.put("/fhir/Patient/p1", json=P1)
    client.put("/fhir/Patient/p1", json=P1_CHANGED)
    client.put("/fhir/Patient/gone", json=c.patient("gone", None))
    bundle = _bundle(
        "batch",
        GOOD,
        TYPE_MISMATCH,
        {"resource": c.encounter("x", "good", "2025-01-01", reason="F43.22"),
         "request": {"method": "POST", "url": "Encounter"}},
        _put(P1, ifMatch='W/"1"'),
        {"request": {"method": "DELETE", "url": "Patient/gone"}},
        _put(c.encounter("e2", "good", "2025-01-01") | {"subject": {"reference": "urn:uuid:x"}}),
        _put(c.patient("p3", "2021-01-01"), ifMatch='W/"1"'),
    )  # fmt: skip
    response = client.post("/fhir", json=bundle)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["type"] == "batch-response"
    responses = [e["response"] for e in body["entry"]]
    assert [r["status"] for r in responses] == [
        "201 Created",
        "400 Bad Request",
        "201 Created",
        "412 Precondition Failed",
        "204 No Content",
        "400 Bad Request",
        "412 Precondition Failed",
    ]
    assert responses[1]["outcome"]["issue"][0]["expression"] == ["Bundle.entry[1].resource.resourceType"]
    assert "use a transaction" in responses[5]["outcome"]["issue"][0]["diagnostics"]
    assert responses[3]["outcome"]["issue"][0]["expression"] == ["Bundle.entry[3].request.ifMatch"]
    encounter_id = responses[2]["location"].split("/")[1]
    assert _current(store) == {
        ("Patient", "good"): (1, 0),
        ("Patient", "p1"): (2, 0),
        ("Patient", "gone"): (2, 1),
        ("Encounter", encounter_id): (1, 0),
    }


def test_bundle_entry_limit_is_413(custom_client: Any, store: Store) -> None:
    client = custom_client(max_bundle_entries=2)
    three = [_put(c.patient(f"p{n}", None)) for n in range(3)]
    for kind in ("transaction", "batch"):
        response = client.post("/fhir", json=_bundle(kind, *three))
        assert response.status_code == 413
        assert _outcome(response)["issue"][0]["code"] == "too-costly"
    assert client.post("/fhir", json=_bundle("batch", *three[:2])).status_code == 200
    assert _count(store) == 2


@pytest.mark.parametrize(
    ("body", "words", "expression"),
    [
        pytest.param(_bundle("collection", GOOD), "$ingest", "Bundle.type", id="collection"),
        pytest.param(_bundle("searchset", GOOD), "transaction or batch", "Bundle.type", id="searchset"),
        pytest.param(_bundle("document", GOOD), "transaction or batch", "Bundle.type", id="document"),
        pytest.param(c.patient("p", None), "POST /fhir/{type}", "Bundle", id="not-a-bundle"),
        pytest.param({"resourceType": "Bundle", "type": "batch", "entry": {}}, "not a list", "Bundle.entry",
                     id="entry-not-a-list"),
    ],
)  # fmt: skip
def test_other_bodies_at_the_base_are_400(
    client: TestClient, store: Store, body: Resource, words: str, expression: str
) -> None:
    response = client.post("/fhir", json=body)
    assert response.status_code == 400
    issue = _outcome(response)["issue"][0]
    assert words in issue["diagnostics"] and issue["expression"] == [expression]
    assert _count(store) == 0


def test_empty_transaction_is_an_empty_response(client: TestClient) -> None:
    response = client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction"})
    assert response.status_code == 200
    assert response.json()["entry"] == []


# --------------------------------------------------------------------------------------------
# $ingest


def _ndjson(*lines: Resource | bytes) -> bytes:
    return b"".join((x if isinstance(x, bytes) else orjson.dumps(x)) + b"\n" for x in lines)


INGEST_BODY = _ndjson(
    c.patient("p1", "2021-01-01"),
    b"",
    b"{broken",
    {"resourceType": "Widget", "id": "w"},
    c.encounter("e1", "p1", "2025-02-02"),
    _bundle("collection", {"resource": c.patient("p2", "2021")}) | {"id": "b1"},
)


def test_ingest_keeps_good_lines_and_reports_bad_ones(client: TestClient, store: Store) -> None:
    response = client.post("/fhir/$ingest", content=INGEST_BODY, headers=NDJSON)
    assert response.status_code == 200, response.text
    issues = _outcome(response)["issue"]
    summary = issues[0]
    assert summary["severity"] == "information"
    assert summary["diagnostics"].startswith(
        "6 lines, 3 resources: created 3, updated 0, unchanged 0, deleted 0, rejected 2"
    )
    assert "encounter-no-diagnosis 1" in summary["diagnostics"]
    errors = [i for i in issues if i["severity"] == "error"]
    assert [(e["expression"], e["diagnostics"][:20]) for e in errors] == [
        (["line 3"], "line 3: not JSON: un"),
        (["line 4"], "line 4: unknown reso"),
    ]
    warnings = [i for i in issues if i["severity"] == "warning"]
    assert [(w["diagnostics"].split(":")[0], _details([w])[0]) for w in warnings] == [
        ("line 5 (Encounter/e1)", "encounter-no-diagnosis"),
        ("line 6 (Patient/p2)", "partial-date"),
    ]
    assert _current(store) == {
        ("Patient", "p1"): (1, 0),
        ("Encounter", "e1"): (1, 0),
        ("Patient", "p2"): (1, 0),
    }
    assert _body(store, "Encounter", "e1") == c.encounter("e1", "p1", "2025-02-02")
    with store.read() as conn:
        kept = [
            tuple(r) for r in conn.execute(text("SELECT source, location FROM ingest_issues ORDER BY id"))
        ]
    assert kept == [("rest", "line 3"), ("rest", "line 4")]
    again = client.post(
        "/fhir/$ingest", content=INGEST_BODY, headers={"content-type": "application/x-ndjson"}
    )
    assert "created 0, updated 0, unchanged 3" in _outcome(again)["issue"][0]["diagnostics"]


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        pytest.param({"content-type": "application/fhir+json"}, INGEST_BODY, 415, id="json-media-type-415"),
        pytest.param({}, INGEST_BODY, 415, id="no-media-type-415"),
        pytest.param({**NDJSON, "content-encoding": "gzip"}, INGEST_BODY, 415, id="gzip-415"),
        pytest.param(NDJSON, b"", 400, id="empty-400"),
        pytest.param(NDJSON, b"\n \n", 400, id="blank-400"),
    ],
)
def test_ingest_refusals(
    client: TestClient, store: Store, headers: dict[str, str], body: bytes, status: int
) -> None:
    response = client.post("/fhir/$ingest", content=body, headers=headers)
    assert response.status_code == status
    _outcome(response)
    assert _count(store) == 0


def test_ingest_lists_at_most_the_cap(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from fhir_adapter.ingest import push

    monkeypatch.setattr(push, "MAX_LISTED_ISSUES", 3)
    body = _ndjson(*[c.patient(f"p{n}", None, unlinked=True) for n in range(4)], b"{x")
    issues = _outcome(client.post("/fhir/$ingest", content=body, headers=NDJSON))["issue"]
    assert len(issues) == 1 + 3 + 1
    assert issues[1]["severity"] == "error"
    assert issues[-1]["diagnostics"] == "6 more issues not listed"


def test_async_ingest_runs_as_a_job(client: TestClient, store: Store, api_settings: Settings) -> None:
    response = client.post(
        "/fhir/$ingest", content=INGEST_BODY, headers={**NDJSON, "Prefer": "respond-async"}
    )
    assert response.status_code == 202, response.text
    url = response.headers["Content-Location"]
    assert url.startswith("http://testserver/fhir/_jobs/")
    done = _poll(client, url.removeprefix("http://testserver"))
    assert done.status_code == 200, done.text
    assert "created 3" in _outcome(done)["issue"][0]["diagnostics"]
    assert len(_current(store)) == 3
    assert api_settings.spool_dir is not None
    assert list(api_settings.spool_dir.iterdir()) == [], "the spool file outlived its job"


def test_large_ingest_goes_async_without_prefer(custom_client: Any, store: Store) -> None:
    client = custom_client(ingest_async_bytes=300)
    small = client.post("/fhir/$ingest", content=_ndjson(c.patient("a", None)), headers=NDJSON)
    assert small.status_code == 200
    big = client.post("/fhir/$ingest", content=INGEST_BODY, headers=NDJSON)
    assert big.status_code == 202
    done = _poll(client, big.headers["Content-Location"].removeprefix("http://testserver"))
    assert done.status_code == 200
    assert ("Encounter", "e1") in _current(store)


def test_ingest_job_without_its_spool_file_fails_clearly(client: TestClient, tmp_path: Path) -> None:
    jobs = client.app.state.jobs  # type: ignore[attr-defined]
    job_id = jobs.submit("ingest", {"path": str(tmp_path / "gone.ndjson"), "sha256": "x", "source": "rest"})
    failed = _poll(client, f"/fhir/_jobs/{job_id}")
    assert failed.status_code == 500
    message = _outcome(failed)["issue"][0]["diagnostics"]
    assert "no longer in the spool folder" in message and "$rerun" in message


# --------------------------------------------------------------------------------------------
# $validate


def _no_id(resource: Resource) -> Resource:
    return {k: v for k, v in resource.items() if k != "id"}


VALIDATE_CASES = [
    # (path, body, expected (severity, code or details code, expression) of the issues)
    pytest.param("/fhir/$validate", c.encounter("e", "p", "2025-02-02"),
                 [("warning", "encounter-no-diagnosis", "Encounter.diagnosis")], id="resource"),
    pytest.param("/fhir/$validate", c.patient("p", "2021-01-01"),
                 [("information", "informational", None)], id="clean-all-ok"),
    pytest.param("/fhir/Encounter/$validate",
                 {"resourceType": "Parameters", "parameter": [
                     {"name": "mode", "valueCode": "create"},
                     {"name": "resource", "resource": _no_id(c.encounter("e", "p", "2025", reason="F43.22"))}]},
                 [("warning", "partial-date", "Encounter.period.start")], id="parameters-create-without-id"),
    pytest.param("/fhir/$validate",
                 {"resourceType": "Parameters", "parameter": [
                     {"name": "profile", "valueUri": "http://example.org/p"},
                     {"name": "resource", "resource": c.patient("p", "2021-01-01")}]},
                 [("information", "informational", "Parameters.parameter[0]")], id="profile-not-checked"),
    pytest.param("/fhir/Patient/$validate", c.encounter("e", "p", "2025-02-02", reason="F43.22"),
                 [("error", "invalid", "Encounter.resourceType")], id="type-not-the-url-type"),
    pytest.param("/fhir/$validate", {"id": "x"}, [("error", "invalid", "Resource.resourceType")],
                 id="no-resource-type"),
    pytest.param("/fhir/$validate", {"resourceType": "Patient", "id": "a b"}, [("error", "invalid", "Patient.id")],
                 id="bad-id"),
    pytest.param("/fhir/$validate", {"resourceType": "Measure", "id": "m"},
                 [("warning", "not-supported", "Measure.resourceType")], id="type-not-accepted-for-writes"),
    pytest.param("/fhir/$validate",
                 _bundle("transaction", _put(c.encounter("e", "p", "2025-02-02")), TYPE_MISMATCH),
                 [("warning", "encounter-no-diagnosis", "Bundle.entry[0].resource.diagnosis"),
                  ("error", "invalid", "Bundle.entry[1].resource.resourceType")], id="transaction-dry-run"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "body", "expected"), VALIDATE_CASES)
def test_validate_stores_nothing(
    client: TestClient, store: Store, path: str, body: Resource, expected: list[tuple[str, str, str | None]]
) -> None:
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    issues = _outcome(response)["issue"]
    got = [
        (i["severity"], i["details"]["coding"][0]["code"] if "details" in i else i["code"],
         (i.get("expression") or [None])[0])
        for i in issues
    ]  # fmt: skip
    assert got == expected
    assert _count(store) == 0


@pytest.mark.parametrize(
    ("path", "headers", "body", "status"),
    [
        pytest.param("/fhir/$validate", FHIR, b"{", 400, id="malformed-400"),
        pytest.param("/fhir/$validate", {"content-type": "text/plain"}, b"{}", 415, id="media-type-415"),
        pytest.param("/fhir/Widget/$validate", FHIR, b'{"resourceType": "Widget"}', 404, id="unknown-type-404"),
        pytest.param("/fhir/$validate", FHIR, orjson.dumps({"resourceType": "Parameters", "parameter": []}), 400,
                     id="parameters-without-resource-400"),
        pytest.param("/fhir/$validate", FHIR, orjson.dumps({"resourceType": "Parameters", "parameter": [
            {"name": "mode", "valueCode": "delete"}, {"name": "resource", "resource": P1}]}), 400,
                     id="mode-delete-400"),
    ],
)  # fmt: skip
def test_validate_refusals(
    client: TestClient, path: str, headers: dict[str, str], body: bytes, status: int
) -> None:
    response = client.post(path, content=body, headers=headers)
    assert response.status_code == status
    assert _outcome(response)["issue"][0]["severity"] == "error"


# --------------------------------------------------------------------------------------------
# what to send, capabilities


def test_what_to_send_page(client: TestClient) -> None:
    html = client.get("/fhir/docs/what-to-send")
    assert html.status_code == 200
    assert html.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in html.headers["content-security-policy"]
    page = html.text
    assert "https://oregon.gov/oha/ohp/member-id" in page
    assert '<h1 id="what-to-send">What to send</h1>' in page
    assert "<table>" in page and "<pre><code>" in page
    assert "<td>AllCare CCO</td>" in page, "the loaded CCO list is on the page"
    assert "&lt;!--" not in page and "<!-- ccos -->" not in page
    assert "{&quot;resourceType&quot;: &quot;Patient&quot;" in page, "JSON examples are escaped"
    for code in CHECKS:
        assert f"<code>{code}</code>" in page, f"check {code} is not documented"
    markdown = client.get("/fhir/docs/what-to-send", headers={"Accept": "text/markdown"})
    assert markdown.headers["content-type"] == "text/markdown; charset=utf-8"
    assert markdown.text.startswith("# What to send")
    assert "| AllCare CCO | `https://oregon.gov/oha/cco-id` | `ALLCARE` |" in markdown.text


def test_what_to_send_shows_the_sites_member_id_system(custom_client: Any) -> None:
    page = custom_client(member_id_system="https://example.org/medicaid").get("/fhir/docs/what-to-send").text
    assert "https://example.org/medicaid" in page
    assert "https://oregon.gov/oha/ohp/member-id" not in page


def test_capability_statement_declares_the_ingestion_interactions(client: TestClient) -> None:
    rest = client.get("/fhir/metadata").json()["rest"][0]
    assert {"code": "transaction"} in rest["interaction"] and {"code": "batch"} in rest["interaction"]
    operations = {o["name"]: o["definition"] for o in rest["operation"]}
    assert operations["ingest"] == "https://github.com/fhir-adapter/oregon-se/fhir/OperationDefinition/ingest"
    assert operations["validate"] == "http://hl7.org/fhir/OperationDefinition/Resource-validate"
    resources = {r["type"]: r for r in rest["resource"]}
    for rtype in (
        "Patient",
        "Coverage",
        "Encounter",
        "Condition",
        "Procedure",
        "ExplanationOfBenefit",
        "Claim",
    ):
        codes = {i["code"] for i in resources[rtype]["interaction"]}
        assert {"create", "update", "delete"} <= codes, rtype
        assert "validate" in [o["name"] for o in resources[rtype]["operation"]], rtype
    assert "create" not in {i["code"] for i in resources.get("Measure", {"interaction": []})["interaction"]}


# --------------------------------------------------------------------------------------------
# authorisation: SMART scopes of the caller, and its own source


@pytest.fixture
def ehr_client(client: TestClient) -> Iterator[TestClient]:
    """The service as seen by an EHR client whose token grants only ``system/Encounter.cu``."""
    from fhir_adapter.api.deps import Caller, get_caller
    from fhir_adapter.auth.scopes import ScopeSet

    caller = Caller("ehr-1", "ehr-1", role="ehr", scopes=ScopeSet.parse("system/Encounter.cu"))
    client.app.dependency_overrides[get_caller] = lambda: caller  # type: ignore[attr-defined]
    yield client
    client.app.dependency_overrides.clear()  # type: ignore[attr-defined]


def test_scopes_limit_what_a_caller_writes(ehr_client: TestClient, store: Store) -> None:
    client = ehr_client
    encounter = c.encounter("e1", "p1", "2025-02-02", reason="F43.22")
    assert client.put("/fhir/Encounter/e1", json=encounter).status_code == 201
    assert client.post("/fhir/Encounter", json=encounter).status_code == 201
    for method, path, body in (
        ("PUT", "/fhir/Patient/p1", P1),
        ("POST", "/fhir/Patient", P1),
        ("DELETE", "/fhir/Encounter/e1", None),
    ):
        refused = client.request(method, path, content=orjson.dumps(body) if body else None, headers=FHIR)
        assert refused.status_code == 403, (method, path)
        assert "system/" in _outcome(refused)["issue"][0]["diagnostics"]
    transaction = client.post("/fhir", json=_bundle("transaction", _put(encounter), _put(P1)))
    assert transaction.status_code == 403
    assert _outcome(transaction)["issue"][0]["expression"] == ["Bundle.entry[1].request"]
    batch = client.post("/fhir", json=_bundle("batch", _put(c.encounter("e2", "p1", "2025-01-01")), _put(P1)))
    assert [e["response"]["status"] for e in batch.json()["entry"]] == ["201 Created", "403 Forbidden"]
    ingest = client.post(
        "/fhir/$ingest", content=_ndjson(c.encounter("e3", "p1", "2025-01-01"), P1), headers=NDJSON
    )
    errors = [i for i in _outcome(ingest)["issue"] if i["severity"] == "error"]
    assert [e["diagnostics"] for e in errors] == [
        "line 2: not allowed: storing Patient needs the scope system/Patient.cu"
    ]
    stored = _current(store, "ehr-1")  # e1, e2, e3 and the POSTed one
    assert len(stored) == 4 and {"e1", "e2", "e3"} <= {rid for _t, rid in stored}
    assert all(rtype == "Encounter" for rtype, _rid in stored)
    assert _current(store, "rest") == {}, "writes go to the caller's own source"
