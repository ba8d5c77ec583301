"""Dual rates: one cohort with claims (EOB) and clinical (Encounter, Procedure, Condition) data
evaluated in both source modes on both engines; rates per CCO and group, the EHR-only children
with their dated clinical evidence, both summary reports checked against DEQM."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from fhir_adapter.measure.spec import Mappings
from fhir_adapter.report import dual as d
from fhir_adapter.report.checks import check_measure_report
from fhir_adapter.report.conformance import build_measure
from fhir_adapter.report.measurereport import ReportContext
from fhir_adapter.settings import DEFAULT_CANONICAL_BASE, DEFAULT_MEMBER_ID_SYSTEM, Settings
from fhir_adapter.store.db import Store
from fhir_adapter.store.evaluate import Evaluation, evaluate
from tests import cohorts as c
from tests.conftest import make_store_factory
from tests.measure.test_boundaries import FAR, load
from tests.validators.harness import node_validate, validators_available

MEASURE = "oregon-se-issue-focused"
START, END = date(2025, 1, 1), date(2025, 12, 31)
NOW = datetime(2026, 3, 1, tzinfo=UTC)
CTX = ReportContext(DEFAULT_CANONICAL_BASE, "abc123", NOW, DEFAULT_MEMBER_ID_SYSTEM)

#: claims feed: patients, coverage, EOBs
CLAIMS = [
    c.patient("claimsonly", "2022-06-15"), c.full_year("claimsonly"), c.eob("e1", "claimsonly", "2025-03-01"),
    c.patient("ehr", "2021-04-01"), c.full_year("ehr"),
    c.patient("both", "2023-01-01"), c.full_year("both"), c.eob("e2", "both", "2025-05-05"),
    c.patient("dead", "2022-06-15", deceasedDateTime="2025-05-05"), c.full_year("dead"),
    c.patient("none", "2021-01-15"), c.full_year("none", cco="IHN"),
    c.patient("ehrproc", "2024-01-01"), c.full_year("ehrproc", cco="IHN"),
    c.patient("old", "2018-01-01"), c.full_year("old"),
]  # fmt: skip
#: an EHR: the same children (same member ids) with clinical services
EHR = [
    c.patient("ehr", "2021-04-01"),
    c.encounter("v1", "ehr", "2025-09-09"),
    c.condition("d1", "ehr", encounter_id="v1", recorded="2025-09-09"),
    c.patient("both", "2023-01-01"), c.encounter("v2", "both", "2025-06-01", reason="F43.22"),
    c.patient("ehrproc", "2024-01-01"), c.procedure("p1", "ehrproc", "2025-10-01", reason="F93.0"),
    c.patient("old", "2018-01-01"), c.encounter("v3", "old", "2025-02-02", reason="F43.22"),
]  # fmt: skip


def _load(store: Store) -> None:
    load(store, CLAIMS, source="claims-feed")
    load(store, EHR, source="ehr-a")


@pytest.fixture
def dual(store: Store, mappings: Mappings, settings: Settings) -> d.DualRates:
    _load(store)
    return d.run_dual_rates(settings, store, MEASURE, START, END, mappings=mappings, clock=lambda: NOW)


def _rows(dual: d.DualRates) -> dict[tuple[str, str], tuple[Any, ...]]:
    return {
        (r.group, r.cco): (
            (r.claims.denominator, r.claims.exclusions, r.claims.numerator, r.claims.rate),
            (r.all.denominator, r.all.exclusions, r.all.numerator, r.all.rate),
            None if r.difference is None else round(r.difference, 6),
            r.ehr_only,
        )
        for r in dual.rows
    }


EXPECTED_ROWS = [
    pytest.param(("all-enrolled", "ALLCARE"), ((4, 1, 2, 2 / 3), (4, 1, 3, 1.0), round(1 / 3, 6), 1),
                 id="allcare-ehr-child-raises-the-rate"),
    pytest.param(("all-enrolled", "IHN"), ((2, 0, 0, 0.0), (2, 0, 1, 0.5), 0.5, 1), id="ihn-procedure-only"),
    pytest.param(("all-enrolled", "statewide"), ((6, 1, 2, 0.4), (6, 1, 4, 0.8), 0.4, 2), id="statewide"),
    pytest.param(("identified-need", "ALLCARE"), ((2, 0, 2, 1.0), (3, 0, 3, 1.0), 0.0, 1),
                 id="need-denominator-grows-with-ehr-diagnoses"),
    pytest.param(("identified-need", "IHN"), ((0, 0, 0, None), (1, 0, 1, 1.0), None, 1),
                 id="no-claims-denominator-no-rate-no-difference"),
    pytest.param(("identified-need", "statewide"), ((2, 0, 2, 1.0), (4, 0, 4, 1.0), 0.0, 2),
                 id="need-statewide"),
]  # fmt: skip


@pytest.mark.parametrize(("key", "expected"), EXPECTED_ROWS)
def test_rates_per_cco_and_group(dual: d.DualRates, key: tuple[str, str], expected: tuple[Any, ...]) -> None:
    assert _rows(dual)[key] == expected


def test_row_order_and_shared_data_cut(dual: d.DualRates) -> None:
    assert [(r.group, r.cco) for r in dual.rows] == [
        (g, x) for g in ("all-enrolled", "identified-need") for x in ("ALLCARE", "IHN", "statewide")
    ]
    assert dual.claims.as_of == dual.all.as_of
    assert (dual.claims.sources, dual.all.sources) == ("claims", "all")


def test_ehr_only_children_with_dated_clinical_evidence(dual: d.DualRates) -> None:
    got = {
        (x.group, x.member_id): (x.cco, x.patient, [(e.reference, e.source, e.date_text) for e in x.evidence])
        for x in dual.ehr_only
    }
    assert got == {
        ("all-enrolled", "M-ehr"): (
            "ALLCARE", "Patient/ehr",
            [("Condition/d1", "ehr-a", "2025-09-09"), ("Encounter/v1", "ehr-a", "2025-09-09")],
        ),
        ("all-enrolled", "M-ehrproc"): ("IHN", "Patient/ehrproc", [("Procedure/p1", "ehr-a", "2025-10-01")]),
        ("identified-need", "M-ehr"): (
            "ALLCARE", "Patient/ehr",
            [("Condition/d1", "ehr-a", "2025-09-09"), ("Encounter/v1", "ehr-a", "2025-09-09")],
        ),
        ("identified-need", "M-ehrproc"): ("IHN", "Patient/ehrproc", [("Procedure/p1", "ehr-a", "2025-10-01")]),
    }  # fmt: skip


def test_cco_filter(store: Store, mappings: Mappings, settings: Settings) -> None:
    _load(store)
    dual = d.run_dual_rates(
        settings, store, MEASURE, START, END, cco="IHN", mappings=mappings, clock=lambda: NOW
    )
    assert [(r.group, r.cco) for r in dual.rows] == [("all-enrolled", "IHN"), ("identified-need", "IHN")]
    assert {x.member_id for x in dual.ehr_only} == {"M-ehrproc"}
    claims, all_ = d.summary_reports(dual, CTX)
    counts = {p["id"]: p["count"] for p in all_["group"][0]["population"]}
    assert counts["all-enrolled-denominator"] == 2 and counts["all-enrolled-numerator"] == 1
    assert claims["id"] != d.summary_reports(d.dual_rates(dual.claims, dual.all), CTX)[0]["id"]
    measure = build_measure(dual.all.spec, DEFAULT_CANONICAL_BASE, ccos=mappings.ccos)
    assert check_measure_report(claims, measure) == [] and check_measure_report(all_, measure) == []


def test_unknown_cco_is_a_usage_error(store: Store, mappings: Mappings, settings: Settings) -> None:
    from fhir_adapter.errors import UsageError

    with pytest.raises(UsageError, match="unknown CCO 'NOPE'"):
        d.run_dual_rates(
            settings, store, MEASURE, START, END, cco="NOPE", mappings=mappings, clock=lambda: NOW
        )


def test_summary_reports_and_bundle_pass_the_checks(dual: d.DualRates, mappings: Mappings) -> None:
    measure = build_measure(dual.all.spec, DEFAULT_CANONICAL_BASE, ccos=mappings.ccos)
    bundle = d.summary_bundle(dual, CTX)
    assert (bundle["resourceType"], bundle["type"], len(bundle["entry"])) == ("Bundle", "collection", 2)
    claims, all_ = (e["resource"] for e in bundle["entry"])
    for report, mode in ((claims, "claims"), (all_, "all")):
        assert check_measure_report(report, measure) == [], mode
        modes = [x["valueCode"] for x in report["extension"] if x["url"].endswith("report-source-mode")]
        assert modes == [mode]
    assert claims["id"] != all_["id"]
    assert len({e["fullUrl"] for e in bundle["entry"]}) == 2
    assert all(e["fullUrl"].startswith("urn:uuid:") for e in bundle["entry"])
    assert claims["group"][0]["measureScore"] == {"value": 0.4}
    assert all_["group"][0]["measureScore"] == {"value": 0.8}
    assert d.summary_bundle(dual, CTX) == bundle  # deterministic


def test_csv_outputs_are_excel_friendly(dual: d.DualRates) -> None:
    rates = d.rates_csv(dual)
    assert rates.startswith(b"\xef\xbb\xbf") and b"\r\n" in rates and b"\n" not in rates.replace(b"\r\n", b"")
    lines = rates.decode("utf-8-sig").split("\r\n")
    assert lines[0].split(",") == list(d.RATE_COLUMNS)
    assert "all-enrolled,statewide,6,1,2,0.400000,6,1,4,0.800000,0.400000,2" in lines
    assert "identified-need,IHN,0,0,0,,1,0,1,1.000000,,1" in lines
    ehr = d.ehr_only_csv(dual).decode("utf-8-sig").split("\r\n")
    assert ehr[0].split(",") == list(d.EHR_ONLY_COLUMNS)
    assert (
        "M-ehrproc,Patient/ehrproc,claims-feed,IHN,all-enrolled,Procedure/p1,Procedure,ehr-a,2025-10-01"
        in ehr
    )
    assert len([x for x in ehr[1:] if x]) == 6  # (2 + 1) evidence rows in each of the two groups


def test_empty_store_gives_statewide_rows_without_rates(
    store: Store, mappings: Mappings, settings: Settings
) -> None:
    dual = d.run_dual_rates(settings, store, MEASURE, START, END, mappings=mappings, clock=lambda: NOW)
    assert [(r.cco, r.claims.rate, r.all.rate, r.difference, r.ehr_only) for r in dual.rows] == [
        ("statewide", None, None, None, 0), ("statewide", None, None, None, 0),
    ]  # fmt: skip
    assert dual.ehr_only == []
    measure = build_measure(dual.all.spec, DEFAULT_CANONICAL_BASE)
    for report in d.summary_reports(dual, CTX):
        assert check_measure_report(report, measure) == []
        assert all("measureScore" not in g for g in report["group"])


def _ev(store: Store, mappings: Mappings, sources: str, as_of: int = FAR) -> Evaluation:
    spec = mappings.measure_for(MEASURE, END)
    return evaluate(store, mappings, spec, START, END, as_of, sources, all_evidence=True)  # type: ignore[arg-type]


MISMATCHES = [
    pytest.param("claims", "claims", FAR, "one evaluation in 'claims' mode", id="same-mode-twice"),
    pytest.param("all", "claims", FAR, "one evaluation in 'claims' mode", id="modes-swapped"),
    pytest.param("claims", "all", FAR - 1, "one measure, period and data cut", id="different-data-cuts"),
]


@pytest.mark.parametrize(("first", "second", "as_of", "message"), MISMATCHES)
def test_mismatched_evaluations_are_refused(
    store: Store, mappings: Mappings, first: str, second: str, as_of: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        d.dual_rates(_ev(store, mappings, first), _ev(store, mappings, second, as_of))


def test_bundle_passes_independent_validators(
    mappings: Mappings, settings: Settings, tmp_path: Path, pg_schemas: list[str]
) -> None:
    """Validated once, on SQLite (both engines give identical evaluations: tests/store/test_engines.py)."""
    reason = validators_available()
    if reason:
        pytest.skip(reason)
    store = make_store_factory("sqlite", tmp_path, pg_schemas)()
    _load(store)
    dual = d.run_dual_rates(settings, store, MEASURE, START, END, mappings=mappings, clock=lambda: NOW)
    bundle = d.summary_bundle(dual, CTX)
    results = node_validate([bundle, *(e["resource"] for e in bundle["entry"])])
    assert [r.describe() for r in results if not r.ok] == []
