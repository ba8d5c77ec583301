"""The audit trail (fhir_adapter.api.audit): one row per request to a data route, with who, what,
outcome and never a search value; served as R4 AuditEvents to OHA and admin clients only."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from fhir_adapter.api.app import create_app
from fhir_adapter.api.audit import AuditMiddleware, bundle_entities, classify, outcome_of
from fhir_adapter.auth.clients import Registration, register
from fhir_adapter.settings import Settings
from fhir_adapter.store.db import Store
from fhir_adapter.store.schema import audit_events
from tests import cohorts
from tests.api.conftest import MintToken
from tests.smart import assertion, jwks, key_pair, token_form
from tests.validators.harness import node_validate, validators_available

Row = dict[str, Any]
FHIR = {"Content-Type": "application/fhir+json"}
MEASURE = "oregon-se-issue-focused"


def _mark(store: Store) -> int:
    with store.read() as conn:
        return int(conn.execute(select(func.coalesce(func.max(audit_events.c.id), 0))).scalar_one())


def _rows(store: Store, after: int) -> list[Row]:
    with store.read() as conn:
        rows = conn.execute(select(audit_events).where(audit_events.c.id > after).order_by(audit_events.c.id))
        return [{str(k): v for k, v in r._mapping.items()} for r in rows]


def _brief(row: Row) -> tuple[Any, ...]:
    return (row["action"], row["interaction"], row["resource_type"], row["resource_id"], row["status"],
            row["outcome"])  # fmt: skip


def _put(client: TestClient, resource: dict[str, Any]) -> Any:
    return client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource, headers=FHIR)


# --------------------------------------------------------------------------------------------------
# what is recorded


def test_reads_writes_searches_and_failures(client: TestClient, store: Store) -> None:
    patient = cohorts.patient("p1", "2021-03-04", member="M-77", name=[{"family": "Quinterra"}])
    steps: list[tuple[str, Any, list[tuple[Any, ...]]]] = [
        ("create by PUT", lambda: _put(client, patient), [("C", "update", "Patient", "p1", 201, 0)]),
        ("update", lambda: _put(client, {**patient, "gender": "male"}), [("U", "update", "Patient", "p1", 200, 0)]),
        ("read", lambda: client.get("/fhir/Patient/p1"), [("R", "read", "Patient", "p1", 200, 0)]),
        ("vread", lambda: client.get("/fhir/Patient/p1/_history/1"), [("R", "vread", "Patient", "p1", 200, 0)]),
        ("search", lambda: client.get("/fhir/Patient", params={"identifier": "M-77", "birthdate": "2021-03-04"}),
         [("E", "search-type", "Patient", None, 200, 0)]),
        ("create", lambda: client.post("/fhir/Encounter", json=cohorts.encounter("x", "p1", "2025-01-02"),
                                       headers=FHIR), [("C", "create", "Encounter", "*", 201, 0)]),
        ("not found", lambda: client.get("/fhir/Patient/nobody"), [("R", "read", "Patient", "nobody", 404, 4)]),
        ("delete", lambda: client.delete("/fhir/Patient/p1"), [("D", "delete", "Patient", "p1", 204, 0)]),
        ("operation", lambda: client.get(f"/fhir/Measure/{MEASURE}/$evaluate-measure",
                                         params={"periodStart": "2025-01-01", "periodEnd": "2025-12-31"}),
         [("E", "operation", "Measure", MEASURE, 200, 0)]),
        ("discovery is not audited", lambda: client.get("/fhir/metadata"), []),
    ]  # fmt: skip
    for name, call, expected in steps:
        mark = _mark(store)
        response = call()
        assert response.status_code < 500, (name, response.text)
        rows = _rows(store, mark)
        got = [_brief(r) for r in rows]
        assert len(got) == len(expected), name
        for have, want in zip(got, expected, strict=True):  # "*": any server-assigned id
            assert all(w == h or (w == "*" and h) for h, w in zip(have, want, strict=True)), (name, have)
        for row in rows:
            assert row["client_id"] == "anonymous" and row["role"] == "dev"
            assert row["path"].startswith("/fhir") and "?" not in row["path"]
    search = _rows(store, 0)
    detail = next(orjson.loads(r["detail"]) for r in search if r["interaction"] == "search-type")
    assert detail["parameters"] == ["birthdate", "identifier"]
    everything = orjson.dumps(search).decode()
    for value in ("M-77", "2021-03-04", "Quinterra"):
        assert value not in everything


def test_transaction_and_batch_record_each_entry(client: TestClient, store: Store) -> None:
    mark = _mark(store)
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": cohorts.patient("b1", "2022-01-01"), "request": {"method": "PUT", "url": "Patient/b1"}},
            {"resource": cohorts.encounter("e", "b1", "2025-02-02"), "request": {"method": "POST", "url": "Encounter"}},
            {"resource": {"resourceType": "Patient"}, "request": {"method": "PUT", "url": "Patient/b2"}},
        ],
    }  # fmt: skip
    response = client.post("/fhir", json=bundle, headers=FHIR)
    assert response.status_code == 200, response.text
    rows = _rows(store, mark)
    assert [(r["action"], r["interaction"], r["resource_type"], r["outcome"]) for r in rows] == [
        ("C", "batch", "Patient", 0),
        ("C", "batch", "Encounter", 0),
        ("U", "batch", "Patient", 4),
    ]
    created = response.json()["entry"][1]["response"]["location"].split("/")[1]
    assert [r["resource_id"] for r in rows] == ["b1", created, "b2"]
    assert rows[2]["status"] >= 400

    mark = _mark(store)
    bundle["type"] = "transaction"
    failed = client.post("/fhir", json=bundle, headers=FHIR)
    assert failed.status_code >= 400
    rows = _rows(store, mark)
    assert len(rows) == 3 and {(r["interaction"], r["outcome"]) for r in rows} == {("transaction", 4)}


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        pytest.param("GET", "/fhir/Patient", ("search-type", "E", "Patient", None), id="search"),
        pytest.param(
            "POST", "/fhir/Patient/_search", ("search-type", "E", "Patient", None), id="post-search"
        ),
        pytest.param("POST", "/fhir/Patient", ("create", "C", "Patient", None), id="create"),
        pytest.param("GET", "/fhir/Patient/1/_history/3", ("vread", "R", "Patient", "1"), id="vread"),
        pytest.param("PUT", "/fhir/Patient/1", ("update", "U", "Patient", "1"), id="update"),
        pytest.param("DELETE", "/fhir/Patient/1", ("delete", "D", "Patient", "1"), id="delete"),
        pytest.param("POST", "/fhir", ("transaction", "E", None, None), id="bundle"),
        pytest.param("GET", "/fhir", ("search-system", "E", None, None), id="system-search"),
        pytest.param("POST", "/fhir/$ingest", ("operation", "E", None, None), id="system-operation"),
        pytest.param(
            "GET", "/fhir/Group/g1/$export", ("operation", "E", "Group", "g1"), id="instance-operation"
        ),
        pytest.param("GET", "/fhir/_jobs/abc", ("read", "R", None, None), id="job-status"),
        pytest.param("GET", "/fhir/_exports/abc/Patient.ndjson", ("read", "R", None, None), id="export-file"),
        pytest.param("POST", "/auth/token", ("login", "E", None, None), id="token"),
        pytest.param("GET", "/fhir/metadata", None, id="metadata"),
        pytest.param("GET", "/fhir/.well-known/smart-configuration", None, id="smart-configuration"),
        pytest.param("GET", "/healthz", None, id="healthz"),
        pytest.param("GET", "/docs", None, id="openapi-docs"),
    ],
)
def test_classify(method: str, path: str, expected: tuple[Any, ...] | None) -> None:
    got = classify(method, path)
    assert (None if got is None else (got.interaction, got.action, got.rtype, got.rid)) == expected


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, 0),
        (201, 0),
        (204, 0),
        (304, 0),
        (400, 4),
        (401, 4),
        (403, 4),
        (429, 4),
        (499, 4),
        (500, 8),
        (503, 8),
    ],
)
def test_outcome_codes(status: int, outcome: int) -> None:
    assert outcome_of(status) == outcome


def test_bundle_entities_of_a_refused_transaction() -> None:
    entries = [{"request": {"method": "DELETE", "url": "Patient/9"}}, "not an entry"]
    got = bundle_entities(entries, {"resourceType": "OperationOutcome"}, 400)
    assert [(e.rtype, e.rid, e.action, e.status) for e in got] == [
        ("Patient", "9", "D", 400),
        (None, None, "E", 400),
    ]


# --------------------------------------------------------------------------------------------------
# authentication and the token endpoint


def _register(
    store: Store, client_id: str, role: str = "ehr", scopes: tuple[str, ...] = ("system/*.cruds",)
) -> Any:
    key = key_pair("ES384", f"audit-{client_id}")
    register(
        store,
        Registration(client_id=client_id, role=role, source=f"{client_id}-src" if role == "ehr" else None,
                     scopes=scopes, jwks=jwks(key)),
        known_ccos={"IHN"}, now=datetime.now(UTC),
    )  # fmt: skip
    return key


def test_token_requests_and_auth_failures(auth_client: TestClient, store: Store) -> None:
    key = _register(store, "ehr-audit")
    mark = _mark(store)
    good = assertion(key, "ehr-audit")
    issued = auth_client.post("/auth/token", data=token_form(good, "system/Patient.rs"))
    assert issued.status_code == 200
    bad = assertion(key_pair("ES384", "stranger"), "ehr-audit")
    refused = auth_client.post("/auth/token", data=token_form(bad, "system/Patient.rs"))
    assert refused.status_code == 401
    unknown = auth_client.post("/auth/token", data=token_form(assertion(key, "nobody-registered")))
    assert unknown.status_code == 401
    token = issued.json()["access_token"]
    assert auth_client.get("/fhir/Patient").status_code == 401
    assert (
        auth_client.get("/fhir/Patient", headers={"Authorization": "Bearer not-a-token"}).status_code == 401
    )
    assert auth_client.get("/fhir/Encounter", headers={"Authorization": f"Bearer {token}"}).status_code == 403
    assert auth_client.get("/fhir/Patient", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    rows = _rows(store, mark)
    brief = [(r["interaction"], r["client_id"], r["role"], r["status"], r["outcome"]) for r in rows]
    assert brief == [
        ("login", "ehr-audit", None, 200, 0),
        ("login", "ehr-audit", None, 401, 4),
        ("login", "nobody-registered", None, 401, 4),
        ("search-type", "anonymous", None, 401, 4),
        ("search-type", "anonymous", None, 401, 4),
        ("search-type", "ehr-audit", "ehr", 403, 4),
        ("search-type", "ehr-audit", "ehr", 200, 0),
    ]
    assert "refused" in rows[1]["detail"] and "issued" in rows[0]["detail"]
    text = orjson.dumps(rows).decode()
    for secret in (good, bad, token):  # never an assertion or a token
        assert secret not in text and secret.split(".")[2] not in text


# --------------------------------------------------------------------------------------------------
# serving AuditEvents


@pytest.fixture
def history(client: TestClient, store: Store) -> Iterator[TestClient]:
    """A few audited requests: two PUTs, a read, a failed read, a search."""
    _put(client, cohorts.patient("h1", "2020-01-01"))
    _put(client, cohorts.encounter("v1", "h1", "2025-01-01"))
    client.get("/fhir/Patient/h1")
    client.get("/fhir/Patient/missing")
    client.get("/fhir/Encounter", params={"patient": "Patient/h1"})
    yield client


def _events(response: Any) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    return [e["resource"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


def test_audit_event_resources(history: TestClient) -> None:
    events = _events(history.get("/fhir/AuditEvent", params={"entity-type": "Patient", "action": "R"}))
    assert [e["outcome"] for e in events] == ["4", "0"]  # newest first
    failed, read = events
    assert read["type"] == {
        "system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "RESTful Operation",
    }  # fmt: skip
    assert read["subtype"] == [{"system": "http://hl7.org/fhir/restful-interaction", "code": "read"}]
    assert read["action"] == "R"
    assert read["entity"] == [
        {
            "type": {"system": "http://hl7.org/fhir/resource-types", "code": "Patient"},
            "what": {"reference": "Patient/h1"},
        }
    ]
    agent = read["agent"][0]
    assert agent["who"]["identifier"]["value"] == "anonymous" and agent["requestor"] is True
    assert read["source"]["observer"]["identifier"]["value"].startswith("https://")
    assert failed["entity"][0]["what"] == {"reference": "Patient/missing"}
    assert "HTTP 404" in failed["outcomeDesc"]
    one = history.get(f"/fhir/AuditEvent/{read['id']}")
    assert one.status_code == 200 and one.json() == read and one.headers["ETag"] == 'W/"1"'
    assert history.get(f"/fhir/AuditEvent/{read['id']}/_history/1").json() == read
    assert history.get(f"/fhir/AuditEvent/{read['id']}/_history/2").status_code == 404
    assert history.get("/fhir/AuditEvent/999999").status_code == 404
    assert history.get("/fhir/AuditEvent/abc").status_code == 404


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        pytest.param({"outcome": "4"}, {("read", "Patient/missing")}, id="outcome"),
        pytest.param({"entity-type": "Encounter", "action": "C"}, {("update", "Encounter/v1")}, id="type-and-action"),
        pytest.param({"action": "C,U"}, {("update", "Patient/h1"), ("update", "Encounter/v1")}, id="action-or"),
        pytest.param({"subtype": "search-type"}, {("search-type", "Encounter")}, id="subtype"),
        pytest.param({"agent": "someone-else"}, set(), id="agent-other"),
        pytest.param({"entity-type": "http://hl7.org/fhir/resource-types|Encounter", "subtype": "update"},
                     {("update", "Encounter/v1")}, id="entity-type-with-system"),
        pytest.param({"entity-type": "http://example.org|Encounter"}, set(), id="entity-type-other-system"),
        pytest.param({"date": "le2000-01-01"}, set(), id="date-before"),
    ],
)  # fmt: skip
def test_search_parameters(
    history: TestClient, params: dict[str, str], expected: set[tuple[str, str]]
) -> None:
    params = {**params, "date": params.get("date", "ge2000-01-01")}
    events = _events(history.get("/fhir/AuditEvent", params=params))
    got = {
        (
            e["subtype"][0]["code"],
            e["entity"][0].get("what", {}).get("reference") or e["entity"][0]["type"]["code"],
        )
        for e in events
        if e["subtype"][0]["code"] != "search-type" or "AuditEvent" not in e["outcomeDesc"]
    }
    got = {g for g in got if g[1] != "AuditEvent"}
    assert got == expected


def test_date_agent_and_paging(history: TestClient) -> None:
    now = datetime.now(UTC)
    window = {
        "date": [
            f"ge{(now - timedelta(minutes=5)).isoformat()}",
            f"le{(now + timedelta(minutes=5)).isoformat()}",
        ]
    }
    everything = _events(history.get("/fhir/AuditEvent", params={**window, "agent": "anonymous"}))
    assert len(everything) >= 5
    ids = [int(e["id"]) for e in everything]
    assert ids == sorted(ids, reverse=True)
    seen: list[int] = []
    url: str | None = "/fhir/AuditEvent?_count=2&agent=anonymous"
    while url:
        page = history.get(url).json()
        assert page["total"] >= len(everything)
        seen += [int(e["resource"]["id"]) for e in page.get("entry", [])]
        url = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
    assert seen[: len(ids)] == ids or set(ids) <= set(seen)
    assert len(seen) == len(set(seen))
    assert (
        _events(
            history.get("/fhir/AuditEvent", params={"date": f"gt{(now + timedelta(hours=1)).isoformat()}"})
        )
        == []
    )


def test_count_cap_is_stated(history: TestClient, api_settings: Settings) -> None:
    asked = api_settings.search_count_max + 5
    bundle = history.get("/fhir/AuditEvent", params={"_count": str(asked)}).json()
    assert f"_count={api_settings.search_count_max}" in bundle["link"][0]["url"]
    outcome = [e for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    assert outcome and outcome[0]["resource"]["issue"][0]["code"] == "too-costly"


@pytest.mark.parametrize(
    ("params", "status"),
    [
        pytest.param({"date": "yesterday"}, 400, id="bad-date"),
        pytest.param({"_count": "-1"}, 400, id="bad-count"),
        pytest.param({"_page": "garbage"}, 400, id="bad-page"),
        pytest.param({"agent:exact": "x"}, 400, id="bad-modifier"),
        pytest.param({"unknown-param": "x"}, 200, id="unknown-ignored"),
    ],
)
def test_bad_search_values(history: TestClient, params: dict[str, str], status: int) -> None:
    assert history.get("/fhir/AuditEvent", params=params).status_code == status


def test_strict_handling_refuses_unknown_parameters(history: TestClient) -> None:
    response = history.get("/fhir/AuditEvent", params={"name": "x"}, headers={"Prefer": "handling=strict"})
    assert response.status_code == 400


def test_post_search_records_parameter_names_only(history: TestClient, store: Store) -> None:
    mark = _mark(store)
    form = {"entity-type": "Patient", "agent": "anonymous"}
    events = _events(history.post("/fhir/AuditEvent/_search", data=form))
    assert events
    (row,) = _rows(store, mark)
    assert orjson.loads(row["detail"])["parameters"] == ["agent", "entity-type"]
    assert (row["interaction"], row["resource_type"]) == ("search-type", "AuditEvent")


@pytest.mark.parametrize(
    ("role", "scope", "status"),
    [
        pytest.param("oha", "system/AuditEvent.rs", 200, id="oha"),
        pytest.param("admin", "system/*.read", 200, id="admin-v1-wildcard"),
        pytest.param("cco", "system/*.rs", 403, id="cco"),
        pytest.param("ehr", "system/*.cruds", 403, id="ehr"),
        pytest.param("oha", "system/Patient.rs", 403, id="oha-without-the-scope"),
    ],
)
def test_only_oha_and_admin_read_the_trail(
    auth_client: TestClient, mint_token: MintToken, role: str, scope: str, status: int
) -> None:
    token = mint_token(role, scope)
    headers = {"Authorization": f"Bearer {token}"}
    search = auth_client.get("/fhir/AuditEvent", headers=headers)
    assert search.status_code == status, search.text
    if status == 200:
        event = search.json()["entry"][0]["resource"]
        assert event["resourceType"] == "AuditEvent"
        assert auth_client.get(f"/fhir/AuditEvent/{event['id']}", headers=headers).status_code == 200
    else:
        assert search.json()["issue"][0]["code"] == "forbidden"
        assert auth_client.get("/fhir/AuditEvent/1", headers=headers).status_code == 403


def test_capabilities_declare_audit_event(client: TestClient) -> None:
    rest = client.get("/fhir/metadata").json()["rest"][0]
    (resource,) = [r for r in rest["resource"] if r["type"] == "AuditEvent"]
    assert sorted(i["code"] for i in resource["interaction"]) == ["read", "search-type", "vread"]
    assert sorted(p["name"] for p in resource["searchParam"]) == [
        "action", "agent", "date", "entity-type", "outcome", "subtype",
    ]  # fmt: skip


@pytest.mark.node
def test_audit_events_pass_both_r4_validators(history: TestClient) -> None:
    reason = validators_available()
    if reason:
        pytest.skip(reason)
    events = _events(history.get("/fhir/AuditEvent", params={"_count": "20"}))
    for result in node_validate(events):
        assert result.ok, result.describe()


# --------------------------------------------------------------------------------------------------
# a row that cannot be written


def test_a_lost_audit_row_never_fails_the_request_and_is_loud(
    api_settings: Settings, store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(self: AuditMiddleware, rows: list[Row]) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(AuditMiddleware, "_write", broken)
    with TestClient(create_app(api_settings, store=store), raise_server_exceptions=False) as client, \
            caplog.at_level(logging.ERROR, logger="fhir_adapter.audit"):  # fmt: skip
        assert _put(client, cohorts.patient("lost", "2020-01-01")).status_code == 201
        assert client.get("/fhir/Patient/lost").status_code == 200
        metrics = client.get("/metrics").text
    lost = [r for r in caplog.records if "AUDIT ROW LOST" in r.getMessage()]
    assert len(lost) == 2 and lost[0].levelno == logging.ERROR
    assert "RuntimeError" in lost[0].getMessage()
    assert "fhir_adapter_audit_failures_total 2.0" in metrics


def test_hostile_paths_and_claims_are_still_recorded(
    client: TestClient, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """A NUL in the path (PostgreSQL text cannot hold one) and an over-long path still give a row."""
    mark = _mark(store)
    with caplog.at_level(logging.ERROR, logger="fhir_adapter.audit"):
        assert client.get("/fhir/Patient/a%00b").status_code == 400
        assert client.get("/fhir/Patient/" + "x" * 2000).status_code >= 400
    assert not [r for r in caplog.records if "AUDIT ROW LOST" in r.getMessage()]
    nul, long = _rows(store, mark)
    assert "\x00" not in nul["path"] and nul["status"] == 400 and nul["outcome"] == 4
    assert len(long["path"]) == 512
