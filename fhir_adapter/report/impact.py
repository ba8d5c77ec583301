"""Per-child impact of a mappings change: who enters or leaves each population (spec §3
"Official lists": report the per-child impact of an imported workbook).

Compares two :class:`~fhir_adapter.store.evaluate.Evaluation` objects of the same measure,
period, data cut and source mode, computed with the current and the new mappings. Children are
matched by person key; population ids are those of the Measure and MeasureReport
(``<group id>-<population code>``, spec §2).
"""

from __future__ import annotations

from dataclasses import dataclass

from fhir_adapter.report.conformance import POPULATIONS
from fhir_adapter.report.measurereport import population_id
from fhir_adapter.store.evaluate import ChildResult, Evaluation


@dataclass(frozen=True)
class MembershipChange:
    """One child entering (``before`` False, ``after`` True) or leaving one population."""

    population: str
    member_id: str | None
    #: ``Patient/<id>`` as its source sent it, and that source
    patient: str
    patient_source: str
    cco: str | None
    before: bool
    after: bool
    #: the child's reason code in the population's group, before and after
    reason_before: str
    reason_after: str

    @property
    def entered(self) -> bool:
        return self.after and not self.before


@dataclass(frozen=True)
class PopulationCount:
    population: str
    before: int
    after: int

    @property
    def delta(self) -> int:
        return self.after - self.before


@dataclass(frozen=True)
class Impact:
    """Membership changes and counts per population for one source mode."""

    measure: str
    sources: str
    counts: tuple[PopulationCount, ...]
    changes: tuple[MembershipChange, ...]

    @property
    def unchanged(self) -> bool:
        return not self.changes


_Membership = dict[str, tuple[bool, str]]  # population id -> (member, group reason)


def _memberships(ev: Evaluation, child: ChildResult) -> _Membership:
    out: _Membership = {}
    for group, result in zip(ev.spec.groups, child.groups, strict=True):
        for code, _display in POPULATIONS:
            out[population_id(group.id, code)] = (result.member_of(code), result.reason)
    return out


def _population_ids(ev: Evaluation) -> list[str]:
    return [population_id(g.id, code) for g in ev.spec.groups for code, _ in POPULATIONS]


def compare_evaluations(before: Evaluation, after: Evaluation) -> Impact:
    """Who enters or leaves each population between ``before`` and ``after``, and the counts.

    Both must evaluate the same measure over the same period and source mode (a
    :class:`ValueError` otherwise); a child missing on one side is in no population there.
    Changes are ordered by population (Measure order), then member id and patient."""
    if (before.spec.id, before.period_start, before.period_end, before.sources) != (
        after.spec.id, after.period_start, after.period_end, after.sources,
    ):  # fmt: skip
        raise ValueError("compare_evaluations needs two evaluations of one measure, period and source mode")
    populations = _population_ids(before) + [
        p for p in _population_ids(after) if p not in _population_ids(before)
    ]
    old = {c.person: (c, _memberships(before, c)) for c in before.children}
    new = {c.person: (c, _memberships(after, c)) for c in after.children}
    counts = {p: [0, 0] for p in populations}
    changes: list[MembershipChange] = []
    for person in sorted(old.keys() | new.keys()):
        child = (new.get(person) or old[person])[0]
        a = old[person][1] if person in old else {}
        b = new[person][1] if person in new else {}
        for pop in populations:
            was, reason_was = a.get(pop, (False, ""))
            now, reason_now = b.get(pop, (False, ""))
            counts[pop][0] += was
            counts[pop][1] += now
            if was != now:
                changes.append(
                    MembershipChange(
                        population=pop,
                        member_id=child.member_id,
                        patient=f"Patient/{child.subject_id}",
                        patient_source=child.subject_source,
                        cco=child.cco,
                        before=was,
                        after=now,
                        reason_before=reason_was,
                        reason_after=reason_now,
                    )
                )
    order = {p: i for i, p in enumerate(populations)}
    changes.sort(key=lambda c: (order[c.population], c.member_id or "", c.patient, c.patient_source))
    return Impact(
        measure=before.spec.id,
        sources=before.sources,
        counts=tuple(PopulationCount(p, counts[p][0], counts[p][1]) for p in populations),
        changes=tuple(changes),
    )


__all__ = ["Impact", "MembershipChange", "PopulationCount", "compare_evaluations"]
