"""Reads and searches (routes_resources, store/search) on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from fastapi.testclient import TestClient

from fhir_adapter.api.app import create_app
from fhir_adapter.fhir.dates import to_micros
from fhir_adapter.measure.spec import Mappings
from fhir_adapter.report.conformance import measure_url
from fhir_adapter.report.measurereport import ReportContext
from fhir_adapter.settings import Settings
from fhir_adapter.store.db import ParsedResource, Store
from fhir_adapter.workflow import EvaluationRequest, build_report, run_evaluation
from tests import cohorts
from tests.cohorts import CPT, HCPCS, ICD, MEMBER
from tests.conftest import ENGINES, ROOT, make_store_factory

T0 = to_micros(datetime(2026, 1, 10, 12, 0, tzinfo=UTC))
HOUR = 3_600_000_000
BASE = "https://github.com/fhir-adapter/oregon-se/fhir"
MEASURE_URL = f"{BASE}/Measure/oregon-se-issue-focused"
Resource = dict[str, Any]


def _write(store: Store, source: str, resources: list[Resource], at: int, *, deleted: bool = False) -> None:
    store.write_batch(
        source, [ParsedResource(r["resourceType"], r["id"], r, deleted=deleted) for r in resources], at
    )


def _local_code_encounter() -> Resource:
    r = cohorts.encounter("enc-local", "p2", "2025-08-01")
    r["type"] = [{"coding": [{"code": "LOCAL1"}]}]
    return r


def _report(rid: str, measure: str, start: str, end: str, subject: str | None, **extra: Any) -> Resource:
    r: Resource = {
        "resourceType": "MeasureReport",
        "id": rid,
        "status": "complete",
        "type": "individual" if subject else "summary",
        "measure": measure,
        "period": {"start": start, "end": end},
        "reporter": {"identifier": {"system": "urn:ietf:rfc:3986", "value": "urn:example:cco"}},
    }
    if subject:
        r["subject"] = {"reference": subject}
    r.update(extra)
    return r


ENCOUNTERS = {
    "enc-jan1": "2025-01-01",
    "enc-dec31": "2025-12-31",
    "enc-utc-late": "2026-01-01T07:30:00Z",  # 2025-12-31 in Los Angeles
    "enc-utc-early": "2025-01-01T07:59:00Z",  # 2024-12-31 in Los Angeles
    "enc-march": "2025-03",  # a partial date: March 1-31
    "enc-2026": "2026-01-01",
}


def _load(store: Store) -> None:
    """A small store: four sources, versions, a deletion, events on the year's boundaries."""
    _write(
        store,
        "ehr-a",
        [
            cohorts.patient("p1", "2020-05-01"),
            cohorts.patient("p2", "2021-06-01"),
            cohorts.patient("dup", "2020-01-01"),
            cohorts.patient("mine", "2020-01-01"),
            cohorts.patient("gone", "2020-01-01"),
            cohorts.full_year("p1"),
            {"resourceType": "Observation", "id": "obs-1", "status": "final", "code": {"text": "x"}},
        ],
        T0,
    )
    _write(store, "ehr-a", [cohorts.patient("p1", "2020-05-02")], T0 + HOUR)  # version 2
    _write(store, "ehr-a", [cohorts.patient("gone", "2020-01-01")], T0 + HOUR, deleted=True)
    _write(store, "ehr-b", [cohorts.patient("dup", "2019-01-01")], T0)
    _write(store, "rest", [cohorts.patient("mine", "2019-02-02")], T0)
    encounters = [cohorts.encounter(rid, "p1", start) for rid, start in ENCOUNTERS.items()]
    encounters.append(cohorts.encounter("enc-hcpcs", "p2", "2025-06-15", "H0031", system=HCPCS))
    encounters.append(_local_code_encounter())
    _write(store, "ehr-a", encounters, T0 + 2 * HOUR)
    _write(
        store,
        "ehr-a",
        [
            cohorts.condition("cond-1", "p1", "F43.22", recorded="2025-02-01"),
            cohorts.condition("cond-2", "p2", "F93.0", recorded="2025-02-01"),
            cohorts.procedure("proc-1", "p1", "2025-04-01", "90834"),
            cohorts.procedure("proc-2", "p2", "2025-04-01", "90837"),
            cohorts.eob("eob-1", "p1", "2025-05-05", "90834"),
            cohorts.eob("eob-2", "p2", "2025-05-05", "90791"),
            cohorts.claim("claim-1", "p1", "2025-05-05", "90834"),
            {
                "resourceType": "Group",
                "id": "atr-1",
                "type": "person",
                "actual": True,
                "member": [{"entity": {"reference": "Patient/p1"}}],
            },
        ],
        T0 + 3 * HOUR,
    )
    _write(
        store,
        "evaluations",
        [
            _report("mr-1", f"{MEASURE_URL}|2025.1.0", "2025-01-01", "2025-12-31", "Patient/p1"),
            _report("mr-2", MEASURE_URL, "2024-01-01", "2024-12-31", "Patient/p2"),
            _report("mr-3", f"{BASE}/Measure/oregon-se-reach|2024.1.0", "2025-07-01", "2026-06-30", None),
            _report(
                "mr-4", f"{MEASURE_URL}-other|2025.1.0", "2025-01-01", "2025-12-31", None, status="pending"
            ),
        ],
        T0 + 4 * HOUR,
    )
    _write(store, "ehr-a", _tasks(7), T0 + 5 * HOUR)


def _tasks(n: int, start: int = 0) -> list[Resource]:
    return [
        {"resourceType": "Task", "id": f"task-{k}", "status": "requested", "intent": "order"}
        for k in range(start, start + n)
    ]


@pytest.fixture(scope="module", params=ENGINES)
def loaded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, pg_schemas: list[str]
) -> Iterator[TestClient]:
    """The service over one loaded store per engine, shared by the read-only tests of this module."""
    tmp = tmp_path_factory.mktemp("resources")
    factory = make_store_factory(str(request.param), tmp, pg_schemas)
    store = factory()
    _load(store)
    settings = Settings(database_url=f"sqlite:///{tmp / 'cli.db'}", mappings_dir=ROOT / "mappings")
    with TestClient(create_app(settings, store=store), raise_server_exceptions=False) as client:
        yield client
    store.close()


def _ids(bundle: dict[str, Any]) -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry", [])}


def _outcome_code(response: Any) -> str:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    return str(body["issue"][0]["code"])


def _path(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


# --------------------------------------------------------------------------------------------------
# read and vread


def test_read_serves_the_current_version_with_meta_and_headers(loaded: TestClient) -> None:
    response = loaded.get("/fhir/Patient/p1")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/fhir+json; charset=utf-8"
    body = response.json()
    assert body["birthDate"] == "2020-05-02"
    assert body["meta"] == {
        "versionId": "2",
        "lastUpdated": "2026-01-10T13:00:00.000000Z",
        "source": "ehr-a",
    }
    assert response.headers["ETag"] == 'W/"2"'
    assert response.headers["Last-Modified"] == "Sat, 10 Jan 2026 13:00:00 GMT"


def test_vread_of_the_older_version(loaded: TestClient) -> None:
    old = loaded.get("/fhir/Patient/p1/_history/1")
    assert old.status_code == 200
    assert old.json()["birthDate"] == "2020-05-01"
    assert old.json()["meta"]["versionId"] == "1"
    assert old.headers["ETag"] == 'W/"1"'
    assert loaded.get("/fhir/Patient/p1/_history/2").json()["birthDate"] == "2020-05-02"


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        pytest.param("/fhir/Patient/nobody", 404, "not-found", id="unknown-id"),
        pytest.param("/fhir/Patient/gone", 410, "deleted", id="deleted"),
        pytest.param("/fhir/Patient/gone/_history/2", 410, "deleted", id="vread-of-the-deletion"),
        pytest.param("/fhir/Patient/p1/_history/3", 404, "not-found", id="vread-unknown-version"),
        pytest.param("/fhir/Patient/p1/_history/x", 404, "not-found", id="vread-bad-version"),
        pytest.param("/fhir/Frobnicator/1", 404, "not-supported", id="not-an-r4-type"),
        pytest.param("/fhir/Frobnicator", 404, "not-supported", id="search-not-an-r4-type"),
        pytest.param("/fhir/Immunization/1", 404, "not-found", id="r4-type-with-no-rows"),
        pytest.param("/fhir/Patient/dup", 400, "invalid", id="same-id-in-two-sources"),
        pytest.param("/fhir/Patient/dup/_history/1", 400, "invalid", id="vread-same-id-in-two-sources"),
        pytest.param("/fhir/Patient/p1?_source=ehr-b", 404, "not-found", id="not-in-that-source"),
        pytest.param("/fhir/Patient/p1?_format=xml", 406, "not-supported", id="xml-format"),
        pytest.param("/fhir/Measure/oregon-se-issue-focused", 404, "not-found", id="measure-id-without-year"),
    ],
)
def test_read_errors(loaded: TestClient, path: str, status: int, code: str) -> None:
    response = loaded.get(path)
    assert response.status_code == status, response.text
    assert _outcome_code(response) == code


def test_ambiguity_names_the_sources_and_source_resolves_it(loaded: TestClient) -> None:
    message = loaded.get("/fhir/Patient/dup").json()["issue"][0]["diagnostics"]
    assert "ehr-a" in message and "ehr-b" in message and "_source" in message
    chosen = loaded.get("/fhir/Patient/dup?_source=ehr-b")
    assert chosen.status_code == 200
    assert chosen.json()["meta"]["source"] == "ehr-b"
    assert chosen.json()["birthDate"] == "2019-01-01"
    assert loaded.get("/fhir/Patient/dup/_history/1?_source=ehr-a").json()["birthDate"] == "2020-01-01"


def test_the_callers_own_source_wins_an_ambiguity(loaded: TestClient) -> None:
    body = loaded.get("/fhir/Patient/mine").json()
    assert body["meta"]["source"] == "rest"  # the anonymous caller pushes under api_default_source


@pytest.mark.parametrize(
    ("path", "resource_type"),
    [
        pytest.param("/fhir/Observation/obs-1", "Observation", id="a-type-without-facts"),
        pytest.param("/fhir/Group/atr-1?_format=json", "Group", id="format-json"),
        pytest.param(
            "/fhir/MeasureReport/mr-1?_format=application/fhir%2Bjson", "MeasureReport", id="format-mime"
        ),
        pytest.param("/fhir/Coverage/cov-p1-ALLCARE", "Coverage", id="coverage"),
    ],
)
def test_read_any_stored_type(loaded: TestClient, path: str, resource_type: str) -> None:
    response = loaded.get(path)
    assert response.status_code == 200, response.text
    assert response.json()["resourceType"] == resource_type


# --------------------------------------------------------------------------------------------------
# search on stored types

P1_ENCOUNTERS = set(ENCOUNTERS)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param("date=2025", {"enc-jan1", "enc-dec31", "enc-utc-late", "enc-march"}, id="year"),
        pytest.param("date=eq2025", {"enc-jan1", "enc-dec31", "enc-utc-late", "enc-march"}, id="eq-year"),
        pytest.param("date=ne2025", {"enc-utc-early", "enc-2026"}, id="ne-year"),
        pytest.param("date=2025-12-31", {"enc-dec31", "enc-utc-late"}, id="last-day-with-utc-offset"),
        pytest.param("date=2025-01-01", {"enc-jan1"}, id="first-day-utc-early-is-the-day-before"),
        pytest.param("date=ge2025-01-01", {"enc-jan1", "enc-dec31", "enc-utc-late", "enc-march", "enc-2026"},
                     id="ge-first-day"),
        pytest.param("date=gt2025-12-31", {"enc-2026"}, id="gt-last-day"),
        pytest.param("date=le2025-12-31", P1_ENCOUNTERS - {"enc-2026"}, id="le-last-day"),
        pytest.param("date=lt2025-01-01", {"enc-utc-early"}, id="lt-first-day"),
        pytest.param("date=ge2025-01-01&date=le2025-12-31", {"enc-jan1", "enc-dec31", "enc-utc-late", "enc-march"},
                     id="ge-and-le-the-year"),
        pytest.param("date=2025-03", {"enc-march"}, id="month-contains-partial-target"),
        pytest.param("date=2025-03-15", set(), id="eq-day-does-not-contain-a-month"),
        pytest.param("date=ge2025-03-15", {"enc-march", "enc-dec31", "enc-utc-late", "enc-2026"},
                     id="ge-inside-a-partial-target"),
        pytest.param("date=le2025-03-15", {"enc-march", "enc-jan1", "enc-utc-early"}, id="le-inside-a-partial-target"),
        pytest.param("date=sa2025-12-31", {"enc-2026"}, id="starts-after"),
        pytest.param("date=eb2025-01-01", {"enc-utc-early"}, id="ends-before"),
        pytest.param("date=2024-12-31T23:59:00-08:00", {"enc-utc-early"}, id="datetime-is-its-local-day"),
        pytest.param("date=2024-12-31T23:59:00%2B00:00", {"enc-utc-early"}, id="datetime-offset-plus"),
        pytest.param("date=2025-01-01,2026-01-01", {"enc-jan1", "enc-2026"}, id="comma-is-or"),
    ],
)  # fmt: skip
def test_date_search_on_local_days(loaded: TestClient, query: str, expected: set[str]) -> None:
    response = loaded.get(f"/fhir/Encounter?patient=p1&{query}")
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert _ids(bundle) == expected
    assert bundle["total"] == len(expected)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param("/fhir/Encounter?patient=Patient/p2", {"enc-hcpcs", "enc-local"}, id="patient-reference"),
        pytest.param("/fhir/Encounter?patient=p2", {"enc-hcpcs", "enc-local"}, id="patient-bare-id"),
        pytest.param("/fhir/Encounter?subject=Patient/p2", {"enc-hcpcs", "enc-local"}, id="subject"),
        pytest.param("/fhir/Encounter?subject:Patient=p2", {"enc-hcpcs", "enc-local"}, id="type-modifier"),
        pytest.param("/fhir/Encounter?patient=https://ehr.example/fhir/Patient/p2", {"enc-hcpcs", "enc-local"},
                     id="absolute-reference"),
        pytest.param("/fhir/Encounter?subject=Group/p2", set(), id="other-type-matches-nothing"),
        pytest.param("/fhir/Encounter?patient=p1,p2&date=2025-06", {"enc-hcpcs"}, id="or-and"),
        pytest.param(f"/fhir/Encounter?code={CPT}|90834&patient=p2", set(), id="code-system-and-code-none"),
        pytest.param(f"/fhir/Encounter?code={HCPCS}|H0031", {"enc-hcpcs"}, id="code-system-and-code"),
        pytest.param("/fhir/Encounter?code=H0031", {"enc-hcpcs"}, id="code-any-system"),
        pytest.param("/fhir/Encounter?code=|H0031", set(), id="code-no-system-but-it-has-one"),
        pytest.param("/fhir/Encounter?code=|LOCAL1", {"enc-local"}, id="code-without-system"),
        pytest.param("/fhir/Encounter?code=LOCAL1", {"enc-local"}, id="code-without-system-any"),
        pytest.param(f"/fhir/Encounter?code={HCPCS}|", {"enc-hcpcs"}, id="code-whole-system"),
        pytest.param(f"/fhir/Encounter?type={HCPCS}|H0031,LOCAL1", {"enc-hcpcs", "enc-local"}, id="type-or"),
        pytest.param(f"/fhir/Condition?code={ICD}|F43.22", {"cond-1"}, id="condition-code"),
        pytest.param("/fhir/Condition?code=F43.22&patient=p2", set(), id="condition-code-other-patient"),
        pytest.param("/fhir/Condition?date=2025-02-01", {"cond-1", "cond-2"}, id="condition-date"),
        pytest.param("/fhir/Procedure?code=90834", {"proc-1"}, id="procedure-code"),
        pytest.param("/fhir/Procedure?subject=p2", {"proc-2"}, id="procedure-subject"),
        pytest.param(f"/fhir/ExplanationOfBenefit?code={CPT}|90834", {"eob-1"}, id="eob-line-code"),
        pytest.param("/fhir/ExplanationOfBenefit?code=F43.22", set(), id="eob-diagnosis-is-not-code"),
        pytest.param("/fhir/ExplanationOfBenefit?patient=p2&date=2025-05", {"eob-2"}, id="eob-patient-date"),
        pytest.param("/fhir/Claim?code=90834&patient=Patient/p1", {"claim-1"}, id="claim-code"),
        pytest.param("/fhir/Coverage?patient=p1", {"cov-p1-ALLCARE"}, id="coverage-patient"),
        pytest.param("/fhir/Coverage?beneficiary=Patient/p2", set(), id="coverage-beneficiary-none"),
        pytest.param("/fhir/Group?member=Patient/p1", {"atr-1"}, id="group-member"),
        pytest.param("/fhir/Group?member=p2", set(), id="group-not-a-member"),
        pytest.param(f"/fhir/Patient?identifier={MEMBER}|M-p1", {"p1"}, id="patient-identifier"),
        pytest.param("/fhir/Patient?identifier=M-p2", {"p2"}, id="patient-identifier-value"),
        pytest.param("/fhir/Patient?identifier=|M-p2", set(), id="patient-identifier-no-system"),
        pytest.param("/fhir/Patient?_id=p1,p2", {"p1", "p2"}, id="id"),
        pytest.param("/fhir/Patient?_id=dup", ["dup", "dup"], id="id-in-two-sources"),
        pytest.param("/fhir/Patient?_source=ehr-b", {"dup"}, id="source"),
        pytest.param("/fhir/Patient?_id=gone", set(), id="deleted-not-found"),
        pytest.param("/fhir/Patient?_lastUpdated=ge2026-01-10T13:00:00Z", {"p1"}, id="last-updated-ge"),
        pytest.param("/fhir/Patient?_lastUpdated=lt2026-01-10T12:00:00.000001Z&_source=ehr-a",
                     {"p2", "dup", "mine"}, id="last-updated-lt-microsecond"),
        pytest.param("/fhir/Patient?_lastUpdated=2026-01-10T04:00-08:00&_source=ehr-a", {"p2", "dup", "mine"},
                     id="last-updated-minute-with-offset"),
        pytest.param("/fhir/Patient?_lastUpdated=2026-01-09", set(), id="last-updated-local-day-before"),
        pytest.param("/fhir/Observation?_id=obs-1", {"obs-1"}, id="type-without-facts"),
    ],
)  # fmt: skip
def test_search_parameters(loaded: TestClient, path: str, expected: set[str] | list[str]) -> None:
    response = loaded.get(path)
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    assert sorted(e["resource"]["id"] for e in bundle.get("entry", [])) == sorted(expected)
    assert bundle["total"] == len(expected)


def test_entries_and_self_link(loaded: TestClient) -> None:
    bundle = loaded.get("/fhir/Procedure?patient=p1&_sort=date&foo=bar").json()
    (entry,) = bundle["entry"]
    assert entry["fullUrl"] == "http://testserver/fhir/Procedure/proc-1"
    assert entry["search"] == {"mode": "match"}
    assert entry["resource"]["meta"]["source"] == "ehr-a"
    (self_link,) = [link for link in bundle["link"] if link["relation"] == "self"]
    assert dict(parse_qsl(urlsplit(self_link["url"]).query)) == {"patient": "p1", "_count": "50"}
    assert [link["relation"] for link in bundle["link"]] == ["self"]


def test_strict_handling_rejects_unknown_parameters(loaded: TestClient) -> None:
    lenient = loaded.get("/fhir/Procedure?foo=bar")
    assert lenient.status_code == 200
    assert lenient.json()["total"] == 2
    strict = loaded.get("/fhir/Procedure?foo=bar", headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400
    assert "foo" in strict.json()["issue"][0]["diagnostics"]
    assert loaded.get("/fhir/Procedure?code=90834", headers={"Prefer": "handling=strict"}).status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/fhir/Encounter?date=ap2025", id="unsupported-prefix"),
        pytest.param("/fhir/Encounter?date=2025-13", id="bad-date"),
        pytest.param("/fhir/Encounter?patient:Group=x", id="unsupported-type-modifier"),
        pytest.param("/fhir/Encounter?code:text=x", id="unsupported-modifier"),
        pytest.param("/fhir/Encounter?_count=-1", id="negative-count"),
        pytest.param("/fhir/Encounter?_page=garbage", id="bad-page-token"),
        pytest.param("/fhir/Patient?identifier=http://other.example|1", id="identifier-other-system"),
        pytest.param("/fhir/Patient?_lastUpdated=yesterday", id="bad-instant"),
    ],
)
def test_bad_search_values_are_400(loaded: TestClient, path: str) -> None:
    response = loaded.get(path)
    assert response.status_code == 400, response.text
    assert _outcome_code(response) == "invalid"


def test_summary_count(loaded: TestClient) -> None:
    bundle = loaded.get("/fhir/Encounter?patient=p1&_summary=count").json()
    assert bundle["total"] == len(ENCOUNTERS)
    assert "entry" not in bundle
    assert loaded.get("/fhir/Encounter?_count=0").json()["total"] == len(ENCOUNTERS) + 2


def test_paging_follows_next_links_to_the_end(loaded: TestClient) -> None:
    url: str | None = "/fhir/Task?_count=3&status=ignored"
    seen: list[str] = []
    pages = []
    while url is not None:
        bundle = loaded.get(url).json()
        assert bundle["total"] == 7
        pages.append(bundle)
        seen += [e["resource"]["id"] for e in bundle.get("entry", [])]
        links = {link["relation"]: link["url"] for link in bundle["link"]}
        assert links["self"].startswith("http://testserver/fhir/Task?")
        assert "status" not in links["self"]
        url = _path(links["next"]) if "next" in links else None
    assert [len(p["entry"]) for p in pages] == [3, 3, 1]
    assert sorted(seen) == [f"task-{n}" for n in range(7)]
    assert len(set(seen)) == 7
    previous = {link["relation"]: link["url"] for link in pages[2]["link"]}["previous"]
    back = loaded.get(_path(previous)).json()
    assert [e["resource"]["id"] for e in back["entry"]] == [e["resource"]["id"] for e in pages[1]["entry"]]
    relations = {link["relation"] for link in back["link"]}
    assert relations == {"self", "next", "previous"}
    assert "previous" not in {link["relation"] for link in pages[0]["link"]}


def test_paging_is_not_disturbed_by_new_resources(client: TestClient, store: Store) -> None:
    _write(store, "ehr-a", _tasks(7), T0)
    first = client.get("/fhir/Task?_count=4").json()
    _write(store, "ehr-a", _tasks(1, start=7), T0 + HOUR)
    nxt = {link["relation"]: link["url"] for link in first["link"]}["next"]
    second = client.get(_path(nxt)).json()
    ids = [e["resource"]["id"] for e in first["entry"] + second["entry"]]
    assert sorted(ids) == [f"task-{n}" for n in range(7)]
    assert "next" not in {link["relation"] for link in second["link"]}


def test_page_token_of_another_search_is_refused(loaded: TestClient) -> None:
    first = loaded.get("/fhir/Task?_count=2").json()
    token = dict(parse_qsl(urlsplit(first["link"][1]["url"]).query))["_page"]
    response = loaded.get(f"/fhir/Task?_count=2&_id=task-1&_page={token}")
    assert response.status_code == 400
    assert loaded.get(f"/fhir/Observation?_count=2&_page={token}").status_code == 400
    definitional = loaded.get("/fhir/ValueSet?_count=2").json()
    token = dict(parse_qsl(urlsplit(definitional["link"][1]["url"]).query))["_page"]
    assert loaded.get(f"/fhir/ValueSet?_count=2&_page={token}").status_code == 200
    assert loaded.get(f"/fhir/Task?_count=2&_page={token}").status_code == 400


def test_count_is_capped(client: TestClient, store: Store) -> None:
    _write(store, "ehr-a", _tasks(3), T0)
    app_settings = client.app.state.adapter.settings  # type: ignore[attr-defined]
    app_settings.search_count_max = 2
    bundle = client.get("/fhir/Task?_count=500").json()
    assert len(bundle["entry"]) == 2
    assert "_count=2" in bundle["link"][0]["url"]


def test_post_search_is_the_same_search(loaded: TestClient) -> None:
    response = loaded.post(
        "/fhir/Encounter/_search?patient=p1",
        content="date=ge2025-12-31",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200, response.text
    assert _ids(response.json()) == {"enc-dec31", "enc-utc-late", "enc-2026"}
    wrong = loaded.post("/fhir/Encounter/_search", json={"patient": "p1"})
    assert wrong.status_code == 415


# --------------------------------------------------------------------------------------------------
# MeasureReport


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param(f"measure={MEASURE_URL}", {"mr-1", "mr-2"}, id="measure-every-version"),
        pytest.param(f"measure={MEASURE_URL}|2025.1.0", {"mr-1"}, id="measure-one-version"),
        pytest.param(f"measure={MEASURE_URL}|2024.1.0", set(), id="measure-other-version"),
        pytest.param(f"measure={MEASURE_URL}-oth", set(), id="measure-is-not-a-prefix-search"),
        pytest.param("period=2025", {"mr-1", "mr-4"}, id="period-in-the-year"),
        pytest.param("period=ge2025-07-01", {"mr-1", "mr-3", "mr-4"}, id="period-ge"),
        pytest.param("period=gt2025-12-31", {"mr-3"}, id="period-gt-last-day"),
        pytest.param("period=ge2025-12-31", {"mr-1", "mr-3", "mr-4"}, id="period-ge-last-day"),
        pytest.param("period=le2025-01-01", {"mr-1", "mr-2", "mr-4"}, id="period-le-first-day"),
        pytest.param("period=le2024-12-31", {"mr-2"}, id="period-le-day-before"),
        pytest.param("period=lt2025-01-01", {"mr-2"}, id="period-lt-first-day"),
        pytest.param("period=eq2024-01-01", set(), id="period-eq-a-day-does-not-contain-a-year"),
        pytest.param("subject=Patient/p1", {"mr-1"}, id="subject"),
        pytest.param("subject=p2", {"mr-2"}, id="subject-bare"),
        pytest.param("patient=p1", {"mr-1"}, id="patient"),
        pytest.param("status=pending", {"mr-4"}, id="status"),
        pytest.param("reporter:identifier=urn:ietf:rfc:3986|urn:example:cco", {"mr-1", "mr-2", "mr-3", "mr-4"},
                     id="reporter-identifier"),
        pytest.param("reporter=Organization/x", set(), id="reporter-reference"),
        pytest.param(f"measure={MEASURE_URL}&period=2025&_count=1", {"mr-1"}, id="combined"),
    ],
)  # fmt: skip
def test_measure_report_search(loaded: TestClient, query: str, expected: set[str]) -> None:
    response = loaded.get(f"/fhir/MeasureReport?{query}")
    assert response.status_code == 200, response.text
    assert _ids(response.json()) == expected


def test_evaluated_reports_are_found(
    client: TestClient, store: Store, mappings: Mappings, api_settings: Any
) -> None:
    """Individual MeasureReports of a real evaluation, stored the way the measure routes store
    them, are found by measure (with and without version), period and subject."""
    _write(
        store,
        "claims",
        [
            cohorts.patient("c1", "2021-03-01"),
            cohorts.full_year("c1"),
            cohorts.eob("e1", "c1", "2025-04-01", "90834", ("F43.22",)),
            cohorts.patient("c2", "2022-03-01"),
            cohorts.full_year("c2"),
        ],
        T0,
    )
    request = EvaluationRequest("oregon-se-issue-focused", date(2025, 1, 1), date(2025, 12, 31))
    ev = run_evaluation(api_settings, store, request, evidence=False, mappings=mappings)
    ctx = ReportContext(BASE, mappings.hash, datetime(2026, 2, 1, tzinfo=UTC))
    bundle = build_report(ev, ctx, "individual")
    reports = [e["resource"] for e in bundle["entry"]] if bundle["resourceType"] == "Bundle" else [bundle]
    assert reports
    _write(store, "evaluations", reports, T0 + HOUR)
    canonical = reports[0]["measure"]
    url = measure_url(ev.spec, BASE)
    assert canonical.startswith(url + "|")
    for query in (
        f"measure={url}",
        f"measure={canonical}",
        "period=2025",
        f"measure={url}&period=ge2025-12-31",
    ):
        assert client.get(f"/fhir/MeasureReport?{query}").json()["total"] == len(reports), query
    found = client.get("/fhir/MeasureReport?subject=Patient/c1").json()
    assert [e["resource"]["subject"]["reference"] for e in found["entry"]] == ["Patient/c1"]


# --------------------------------------------------------------------------------------------------
# definitional resources


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param(f"/fhir/Measure?url={MEASURE_URL}", {"oregon-se-issue-focused-2025", "oregon-se-issue-focused-2026"},
                     id="measure-by-url-every-year"),
        pytest.param("/fhir/Measure?_id=oregon-se-reach-2024", {"oregon-se-reach-2024"}, id="measure-by-id"),
        pytest.param("/fhir/Measure?name=oregonsereach",
                     {"oregon-se-reach-2022", "oregon-se-reach-2023", "oregon-se-reach-2024"}, id="name-starts-with"),
        pytest.param("/fhir/Measure?name:exact=oregonsereach", set(), id="name-exact-is-case-sensitive"),
        pytest.param(f"/fhir/Library?url={BASE}/Library/oregon-se-reach", {"oregon-se-reach-2022",
                     "oregon-se-reach-2023", "oregon-se-reach-2024"}, id="library-by-url"),
        pytest.param(f"/fhir/ValueSet?url={BASE}/ValueSet/oregon-se-issue-focused-hospice",
                     {"oregon-se-issue-focused-2025-hospice", "oregon-se-issue-focused-2026-hospice"},
                     id="valueset-by-url"),
    ],
)  # fmt: skip
def test_definitional_search(loaded: TestClient, path: str, expected: set[str]) -> None:
    response = loaded.get(path)
    assert response.status_code == 200, response.text
    assert _ids(response.json()) == expected


def test_definitional_read_and_search_by_url_and_version(loaded: TestClient) -> None:
    read = loaded.get("/fhir/Measure/oregon-se-issue-focused-2025")
    assert read.status_code == 200
    measure = read.json()
    assert measure["url"] == MEASURE_URL
    version_id = measure["meta"]["versionId"]
    assert read.headers["ETag"] == f'W/"{version_id}"'
    assert loaded.get(f"/fhir/Measure/oregon-se-issue-focused-2025/_history/{version_id}").status_code == 200
    assert loaded.get("/fhir/Measure/oregon-se-issue-focused-2025/_history/1").status_code == 404
    hint = loaded.get("/fhir/Measure/oregon-se-issue-focused").json()["issue"][0]["diagnostics"]
    assert "oregon-se-issue-focused-2025" in hint
    one = loaded.get(f"/fhir/Measure?url={MEASURE_URL}|{measure['version']}").json()
    assert _ids(one) == {"oregon-se-issue-focused-2025"}
    by_version = loaded.get(f"/fhir/Measure?version={measure['version']}").json()
    assert "oregon-se-issue-focused-2025" in _ids(by_version)
    vs = loaded.get("/fhir/ValueSet/oregon-se-issue-focused-2025-hospice")
    assert vs.status_code == 200 and vs.json()["resourceType"] == "ValueSet"
    lib = loaded.get("/fhir/Library/oregon-se-reach-2024")
    assert lib.status_code == 200 and lib.json()["type"]["coding"][0]["code"] == "logic-library"


def test_definitional_paging(loaded: TestClient) -> None:
    url: str | None = "/fhir/ValueSet?_count=4"
    seen: list[str] = []
    while url is not None:
        bundle = loaded.get(url).json()
        seen += [e["resource"]["id"] for e in bundle.get("entry", [])]
        links = {link["relation"]: link["url"] for link in bundle["link"]}
        url = _path(links["next"]) if "next" in links else None
    assert len(seen) == len(set(seen)) == bundle["total"] > 8


# --------------------------------------------------------------------------------------------------
# capabilities

_SAMPLES = {"token": "x", "date": "2025", "reference": "Patient/x", "uri": "http://x.example", "string": "x"}


def test_every_declared_search_parameter_is_accepted_strictly(loaded: TestClient) -> None:
    client = loaded
    statement = client.get("/fhir/metadata").json()
    resources = {r["type"]: r for r in statement["rest"][0]["resource"]}
    for rtype in ("Patient", "Encounter", "Condition", "Procedure", "ServiceRequest", "Claim",
                  "ExplanationOfBenefit", "Coverage", "Group", "Organization", "MeasureReport", "Task",
                  "Observation", "Location", "Measure", "Library", "ValueSet"):  # fmt: skip
        resource = resources[rtype]
        assert {"read", "vread", "search-type"} <= {i["code"] for i in resource["interaction"]}
        for param in resource["searchParam"]:
            value = _SAMPLES[param["type"]]
            response = client.get(
                f"/fhir/{rtype}", params={param["name"]: value}, headers={"Prefer": "handling=strict"}
            )
            assert response.status_code == 200, (rtype, param["name"], response.text)
    encounter = {p["name"]: p["type"] for p in resources["Encounter"]["searchParam"]}
    assert encounter == {
        "_id": "token", "_lastUpdated": "date", "_source": "uri", "patient": "reference",
        "subject": "reference", "date": "date", "code": "token", "type": "token",
    }  # fmt: skip
    report = {p["name"]: p["type"] for p in resources["MeasureReport"]["searchParam"]}
    assert report["measure"] == "reference" and report["period"] == "date" and report["status"] == "token"
