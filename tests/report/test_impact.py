"""Per-child impact of a value-set change (spec §3 "Official lists"): who enters or leaves each
population, from two real evaluations of one cohort on each engine."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime

import pytest

from fhir_adapter.fhir.dates import to_micros
from fhir_adapter.ingest.runner import ingest_items
from fhir_adapter.measure.spec import CodeRow, Mappings, Provenance, SourceMode
from fhir_adapter.report.impact import compare_evaluations
from fhir_adapter.store.db import ParsedResource, Store
from fhir_adapter.store.evaluate import ChildResult, Evaluation, GroupResult, evaluate
from tests import cohorts as c

KEY = ("oregon-se-issue-focused", 2025)
INTER, DIAG = "se-intervention-procedures", "se-issue-diagnoses"
T0 = datetime(2026, 1, 10, tzinfo=UTC)
OFFICIAL = Provenance("official", "wb.xlsx (2025-01-15)")

COHORT = [
    c.patient("keep", "2022-06-15"), c.full_year("keep"), c.eob("e-keep", "keep", "2025-03-01", "90834"),
    c.patient("enter", "2021-02-02"), c.full_year("enter"), c.eob("e-enter", "enter", "2025-04-01", "90791"),
    c.patient("leave", "2023-01-20"), c.full_year("leave"),
    c.eob("e-leave", "leave", "2025-05-01", "H0004", system=c.HCPCS),
    c.patient("prefix", "2022-09-09"), c.full_year("prefix"),
    c.eob("e-prefix", "prefix", "2025-06-01", "90834", ("F43.10",)),
    c.patient("claims-only", "2022-01-01"), c.full_year("claims-only"),
    c.encounter("enc", "claims-only", "2025-07-01", "90791", reason="F43.22"),
]  # fmt: skip

Change = Callable[[Mappings], Mappings]


def with_rows(
    mappings: Mappings, name: str, edit: Callable[[tuple[CodeRow, ...]], tuple[CodeRow, ...]]
) -> Mappings:
    spec = mappings.measures[KEY]
    vs = replace(spec.valuesets[name], rows=edit(spec.valuesets[name].rows))
    return replace(
        mappings, measures={**mappings.measures, KEY: replace(spec, valuesets={**spec.valuesets, name: vs})}
    )


def add_90791(m: Mappings) -> Mappings:
    cpt = c.CPT
    return with_rows(m, INTER, lambda rows: (*rows, CodeRow(cpt, "90791", "exact", None, None, "", OFFICIAL)))


def drop_h0004(m: Mappings) -> Mappings:
    return with_rows(m, INTER, lambda rows: tuple(r for r in rows if r.code != "H0004"))


def f43_exact(m: Mappings) -> Mappings:
    def edit(rows: tuple[CodeRow, ...]) -> tuple[CodeRow, ...]:
        f43 = next(r for r in rows if r.code == "F43")
        others = tuple(r for r in rows if r.code != "F43")
        return (replace(f43, match="exact"), replace(f43, code="F4322", match="exact"), *others)

    return with_rows(m, DIAG, edit)


def status_only(m: Mappings) -> Mappings:
    return with_rows(m, INTER, lambda rows: tuple(replace(r, provenance=OFFICIAL) for r in rows))


NUM, NEED_DEN, NEED_NUM = "all-enrolled-numerator", "identified-need-denominator", "identified-need-numerator"


@pytest.mark.parametrize(
    ("change", "sources", "expected", "counts"),
    [
        pytest.param(status_only, "all", [], {NUM: (3, 3)}, id="status-only-no-impact"),
        pytest.param(add_90791, "all",
                     [(NUM, "M-claims-only", False, True, "no-qualifying-service", "qualifying-service"),
                      (NUM, "M-enter", False, True, "no-qualifying-service", "qualifying-service"),
                      (NEED_NUM, "M-claims-only", False, True, "no-qualifying-service", "qualifying-service"),
                      (NEED_NUM, "M-enter", False, True, "no-qualifying-service", "qualifying-service")],
                     {NUM: (3, 5), NEED_DEN: (5, 5), NEED_NUM: (3, 5)}, id="added-code-enters"),
        pytest.param(add_90791, "claims",
                     [(NUM, "M-enter", False, True, "no-qualifying-service", "qualifying-service"),
                      (NEED_NUM, "M-enter", False, True, "no-qualifying-service", "qualifying-service")],
                     {NUM: (3, 4), NEED_DEN: (4, 4)}, id="added-code-claims-only-mode"),
        pytest.param(drop_h0004, "all",
                     [(NUM, "M-leave", True, False, "qualifying-service", "no-qualifying-service"),
                      (NEED_NUM, "M-leave", True, False, "qualifying-service", "no-qualifying-service")],
                     {NUM: (3, 2), NEED_NUM: (3, 2)}, id="removed-code-leaves"),
    ],
)  # fmt: skip
def test_impact_of_a_change(
    store: Store,
    mappings: Mappings,
    change: Change,
    sources: SourceMode,
    expected: list[tuple[str, str, bool, bool, str, str]],
    counts: dict[str, tuple[int, int]],
) -> None:
    ingest_items(store, [ParsedResource(r["resourceType"], r["id"], r) for r in COHORT], "s", batch_size=100,
                 clock=lambda: T0)  # fmt: skip
    before, after = (
        evaluate(store, m, m.measures[KEY], date(2025, 1, 1), date(2025, 12, 31), to_micros(T0), sources)
        for m in (mappings, change(mappings))
    )
    impact = compare_evaluations(before, after)
    got = [(ch.population, ch.member_id, ch.before, ch.after, ch.reason_before, ch.reason_after)
           for ch in impact.changes]  # fmt: skip
    assert got == expected
    assert all(
        ch.patient == f"Patient/{(ch.member_id or '')[2:]}" and ch.patient_source == "s"
        for ch in impact.changes
    )
    by_id = {p.population: (p.before, p.after) for p in impact.counts}
    assert {k: by_id[k] for k in counts} == counts
    assert (impact.sources, impact.measure, impact.unchanged) == (sources, KEY[0], not expected)


def test_prefix_to_exact_drops_the_child_with_a_longer_code(store: Store, mappings: Mappings) -> None:
    ingest_items(store, [ParsedResource(r["resourceType"], r["id"], r) for r in COHORT], "s", batch_size=100,
                 clock=lambda: T0)  # fmt: skip
    before, after = (
        evaluate(store, m, m.measures[KEY], date(2025, 1, 1), date(2025, 12, 31), to_micros(T0), "all")
        for m in (mappings, f43_exact(mappings))
    )
    impact = compare_evaluations(before, after)
    assert [(ch.population, ch.member_id, ch.entered) for ch in impact.changes] == [
        (NUM, "M-prefix", False),
        (NEED_DEN, "M-prefix", False),
        (NEED_NUM, "M-prefix", False),
    ]
    assert {p.population: p.delta for p in impact.counts if p.delta} == {NUM: -1, NEED_DEN: -1, NEED_NUM: -1}


# --------------------------------------------------------------------------------------------
# pure cases on hand-made evaluations


def _child(person: str, *groups: tuple[bool, bool, bool, bool]) -> ChildResult:
    return ChildResult(
        person=person, subject_source="s", subject_id=person, member_id=f"M-{person}", cco="ALLCARE", age=3,
        age_range=(3, 3), sex=None, sex_is_birth_sex=False, race=None, ethnicity=None, language=None,
        disability=None, county=None, gaps=0, gap_days=0, anchor_ccos=1, birth_conflict=False,
        groups=tuple(GroupResult("g", *g, reason="r") for g in groups),
    )  # fmt: skip


def _evaluation(mappings: Mappings, children: list[ChildResult], sources: SourceMode = "all") -> Evaluation:
    return Evaluation(mappings.measures[KEY], date(2025, 1, 1), date(2025, 12, 31), 0, sources, children)


IN_NUM = ((True, True, False, True), (True, False, False, False))
OUT = ((True, True, False, False), (True, False, False, False))


def test_child_on_one_side_only_is_in_no_population_on_the_other(mappings: Mappings) -> None:
    impact = compare_evaluations(
        _evaluation(mappings, [_child("a", *IN_NUM)]), _evaluation(mappings, [_child("b", *OUT)])
    )
    assert [(ch.population, ch.member_id, ch.before, ch.after) for ch in impact.changes] == [
        ("all-enrolled-initial-population", "M-a", True, False),
        ("all-enrolled-initial-population", "M-b", False, True),
        ("all-enrolled-denominator", "M-a", True, False),
        ("all-enrolled-denominator", "M-b", False, True),
        (NUM, "M-a", True, False),
        ("identified-need-initial-population", "M-a", True, False),
        ("identified-need-initial-population", "M-b", False, True),
    ]


def test_evaluations_of_different_modes_are_not_compared(mappings: Mappings) -> None:
    with pytest.raises(ValueError, match="one measure, period and source mode"):
        compare_evaluations(_evaluation(mappings, []), _evaluation(mappings, [], "claims"))
