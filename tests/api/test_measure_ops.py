"""Measure operations over HTTP (routes_measure) on SQLite and PostgreSQL: $evaluate-measure,
$evaluate, $data-requirements, $deqm-submit-data and $care-gaps.

Every MeasureReport returned is checked with fhir_adapter.report.checks against the generated Measure.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from fhir_adapter.measure.spec import Mappings
from fhir_adapter.report.caregaps import GAP_STATUS_EXT
from fhir_adapter.report.checks import SUBMIT_DATA_UPDATE_TYPE_EXT, check_list_entries, check_measure_report
from fhir_adapter.report.conformance import build_measure
from fhir_adapter.report.submitdata import manifest_id
from fhir_adapter.settings import DEFAULT_CANONICAL_BASE, Settings
from fhir_adapter.store.db import ParsedResource, Store
from tests import cohorts as c
from tests.measure.test_boundaries import load

Json = dict[str, Any]
IF = "oregon-se-issue-focused"
EVALUATE = f"/fhir/Measure/{IF}/$evaluate-measure"
YEAR = {"periodStart": "2025-01-01", "periodEnd": "2025-12-31"}
MEASURE_URL = f"{DEFAULT_CANONICAL_BASE}/Measure/{IF}"
REACH_URL = f"{DEFAULT_CANONICAL_BASE}/Measure/oregon-se-reach"
T0 = datetime(2026, 2, 1, tzinfo=UTC)
T1 = datetime(2026, 3, 1, tzinfo=UTC)

COHORT = [
    c.patient("served", "2022-06-15"), c.full_year("served"), c.eob("e1", "served", "2025-03-01"),
    c.patient("gap", "2021-01-15"), c.full_year("gap", cco="IHN"),
    c.patient("need", "2023-02-01"), c.full_year("need"), c.eob("e2", "need", "2025-04-01", "99392"),
    c.patient("dead", "2022-06-15", deceasedDateTime="2025-05-05"), c.full_year("dead"),
    c.patient("old", "2018-01-01"), c.full_year("old"),
    # services on the first and on the last day of 2025 (the last one late in the evening, local time)
    c.patient("first", "2022-01-01"), c.full_year("first"), c.eob("e-first", "first", "2025-01-01"),
    c.patient("last", "2022-01-01"), c.full_year("last", cco="IHN"),
    c.encounter("v-last", "last", "2025-12-31T23:30:00-08:00", reason="F43.22"),
]  # fmt: skip


@pytest.fixture
def loaded(client: TestClient, store: Store) -> TestClient:
    load(store, COHORT, at=T0)
    return client


def _measure(mappings: Mappings, year: int = 2025, measure: str = IF) -> Json:
    return build_measure(mappings.measures[(measure, year)], DEFAULT_CANONICAL_BASE, ccos=mappings.ccos)


def _ok(response: Any) -> Json:
    assert response.status_code == 200, response.text
    # job results come back from routes_jobs as plain application/fhir+json
    assert response.headers["content-type"].startswith("application/fhir+json")
    body: Json = response.json()
    return body


def _outcome(response: Any, status: int) -> Json:
    assert response.status_code == status, response.text
    body: Json = response.json()
    assert body["resourceType"] == "OperationOutcome"
    return body


def _counts(report: Json, group: int = 0) -> dict[str, int]:
    return {p["code"]["coding"][0]["code"]: p["count"] for p in report["group"][group]["population"]}


def _poll(client: TestClient, url: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    path = url.replace("http://testserver", "")
    while True:
        response = client.get(path)
        if response.status_code != 202 or time.monotonic() > deadline:
            return response
        time.sleep(0.05)


def _post_params(client: TestClient, path: str, params: list[tuple[str, str, Any]], **kw: Any) -> Any:
    body = {"resourceType": "Parameters", "parameter": [{"name": n, k: v} for n, k, v in params]}
    return client.post(
        path, content=orjson.dumps(body), headers={"Content-Type": "application/fhir+json", **kw}
    )


def _current(store: Store, source: str, rtype: str, rid: str) -> tuple[bool, Json] | None:
    with store.read() as conn:
        row = conn.execute(
            text(
                "SELECT r.deleted, b.body FROM resources r JOIN resource_bodies b ON b.rkey = r.rkey "
                "WHERE r.source = :s AND r.rtype = :t AND r.rid = :i AND r.superseded_at IS NULL"
            ),
            {"s": source, "t": rtype, "i": rid},
        ).first()
    return None if row is None else (bool(row[0]), orjson.loads(bytes(row[1])))


# --------------------------------------------------------------------------------------------------
# $evaluate-measure


@pytest.mark.parametrize(
    ("method", "measure_id", "params", "rtype", "version"),
    [
        pytest.param("GET", IF, {}, "summary", "2025.0.0", id="population-default"),
        pytest.param(
            "GET", f"{IF}-2025", {"reportType": "population"}, "summary", "2025.0.0", id="versioned-id"
        ),
        pytest.param("POST", IF, {"reportType": "population"}, "summary", "2025.0.0", id="post-population"),
        pytest.param(
            "GET", IF, {"subject": "Patient/served"}, "individual", "2025.0.0", id="subject-default"
        ),
        pytest.param(
            "POST",
            IF,
            {"reportType": "subject", "subject": "Patient/gap"},
            "individual",
            "2025.0.0",
            id="post-subject",
        ),
        pytest.param(
            "GET", IF, {"reportType": "subject-list"}, "subject-list", "2025.0.0", id="subject-list"
        ),
        pytest.param(
            "GET",
            IF,
            {"periodStart": "2026-01-01", "periodEnd": "2026-12-31"},
            "summary",
            "2026.0.0",
            id="period-picks-2026-version",
        ),
        pytest.param(
            "GET",
            f"{IF}-2026",
            {"periodStart": "2026-01-01", "periodEnd": "2026-12-31"},
            "summary",
            "2026.0.0",
            id="versioned-2026",
        ),
    ],
)
def test_report_types(
    loaded: TestClient,
    mappings: Mappings,
    method: str,
    measure_id: str,
    params: dict[str, str],
    rtype: str,
    version: str,
) -> None:
    query = {**YEAR, **params}
    path = f"/fhir/Measure/{measure_id}/$evaluate-measure"
    if method == "GET":
        response = loaded.get(path, params=query)
    else:
        kinds = {"subject": "valueReference"}
        response = _post_params(
            loaded,
            path,
            [
                (k, kinds.get(k, "valueString" if k == "reportType" else "valueDate"),
                 {"reference": v} if k == "subject" else v)
                for k, v in query.items()
            ],
        )  # fmt: skip
    report = _ok(response)
    assert report["type"] == rtype
    assert report["measure"] == f"{MEASURE_URL}|{version}"
    assert check_measure_report(report, _measure(mappings, int(version[:4]))) == []


@pytest.mark.parametrize(
    ("subject", "counts"),
    [
        pytest.param("served", (1, 1, 0, 1), id="numerator"),
        pytest.param("gap", (1, 1, 0, 0), id="open-gap"),
        pytest.param("dead", (1, 1, 1, 0), id="excluded"),
        pytest.param("old", (0, 0, 0, 0), id="outside-age-band"),
    ],
)
def test_individual_counts(
    loaded: TestClient, mappings: Mappings, subject: str, counts: tuple[int, int, int, int]
) -> None:
    report = _ok(loaded.get(EVALUATE, params={**YEAR, "subject": f"Patient/{subject}"}))
    assert check_measure_report(report, _measure(mappings)) == []
    assert report["subject"]["reference"] == f"Patient/{subject}"
    assert tuple(_counts(report).values()) == counts


def test_population_counts_and_reporter(loaded: TestClient, mappings: Mappings) -> None:
    report = _ok(loaded.get(EVALUATE, params={**YEAR, "reporter": "Organization/ihn-cco"}))
    assert report["reporter"] == {"reference": "Organization/ihn-cco"}
    assert _counts(report) == {
        "initial-population": 6,
        "denominator": 6,
        "denominator-exclusion": 1,
        "numerator": 3,
    }
    assert report["group"][0]["measureScore"] == {"value": 0.6}
    assert check_measure_report(report, _measure(mappings)) == []


@pytest.mark.parametrize(
    ("start", "end", "sources", "first", "last"),
    [
        pytest.param("2025-01-01", "2025-12-31", "all", 1, 1, id="first-and-last-day-included"),
        pytest.param("2025", "2025", "all", 1, 1, id="year-precision-dates"),
        pytest.param("2025-01-01", "2025-12-31T12:00:00-08:00", "all", 1, 1, id="end-datetime-means-its-day"),
        pytest.param("2025-01-01", "2026-01-01T05:00:00Z", "all", 1, 1, id="utc-end-is-local-dec-31"),
        pytest.param("2025-01-02", "2025-12-31", "all", 0, 1, id="start-after-first-service"),
        pytest.param("2025-01-01", "2025-12-30", "all", 1, 0, id="end-before-last-service"),
        pytest.param("2025-01-01", "2025-12-31", "claims", 1, 0, id="claims-only-drops-the-ehr-encounter"),
    ],
)
def test_period_boundaries(
    loaded: TestClient, mappings: Mappings, start: str, end: str, sources: str, first: int, last: int
) -> None:
    for subject, expected in (("first", first), ("last", last)):
        params = {"periodStart": start, "periodEnd": end, "subject": f"Patient/{subject}", "sources": sources}
        report = _ok(loaded.get(EVALUATE, params=params))
        assert _counts(report)["denominator"] == 1, subject
        assert _counts(report)["numerator"] == expected, subject
        assert check_measure_report(report, _measure(mappings)) == []


def test_denominator_zero_has_no_score(loaded: TestClient, mappings: Mappings) -> None:
    # In 2031 every child of the cohort is older than 5: nobody is in any denominator.
    report = _ok(loaded.get(EVALUATE, params={"periodStart": "2031-01-01", "periodEnd": "2031-12-31"}))
    assert check_measure_report(report, _measure(mappings, 2026)) == []
    for group in report["group"]:
        assert {p["count"] for p in group["population"]} == {0}
        assert "measureScore" not in group
    # identified-need alone has a zero denominator for a child without a qualifying diagnosis
    individual = _ok(loaded.get(EVALUATE, params={**YEAR, "subject": "Patient/gap"}))
    assert _counts(individual, 1)["denominator"] == 0
    assert "measureScore" not in individual["group"][1]


def test_as_of_reproduces_an_earlier_answer(loaded: TestClient, store: Store, mappings: Mappings) -> None:
    params = {**YEAR, "asOf": "2026-02-15"}
    before = _ok(loaded.get(EVALUATE, params=params))
    load(store, [c.eob("e-late", "gap", "2025-06-01")], at=T1)  # a claim that arrives later
    now = _ok(loaded.get(EVALUATE, params=YEAR))
    assert _counts(now)["numerator"] == _counts(before)["numerator"] + 1
    again = _ok(loaded.get(EVALUATE, params=params))
    assert again["group"] == before["group"]
    assert again["id"] == before["id"]
    cut = [e for e in again["extension"] if e["url"].endswith("/report-data-cut")]
    assert cut == [e for e in before["extension"] if e["url"].endswith("/report-data-cut")]
    assert check_measure_report(again, _measure(mappings)) == []


def test_subject_list_references_stored_lists_of_stored_reports(
    loaded: TestClient, mappings: Mappings
) -> None:
    report = _ok(loaded.get(EVALUATE, params={**YEAR, "reportType": "subject-list"}))
    measure = _measure(mappings)
    assert check_measure_report(report, measure) == []
    assert "contained" not in report
    refs = {
        (g["id"], p["code"]["coding"][0]["code"], p["subjectResults"]["reference"])
        for g in report["group"]
        for p in g["population"]
    }
    individuals: dict[str, Json] = {}
    for group_id, code, ref in sorted(refs):
        assert ref.startswith("List/")
        listed = _ok(loaded.get(f"/fhir/{ref}"))
        for entry in listed.get("entry", []):
            target = entry["item"]["reference"]
            if target not in individuals:
                individuals[target] = _ok(loaded.get(f"/fhir/{target}"))
        assert (
            check_list_entries(listed, list(individuals.values()), group_id=group_id, population_code=code)
            == []
        )
    assert len(individuals) == 6  # the initial population
    for individual in individuals.values():
        assert check_measure_report(individual, measure) == []
    stored = _ok(loaded.get(f"/fhir/MeasureReport/{report['id']}"))
    assert stored["meta"]["source"] == "adapter-reports"


@pytest.mark.parametrize(
    ("params", "stored"),
    [
        pytest.param({}, False, id="not-persisted-by-default"),
        pytest.param({"persist": "true"}, True, id="persist"),
        pytest.param({"persist": "true", "subject": "Patient/served"}, True, id="persist-individual"),
    ],
)
def test_persist(
    loaded: TestClient, store: Store, api_settings: Settings, params: dict[str, str], stored: bool
) -> None:
    report = _ok(loaded.get(EVALUATE, params={**YEAR, **params}))
    found = _current(store, api_settings.report_source, "MeasureReport", report["id"])
    assert (found is not None) == stored
    if found is not None:
        assert found == (False, report)


def test_subject_in_two_sources(loaded: TestClient, store: Store, mappings: Mappings) -> None:
    twin = c.patient("gap", "2021-01-15", member="OTHER-MEMBER")
    load(store, [twin, c.full_year("gap", cco="ALLCARE")], source="s2", at=T0)
    ambiguous = _outcome(loaded.get(EVALUATE, params={**YEAR, "subject": "Patient/gap"}), 400)
    message = ambiguous["issue"][0]["diagnostics"]
    assert "s1" in message and "s2" in message and "source parameter" in message
    report = _ok(loaded.get(EVALUATE, params={**YEAR, "subject": "Patient/gap", "source": "s2"}))
    assert report["subject"]["identifier"]["value"] == "OTHER-MEMBER"
    assert check_measure_report(report, _measure(mappings)) == []


@pytest.mark.parametrize(
    ("path", "params", "status", "words"),
    [
        pytest.param(
            EVALUATE, {"periodStart": "2025-01-01"}, 400, "needs periodEnd", id="missing-period-end"
        ),
        pytest.param(
            EVALUATE, {**YEAR, "measure": "x"}, 400, "no parameter 'measure'", id="unknown-parameter"
        ),
        pytest.param(EVALUATE, {**YEAR, "reportType": "everything"}, 400, "reportType", id="bad-report-type"),
        pytest.param(
            EVALUATE, {**YEAR, "reportType": "subject"}, 400, "needs subject", id="subject-type-no-subject"
        ),
        pytest.param(EVALUATE, {**YEAR, "subject": "Group/g1"}, 400, "Patient/<id>", id="group-subject"),
        pytest.param(
            EVALUATE,
            {**YEAR, "subject": "Patient/gap", "reportType": "population"},
            400,
            "not allowed",
            id="subj-pop",
        ),
        pytest.param(EVALUATE, {**YEAR, "sources": "ehr"}, 400, "claims or all", id="bad-sources"),
        pytest.param(EVALUATE, {**YEAR, "asOf": "yesterday"}, 400, "asOf", id="bad-as-of"),
        pytest.param(EVALUATE, {**YEAR, "persist": "yes"}, 400, "true or false", id="bad-persist"),
        pytest.param(EVALUATE, {**YEAR, "reporter": "Patient/x"}, 400, "reporter", id="bad-reporter"),
        pytest.param(
            EVALUATE,
            {"periodStart": "2025-12-31", "periodEnd": "2025-01-01"},
            400,
            "after",
            id="start-after-end",
        ),
        pytest.param(
            EVALUATE,
            {"periodStart": "2025-13-01", "periodEnd": "2025-12-31"},
            400,
            "not a FHIR date",
            id="bad-date",
        ),
        pytest.param(
            f"/fhir/Measure/{IF}-2025/$evaluate-measure",
            {"periodStart": "2026-01-01", "periodEnd": "2026-12-31"},
            400,
            "uses oregon-se-issue-focused-2026",
            id="versioned-id-wrong-year",
        ),
        pytest.param(
            f"/fhir/Measure/{IF}/$evaluate-measure",
            {"periodStart": "2020-01-01", "periodEnd": "2020-12-31"},
            400,
            "no version",
            id="no-version-for-period",
        ),
        pytest.param(
            "/fhir/Measure/no-such/$evaluate-measure", YEAR, 404, "no Measure", id="unknown-measure"
        ),
        pytest.param(
            f"/fhir/Measure/{IF}-1999/$evaluate-measure", YEAR, 404, "no Measure", id="unknown-version"
        ),
        pytest.param(
            EVALUATE, {**YEAR, "subject": "Patient/nobody"}, 404, "Patient/nobody", id="unknown-subject"
        ),
    ],
)
def test_evaluate_measure_errors(
    loaded: TestClient, path: str, params: dict[str, str], status: int, words: str
) -> None:
    body = _outcome(loaded.get(path, params=params), status)
    assert words in body["issue"][0]["diagnostics"]


def test_post_errors_name_the_parameter(loaded: TestClient) -> None:
    response = _post_params(
        loaded, EVALUATE, [("periodStart", "valueDate", "2025-01-01"), ("periodEnd", "valueDate", "nope")]
    )
    assert _outcome(response, 400)["issue"][0]["expression"] == ["Parameters.parameter[1]"]
    wrong_type = loaded.post(EVALUATE, content=b"periodStart=2025", headers={"Content-Type": "text/plain"})
    _outcome(wrong_type, 415)
    not_parameters = loaded.post(
        EVALUATE, content=b'{"resourceType": "Bundle"}', headers={"Content-Type": "application/fhir+json"}
    )
    _outcome(not_parameters, 400)


@pytest.mark.parametrize(
    ("params", "rtype"),
    [
        pytest.param({}, "summary", id="population"),
        pytest.param({"reportType": "subject-list"}, "subject-list", id="subject-list"),
    ],
)
def test_async_evaluation(loaded: TestClient, mappings: Mappings, params: dict[str, str], rtype: str) -> None:
    query = {**YEAR, "asOf": "2026-02-15", **params}
    kicked = loaded.get(EVALUATE, params=query, headers={"Prefer": "respond-async"})
    assert kicked.status_code == 202, kicked.text
    done = _poll(loaded, kicked.headers["Content-Location"])
    report = _ok(done)
    assert report["type"] == rtype
    assert check_measure_report(report, _measure(mappings)) == []
    sync = _ok(loaded.get(EVALUATE, params=query))
    assert report["id"] == sync["id"]
    assert report["group"] == sync["group"]


# --------------------------------------------------------------------------------------------------
# $evaluate (DEQM)


def test_deqm_evaluate_one_bundle_per_subject(loaded: TestClient, mappings: Mappings) -> None:
    response = _post_params(
        loaded,
        "/fhir/Measure/$evaluate",
        [
            ("measureId", "valueString", IF),
            ("measureUrl", "valueCanonical", REACH_URL),
            ("periodStart", "valueDate", "2025-01-01"),
            ("periodEnd", "valueDate", "2025-12-31"),
            ("subject", "valueReference", {"reference": "Patient/served"}),
        ],
    )
    out = _ok(response)
    (param,) = out["parameter"]
    assert param["name"] == "return"
    bundle = param["resource"]
    assert bundle["type"] == "collection"
    resources = [e["resource"] for e in bundle["entry"]]
    reports = [r for r in resources if r["resourceType"] == "MeasureReport"]
    assert [r["measure"] for r in reports] == [f"{MEASURE_URL}|2025.0.0", f"{REACH_URL}|2024.0.0"]
    assert resources[:2] == reports, "reports first"
    assert check_measure_report(reports[0], _measure(mappings)) == []
    assert check_measure_report(reports[1], _measure(mappings, 2024, "oregon-se-reach")) == []
    # the data of interest: every evaluated resource is in the Bundle, served with its source
    included = {f"{r['resourceType']}/{r['id']}" for r in resources[2:]}
    for report in reports:
        assert {e["reference"] for e in report["evaluatedResource"]} <= included
    assert {"Patient/served", "ExplanationOfBenefit/e1", "Coverage/cov-served-ALLCARE"} <= included
    assert all(r["meta"]["source"] == "s1" for r in resources[2:])


def test_deqm_evaluate_population_and_errors(loaded: TestClient, mappings: Mappings) -> None:
    out = _ok(
        _post_params(
            loaded,
            "/fhir/Measure/$evaluate",
            [("measureUrl", "valueCanonical", f"{MEASURE_URL}|2025.0.0"), ("periodStart", "valueDate", "2025-01-01"),
             ("periodEnd", "valueDate", "2025-12-31")],
        )
    )  # fmt: skip
    (report,) = [e["resource"] for e in out["parameter"][0]["resource"]["entry"]]
    assert report["type"] == "summary"
    assert check_measure_report(report, _measure(mappings)) == []
    cases = [
        (
            [("periodStart", "valueDate", "2025-01-01"), ("periodEnd", "valueDate", "2025-12-31")],
            400,
            "measureId",
        ),
        (
            [("measureUrl", "valueCanonical", f"{MEASURE_URL}|2026.0.0"), *_year()],
            400,
            "uses version 2025.0.0",
        ),
        ([("measureUrl", "valueCanonical", "http://elsewhere.org/Measure/x"), *_year()], 404, "no Measure"),
    ]
    for params, status, words in cases:
        body = _outcome(_post_params(loaded, "/fhir/Measure/$evaluate", params), status)
        assert words in body["issue"][0]["diagnostics"]


def _year() -> list[tuple[str, str, Any]]:
    return [("periodStart", "valueDate", "2025-01-01"), ("periodEnd", "valueDate", "2025-12-31")]


# --------------------------------------------------------------------------------------------------
# $data-requirements


@pytest.mark.parametrize(
    ("measure_id", "params", "year"),
    [
        pytest.param(IF, YEAR, 2025, id="plain-id"),
        pytest.param(
            f"{IF}-2026", {"periodStart": "2026-04-01", "periodEnd": "2026-06-30"}, 2026, id="quarter"
        ),
        pytest.param(
            "oregon-se-reach", {"periodStart": "2024-01-01", "periodEnd": "2024-12-31"}, 2024, id="reach"
        ),
    ],
)
def test_data_requirements(
    loaded: TestClient, mappings: Mappings, measure_id: str, params: dict[str, str], year: int
) -> None:
    library = _ok(loaded.get(f"/fhir/Measure/{measure_id}/$data-requirements", params=params))
    assert library["resourceType"] == "Library"
    assert library["type"]["coding"][0]["code"] == "module-definition"
    spec = mappings.measures[(measure_id.removesuffix(f"-{year}"), year)]
    used = {f["valueSet"] for r in library["dataRequirement"] for f in r.get("codeFilter", [])}
    measure = build_measure(spec, DEFAULT_CANONICAL_BASE, ccos=mappings.ccos)
    assert used and used <= {a["resource"] for a in measure["relatedArtifact"] if a["type"] == "depends-on"}
    dated = [r for r in library["dataRequirement"] if "dateFilter" in r]
    assert dated
    for requirement in dated:
        assert requirement["dateFilter"][0]["valuePeriod"] == {
            "start": params["periodStart"],
            "end": params["periodEnd"],
        }


def test_data_requirements_errors(loaded: TestClient) -> None:
    _outcome(loaded.get(f"/fhir/Measure/{IF}/$data-requirements"), 400)
    _outcome(loaded.get("/fhir/Measure/nothing/$data-requirements", params=YEAR), 404)
    _outcome(loaded.get(f"/fhir/Measure/{IF}-2026/$data-requirements", params=YEAR), 400)


# --------------------------------------------------------------------------------------------------
# $deqm-submit-data


def _datax(rid: str, update: str, subject: str = "sd1", measure: str = f"{MEASURE_URL}|2025.0.0") -> Json:
    return {
        "resourceType": "MeasureReport",
        "id": rid,
        "extension": [{"url": SUBMIT_DATA_UPDATE_TYPE_EXT, "valueCode": update}],
        "status": "complete",
        "type": "data-collection",
        "measure": measure,
        "subject": {"reference": f"Patient/{subject}"},
        "date": "2026-01-10T00:00:00Z",
        "reporter": {"reference": "Organization/clinic-1"},
        "period": {"start": "2025-01-01", "end": "2025-12-31"},
    }


def _submit(client: TestClient, *bundles: list[Json]) -> Any:
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {
                "name": "bundle",
                "resource": {
                    "resourceType": "Bundle",
                    "type": "collection",
                    "entry": [{"resource": r} for r in rs],
                },
            }
            for rs in bundles
        ],
    }
    return client.post(
        "/fhir/Measure/$deqm-submit-data",
        content=orjson.dumps(body),
        headers={"Content-Type": "application/fhir+json"},
    )


SD_PATIENT = c.patient("sd1", "2022-03-03")
SD_COVERAGE = c.full_year("sd1")
SD_VISIT = c.encounter("sd-visit", "sd1", "2025-05-05", reason="F43.22")
SD_OTHER = c.encounter("sd-other", "sd1", "2025-06-06", "99213")


def _summary(outcome: Json) -> str:
    return str(outcome["issue"][0]["diagnostics"])


def test_submit_snapshot_replaces_and_incremental_adds(
    loaded: TestClient, store: Store, api_settings: Settings, mappings: Mappings
) -> None:
    source = api_settings.api_default_source
    # something the same source pushed by other means is never touched by a snapshot
    store.write_batch(
        source, [ParsedResource("Encounter", "pushed", c.encounter("pushed", "sd1", "2025-02-02"))], 1
    )
    first = _ok(_submit(loaded, [_datax("dx-1", "snapshot"), SD_PATIENT, SD_COVERAGE, SD_VISIT, SD_OTHER]))
    (outcome,) = [p["resource"] for p in first["parameter"]]
    assert "created 5, updated 0, unchanged 0; tombstoned 0" in _summary(outcome)
    # data-quality warnings of the ingest checks, located in the request
    no_dx = [
        i
        for i in outcome["issue"]
        if i.get("details", {}).get("coding", [{}])[0].get("code") == "encounter-no-diagnosis"
    ]
    assert [i["expression"][0].split(".resource")[0] for i in no_dx] == ["Parameters.parameter[0]"]
    assert no_dx[0]["expression"][0].startswith("Parameters.parameter[0].resource.entry[4].resource")
    served = _ok(loaded.get(EVALUATE, params={**YEAR, "subject": "Patient/sd1"}))
    assert _counts(served)["numerator"] == 1, "the submitted encounter is a qualifying service"

    # a second snapshot without the qualifying visit: the visit is tombstoned, the child loses the service
    second = _ok(_submit(loaded, [_datax("dx-1", "snapshot"), SD_PATIENT, SD_COVERAGE, SD_OTHER]))
    summary = _summary(second["parameter"][0]["resource"])
    assert (
        "created 0, updated 0, unchanged 4; tombstoned 1 resource(s) of the previous payload: Encounter/sd-visit"
        in summary
    )
    assert _current(store, source, "Encounter", "sd-visit") == (
        True,
        {"resourceType": "Encounter", "id": "sd-visit"},
    )
    assert _current(store, source, "Encounter", "pushed") is not None
    assert _current(store, source, "Encounter", "pushed")[0] is False  # type: ignore[index]
    after = _ok(loaded.get(EVALUATE, params={**YEAR, "subject": "Patient/sd1"}))
    assert _counts(after)["numerator"] == 0
    assert check_measure_report(after, _measure(mappings)) == []

    # incremental: upsert only; nothing earlier is removed
    third = _ok(_submit(loaded, [_datax("dx-2", "incremental"), SD_VISIT]))
    summary = _summary(third["parameter"][0]["resource"])
    assert "created 1, updated 1, unchanged 0; tombstoned 0" in summary  # dx-2 new, sd-visit revived
    warnings = [i for i in third["parameter"][0]["resource"]["issue"] if "meta.source" in i["diagnostics"]]
    assert [w["expression"] for w in warnings] == [
        ["Parameters.parameter[0].resource.entry[0].resource"],
        ["Parameters.parameter[0].resource.entry[1].resource"],
    ]
    assert {w["severity"] for w in warnings} == {"warning"}
    for rid in ("sd-other", "sd-visit"):
        found = _current(store, source, "Encounter", rid)
        assert found is not None and found[0] is False
    manifest = _current(store, source, "List", manifest_id("Patient/sd1"))
    assert manifest is not None
    listed = {e["item"]["reference"] for e in manifest[1]["entry"]}
    assert listed == {
        "MeasureReport/dx-1", "MeasureReport/dx-2", "Patient/sd1", "Coverage/cov-sd1-ALLCARE",
        "Encounter/sd-other", "Encounter/sd-visit",
    }  # fmt: skip
    assert _counts(_ok(loaded.get(EVALUATE, params={**YEAR, "subject": "Patient/sd1"})))["numerator"] == 1


def test_submit_several_bundles_one_outcome_each(loaded: TestClient) -> None:
    out = _ok(
        _submit(
            loaded,
            [_datax("dx-a", "snapshot", subject="sd1"), SD_PATIENT],
            [_datax("dx-b", "incremental", subject="sd2"), c.patient("sd2", "2022-01-01")],
        )
    )
    assert [p["name"] for p in out["parameter"]] == ["outcome", "outcome"]
    assert [p["resource"]["issue"][0]["expression"] for p in out["parameter"]] == [
        ["Parameters.parameter[0].resource"],
        ["Parameters.parameter[1].resource"],
    ]


@pytest.mark.parametrize(
    ("bundle", "words", "where"),
    [
        pytest.param([SD_PATIENT], "no MeasureReport", "Parameters.parameter[0].resource", id="no-report"),
        pytest.param(
            [{**_datax("dx", "snapshot"), "type": "individual"}, SD_PATIENT],
            "data-collection",
            "Parameters.parameter[0].resource.entry[0].resource.type",
            id="wrong-type",
        ),
        pytest.param(
            [{**_datax("dx", "snapshot"), "extension": []}, SD_PATIENT],
            "exactly one",
            "Parameters.parameter[0].resource.entry[0].resource.extension",
            id="no-update-type",
        ),
        pytest.param(
            [_datax("dx", "full-refresh"), SD_PATIENT],
            "not supported",
            "Parameters.parameter[0].resource.entry[0].resource.extension",
            id="unsupported-update-type",
        ),
        pytest.param(
            [{k: v for k, v in _datax("dx", "snapshot").items() if k != "subject"}, SD_PATIENT],
            "subject",
            "Parameters.parameter[0].resource.entry[0].resource.subject",
            id="no-subject",
        ),
        pytest.param(
            [_datax("dx", "snapshot", measure=f"{MEASURE_URL}|1999.0.0"), SD_PATIENT],
            "no version",
            "Parameters.parameter[0].resource.entry[0].resource.measure",
            id="unknown-version",
        ),
        pytest.param(
            [_datax("dx", "snapshot", measure="http://elsewhere.org/Measure/x"), SD_PATIENT],
            "not a Measure of this server",
            "Parameters.parameter[0].resource.entry[0].resource.measure",
            id="foreign-measure",
        ),
    ],
)
def test_submit_mismatch_is_400_and_stores_nothing(
    loaded: TestClient, store: Store, api_settings: Settings, bundle: list[Json], words: str, where: str
) -> None:
    # the first bundle is valid: nothing of it may be stored when the second is refused
    response = _submit(
        loaded, [_datax("ok", "snapshot", subject="sd9"), c.patient("sd9", "2022-01-01")], bundle
    )
    issue = _outcome(response, 400)["issue"][0]
    assert words in issue["diagnostics"]
    assert issue["expression"] == [where.replace("parameter[0]", "parameter[1]")]
    assert _current(store, api_settings.api_default_source, "Patient", "sd9") is None


def test_submit_needs_json(loaded: TestClient) -> None:
    response = loaded.post(
        "/fhir/Measure/$deqm-submit-data", content=b"x", headers={"Content-Type": "text/csv"}
    )
    _outcome(response, 415)
    response = loaded.post(
        "/fhir/Measure/$deqm-submit-data", content=b"{", headers={"Content-Type": "application/fhir+json"}
    )
    _outcome(response, 400)


# --------------------------------------------------------------------------------------------------
# $care-gaps


def _gaps(out: Json) -> dict[str, dict[str, str]]:
    """subject → {group id: gap status} over every returned document."""
    found: dict[str, dict[str, str]] = {}
    for param in out.get("parameter", []):
        assert param["name"] == "return"
        bundle = param["resource"]
        assert bundle["type"] == "document"
        composition = bundle["entry"][0]["resource"]
        subject = composition["subject"]["reference"]
        for entry in bundle["entry"]:
            resource = entry["resource"]
            if resource["resourceType"] != "DetectedIssue":
                continue
            status = next(m for m in resource["modifierExtension"] if m["url"] == GAP_STATUS_EXT)
            group = next(
                e["valueString"] for e in resource["extension"] if e["url"].endswith("/measure-group")
            )
            found.setdefault(subject, {})[group] = status["valueCodeableConcept"]["coding"][0]["code"]
    return found


OPEN = "open-gap"
CLOSED = "closed-gap"


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        pytest.param(
            {"subject": "Patient/gap", "status": [OPEN]}, {"Patient/gap": {"all-enrolled": OPEN}}, id="open"
        ),
        pytest.param(
            {"subject": "Patient/gap", "status": [CLOSED]}, {}, id="open-gap-child-has-no-closed-gap"
        ),
        pytest.param(
            {"subject": "Patient/served", "status": [CLOSED, OPEN]},
            {"Patient/served": {"all-enrolled": CLOSED, "identified-need": CLOSED}},
            id="closed",
        ),
        pytest.param(
            {"subject": "Patient/need", "status": [OPEN]},
            {"Patient/need": {"all-enrolled": OPEN, "identified-need": OPEN}},
            id="open-in-both-groups",
        ),
        pytest.param(
            {"subject": "Patient/old", "status": [OPEN, CLOSED]}, {}, id="ineligible-never-has-a-gap"
        ),
        pytest.param(
            {"subject": "Patient/dead", "status": [OPEN, CLOSED]}, {}, id="excluded-never-has-a-gap"
        ),
        pytest.param(
            {"organization": "IHN", "status": [OPEN, CLOSED]},
            {
                "Patient/gap": {"all-enrolled": OPEN},
                "Patient/last": {"all-enrolled": CLOSED, "identified-need": CLOSED},
            },
            id="organization-by-cco-id",
        ),
        pytest.param(
            {"organization": "Organization/ALLCARE", "status": [OPEN]},
            {"Patient/need": {"all-enrolled": OPEN, "identified-need": OPEN}},
            id="organization-reference-open-only",
        ),
        pytest.param(
            {"organization": "ALLCARE", "status": [CLOSED], "sources": "claims"},
            {
                "Patient/served": {"all-enrolled": CLOSED, "identified-need": CLOSED},
                "Patient/first": {"all-enrolled": CLOSED, "identified-need": CLOSED},
            },
            id="claims-only",
        ),
        pytest.param({"organization": "JCC", "status": [OPEN, CLOSED]}, {}, id="cco-without-children"),
    ],
)
def test_care_gaps(loaded: TestClient, mappings: Mappings, params: dict[str, Any], expected: Json) -> None:
    out = _ok(loaded.get("/fhir/Measure/$care-gaps", params={**YEAR, **params}))
    assert _gaps(out) == expected
    measure = _measure(mappings)
    for param in out.get("parameter", []):
        for entry in param["resource"]["entry"]:
            if entry["resource"]["resourceType"] == "MeasureReport":
                assert check_measure_report(entry["resource"], measure) == []


def test_care_gaps_post_and_async(loaded: TestClient) -> None:
    params = [
        ("periodStart", "valueDate", "2025-01-01"),
        ("periodEnd", "valueDate", "2025-12-31"),
        ("status", "valueCode", OPEN),
        ("organization", "valueString", "IHN"),
        ("measureId", "valueString", IF),
        ("asOf", "valueDateTime", "2026-02-15T00:00:00Z"),
    ]
    sync = _ok(_post_params(loaded, "/fhir/Measure/$care-gaps", params))
    assert _gaps(sync) == {"Patient/gap": {"all-enrolled": OPEN}}
    kicked = _post_params(loaded, "/fhir/Measure/$care-gaps", params, Prefer="respond-async")
    assert kicked.status_code == 202, kicked.text
    result = _ok(_poll(loaded, kicked.headers["Content-Location"]))
    assert _gaps(result) == _gaps(sync)
    patient = [
        e["resource"]
        for e in result["parameter"][0]["resource"]["entry"]
        if e["resource"]["resourceType"] == "Patient"
    ]
    assert [p["id"] for p in patient] == ["gap"]


@pytest.mark.parametrize(
    ("params", "words"),
    [
        pytest.param(
            {"subject": "Patient/gap", "status": ["prospective-gap"]},
            "prospective-gap is not supported",
            id="prospective",
        ),
        pytest.param(
            {"subject": "Patient/gap", "status": ["closed"]}, "open-gap or closed-gap", id="bad-status"
        ),
        pytest.param({"subject": "Patient/gap"}, "needs status", id="no-status"),
        pytest.param({"status": [OPEN]}, "subject", id="neither-subject-nor-organization"),
        pytest.param(
            {"status": [OPEN], "subject": "Patient/gap", "organization": "IHN"}, "one of them", id="both"
        ),
        pytest.param({"status": [OPEN], "organization": "NOT-A-CCO"}, "not a CCO", id="unknown-cco"),
        pytest.param(
            {"status": [OPEN], "organization": "IHN", "practitioner": "Practitioner/1"},
            "practitioner",
            id="practitioner",
        ),
    ],
)
def test_care_gaps_errors(loaded: TestClient, params: dict[str, Any], words: str) -> None:
    body = _outcome(loaded.get("/fhir/Measure/$care-gaps", params={**YEAR, **params}), 400)
    assert words in body["issue"][0]["diagnostics"]


def test_care_gaps_default_measures_are_those_of_the_year(loaded: TestClient, store: Store) -> None:
    load(store, [c.patient("y2024", "2021-05-05"), c.full_year("y2024", year=2024)], at=T0)
    out = _ok(loaded.get("/fhir/Measure/$care-gaps", params={"periodStart": "2024-01-01", "periodEnd": "2024-12-31",
                                                             "subject": "Patient/y2024", "status": OPEN}))  # fmt: skip
    reports = [
        e["resource"] for p in out["parameter"] for e in p["resource"]["entry"]
        if e["resource"]["resourceType"] == "MeasureReport"
    ]  # fmt: skip
    assert [r["measure"] for r in reports] == [f"{REACH_URL}|2024.0.0"]
    _outcome(loaded.get("/fhir/Measure/$care-gaps", params={"periodStart": "2030-01-01", "periodEnd": "2030-12-31",
                                                            "subject": "Patient/gap", "status": OPEN}), 400)  # fmt: skip


# --------------------------------------------------------------------------------------------------
# CapabilityStatement


def test_capability_statement_declares_the_operations(client: TestClient) -> None:
    statement = _ok(client.get("/fhir/metadata"))
    (measure,) = [r for r in statement["rest"][0]["resource"] if r["type"] == "Measure"]
    ops = {o["name"]: o for o in measure["operation"]}
    assert {name: o["definition"] for name, o in ops.items()} == {
        "evaluate-measure": "http://hl7.org/fhir/OperationDefinition/Measure-evaluate-measure",
        "evaluate": "http://hl7.org/fhir/us/davinci-deqm/OperationDefinition/evaluate",
        "data-requirements": "http://hl7.org/fhir/OperationDefinition/Measure-data-requirements",
        "deqm-submit-data": "http://hl7.org/fhir/us/davinci-deqm/OperationDefinition/submit-data",
        "care-gaps": "http://hl7.org/fhir/us/davinci-deqm/OperationDefinition/care-gaps",
    }
    assert ops["deqm-submit-data"]["extension"] == [
        {"url": SUBMIT_DATA_UPDATE_TYPE_EXT, "valueCode": "incremental"},
        {"url": SUBMIT_DATA_UPDATE_TYPE_EXT, "valueCode": "snapshot"},
    ]
    assert "submit-data" not in ops, "DEQM advises against exposing the base $submit-data beside it"


def test_measure_operations_run_before_generic_reads(loaded: TestClient) -> None:
    """``/fhir/Measure/$care-gaps`` must not be read as ``Measure/{id}`` with id ``$care-gaps``."""
    out = _ok(
        loaded.get("/fhir/Measure/$care-gaps", params={**YEAR, "subject": "Patient/gap", "status": OPEN})
    )
    assert out["resourceType"] == "Parameters"
    assert _gaps(out) == {"Patient/gap": {"all-enrolled": OPEN}}
