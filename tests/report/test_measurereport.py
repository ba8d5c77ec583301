"""Reports built from real evaluations pass our DEQM checks (deqm-0…9, profile rules, ids and
counts against the generated Measure) and both independent R4 validators."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from fhir_adapter.measure.spec import Mappings
from fhir_adapter.report.checks import check_list_entries, check_measure_report
from fhir_adapter.report.conformance import build_measure
from fhir_adapter.report.measurereport import (
    ReportContext,
    individual_report,
    subject_list_bundle,
    summary_report,
)
from fhir_adapter.settings import DEFAULT_CANONICAL_BASE, DEFAULT_MEMBER_ID_SYSTEM
from fhir_adapter.store.db import Store
from fhir_adapter.store.evaluate import Evaluation, evaluate
from tests import cohorts as c
from tests.conftest import make_store_factory
from tests.measure.test_boundaries import FAR, load
from tests.validators.harness import node_validate, validators_available

COHORT = [
    c.patient("served", "2022-06-15"), c.full_year("served"), c.eob("e1", "served", "2025-03-01"),
    c.patient("gap", "2021-01-15", gender="male"), c.full_year("gap", cco="IHN"),
    c.patient("need", "2023-02-01"), c.full_year("need"), c.eob("e2", "need", "2025-04-01", "99392"),
    c.patient("dead", "2022-06-15", deceasedDateTime="2025-05-05"), c.full_year("dead"),
    c.patient("old", "2018-01-01"), c.full_year("old"),
    c.patient("clinic", "2024-01-01"), c.full_year("clinic", cco="IHN"),
    c.encounter("v1", "clinic", "2025-09-09"), c.condition("d1", "clinic", encounter_id="v1"),
]  # fmt: skip
CTX = ReportContext(
    canonical_base=DEFAULT_CANONICAL_BASE,
    mappings_hash="abc123",
    generated=datetime(2026, 2, 2, tzinfo=UTC),
    member_system=DEFAULT_MEMBER_ID_SYSTEM,
)


@pytest.fixture
def evaluation(store: Store, mappings: Mappings) -> Evaluation:
    return _evaluate(store, mappings)


def _evaluate(store: Store, mappings: Mappings) -> Evaluation:
    load(store, COHORT)
    spec = mappings.measure_for("oregon-se-issue-focused", date(2025, 12, 31))
    return evaluate(
        store, mappings, spec, date(2025, 1, 1), date(2025, 12, 31), FAR, "all", all_evidence=True
    )


def _measure(ev: Evaluation, mappings: Mappings) -> dict[str, Any]:
    return build_measure(ev.spec, DEFAULT_CANONICAL_BASE, ccos=mappings.ccos)


def test_summary_counts_and_checks(evaluation: Evaluation, mappings: Mappings) -> None:
    report = summary_report(evaluation, CTX)
    assert check_measure_report(report, _measure(evaluation, mappings)) == []
    counts = {p["id"]: p["count"] for p in report["group"][0]["population"]}
    assert counts == {
        "all-enrolled-initial-population": 5,
        "all-enrolled-denominator": 5,
        "all-enrolled-denominator-exclusion": 1,
        "all-enrolled-numerator": 2,
    }
    assert report["group"][0]["measureScore"] == {"value": 0.5}
    need = {p["id"]: p["count"] for p in report["group"][1]["population"]}
    assert need["identified-need-denominator"] == 3
    cco = next(s for s in report["group"][0]["stratifier"] if s["id"] == "cco")
    by_cco = {
        s["value"]["text"]: {p["code"]["coding"][0]["code"]: p["count"] for p in s["population"]}
        for s in cco["stratum"]
    }
    assert by_cco["IHN"] == {
        "initial-population": 2,
        "denominator": 2,
        "denominator-exclusion": 0,
        "numerator": 1,
    }


def test_individual_reports_check(evaluation: Evaluation, mappings: Mappings) -> None:
    measure = _measure(evaluation, mappings)
    for child in evaluation.children:
        report = individual_report(evaluation, CTX, child)
        assert check_measure_report(report, measure) == [], child.subject_id
    served = next(ch for ch in evaluation.children if ch.subject_id == "served")
    report = individual_report(evaluation, CTX, served)
    criteria = {
        e["reference"]: sorted(x["valueString"] for x in e["extension"]) for e in report["evaluatedResource"]
    }
    assert criteria["ExplanationOfBenefit/e1"] == [
        "all-enrolled-numerator", "identified-need-denominator", "identified-need-numerator",
    ]  # fmt: skip


def test_subject_list_points_at_individual_reports(evaluation: Evaluation, mappings: Mappings) -> None:
    bundle = subject_list_bundle(evaluation, CTX)
    report = bundle["entry"][0]["resource"]
    individuals = [e["resource"] for e in bundle["entry"][1:]]
    assert check_measure_report(report, _measure(evaluation, mappings)) == []
    lists = {f"#{x['id']}": x for x in report["contained"]}
    for group in report["group"]:
        for pop in group["population"]:
            listed = lists[pop["subjectResults"]["reference"]]
            assert len(listed.get("entry", [])) == pop["count"]
            code = pop["code"]["coding"][0]["code"]
            assert check_list_entries(listed, individuals, group_id=group["id"], population_code=code) == []


def test_score_omitted_when_denominator_is_zero(store: Store, mappings: Mappings) -> None:
    load(store, [c.patient("x", "2010-01-01"), c.full_year("x")])
    spec = mappings.measure_for("oregon-se-issue-focused", date(2025, 12, 31))
    ev = evaluate(store, mappings, spec, date(2025, 1, 1), date(2025, 12, 31), FAR, "all")
    report = summary_report(ev, CTX)
    assert all("measureScore" not in g for g in report["group"])
    assert check_measure_report(report, build_measure(spec, DEFAULT_CANONICAL_BASE)) == []


def test_reports_pass_independent_validators(
    mappings: Mappings, tmp_path: Path, pg_schemas: list[str]
) -> None:
    """Validated once, on SQLite: both engines give identical reports (tests/store/test_engines.py)."""
    reason = validators_available()
    if reason:
        pytest.skip(reason)
    store = make_store_factory("sqlite", tmp_path, pg_schemas)()
    evaluation = _evaluate(store, mappings)
    bundle = subject_list_bundle(evaluation, CTX)
    resources = [summary_report(evaluation, CTX), *(e["resource"] for e in bundle["entry"]), bundle]
    results = node_validate(resources)
    failures = [r.describe() for r in results if not r.ok]
    assert failures == []


def test_empty_lists_carry_an_empty_reason(evaluation: Evaluation) -> None:
    bundle = subject_list_bundle(evaluation, CTX)
    lists = bundle["entry"][0]["resource"]["contained"]
    empty = [x for x in lists if "entry" not in x]
    assert empty, "the cohort has empty populations"
    assert all(x["emptyReason"]["coding"][0]["code"] == "nilknown" for x in empty)
    assert all(x["entry"] for x in lists if "entry" in x)


def test_age_band_is_known_when_a_partial_birth_date_leaves_the_age_uncertain(
    store: Store, mappings: Mappings
) -> None:
    load(store, [c.patient("y", "2021"), c.full_year("y")])
    spec = mappings.measure_for("oregon-se-issue-focused", date(2025, 12, 31))
    ev = evaluate(store, mappings, spec, date(2024, 7, 1), date(2025, 6, 30), FAR, "all")
    child = ev.children[0]
    assert child.age is None and child.age_range == (3, 4)
    band = next(s for s in summary_report(ev, CTX)["group"][0]["stratifier"] if s["id"] == "age-band")
    assert [s["value"]["text"] for s in band["stratum"]] == ["3-5"]


def test_numerator_evidence_includes_the_condition_that_supplied_the_diagnosis(
    evaluation: Evaluation,
) -> None:
    clinic = next(ch for ch in evaluation.children if ch.subject_id == "clinic")
    report = individual_report(evaluation, CTX, clinic)
    criteria = {
        e["reference"]: {x["valueString"] for x in e["extension"]} for e in report["evaluatedResource"]
    }
    assert "all-enrolled-numerator" in criteria["Encounter/v1"]
    assert "all-enrolled-numerator" in criteria["Condition/d1"]


def test_coverage_evidence_is_limited_to_the_period(store: Store, mappings: Mappings) -> None:
    load(
        store,
        [c.patient("z", "2022-06-15"), c.coverage("old", "z", "2019-01-01", "2019-12-31"), c.full_year("z")],
    )
    spec = mappings.measure_for("oregon-se-issue-focused", date(2025, 12, 31))
    ev = evaluate(store, mappings, spec, date(2025, 1, 1), date(2025, 12, 31), FAR, "all", all_evidence=True)
    report = individual_report(ev, CTX, ev.children[0])
    assert {e["reference"] for e in report["evaluatedResource"]} == {"Patient/z", "Coverage/cov-z-ALLCARE"}
