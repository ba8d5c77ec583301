"""Conformance resources built from ``mappings/``: Measure, Library, ValueSets, CapabilityStatement.

Pure builders (``build_*``) return FHIR R4 (4.0.1) JSON dicts; :func:`render_conformance` turns a
whole :class:`~fhir_adapter.measure.spec.Mappings` into file name → bytes, and
:func:`write_conformance` writes them. Output is deterministic (no clock, sorted keys, stable
order), so a drift test can compare ``conformance/`` with what the current mappings produce.

Canonical URLs are stable across measurement years: ``{base}/Measure/{measure id}``,
``{base}/Library/{measure id}``, ``{base}/ValueSet/{measure id}-{value set name}``; the year lives in
``version`` (the measure's ``version`` from ``measure.toml``, which must contain the year), so a
MeasureReport names ``{url}|{version}``. Resource ids carry the year (``{measure id}-{year}``) so
several years can sit on one server.

Sources: CQF Measures STU5 (``HL7/cqf-measures``) proportion measure
(``proportion-measure-cqfm``), ``cqfm-populationBasis``; FHIR R4 Measure, Library, ValueSet and
CapabilityStatement. What is ours and UNVERIFIED is said where it is done: the criteria language
``text/x-fhir-adapter-rule`` (the rules are SQL templates, not CQL), the prefix-row filters, and the
ids/URLs under the canonical base. Nothing here presents an [A] rule as OHA's specification: every
rule whose status is not ``verified``/``official`` is listed in the Measure's ``usage``,
``relatedArtifact`` and ``disclaimer``, and keeps the Measure ``draft`` and ``experimental``.
"""

from __future__ import annotations

import base64
import datetime
import html
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fhir_adapter.errors import MappingsError
from fhir_adapter.measure.spec import (
    Cco,
    CodeRow,
    CodeSystem,
    Group,
    Mappings,
    MeasureSpec,
    Provenance,
    ServiceCriterion,
    ValueSet,
)
from fhir_adapter.terminology.codes import is_cpt_code

#: CQF Measures STU5 proportion measure profile.
PROPORTION_MEASURE_PROFILE = "http://hl7.org/fhir/us/cqfmeasures/StructureDefinition/proportion-measure-cqfm"
POPULATION_BASIS_EXT = "http://hl7.org/fhir/us/cqfmeasures/StructureDefinition/cqfm-populationBasis"
MEASURE_SCORING_SYSTEM = "http://terminology.hl7.org/CodeSystem/measure-scoring"
MEASURE_POPULATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/measure-population"
IMPROVEMENT_NOTATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/measure-improvement-notation"
MEASURE_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/measure-type"
MEASURE_DATA_USAGE_SYSTEM = "http://terminology.hl7.org/CodeSystem/measure-data-usage"
LIBRARY_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/library-type"
#: UNVERIFIED: our own expression language code. The criteria are described in words; the executable
#: rules are the engine's SQL templates parameterised by measure.toml, not CQL or FHIRPath.
RULE_LANGUAGE = "text/x-fhir-adapter-rule"
#: CPT descriptors are AMA-copyrighted: CPT concepts never carry a display (spec §3 Code handling).
CPT_SYSTEM = "http://www.ama-assn.org/go/cpt"
ICD10CM_SYSTEM = "http://hl7.org/fhir/sid/icd-10-cm"
FHIR_VERSION = "4.0.1"
PUBLISHER = "fhir-adapter project (not an OHA publication)"
#: CapabilityStatement.date is 1..1; it is the date its content last changed, bumped by hand with it.
CAPABILITY_STATEMENT_DATE = "2026-11-23"
CAPABILITY_STATEMENT_ID = "fhir-adapter"

SETTLED = ("verified", "official")
#: The populations every group has, in order; MeasureReports use the same list (id parity).
POPULATIONS = (
    ("initial-population", "Initial Population"),
    ("denominator", "Denominator"),
    ("denominator-exclusion", "Denominator Exclusion"),
    ("numerator", "Numerator"),
)
#: What each stratifier id means (spec §2 and §4 "Stratifiers").
_STRATIFIERS: Mapping[str, str] = {
    "cco": "CCO the child is attributed to on the anchor day",
    "age": "age in whole years on the last day of the period",
    "age-band": "age band on the last day of the period",
    "sex": "sex assigned at birth (falling back to administrative gender, labelled)",
    "race-ethnicity": "REALD race/ethnicity from eligibility data (falling back to US Core race/ethnicity, "
    "labelled EHR-reported; 'missing' when absent)",
    "language": "preferred language from eligibility data ('missing' when absent)",
    "disability": "REALD disability from eligibility data ('missing' when absent)",
    "county": "county of residence from eligibility data ('missing' when absent)",
}
#: Supplemental data elements (fhir-contract.md "Measure": SDE for sex, race, ethnicity, payer).
_SUPPLEMENTAL = (
    ("sde-sex", "sex", "Sex assigned at birth, else administrative gender"),
    ("sde-race", "race", "Race: REALD from eligibility data, else US Core race"),
    ("sde-ethnicity", "ethnicity", "Ethnicity: REALD from eligibility data, else US Core ethnicity"),
    ("sde-payer", "payer", "Payer: the CCO the child is attributed to"),
)
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")

Json = dict[str, Any]


# --------------------------------------------------------------------------------------------------
# CapabilityStatement input


@dataclass(frozen=True)
class SearchParam:
    """A supported search parameter (R4 ``CapabilityStatement.rest.resource.searchParam``)."""

    name: str
    type: str
    definition: str | None = None
    documentation: str | None = None


@dataclass(frozen=True)
class OperationRef:
    """A supported operation (R4 ``CapabilityStatement.rest.resource.operation``)."""

    name: str
    definition: str
    documentation: str | None = None
    #: extensions on ``rest.resource.operation`` (e.g. DEQM ``extension-submitDataUpdateType``)
    extension: tuple[Json, ...] = ()


@dataclass(frozen=True)
class ResourceCapability:
    """What the product implements for one resource type."""

    interactions: tuple[str, ...] = ("read",)
    search_params: tuple[SearchParam, ...] = ()
    operations: tuple[OperationRef, ...] = ()
    profile: str | None = None
    documentation: str | None = None


def cli_capabilities() -> dict[str, ResourceCapability]:
    """What the CLI-level product implements now: the conformance resources can be read (from
    ``conformance/``). The REST service passes its real routes instead."""
    read = ResourceCapability(interactions=("read",))
    return {"Library": read, "Measure": read, "MeasureReport": read, "ValueSet": read}


# --------------------------------------------------------------------------------------------------
# naming


def measure_url(spec: MeasureSpec, canonical_base: str) -> str:
    return f"{canonical_base.rstrip('/')}/Measure/{spec.id}"


def library_url(spec: MeasureSpec, canonical_base: str) -> str:
    return f"{canonical_base.rstrip('/')}/Library/{spec.id}"


def valueset_url(spec: MeasureSpec, name: str, canonical_base: str) -> str:
    return f"{canonical_base.rstrip('/')}/ValueSet/{spec.id}-{name}"


def _resource_id(*parts: object) -> str:
    value = "-".join(str(p) for p in parts)
    if not _ID.match(value):
        raise MappingsError(f"{value!r} is not a valid FHIR id ([A-Za-z0-9-.], at most 64 characters)")
    return value


def _computable_name(*parts: str) -> str:
    """A name matching the R4 ``mea-0``/``vsd-0`` pattern ``[A-Z]([A-Za-z0-9_]){0,254}``."""
    words = re.split(r"[^A-Za-z0-9]+", " ".join(parts))
    name = "".join(w[:1].upper() + w[1:] for w in words if w)
    return name if name[:1].isalpha() else f"N{name}"


def _check_version(spec: MeasureSpec) -> None:
    if str(spec.year) not in spec.version:
        raise MappingsError(
            f"measure {spec.id} {spec.year}: version {spec.version!r} must contain the year "
            "(canonical URLs are stable; the year lives in version)",
            location=spec.path or None,
        )


# --------------------------------------------------------------------------------------------------
# provenance


@dataclass(frozen=True)
class Assumption:
    """A rule or code list that is not (yet) OHA's: status not ``verified``/``official``."""

    what: str
    status: str
    source: str


def assumptions(spec: MeasureSpec) -> list[Assumption]:
    """Every rule of ``spec`` whose status is not verified/official, and every value set with rows
    whose status is not verified/official (spec §3: "Nothing tagged [A] may be presented to users
    as the OHA specification"). Stable order: measure, age, age bands, enrollment, exclusions, groups, value
    sets by name."""
    out: list[Assumption] = []

    def rule(what: str, prov: Provenance) -> None:
        if prov.status not in SETTLED:
            out.append(Assumption(what, prov.status, prov.source))

    rule("measure definition", spec.provenance)
    rule(f"age {spec.age.min_age}-{spec.age.max_age} on the last day of the period", spec.age.provenance)
    for band in spec.age_bands:
        rule(f"age band {band.code} ({band.min_age}-{band.max_age})", band.provenance)
    rule(_enrollment_text(spec), spec.enrollment.provenance)
    for exclusion in spec.exclusions:
        rule(f"exclusion {exclusion.id} ({'on' if exclusion.enabled else 'off'})", exclusion.provenance)
    for group in spec.groups:
        rule(f"group {group.id}", group.provenance)
    for name in sorted(spec.valuesets):
        rows = spec.valuesets[name].rows
        unsettled = [r for r in rows if r.provenance.status not in SETTLED]
        if unsettled:
            statuses = ", ".join(sorted({r.provenance.status for r in unsettled}))
            sources = " | ".join(sorted({r.provenance.source for r in unsettled}))
            out.append(
                Assumption(f"value set {name}: {len(unsettled)} of {len(rows)} rows", statuses, sources)
            )
    return out


def _settled(spec: MeasureSpec) -> bool:
    return not assumptions(spec)


# --------------------------------------------------------------------------------------------------
# rule texts (descriptions of the data in measure.toml, never a second source of the rules)


def _enrollment_text(spec: MeasureSpec) -> str:
    e = spec.enrollment
    scope = "in the same CCO" if e.scope == "same-cco" else "in any CCO"
    return (
        f"enrolled {scope} on the last day of the period and continuously through the period (or since "
        f"birth), with at most {e.max_gaps} gap(s) of at most {e.max_gap_days} days in all"
    )


def _criterion_text(spec: MeasureSpec, criterion: ServiceCriterion, base: str) -> str:
    text = (
        "at least one service dated in the period with a procedure in "
        f"{valueset_url(spec, criterion.procedures, base)}"
    )
    if criterion.diagnoses:
        text += (
            f" and a diagnosis in {valueset_url(spec, criterion.diagnoses, base)}"
            " on the same claim or encounter"
            f" (diagnosis position: {criterion.diagnosis_position})"
        )
    return text


def _population_texts(spec: MeasureSpec, group: Group, base: str) -> dict[str, str]:
    exclusions = [e for e in spec.exclusions if e.enabled]
    exclusion_texts = []
    for e in exclusions:
        if e.id == "death":
            exclusion_texts.append("death on or before the last day of the period")
        elif e.valueset:
            exclusion_texts.append(f"{e.id} (codes in {valueset_url(spec, e.valueset, base)})")
        else:
            exclusion_texts.append(e.id)
    denominator = "equals the initial population"
    if group.need_diagnoses:
        denominator = (
            "initial population with a qualifying diagnosis in "
            f"{valueset_url(spec, group.need_diagnoses, base)} dated in the period"
        )
    return {
        "initial-population": (
            f"age {spec.age.min_age}-{spec.age.max_age} in whole years on the last day of the period; "
            f"{_enrollment_text(spec)}; a usable birth date"
        ),
        "denominator": denominator,
        "denominator-exclusion": "; ".join(exclusion_texts)
        if exclusion_texts
        else "none (no exclusion enabled)",
        "numerator": _criterion_text(spec, group.numerator, base),
    }


def _criteria(expression: str) -> Json:
    return {"language": RULE_LANGUAGE, "expression": expression}


def _narrative(*paragraphs: str) -> Json:
    body = "".join(f"<p>{html.escape(p, quote=False)}</p>" for p in paragraphs)
    return {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{body}</div>'}


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


# --------------------------------------------------------------------------------------------------
# Measure


def build_measure(
    spec: MeasureSpec,
    canonical_base: str,
    *,
    ccos: Sequence[Cco] = (),
    date: datetime.date | None = None,
) -> Json:
    """The FHIR R4 Measure of one measure-year (CQF Measures STU5 proportion measure, patient-based).

    ``status`` is ``active`` only when every rule and code row is verified/official, else ``draft``;
    ``experimental`` is true while any assumption remains. ``date`` is set only when given
    (the builder reads no clock, so the output stays deterministic). ``ccos`` (from ``mappings/``)
    name the CCOs in the ``cco`` stratifier's description.

    Known gaps, UNVERIFIED against an HL7 validator: ``meta.profile`` claims CQFM
    ``proportion-measure-cqfm``, whose computable profiles expect CQL criteria (``text/cql-identifier``)
    and a CQL Library, which this adapter does not have; stratifier ids (``cco``, ``age``, … as spec §2
    fixes them) repeat in every group, whereas R4 asks element ids to be unique within a resource
    (neither base validator in tests/validators objects).
    """
    _check_version(spec)
    base = canonical_base.rstrip("/")
    pending = assumptions(spec)
    settled = not pending
    groups = [_measure_group(spec, g, base, ccos) for g in spec.groups]
    usage = (
        "Proportion measure, patient-based. The criteria are descriptions of the rules in mappings/ "
        f"(language {RULE_LANGUAGE}, UNVERIFIED, the project's own); the executable logic is the "
        "fhir-adapter engine's rule templates, not CQL."
    )
    if pending:
        usage += " Assumptions of this project (not the OHA specification): " + "; ".join(
            f"{a.what} [{a.status}; source: {a.source}]" for a in pending
        )
    related: list[Json] = [
        {
            "type": "documentation",
            "label": "assumption",
            "display": f"{a.what} [{a.status}]",
            "citation": f"Assumption (status {a.status}), not the OHA specification. Source: {a.source}",
        }
        for a in pending
    ]
    related.append(
        {"type": "depends-on", "display": "Rules", "resource": f"{library_url(spec, base)}|{spec.version}"}
    )
    related += [
        {
            "type": "depends-on",
            "display": spec.valuesets[name].title or name,
            "resource": f"{valueset_url(spec, name, base)}|{spec.version}",
        }
        for name in sorted(spec.valuesets)
    ]
    measure: Json = {
        "resourceType": "Measure",
        "id": _resource_id(spec.id, spec.year),
        "meta": {"profile": [PROPORTION_MEASURE_PROFILE]},
        "text": _narrative(
            f"{spec.title} ({spec.year}, version {spec.version}).",
            spec.description,
            "Status: " + ("settled." if settled else f"draft, {len(pending)} assumption(s) remain."),
        ),
        "extension": [{"url": POPULATION_BASIS_EXT, "valueCode": "boolean"}],
        "url": measure_url(spec, base),
        "version": spec.version,
        "name": _computable_name(spec.id),
        "title": spec.title,
        "status": "active" if settled else "draft",
        "experimental": not settled,
        "publisher": PUBLISHER,
        "description": spec.description,
        "jurisdiction": [{"coding": [{"system": "urn:iso:std:iso:3166:-2", "code": "US-OR"}]}],
        "usage": usage,
        "disclaimer": (
            "Generated by fhir-adapter from mappings/. "
            + (
                "Every rule and code is marked verified or official."
                if settled
                else "Rules marked as assumptions are this project's defaults, not the OHA specification."
            )
        ),
        "effectivePeriod": {"start": f"{spec.year}-01-01", "end": f"{spec.year}-12-31"},
        "relatedArtifact": related,
        "library": [f"{library_url(spec, base)}|{spec.version}"],
        "subjectCodeableConcept": {
            "coding": [{"system": "http://hl7.org/fhir/resource-types", "code": "Patient"}]
        },
        "scoring": {
            "coding": [{"system": MEASURE_SCORING_SYSTEM, "code": "proportion", "display": "Proportion"}]
        },
        "type": [{"coding": [{"system": MEASURE_TYPE_SYSTEM, "code": "process", "display": "Process"}]}],
        "improvementNotation": {
            "coding": [
                {
                    "system": IMPROVEMENT_NOTATION_SYSTEM,
                    "code": "increase",
                    "display": "Increased score indicates improvement",
                }
            ]
        },
        "group": groups,
        "supplementalData": [
            {
                "id": sde_id,
                "code": {"text": code},
                "usage": [{"coding": [{"system": MEASURE_DATA_USAGE_SYSTEM, "code": "supplemental-data"}]}],
                "description": text,
                "criteria": _criteria(text),
            }
            for sde_id, code, text in _SUPPLEMENTAL
        ],
    }
    if date is not None:
        measure["date"] = date.isoformat()
    return measure


def _measure_group(spec: MeasureSpec, group: Group, base: str, ccos: Sequence[Cco]) -> Json:
    texts = _population_texts(spec, group, base)
    stratifiers = []
    for sid in spec.stratifiers:
        text = _STRATIFIERS.get(sid, sid)
        if sid == "age-band" and spec.age_bands:
            text += ": " + ", ".join(b.code for b in spec.age_bands)
        if sid == "cco" and ccos:
            id_systems = sorted({system for c in ccos for system, _ in c.identifiers})
            text += f" (identifier system {', '.join(id_systems)}): " + ", ".join(c.id for c in ccos)
        stratifiers.append(
            {"id": sid, "code": {"text": sid}, "description": text, "criteria": _criteria(text)}
        )
    return {
        "id": group.id,
        "description": f"{group.title}. {group.description}".strip(),
        "population": [
            {
                "id": f"{group.id}-{code}",
                "code": {"coding": [{"system": MEASURE_POPULATION_SYSTEM, "code": code, "display": display}]},
                "description": texts[code],
                "criteria": _criteria(texts[code]),
            }
            for code, display in POPULATIONS
        ],
        "stratifier": stratifiers,
    }


# --------------------------------------------------------------------------------------------------
# Library


def _data_requirements(spec: MeasureSpec, base: str) -> list[Json]:
    """``dataRequirement`` per resource type the rules read, with ``codeFilter`` by value set canonical.

    Paths follow spec §3 "Numerator" (EOB/Claim ``item.productOrService`` and
    ``diagnosis.diagnosisCodeableConcept``, Encounter ``type``, Procedure ``code``/``reasonCode``,
    Condition ``code``); codeFilters within one requirement are ANDed (R4 DataRequirement), so each
    qualifying-service criterion gets its own requirement per type.
    """

    def vs(name: str) -> str:
        return f"{valueset_url(spec, name, base)}|{spec.version}"

    keys: set[tuple[str, tuple[tuple[str, str], ...]]] = {("Patient", ()), ("Coverage", ())}
    criteria = {g.numerator for g in spec.groups}
    diagnosis_sets = {c.diagnoses for c in criteria if c.diagnoses} | {g.need_diagnoses for g in spec.groups}
    for c in criteria:
        dx: tuple[tuple[str, str], ...] = ()
        for rtype in ("ExplanationOfBenefit", "Claim"):
            if c.diagnoses:
                dx = (("diagnosis.diagnosisCodeableConcept", c.diagnoses),)
            keys.add((rtype, (("item.productOrService", c.procedures), *dx)))
        keys.add(("Encounter", (("type", c.procedures),)))
        keys.add(("Procedure", (("code", c.procedures),)))
    for name in sorted(n for n in diagnosis_sets if n):
        keys.add(("Condition", (("code", name),)))
        keys.add(("ExplanationOfBenefit", (("diagnosis.diagnosisCodeableConcept", name),)))
        keys.add(("Claim", (("diagnosis.diagnosisCodeableConcept", name),)))
    for e in spec.exclusions:
        if e.enabled and e.valueset:
            keys.add(("ExplanationOfBenefit", (("item.productOrService", e.valueset),)))
            keys.add(("Claim", (("item.productOrService", e.valueset),)))
            keys.add(("Encounter", (("type", e.valueset),)))
    return [
        {
            "type": rtype,
            **({"codeFilter": [{"path": p, "valueSet": vs(n)} for p, n in filters]} if filters else {}),
        }
        for rtype, filters in sorted(keys)
    ]


def data_requirements(spec: MeasureSpec, canonical_base: str) -> list[Json]:
    """The ``dataRequirement`` list of the measure-year's Library (public for ``$data-requirements``)."""
    return _data_requirements(spec, canonical_base.rstrip("/"))


def _library_markdown(spec: MeasureSpec, base: str) -> str:
    lines = [
        f"# {spec.title}",
        "",
        f"Measure `{spec.id}`, measurement year {spec.year}, version {spec.version}.",
        f"Canonical: {measure_url(spec, base)}|{spec.version}",
        "",
        spec.description,
        "",
        "Rules are data in `mappings/`; each carries a status (verified, official or assumption)"
        " and a source.",
        "Rules with status `assumption` are this project's defaults, **not the OHA specification**.",
        "",
        "| rule | value | status | source |",
        "|---|---|---|---|",
        f"| measure | {_md_escape(spec.title)} | {spec.provenance.status} "
        f"| {_md_escape(spec.provenance.source)} |",
        f"| age | {spec.age.min_age}-{spec.age.max_age} | {spec.age.provenance.status} "
        f"| {_md_escape(spec.age.provenance.source)} |",
        f"| enrollment | {_md_escape(_enrollment_text(spec))} | {spec.enrollment.provenance.status} "
        f"| {_md_escape(spec.enrollment.provenance.source)} |",
    ]
    for e in spec.exclusions:
        value = ("on" if e.enabled else "off") + (f", value set {e.valueset}" if e.valueset else "")
        lines.append(
            f"| exclusion {e.id} | {value} | {e.provenance.status} | {_md_escape(e.provenance.source)} |"
        )
    for g in spec.groups:
        texts = _population_texts(spec, g, base)
        value = "; ".join(f"{code}: {texts[code]}" for code, _ in POPULATIONS)
        lines.append(
            f"| group {g.id} | {_md_escape(value)} | {g.provenance.status} "
            f"| {_md_escape(g.provenance.source)} |"
        )
    lines += ["", "## Value sets", "", "| value set | rows | statuses | canonical |", "|---|---|---|---|"]
    for name in sorted(spec.valuesets):
        rows = spec.valuesets[name].rows
        statuses = ", ".join(sorted({r.provenance.status for r in rows}))
        canonical = _md_escape(f"{valueset_url(spec, name, base)}|{spec.version}")
        lines.append(f"| {name} | {len(rows)} | {statuses} | {canonical} |")
    lines += ["", f"Stratifiers: {', '.join(spec.stratifiers)}.", ""]
    if spec.hash:
        lines += [f"Mappings hash: `{spec.hash}`", ""]
    return "\n".join(lines)


def build_library(spec: MeasureSpec, canonical_base: str) -> Json:
    """The measure-year's logic Library: the rules in words (``content``, text/markdown, base64) and
    ``dataRequirement`` per resource type with ``codeFilter`` by value set canonical (R4 Library,
    type ``logic-library``)."""
    _check_version(spec)
    base = canonical_base.rstrip("/")
    settled = _settled(spec)
    markdown = _library_markdown(spec, base)
    return {
        "resourceType": "Library",
        "id": _resource_id(spec.id, spec.year),
        "text": _narrative(f"Rules of {spec.title} ({spec.year}, version {spec.version}), in words."),
        "url": library_url(spec, base),
        "version": spec.version,
        "name": _computable_name(spec.id, "rules"),
        "title": f"{spec.title}: rules",
        "status": "active" if settled else "draft",
        "experimental": not settled,
        "type": {"coding": [{"system": LIBRARY_TYPE_SYSTEM, "code": "logic-library"}]},
        "publisher": PUBLISHER,
        "description": (
            "The rules of the measure as configured in mappings/, in words, with each rule's status and "
            "source. The executable logic is the fhir-adapter engine's rule templates, not CQL."
        ),
        "dataRequirement": _data_requirements(spec, base),
        "content": [
            {
                "contentType": "text/markdown",
                "title": "Rules",
                "data": base64.b64encode(markdown.encode("utf-8")).decode("ascii"),
            }
        ],
    }


# --------------------------------------------------------------------------------------------------
# ValueSet


def _display_code(row: CodeRow, systems: Mapping[str, CodeSystem]) -> str:
    """The code as the code system writes it: ICD-10 codes get their dot back (``F4322`` → ``F43.22``)."""
    system = systems.get(row.system)
    icd = system.normalise == "icd" if system else row.system == ICD10CM_SYSTEM
    if icd and len(row.code) > 3 and "." not in row.code:
        return f"{row.code[:3]}.{row.code[3:]}"
    return row.code


def build_valueset(
    spec: MeasureSpec,
    valueset: ValueSet,
    canonical_base: str,
    *,
    systems: Mapping[str, CodeSystem] | None = None,
) -> Json:
    """One value set of a measure-year as an R4 ValueSet with ``compose.include`` per system.

    - ``exact`` rows → ``include.concept`` (CPT concepts never carry a display, AMA copyright).
    - ``prefix`` rows → ``include.filter``. For ICD-10 systems (``normalise = icd``) the prefix is a
      category code and ``{"property": "concept", "op": "is-a", "value": "F43"}`` selects it and its
      descendants (R4 filter-operator ``is-a``), which is what a prefix means there. Other systems
      have no hierarchy that matches a prefix, so UNVERIFIED: ``{"property": "code", "op": "regex",
      "value": "^<prefix>.*"}``, which few terminology servers evaluate.
    - Row provenance is summarised at set level in ``description`` (distinct statuses and sources,
      rows with validity windows); ``status`` is ``active`` only when every row is verified/official.
    """
    _check_version(spec)
    base = canonical_base.rstrip("/")
    systems = systems or {}
    by_system: dict[str, list[CodeRow]] = {}
    for row in valueset.rows:
        by_system.setdefault(row.system, []).append(row)
    include: list[Json] = []
    for system in sorted(by_system):
        rows = by_system[system]
        concepts: dict[str, Json] = {}
        filters: dict[str, Json] = {}
        for row in rows:
            code = _display_code(row, systems)
            if row.match == "prefix":
                icd = (systems[system].normalise == "icd") if system in systems else system == ICD10CM_SYSTEM
                filters[code] = (
                    {"property": "concept", "op": "is-a", "value": code}
                    if icd
                    else {"property": "code", "op": "regex", "value": f"^{re.escape(code)}.*"}
                )
            elif code not in concepts:
                concept: Json = {"code": code}
                if row.display and not is_cpt_code(system, code):
                    concept["display"] = row.display
                concepts[code] = concept
        if concepts:
            include.append({"system": system, "concept": [concepts[c] for c in sorted(concepts)]})
        # One include per prefix: filters inside one include must ALL be true (R4
        # ValueSet.compose.include.filter), so several prefixes in one include select nothing.
        include.extend({"system": system, "filter": [filters[c]]} for c in sorted(filters))
    statuses = sorted({r.provenance.status for r in valueset.rows})
    sources = sorted({r.provenance.source for r in valueset.rows})
    windows = sorted(
        f"{_display_code(r, systems)} ({r.valid_from or '…'}..{r.valid_to or '…'})"
        for r in valueset.rows
        if r.valid_from or r.valid_to
    )
    settled = all(s in SETTLED for s in statuses)
    description = (
        f"{valueset.title or valueset.name}. {len(valueset.rows)} rows from mappings/ "
        f"({spec.id}, {spec.year}). Row statuses: {', '.join(statuses) or 'none'}. "
        f"Row sources: {' | '.join(sources) or 'none'}."
    )
    if windows:
        description += f" Rows valid only in a window (not expressed in compose): {', '.join(windows)}."
    if not settled:
        description += (
            " Rows not verified/official are candidates of this project, not the OHA specification."
        )
    description += " Prefix rows are filters (ICD-10: is-a the category). CPT codes carry no display."
    if not include:
        description += " It has no rows, so it has no compose (an empty value set)."
    out: Json = {
        "resourceType": "ValueSet",
        "id": _resource_id(spec.id, spec.year, valueset.name),
        "text": _narrative(f"{valueset.title or valueset.name} ({spec.id} {spec.year}).", description),
        "url": valueset_url(spec, valueset.name, base),
        "version": spec.version,
        "name": _computable_name(spec.id, valueset.name),
        "title": valueset.title or valueset.name,
        "status": "active" if settled else "draft",
        "experimental": not settled,
        "publisher": PUBLISHER,
        "description": description,
    }
    if include:
        out["compose"] = {"include": include}
    return out


# --------------------------------------------------------------------------------------------------
# CapabilityStatement


def build_capability_statement(
    canonical_base: str,
    implemented: Mapping[str, ResourceCapability],
    *,
    documentation: str | None = None,
    system_operations: Iterable[OperationRef] = (),
    system_interactions: Iterable[str] = (),
    software_version: str | None = None,
    formats: Sequence[str] = ("json",),
    security: Json | None = None,
) -> Json:
    """A minimal R4 CapabilityStatement (kind ``capability``: what the software can do, not one
    installation; cpb-15 then requires ``software``).

    ``implemented`` maps resource type → :class:`ResourceCapability`; the CLI passes
    :func:`cli_capabilities` (``read`` of the conformance resources only: the REST service does not
    exist yet, which ``documentation`` says by default), the future REST service its real routes.
    """
    base = canonical_base.rstrip("/")
    resources = []
    for rtype in sorted(implemented):
        cap = implemented[rtype]
        resource: Json = {"type": rtype}
        if cap.interactions:  # FHIR JSON arrays are never empty
            resource["interaction"] = [{"code": code} for code in cap.interactions]
        if cap.profile:
            resource["profile"] = cap.profile
        if cap.documentation:
            resource["documentation"] = cap.documentation
        if cap.search_params:
            resource["searchParam"] = [_search_param(p) for p in cap.search_params]
        if cap.operations:
            resource["operation"] = [_operation(o) for o in cap.operations]
        resources.append(resource)
    rest: Json = {
        "mode": "server",
        "documentation": documentation
        or (
            "No FHIR REST service exists yet: this statement describes what the fhir-adapter command line "
            "produces (conformance resources and MeasureReports as files). The future service will "
            "publish its own statement at [base]/metadata."
        ),
        "resource": resources,
    }
    if security:  # rest.security (R4 CapabilityStatement): e.g. SMART-on-FHIR with oauth-uris
        rest["security"] = security
    interactions = [{"code": code} for code in system_interactions]
    if interactions:
        rest["interaction"] = interactions
    operations = [_operation(o) for o in system_operations]
    if operations:
        rest["operation"] = operations
    software: Json = {"name": "fhir-adapter"}
    if software_version:
        software["version"] = software_version
    return {
        "resourceType": "CapabilityStatement",
        "id": CAPABILITY_STATEMENT_ID,
        "text": _narrative("What fhir-adapter implements (FHIR R4 4.0.1, JSON)."),
        "url": f"{base}/CapabilityStatement/{CAPABILITY_STATEMENT_ID}",
        "name": "FhirAdapterCapabilityStatement",
        "title": "fhir-adapter capability statement",
        "status": "draft",
        "experimental": True,
        "date": CAPABILITY_STATEMENT_DATE,
        "publisher": PUBLISHER,
        "kind": "capability",
        "software": software,
        "fhirVersion": FHIR_VERSION,
        "format": list(formats),
        "rest": [rest],
    }


def _search_param(p: SearchParam) -> Json:
    out: Json = {"name": p.name, "type": p.type}
    if p.definition:
        out["definition"] = p.definition
    if p.documentation:
        out["documentation"] = p.documentation
    return out


def _operation(o: OperationRef) -> Json:
    out: Json = {"name": o.name, "definition": o.definition}
    if o.documentation:
        out["documentation"] = o.documentation
    if o.extension:
        out["extension"] = [dict(e) for e in o.extension]
    return out


# --------------------------------------------------------------------------------------------------
# files


def dumps(resource: Mapping[str, Any]) -> bytes:
    """Pretty JSON: indent 2, sorted keys, UTF-8, trailing newline (byte-stable for drift tests)."""
    return (json.dumps(resource, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def render_conformance(mappings: Mappings, canonical_base: str) -> dict[str, bytes]:
    """File name → bytes of every conformance resource ``mappings`` defines (what
    :func:`write_conformance` writes), for drift tests that compare without writing."""
    files: dict[str, bytes] = {}
    for measure_id, year in sorted(mappings.measures):
        spec = mappings.measures[(measure_id, year)]
        files[f"Measure-{measure_id}-{year}.json"] = dumps(
            build_measure(spec, canonical_base, ccos=mappings.ccos)
        )
        files[f"Library-{measure_id}-{year}.json"] = dumps(build_library(spec, canonical_base))
        for name in sorted(spec.valuesets):
            files[f"ValueSet-{measure_id}-{year}-{name}.json"] = dumps(
                build_valueset(spec, spec.valuesets[name], canonical_base, systems=mappings.systems)
            )
    files[f"CapabilityStatement-{CAPABILITY_STATEMENT_ID}.json"] = dumps(
        build_capability_statement(canonical_base, cli_capabilities())
    )
    return dict(sorted(files.items()))


def write_conformance(mappings: Mappings, out_dir: Path, canonical_base: str) -> list[Path]:
    """Write :func:`render_conformance` into ``out_dir`` (created if missing); returns the paths
    written, sorted. Files of the same names are overwritten; other files are left alone."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in render_conformance(mappings, canonical_base).items():
        path = out_dir / name
        path.write_bytes(data)
        written.append(path)
    return written


__all__ = [
    "CAPABILITY_STATEMENT_DATE",
    "PROPORTION_MEASURE_PROFILE",
    "RULE_LANGUAGE",
    "Assumption",
    "OperationRef",
    "ResourceCapability",
    "SearchParam",
    "assumptions",
    "build_capability_statement",
    "build_library",
    "build_measure",
    "build_valueset",
    "cli_capabilities",
    "data_requirements",
    "dumps",
    "library_url",
    "measure_url",
    "render_conformance",
    "valueset_url",
    "write_conformance",
]
