"""DEQM MeasureReports from an :class:`~fhir_adapter.store.evaluate.Evaluation`.

Da Vinci DEQM STU5 (5.0.0) profiles, R4 ``MeasureReport.type`` codes:
individual (``indv-measurereport-deqm``), summary (``summary-measurereport-deqm``) and
subject-list (``subjectlist-measurereport-deqm``). CQF Measures proportion semantics
(CQFM STU5 §3.4): score = numerator / (denominator − denominator-exclusion), omitted when that is
0 (deqm-6); strata are counted within each population. Group, population and stratifier ids
are exactly those of the Measure (spec §2 "Population structure").

Every report carries four stamps as extensions (the project's own, UNVERIFIED as a standard):
the data cut (``--as-of``), the mappings hash, the engine version and the source mode.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fhir_adapter.fhir.dates import from_micros, iso_instant
from fhir_adapter.measure.engine import ENGINE_VERSION
from fhir_adapter.measure.spec import MeasureSpec
from fhir_adapter.report.conformance import POPULATIONS, measure_url
from fhir_adapter.store.evaluate import ChildResult, Evaluation, Evidence

DEQM = "http://hl7.org/fhir/us/davinci-deqm/StructureDefinition/"
PROFILES = {
    "individual": DEQM + "indv-measurereport-deqm",
    "summary": DEQM + "summary-measurereport-deqm",
    "subject-list": DEQM + "subjectlist-measurereport-deqm",
}
#: DEQM STU5 individual profile: ``evaluatedResource.extension:criteriaReference`` is the core
#: ``cqf-criteriaReference`` (DEQM's own extension-criteriaReference is deprecated in its favour).
CRITERIA_REFERENCE = "http://hl7.org/fhir/StructureDefinition/cqf-criteriaReference"
#: DEQM STU5 deqm-3: the scoring at the root (our choice) or on every group, never both.
MEASURE_SCORING = "http://hl7.org/fhir/us/davinci-deqm/StructureDefinition/extension-measureScoring"
SCORING = {
    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/measure-scoring", "code": "proportion"}]
}
POPULATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/measure-population"
IMPROVEMENT = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/measure-improvement-notation",
            "code": "increase",
            "display": "Increased score indicates improvement",
        }
    ]
}
BIRTH_SEX_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-AdministrativeGender"
GENDER_SYSTEM = "http://hl7.org/fhir/administrative-gender"
MISSING = "missing"


@dataclass(frozen=True)
class ReportContext:
    """What every report of one evaluation shares."""

    canonical_base: str
    mappings_hash: str
    generated: datetime
    member_system: str = ""
    reporter: dict[str, Any] = field(
        default_factory=lambda: {
            "display": "fhir-adapter",
            "identifier": {"system": "urn:ietf:rfc:3986", "value": "urn:fhir-adapter:unconfigured"},
        }
    )

    def ext(self, name: str) -> str:
        return f"{self.canonical_base}/StructureDefinition/{name}"


def measure_canonical(spec: MeasureSpec, canonical_base: str) -> str:
    """``url|version`` of the generated Measure (deqm-0: the measure has a version)."""
    return f"{measure_url(spec, canonical_base)}|{spec.version}"


def population_id(group: str, code: str) -> str:
    return f"{group}-{code}"


def _code(code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": POPULATION_SYSTEM, "code": code, "display": display}]}


def _stamps(ev: Evaluation, ctx: ReportContext) -> list[dict[str, Any]]:
    return [
        {"url": MEASURE_SCORING, "valueCodeableConcept": SCORING},
        {"url": ctx.ext("report-data-cut"), "valueDateTime": iso_instant(from_micros(ev.as_of))},
        {"url": ctx.ext("report-mappings-hash"), "valueString": ctx.mappings_hash},
        {"url": ctx.ext("report-engine-version"), "valueString": ENGINE_VERSION},
        {"url": ctx.ext("report-source-mode"), "valueCode": ev.sources},
    ]


def _base(ev: Evaluation, ctx: ReportContext, rtype: str, rid: str) -> dict[str, Any]:
    report: dict[str, Any] = {
        "resourceType": "MeasureReport",
        "id": rid,
        "meta": {"profile": [PROFILES[rtype]]},
        "extension": _stamps(ev, ctx),
        "status": "complete",
        "type": rtype,
        "measure": measure_canonical(ev.spec, ctx.canonical_base),
        "date": iso_instant(ctx.generated),
        "period": {"start": ev.period_start.isoformat(), "end": ev.period_end.isoformat()},
        "improvementNotation": IMPROVEMENT,
    }
    report["reporter"] = ctx.reporter
    return report


def report_id(ev: Evaluation, kind: str, *parts: str) -> str:
    """Deterministic: the same evaluation inputs give the same id (≤ 64 characters)."""
    key = "|".join(
        (ev.spec.id, ev.spec.version, kind, ev.period_start.isoformat(), ev.period_end.isoformat(),
         str(ev.as_of), ev.sources, *parts)
    )  # fmt: skip
    return f"{ev.spec.id[:24]}-{kind[:4]}-{hashlib.sha256(key.encode()).hexdigest()[:32]}"


def _score(num: int, den: int, denex: int) -> dict[str, Any] | None:
    base = den - denex
    if base <= 0:
        return None
    return {"value": round(num / base, 6)}


# -- stratifiers --------------------------------------------------------------------------------
def _sex(child: ChildResult) -> dict[str, Any]:
    if child.sex is None:
        return {"text": MISSING}
    if child.sex_is_birth_sex:
        code = child.sex.upper()
        label = {"F": "female", "M": "male"}.get(code, "unknown")
        return {
            "coding": [{"system": BIRTH_SEX_SYSTEM, "code": code}],
            "text": f"{label} (sex assigned at birth)",
        }
    return {
        "coding": [{"system": GENDER_SYSTEM, "code": child.sex}],
        "text": f"{child.sex} (administrative gender)",
    }


def _race_ethnicity(child: ChildResult) -> dict[str, Any]:
    # REALD comes from eligibility extracts; EHR race/ethnicity is labelled as such (spec §4).
    if child.reald_race_ethnicity:
        return {"text": child.reald_race_ethnicity}
    if child.ethnicity and child.ethnicity.lower() == "hispanic or latino":
        return {"text": f"{child.ethnicity} (EHR-reported)"}
    if child.race:
        return {"text": f"{child.race} (EHR-reported)"}
    return {"text": MISSING}


def _language(child: ChildResult) -> dict[str, Any]:
    # REALD preferred language from eligibility extracts, else the EHR's, labelled (spec §4).
    if child.reald_language:
        return {"text": child.reald_language}
    if child.language:
        return {"text": f"{child.language} (EHR-reported)"}
    return {"text": MISSING}


def _text(value: object) -> dict[str, Any]:
    return {"text": MISSING if value is None or value == "" else str(value)}


def stratum_value(spec: MeasureSpec, stratifier: str, child: ChildResult) -> dict[str, Any]:
    """The ``stratum.value`` CodeableConcept of a child for one stratifier id (spec §2)."""
    if stratifier == "cco":
        return _text(child.cco)
    if stratifier == "age":
        return _text(child.age)
    if stratifier == "age-band":
        # A partial birth date may leave the age uncertain but the band certain.
        band = None
        if child.age_range is not None:
            young, old = child.age_range
            band = next((b.code for b in spec.age_bands if b.min_age <= young and old <= b.max_age), None)
        return _text(band)
    if stratifier == "sex":
        return _sex(child)
    if stratifier == "race-ethnicity":
        return _race_ethnicity(child)
    if stratifier == "language":
        return _language(child)
    if stratifier == "disability":
        return _text(child.disability)
    if stratifier == "county":
        return _text(child.county)
    raise ValueError(f"unknown stratifier {stratifier!r}")


def _counts(children: Sequence[ChildResult], index: int) -> dict[str, int]:
    return {code: sum(c.groups[index].member_of(code) for c in children) for code, _ in POPULATIONS}


def _members(children: Iterable[ChildResult], index: int, code: str) -> list[ChildResult]:
    return [c for c in children if c.groups[index].member_of(code)]


def _key(value: dict[str, Any]) -> str:
    return str(value.get("text"))


def _group(
    ev: Evaluation,
    index: int,
    children: list[ChildResult],
    subject_results: Callable[[str, str, list[ChildResult]], dict[str, Any]] | None,
) -> dict[str, Any]:
    spec_group = ev.spec.groups[index]
    counts = _counts(children, index)
    group: dict[str, Any] = {"id": spec_group.id, "population": []}
    for code, display in POPULATIONS:
        pop: dict[str, Any] = {
            "id": population_id(spec_group.id, code),
            "code": _code(code, display),
            "count": counts[code],
        }
        if subject_results is not None:
            pop["subjectResults"] = subject_results(
                population_id(spec_group.id, code), "", _members(children, index, code)
            )
        group["population"].append(pop)
    score = _score(counts["numerator"], counts["denominator"], counts["denominator-exclusion"])
    if score is not None:
        group["measureScore"] = score
    stratifiers = []
    ip_children = [c for c in children if c.groups[index].ip]
    for strat_id in ev.spec.stratifiers:
        buckets: dict[str, tuple[dict[str, Any], list[ChildResult]]] = {}
        for child in ip_children:
            value = stratum_value(ev.spec, strat_id, child)
            buckets.setdefault(_key(value), (value, []))[1].append(child)
        strata = []
        for key in sorted(buckets):
            value, members = buckets[key]
            sc = _counts(members, index)
            stratum: dict[str, Any] = {"value": value, "population": []}
            for code, display in POPULATIONS:
                spop: dict[str, Any] = {"code": _code(code, display), "count": sc[code]}
                if subject_results is not None:
                    spop["subjectResults"] = subject_results(
                        population_id(spec_group.id, code),
                        f"{strat_id}={key}",
                        _members(members, index, code),
                    )
                stratum["population"].append(spop)
            s_score = _score(sc["numerator"], sc["denominator"], sc["denominator-exclusion"])
            if s_score is not None:
                stratum["measureScore"] = s_score
            strata.append(stratum)
        stratifiers.append({"id": strat_id, "code": [{"text": strat_id}], "stratum": strata})
    group["stratifier"] = stratifiers
    return group


def summary_report(
    ev: Evaluation, ctx: ReportContext, *, children: list[ChildResult] | None = None
) -> dict[str, Any]:
    """DEQM summary MeasureReport: counts and scores per group, stratified."""
    members = ev.children if children is None else children
    report = _base(ev, ctx, "summary", report_id(ev, "summary"))
    report["group"] = [_group(ev, i, members, None) for i in range(len(ev.spec.groups))]
    return report


def individual_report(ev: Evaluation, ctx: ReportContext, child: ChildResult) -> dict[str, Any]:
    """DEQM individual MeasureReport with ``evaluatedResource`` evidence, each reference
    carrying ``cqfm-criteriaReference`` extensions naming the populations it supported."""
    report = _base(ev, ctx, "individual", individual_id(ev, child))
    subject: dict[str, Any] = {"reference": f"Patient/{child.subject_id}"}
    if child.member_id and ctx.member_system:
        subject["identifier"] = {"system": ctx.member_system, "value": child.member_id}
    report["subject"] = subject
    groups = []
    for index, result in enumerate(child.groups):
        counts = {code: int(result.member_of(code)) for code, _ in POPULATIONS}
        group: dict[str, Any] = {
            "id": ev.spec.groups[index].id,
            "extension": [{"url": ctx.ext("reason-code"), "valueCode": result.reason}],
            "population": [
                {"id": population_id(result.group, code), "code": _code(code, display), "count": counts[code]}
                for code, display in POPULATIONS
            ],
        }
        score = _score(counts["numerator"], counts["denominator"], counts["denominator-exclusion"])
        if score is not None:
            group["measureScore"] = score
        groups.append(group)
    report["group"] = groups
    evidence = _evaluated_resources(ev, child, ev.evidence.get(child.person, []))
    if evidence:
        report["evaluatedResource"] = evidence
    return report


def individual_id(ev: Evaluation, child: ChildResult) -> str:
    return report_id(ev, "individual", child.person)


def _evaluated_resources(
    ev: Evaluation, child: ChildResult, evidence: list[Evidence]
) -> list[dict[str, Any]]:
    by_resource: dict[tuple[str, str, str], set[str]] = {}
    group_ids = [g.id for g in ev.spec.groups]
    for item in evidence:
        groups = group_ids if item.group == "*" else [item.group]
        for gid, result in zip(group_ids, child.groups, strict=True):
            if gid not in groups:
                continue
            # Evidence only for populations the child is in.
            if result.member_of(item.population):
                by_resource.setdefault((item.rtype, item.rid, item.source), set()).add(
                    population_id(gid, item.population)
                )
    out = []
    for (rtype, rid, source), populations in sorted(by_resource.items()):
        out.append(
            {
                "extension": [{"url": CRITERIA_REFERENCE, "valueString": p} for p in sorted(populations)],
                "reference": f"{rtype}/{rid}",
                "display": f"{rtype}/{rid} from source {source}",
            }
        )
    return out


def subject_list_bundle(ev: Evaluation, ctx: ReportContext) -> dict[str, Any]:
    """A collection Bundle: the DEQM subject-list MeasureReport (its populations' and strata's
    ``subjectResults`` point at contained Lists of individual MeasureReports, never Patients)
    followed by those individual MeasureReports."""
    report = _base(ev, ctx, "subject-list", report_id(ev, "subject-list"))
    refs = {c.person: f"MeasureReport/{individual_id(ev, c)}" for c in ev.children}
    contained: list[dict[str, Any]] = []

    def subject_results(pop_id: str, stratum: str, members: list[ChildResult]) -> dict[str, Any]:
        list_id = "list-" + hashlib.sha256(f"{pop_id}|{stratum}".encode()).hexdigest()[:16]
        title = f"{pop_id} {stratum}".strip()
        listed: dict[str, Any] = {
            "resourceType": "List",
            "id": list_id,
            "status": "current",
            "mode": "snapshot",
            "title": title,
        }
        if members:
            listed["entry"] = [{"item": {"reference": refs[c.person]}} for c in members]
        else:  # FHIR forbids empty arrays; an empty List says why it is empty
            listed["emptyReason"] = {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/list-empty-reason", "code": "nilknown"}
                ]
            }
        contained.append(listed)
        return {"reference": f"#{list_id}"}

    report["group"] = [_group(ev, i, ev.children, subject_results) for i in range(len(ev.spec.groups))]
    report["contained"] = contained
    individuals = [individual_report(ev, ctx, c) for c in ev.children if any(g.ip for g in c.groups)]
    entries = [{"fullUrl": f"MeasureReport/{r['id']}", "resource": r} for r in [report, *individuals]]
    return {"resourceType": "Bundle", "id": report["id"] + "-bundle", "type": "collection", "entry": entries}
