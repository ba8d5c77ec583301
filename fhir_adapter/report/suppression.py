"""Small-cell suppression with complementary suppression for published summary MeasureReports.

Pure: a DEQM summary MeasureReport (:func:`fhir_adapter.report.measurereport.summary_report`) and
a threshold ``N`` in, a copy with some counts masked out. Spec §4 "Optional small-cell
suppression on published summaries (default threshold 11) with complementary suppression, so a
hidden cell cannot be recovered from totals".

Policy (the CMS Cell Size Suppression Policy for CMS data, as ResDAC states it: no cell of 1 to
10 beneficiaries may be displayed, and no percentage or other formula may be used that lets a
reader derive such a cell; a zero may be shown. UNVERIFIED: the policy text was not at hand
here, and no OHA rule was checked; hence the threshold is a setting):

- A count is **small** when ``1 <= count <= N - 1`` (``N = 11`` hides 1–10). Zero is not small.
- Counts of children include derived ones. The populations are nested (CQF Measures STU5
  proportion scoring: DEN ⊆ IP, DENEX ⊆ DEN, NUMER ⊆ DEN − DENEX), so each group or stratum
  ("unit") splits its initial population into four disjoint **atoms**: IP − DEN (not in the
  denominator), DENEX, NUMER and DEN − DENEX − NUMER (not met, the care gaps). Every population
  count is a sum of atoms, and so is every number a reader can compute from one unit's
  published counts by subtraction. Published numbers may not determine any small sum of atoms.

Rules, applied to each group of the report:

1. **Primary.** In every unit, publish the largest set of population counts from which no small
   sum of atoms follows; among sets of one size, prefer denominator, then numerator, then
   denominator-exclusion, then initial population. Hidden counts are masked.
2. **Scores.** A ``measureScore`` is published only when the denominator, the
   denominator-exclusion and the numerator of its unit are all published (a score next to two of
   them gives the third away).
3. **Complementary.** A reader knows that the strata of each stratifier partition the group's
   initial population ("missing" is a stratum), so for every population and every atom the
   strata add up to the group, across every stratifier. Whatever these equations let the
   reader determine is checked exactly (rules 4–5); while something small is determined, one
   more count is hidden: when the unit's own published counts give a hidden one away (a
   complement hid the denominator but not the equal initial population), its smallest other
   count; otherwise the same population in the next-smallest other stratum of the stratifier
   (the classic "hide the next-smallest cell too"), else a group count, else a count in another
   stratifier. Each step hides one more count, so the loop ends (all hidden is always safe).
4. **Exact check.** No hidden count and no small sum of atoms may be determined. A number is
   determined when it lies in the span of the published counts and
   the sum equations (linear algebra over the rationals). Because only group atoms are shared
   between units, this reduces to 4-dimensional subspaces: with ``V_u`` the span of unit ``u``'s
   published rows, ``W`` the group's, and ``I_k`` the intersection of ``V_t`` over the strata of
   stratifier ``k``, the reader knows the group subspace ``W* = W + Σ_k I_k`` and, in stratum
   ``s`` of ``k``, ``V_s + (W* ∩ ⋂_{t ≠ s} V_t)``. Atoms that are zero in the group are taken as
   known (zero in every stratum, as a non-negative sum of zero; also how a reader who knows the
   Measure defines DEN = IP would reason).
5. **Hidden totals.** Within one stratifier and population, when the group count is determined,
   the sum of the strata counts that are not determined may not be small either (two hidden
   cells adding up to 7 reveal that 7 children are in one of two strata).

What is not claimed: bounds. A reader can still narrow a hidden count to an interval (it lies
between 0 and its denominator); the guarantee is that no small count is *uniquely* determined
by the published numbers and the sum equations.

Representation (FHIR R4 "Using extensions to convey missing values"; extension
``http://hl7.org/fhir/StructureDefinition/data-absent-reason``, value ``masked``: "the
information is not available because of security, privacy or related reasons"): the
``count`` primitive keeps only that extension (``"_count": {"extension": [...]}``), so DEQM's
``count 1..1`` still holds and no value is shown; the unit's ``measureScore`` is removed. The
report carries the threshold in the extension ``<canonical base>/StructureDefinition/
report-suppression-threshold`` (valueInteger, the project's own, UNVERIFIED as a standard).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cache
from typing import Any

DATA_ABSENT_REASON = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
MASKED = {"url": DATA_ABSENT_REASON, "valueCode": "masked"}
DEFAULT_THRESHOLD = 11
POPULATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/measure-population"

IP, DEN, DENEX, NUMER = "initial-population", "denominator", "denominator-exclusion", "numerator"
#: The populations this module understands, in report order.
CODES: tuple[str, ...] = (IP, DEN, DENEX, NUMER)
#: Population rows in the atom basis (IP − DEN, DENEX, NUMER, DEN − DENEX − NUMER).
ROWS: Mapping[str, tuple[int, int, int, int]] = {
    IP: (1, 1, 1, 1),
    DEN: (0, 1, 1, 1),
    DENEX: (0, 1, 0, 0),
    NUMER: (0, 0, 1, 0),
}
ATOMS = ("initial-population − denominator", DENEX, NUMER, "denominator − exclusion − numerator")
#: Rule 1's preference among counts of equal number: denominator, numerator, exclusion, IP.
_WEIGHT = {DEN: 8, NUMER: 4, DENEX: 2, IP: 1}
#: Every non-empty sum of atoms (a count of children a reader could compute).
COMBOS: tuple[tuple[int, int, int, int], ...] = tuple(
    (a, b, c, d) for a, b, c, d in itertools.product((0, 1), repeat=4) if a or b or c or d
)

Vector = tuple[Fraction, ...]
Space = tuple[Vector, ...]  # a subspace of Q^4 as its reduced row echelon basis


# --------------------------------------------------------------------------------------------------
# subspaces of Q^4 (memoised: only a few dozen distinct ones occur)


def _rref(vectors: Iterable[Sequence[Fraction | int]]) -> Space:
    rows = [[Fraction(x) for x in v] for v in vectors]
    basis: list[list[Fraction]] = []
    col = 0
    while rows and col < 4:
        pivot = next((r for r in rows if r[col] != 0), None)
        if pivot is None:
            col += 1
            continue
        rows.remove(pivot)
        pivot = [x / pivot[col] for x in pivot]
        rows = [[a - r[col] * b for a, b in zip(r, pivot, strict=True)] for r in rows]
        basis = [[a - r[col] * b for a, b in zip(r, pivot, strict=True)] for r in basis]
        basis.append(pivot)
        rows = [r for r in rows if any(r)]
        col += 1
    basis.sort(key=lambda r: next(i for i, x in enumerate(r) if x != 0))
    return tuple(tuple(r) for r in basis)


FULL: Space = _rref(tuple(int(i == j) for j in range(4)) for i in range(4))
ZERO: Space = ()


@cache
def span(*spaces: Space) -> Space:
    return _rref(v for s in spaces for v in s)


@cache
def contains(space: Space, vector: tuple[int, ...]) -> bool:
    return len(span(space, (tuple(Fraction(x) for x in vector),))) == len(space)


@cache
def perp(space: Space) -> Space:
    """The orthogonal complement (null space of the basis)."""
    if not space:
        return FULL
    pivots = [next(i for i, x in enumerate(r) if x != 0) for r in space]
    free = [i for i in range(4) if i not in pivots]
    out = []
    for f in free:
        v = [Fraction(0)] * 4
        v[f] = Fraction(1)
        for row, p in zip(space, pivots, strict=True):
            v[p] = -row[f]
        out.append(v)
    return _rref(out)


@cache
def intersect(a: Space, b: Space) -> Space:
    return perp(span(perp(a), perp(b)))


@cache
def _rows_space(codes: frozenset[str], known: Space) -> Space:
    return span(known, _rref(ROWS[c] for c in sorted(codes)))


def rows_space(codes: Iterable[str], known: Space = ZERO) -> Space:
    """The span of the rows of ``codes`` and of the ``known`` atoms."""
    return _rows_space(frozenset(codes), known)


@cache
def revealed(space: Space) -> tuple[tuple[int, int, int, int], ...]:
    """The sums of atoms a reader can compute from ``space``."""
    return tuple(c for c in COMBOS if contains(space, c))


# --------------------------------------------------------------------------------------------------
# the plan for one group


@dataclass
class Table:
    """One group's counts: ``group[code]``, and per stratifier a list of strata ``{code: count}``."""

    group: dict[str, int]
    stratifiers: list[list[dict[str, int]]]


@dataclass
class Plan:
    """Which counts are hidden: ``group`` codes, and per stratifier per stratum the hidden codes."""

    group: set[str] = field(default_factory=set)
    strata: list[list[set[str]]] = field(default_factory=list)

    def hidden_count(self) -> int:
        return len(self.group) + sum(len(h) for strata in self.strata for h in strata)


def atoms(counts: Mapping[str, int]) -> tuple[int, int, int, int]:
    """The four atoms of one unit; ``ValueError`` when the counts are not nested."""
    ip, den, denex, num = (int(counts[c]) for c in CODES)
    values: tuple[int, int, int, int] = (ip - den, denex, num, den - denex - num)
    if min(values) < 0 or min(ip, den, denex, num) < 0:
        raise ValueError(
            f"counts {dict(zip(CODES, (ip, den, denex, num), strict=True))} are not nested "
            "(DEN ⊆ IP, DENEX ⊆ DEN, NUMER ⊆ DEN − DENEX)"
        )
    return values


def _value(combo: Sequence[int], atom_values: Sequence[int]) -> int:
    return sum(c * a for c, a in zip(combo, atom_values, strict=True))


def _small(value: int, threshold: int) -> bool:
    return 1 <= value <= threshold - 1


def _unsafe(space: Space, atom_values: Sequence[int], threshold: int) -> bool:
    return any(_small(_value(c, atom_values), threshold) for c in revealed(space))


#: Candidate published sets, best first (rule 1).
_CANDIDATES: tuple[frozenset[str], ...] = tuple(
    sorted(
        (frozenset(s) for n in range(len(CODES), -1, -1) for s in itertools.combinations(CODES, n)),
        key=lambda s: (-len(s), -sum(_WEIGHT[c] for c in s)),
    )
)


def _primary(atom_values: Sequence[int], known: Space, threshold: int) -> set[str]:
    for published in _CANDIDATES:
        if not _unsafe(rows_space(published, known), atom_values, threshold):
            return set(CODES) - published
    return set(CODES)  # not reached: the empty set only reveals known zeros


@dataclass
class _State:
    table: Table
    threshold: int
    plan: Plan
    known: Space
    group_atoms: tuple[int, int, int, int]
    strata_atoms: list[list[tuple[int, int, int, int]]]

    def v_group(self) -> Space:
        return rows_space(set(CODES) - self.plan.group, self.known)

    def v_stratum(self, k: int, s: int) -> Space:
        return rows_space(set(CODES) - self.plan.strata[k][s], self.known)


def _others(spaces: list[Space]) -> list[Space]:
    """For each index, the intersection of all the other spaces (FULL for a lone one)."""
    n = len(spaces)
    prefix = [FULL] * (n + 1)
    suffix = [FULL] * (n + 1)
    for i in range(n):
        prefix[i + 1] = intersect(prefix[i], spaces[i])
    for i in range(n - 1, -1, -1):
        suffix[i] = intersect(suffix[i + 1], spaces[i])
    return [intersect(prefix[i], suffix[i + 1]) for i in range(n)]


@dataclass(frozen=True)
class Knowledge:
    """What a reader determines: the group subspace and, per stratum, its subspace."""

    group: Space
    strata: list[list[Space]]


def knowledge(state: _State) -> Knowledge:
    """Rule 4: ``W* = W + Σ_k I_k`` and ``V_s + (W* ∩ ⋂_{t≠s} V_t)``."""
    v = [[state.v_stratum(k, s) for s in range(len(strata))] for k, strata in enumerate(state.plan.strata)]
    w_star = state.v_group()
    for spaces in v:
        if spaces:
            total = spaces[0]
            for sp in spaces[1:]:
                total = intersect(total, sp)
            w_star = span(w_star, total)
    strata_k = []
    for spaces in v:
        rest = _others(spaces)
        strata_k.append([span(spaces[i], intersect(w_star, rest[i])) for i in range(len(spaces))])
    return Knowledge(w_star, strata_k)


@dataclass(frozen=True)
class _Violation:
    stratifier: int | None  # None: the group
    stratum: int | None
    codes: frozenset[str]  # populations whose hiding elsewhere would help
    #: the unit's own published counts give it away (a complement hid too little of the unit)
    own: bool = False


def _find_violation(state: _State, know: Knowledge) -> _Violation | None:
    n = state.threshold

    def exposed(space: Space, hidden: set[str], atom_values: Sequence[int]) -> bool:
        return _unsafe(space, atom_values, n) or any(contains(space, ROWS[c]) for c in hidden)

    if exposed(know.group, state.plan.group, state.group_atoms):
        own = exposed(state.v_group(), state.plan.group, state.group_atoms)
        return _Violation(None, None, frozenset(state.plan.group) or frozenset(CODES), own)
    for k, strata in enumerate(know.strata):
        for s, space in enumerate(strata):
            hidden = state.plan.strata[k][s]
            if exposed(space, hidden, state.strata_atoms[k][s]):
                own = exposed(state.v_stratum(k, s), hidden, state.strata_atoms[k][s])
                return _Violation(k, s, frozenset(hidden) or frozenset(CODES), own)
    # rule 5: totals of the undetermined strata of a determined group count
    for k, strata in enumerate(know.strata):
        for code in CODES:
            if not contains(know.group, ROWS[code]):
                continue
            rest = [s for s, space in enumerate(strata) if not contains(space, ROWS[code])]
            total = sum(state.table.stratifiers[k][s][code] for s in rest)
            if _small(total, n):
                return _Violation(k, None, frozenset({code}))
    return None


def _intersection(spaces: Sequence[Space]) -> Space:
    total = FULL
    for space in spaces:
        total = intersect(total, space)
    return total


def _hide_one(state: _State, violation: _Violation) -> None:
    """Hide one more published count (rule 3's order)."""
    table, plan = state.table, state.plan

    def published_in(k: int, codes: Iterable[str], skip: int | None) -> list[tuple[int, int, int, str]]:
        """Published counts of ``codes`` in stratifier ``k``, smallest stratum first (the
        next-smallest stratum takes the same population hidden), then smallest count."""
        return [
            (table.stratifiers[k][s][IP], table.stratifiers[k][s][c], s, c)
            for s in range(len(table.stratifiers[k]))
            if s != skip
            for c in codes
            if c not in plan.strata[k][s] and not contains(state.known, ROWS[c])
        ]

    def hide_in(k: int, codes: Iterable[str], skip: int | None = None) -> bool:
        found = published_in(k, codes, skip)
        if found:
            _size, _count, s, c = min(found)
            plan.strata[k][s].add(c)
        return bool(found)

    if violation.own:
        # hide the unit's smallest other published count (the loop repeats until the unit is closed)
        if violation.stratifier is None:
            hidden, counts = plan.group, table.group
        else:
            assert violation.stratum is not None
            hidden = plan.strata[violation.stratifier][violation.stratum]
            counts = table.stratifiers[violation.stratifier][violation.stratum]
        candidates = [(counts[c], c) for c in CODES if c not in hidden and not contains(state.known, ROWS[c])]
        hidden.add(min(candidates)[1])
        return
    # stratifiers that teach the reader something about the group beyond its published counts
    w = state.v_group()
    contributing = [
        k
        for k, strata in enumerate(table.stratifiers)
        if strata and span(w, _intersection([state.v_stratum(k, s) for s in range(len(strata))])) != w
    ]
    if violation.stratifier is not None:
        k = violation.stratifier
        if hide_in(k, violation.codes, violation.stratum) or hide_in(k, CODES, violation.stratum):
            return
    else:
        for k in contributing:
            if hide_in(k, violation.codes) or hide_in(k, CODES):
                return
    group_published = [
        (table.group[c], c) for c in CODES if c not in plan.group and not contains(state.known, ROWS[c])
    ]
    if group_published:
        preferred = [(v, c) for v, c in group_published if c in violation.codes] or group_published
        plan.group.add(min(preferred)[1])
        return
    for k in [*contributing, *range(len(table.stratifiers))]:
        if hide_in(k, CODES):
            return
    raise AssertionError("a violation with every count hidden")  # pragma: no cover


def plan_suppression(table: Table, threshold: int) -> Plan:
    """Rules 1–5 for one group; the returned plan leaves nothing small determinable."""
    if threshold < 2:
        raise ValueError(f"threshold {threshold}: suppression needs a threshold of at least 2")
    group_atoms = atoms(table.group)
    strata_atoms = [[atoms(s) for s in strata] for strata in table.stratifiers]
    known = _rref(tuple(int(i == j) for j in range(4)) for i in range(4) if group_atoms[i] == 0)
    plan = Plan(
        _primary(group_atoms, known, threshold),
        [[_primary(a, known, threshold) for a in strata] for strata in strata_atoms],
    )
    state = _State(table, threshold, plan, known, group_atoms, strata_atoms)
    while True:
        violation = _find_violation(state, knowledge(state))
        if violation is None:
            return plan
        _hide_one(state, violation)


# --------------------------------------------------------------------------------------------------
# MeasureReports


def _code(population: Mapping[str, Any]) -> str:
    codes = [
        c.get("code")
        for c in (population.get("code") or {}).get("coding", [])
        if isinstance(c, Mapping) and c.get("system") == POPULATION_SYSTEM
    ]
    if len(codes) != 1 or codes[0] not in CODES:
        raise ValueError(f"population code {codes!r}: suppression handles the populations {', '.join(CODES)}")
    return str(codes[0])


def _counts(populations: Sequence[Mapping[str, Any]], where: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for population in populations:
        count = population.get("count")
        if isinstance(count, bool) or not isinstance(count, int):
            raise ValueError(f"{where}: a population has no count (already suppressed?)")
        out[_code(population)] = count
    if set(out) != set(CODES):
        raise ValueError(f"{where}: populations {sorted(out)} are not {', '.join(CODES)}")
    return out


def _mask(element: dict[str, Any], hidden: set[str]) -> None:
    for population in element.get("population", []):
        if _code(population) in hidden:
            population.pop("count", None)
            population["_count"] = {"extension": [dict(MASKED)]}
    if hidden & {DEN, DENEX, NUMER}:
        element.pop("measureScore", None)


def is_masked(population: Mapping[str, Any]) -> bool:
    """True when a population's count is masked as this module masks it."""
    primitive = population.get("_count")
    if "count" in population or not isinstance(primitive, Mapping):
        return False
    return any(
        isinstance(e, Mapping) and e.get("url") == DATA_ABSENT_REASON and e.get("valueCode") == "masked"
        for e in primitive.get("extension", [])
    )


def suppress_report(report: Mapping[str, Any], threshold: int, *, extension_url: str) -> dict[str, Any]:
    """A copy of the summary ``report`` with small cells and their complements masked (module
    docstring) and the threshold stated in the ``extension_url`` extension. ``ValueError`` for a
    report that is not a summary or whose populations are not the four this module handles."""
    if report.get("resourceType") != "MeasureReport" or report.get("type") != "summary":
        raise ValueError("suppression applies to summary MeasureReports only")
    out: dict[str, Any] = copy.deepcopy(dict(report))
    for gi, group in enumerate(out.get("group", [])):
        where = f"MeasureReport.group[{gi}]"
        table = Table(
            _counts(group.get("population", []), where),
            [
                [
                    _counts(stratum.get("population", []), f"{where}.stratifier[{si}].stratum[{ti}]")
                    for ti, stratum in enumerate(stratifier.get("stratum", []))
                ]
                for si, stratifier in enumerate(group.get("stratifier", []))
            ],
        )
        plan = plan_suppression(table, threshold)
        _mask(group, plan.group)
        for stratifier, hidden_strata in zip(group.get("stratifier", []), plan.strata, strict=True):
            for stratum, hidden in zip(stratifier.get("stratum", []), hidden_strata, strict=True):
                _mask(stratum, hidden)
    extensions = [e for e in out.get("extension", []) if e.get("url") != extension_url]
    extensions.append({"url": extension_url, "valueInteger": threshold})
    out["extension"] = extensions
    return out


def extension_url(canonical_base: str) -> str:
    """The URL of the report extension that states the threshold."""
    return f"{canonical_base.rstrip('/')}/StructureDefinition/report-suppression-threshold"


__all__ = [
    "DATA_ABSENT_REASON",
    "DEFAULT_THRESHOLD",
    "MASKED",
    "Plan",
    "Table",
    "atoms",
    "extension_url",
    "is_masked",
    "plan_suppression",
    "suppress_report",
]
