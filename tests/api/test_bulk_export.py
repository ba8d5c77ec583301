"""Bulk Data 3.0 ``$export``: kick-off, status, manifest, files, ``_type``, ``_since`` with
deletions, per-CCO Groups, the data cut, cancellation; on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from fhir_adapter.api import routes_bulk
from fhir_adapter.api.app import create_app
from fhir_adapter.api.jobs import JobContext, JobResult
from fhir_adapter.fhir.dates import to_micros
from fhir_adapter.ingest.runner import utc_now
from fhir_adapter.settings import Settings
from fhir_adapter.store.db import ParsedResource, Store
from tests import cohorts

ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}
Json = dict[str, Any]


@pytest.fixture
def export_dir(tmp_path: Path) -> Path:
    return tmp_path / "exports"


@pytest.fixture
def bulk(api_settings: Settings, store: Store, export_dir: Path) -> Iterator[TestClient]:
    """The service with its export folder under the test's tmp_path and one job thread."""
    settings = api_settings.model_copy(update={"export_dir": export_dir, "job_threads": 1})
    with TestClient(create_app(settings, store=store), raise_server_exceptions=False) as client:
        yield client


def put(store: Store, source: str, *resources: Json) -> None:
    store.write_batch(
        source, [ParsedResource(r["resourceType"], r["id"], r) for r in resources], to_micros(utc_now())
    )


def delete(store: Store, source: str, rtype: str, rid: str) -> None:
    gone = ParsedResource(rtype, rid, {"resourceType": rtype, "id": rid}, deleted=True)
    store.write_batch(source, [gone], to_micros(utc_now()))


def organization(oid: str) -> Json:
    return {"resourceType": "Organization", "id": oid, "name": f"Clinic {oid}"}


def kick_off(client: TestClient, path: str, headers: dict[str, str] = ASYNC) -> str:
    response = client.get(path, headers=headers)
    assert response.status_code == 202, response.text
    status: str = response.headers["Content-Location"]
    assert "/fhir/_jobs/" in status
    return status


def poll(client: TestClient, url: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(url)
        if response.status_code != 202 or time.monotonic() > deadline:
            return response
        assert response.headers["Retry-After"]
        time.sleep(0.05)


def manifest_of(client: TestClient, path: str, headers: dict[str, str] = ASYNC) -> Json:
    done = poll(client, kick_off(client, path, headers))
    assert done.status_code == 200, done.text
    assert done.headers["content-type"].startswith("application/json")
    body: Json = done.json()
    return body


def download(client: TestClient, item: Json) -> list[Json]:
    response = client.get(item["url"])
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+ndjson")
    lines = [orjson.loads(line) for line in response.content.splitlines() if line.strip()]
    assert len(lines) == item["count"]
    return lines


def resources(client: TestClient, manifest: Json, kind: str = "output") -> dict[str, list[Json]]:
    out: dict[str, list[Json]] = {}
    for item in manifest.get(kind, []):
        lines = download(client, item)
        assert all(line["resourceType"] == item["type"] for line in lines)
        out.setdefault(item["type"], []).extend(lines)
    return out


def ids(found: dict[str, list[Json]], rtype: str) -> set[str]:
    return {r["id"] for r in found.get(rtype, [])}


def seed_basic(store: Store) -> None:
    put(
        store,
        "payer",
        cohorts.patient("p1", "2015-03-01"),
        cohorts.full_year("p1"),
        cohorts.patient("p2", "2016-05-01"),
        cohorts.full_year("p2", cco="IHN"),
        organization("org1"),
    )
    put(
        store,
        "ehr",
        cohorts.encounter("e1", "p1", "2025-04-01"),
        cohorts.condition("c1", "p1", recorded="2025-04-01"),
    )


# -- round trip ---------------------------------------------------------------------------------


def test_round_trip_kick_off_poll_manifest_download(bulk: TestClient, store: Store) -> None:
    seed_basic(store)
    manifest = manifest_of(bulk, "/fhir/$export")
    assert manifest["request"].endswith("/fhir/$export")
    assert manifest["requiresAccessToken"] is False
    assert manifest["error"] == [] and "deleted" not in manifest
    assert manifest["transactionTime"].endswith("Z")
    found = resources(bulk, manifest)
    assert {k: len(v) for k, v in found.items()} == {
        "Patient": 2, "Coverage": 2, "Organization": 1, "Encounter": 1, "Condition": 1,
    }  # fmt: skip
    patient = next(r for r in found["Patient"] if r["id"] == "p1")
    assert patient["meta"]["versionId"] == "1"
    assert patient["meta"]["source"] == "payer"
    assert patient["meta"]["lastUpdated"] <= manifest["transactionTime"]
    assert found["Encounter"][0]["meta"]["source"] == "ehr"


def test_files_split_at_the_configured_size(
    bulk: TestClient, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    put(store, "payer", *[cohorts.patient(f"p{n}", "2015-01-01") for n in range(5)])
    monkeypatch.setattr(routes_bulk, "FILE_MAX_RESOURCES", 2)
    manifest = manifest_of(bulk, "/fhir/$export?_type=Patient")
    assert [item["count"] for item in manifest["output"]] == [2, 2, 1]
    assert len({item["url"] for item in manifest["output"]}) == 3
    assert len(ids(resources(bulk, manifest), "Patient")) == 5


# -- _type and the kick-off rules ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "types"),
    [
        pytest.param("_type=Patient", {"Patient"}, id="one-type"),
        pytest.param("_type=Patient,Coverage", {"Patient", "Coverage"}, id="comma-list"),
        pytest.param("_type=Patient&_type=Encounter", {"Patient", "Encounter"}, id="repeated"),
        pytest.param("_type=Patient&_outputFormat=ndjson", {"Patient"}, id="short-output-format"),
        pytest.param(
            "_type=Patient&_outputFormat=application%2Ffhir%2Bndjson", {"Patient"}, id="full-output-format"
        ),
        pytest.param("_type=Task", set(), id="nothing-of-that-type"),
    ],
)
def test_type_filters_the_output(bulk: TestClient, store: Store, query: str, types: set[str]) -> None:
    seed_basic(store)
    manifest = manifest_of(bulk, f"/fhir/$export?{query}")
    assert {item["type"] for item in manifest["output"]} == types


@pytest.mark.parametrize(
    ("path", "headers", "status", "where"),
    [
        pytest.param("/fhir/$export", {"Accept": "application/fhir+json"}, 400, "Prefer", id="no-prefer"),
        pytest.param("/fhir/$export", {**ASYNC, "Accept": "text/html"}, 400, "Accept", id="accept-html"),
        pytest.param("/fhir/$export?_outputFormat=text/csv", ASYNC, 400, "_outputFormat", id="output-format"),
        pytest.param("/fhir/$export?_type=Patient,Nonsense", ASYNC, 400, "_type", id="unknown-type"),
        pytest.param("/fhir/$export?_type=Location", ASYNC, 400, "_type", id="type-not-exported"),
        pytest.param(
            "/fhir/$export?_typeFilter=Patient%3Fgender%3Dfemale", ASYNC, 400, "_typeFilter", id="type-filter"
        ),
        pytest.param("/fhir/$export?_since=2025-01-01", ASYNC, 400, "_since", id="since-not-an-instant"),
        pytest.param("/fhir/$export?_since=2025-01-01T00:00:00", ASYNC, 400, "_since", id="since-no-offset"),
        pytest.param(
            "/fhir/Patient/$export?_type=Organization", ASYNC, 400, "_type", id="outside-compartment"
        ),
        pytest.param("/fhir/Group/nobody/$export", ASYNC, 404, "id", id="unknown-group"),
    ],
)
def test_kick_off_refusals(
    bulk: TestClient, path: str, headers: dict[str, str], status: int, where: str
) -> None:
    response = bulk.get(path, headers=headers)
    assert response.status_code == status, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == [where]


def test_lenient_handling_reports_ignored_parameters_in_the_error_file(
    bulk: TestClient, store: Store
) -> None:
    seed_basic(store)
    headers = {**ASYNC, "Prefer": "respond-async, handling=lenient"}
    manifest = manifest_of(bulk, "/fhir/$export?_type=Patient,Nonsense&_typeFilter=Patient%3Fx%3D1", headers)
    assert {item["type"] for item in manifest["output"]} == {"Patient"}
    (error,) = manifest["error"]
    assert error["type"] == "OperationOutcome"
    notes = [o["issue"][0]["diagnostics"] for o in download(bulk, error)]
    assert any("Nonsense" in n for n in notes) and any("_typeFilter" in n for n in notes)


# -- _since and deletions ------------------------------------------------------------------------------


def test_since_gives_only_changes_and_the_deletions(bulk: TestClient, store: Store) -> None:
    seed_basic(store)
    first = manifest_of(bulk, "/fhir/$export")
    time.sleep(0.01)
    put(store, "payer", cohorts.patient("p1", "2015-03-01", gender="male"))  # an update
    put(store, "payer", cohorts.patient("p2", "2016-05-01"))  # the same content: no new version
    delete(store, "ehr", "Condition", "c1")
    second = manifest_of(bulk, f"/fhir/$export?_since={first['transactionTime']}")
    found = resources(bulk, second)
    assert {k: ids(found, k) for k in found} == {"Patient": {"p1"}}
    assert found["Patient"][0]["gender"] == "male" and found["Patient"][0]["meta"]["versionId"] == "2"
    (deleted_file,) = second["deleted"]
    assert deleted_file["type"] == "Bundle"
    (line,) = download(bulk, deleted_file)
    assert line["resourceType"] == "Bundle" and line["type"] == "transaction"
    assert line["entry"] == [{"request": {"method": "DELETE", "url": "Condition/c1"}}]
    assert line["meta"]["source"] == "ehr"
    assert first["transactionTime"] < line["meta"]["lastUpdated"] <= second["transactionTime"]
    # nothing changed since the second export
    third = manifest_of(bulk, f"/fhir/$export?_since={second['transactionTime']}")
    assert third["output"] == [] and third.get("deleted", []) == []


def test_a_resource_deleted_and_created_again_is_output_not_deleted(bulk: TestClient, store: Store) -> None:
    seed_basic(store)
    first = manifest_of(bulk, "/fhir/$export")
    time.sleep(0.01)
    delete(store, "ehr", "Condition", "c1")
    put(store, "ehr", cohorts.condition("c1", "p1", recorded="2025-05-01"))
    second = manifest_of(bulk, f"/fhir/$export?_since={first['transactionTime']}")
    assert ids(resources(bulk, second), "Condition") == {"c1"}
    assert second.get("deleted", []) == []


# -- groups ---------------------------------------------------------------------------------------------


def seed_ccos(store: Store) -> None:
    """a: AllCare now; b: IHN now; c: AllCare until mid-2025, then IHN (a CCO switch); a's EHR
    record (another source, same member id) with an Encounter; an ATR Group of the payer listing b."""
    put(
        store,
        "payer",
        cohorts.patient("a", "2015-01-01"),
        cohorts.full_year("a"),
        cohorts.patient("b", "2015-01-01"),
        cohorts.full_year("b", cco="IHN"),
        cohorts.patient("c", "2015-01-01"),
        cohorts.coverage("cov-c-1", "c", "2024-07-01", "2025-06-30", cco="ALLCARE"),
        cohorts.coverage("cov-c-2", "c", "2025-07-01", None, cco="IHN"),
        cohorts.eob("x-b", "b", "2025-03-01"),
        organization("org1"),
    )
    put(
        store,
        "ehr",
        cohorts.patient("a-ehr", "2015-01-01", member="M-a"),
        cohorts.encounter("e-a", "a-ehr", "2025-02-01"),
        cohorts.encounter("e-b", "b", "2025-02-01"),  # b of the EHR is not linked: another Patient/b
    )
    put(
        store,
        "payer",
        {"resourceType": "Group", "id": "atr-1", "type": "person", "actual": True,
         "member": [{"entity": {"reference": "Patient/b"}}]},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("group", "since", "patients", "coverages"),
    [
        pytest.param("cco-ALLCARE", None, {"a", "a-ehr"}, {"cov-a-ALLCARE"}, id="allcare-now"),
        pytest.param(
            "cco-IHN", None, {"b", "c"}, {"cov-b-IHN", "cov-c-1", "cov-c-2"}, id="ihn-now-with-switch"
        ),
        pytest.param(
            "cco-ALLCARE",
            "2025-01-01T00:00:00Z",
            {"a", "a-ehr", "c"},
            {"cov-a-ALLCARE", "cov-c-1", "cov-c-2"},
            id="allcare-since-2025-keeps-switcher",
        ),
        pytest.param("cco-JCC", None, set(), set(), id="no-members"),
        pytest.param("atr-1", None, {"b"}, {"cov-b-IHN"}, id="stored-atr-group"),
    ],
)
def test_group_export_holds_exactly_the_groups_children(
    bulk: TestClient, store: Store, group: str, since: str | None, patients: set[str], coverages: set[str]
) -> None:
    seed_ccos(store)
    query = f"?_since={since}" if since else ""
    found = resources(bulk, manifest_of(bulk, f"/fhir/Group/{group}/$export{query}"))
    assert ids(found, "Patient") == patients
    assert ids(found, "Coverage") == coverages
    assert ids(found, "Encounter") == ({"e-a"} if "a" in patients else set())
    assert ids(found, "ExplanationOfBenefit") == ({"x-b"} if "b" in patients else set())
    assert ids(found, "Group") == ({"atr-1"} if "b" in patients else set())
    assert ids(found, "Organization") == {"org1"}  # outside the compartment: exported whole


def test_patient_level_exports_the_compartment(bulk: TestClient, store: Store) -> None:
    seed_ccos(store)
    put(store, "payer", {"resourceType": "Coverage", "id": "orphan", "status": "active"})
    found = resources(bulk, manifest_of(bulk, "/fhir/Patient/$export"))
    assert ids(found, "Patient") == {"a", "b", "c", "a-ehr"}
    assert "orphan" not in ids(found, "Coverage") and "cov-c-2" in ids(found, "Coverage")
    assert ids(found, "Encounter") == {"e-a", "e-b"}


def test_group_in_two_sources_needs_source(bulk: TestClient, store: Store) -> None:
    group = {"resourceType": "Group", "id": "g", "type": "person", "actual": True,
             "member": [{"entity": {"reference": "Patient/b"}}]}  # fmt: skip
    put(store, "one", group)
    put(store, "two", group)
    ambiguous = bulk.get("/fhir/Group/g/$export", headers=ASYNC)
    assert ambiguous.status_code == 400 and "one, two" in ambiguous.text
    assert bulk.get("/fhir/Group/g/$export?_source=two", headers=ASYNC).status_code == 202


# -- the data cut and cancellation -------------------------------------------------------------------------


def test_the_data_cut_excludes_writes_after_kick_off(bulk: TestClient, store: Store) -> None:
    seed_basic(store)
    jobs = bulk.app.state.jobs  # type: ignore[attr-defined]
    started, release = threading.Event(), threading.Event()

    def gate(_ctx: JobContext, _request: dict[str, Any]) -> JobResult:
        started.set()
        release.wait(20)
        return JobResult(b"{}")

    jobs.register("test-gate", gate)
    jobs.submit("test-gate", {})  # occupies the only job thread
    assert started.wait(10)
    status = kick_off(bulk, "/fhir/$export?_type=Patient")
    time.sleep(0.01)
    put(
        store,
        "payer",
        cohorts.patient("late", "2015-01-01"),
        cohorts.patient("p1", "2015-03-01", gender="male"),
    )
    release.set()
    done = poll(bulk, status)
    assert done.status_code == 200, done.text
    found = resources(bulk, done.json())
    assert ids(found, "Patient") == {"p1", "p2"}
    p1 = next(r for r in found["Patient"] if r["id"] == "p1")
    assert p1["gender"] == "female" and p1["meta"]["versionId"] == "1"


def test_cancel_deletes_the_files(bulk: TestClient, store: Store, export_dir: Path) -> None:
    seed_basic(store)
    status = kick_off(bulk, "/fhir/$export")
    manifest = poll(bulk, status).json()
    job_id = status.rsplit("/", 1)[1]
    assert sorted(p.name for p in (export_dir / job_id).iterdir())
    url = manifest["output"][0]["url"]
    assert bulk.get(url).status_code == 200
    assert bulk.delete(status).status_code == 202
    assert not (export_dir / job_id).exists()
    assert bulk.get(url).status_code == 404
    assert bulk.get(status).status_code == 404


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("..%2F..%2Fsecret.ndjson", id="traversal"),
        pytest.param("Patient-1.json", id="not-ndjson"),
        pytest.param("Patient-99.ndjson", id="no-such-file"),
    ],
)
def test_file_names_outside_the_export_are_not_found(bulk: TestClient, store: Store, name: str) -> None:
    seed_basic(store)
    status = kick_off(bulk, "/fhir/$export")
    assert poll(bulk, status).status_code == 200
    job_id = status.rsplit("/", 1)[1]
    assert bulk.get(f"/fhir/_exports/{job_id}/{name}").status_code == 404


def test_capability_statement_declares_the_bulk_operations(bulk: TestClient) -> None:
    rest = bulk.get("/fhir/metadata").json()["rest"][0]
    system = {o["name"]: o["definition"] for o in rest["operation"]}
    assert system["export"] == "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"
    assert system["import"].endswith("/OperationDefinition/import")
    assert system["export-flat"].endswith("/OperationDefinition/export-flat")
    by_type = {
        r["type"]: {o["name"]: o["definition"] for o in r.get("operation", [])} for r in rest["resource"]
    }
    assert by_type["Group"]["export"] == "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export"
    assert (
        by_type["Patient"]["export"] == "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export"
    )


# -- with SMART on -------------------------------------------------------------------------------------------


def _secured_manifest(client: TestClient, path: str, headers: dict[str, str]) -> Json:
    status = kick_off(client, path, {**ASYNC, **headers})
    deadline = time.monotonic() + 30
    while (done := client.get(status, headers=headers)).status_code == 202 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert done.status_code == 200, done.text
    body: Json = done.json()
    return body


def _secured_ids(client: TestClient, manifest: Json, headers: dict[str, str]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for item in manifest["output"]:
        response = client.get(item["url"], headers=headers)
        assert response.status_code == 200, response.text
        lines = [orjson.loads(line) for line in response.content.splitlines() if line.strip()]
        found.setdefault(item["type"], set()).update(r["id"] for r in lines)
    return found


def test_secured_export_files_belong_to_their_client(
    auth_client: TestClient, mint_token: Any, store: Store
) -> None:
    seed_basic(store)
    oha = {"Authorization": f"Bearer {mint_token('oha', 'system/*.rs')}"}
    other = {"Authorization": f"Bearer {mint_token('ehr', 'system/*.rs', source='payer')}"}
    manifest = _secured_manifest(auth_client, "/fhir/$export?_type=Patient", oha)
    assert manifest["requiresAccessToken"] is True
    url = manifest["output"][0]["url"]
    assert auth_client.get(url).status_code == 401
    assert auth_client.get(url, headers=other).status_code == 404  # not its export: as if unknown
    assert auth_client.get(url, headers=oha).status_code == 200


@pytest.mark.parametrize(
    ("path", "status"),
    [
        pytest.param("/fhir/Group/cco-IHN/$export", 202, id="own-cco-group"),
        pytest.param("/fhir/Group/cco-ALLCARE/$export", 403, id="other-cco-group"),
        pytest.param("/fhir/Group/atr-1/$export", 403, id="stored-group"),
        pytest.param("/fhir/$export", 202, id="system-level-filtered"),
        pytest.param("/fhir/Patient/$export", 202, id="all-patients-filtered"),
    ],
)
def test_a_cco_client_kick_off(
    auth_client: TestClient, mint_token: Any, store: Store, path: str, status: int
) -> None:
    seed_ccos(store)
    token = mint_token("cco", "system/*.rs", ccos=("IHN",))
    response = auth_client.get(path, headers={**ASYNC, "Authorization": f"Bearer {token}"})
    assert response.status_code == status, response.text


@pytest.mark.parametrize(
    ("role", "ccos", "source", "expected"),
    [
        pytest.param("cco", ("IHN",), None, {"Patient": {"b", "c"}, "Coverage": {"cov-b-IHN", "cov-c-1", "cov-c-2"},
                     "ExplanationOfBenefit": {"x-b"}, "Organization": {"org1"}}, id="cco-its-attributed-children"),
        pytest.param("ehr", (), "ehr", {"Patient": {"a-ehr"}, "Encounter": {"e-a", "e-b"}},
                     id="ehr-what-it-submitted"),
        pytest.param("oha", (), None, {"Patient": {"a", "b", "c", "a-ehr"}, "Group": {"atr-1"},
                     "Encounter": {"e-a", "e-b"}, "ExplanationOfBenefit": {"x-b"}, "Organization": {"org1"},
                     "Coverage": {"cov-a-ALLCARE", "cov-b-IHN", "cov-c-1", "cov-c-2"}}, id="oha-everything"),
    ],
)  # fmt: skip
def test_an_export_holds_only_what_its_client_may_read(
    auth_client: TestClient,
    mint_token: Any,
    store: Store,
    role: str,
    ccos: tuple[str, ...],
    source: str | None,
    expected: dict[str, set[str]],
) -> None:
    seed_ccos(store)
    headers = {"Authorization": f"Bearer {mint_token(role, 'system/*.rs', ccos=ccos, source=source)}"}
    manifest = _secured_manifest(auth_client, "/fhir/$export", headers)
    assert _secured_ids(auth_client, manifest, headers) == expected


def test_a_type_outside_the_scopes_is_forbidden(auth_client: TestClient, mint_token: Any) -> None:
    token = mint_token("oha", "system/Patient.rs")
    headers = {**ASYNC, "Authorization": f"Bearer {token}"}
    assert auth_client.get("/fhir/$export?_type=Coverage", headers=headers).status_code == 403
    assert auth_client.get("/fhir/$export?_type=Patient", headers=headers).status_code == 202
