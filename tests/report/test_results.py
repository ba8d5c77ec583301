"""Operation results: the stored form of subject-list reports (Lists out of ``contained``, referenced as
``List/<id>``, entries individual MeasureReports) and the ``$evaluate`` Bundle."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest

from fhir_adapter.measure.spec import Mappings
from fhir_adapter.report.checks import check_list_entries, check_measure_report
from fhir_adapter.report.conformance import build_measure
from fhir_adapter.report.measurereport import ReportContext, subject_list_bundle
from fhir_adapter.report.results import evaluate_bundle, parameters, stored_subject_list
from fhir_adapter.settings import DEFAULT_CANONICAL_BASE
from fhir_adapter.store.db import Store
from fhir_adapter.store.evaluate import Evaluation, evaluate
from tests import cohorts as c
from tests.measure.test_boundaries import FAR, load

Json = dict[str, Any]
CTX = ReportContext(
    canonical_base=DEFAULT_CANONICAL_BASE, mappings_hash="h", generated=datetime(2026, 2, 2, tzinfo=UTC)
)
COHORT = [
    c.patient("served", "2022-06-15"), c.full_year("served"), c.eob("e1", "served", "2025-03-01"),
    c.patient("gap", "2021-01-15"), c.full_year("gap", cco="IHN"),
    c.patient("old", "2018-01-01"), c.full_year("old"),
]  # fmt: skip


@pytest.fixture
def evaluation(store: Store, mappings: Mappings) -> Evaluation:
    load(store, COHORT)
    spec = mappings.measure_for("oregon-se-issue-focused", date(2025, 12, 31))
    return evaluate(
        store, mappings, spec, date(2025, 1, 1), date(2025, 12, 31), FAR, "all", all_evidence=True
    )


def _subject_results(report: Json) -> list[tuple[str, str, str]]:
    """(group id, population code, List reference) of every group and stratum population."""
    out = []
    for group in report["group"]:
        pops = list(group["population"])
        for stratifier in group.get("stratifier", []):
            for stratum in stratifier["stratum"]:
                pops += stratum["population"]
        for pop in pops:
            out.append((group["id"], pop["code"]["coding"][0]["code"], pop["subjectResults"]["reference"]))
    return out


def test_stored_subject_list(evaluation: Evaluation, mappings: Mappings) -> None:
    bundle = subject_list_bundle(evaluation, CTX)
    report, lists, individuals = stored_subject_list(bundle)
    assert "contained" not in report
    assert "contained" in bundle["entry"][0]["resource"], "the input is not modified"
    measure = build_measure(evaluation.spec, DEFAULT_CANONICAL_BASE, ccos=mappings.ccos)
    assert check_measure_report(report, measure) == []
    by_ref = {f"List/{lst['id']}": lst for lst in lists}
    assert len(by_ref) == len(lists)
    refs = _subject_results(report)
    assert {ref for _g, _p, ref in refs} == set(by_ref), "every List is referenced, every reference is a List"
    for group_id, code, ref in refs:
        assert check_list_entries(by_ref[ref], individuals, group_id=group_id, population_code=code) == []
    # two in the initial population (old is outside the age band): two individual reports
    assert len(individuals) == 2
    assert all(r["type"] == "individual" and check_measure_report(r, measure) == [] for r in individuals)


def test_list_ids_are_unique_per_report(evaluation: Evaluation) -> None:
    first, lists_a, _ = stored_subject_list(subject_list_bundle(evaluation, CTX))
    other = Evaluation(
        evaluation.spec, evaluation.period_start, evaluation.period_end, evaluation.as_of - 1,
        evaluation.sources, evaluation.children, evaluation.evidence,
    )  # fmt: skip
    second, lists_b, _ = stored_subject_list(subject_list_bundle(other, CTX))
    assert first["id"] != second["id"]
    assert not {lst["id"] for lst in lists_a} & {lst["id"] for lst in lists_b}
    assert all(len(lst["id"]) <= 64 for lst in lists_a)


def test_not_a_subject_list_bundle() -> None:
    with pytest.raises(ValueError, match="subject-list"):
        stored_subject_list({"resourceType": "Bundle", "entry": [{"resource": {"type": "summary"}}]})


def test_evaluate_bundle_reports_first_and_deduplicated() -> None:
    report = {"resourceType": "MeasureReport", "id": "r1"}
    patient = {"resourceType": "Patient", "id": "p", "meta": {"source": "s1"}}
    same_id_other_source = {"resourceType": "Patient", "id": "p", "meta": {"source": "s2"}}
    bundle = evaluate_bundle("b", [report, patient, patient, same_id_other_source], "http://x/fhir/")
    assert [e["fullUrl"] for e in bundle["entry"]] == [
        "http://x/fhir/MeasureReport/r1",
        "http://x/fhir/Patient/p",
        "http://x/fhir/Patient/p",
    ]
    assert bundle["entry"][2]["resource"]["meta"]["source"] == "s2"
    assert "entry" not in evaluate_bundle("empty", [], "http://x/fhir")


def test_parameters() -> None:
    assert parameters("return", []) == {"resourceType": "Parameters"}
    assert parameters("return", [{"resourceType": "Bundle"}]) == {
        "resourceType": "Parameters",
        "parameter": [{"name": "return", "resource": {"resourceType": "Bundle"}}],
    }
