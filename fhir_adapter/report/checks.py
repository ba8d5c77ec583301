"""Our own checks of MeasureReports against Da Vinci DEQM STU5 and against the Measure they report.

No HL7 validator runs here (DESIGN.md §5), so these pure functions are what "DEQM-conformant" means
in this project. Each check's docstring names the invariant or profile element it enforces and its
source:

- Da Vinci DEQM STU5 (5.0.0), ``HL7/davinci-deqm`` ``input/resources/``:
  ``StructureDefinition-indv-measurereport-deqm`` (individual), ``-summary-measurereport-deqm``,
  ``-subjectlist-measurereport-deqm``, ``-datax-measurereport-deqm`` (data exchange, R4 type
  ``data-collection``); invariants deqm-0 … deqm-9 as stated there and in
  shared/spec/fhir-contract.md "MeasureReport".
- CQF Measures STU5 (``HL7/cqf-measures``) for the proportion semantics: DEN ⊆ IP, numerator
  evaluated on DEN − DENEX, score = NUMER / (DEN − DENEX); patient-based measures
  (``cqfm-populationBasis = boolean``) count each subject 0 or 1 in an individual report.

Only what is written here is checked: slicing of extensions other than those named, terminology
bindings and the base R4 structure are left to the base validators (tests/validators/).

Every violation is one string ``"<rule>: <FHIRPath-like location>: <what is wrong>"``; the empty
list means the report passed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: R4 MeasureReport.type codes (http://hl7.org/fhir/R4/valueset-measure-report-type.html).
REPORT_TYPES = ("individual", "subject-list", "summary", "data-collection")

#: DEQM STU5 profile canonicals, by R4 MeasureReport.type.
PROFILE_BY_TYPE: Mapping[str, str] = {
    "individual": "http://hl7.org/fhir/us/davinci-deqm/StructureDefinition/indv-measurereport-deqm",
    "summary": "http://hl7.org/fhir/us/davinci-deqm/StructureDefinition/summary-measurereport-deqm",
    "subject-list": "http://hl7.org/fhir/us/davinci-deqm/StructureDefinition/subjectlist-measurereport-deqm",
    "data-collection": "http://hl7.org/fhir/us/davinci-deqm/StructureDefinition/datax-measurereport-deqm",
}

MEASURE_SCORING_EXT = "http://hl7.org/fhir/us/davinci-deqm/StructureDefinition/extension-measureScoring"
GROUP_IMPROVEMENT_NOTATION_EXT = (
    "http://hl7.org/fhir/us/davinci-deqm/StructureDefinition/extension-groupImprovementNotation"
)
COUNT_QUANTITY_EXT = "http://hl7.org/fhir/StructureDefinition/measurereport-countQuantity"
#: A count withheld by small-cell suppression (:mod:`fhir_adapter.report.suppression`): the ``count``
#: primitive carries only this extension with ``valueCode`` ``masked`` (R4 "Using extensions to convey
#: missing values"), so the element is present (DEQM ``count 1..1``) without a value.
DATA_ABSENT_REASON_EXT = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
SUBMIT_DATA_UPDATE_TYPE_EXT = (
    "http://hl7.org/fhir/us/davinci-deqm/StructureDefinition/extension-submitDataUpdateType"
)
SUBMIT_DATA_UPDATE_TYPES = ("incremental", "snapshot")
#: ``evaluatedResource`` criteria reference. DEQM STU5's individual profile slices
#: ``evaluatedResource.extension:criteriaReference`` on the core ``cqf-criteriaReference`` (DEQM's own
#: ``extension-criteriaReference`` is deprecated "in favor of cqf-criteriaReference"); the CQFM
#: ``cqfm-criteriaReference`` of earlier releases is accepted too.
CRITERIA_REFERENCE_EXTS = (
    "http://hl7.org/fhir/StructureDefinition/cqf-criteriaReference",
    "http://hl7.org/fhir/us/cqfmeasures/StructureDefinition/cqfm-criteriaReference",
)
MEASURE_POPULATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/measure-population"
MEASURE_SCORING_SYSTEM = "http://terminology.hl7.org/CodeSystem/measure-scoring"

IP = "initial-population"
DEN = "denominator"
DENEX = "denominator-exclusion"
DENEXCEP = "denominator-exception"
NUMER = "numerator"
NUMEX = "numerator-exclusion"

#: A reported score may be rounded; one that differs from the exact proportion by no more than half a
#: unit in the 4th decimal is accepted (UNVERIFIED: the IGs set no precision; this is ours).
SCORE_TOLERANCE = 0.5e-4 + 1e-12

_DAY_PRECISION = re.compile(r"^\d{4}-\d{2}-\d{2}")

Json = Mapping[str, Any]


@dataclass(frozen=True)
class _MeasurePopulation:
    id: str
    code: str


@dataclass(frozen=True)
class _MeasureStratifier:
    id: str
    code: tuple[tuple[str, str], ...]
    text: str


@dataclass(frozen=True)
class _MeasureGroup:
    id: str
    populations: tuple[_MeasurePopulation, ...]
    stratifiers: tuple[_MeasureStratifier, ...]


# --------------------------------------------------------------------------------------------------
# small readers (a report is untrusted JSON: every access tolerates a wrong type)


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else []


def _dicts(value: Any) -> list[Json]:
    return [v for v in _list(value) if isinstance(v, Mapping)]


def _extensions(element: Json, url: str) -> list[Json]:
    return [e for e in _dicts(element.get("extension")) if e.get("url") == url]


def _codings(concept: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(concept, Mapping):
        return ()
    return tuple(
        sorted(
            (str(c.get("system", "")), str(c.get("code", "")))
            for c in _dicts(concept.get("coding"))
            if c.get("code") is not None
        )
    )


def _population_code(population: Json) -> str | None:
    """The measure-population code of a (group or stratum) population, or ``None``."""
    codes = [code for system, code in _codings(population.get("code")) if system == MEASURE_POPULATION_SYSTEM]
    return codes[0] if len(codes) == 1 else None


def _count(population: Json) -> int | None:
    count = population.get("count")
    if isinstance(count, bool) or not isinstance(count, int):
        return None
    return count


def _masked(population: Json) -> bool:
    """The population's ``count`` is present only as a data-absent-reason ``masked`` (suppressed)."""
    primitive = population.get("_count")
    if "count" in population or not isinstance(primitive, Mapping):
        return False
    return any(ext.get("valueCode") == "masked" for ext in _extensions(primitive, DATA_ABSENT_REASON_EXT))


def _score(element: Json) -> float | None:
    score = element.get("measureScore")
    if not isinstance(score, Mapping):
        return None
    value = score.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    return float(value)


def _counts_by_code(populations: Iterable[Json]) -> dict[str, int]:
    out: dict[str, int] = {}
    for population in populations:
        code = _population_code(population)
        count = _count(population)
        if code is not None and count is not None:
            out[code] = count
    return out


def _scoring_codes(element: Json) -> list[str]:
    return [
        code
        for ext in _extensions(element, MEASURE_SCORING_EXT)
        for system, code in _codings(ext.get("valueCodeableConcept"))
        if system == MEASURE_SCORING_SYSTEM
    ]


# --------------------------------------------------------------------------------------------------
# the Measure side


def _measure_groups(measure: Json) -> tuple[_MeasureGroup, ...]:
    groups = []
    for group in _dicts(measure.get("group")):
        populations = tuple(
            _MeasurePopulation(str(p.get("id", "")), _population_code(p) or "")
            for p in _dicts(group.get("population"))
        )
        stratifiers = tuple(
            _MeasureStratifier(
                str(s.get("id", "")),
                _codings(s.get("code")),
                str(s.get("code", {}).get("text", "")) if isinstance(s.get("code"), Mapping) else "",
            )
            for s in _dicts(group.get("stratifier"))
        )
        groups.append(_MeasureGroup(str(group.get("id", "")), populations, stratifiers))
    return tuple(groups)


def _measure_scoring(measure: Json) -> str | None:
    codes = [code for system, code in _codings(measure.get("scoring")) if system == MEASURE_SCORING_SYSTEM]
    return codes[0] if codes else None


# --------------------------------------------------------------------------------------------------
# public entry points


def check_measure_report(
    report: Mapping[str, Any], measure: Mapping[str, Any], *, suppressed: bool = False
) -> list[str]:
    """Every DEQM STU5 and Measure-consistency violation of ``report``; ``[]`` when it passes.

    ``measure`` is the FHIR R4 Measure the report claims to report (as built by
    :func:`fhir_adapter.report.conformance.build_measure`). ``suppressed=True`` says small cells were
    suppressed in this (summary) report, so strata need not add up to their group (spec §4,
    "Optional small-cell suppression"); every other rule still applies.
    """
    if report.get("resourceType") != "MeasureReport":
        return [f"type: resourceType is {report.get('resourceType')!r}, expected 'MeasureReport'"]
    report_type = report.get("type")
    if report_type not in REPORT_TYPES:
        return [
            f"type: MeasureReport.type {report_type!r} is not one of the R4 codes {', '.join(REPORT_TYPES)}"
        ]
    out: list[str] = []
    out += _check_profile_claim(report, str(report_type))
    out += _check_measure_reference(report, measure, str(report_type))
    out += _check_period(report)
    out += _check_header(report, str(report_type))
    if report_type == "data-collection":
        out += _check_data_collection(report)
    else:
        out += _check_scoring(report, measure)
        out += _check_group_structure(report)
    out += _check_against_measure(report, measure, str(report_type))
    out += _check_counts(report, str(report_type), suppressed=suppressed)
    if report_type == "individual":
        out += _check_individual(report, measure)
    elif report_type == "summary":
        out += _check_summary(report)
    elif report_type == "subject-list":
        out += _check_subject_list(report)
    return out


def check_list_entries(
    list_resource: Mapping[str, Any],
    reports: Sequence[Mapping[str, Any]],
    *,
    group_id: str | None = None,
    population_code: str | None = None,
) -> list[str]:
    """Check a subject-list ``List``: its entries are individual MeasureReports, not Patients.

    DEQM STU5 subject-list profile: ``group.population.subjectResults`` references a List whose
    entries are individual MeasureReports (``indv-measurereport-list``); DESIGN.md §5 names "Lists
    of Patients" as a known peer pitfall. Each ``entry.item.reference`` must be
    ``MeasureReport/<id>`` (relative, or absolute ending so) and resolve to one of ``reports`` whose
    ``type`` is ``individual``; entries are not repeated. With ``group_id`` and ``population_code``
    the referenced reports must also count 1 in that population (the List is that population's
    membership).
    """
    if list_resource.get("resourceType") != "List":
        return [f"subject-list: resourceType is {list_resource.get('resourceType')!r}, expected 'List'"]
    out = [f"subject-list: {problem}" for problem in _entry_reference_errors(list_resource)]
    by_id = {str(r.get("id")): r for r in reports if r.get("resourceType") == "MeasureReport"}
    seen: set[str] = set()
    for i, entry in enumerate(_dicts(list_resource.get("entry"))):
        where = f"List.entry[{i}].item"
        report_id = _report_id(entry)
        if report_id is None:
            continue
        reference = entry["item"]["reference"]
        if report_id in seen:
            out.append(f"subject-list: {where}: {reference!r} is listed twice")
            continue
        seen.add(report_id)
        target = by_id.get(report_id)
        if target is None:
            out.append(f"subject-list: {where}: {reference!r} is not among the given MeasureReports")
            continue
        if target.get("type") != "individual":
            out.append(
                f"subject-list: {where}: {reference!r} has type {target.get('type')!r}, expected 'individual'"
            )
            continue
        if group_id is not None and population_code is not None:
            groups = [g for g in _dicts(target.get("group")) if g.get("id") == group_id]
            counts = _counts_by_code(_dicts(groups[0].get("population"))) if groups else {}
            if counts.get(population_code) != 1:
                out.append(
                    f"subject-list: {where}: {reference!r} does not count 1 in {group_id}/{population_code}"
                )
    return out


def _report_id(entry: Json) -> str | None:
    """The MeasureReport id a List entry references, or ``None`` when it references anything else."""
    item = entry.get("item")
    reference = item.get("reference") if isinstance(item, Mapping) else None
    if not isinstance(reference, str):
        return None
    parts = reference.split("/")
    return parts[-1] if len(parts) >= 2 and parts[-2] == "MeasureReport" and parts[-1] else None


def _entry_reference_errors(list_resource: Json) -> list[str]:
    """Entries of a subject list that do not reference a MeasureReport (e.g. Patients)."""
    out = []
    for i, entry in enumerate(_dicts(list_resource.get("entry"))):
        if _report_id(entry) is None:
            item = entry.get("item")
            reference = item.get("reference") if isinstance(item, Mapping) else None
            out.append(
                f"List.entry[{i}].item: references {reference!r}, expected an individual MeasureReport"
            )
    return out


# --------------------------------------------------------------------------------------------------
# header, profile, measure, period


def _check_profile_claim(report: Json, report_type: str) -> list[str]:
    """A ``meta.profile`` claim, when present, names the DEQM profile of the report's type.

    DEQM STU5 profiles (canonicals in :data:`PROFILE_BY_TYPE`); claiming another DEQM
    MeasureReport profile than the one the ``type`` fixes is a contradiction.
    """
    meta = report.get("meta")
    profiles = [str(p) for p in _list(meta.get("profile"))] if isinstance(meta, Mapping) else []
    wrong = [p for p in profiles if p in PROFILE_BY_TYPE.values() and p != PROFILE_BY_TYPE[report_type]]
    return [f"profile: MeasureReport.meta.profile claims {p} for a {report_type} report" for p in wrong]


def _check_measure_reference(report: Json, measure: Json, report_type: str) -> list[str]:
    """deqm-0 "Canonical URL SHALL contain a version" (individual, subject-list; applied to summary too
    per fhir-contract.md), and the reference names this Measure and its version."""
    out: list[str] = []
    reference = report.get("measure")
    if not isinstance(reference, str) or not reference:
        return ["deqm-0: MeasureReport.measure: missing"]
    url, _, version = reference.partition("|")
    if report_type != "data-collection" and not version:
        out.append(f"deqm-0: MeasureReport.measure: {reference!r} has no '|version'")
    if url != measure.get("url"):
        out.append(f"measure: MeasureReport.measure: {url!r} is not the Measure's url {measure.get('url')!r}")
    elif version and version != measure.get("version"):
        out.append(
            f"measure: MeasureReport.measure: version {version!r} is not the Measure's version "
            f"{measure.get('version')!r}"
        )
    return out


def _check_period(report: Json) -> list[str]:
    """deqm-1 "Date precision SHALL be at least to day (YYYY-MM-DD)"; period, start and end 1..1
    in all four DEQM MeasureReport profiles."""
    period = report.get("period")
    if not isinstance(period, Mapping):
        return ["deqm-1: MeasureReport.period: missing"]
    out = []
    for key in ("start", "end"):
        value = period.get(key)
        if not isinstance(value, str) or not _DAY_PRECISION.match(value):
            out.append(f"deqm-1: MeasureReport.period.{key}: {value!r} is not at least day precision")
    start, end = period.get("start"), period.get("end")
    if not out and isinstance(start, str) and isinstance(end, str) and start[:10] > end[:10]:
        out.append(f"deqm-1: MeasureReport.period: start {start} is after end {end}")
    return out


def _check_header(report: Json, report_type: str) -> list[str]:
    """Cardinalities of the report header per profile (DEQM STU5):

    - ``date`` 1..1 and ``reporter`` 1..1 in all four profiles;
    - ``subject`` 1..1 in individual and data exchange (datax), 0..0 in summary;
    - ``evaluatedResource`` 0..0 in summary (fhir-contract.md: "no evaluatedResource").
    """
    out = []
    if not isinstance(report.get("date"), str) or not report.get("date"):
        out.append("profile: MeasureReport.date: missing (1..1)")
    reporter = report.get("reporter")
    if not isinstance(reporter, Mapping) or not (reporter.get("reference") or reporter.get("identifier")):
        out.append("profile: MeasureReport.reporter: missing (1..1)")
    subject = report.get("subject")
    has_subject = isinstance(subject, Mapping) and bool(subject.get("reference") or subject.get("identifier"))
    if report_type in ("individual", "data-collection") and not has_subject:
        out.append(f"profile: MeasureReport.subject: missing (1..1 in a {report_type} report)")
    if report_type == "summary" and "subject" in report:
        out.append("profile: MeasureReport.subject: present (0..0 in a summary report)")
    if report_type == "summary" and "evaluatedResource" in report:
        out.append("profile: MeasureReport.evaluatedResource: present (0..0 in a summary report)")
    return out


# --------------------------------------------------------------------------------------------------
# scoring and group structure (deqm-2 … deqm-9)


def _check_scoring(report: Json, measure: Json) -> list[str]:
    """deqm-2, deqm-3, deqm-4 and the scoring type.

    - deqm-3: "Measure scoring is required. It must be specified on the root only, or on every
      group, and it cannot be on both" (``extension-measureScoring``).
    - deqm-2: scoring proportion at the root requires ``improvementNotation``.
    - deqm-4: scoring proportion on a group requires ``extension-groupImprovementNotation``.
    - The scoring code equals the Measure's ``scoring`` (proportion here), and
      ``improvementNotation`` equals the Measure's.
    """
    out: list[str] = []
    groups = _dicts(report.get("group"))
    root = _scoring_codes(report)
    per_group = [_scoring_codes(g) for g in groups]
    if root and any(per_group):
        out.append("deqm-3: MeasureReport.extension:scoring: scoring is on the root and on groups (not both)")
    elif not root and (not groups or not all(per_group)):
        out.append(
            "deqm-3: MeasureReport.extension:scoring: scoring is neither on the root nor on every group"
        )
    expected = _measure_scoring(measure)
    for code in root + [c for codes in per_group for c in codes]:
        if expected and code != expected:
            out.append(
                f"scoring: extension-measureScoring: {code!r} is not the Measure's scoring {expected!r}"
            )
    if "proportion" in root and "improvementNotation" not in report:
        out.append(
            "deqm-2: MeasureReport.improvementNotation: required when scoring at the root is proportion"
        )
    for i, (group, codes) in enumerate(zip(groups, per_group, strict=True)):
        if "proportion" in codes and not _extensions(group, GROUP_IMPROVEMENT_NOTATION_EXT):
            out.append(
                f"deqm-4: MeasureReport.group[{i}]: proportion scoring on the group requires "
                "extension-groupImprovementNotation"
            )
    notation = report.get("improvementNotation")
    if notation is not None and _codings(notation) != _codings(measure.get("improvementNotation")):
        out.append(
            f"measure: MeasureReport.improvementNotation: {list(_codings(notation))} is not the Measure's "
            f"{list(_codings(measure.get('improvementNotation')))}"
        )
    return out


def _check_group_structure(report: Json) -> list[str]:
    """deqm-5 (≥ 1 population per group, non-composite), deqm-7 (a stratifier has ``code`` or
    ``stratum.component``, not both), deqm-8 (a population has ``count`` xor ``countQuantity``) and
    deqm-9 (a stratum population has ``count`` xor ``countQuantity``; ``count`` 1..1 in the individual
    profile, and counts are required by fhir-contract.md).

    A count masked by small-cell suppression (``_count`` with only a data-absent-reason ``masked``)
    counts as present for deqm-8 and deqm-9: the element exists, as DEQM's ``count 1..1`` requires, and
    R4 lets a primitive carry an extension instead of a value ("Using extensions to convey missing
    values"); suppressing a published cell is exactly what that reason code is for."""
    out: list[str] = []
    for gi, group in enumerate(_dicts(report.get("group"))):
        where = f"MeasureReport.group[{gi}]"
        populations = _dicts(group.get("population"))
        if not populations:
            out.append(f"deqm-5: {where}: has no population")
        for pi, population in enumerate(populations):
            has_count = "count" in population or _masked(population)
            has_quantity = bool(_extensions(population, COUNT_QUANTITY_EXT))
            if has_count == has_quantity:
                out.append(f"deqm-8: {where}.population[{pi}]: needs exactly one of count and countQuantity")
        for si, stratifier in enumerate(_dicts(group.get("stratifier"))):
            swhere = f"{where}.stratifier[{si}]"
            strata = _dicts(stratifier.get("stratum"))
            has_code = bool(_dicts(stratifier.get("code")))
            has_components = any(_dicts(s.get("component")) for s in strata)
            if has_code == has_components:
                out.append(f"deqm-7: {swhere}: needs exactly one of code and stratum.component")
            for ti, stratum in enumerate(strata):
                for pi, population in enumerate(_dicts(stratum.get("population"))):
                    if ("count" not in population and not _masked(population)) or _extensions(
                        population, COUNT_QUANTITY_EXT
                    ):
                        out.append(
                            f"deqm-9: {swhere}.stratum[{ti}].population[{pi}]: "
                            "needs a count (and no countQuantity)"
                        )
    return out


# --------------------------------------------------------------------------------------------------
# consistency with the Measure


def _check_against_measure(report: Json, measure: Json, report_type: str) -> list[str]:
    """Group, population and stratifier ids and codes are exactly those of the Measure, and every
    population the Measure defines is reported (fhir-contract.md "MeasureReport"; DEQM STU5:
    "MeasureReport.group.population.id … is equal to the Measure.group.population.id").

    A data exchange report need not carry groups; any it carries must match. Stratifiers: a summary
    report carries every stratifier of the Measure group; other types may carry fewer, never others.
    """
    out: list[str] = []
    measure_groups = {g.id: g for g in _measure_groups(measure)}
    report_groups = _dicts(report.get("group"))
    seen: set[str] = set()
    for gi, group in enumerate(report_groups):
        where = f"MeasureReport.group[{gi}]"
        gid = group.get("id")
        if not isinstance(gid, str) or gid not in measure_groups:
            out.append(f"measure: {where}.id: {gid!r} is not a group of the Measure")
            continue
        if gid in seen:
            out.append(f"measure: {where}.id: group {gid!r} is reported twice")
            continue
        seen.add(str(gid))
        mgroup = measure_groups[str(gid)]
        out += _check_populations_match(where, _dicts(group.get("population")), mgroup)
        out += _check_stratifiers_match(where, _dicts(group.get("stratifier")), mgroup, report_type)
    if report_type != "data-collection":
        for gid in measure_groups:
            if gid not in seen:
                out.append(f"measure: MeasureReport.group: the Measure's group {gid!r} is not reported")
    return out


def _check_populations_match(where: str, populations: list[Json], mgroup: _MeasureGroup) -> list[str]:
    out: list[str] = []
    expected = {p.id: p.code for p in mgroup.populations}
    seen: set[str] = set()
    for pi, population in enumerate(populations):
        pid, code = population.get("id"), _population_code(population)
        pwhere = f"{where}.population[{pi}]"
        if not isinstance(pid, str) or pid not in expected:
            out.append(f"measure: {pwhere}.id: {pid!r} is not a population of Measure group {mgroup.id!r}")
            continue
        if code != expected[str(pid)]:
            out.append(f"measure: {pwhere}.code: {code!r} is not {expected[str(pid)]!r} as in the Measure")
        if pid in seen:
            out.append(f"measure: {pwhere}.id: population {pid!r} is reported twice")
        seen.add(str(pid))
    for pid in expected:
        if pid not in seen:
            out.append(f"measure: {where}.population: the Measure's population {pid!r} is not reported")
    return out


def _check_stratifiers_match(
    where: str, stratifiers: list[Json], mgroup: _MeasureGroup, report_type: str
) -> list[str]:
    out: list[str] = []
    expected = {s.id: s for s in mgroup.stratifiers}
    seen: set[str] = set()
    for si, stratifier in enumerate(stratifiers):
        sid = stratifier.get("id")
        swhere = f"{where}.stratifier[{si}]"
        if not isinstance(sid, str) or sid not in expected:
            out.append(f"measure: {swhere}.id: {sid!r} is not a stratifier of Measure group {mgroup.id!r}")
            continue
        mstrat = expected[str(sid)]
        codes = _dicts(stratifier.get("code"))
        if codes:
            code = codes[0]
            text = str(code.get("text", ""))
            if len(codes) != 1 or _codings(code) != mstrat.code or text != mstrat.text:
                out.append(f"measure: {swhere}.code: differs from the Measure's stratifier {sid!r} code")
        if sid in seen:
            out.append(f"measure: {swhere}.id: stratifier {sid!r} is reported twice")
        seen.add(str(sid))
    if report_type == "summary":
        for sid in expected:
            if sid not in seen:
                out.append(f"measure: {where}.stratifier: the Measure's stratifier {sid!r} is not reported")
    return out


# --------------------------------------------------------------------------------------------------
# counts and scores


def _check_counts(report: Json, report_type: str, *, suppressed: bool) -> list[str]:
    """Proportion semantics on every group and stratum (CQF Measures STU5, fhir-contract.md
    "Measure"):

    - counts are non-negative; DEN ⊆ IP and NUMER evaluated on DEN − DENEX, so
      numerator ≤ denominator − denominator-exclusion ≤ initial population, and DENEX ≤ DEN;
    - deqm-6: a proportion score is in [0, 1], equals NUMER / (DEN − DENEX) (within
      :data:`SCORE_TOLERANCE`) and is absent when DEN − DENEX is 0;
    - strata (summary): a stratum population count ≤ the group population count for the same code, and,
      unless ``suppressed`` (or a stratum lacks that count, already a deqm-9 violation), the counts of
      one stratifier's strata add up to the group count.
    """
    out: list[str] = []
    scored = report_type != "data-collection"
    for gi, group in enumerate(_dicts(report.get("group"))):
        where = f"MeasureReport.group[{gi}]"
        populations = _dicts(group.get("population"))
        counts = _counts_by_code(populations)
        out += _check_proportion(where, counts, populations, group if scored else None)
        for si, stratifier in enumerate(_dicts(group.get("stratifier"))):
            totals: dict[str, int] = {}
            uncounted: set[str] = set()
            for ti, stratum in enumerate(_dicts(stratifier.get("stratum"))):
                twhere = f"{where}.stratifier[{si}].stratum[{ti}]"
                spops = _dicts(stratum.get("population"))
                scounts = _counts_by_code(spops)
                uncounted |= {c for c in map(_population_code, spops) if c and c not in scounts}
                out += _check_proportion(twhere, scounts, spops, stratum if scored else None)
                for code, count in sorted(scounts.items()):
                    totals[code] = totals.get(code, 0) + count
                    if code in counts and count > counts[code]:
                        out.append(
                            f"strata: {twhere}: {code} count {count} exceeds the group's {counts[code]}"
                        )
            if not suppressed:
                for code, total in sorted(totals.items()):
                    if code in counts and code not in uncounted and total != counts[code]:
                        out.append(
                            f"strata: {where}.stratifier[{si}]: {code} counts of the strata add up to "
                            f"{total}, "
                            f"not the group's {counts[code]}"
                        )
    return out


def _check_proportion(
    where: str, counts: Mapping[str, int], populations: list[Json], scored: Json | None
) -> list[str]:
    out: list[str] = []
    for pi, population in enumerate(populations):
        count = _count(population)
        if "count" in population and (count is None or count < 0):
            out.append(f"counts: {where}.population[{pi}]: count {population.get('count')!r} is not a count")
    masked = {c for c in (_population_code(p) for p in populations if _masked(p)) if c}
    if masked & {DEN, DENEX, NUMER, DENEXCEP, NUMEX}:
        # Small-cell suppression: the score's inputs are not all known, so only its absence is
        # checked (a score next to the other counts would give the masked one away).
        if scored is not None and "measureScore" in scored:
            hidden = ", ".join(sorted(masked))
            return [*out, f"suppression: {where}.measureScore: present although {hidden} is masked"]
        return out
    ip, den, denex, numer = (counts.get(c) for c in (IP, DEN, DENEX, NUMER))
    denexcep, numex = counts.get(DENEXCEP), counts.get(NUMEX)
    # CQFM proportion scoring: (NUMER − NUMEX) / (DEN − DENEX − DENEXCEP).
    effective = None if den is None else den - (denex or 0) - (denexcep or 0)
    if numer is not None:
        numer -= numex or 0
    if den is not None and denex is not None and denex > den:
        out.append(f"counts: {where}: denominator-exclusion {denex} exceeds denominator {den}")
    if ip is not None and den is not None and den > ip:
        out.append(f"counts: {where}: denominator {den} exceeds initial-population {ip}")
    if numer is not None and effective is not None and effective >= 0 and numer > effective:
        out.append(f"counts: {where}: numerator {numer} exceeds denominator − exclusion {effective}")
    if scored is None:
        return out
    score = _score(scored)
    if score is None:
        if effective is not None and effective > 0 and numer is not None:
            out.append(
                f"deqm-6: {where}.measureScore: missing although denominator − exclusion is {effective}"
            )
        return out
    if math.isnan(score) or not 0.0 <= score <= 1.0:
        out.append(f"deqm-6: {where}.measureScore: {scored['measureScore'].get('value')!r} is not in [0, 1]")
        return out
    if effective is not None and effective <= 0:
        out.append(f"deqm-6: {where}.measureScore: present although denominator − exclusion is {effective}")
    elif effective is not None and numer is not None and abs(score - numer / effective) > SCORE_TOLERANCE:
        out.append(
            f"deqm-6: {where}.measureScore: {score} is not numerator/(denominator − exclusion) = "
            f"{numer}/{effective}"
        )
    return out


# --------------------------------------------------------------------------------------------------
# per profile


def _check_data_collection(report: Json) -> list[str]:
    """DEQM STU5 data exchange profile (``datax-measurereport-deqm``, R4 type ``data-collection``):
    ``extension:updatetype`` (``extension-submitDataUpdateType``) 1..1 with ``incremental`` or
    ``snapshot``; ``group.measureScore`` 0..0; ``group.stratifier`` 0..0."""
    out: list[str] = []
    update = _extensions(report, SUBMIT_DATA_UPDATE_TYPE_EXT)
    if len(update) != 1:
        out.append(f"datax: MeasureReport.extension:updatetype: {len(update)} present, expected 1")
    elif update[0].get("valueCode") not in SUBMIT_DATA_UPDATE_TYPES:
        out.append(
            f"datax: MeasureReport.extension:updatetype: {update[0].get('valueCode')!r} is not "
            "'incremental' or 'snapshot'"
        )
    for gi, group in enumerate(_dicts(report.get("group"))):
        if "measureScore" in group:
            out.append(f"datax: MeasureReport.group[{gi}].measureScore: present (0..0)")
        if "stratifier" in group:
            out.append(f"datax: MeasureReport.group[{gi}].stratifier: present (0..0)")
    return out


def _check_individual(report: Json, measure: Json) -> list[str]:
    """DEQM STU5 individual profile: ``group.population.subjectResults`` 0..0; every
    ``evaluatedResource`` carries a criteria reference (:data:`CRITERIA_REFERENCE_EXTS`) whose
    ``valueString`` is a population id of the Measure; a patient-based measure
    (``cqfm-populationBasis = boolean``) counts the subject 0 or 1 in each population."""
    out: list[str] = []
    population_ids = {p.id for g in _measure_groups(measure) for p in g.populations}
    for gi, group in enumerate(_dicts(report.get("group"))):
        for pi, population in enumerate(_dicts(group.get("population"))):
            where = f"MeasureReport.group[{gi}].population[{pi}]"
            if "subjectResults" in population:
                out.append(f"indv: {where}.subjectResults: present (0..0 in an individual report)")
            count = _count(population)
            if count is not None and count not in (0, 1):
                out.append(f"indv: {where}.count: {count} for one subject of a patient-based measure")
    for i, resource in enumerate(_dicts(report.get("evaluatedResource"))):
        where = f"MeasureReport.evaluatedResource[{i}]"
        refs = [e for url in CRITERIA_REFERENCE_EXTS for e in _extensions(resource, url)]
        if not refs:
            out.append(f"indv: {where}: has no criteriaReference extension")
        for ext in refs:
            value = ext.get("valueString")
            if value not in population_ids:
                out.append(
                    f"indv: {where}: criteriaReference {value!r} is not a population id of the Measure"
                )
    return out


def _check_summary(report: Json) -> list[str]:
    """DEQM STU5 summary profile: ``group`` 1..*; every stratum has a ``value`` (the stratifier has
    a code, deqm-7), carries the populations of its group (each stratum is counted within each
    population, fhir-contract.md "Stratifiers") and has no ``subjectResults``."""
    out: list[str] = []
    for gi, group in enumerate(_dicts(report.get("group"))):
        codes = sorted(c for c in (_population_code(p) for p in _dicts(group.get("population"))) if c)
        for si, stratifier in enumerate(_dicts(group.get("stratifier"))):
            strata = _dicts(stratifier.get("stratum"))
            for ti, stratum in enumerate(strata):
                twhere = f"MeasureReport.group[{gi}].stratifier[{si}].stratum[{ti}]"
                value = stratum.get("value")
                if not isinstance(value, Mapping) or not (value.get("text") or _codings(value)):
                    out.append(f"summary: {twhere}.value: missing")
                spops = _dicts(stratum.get("population"))
                scodes = sorted(c for c in (_population_code(p) for p in spops) if c)
                if scodes != codes:
                    out.append(f"summary: {twhere}.population: codes {scodes} are not the group's {codes}")
                if any("subjectResults" in p for p in spops):
                    out.append(f"summary: {twhere}.population: subjectResults in a summary report")
        if any("subjectResults" in p for p in _dicts(group.get("population"))):
            out.append(f"summary: MeasureReport.group[{gi}].population: subjectResults in a summary report")
    return out


def _check_subject_list(report: Json) -> list[str]:
    """DEQM STU5 subject-list profile: ``group.population.subjectResults`` 1..1 and the same on every
    stratum population, each a reference to a ``List`` (contained ``#id`` or ``List/<id>``), whose
    entries are individual MeasureReports (checked by :func:`check_list_entries`)."""
    out: list[str] = []
    contained = {
        str(r.get("id")): r for r in _dicts(report.get("contained")) if r.get("resourceType") == "List"
    }
    targets: list[tuple[str, Json]] = []
    for gi, group in enumerate(_dicts(report.get("group"))):
        gwhere = f"MeasureReport.group[{gi}]"
        targets += [(f"{gwhere}.population[{pi}]", p) for pi, p in enumerate(_dicts(group.get("population")))]
        for si, stratifier in enumerate(_dicts(group.get("stratifier"))):
            for ti, stratum in enumerate(_dicts(stratifier.get("stratum"))):
                twhere = f"{gwhere}.stratifier[{si}].stratum[{ti}]"
                targets += [
                    (f"{twhere}.population[{pi}]", p)
                    for pi, p in enumerate(_dicts(stratum.get("population")))
                ]
    for where, population in targets:
        results = population.get("subjectResults")
        reference = results.get("reference") if isinstance(results, Mapping) else None
        if not isinstance(reference, str) or not reference:
            out.append(f"subjectlist: {where}.subjectResults: missing (1..1)")
        elif reference.startswith("#"):
            if reference[1:] not in contained:
                out.append(f"subjectlist: {where}.subjectResults: {reference!r} is not a contained List")
            else:
                out += [
                    f"subjectlist: {where}.subjectResults: {problem}"
                    for problem in _entry_reference_errors(contained[reference[1:]])
                ]
        elif reference.split("/")[-2:-1] != ["List"]:
            out.append(f"subjectlist: {where}.subjectResults: {reference!r} does not reference a List")
    return out


__all__ = [
    "COUNT_QUANTITY_EXT",
    "CRITERIA_REFERENCE_EXTS",
    "GROUP_IMPROVEMENT_NOTATION_EXT",
    "MEASURE_SCORING_EXT",
    "PROFILE_BY_TYPE",
    "REPORT_TYPES",
    "SCORE_TOLERANCE",
    "SUBMIT_DATA_UPDATE_TYPE_EXT",
    "check_list_entries",
    "check_measure_report",
]
