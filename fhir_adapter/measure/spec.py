"""The measure specification model: what ``mappings/`` says, as immutable values.

``fhir_adapter.mappings`` builds these from TOML and CSV files; the engine only reads them.
Every rule carries ``status`` (``verified`` | ``assumption`` | ``official``) and ``source`` so a
report can say which rules are OHA's and which are this project's defaults
(spec §3, "Nothing tagged [A] may be presented to users as the OHA specification").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Literal

MatchKind = Literal["exact", "prefix"]
DiagnosisPosition = Literal["any", "primary", "line"]
EnrollmentScope = Literal["same-cco", "any-cco"]
SourceMode = Literal["claims", "all"]

RULE_STATUSES = ("verified", "assumption", "official")
CODE_STATUSES = ("candidate", "verified", "official")
STRATIFIER_IDS = ("cco", "age", "age-band", "sex", "race-ethnicity", "language", "disability", "county")


@dataclass(frozen=True)
class Provenance:
    """Where a rule or a row comes from and how sure we are of it."""

    status: str
    source: str


@dataclass(frozen=True)
class CodeRow:
    """One row of a value-set CSV; ``system`` is canonical, ``code`` normalised."""

    system: str
    code: str
    match: MatchKind
    valid_from: date | None
    valid_to: date | None
    display: str
    provenance: Provenance
    #: ``file:line`` the row came from, for messages.
    location: str = ""


@dataclass(frozen=True)
class ValueSet:
    name: str
    title: str
    rows: tuple[CodeRow, ...]
    path: str = ""


@dataclass(frozen=True)
class AgeRule:
    """Whole years on the anchor day (the last day of the period)."""

    min_age: int
    max_age: int
    provenance: Provenance


@dataclass(frozen=True)
class AgeBand:
    code: str
    min_age: int
    max_age: int
    provenance: Provenance = Provenance("assumption", "spec §2 stratifier age-band")


@dataclass(frozen=True)
class EnrollmentRule:
    """Continuous enrollment: anchor on the period end, at most ``max_gaps`` gaps of
    at most ``max_gap_days`` days in all (spec §3 "Enrollment and attribution")."""

    scope: EnrollmentScope
    max_gaps: int
    max_gap_days: int
    provenance: Provenance


@dataclass(frozen=True)
class Exclusion:
    """A denominator exclusion. ``id`` is ``death`` or ``hospice``."""

    id: str
    enabled: bool
    provenance: Provenance
    valueset: str | None = None


@dataclass(frozen=True)
class ServiceCriterion:
    """A qualifying service: a procedure in ``procedures`` and, when ``diagnoses`` is set, a
    diagnosis in it on the same claim or encounter at ``diagnosis_position``."""

    procedures: str
    diagnoses: str | None
    diagnosis_position: DiagnosisPosition


@dataclass(frozen=True)
class Group:
    id: str
    title: str
    description: str
    numerator: ServiceCriterion
    #: When set, the denominator is the initial population with a qualifying diagnosis in this
    #: value set dated in the period (spec §3, Edge rule 9).
    need_diagnoses: str | None
    provenance: Provenance


@dataclass(frozen=True)
class MeasureSpec:
    id: str
    year: int
    version: str
    title: str
    description: str
    provenance: Provenance
    age: AgeRule
    age_bands: tuple[AgeBand, ...]
    enrollment: EnrollmentRule
    exclusions: tuple[Exclusion, ...]
    groups: tuple[Group, ...]
    stratifiers: tuple[str, ...]
    valuesets: Mapping[str, ValueSet]
    #: sha256 over the files this spec was read from and the shared tables.
    hash: str = ""
    path: str = ""

    def exclusion(self, exclusion_id: str) -> Exclusion | None:
        return next((e for e in self.exclusions if e.id == exclusion_id), None)


@dataclass(frozen=True)
class CodeSystem:
    """A canonical code system and how its codes are normalised before matching."""

    uri: str
    name: str
    #: ``icd`` (upper-case, dots and spaces removed), ``upper`` or ``none``.
    normalise: Literal["icd", "upper", "none"]


@dataclass(frozen=True)
class Cco:
    id: str
    name: str
    #: (identifier system, value) pairs that name this CCO in Coverage.payor / extracts.
    identifiers: tuple[tuple[str, str], ...]
    provenance: Provenance


@dataclass(frozen=True)
class LocalCode:
    """A local code (e.g. an EHR visit type) that stands for a standard code."""

    system: str
    code: str
    target_system: str
    target_code: str
    provenance: Provenance


@dataclass(frozen=True)
class Mappings:
    """Everything under one ``mappings/`` folder."""

    systems: Mapping[str, CodeSystem]
    #: alias URI (as it arrives) -> canonical URI
    aliases: Mapping[str, str]
    ccos: tuple[Cco, ...]
    local_codes: tuple[LocalCode, ...]
    #: (measure id, year) -> spec
    measures: Mapping[tuple[str, int], MeasureSpec] = field(default_factory=dict)
    hash: str = ""

    def measure_for(self, measure_id: str, period_end: date) -> MeasureSpec:
        """The version of the year the period's end falls in (spec §2); else the latest earlier
        year. Raises ``KeyError`` when none applies."""
        years = sorted(y for (m, y) in self.measures if m == measure_id and y <= period_end.year)
        if not years:
            raise KeyError(measure_id)
        return self.measures[(measure_id, years[-1])]
