"""Per-child plans: who the child is, where its records live, its enrollment and its visits.

A plan is pure data drawn from one ``random.Random`` per child (seeded from the cohort seed and
the child's index), so a child's records never depend on other children, output is identical
for equal arguments, and any slice of the cohort can be regenerated alone. Renderers in
``claims.py`` and ``ehr.py`` turn plans into FHIR R4 JSON.

Scenario frequencies are chosen so every tag in :data:`TAGS` occurs for a few hundred children
in a statewide-sized cohort (about 120,000 children); rules they exercise are in
spec/oregon-se-metric.md §3 (enrollment, numerator sources, edge rules 1–10).
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass
from datetime import date
from typing import Final, NamedTuple, Protocol

from fhir_adapter.synth import vocab
from fhir_adapter.synth.calendar import Calendar

#: Every scenario tag the manifest may carry, with what it means. Tags describe the data, not
#: the expected measure result; the rule each one exercises is cited.
TAGS: Final[dict[str, str]] = {
    # demographics (spec §3 "Age", edge rules 3, 4)
    "birth-dec-31": "born on 31 December",
    "birth-jan-1": "born on 1 January",
    "birth-year-only": "Patient.birthDate is a year only (e.g. 2021)",
    "birth-year-month": "Patient.birthDate is a year and month (e.g. 2021-03)",
    "no-birth-date": "no Patient.birthDate in any source",
    "born-during-year": "born in one of the synthesised years",
    "deceased-datetime": "Patient.deceasedDateTime set; records stop after death",
    "deceased-boolean": "Patient.deceasedBoolean = true without a date (edge rule 4)",
    # identity (spec §3 "Identity")
    "claims-and-ehr": "in oha-claims and in at least one EHR, Patient ids differ, same member id",
    "in-both-ehrs": "in both ehr-clinic-a and ehr-clinic-b",
    "ehr-only": "not in oha-claims (not an OHP member); EHR records carry no member id",
    "claims-only": "only in oha-claims",
    "unlinked-ehr": "an OHP member whose EHR Patient lacks the member-id identifier",
    "ehr-id-collision": "ehr-clinic-b Patient.id equals the ehr-clinic-a Patient.id of another child",
    # enrollment (spec §3 "Enrollment and attribution", edge rules 1, 2, 7)
    "continuous-enrollment": "one CCO span covering every synthesised year",
    "enrolled-since-birth": "first span starts on the birth date",
    "gap-30": "one gap of exactly 30 uncovered days in enrollment_year",
    "gap-45": "one gap of exactly 45 uncovered days in enrollment_year",
    "gap-46": "one gap of exactly 46 uncovered days in enrollment_year",
    "two-gaps": "two gaps (10 and 20 days) in enrollment_year",
    "cco-switch": "two spans with different CCOs, switching mid enrollment_year",
    "enrolled-mid-year": "first span starts mid enrollment_year",
    "disenrolled-before-anchor": "last span ends mid enrollment_year, nothing after",
    "two-ccos-on-anchor": "a second CCO span overlaps the last day of enrollment_year (edge rule 1)",
    "adjacent-spans": "the same CCO in two adjacent or overlapping spans (merge them)",
    "retro-enrollment": "a span whose start was backdated (retroactive enrollment; tag only)",
    "cancelled-coverage": "a cancelled Coverage covers the enrollment gap (must be ignored)",
    "draft-coverage": "a draft Coverage with another CCO (must be ignored)",
    "payor-organization-reference": "Coverage.payor references an Organization carrying the CCO id",
    "coverage-datetime-period": "Coverage.period uses dateTimes with offsets or UTC",
    # services (spec §3 "Numerator", "Reach groups")
    "se-diagnosis": "an SE issue diagnosis on some visit or problem list",
    "qualifying-service": "an ordinary qualifying service (intervention code + SE diagnosis)",
    "qualifying-claims": "an ordinary qualifying service present in oha-claims",
    "qualifying-ehr": "an ordinary qualifying service present in an EHR",
    "same-service-ehr-and-claim": "one qualifying service recorded both as EHR Encounter and claim",
    "screening-only": "96127 screening only: no SE diagnosis, no intervention",
    "aba-autism": "ABA (97153) with autism F84.0, never counted",
    "service-without-qualifying-diagnosis": "psychotherapy billed with ADHD (F90.x) only",
    "adjusted-claim": "an original EOB and its replacement (related prior / replacedby)",
    # one variant per child with qualifying-looking services (edge rules 5–9)
    "denied-only": "qualifying services only on denied EOBs (header denialreason or denied status)",
    "replaced-only": "qualifying EOB replaced by a non-qualifying one (related prior/replacedby)",
    "preauth-only": "qualifying codes only on Claim.use = preauthorization",
    "claim-judged-by-denied-eob": "qualifying Claim (use claim) adjudicated by a denied EOB (EOB.claim)",
    "cancelled-eob-only": "qualifying EOBs only with status cancelled or entered-in-error",
    "eob-error-only": "qualifying EOBs only with outcome error or queued",
    "line-denied-only": "the qualifying line is denied at line level, other lines paid",
    "dx-secondary-only": "the SE diagnosis is never principal (sequence 1 is another diagnosis)",
    "dx-not-on-line": "header has the SE diagnosis; the qualifying line points at another one",
    "unknown-code-system-only": "the qualifying code only in an unknown code system",
    "line-without-date-only": "the qualifying line has no servicedDate/servicedPeriod",
    "encounter-record-claim": "qualifying services only as Claim.use = claim (CCO encounter records)",
    "partial-outcome": "qualifying EOBs with outcome partial (counts)",
    "serviced-period-across-year": "qualifying line servicedPeriod from late December into January",
    "ehr-cancelled-only": "qualifying Encounter only with status cancelled",
    "ehr-refuted-dx-only": "qualifying Encounter whose SE Condition is refuted",
    "condition-entered-in-error-only": "qualifying Encounter whose SE Condition is entered-in-error",
    "procedure-not-done-only": "qualifying Procedure only with status not-done, no Encounter",
    "ehr-procedure-only": "code only on a completed Procedure (reasonCode SE) of an unmapped visit type",
    "local-visit-type": "Encounter.type carries only the local visit-type code",
    "year-end-utc": "qualifying Encounter at 23:30 local on 31 Dec, written in UTC (next year)",
    "encounter-reason-code-dx": "SE diagnosis only in Encounter.reasonCode (no Condition)",
    "encounter-diagnosis-element": "SE Condition linked through Encounter.diagnosis only",
    "in-progress-encounter-only": "qualifying Encounter only with status in-progress",
    # clinical extras
    "referral-open": "SE referral ServiceRequest active, no service followed",
    "referral-closed": "SE referral ServiceRequest completed; a BH episode followed it",
    "referral-revoked": "SE referral ServiceRequest revoked",
    "problem-list-only-dx": "SE diagnosis only on a problem-list Condition without encounter",
    "partial-recorded-date": "a Condition.recordedDate with month precision (e.g. 2025-03)",
    "encounter-without-diagnosis": "a finished Encounter with no diagnosis at all",
    "encounter-late-night-utc": "an Encounter at 23:30 local written in UTC (next UTC day)",
}

CLAIMS_VARIANTS: Final = (
    "denied-only",
    "replaced-only",
    "preauth-only",
    "claim-judged-by-denied-eob",
    "cancelled-eob-only",
    "eob-error-only",
    "line-denied-only",
    "dx-secondary-only",
    "dx-not-on-line",
    "unknown-code-system-only",
    "line-without-date-only",
    "encounter-record-claim",
    "partial-outcome",
    "serviced-period-across-year",
)
EHR_VARIANTS: Final = (
    "ehr-cancelled-only",
    "ehr-refuted-dx-only",
    "condition-entered-in-error-only",
    "procedure-not-done-only",
    "ehr-procedure-only",
    "local-visit-type",
    "year-end-utc",
    "encounter-reason-code-dx",
    "encounter-diagnosis-element",
    "in-progress-encounter-only",
)
#: Share of children with qualifying-looking services that get an ordinary (counting) history.
_NORMAL_SHARE: Final = 0.55

_COUNTY_CUM: Final = vocab.weights_to_cumulative(vocab.COUNTY_WEIGHTS)
_LANGUAGE_CUM: Final = vocab.weights_to_cumulative(vocab.LANGUAGE_WEIGHTS)
_RACE_CUM: Final = vocab.weights_to_cumulative(vocab.RACE_WEIGHTS)
_INTERVENTION_CODES: Final = tuple(c for c, _w in vocab.INTERVENTIONS)
_INTERVENTION_CUM: Final = vocab.weights_to_cumulative(tuple(w for _c, w in vocab.INTERVENTIONS))
_SE_CODES: Final = tuple(c for c, _w in vocab.SE_DIAGNOSES)
_SE_CUM: Final = vocab.weights_to_cumulative(tuple(w for _c, w in vocab.SE_DIAGNOSES))
_ACUTE_CODES: Final = tuple(c for c, _w in vocab.ACUTE_DX)
_ACUTE_CUM: Final = vocab.weights_to_cumulative(tuple(w for _c, w in vocab.ACUTE_DX))
_SICK_CODES: Final = tuple(c for c, _w in vocab.SICK_VISIT_CODES)
_SICK_CUM: Final = vocab.weights_to_cumulative(tuple(w for _c, w in vocab.SICK_VISIT_CODES))
#: Intervention codes an EHR can send as a local visit type (helpers-common.md crosswalk).
_LOCAL_INTERVENTIONS: Final = ("90832", "90834", "90837", "90847")
_WELL_VISITS_BY_AGE: Final = (6, 4, 2, 1, 1, 1, 1, 1, 1)
_SICK_COUNTS: Final = (1, 2, 2, 3, 3, 4, 4, 5, 6, 7)
#: Local minutes of day of ordinary visits: 07:30 to 17:30.
_DAY_START: Final = 450
_DAY_SPAN: Final = 600
LATE_NIGHT: Final = 23 * 60 + 30
_REFERRAL_TAGS: Final = {
    "completed": "referral-closed",
    "active": "referral-open",
    "revoked": "referral-revoked",
}


@dataclass(frozen=True, slots=True)
class Setup:
    """Cohort-wide parameters, shared by every child plan."""

    seed: int
    patients: int
    first_year: int
    last_year: int
    calendar: Calendar
    key_width: int

    @classmethod
    def build(cls, seed: int, patients: int, first_year: int, last_year: int, zone: str) -> Setup:
        # Births start six years before the first year; coverage may start a year earlier
        # still; claims are created, and UTC instants and coverage ends fall, up to a year after.
        calendar = Calendar.build(first_year - 8, last_year + 1, zone)
        return cls(seed, patients, first_year, last_year, calendar, max(6, len(str(patients - 1))))

    @property
    def years(self) -> range:
        return range(self.first_year, self.last_year + 1)


@dataclass(frozen=True, slots=True)
class Span:
    """One Coverage: days are ordinals, ``end`` None is open-ended."""

    start: int
    end: int | None
    cco: int
    status: str


class Visit(NamedTuple):
    """One contact with care. ``codes[0]`` is the main procedure, ``dx[0]`` the principal.

    A NamedTuple rather than a frozen dataclass: a child has dozens and construction cost
    matters at statewide scale (immutable either way).
    """

    day: int
    minute: int
    site: str  # "a", "b" (EHR sources) or "o" (a provider whose EHR is not a source)
    kind: str  # well, sick, dx, bh, screen, aba
    codes: tuple[str, ...]
    dx: tuple[str, ...]
    provider: int
    qualifying: bool
    variant: str
    claims: bool
    ehr: bool


@dataclass(frozen=True, slots=True)
class Referral:
    """An SE referral authored during visit ``visit`` (an EHR visit)."""

    visit: int
    status: str
    code: int
    dx: str


@dataclass(frozen=True, slots=True)
class Problem:
    """A problem-list Condition without encounter, in EHR ``site``."""

    site: str
    dx: str
    recorded: str


@dataclass(frozen=True, slots=True)
class Child:
    """Everything about one child that the renderers need; days are ordinals.

    ``birth`` is the FHIR ``birthDate`` written (possibly partial or None); ``birth_day`` the
    day used for planning. ``linked_a``/``linked_b``: the EHR Patient carries the member id.
    """

    index: int
    key: str
    member_id: str
    birth: str | None
    birth_day: int
    sex: str
    given: str
    family: str
    race: int
    ethnicity: int
    county: int
    language: int
    deceased: str
    death_day: int | None
    in_claims: bool
    in_a: bool
    in_b: bool
    linked_a: bool
    linked_b: bool
    patient_a: str
    patient_b: str
    spans: tuple[Span, ...]
    payor_reference: bool
    period_style: str
    visits: tuple[Visit, ...]
    referrals: tuple[Referral, ...]
    problems: tuple[Problem, ...]
    tags: tuple[str, ...]
    enrollment_year: int | None
    service_years: tuple[int, ...]

    @property
    def patient_claims(self) -> str:
        return f"oha-{self.key}"


_MASK64: Final = (1 << 64) - 1


def mix64(*values: int) -> int:
    """SplitMix64 finaliser over ``values``: a deterministic 64-bit hash (never ``hash()``)."""
    z = 0x9E3779B97F4A7C15
    for value in values:
        z = (z + (value & _MASK64) + 0x9E3779B97F4A7C15) & _MASK64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        z ^= z >> 31
    return z


def child_random(seed: int, index: int) -> random.Random:
    """The one random stream of child ``index``: its plan, then its rendering."""
    return random.Random(mix64(seed, index, 1))


def membership(seed: int, index: int) -> tuple[bool, bool, bool]:
    """(in oha-claims, in ehr-clinic-a, in ehr-clinic-b) of child ``index``.

    A separate hash, so another child's membership can be known without planning it.
    """
    h = mix64(seed, index, 2)
    u1, u2, u3 = (h & 0xFFFFF) / 0x100000, ((h >> 20) & 0xFFFFF) / 0x100000, ((h >> 40) & 0xFFFFF) / 0x100000
    in_claims = u1 < 0.92
    in_a = u2 < 0.62
    in_b = u3 < (0.12 if in_a else 0.5)
    if not (in_claims or in_a or in_b):
        in_claims = True
    return in_claims, in_a, in_b


def member_id(seed: int, index: int) -> str:
    """Unique per child for fewer than 10^8 children (multiplication by a unit mod 10^8)."""
    return f"OR{(index * 48271 + seed * 7919 + 31_337) % 100_000_000:08d}"


def _pick(cum: tuple[float, ...], x: float) -> int:
    return bisect.bisect_right(cum, x) if x < 1.0 else len(cum) - 1


class _Planner:
    """Draws one child's plan; lives for one child only."""

    def __init__(self, setup: Setup, index: int, rng: random.Random) -> None:
        self.setup = setup
        self.index = index
        self.r = rng.random
        self.tags: set[str] = set()
        self.enrollment_year: int | None = None
        self.service_years: set[int] = set()

    def day_between(self, lo: int, hi: int) -> int:
        return lo + int(self.r() * (hi - lo + 1))

    # -- demographics ------------------------------------------------------------------------
    def birth(self) -> tuple[int, str | None]:
        s, r = self.setup, self.r
        lo = date(s.first_year - 6, 1, 1).toordinal()
        hi = date(s.last_year, 12, 31).toordinal()
        x = r()
        full_date = True
        if x < 0.015:
            year = s.first_year - 6 + int(r() * (s.last_year - s.first_year + 6))
            day = date(year, 12, 31).toordinal()
            self.tags.add("birth-dec-31")
        elif x < 0.03:
            year = s.first_year - 5 + int(r() * (s.last_year - s.first_year + 6))
            day = date(year, 1, 1).toordinal()
            self.tags.add("birth-jan-1")
        else:
            day = self.day_between(lo, hi)
            full_date = False
        full = s.calendar.day(day)
        text: str | None = full
        if not full_date:
            y = r()
            if y < 0.012:
                text = full[:4]
                self.tags.add("birth-year-only")
            elif y < 0.024:
                text = full[:7]
                self.tags.add("birth-year-month")
            elif y < 0.03:
                text = None
                self.tags.add("no-birth-date")
        if day >= date(s.first_year, 1, 1).toordinal():
            self.tags.add("born-during-year")
        return day, text

    def death(self, birth_day: int) -> tuple[str, int | None]:
        s, r = self.setup, self.r
        if r() >= 0.006:
            return "", None
        lo = max(birth_day + 30, date(s.first_year, 1, 1).toordinal())
        hi = date(s.last_year, 12, 31).toordinal()
        if lo > hi:
            return "", None
        day = self.day_between(lo, hi)
        if r() < 0.7:
            self.tags.add("deceased-datetime")
            return "datetime", day
        self.tags.add("deceased-boolean")
        return "boolean", day

    # -- enrollment --------------------------------------------------------------------------
    def scenario_day(self, year: int, birth_day: int, earliest_month: int = 2) -> int | None:
        """A day in ``year`` between February (or a month after birth) and mid October."""
        lo = max(date(year, earliest_month, 1).toordinal(), birth_day + 30)
        hi = date(year, 10, 15).toordinal()
        if lo > hi:
            return None
        return self.day_between(lo, hi)

    def spans(self, birth_day: int, county: int) -> tuple[Span, ...]:
        s, r, tags = self.setup, self.r, self.tags
        ccos = vocab.COUNTIES[county][2]
        cco = ccos[int(r() * len(ccos))]
        other = (cco + 1 + int(r() * (len(vocab.CCOS) - 1))) % len(vocab.CCOS)
        window_start = date(s.first_year, 1, 1).toordinal()
        if birth_day >= window_start - 365 or r() < 0.5:
            start = birth_day
            if birth_day >= window_start:
                tags.add("enrolled-since-birth")
        else:
            start = self.day_between(birth_day, window_start - 1)
        y = r()
        if y < 0.6:
            end: int | None = None
        elif y < 0.85:
            end = date(s.last_year, 12, 31).toordinal()
        else:
            end = date(s.last_year + 1, 6, 30).toordinal()

        years = list(s.years)
        year = years[int(r() * len(years))]
        birth_year = date.fromordinal(birth_day).year
        year = max(year, birth_year)
        g = self.scenario_day(year, birth_day)
        x = r()
        spans: list[Span]
        tag = "continuous-enrollment"
        if g is None or x >= 0.40:
            spans = [Span(start, end, cco, "active")]
        elif x < 0.04:
            spans, tag = self.gap(start, end, cco, g, 30), "gap-30"
        elif x < 0.08:
            spans, tag = self.gap(start, end, cco, g, 45), "gap-45"
        elif x < 0.12:
            spans, tag = self.gap(start, end, cco, g, 46), "gap-46"
        elif x < 0.16:
            spans, tag = self.two_gaps(start, end, cco, g), "two-gaps"
        elif x < 0.22:
            spans = [Span(start, g - 1, cco, "active"), Span(g, end, other, "active")]
            tag = "cco-switch"
        elif x < 0.27:
            spans, tag = [Span(max(start, g), end, cco, "active")], "enrolled-mid-year"
        elif x < 0.32:
            spans, tag = [Span(start, g, cco, "active")], "disenrolled-before-anchor"
        elif x < 0.35:
            late = self.day_between(date(year, 9, 1).toordinal(), date(year, 11, 30).toordinal())
            spans = [Span(start, end, cco, "active"), Span(max(late, start), end, other, "active")]
            tag = "two-ccos-on-anchor"
        else:
            overlap = int(r() * 20) if r() < 0.5 else 0
            spans = [Span(start, g - 1 + overlap, cco, "active"), Span(g, end, cco, "active")]
            tag = "adjacent-spans"
        tags.add(tag)
        if tag != "continuous-enrollment":
            self.enrollment_year = year
        if tag.startswith("gap-") and r() < 0.4:
            gap_span = spans[0]
            assert gap_span.end is not None
            spans.append(Span(gap_span.end + 1, spans[1].start - 1, cco, "cancelled"))
            tags.add("cancelled-coverage")
        if r() < 0.025:
            spans.append(Span(date(year, 1, 1).toordinal(), date(year, 12, 31).toordinal(), other, "draft"))
            tags.add("draft-coverage")
        if r() < 0.03:
            tags.add("retro-enrollment")
        spans.sort(key=lambda sp: (sp.start, sp.cco, sp.status))
        return tuple(spans)

    @staticmethod
    def gap(start: int, end: int | None, cco: int, g: int, days: int) -> list[Span]:
        """Uncovered days g … g+days-1 (HEDIS gap days, spec §3)."""
        return [Span(start, g - 1, cco, "active"), Span(g + days, end, cco, "active")]

    @staticmethod
    def two_gaps(start: int, end: int | None, cco: int, g: int) -> list[Span]:
        h = g + 10 + 40
        return [
            Span(start, g - 1, cco, "active"),
            Span(g + 10, h - 1, cco, "active"),
            Span(h + 20, end, cco, "active"),
        ]


class _Add(Protocol):
    def __call__(
        self,
        day: int,
        kind: str,
        codes: tuple[str, ...],
        dx: tuple[str, ...],
        where: str,
        *,
        qualifying: bool,
    ) -> int: ...


class _Site(Protocol):
    def __call__(self) -> str: ...


def _enrolled(spans: tuple[Span, ...], day: int) -> bool:
    for sp in spans:
        if sp.status == "active" and sp.start <= day and (sp.end is None or day <= sp.end):
            return True
    return False


def plan_child(setup: Setup, index: int, rng: random.Random | None = None) -> Child:
    """Draw the complete plan of child ``index`` from ``rng`` (default: :func:`child_random`).

    Renderers continue drawing from the same stream after planning.
    """
    p = _Planner(setup, index, child_random(setup.seed, index) if rng is None else rng)
    r, tags = p.r, p.tags
    in_claims, in_a, in_b = membership(setup.seed, index)
    key = f"{index:0{setup.key_width}d}"

    birth_day, birth = p.birth()
    deceased, death_day = p.death(birth_day)
    female = r() < 0.5
    x = r()
    sex = "female" if female else "male"
    if x < 0.012:
        sex = "unknown"
    elif x < 0.016:
        sex = "other"
    given_pool = vocab.GIVEN_FEMALE if female else vocab.GIVEN_MALE
    given = given_pool[int(r() * len(given_pool))]
    family = vocab.FAMILY[int(r() * len(vocab.FAMILY))]
    county = _pick(_COUNTY_CUM, r())
    language = _pick(_LANGUAGE_CUM, r())
    race = _pick(_RACE_CUM, r()) if r() < 0.7 else -1
    hispanic = r() < (0.9 if language == 1 else 0.12)
    ethnicity = (0 if hispanic else 1) if r() < 0.75 else -1

    linked_a = in_claims and (r() >= 0.06)
    linked_b = in_claims and (r() >= 0.06)
    if in_claims and ((in_a and not linked_a) or (in_b and not linked_b)):
        tags.add("unlinked-ehr")
    patient_a = f"{1_000_000 + index}"
    patient_b = f"p{2_000_000 + index}"
    if in_b and r() < 0.04:
        partner = index ^ 1
        if partner < setup.patients and membership(setup.seed, partner)[1]:
            patient_b = f"{1_000_000 + partner}"
            tags.add("ehr-id-collision")
    if in_claims and (in_a or in_b):
        tags.add("claims-and-ehr")
    if in_a and in_b:
        tags.add("in-both-ehrs")
    if not in_claims:
        tags.add("ehr-only")
    elif not (in_a or in_b):
        tags.add("claims-only")

    spans: tuple[Span, ...] = ()
    payor_reference = False
    period_style = "date"
    if in_claims:
        spans = p.spans(birth_day, county)
        payor_reference = r() < 0.12
        if payor_reference:
            tags.add("payor-organization-reference")
        y = r()
        if y < 0.08:
            period_style = "datetime"
        elif y < 0.12:
            period_style = "utc"
        if period_style != "date":
            tags.add("coverage-datetime-period")

    visits, referrals, problems = _plan_services(p, in_claims, in_a, in_b, spans, birth_day, death_day)
    service_years = tuple(sorted(p.service_years))
    return Child(
        index=index,
        key=key,
        member_id=member_id(setup.seed, index),
        birth=birth,
        birth_day=birth_day,
        sex=sex,
        given=given,
        family=family,
        race=race,
        ethnicity=ethnicity,
        county=county,
        language=language,
        deceased=deceased,
        death_day=death_day,
        in_claims=in_claims,
        in_a=in_a,
        in_b=in_b,
        linked_a=linked_a,
        linked_b=linked_b,
        patient_a=patient_a,
        patient_b=patient_b,
        spans=spans,
        payor_reference=payor_reference,
        period_style=period_style,
        visits=visits,
        referrals=referrals,
        problems=problems,
        tags=tuple(sorted(tags)),
        enrollment_year=p.enrollment_year,
        service_years=service_years,
    )


def _plan_services(
    p: _Planner,
    in_claims: bool,
    in_a: bool,
    in_b: bool,
    spans: tuple[Span, ...],
    birth_day: int,
    death_day: int | None,
) -> tuple[tuple[Visit, ...], tuple[Referral, ...], tuple[Problem, ...]]:
    """Visits per year: well-child schedule, sick visits, SE diagnoses and BH episodes."""
    s, r, tags = p.setup, p.r, p.tags
    in_ehr = in_a or in_b
    home = "a" if in_a else ("b" if in_b else "o")

    # Child-level service traits.
    variant = ""
    if r() >= _NORMAL_SHARE:
        pool = (CLAIMS_VARIANTS if in_claims else ()) + (EHR_VARIANTS if in_ehr else ())
        variant = pool[int(r() * len(pool))]
    variant_is_ehr = variant in EHR_VARIANTS
    trait = r()
    aba = trait < 0.02
    adhd = 0.02 <= trait < 0.04
    screening_only = 0.04 <= trait < 0.08
    se_rate = 0.0 if screening_only else 0.25

    raw: list[Visit] = []
    referrals: list[Referral] = []
    problems: list[Problem] = []

    def site() -> str:
        if in_a and in_b:
            return "a" if r() < 0.6 else "b"
        if in_ehr:
            return home if r() < 0.9 else "o"
        return "o"

    def add(
        day: int, kind: str, codes: tuple[str, ...], dx: tuple[str, ...], where: str, *, qualifying: bool
    ) -> int:
        minute = _DAY_START + 15 * int(r() * (_DAY_SPAN // 15))
        pool_size = vocab.OTHER_PROVIDERS if where == "o" else vocab.PRACTITIONERS_PER_EHR
        bh = kind in ("bh", "aba")
        half = pool_size // 2
        provider = half + int(r() * half) if bh else int(r() * half)
        vvariant = variant if qualifying else ""
        in_ehr_site = (where == "a" and in_a) or (where == "b" and in_b)
        enrolled = in_claims and _enrolled(spans, day)
        if qualifying and variant:
            if variant_is_ehr:
                to_claims, to_ehr = False, in_ehr_site
            else:
                to_claims, to_ehr = in_claims, False
        else:
            to_claims, to_ehr = enrolled, in_ehr_site
        if vvariant == "year-end-utc":
            minute = LATE_NIGHT
        raw.append(
            Visit(day, minute, where, kind, codes, dx, provider, qualifying, vvariant, to_claims, to_ehr)
        )
        return len(raw) - 1

    birth_year = date.fromordinal(birth_day).year
    for year in s.years:
        y0 = date(year, 1, 1).toordinal()
        y1 = date(year, 12, 31).toordinal()
        lo = max(y0, birth_day)
        hi = min(y1, death_day) if death_day is not None else y1
        if lo > hi:
            continue
        age = year - birth_year
        # Well-child visits (not counted; 96110/96127 screening lines sometimes).
        n_well = _WELL_VISITS_BY_AGE[min(age, len(_WELL_VISITS_BY_AGE) - 1)]
        for _ in range(n_well):
            if r() < 0.85:
                day = p.day_between(lo, hi)
                visit_age = age - (1 if day - y0 < birth_day - date(birth_year, 1, 1).toordinal() else 0)
                main = "99391" if visit_age < 1 else ("99392" if visit_age < 5 else "99393")
                if r() < 0.08:
                    main = "99381" if visit_age < 1 else ("99382" if visit_age < 5 else "99383")
                codes: tuple[str, ...] = (main,)
                dxs: tuple[str, ...] = (vocab.WELL_DX[0] if r() < 0.9 else vocab.WELL_DX[1],)
                if r() < (0.6 if age < 2 else 0.25):
                    codes += (vocab.VACCINE_ADMIN,)
                    dxs += ("Z23",)
                if age < 3 and r() < 0.5:
                    codes += ("96110",)
                if r() < 0.15:
                    codes += ("96127",)
                add(day, "well", codes, dxs, site(), qualifying=False)
        # Sick visits.
        for _ in range(_SICK_COUNTS[int(r() * len(_SICK_COUNTS))] + (1 if age < 2 else 0)):
            day = p.day_between(lo, hi)
            dxs = (_ACUTE_CODES[_pick(_ACUTE_CUM, r())],)
            if r() < 0.5:
                dxs += (_ACUTE_CODES[_pick(_ACUTE_CUM, r())],)
                if dxs[0] == dxs[1]:
                    dxs = dxs[:1]
            add(day, "sick", (_SICK_CODES[_pick(_SICK_CUM, r())],), dxs, site(), qualifying=False)
        if screening_only and r() < 0.8:
            day = p.day_between(lo, hi)
            add(day, "screen", ("96127",), (vocab.SCREENING_DX,), site(), qualifying=False)
            tags.add("screening-only")
        if aba and age >= 2:
            start = p.day_between(lo, hi)
            where = site()
            add(start, "aba", (vocab.ABA_ASSESSMENT,), (vocab.AUTISM,), where, qualifying=False)
            for k in range(1, 4 + int(r() * 8)):
                if start + 7 * k <= hi:
                    add(start + 7 * k, "aba", (vocab.ABA,), (vocab.AUTISM,), where, qualifying=False)
            tags.add("aba-autism")
            if in_ehr and r() < 0.5:
                problems.append(Problem(home, vocab.AUTISM, s.calendar.day(start)))
        if adhd and age >= 3:
            start = p.day_between(lo, hi)
            where = site()
            dx_adhd = vocab.ADHD[int(r() * 2)]
            for k in range(1 + int(r() * 5)):
                if start + 7 * k <= hi:
                    add(start + 7 * k, "bh", ("90834",), (dx_adhd,), where, qualifying=False)
            tags.add("service-without-qualifying-diagnosis")
        # SE diagnosis and, for most of those children, a qualifying episode.
        if age < 1 or r() >= se_rate:
            continue
        tags.add("se-diagnosis")
        dx = _SE_CODES[_pick(_SE_CUM, r())]
        qualifying = r() < 0.6
        if not qualifying and in_ehr and r() < 0.12:
            recorded = s.calendar.day(p.day_between(lo, hi))
            if r() < 0.3:
                recorded = recorded[:7]
                tags.add("partial-recorded-date")
            problems.append(Problem(home, dx, recorded))
            tags.add("problem-list-only-dx")
            continue
        dx_day = p.day_between(lo, max(lo, hi - 30) if qualifying else hi)
        dx_site = home if in_ehr and r() < 0.85 else site()
        dx_codes: tuple[str, ...] = ("99213",) + (("96127",) if r() < 0.4 else ())
        dx_visit = add(
            dx_day, "dx", dx_codes, (dx, _ACUTE_CODES[_pick(_ACUTE_CUM, r())]), dx_site, qualifying=False
        )
        if in_ehr and dx_site == home and r() < 0.3:
            recorded = s.calendar.day(dx_day)
            if r() < 0.3:
                recorded = recorded[:7]
                tags.add("partial-recorded-date")
            problems.append(Problem(home, dx, recorded))
        referral_status = ""
        if in_ehr and dx_site == home and r() < 0.6:
            referral_status = "completed" if qualifying else ("revoked" if r() < 0.15 else "active")
        if qualifying:
            p.service_years.add(year)
            _plan_episode(p, add, site, variant, dx, dx_day, hi, year, home if in_ehr else "o")
        if referral_status:
            referrals.append(Referral(dx_visit, referral_status, int(r() * len(vocab.REFERRAL_CODES)), dx))

    # Chronological order (ties keep planning order); referrals follow their visit.
    order = sorted(range(len(raw)), key=lambda i: (raw[i].day, raw[i].minute, i))
    position = {old: new for new, old in enumerate(order)}
    visits = [raw[i] for i in order]
    referrals = [
        Referral(position[ref.visit], ref.status, ref.code, ref.dx) for ref in referrals if raw[ref.visit].ehr
    ]
    for ref in referrals:
        tags.add(_REFERRAL_TAGS[ref.status])
    _tag_services(p, visits, variant)
    return tuple(visits), tuple(referrals), tuple(problems)


def _plan_episode(
    p: _Planner,
    add: _Add,
    site: _Site,
    variant: str,
    dx: str,
    dx_day: int,
    hi: int,
    year: int,
    bh_home: str,
) -> None:
    """A BH episode after the diagnosis visit: optional intake, then weekly sessions."""
    r = p.r
    where = bh_home if bh_home != "o" and r() < 0.5 else site()
    if variant in EHR_VARIANTS:
        where = bh_home
    start = min(hi, dx_day + 7 + int(r() * 40))
    if variant in ("year-end-utc", "serviced-period-across-year"):
        # One session in the last days of December (none if the child died before).
        last = date(year, 12, 31).toordinal()
        if hi < last:
            return
        start = hi = last if variant == "year-end-utc" else last - 2
    if r() < 0.6 and start + 7 <= hi:
        add(start, "bh", ("90791",), (dx,), where, qualifying=False)
        start += 7
    if variant in ("local-visit-type", "ehr-procedure-only"):
        main = _LOCAL_INTERVENTIONS[int(r() * len(_LOCAL_INTERVENTIONS))]
    else:
        main = _INTERVENTION_CODES[_pick(_INTERVENTION_CUM, r())]
    sessions = 1 + int(r() * 8)
    day = start
    for _ in range(sessions):
        if day > hi:
            break
        code = main if r() < 0.8 or variant else _INTERVENTION_CODES[_pick(_INTERVENTION_CUM, r())]
        add(day, "bh", (code,), (dx,), where, qualifying=True)
        day += 5 + int(r() * 10)


def _tag_services(p: _Planner, visits: list[Visit], variant: str) -> None:
    """Tags that depend on which visits actually reached a source."""
    tags = p.tags
    emitted = [v for v in visits if v.qualifying and (v.claims or v.ehr)]
    if not emitted:
        return
    if variant:
        tags.add(variant)
        return
    tags.add("qualifying-service")
    for v in emitted:
        if v.claims:
            tags.add("qualifying-claims")
        if v.ehr:
            tags.add("qualifying-ehr")
        if v.claims and v.ehr:
            tags.add("same-service-ehr-and-claim")
