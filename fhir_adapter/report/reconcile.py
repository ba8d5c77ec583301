"""Per-child reconciliation with OHA's member-level file (spec §4 "Reconciliation").

OHA scores CCOs from claims, encounter data and enrollment (spec §1 [V]), so we compare with an
evaluation in ``claims`` mode (spec §3 "Where the data comes from"). Children are matched by
Medicaid member id (``ChildResult.member_id``, spec §3 "Identity"). For each compared group and
for the denominator and the numerator separately every child is in both, only OHA's or only
ours; every difference gets one reason code from :data:`REASON_TEXT`, decided in the order of
:data:`REASONS` as described there. Children only we count carry our evidence (resource reference
and date) so OHA can check it; they make up the dispute packet a CCO sends in the validation
period.

Populations compared:

* ``denominator``: OHA's denominator flag (every row when the file has no such column) against
  our denominator after exclusions (``den`` and not ``denex``: the base of the rate);
* ``numerator``: OHA's numerator flag against ours.

``agreement = both / (both + only OHA + only us)``; ``None`` when neither side has a child.

Pure: the evaluation(s), OHA's parsed rows and the store-derived facts (:class:`ClaimsFacts`,
:class:`DataLag`, evidence dates) come in as plain data; :mod:`fhir_adapter.report.reconcile_run`
gathers them, and the renderers at the end return bytes and dicts.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from fhir_adapter.fhir.dates import from_micros, iso_instant
from fhir_adapter.ingest.oha_file import OhaRow
from fhir_adapter.report.dual import DatedEvidence, dated, excel_csv, version_key
from fhir_adapter.store.claims_facts import VersionKey
from fhir_adapter.store.evaluate import ChildResult, Evaluation, Evidence

POPULATIONS = ("denominator", "numerator")
#: Directions of a difference; ``cco-differs``: both count the child, in different CCOs.
DIRECTIONS = ("only-oha", "only-us", "cco-differs")

#: Reason codes of a difference, in the order they are tried (spec §4 lists enrollment, age, no
#: claim, denied claim, diagnosis missing, code not in list, data lag; the rest are ours).
#:
#: A child OHA counts but we do not: ``not-in-our-data`` (no child with the member id); for the
#: denominator (and the numerator of a child outside our denominator) ``age`` → ``anchor-cco`` →
#: ``enrollment`` → ``deceased``, from our engine reason and the two CCOs; an identified-need
#: denominator without our qualifying diagnosis → ``data-lag`` → ``no-claim`` →
#: ``diagnosis-missing``; for the numerator ``diagnosis-position`` (we would count the child if
#: the diagnosis could be in any position) → ``denied-claim`` → ``diagnosis-missing`` →
#: ``unknown-code-system`` (engine reasons) → ``data-lag`` → ``no-claim`` → ``code-not-in-list``
#: → ``claim-not-counted``.
#:
#: A child we count but OHA does not: ``no-member-id``; denominator ``anchor-cco`` (OHA names
#: another CCO) → ``age`` (our records disagree on the birth date or leave the age uncertain) →
#: ``enrollment`` (the default: we see continuous enrollment); numerator of a child in OHA's
#: denominator ``data-lag`` (every qualifying service after OHA's claims-through date) →
#: ``claim-not-in-oha``.
REASONS = (
    "not-in-our-data",
    "no-member-id",
    "age",
    "anchor-cco",
    "enrollment",
    "deceased",
    "diagnosis-position",
    "denied-claim",
    "diagnosis-missing",
    "unknown-code-system",
    "data-lag",
    "no-claim",
    "code-not-in-list",
    "claim-not-counted",
    "claim-not-in-oha",
    "only-ehr",
)

REASON_TEXT = {
    "not-in-our-data": "OHA counts a member id we do not hold (no Patient with this member id in our data).",
    "no-member-id": "We count a child whose records carry no Medicaid member id, so OHA's file cannot name it (spec §3 Identity: unlinked).",
    "age": "Age differs: outside the age band or no usable birth date in our data (outside-age-band, no-birth-date, ambiguous-birth-date), or our records disagree on the birth date.",
    "anchor-cco": "Attribution differs: enrolled in another CCO on the last day of the period, or OHA's CCO differs from ours.",
    "enrollment": "Continuous enrollment differs: we do not see enrollment on the last day or through the period (not-enrolled-on-anchor, enrollment-gap), or we do and OHA does not.",
    "deceased": "We exclude the child for a death on or before the last day of the period (denominator exclusion).",
    "diagnosis-position": "Qualifies when a qualifying diagnosis in any position on the claim counts, not at the configured diagnosis position.",
    "denied-claim": "Our qualifying services are only on denied claims or lines (denied-claim-only).",
    "diagnosis-missing": "No qualifying diagnosis on the claim with the qualifying procedure (service-without-qualifying-diagnosis), or none in our claims for the identified-need denominator.",
    "unknown-code-system": "The child's service codings are in code systems our mappings do not know.",
    "data-lag": "Claims timing: OHA counts the child and our claims are not paid through the period end plus the run-out, or our claims feed is older than OHA's; or we count the child on a claim dated after OHA's claims-through date.",
    "no-claim": "No claim at all for the child in the period in our claims data.",
    "code-not-in-list": "The child has claims in the period, but none with a procedure code in the measure's value set.",
    "claim-not-counted": "Claims with a listed procedure code exist but do not count (replaced, cancelled, not use=claim, or adjudicated by another claim).",
    "claim-not-in-oha": "We count the child on a qualifying claim OHA does not count; the evidence is listed so OHA can check it (was the encounter record received?).",
    "only-ehr": "Counted only through clinical (EHR) data. Never assigned here: reconciliation evaluates in claims mode like OHA; `fhir-adapter rates` lists these children.",
}

DIRECTION_TEXT = {
    "only-oha": "OHA counts the child, we do not",
    "only-us": "we count the child, OHA does not",
    "cco-differs": "both count the child, in different CCOs",
}

_AGE = ("no-birth-date", "ambiguous-birth-date", "outside-age-band")
_ENROLLMENT = ("not-enrolled-on-anchor", "enrollment-gap")
_SERVICE_TYPES = ("ExplanationOfBenefit", "Claim", "Encounter", "Procedure")


@dataclass(frozen=True)
class ClaimsFacts:
    """What our claims hold for one child in the period (from
    :func:`fhir_adapter.store.claims_facts.claim_lines`)."""

    #: distinct claims (source, type, id) with a line dated in the period
    claims: int
    #: ``system|code`` of the procedure codings on those lines
    codes: tuple[str, ...] = ()
    #: group id → the codes among them in the group's procedure value set on the line's date
    listed: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class DataLag:
    """Claims timing on both sides (reason ``data-lag``)."""

    #: the date our (freshest) claims feed is paid through; ``None``: unknown
    paid_through: date | None
    #: the date OHA's claims data runs through, when its file or the user says
    oha_claims_through: date | None
    run_out_days: int

    def lagging(self, period_end: date) -> bool:
        """Our claims may still miss services OHA has: not paid through ``period_end`` plus the
        run-out, or older than OHA's. Unknown paid-through dates never make a lag."""
        if self.paid_through is None:
            return False
        complete = period_end + timedelta(days=self.run_out_days)
        older = self.oha_claims_through is not None and self.paid_through < self.oha_claims_through
        return self.paid_through < complete or older

    def describe(self, period_end: date) -> str:
        ours = self.paid_through.isoformat() if self.paid_through else "unknown (no claims source status)"
        oha = self.oha_claims_through.isoformat() if self.oha_claims_through else "not given"
        needed = (period_end + timedelta(days=self.run_out_days)).isoformat()
        state = "lagging" if self.lagging(period_end) else "complete"
        return (
            f"our claims paid through {ours}; OHA's claims through {oha}; complete once paid through {needed} "
            f"(period end + {self.run_out_days} days run-out): {state}"
        )


@dataclass(frozen=True)
class Difference:
    group: str
    population: str
    member_id: str | None
    person: str | None
    patient: str | None
    patient_source: str | None
    #: our attribution (anchor CCO)
    cco: str | None
    oha_cco: str | None
    oha: bool
    ours: bool
    direction: str
    reason: str
    #: our engine's reason for the child in this group (``None`` when we do not know the child)
    our_reason: str | None
    oha_location: str | None
    evidence: tuple[DatedEvidence, ...] = ()


@dataclass(frozen=True)
class PopulationSummary:
    group: str
    population: str
    both: int
    only_oha: int
    only_us: int
    #: among ``both``: children attributed to different CCOs
    cco_differs: int
    reasons: Mapping[str, int]

    @property
    def union(self) -> int:
        return self.both + self.only_oha + self.only_us

    @property
    def agreement(self) -> float | None:
        return self.both / self.union if self.union else None


@dataclass
class Reconciliation:
    measure: str
    version: str
    period_start: date
    period_end: date
    as_of: int
    cco: str | None
    lag: DataLag
    summaries: list[PopulationSummary]
    differences: list[Difference]
    oha_rows: int
    oha_other_measure_rows: int = 0
    #: the OHA file's name (for the summary), if any
    oha_file: str = ""

    @property
    def dispute(self) -> list[Difference]:
        """Children only we count (the rows a CCO disputes), with our evidence."""
        return [d for d in self.differences if d.direction == "only-us"]


# -- membership ---------------------------------------------------------------------------------
def _group_index(ev: Evaluation, group: str) -> int:
    ids = [g.id for g in ev.spec.groups]
    if group not in ids:
        raise ValueError(f"measure {ev.spec.id} has no group {group!r}")
    return ids.index(group)


def ours_in(child: ChildResult, index: int, population: str, cco: str | None) -> bool:
    if cco is not None and child.cco != cco:
        return False
    g = child.groups[index]
    if population == "denominator":
        return g.den and not g.denex
    return g.num


def oha_in(row: OhaRow, population: str, cco: str | None) -> bool:
    if cco is not None and row.cco is not None and row.cco != cco:
        return False
    return row.denominator if population == "denominator" else row.numerator


@dataclass(frozen=True)
class Needed:
    """Store facts the comparison needs: claims of these members, dates of these versions."""

    member_ids: frozenset[str]
    evidence: frozenset[VersionKey]


def _sides(
    ev: Evaluation, rows: Sequence[OhaRow], group: str, population: str, cco: str | None
) -> tuple[dict[str, ChildResult], dict[str, OhaRow]]:
    index = _group_index(ev, group)
    ours = {
        (c.member_id if c.member_id else f"\0{c.person}"): c
        for c in ev.children
        if ours_in(c, index, population, cco)
    }
    oha = {r.member_id: r for r in rows if r.group == group and oha_in(r, population, cco)}
    return ours, oha


def needed(ev: Evaluation, rows: Sequence[OhaRow], groups: Sequence[str], cco: str | None = None) -> Needed:
    """Which members' claims and which evidence dates :func:`reconcile` will use."""
    members: set[str] = set()
    evidence: set[VersionKey] = set()
    for group in groups:
        index = _group_index(ev, group)
        need_group = ev.spec.groups[index].need_diagnoses is not None
        for population in POPULATIONS:
            ours, oha = _sides(ev, rows, group, population, cco)
            if population == "numerator" or need_group:
                members |= {m for m in oha if m not in ours}
            for key, child in ours.items():
                row = oha.get(key)
                if row is None or (row.cco is not None and row.cco != child.cco):
                    evidence |= {version_key(e) for e in _evidence(ev, child, index, population)}
    return Needed(frozenset(members), frozenset(evidence))


def _evidence(ev: Evaluation, child: ChildResult, index: int, population: str) -> list[Evidence]:
    """Our evidence for a child we count: the qualifying services (and the diagnoses that made
    them qualify) for the numerator, the Coverage for the denominator."""
    group_id = ev.spec.groups[index].id
    items = ev.evidence.get(child.person, [])
    if population == "numerator":
        return [e for e in items if e.group == group_id and e.population == "numerator"]
    return [e for e in items if e.population == "initial-population" and e.rtype == "Coverage"]


# -- reasons ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Facts:
    ev: Evaluation
    claims: Mapping[str, ClaimsFacts]
    lag: DataLag
    cco: str | None
    any_position_num: frozenset[tuple[str, int]]


def _only_oha_denominator(child: ChildResult, row: OhaRow, index: int, f: _Facts) -> str:
    g = child.groups[index]
    reason = g.reason
    if reason in _AGE:
        return "age"
    if child.cco is not None and (
        (row.cco is not None and row.cco != child.cco) or (f.cco is not None and child.cco != f.cco)
    ):
        return "anchor-cco"
    if reason in _ENROLLMENT:
        return "enrollment"
    if g.denex or reason == "deceased":
        return "deceased"
    if reason == "no-identified-need":
        return _claims_reason(child, index, f, missing="diagnosis-missing")
    return "enrollment"


def _claims_reason(child: ChildResult, index: int, f: _Facts, *, missing: str | None = None) -> str:
    """``data-lag`` → ``no-claim`` → ``missing`` (when given) → ``code-not-in-list`` →
    ``claim-not-counted``, from our claims for the child."""
    if f.lag.lagging(f.ev.period_end):
        return "data-lag"
    facts = f.claims.get(child.member_id or "")
    if facts is None or facts.claims == 0:
        return "no-claim"
    if missing is not None:
        return missing
    if not facts.listed.get(f.ev.spec.groups[index].id):
        return "code-not-in-list"
    return "claim-not-counted"


def _only_oha_numerator(child: ChildResult, index: int, f: _Facts) -> str:
    reason = child.groups[index].reason
    if (child.person, index) in f.any_position_num:
        return "diagnosis-position"
    if reason == "denied-claim-only":
        return "denied-claim"
    if reason == "service-without-qualifying-diagnosis":
        return "diagnosis-missing"
    if reason == "unknown-code-system":
        return "unknown-code-system"
    return _claims_reason(child, index, f)


def _only_us_denominator(child: ChildResult, row: OhaRow | None) -> str:
    if child.member_id is None:
        return "no-member-id"
    if row is not None and row.cco is not None and child.cco is not None and row.cco != child.cco:
        return "anchor-cco"
    if child.birth_conflict or child.age is None:
        return "age"
    return "enrollment"


# -- comparison ---------------------------------------------------------------------------------
def reconcile(
    ev: Evaluation,
    rows: Sequence[OhaRow],
    *,
    groups: Sequence[str],
    cco: str | None = None,
    any_position: Evaluation | None = None,
    claims: Mapping[str, ClaimsFacts] | None = None,
    lag: DataLag | None = None,
    days: Mapping[VersionKey, tuple[date, date]] | None = None,
    oha_other_measure_rows: int = 0,
    oha_file: str = "",
) -> Reconciliation:
    """Compare ``ev`` (``claims`` mode, with evidence) with OHA's rows for ``groups``.

    ``any_position`` is the same evaluation with every numerator's diagnosis position set to
    ``any`` (omit it when they already are); ``claims`` holds :class:`ClaimsFacts` by member id
    for :attr:`Needed.member_ids`; ``days`` the dates of :attr:`Needed.evidence`. A ``cco``
    limits both sides to that CCO (ours by our attribution, OHA's by its CCO column)."""
    if ev.sources != "claims":
        raise ValueError("reconciliation compares with OHA's view: evaluate with sources='claims'")
    if any_position is not None and (
        any_position.sources != ev.sources or any_position.as_of != ev.as_of
        or any_position.period_end != ev.period_end or any_position.period_start != ev.period_start
    ):  # fmt: skip
        raise ValueError("the any-position evaluation must share the mode, period and data cut")
    lag = lag or DataLag(None, None, 0)
    days = days or {}
    f = _Facts(
        ev=ev,
        claims=claims or {},
        lag=lag,
        cco=cco,
        any_position_num=frozenset(
            (c.person, i)
            for c in (any_position.children if any_position else ())
            for i, g in enumerate(c.groups)
            if g.num
        ),
    )
    children_by_member = {c.member_id: c for c in ev.children if c.member_id}
    all_rows = {(r.member_id, r.group): r for r in rows}
    summaries: list[PopulationSummary] = []
    differences: list[Difference] = []
    for group in groups:
        index = _group_index(ev, group)
        for population in POPULATIONS:
            ours, oha = _sides(ev, rows, group, population, cco)
            found: list[Difference] = []
            both = cco_differs = 0
            for key in sorted(set(ours) | set(oha), key=lambda k: (k.startswith("\0"), k)):
                child = ours.get(key)
                row = oha.get(key)
                if child is not None and row is not None:
                    both += 1
                    if row.cco is not None and child.cco is not None and row.cco != child.cco:
                        cco_differs += 1
                        found.append(
                            _difference(
                                ev, group, index, population, child, row, "cco-differs", "anchor-cco", days
                            )
                        )
                    continue
                if row is not None:
                    known = children_by_member.get(key)
                    if known is None:
                        reason = "not-in-our-data"
                    elif population == "denominator" or not ours_in(known, index, "denominator", cco):
                        reason = _only_oha_denominator(known, row, index, f)
                    else:
                        reason = _only_oha_numerator(known, index, f)
                    found.append(
                        _difference(ev, group, index, population, known, row, "only-oha", reason, days)
                    )
                    continue
                assert child is not None
                any_row = all_rows.get((child.member_id or "", group))
                in_oha_den = any_row is not None and oha_in(any_row, "denominator", cco)
                if population == "denominator" or not in_oha_den:
                    reason = _only_us_denominator(child, any_row)
                else:
                    reason = _only_us_numerator(ev, child, index, lag, days)
                found.append(
                    _difference(ev, group, index, population, child, any_row, "only-us", reason, days)
                )
            only_oha = sum(1 for d in found if d.direction == "only-oha")
            only_us = sum(1 for d in found if d.direction == "only-us")
            reasons = Counter(d.reason for d in found)
            summaries.append(
                PopulationSummary(
                    group, population, both, only_oha, only_us, cco_differs, dict(sorted(reasons.items()))
                )
            )
            differences.extend(found)
    return Reconciliation(
        measure=ev.spec.id,
        version=ev.spec.version,
        period_start=ev.period_start,
        period_end=ev.period_end,
        as_of=ev.as_of,
        cco=cco,
        lag=lag,
        summaries=summaries,
        differences=differences,
        oha_rows=len(rows),
        oha_other_measure_rows=oha_other_measure_rows,
        oha_file=oha_file,
    )


def _only_us_numerator(
    ev: Evaluation, child: ChildResult, index: int, lag: DataLag, days: Mapping[VersionKey, tuple[date, date]]
) -> str:
    if child.member_id is None:
        return "no-member-id"
    services = [e for e in _evidence(ev, child, index, "numerator") if e.rtype in _SERVICE_TYPES]
    through = lag.oha_claims_through
    service_days = [days[version_key(e)][0] for e in services if version_key(e) in days]
    if (
        through is not None
        and service_days
        and len(service_days) == len(services)
        and min(service_days) > through
    ):
        return "data-lag"
    return "claim-not-in-oha"


def _difference(
    ev: Evaluation,
    group: str,
    index: int,
    population: str,
    child: ChildResult | None,
    row: OhaRow | None,
    direction: str,
    reason: str,
    days: Mapping[VersionKey, tuple[date, date]],
) -> Difference:
    evidence: tuple[DatedEvidence, ...] = ()
    if child is not None and direction != "only-oha":
        evidence = dated(_evidence(ev, child, index, population), days)
    return Difference(
        group=group,
        population=population,
        member_id=child.member_id if child is not None else row.member_id if row is not None else None,
        person=child.person if child else None,
        patient=f"Patient/{child.subject_id}" if child else None,
        patient_source=child.subject_source if child else None,
        cco=child.cco if child else None,
        oha_cco=row.cco if row else None,
        oha=row is not None and oha_in(row, population, None),
        ours=child is not None and ours_in(child, index, population, None),
        direction=direction,
        reason=reason,
        our_reason=child.groups[index].reason if child else None,
        oha_location=row.location if row else None,
        evidence=evidence,
    )


# -- outputs ------------------------------------------------------------------------------------
DIFFERENCE_COLUMNS = (
    "member_id", "patient", "cco", "population", "oha", "ours", "direction", "reason", "reason_text", "evidence",
    "group", "oha_cco", "patient_source", "our_reason", "oha_line",
)  # fmt: skip


def _yn(flag: bool) -> str:
    return "Y" if flag else "N"


def evidence_text(items: Iterable[DatedEvidence]) -> str:
    """``ExplanationOfBenefit/e1 2025-03-01 (source s1); …``"""
    return "; ".join(
        f"{e.reference}{' ' + e.date_text if e.date_text else ''} (source {e.source})" for e in items
    )


def difference_rows(differences: Iterable[Difference]) -> list[dict[str, Any]]:
    return [
        {
            "member_id": d.member_id or "", "patient": d.patient or "", "cco": d.cco or d.oha_cco or "",
            "population": d.population, "oha": _yn(d.oha), "ours": _yn(d.ours), "direction": d.direction,
            "reason": d.reason, "reason_text": REASON_TEXT[d.reason], "evidence": evidence_text(d.evidence),
            "group": d.group, "oha_cco": d.oha_cco or "", "patient_source": d.patient_source or "",
            "our_reason": d.our_reason or "", "oha_line": d.oha_location or "",
        }
        for d in differences
    ]  # fmt: skip


def differences_csv(result: Reconciliation) -> bytes:
    return excel_csv(DIFFERENCE_COLUMNS, difference_rows(result.differences))


def dispute_csv(result: Reconciliation) -> bytes:
    return excel_csv(DIFFERENCE_COLUMNS, difference_rows(result.dispute))


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def summary_json(result: Reconciliation) -> dict[str, Any]:
    used = sorted({d.reason for d in result.differences}, key=REASONS.index)
    return {
        "measure": result.measure,
        "measureVersion": result.version,
        "period": {"start": result.period_start.isoformat(), "end": result.period_end.isoformat()},
        "sources": "claims",
        "dataCut": iso_instant(from_micros(result.as_of)),
        "cco": result.cco,
        "ohaFile": result.oha_file,
        "ohaRows": result.oha_rows,
        "ohaRowsOfOtherMeasures": result.oha_other_measure_rows,
        "dataLag": {
            "ourClaimsPaidThrough": result.lag.paid_through.isoformat() if result.lag.paid_through else None,
            "ohaClaimsThrough": (
                result.lag.oha_claims_through.isoformat() if result.lag.oha_claims_through else None
            ),
            "runOutDays": result.lag.run_out_days,
            "lagging": result.lag.lagging(result.period_end),
        },
        "populations": [
            {
                "group": s.group,
                "population": s.population,
                "both": s.both,
                "onlyOha": s.only_oha,
                "onlyUs": s.only_us,
                "union": s.union,
                "ccoDiffers": s.cco_differs,
                "agreementRate": None if s.agreement is None else round(s.agreement, 6),
                "reasons": dict(s.reasons),
            }
            for s in result.summaries
        ],
        "differences": len(result.differences),
        "disputeRows": len(result.dispute),
        "reasonText": {code: REASON_TEXT[code] for code in used},
    }


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def summary_markdown(result: Reconciliation) -> str:
    out = io.StringIO()
    scope = f"CCO {result.cco}" if result.cco else "all CCOs"
    out.write(f"# Reconciliation with OHA: {result.measure} {result.version}\n\n")
    out.write(
        f"- period {result.period_start.isoformat()} to {result.period_end.isoformat()}, {scope}, "
        f"claims mode, data cut {iso_instant(from_micros(result.as_of))}\n"
        f"- OHA file {_md(result.oha_file or '-')}: {result.oha_rows} rows"
        + (f" ({result.oha_other_measure_rows} rows of other measures skipped)" if result.oha_other_measure_rows else "")
        + "\n"
        f"- data lag: {_md(result.lag.describe(result.period_end))}\n\n"
    )  # fmt: skip
    out.write("| group | population | both | only OHA | only us | agreement | CCO differs |\n")
    out.write("|---|---|---:|---:|---:|---:|---:|\n")
    for s in result.summaries:
        out.write(
            f"| {s.group} | {s.population} | {s.both} | {s.only_oha} | {s.only_us} | {_pct(s.agreement)} "
            f"| {s.cco_differs} |\n"
        )
    used = sorted({d.reason for d in result.differences}, key=REASONS.index)
    if used:
        out.write("\n## Differences by reason\n\n")
        header = " | ".join(f"{s.group} {s.population}" for s in result.summaries)
        out.write(f"| reason | {header} | meaning |\n")
        out.write("|---|" + "---:|" * len(result.summaries) + "---|\n")
        for code in used:
            counts = " | ".join(str(s.reasons.get(code, 0)) for s in result.summaries)
            out.write(f"| `{code}` | {counts} | {_md(REASON_TEXT[code])} |\n")
    else:
        out.write("\nNo differences: we and OHA count the same children.\n")
    out.write(
        f"\n{len(result.dispute)} row(s) in the dispute packet (children only we count, with evidence).\n"
    )
    return out.getvalue()
