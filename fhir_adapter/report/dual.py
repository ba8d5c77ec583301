"""Dual rates: the same measure and period in both source modes, side by side.

Spec §3 "Where the data comes from": OHA scores CCOs from claims and enrollment; EHR (clinical)
data arrives earlier. ``sources="claims"`` is comparable with OHA, ``sources="all"`` adds the
clinical "early signal". This module compares the two evaluations of one data cut:

* per group, per CCO and statewide: denominator, exclusions, numerator and rate in each mode and
  the difference (``all − claims``); the rate is CQF Measures' proportion
  ``numerator / (denominator − denominator-exclusion)``, absent when that base is 0 (deqm-6);
* the children in the numerator only thanks to clinical data (numerator in ``all``, not in
  ``claims``), with the clinical evidence that qualified them (resource reference and date).

:func:`dual_rates` and the renderers are pure; :func:`run_dual_rates` runs both evaluations on
one store as of one time and looks up the evidence dates.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any

from fhir_adapter import workflow
from fhir_adapter.fhir.dates import iso_instant
from fhir_adapter.ingest.runner import Clock, utc_now
from fhir_adapter.mappings import load_mappings
from fhir_adapter.measure.spec import Mappings
from fhir_adapter.report.measurereport import ReportContext, report_id, summary_report
from fhir_adapter.settings import Settings
from fhir_adapter.store.claims_facts import VersionKey, event_days
from fhir_adapter.store.db import Store
from fhir_adapter.store.evaluate import ChildResult, Evaluation, Evidence

#: The ``cco`` of the row over every child (no CCO filter).
STATEWIDE = "statewide"
#: Clinical evidence types (spec §3 "Where the data comes from": Encounter, Condition, Procedure).
CLINICAL_TYPES = ("Encounter", "Procedure", "Condition")


@dataclass(frozen=True)
class Rate:
    """One mode's counts for one group and population slice."""

    denominator: int
    exclusions: int
    numerator: int

    @property
    def base(self) -> int:
        return self.denominator - self.exclusions

    @property
    def rate(self) -> float | None:
        """``numerator / (denominator − exclusions)``, ``None`` without a base (deqm-6)."""
        return self.numerator / self.base if self.base > 0 else None


@dataclass(frozen=True)
class RateRow:
    group: str
    #: a CCO id or :data:`STATEWIDE`
    cco: str
    claims: Rate
    all: Rate
    #: children in this slice counted only thanks to clinical data
    ehr_only: int

    @property
    def difference(self) -> float | None:
        """``all − claims`` rate; ``None`` when either rate is absent."""
        if self.claims.rate is None or self.all.rate is None:
            return None
        return self.all.rate - self.claims.rate


@dataclass(frozen=True)
class DatedEvidence:
    """An evidence resource version with the local days its date can mean."""

    reference: str
    source: str
    rtype: str
    version: int
    first_day: date | None
    last_day: date | None

    @property
    def date_text(self) -> str:
        if self.first_day is None:
            return ""
        if self.last_day is None or self.last_day == self.first_day:
            return self.first_day.isoformat()
        return f"{self.first_day.isoformat()}..{self.last_day.isoformat()}"


@dataclass(frozen=True)
class EhrOnlyChild:
    """A child in a group's numerator with clinical data but not with claims alone."""

    group: str
    person: str
    member_id: str | None
    patient: str
    patient_source: str
    cco: str | None
    evidence: tuple[DatedEvidence, ...]


@dataclass
class DualRates:
    claims: Evaluation
    all: Evaluation
    cco: str | None
    rows: list[RateRow]
    ehr_only: list[EhrOnlyChild] = field(default_factory=list)

    def children(self, ev: Evaluation) -> list[ChildResult]:
        """The evaluation's children within the CCO filter."""
        return [c for c in ev.children if self.cco is None or c.cco == self.cco]


def version_key(item: Evidence) -> VersionKey:
    return (item.source, item.rtype, item.rid, item.version)


def _rate(children: Iterable[ChildResult], index: int) -> Rate:
    den = denex = num = 0
    for child in children:
        g = child.groups[index]
        den += g.den
        denex += g.denex
        num += g.num
    return Rate(den, denex, num)


def _check_pair(claims_ev: Evaluation, all_ev: Evaluation) -> None:
    if claims_ev.sources != "claims" or all_ev.sources != "all":
        raise ValueError("dual rates need one evaluation in 'claims' mode and one in 'all' mode")
    same = (
        claims_ev.spec.id,
        claims_ev.spec.version,
        claims_ev.period_start,
        claims_ev.period_end,
        claims_ev.as_of,
    )
    other = (all_ev.spec.id, all_ev.spec.version, all_ev.period_start, all_ev.period_end, all_ev.as_of)
    if same != other:
        raise ValueError(f"dual rates compare one measure, period and data cut: {same} vs {other}")


def ehr_only_children(claims_ev: Evaluation, all_ev: Evaluation, cco: str | None = None) -> list[
    tuple[int, ChildResult]
]:  # fmt: skip
    """(group index, child of ``all_ev``) for each child in the numerator only in ``all`` mode."""
    claims_num = {(c.person, i) for c in claims_ev.children for i, g in enumerate(c.groups) if g.num}
    out = []
    for index in range(len(all_ev.spec.groups)):
        for child in all_ev.children:
            if cco is not None and child.cco != cco:
                continue
            if child.groups[index].num and (child.person, index) not in claims_num:
                out.append((index, child))
    return out


def evidence_keys(claims_ev: Evaluation, all_ev: Evaluation, cco: str | None = None) -> list[VersionKey]:
    """The evidence versions whose dates :func:`dual_rates` lists (look them up with
    :func:`fhir_adapter.store.claims_facts.event_days`)."""
    keys = set()
    for index, child in ehr_only_children(claims_ev, all_ev, cco):
        for item in _clinical_evidence(all_ev, child, index):
            keys.add(version_key(item))
    return sorted(keys)


def _clinical_evidence(ev: Evaluation, child: ChildResult, index: int) -> list[Evidence]:
    group_id = ev.spec.groups[index].id
    return [
        e
        for e in ev.evidence.get(child.person, [])
        if e.group in (group_id, "*") and e.population == "numerator" and e.rtype in CLINICAL_TYPES
    ]


def dated(
    items: Iterable[Evidence], days: Mapping[VersionKey, tuple[date, date]]
) -> tuple[DatedEvidence, ...]:
    out = []
    for item in items:
        first, last = days.get(version_key(item), (None, None))
        out.append(
            DatedEvidence(f"{item.rtype}/{item.rid}", item.source, item.rtype, item.version, first, last)
        )
    return tuple(sorted(out, key=lambda e: (e.first_day or date.max, e.reference, e.source)))


def dual_rates(
    claims_ev: Evaluation,
    all_ev: Evaluation,
    *,
    cco: str | None = None,
    days: Mapping[VersionKey, tuple[date, date]] | None = None,
) -> DualRates:
    """Compare a ``claims`` and an ``all`` evaluation of the same measure, period and data cut.

    Rows: per group, one per CCO seen in either initial population (or only ``cco``), then a
    :data:`STATEWIDE` row when no CCO is given. ``all_ev`` needs evidence for the EHR-only list
    (``run_evaluation(..., evidence=True)``); ``days`` dates it (:func:`evidence_keys`)."""
    _check_pair(claims_ev, all_ev)
    days = days or {}
    result = DualRates(claims_ev, all_ev, cco, [])
    claims_children = result.children(claims_ev)
    all_children = result.children(all_ev)
    only = ehr_only_children(claims_ev, all_ev, cco)
    if cco is not None:
        ccos = [cco]
    else:
        ccos = sorted(
            {
                c.cco
                for c in [*claims_children, *all_children]
                if c.cco is not None and any(g.ip for g in c.groups)
            }
        )
    for index, group in enumerate(all_ev.spec.groups):
        slices: list[tuple[str, str | None]] = [(x, x) for x in ccos]
        if cco is None:
            slices.append((STATEWIDE, None))
        for label, slice_cco in slices:

            def within(children: list[ChildResult], slice_cco: str | None = slice_cco) -> list[ChildResult]:
                return [c for c in children if slice_cco is None or c.cco == slice_cco]

            count = sum(1 for i, c in only if i == index and (slice_cco is None or c.cco == slice_cco))
            result.rows.append(
                RateRow(
                    group.id,
                    label,
                    _rate(within(claims_children), index),
                    _rate(within(all_children), index),
                    count,
                )
            )
    for index, child in only:
        result.ehr_only.append(
            EhrOnlyChild(
                group=all_ev.spec.groups[index].id,
                person=child.person,
                member_id=child.member_id,
                patient=f"Patient/{child.subject_id}",
                patient_source=child.subject_source,
                cco=child.cco,
                evidence=dated(_clinical_evidence(all_ev, child, index), days),
            )
        )
    result.ehr_only.sort(key=lambda x: (x.group, x.cco or "", x.member_id or "", x.person))
    return result


# -- outputs ------------------------------------------------------------------------------------
RATE_COLUMNS = (
    "group", "cco", "claims_denominator", "claims_exclusions", "claims_numerator", "claims_rate",
    "all_denominator", "all_exclusions", "all_numerator", "all_rate", "difference", "ehr_only_children",
)  # fmt: skip
EHR_ONLY_COLUMNS = (
    "member_id", "patient", "patient_source", "cco", "group", "evidence", "evidence_type", "evidence_source",
    "evidence_date",
)  # fmt: skip


def excel_csv(columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> bytes:
    """CSV that Excel opens correctly: UTF-8 with a BOM, CRLF line ends (as ``workflow.gaps_csv``)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8-sig")


def _fmt(rate: float | None) -> str:
    return "" if rate is None else f"{rate:.6f}"


def rate_rows(dual: DualRates) -> list[dict[str, Any]]:
    return [
        {
            "group": r.group, "cco": r.cco,
            "claims_denominator": r.claims.denominator, "claims_exclusions": r.claims.exclusions,
            "claims_numerator": r.claims.numerator, "claims_rate": _fmt(r.claims.rate),
            "all_denominator": r.all.denominator, "all_exclusions": r.all.exclusions,
            "all_numerator": r.all.numerator, "all_rate": _fmt(r.all.rate),
            "difference": _fmt(r.difference), "ehr_only_children": r.ehr_only,
        }
        for r in dual.rows
    ]  # fmt: skip


def ehr_only_rows(dual: DualRates) -> list[dict[str, Any]]:
    """One row per EHR-only child, group and evidence resource (a child without listed
    evidence still has one row)."""
    rows = []
    for child in dual.ehr_only:
        base = {
            "member_id": child.member_id or "", "patient": child.patient, "patient_source": child.patient_source,
            "cco": child.cco or "", "group": child.group,
        }  # fmt: skip
        items: Sequence[DatedEvidence | None] = child.evidence or (None,)
        for item in items:
            rows.append(
                {
                    **base,
                    "evidence": item.reference if item else "",
                    "evidence_type": item.rtype if item else "",
                    "evidence_source": item.source if item else "",
                    "evidence_date": item.date_text if item else "",
                }
            )
    return rows


def rates_csv(dual: DualRates) -> bytes:
    return excel_csv(RATE_COLUMNS, rate_rows(dual))


def ehr_only_csv(dual: DualRates) -> bytes:
    return excel_csv(EHR_ONLY_COLUMNS, ehr_only_rows(dual))


def summary_reports(dual: DualRates, ctx: ReportContext) -> tuple[dict[str, Any], dict[str, Any]]:
    """The DEQM summary MeasureReports of both modes (each stamped with its source mode). With
    a CCO filter they count that CCO's children only and their ids say so."""
    out = []
    for ev in (dual.claims, dual.all):
        if dual.cco is None:
            out.append(summary_report(ev, ctx))
        else:
            report = summary_report(ev, ctx, children=dual.children(ev))
            report["id"] = report_id(ev, "summary", f"cco={dual.cco}")
            out.append(report)
    return out[0], out[1]


def summary_bundle(dual: DualRates, ctx: ReportContext) -> dict[str, Any]:
    """A FHIR R4 ``Bundle`` of type ``collection`` holding both summary MeasureReports (claims
    first, then all). ``fullUrl`` is a ``urn:uuid`` derived from each report's id, so the same
    reports give the same Bundle (R4 Bundle.entry.fullUrl: an absolute URI; a ``urn:uuid`` may
    differ from ``Resource.id``)."""
    claims, all_ = summary_reports(dual, ctx)
    entries = []
    for report in (claims, all_):
        full = uuid.uuid5(uuid.NAMESPACE_URL, f"{ctx.canonical_base}/MeasureReport/{report['id']}")
        entries.append({"fullUrl": f"urn:uuid:{full}", "resource": report})
    bundle_id = report_id(dual.all, "dual", dual.cco or STATEWIDE)
    return {
        "resourceType": "Bundle",
        "id": bundle_id,
        "type": "collection",
        "timestamp": iso_instant(ctx.generated),
        "entry": entries,
    }


# -- workflow -----------------------------------------------------------------------------------
def run_dual_rates(
    settings: Settings,
    store: Store,
    measure: str,
    period_start: date,
    period_end: date,
    *,
    cco: str | None = None,
    mappings: Mappings | None = None,
    clock: Clock = utc_now,
) -> DualRates:
    """Evaluate ``measure`` over the period in ``claims`` and ``all`` mode as of one data cut
    (now, by ``clock``) and compare them (:func:`dual_rates`)."""
    mappings = mappings or load_mappings(settings.mappings_dir)
    if cco is not None:
        workflow.check_cco(mappings, cco)
    as_of = clock()
    request = workflow.EvaluationRequest(measure, period_start, period_end, "claims", as_of=as_of)
    claims_ev = workflow.run_evaluation(settings, store, request, evidence=False, mappings=mappings)
    all_ev = workflow.run_evaluation(
        settings, store, replace(request, sources="all"), evidence=True, mappings=mappings
    )
    days = event_days(store, evidence_keys(claims_ev, all_ev, cco))
    return dual_rates(claims_ev, all_ev, cco=cco, days=days)
