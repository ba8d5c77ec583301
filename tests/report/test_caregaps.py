"""DEQM gaps-in-care documents: gaps only for denominator children, open vs closed, the document
structure of the DEQM STU5 gaps bundle, and both base R4 validators."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest

from fhir_adapter.measure.spec import Mappings
from fhir_adapter.report.caregaps import (
    CARE_GAP_CODE,
    GAP_STATUS_EXT,
    GAP_STATUS_SYSTEM,
    GAPS_REPORT_TYPE,
    child_gaps,
    gap_status,
    gaps_bundle,
)
from fhir_adapter.report.checks import check_measure_report
from fhir_adapter.report.conformance import build_measure
from fhir_adapter.report.measurereport import ReportContext
from fhir_adapter.settings import DEFAULT_CANONICAL_BASE, DEFAULT_MEMBER_ID_SYSTEM
from fhir_adapter.store.db import Store
from fhir_adapter.store.evaluate import ChildResult, Evaluation, GroupResult, evaluate
from tests import cohorts as c
from tests.measure.test_boundaries import FAR, load
from tests.validators.harness import node_validate, validators_available

Json = dict[str, Any]
FHIR_BASE = "https://adapter.example.org/fhir"
CTX = ReportContext(
    canonical_base=DEFAULT_CANONICAL_BASE,
    mappings_hash="abc123",
    generated=datetime(2026, 2, 2, tzinfo=UTC),
    member_system=DEFAULT_MEMBER_ID_SYSTEM,
    reporter={"reference": "Organization/reporting-cco"},
)
COHORT = [
    c.patient("served", "2022-06-15"), c.full_year("served"), c.eob("e1", "served", "2025-03-01"),
    c.patient("gap", "2021-01-15"), c.full_year("gap", cco="IHN"),
    c.patient("need", "2023-02-01"), c.full_year("need"), c.eob("e2", "need", "2025-04-01", "99392"),
    c.patient("dead", "2022-06-15", deceasedDateTime="2025-05-05"), c.full_year("dead"),
    c.patient("old", "2018-01-01"), c.full_year("old"),
    c.patient("nocover", "2022-01-01"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("den", "denex", "num", "expected"),
    [
        pytest.param(False, False, False, None, id="not-in-denominator"),
        pytest.param(False, False, True, None, id="numerator-without-denominator-never-a-gap"),
        pytest.param(True, True, False, None, id="excluded"),
        pytest.param(True, True, True, None, id="excluded-even-with-service"),
        pytest.param(True, False, False, "open-gap", id="open"),
        pytest.param(True, False, True, "closed-gap", id="closed"),
    ],
)
def test_gap_status(den: bool, denex: bool, num: bool, expected: str | None) -> None:
    assert gap_status(GroupResult("g", den, den, denex, num, "r")) == expected


@pytest.fixture
def evaluation(store: Store, mappings: Mappings) -> Evaluation:
    load(store, COHORT)
    spec = mappings.measure_for("oregon-se-issue-focused", date(2025, 12, 31))
    return evaluate(
        store, mappings, spec, date(2025, 1, 1), date(2025, 12, 31), FAR, "all", all_evidence=True
    )


def _child(ev: Evaluation, pid: str) -> ChildResult:
    return next(ch for ch in ev.children if ch.subject_id == pid)


BOTH = ("closed-gap", "open-gap")


@pytest.mark.parametrize(
    ("pid", "statuses", "expected"),
    [
        pytest.param(
            "served", BOTH, [(0, "closed-gap"), (1, "closed-gap")], id="served-closed-in-both-groups"
        ),
        pytest.param("served", ("open-gap",), [], id="served-has-no-open-gap"),
        pytest.param("gap", BOTH, [(0, "open-gap")], id="no-need-so-only-the-all-enrolled-group"),
        pytest.param("gap", ("closed-gap",), [], id="gap-has-no-closed-gap"),
        pytest.param("need", ("open-gap",), [(0, "open-gap"), (1, "open-gap")], id="need-open-in-both"),
        pytest.param("dead", BOTH, [], id="excluded-child-never-has-a-gap"),
        pytest.param("old", BOTH, [], id="outside-age-band-never-has-a-gap"),
        pytest.param("nocover", BOTH, [], id="not-enrolled-never-has-a-gap"),
    ],
)
def test_child_gaps(
    evaluation: Evaluation, pid: str, statuses: tuple[str, ...], expected: list[tuple[int, str]]
) -> None:
    assert child_gaps(_child(evaluation, pid), statuses) == expected


@pytest.mark.parametrize(
    ("pid", "statuses"),
    [
        pytest.param("old", BOTH, id="ineligible"),
        pytest.param("dead", BOTH, id="excluded"),
        pytest.param("gap", ("closed-gap",), id="status-filter-leaves-nothing"),
    ],
)
def test_no_document_without_a_gap(evaluation: Evaluation, pid: str, statuses: tuple[str, ...]) -> None:
    child = _child(evaluation, pid)
    assert gaps_bundle([(evaluation, child)], CTX, statuses=statuses, fhir_base=FHIR_BASE) is None


def test_prospective_gap_is_refused(evaluation: Evaluation) -> None:
    with pytest.raises(ValueError, match="prospective-gap"):
        gaps_bundle(
            [(evaluation, _child(evaluation, "gap"))], CTX, statuses=("prospective-gap",), fhir_base=FHIR_BASE
        )


def _by_ref(bundle: Json) -> dict[str, Json]:
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}": e["resource"] for e in bundle["entry"]}


@pytest.mark.parametrize(
    ("pid", "statuses", "groups"),
    [
        pytest.param(
            "need", BOTH, {"all-enrolled": "open-gap", "identified-need": "open-gap"}, id="open-both"
        ),
        pytest.param(
            "served", BOTH, {"all-enrolled": "closed-gap", "identified-need": "closed-gap"}, id="closed"
        ),
        pytest.param("gap", ("open-gap",), {"all-enrolled": "open-gap"}, id="open-one-group"),
    ],
)
def test_document_structure(
    evaluation: Evaluation, mappings: Mappings, pid: str, statuses: tuple[str, ...], groups: dict[str, str]
) -> None:
    child = _child(evaluation, pid)
    patient = {"resourceType": "Patient", "id": pid, "meta": {"source": "s1"}}
    bundle = gaps_bundle([(evaluation, child)], CTX, statuses=statuses, fhir_base=FHIR_BASE, patient=patient)
    assert bundle is not None
    # R4 document rules: bdl-9 identifier, bdl-10 timestamp, bdl-11 Composition first; bdl-7 unique fullUrl
    assert bundle["type"] == "document"
    assert bundle["identifier"]["system"] == "urn:ietf:rfc:3986"
    assert bundle["identifier"]["value"].startswith("urn:uuid:")
    assert bundle["timestamp"] == "2026-02-02T00:00:00.000Z"
    full_urls = [e["fullUrl"] for e in bundle["entry"]]
    assert len(full_urls) == len(set(full_urls))
    assert all(u.startswith(FHIR_BASE + "/") for u in full_urls)
    composition = bundle["entry"][0]["resource"]
    assert composition["resourceType"] == "Composition"
    assert composition["type"] == GAPS_REPORT_TYPE
    assert composition["subject"]["reference"] == f"Patient/{pid}"
    assert composition["author"] == [{"reference": "Organization/reporting-cco"}]
    resources = _by_ref(bundle)
    assert f"Patient/{pid}" in resources
    (section,) = composition["section"]
    report = resources[section["focus"]["reference"]]
    measure = build_measure(evaluation.spec, DEFAULT_CANONICAL_BASE, ccos=mappings.ccos)
    assert check_measure_report(report, measure) == []
    assert report["subject"]["reference"] == f"Patient/{pid}"
    found: dict[str, str] = {}
    for entry in section["entry"]:
        issue = resources[entry["reference"]]
        assert issue["code"] == CARE_GAP_CODE
        assert issue["patient"]["reference"] == f"Patient/{pid}"
        assert issue["evidence"] == [{"detail": [{"reference": section["focus"]["reference"]}]}]
        (modifier,) = issue["modifierExtension"]
        assert modifier["url"] == GAP_STATUS_EXT
        (coding,) = modifier["valueCodeableConcept"]["coding"]
        assert coding["system"] == GAP_STATUS_SYSTEM
        group = next(e["valueString"] for e in issue["extension"] if e["url"].endswith("/measure-group"))
        found[group] = coding["code"]
    assert found == groups


def test_one_document_per_subject_across_measures(store: Store, mappings: Mappings) -> None:
    load(store, COHORT)
    reach = mappings.measure_for("oregon-se-reach", date(2024, 12, 31))
    issue = mappings.measure_for("oregon-se-issue-focused", date(2025, 12, 31))
    evs = [
        evaluate(store, mappings, spec, date(2025, 1, 1), date(2025, 12, 31), FAR, "all", all_evidence=True)
        for spec in (issue, reach)
    ]
    results = [(ev, _child(ev, "gap")) for ev in evs]
    bundle = gaps_bundle(results, CTX, statuses=("open-gap",), fhir_base=FHIR_BASE)
    assert bundle is not None
    sections = bundle["entry"][0]["resource"]["section"]
    assert [s["title"] for s in sections] == [issue.title, reach.title]
    reports = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "MeasureReport"]
    assert {r["measure"].split("|")[1] for r in reports} == {issue.version, reach.version}


def test_documents_pass_both_r4_validators(evaluation: Evaluation) -> None:
    reason = validators_available()
    if reason:
        pytest.skip(reason)
    bundles = [
        gaps_bundle(
            [(evaluation, _child(evaluation, pid))],
            CTX,
            statuses=BOTH,
            fhir_base=FHIR_BASE,
            patient=c.patient(pid, "2022-06-15"),
        )
        for pid in ("served", "gap", "need")
    ]
    resources = [b for b in bundles if b is not None]
    assert len(resources) == 3
    results = node_validate(resources)
    assert all(r.ok for r in results), [r.describe() for r in results if not r.ok]
