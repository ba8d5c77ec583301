"""Rates and gap lists split by OPIP health complexity (spec §4 "Health complexity": "where OPIP
complexity flags are loaded (Observations or CSV), gap lists and rates split by them").

Each child's medical and social complexity are the latest levels known on the period's last day
(:func:`fhir_adapter.store.observations.latest_values`, code system
:data:`~fhir_adapter.ingest.complexity.COMPLEXITY_SYSTEM`); a child without one is ``missing``.
Rates per dimension, level, group and CCO (and ``all``) are CQF Measures proportions (numerator /
(denominator − exclusions), absent when that is 0); the gap list is the ordinary one
(:func:`fhir_adapter.workflow.gap_rows`: denominator children without a qualifying service, with
clinic and PCP) with the two levels added.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from fhir_adapter import workflow
from fhir_adapter.fhir.dates import from_micros
from fhir_adapter.ingest.complexity import COMPLEXITY_SYSTEM, MEDICAL, SOCIAL
from fhir_adapter.ingest.runner import Clock, utc_now
from fhir_adapter.measure.spec import Mappings, SourceMode
from fhir_adapter.settings import Settings
from fhir_adapter.store.db import Store
from fhir_adapter.store.evaluate import Evaluation
from fhir_adapter.store.observations import latest_values
from fhir_adapter.store.providers import Assignment, assignments

MISSING = "missing"
ALL = "all"
DIMENSIONS = (MEDICAL, SOCIAL)
RATE_COLUMNS = ("dimension", "level", "group", "cco", "denominator", "exclusions", "numerator", "rate")
GAP_COLUMNS = (*workflow.GAP_COLUMNS, "medical_complexity", "social_complexity")

Levels = Mapping[str, Mapping[str, str]]


def complexity_rates(ev: Evaluation, levels: Levels, *, cco: str | None = None) -> list[dict[str, Any]]:
    """One row per dimension, level, group and CCO (then ``all``) with denominator children."""
    counts: dict[tuple[str, str, str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for child in ev.children:
        if cco is not None and child.cco != cco:
            continue
        own = levels.get(child.person, {})
        for g in child.groups:
            if not g.den:
                continue
            for dimension in DIMENSIONS:
                level = own.get(dimension) or MISSING
                for scope in (child.cco or "unknown", ALL):
                    bucket = counts[(dimension, level, g.group, scope)]
                    bucket[0] += 1
                    bucket[1] += int(g.denex)
                    bucket[2] += int(g.num)
    order = {g.id: i for i, g in enumerate(ev.spec.groups)}
    rows = []
    for (dimension, level, group, scope), (den, denex, num) in sorted(
        counts.items(),
        key=lambda kv: (DIMENSIONS.index(kv[0][0]), kv[0][1] == MISSING, kv[0][1], order[kv[0][2]],
                        kv[0][3] == ALL, kv[0][3]),
    ):  # fmt: skip
        base = den - denex
        rows.append(
            {
                "dimension": dimension, "level": level, "group": group, "cco": scope, "denominator": den,
                "exclusions": denex, "numerator": num, "rate": round(num / base, 6) if base > 0 else None,
            }
        )  # fmt: skip
    return rows


def complexity_gap_rows(
    ev: Evaluation,
    levels: Levels,
    *,
    cco: str | None = None,
    group: str | None = None,
    assigned: Mapping[str, Assignment] | None = None,
) -> list[dict[str, Any]]:
    """The gap list (:func:`fhir_adapter.workflow.gap_rows`) with each child's two levels."""
    by_subject = {(c.subject_source, f"Patient/{c.subject_id}"): c.person for c in ev.children}
    rows = workflow.gap_rows(ev, cco=cco, group=group, assignments=assigned)
    for row in rows:
        own = levels.get(by_subject[(row["patient_source"], row["patient"])], {})
        row["medical_complexity"] = own.get(MEDICAL) or MISSING
        row["social_complexity"] = own.get(SOCIAL) or MISSING
    return rows


@dataclass(frozen=True)
class ComplexityReport:
    measure: str
    period_start: date
    period_end: date
    sources: str
    as_of: int
    children_with_levels: int
    rates: list[dict[str, Any]]
    gaps: list[dict[str, Any]]

    def meta(self) -> dict[str, Any]:
        return {
            "measure": self.measure, "period_start": self.period_start.isoformat(),
            "period_end": self.period_end.isoformat(), "sources": self.sources,
            "data_cut": from_micros(self.as_of).isoformat(), "code_system": COMPLEXITY_SYSTEM,
            "children_with_levels": self.children_with_levels,
        }  # fmt: skip


def run_complexity(
    settings: Settings,
    store: Store,
    measure: str,
    period_start: date,
    period_end: date,
    *,
    sources: SourceMode = "all",
    cco: str | None = None,
    group: str | None = None,
    mappings: Mappings | None = None,
    clock: Clock = utc_now,
) -> ComplexityReport:
    """Evaluate ``measure`` as of now and split its rates and gap list by complexity."""
    mappings = workflow.report_mappings(settings, period_start, period_end, mappings=mappings, cco=cco)
    request = workflow.EvaluationRequest(measure, period_start, period_end, sources, as_of=clock())
    ev = workflow.run_evaluation(settings, store, request, evidence=False, mappings=mappings)
    levels = latest_values(store, ev.as_of, COMPLEXITY_SYSTEM, DIMENSIONS, period_end)
    assigned = assignments(store, ev.as_of, period_end, ccos=mappings.ccos)
    people = {c.person for c in ev.children}
    return ComplexityReport(
        measure, period_start, period_end, sources, ev.as_of, len(people & set(levels)),
        complexity_rates(ev, levels, cco=cco),
        complexity_gap_rows(ev, levels, cco=cco, group=group, assigned=assigned),
    )  # fmt: skip


__all__ = [
    "DIMENSIONS",
    "GAP_COLUMNS",
    "MISSING",
    "RATE_COLUMNS",
    "ComplexityReport",
    "complexity_gap_rows",
    "complexity_rates",
    "run_complexity",
]
