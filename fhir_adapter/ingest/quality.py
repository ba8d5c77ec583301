"""Measure-specific data-quality warnings for one pushed resource.

Spec §5: EHRs need "a per-submission acknowledgement with data-quality warnings (e.g. 'Encounter
has no diagnosis')". Each warning here anticipates a rule of spec §3 that will make the resource
not count, or count ambiguously: Encounter ``status = finished`` and its dating (Edge rule 7),
diagnoses through ``Condition.encounter``, ``Encounter.diagnosis`` or ``reasonCode``; Procedure
``status = completed``; Claim ``use = claim``; claim lines dated by their from-date (Edge rule 7);
the Medicaid member id that links a child across sources ("Identity"); birth dates and partial
dates ("Age", Edge rule 3); Coverage whose payor is a CCO listed in ``mappings/ccos.csv``
("Enrollment"); unknown code systems and local codes ("Code handling").

Pure: a resource dict and :class:`QualityRules` (built once from the loaded
:class:`~fhir_adapter.measure.spec.Mappings`) in, OperationOutcome issues out. Plain dict access,
no pydantic (DESIGN.md §5): it runs on every ingested line. Each issue carries a stable code from
:data:`CHECKS` in ``issue.details`` (system :data:`DQ_SYSTEM`); a Condition may arrive after its
Encounter, so nothing here is an error.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any
from zoneinfo import ZoneInfo

from fhir_adapter.fhir.dates import parse_day_range
from fhir_adapter.fhir.outcome import Issue, Severity
from fhir_adapter.fhir.references import parse_reference
from fhir_adapter.measure.spec import Mappings
from fhir_adapter.settings import DEFAULT_CANONICAL_BASE
from fhir_adapter.terminology.codes import SHARED_NAMESPACES, Terminology

#: Code system of the data-quality check codes (our own; stable whatever the site's canonical base).
DQ_SYSTEM = f"{DEFAULT_CANONICAL_BASE}/CodeSystem/data-quality"


@dataclass(frozen=True)
class Check:
    """One data-quality check: its stable code, OperationOutcome severity and IssueType."""

    code: str
    severity: Severity
    issue_type: str
    summary: str


#: Every check, by code (docs/what-to-send.md lists them).
CHECKS: dict[str, Check] = {
    c.code: c
    for c in (
        Check("patient-no-member-id", "warning", "required",
              "Patient has no Medicaid member id: the child cannot be linked across sources"),
        Check("patient-no-birth-date", "warning", "required",
              "Patient has no birth date: the child is not evaluated"),
        Check("coverage-payor-not-cco", "warning", "business-rule",
              "Coverage payor is not a CCO listed in mappings/ccos.csv: it is not enrollment"),
        Check("coverage-payor-reference", "information", "informational",
              "Coverage payor is an Organization reference: it counts if that Organization has a CCO identifier"),
        Check("coverage-not-active", "warning", "business-rule", "Coverage status is not active: it is ignored"),
        Check("encounter-not-finished", "warning", "business-rule",
              "Encounter status is not finished: it will not count"),
        Check("encounter-no-period", "warning", "required", "Encounter has no period: it cannot be dated"),
        Check("encounter-no-diagnosis", "warning", "business-rule",
              "Encounter has no diagnosis (yet): link Conditions with Condition.encounter"),
        Check("encounter-no-service-code", "warning", "required",
              "Encounter has no type or serviceType code: it cannot be a qualifying service"),
        Check("procedure-not-completed", "warning", "business-rule",
              "Procedure status is not completed: it will not count"),
        Check("procedure-no-date", "warning", "required",
              "Procedure has no performedDateTime or performedPeriod: it cannot be dated"),
        Check("condition-no-encounter", "information", "informational",
              "Condition has no Condition.encounter: it supports a service only when one names it"),
        Check("claim-use-not-claim", "warning", "business-rule", "Claim use is not claim: it will not count"),
        Check("claim-status-not-counted", "warning", "business-rule",
              "Claim status is cancelled, draft or entered-in-error: it will not count"),
        Check("eob-outcome-not-counted", "warning", "business-rule",
              "ExplanationOfBenefit outcome is not complete or partial: it will not count"),
        Check("claim-no-diagnosis", "warning", "business-rule",
              "Claim has no diagnosis: it cannot count where the measure needs one"),
        Check("line-no-service-date", "warning", "required",
              "Claim or ExplanationOfBenefit line without a service date: it is not a service"),
        Check("no-patient", "warning", "required", "No Patient reference: the resource belongs to no child"),
        Check("partial-date", "warning", "incomplete",
              "Partial date: decisions near period and age-band edges will be ambiguous"),
        Check("invalid-date", "warning", "value", "Not a FHIR date: the value is ignored"),
        Check("unknown-code-system", "warning", "code-invalid",
              "Code in an unknown code system: it never matches a value set"),
        Check("local-code-unmapped", "warning", "code-invalid",
              "Local code without a row in mappings/local-codes.csv: it never matches"),
        Check("local-code-mapped", "information", "informational",
              "Local code mapped to a standard code through mappings/local-codes.csv"),
        Check("code-not-in-valuesets", "information", "informational",
              "Code in none of the measures' value sets: it does not count"),
    )
}  # fmt: skip

_COUNTED_CLAIM_STATUS_NOT = frozenset({"cancelled", "draft", "entered-in-error"})
_COUNTED_EOB_OUTCOMES = frozenset({"complete", "partial"})


def _issue(code: str, diagnostics: str, expression: str) -> Issue:
    check = CHECKS[code]
    return Issue(check.severity, check.issue_type, diagnostics, expression, (DQ_SYSTEM, code))


def _namespace(canonical: str) -> str:
    for group in SHARED_NAMESPACES:
        if canonical in group:
            return min(group)
    return canonical


class QualityRules:
    """What the checks need from ``mappings/`` and settings, indexed once. Immutable."""

    def __init__(self, mappings: Mappings, member_system: str, tz: ZoneInfo) -> None:
        self.term = Terminology(mappings)
        self.member_system = member_system
        self.tz = tz
        self.cco_identifiers = frozenset(ident for cco in mappings.ccos for ident in cco.identifiers)
        self.cco_systems = tuple(sorted({system for system, _value in self.cco_identifiers}))
        self.local_systems = frozenset(lc.system for lc in mappings.local_codes)
        exact: set[tuple[str, str]] = set()
        prefixes: dict[str, set[str]] = defaultdict(set)
        for spec in mappings.measures.values():
            for valueset in spec.valuesets.values():
                for row in valueset.rows:
                    ns = _namespace(row.system)
                    if row.match == "exact":
                        exact.add((ns, row.code))
                    else:
                        prefixes[ns].add(row.code)
        self._exact = frozenset(exact)
        self._prefixes = {ns: frozenset(codes) for ns, codes in prefixes.items()}
        self._prefix_lengths = {ns: tuple(sorted({len(c) for c in codes})) for ns, codes in prefixes.items()}

    def in_any_valueset(self, canonical: str, code: str) -> bool:
        """Whether the normalised ``code`` of ``canonical`` is in a value set of any measure
        year (exact or prefix rows; validity windows ignored)."""
        ns = _namespace(canonical)
        if (ns, code) in self._exact:
            return True
        found = self._prefixes.get(ns, frozenset())
        return any(code[:n] in found for n in self._prefix_lengths.get(ns, ()) if n <= len(code))


# --------------------------------------------------------------------------------------------
# element helpers


def _obj(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _patient_ref(element: Any) -> bool:
    target = parse_reference(_obj(element).get("reference"))
    return target is not None and target[0] == "Patient"


def _check_date(value: Any, path: str, rules: QualityRules, out: list[Issue]) -> bool:
    """Warn about a partial or unusable date; ``True`` when the value is usable at all."""
    if value is None:
        return False
    days = parse_day_range(value, rules.tz)
    if days is None:
        out.append(
            _issue("invalid-date", f"{path} {str(value)[:40]!r} is not a FHIR date: it is ignored", path)
        )
        return False
    if days.precision != "day":
        out.append(
            _issue(
                "partial-date",
                f"{path} {value!r} is a partial date ({days.precision} only): decisions near period and "
                "age-band edges will be ambiguous",
                path,
            )
        )
    return True


def _check_concept(
    concept: Any, path: str, label: str, rules: QualityRules, out: list[Issue], *, valuesets: bool = True
) -> None:
    """Code-system checks for one CodeableConcept (``label`` says what it is, e.g.
    "Encounter type"). A concept with no usable coding is left alone."""
    codings: list[tuple[int, str, str]] = []
    for n, c in enumerate(_list(_obj(concept).get("coding"))):
        if isinstance(c, dict) and isinstance(c.get("code"), str) and c["code"].strip():
            system = c.get("system")
            codings.append((n, system if isinstance(system, str) else "", c["code"]))
    if not codings:
        return
    term = rules.term
    known = [(n, system, code) for n, system, code in codings if term.known(system)]
    if not known:
        n, system, code = codings[0]
        systems = ", ".join(sorted({s or "(no system)" for _n, s, _c in codings}))
        out.append(
            _issue(
                "unknown-code-system",
                f"{label} {code!r} is in an unknown code system {systems} (not in mappings/code-systems.csv "
                "or mappings/system-aliases.csv): it never matches a value set",
                f"{path}.coding[{n}].system",
            )
        )
        return
    has_standard = any((term.canonical_system(s) or "") not in rules.local_systems for _n, s, _c in known)
    pairs: list[tuple[str, str]] = []
    unmapped = False
    for n, system, code in known:
        translated = term.translate(system, code)
        pairs.extend(translated)
        if not translated or translated[0][0] not in rules.local_systems:
            continue
        if len(translated) > 1:
            targets = ", ".join(f"{s} {c}" for s, c in translated[1:])
            out.append(
                _issue(
                    "local-code-mapped",
                    f"{label} local code {code!r} ({system}) counts as {targets} (mappings/local-codes.csv)",
                    f"{path}.coding[{n}]",
                )
            )
        elif not has_standard:
            unmapped = True
            out.append(
                _issue(
                    "local-code-unmapped",
                    f"{label} local code {code!r} ({system}) has no row in mappings/local-codes.csv and no "
                    "standard coding beside it: it never matches a value set",
                    f"{path}.coding[{n}]",
                )
            )
    if valuesets and pairs and not unmapped and not any(rules.in_any_valueset(s, c) for s, c in pairs):
        codes = ", ".join(sorted({c for _n, _s, c in known}))
        out.append(
            _issue(
                "code-not-in-valuesets",
                f"{label} {codes} is in none of the measures' value sets: it does not count toward a measure",
                path,
            )
        )


def _check_subject(resource: Mapping[str, Any], rtype: str, element: str, out: list[Issue]) -> None:
    if not _patient_ref(resource.get(element)):
        sent = _obj(resource.get(element)).get("reference")
        how = f"reference {str(sent)[:80]!r} does not name a Patient" if sent else "no Patient reference"
        out.append(
            _issue(
                "no-patient",
                f"{rtype}.{element}: {how}: the resource belongs to no child",
                f"{rtype}.{element}",
            )
        )


# --------------------------------------------------------------------------------------------
# per type


def _patient(r: Mapping[str, Any], rules: QualityRules, out: list[Issue]) -> None:
    has_member = any(
        isinstance(ident, dict)
        and ident.get("system") == rules.member_system
        and isinstance(ident.get("value"), str)
        and ident["value"].strip()
        for ident in _list(r.get("identifier"))
    )
    if not has_member:
        out.append(
            _issue(
                "patient-no-member-id",
                f"Patient has no Medicaid member id (identifier system {rules.member_system}): the child "
                "cannot be linked across sources",
                "Patient.identifier",
            )
        )
    if r.get("birthDate") is None:
        out.append(
            _issue(
                "patient-no-birth-date",
                "Patient has no birth date: the child cannot be placed in an age band and is not evaluated",
                "Patient.birthDate",
            )
        )
    else:
        _check_date(r.get("birthDate"), "Patient.birthDate", rules, out)
    _check_date(r.get("deceasedDateTime"), "Patient.deceasedDateTime", rules, out)


def _coverage(r: Mapping[str, Any], rules: QualityRules, out: list[Issue]) -> None:
    status = r.get("status")
    if status != "active":
        out.append(
            _issue(
                "coverage-not-active",
                f"Coverage status is {status!r}, not active: it is not enrollment",
                "Coverage.status",
            )
        )
    _check_subject(r, "Coverage", "beneficiary", out)
    sent: list[str] = []
    references: list[str] = []
    cco = False
    for payor in _list(r.get("payor")):
        ident = _obj(_obj(payor).get("identifier"))
        value = ident.get("value")
        if isinstance(value, str) and value.strip():
            system = ident.get("system") if isinstance(ident.get("system"), str) else ""
            if (system, value.strip()) in rules.cco_identifiers:
                cco = True
            sent.append(f"{system}|{value.strip()}")
        target = parse_reference(_obj(payor).get("reference"))
        if target is not None and target[0] == "Organization":
            references.append(f"Organization/{target[1]}")
    if not cco and references:
        out.append(
            _issue(
                "coverage-payor-reference",
                f"Coverage payor {', '.join(references)} counts only if that Organization carries a CCO "
                "identifier listed in mappings/ccos.csv",
                "Coverage.payor",
            )
        )
    elif not cco:
        what = f"payor identifiers {', '.join(sent)}" if sent else "no payor identifier"
        systems = " or ".join(rules.cco_systems) or "(none configured)"
        out.append(
            _issue(
                "coverage-payor-not-cco",
                f"Coverage payor is not a CCO listed in mappings/ccos.csv ({what}; CCOs are named by "
                f"identifier system {systems}): it is not CCO enrollment",
                "Coverage.payor",
            )
        )
    period = _obj(r.get("period"))
    _check_date(period.get("start"), "Coverage.period.start", rules, out)
    _check_date(period.get("end"), "Coverage.period.end", rules, out)


def _encounter(
    r: Mapping[str, Any], rules: QualityRules, out: list[Issue], linked_encounters: Collection[str]
) -> None:
    status = r.get("status")
    if status != "finished":
        out.append(
            _issue(
                "encounter-not-finished",
                f"Encounter status is {status!r}, not finished: it will not count",
                "Encounter.status",
            )
        )
    _check_subject(r, "Encounter", "subject", out)
    period = _obj(r.get("period"))
    start_ok = _check_date(period.get("start"), "Encounter.period.start", rules, out)
    end_ok = _check_date(period.get("end"), "Encounter.period.end", rules, out)
    if not start_ok and not end_ok:
        out.append(
            _issue(
                "encounter-no-period",
                "Encounter has no period (period.start, else period.end, dates the service): it cannot count",
                "Encounter.period",
            )
        )
    concepts = [(f"Encounter.type[{n}]", c) for n, c in enumerate(_list(r.get("type")))]
    if r.get("serviceType") is not None:
        concepts.append(("Encounter.serviceType", r.get("serviceType")))
    if not any(_list(_obj(c).get("coding")) for _p, c in concepts):
        out.append(
            _issue(
                "encounter-no-service-code",
                "Encounter has no type or serviceType coding (CPT, HCPCS or a mapped local visit type): it cannot "
                "be a qualifying service",
                "Encounter.type",
            )
        )
    for path, concept in concepts:
        _check_concept(concept, path, "Encounter type", rules, out)
    reasons = _list(r.get("reasonCode"))
    if (
        not _list(r.get("diagnosis"))
        and not reasons
        and not _list(r.get("reasonReference"))
        and r.get("id") not in linked_encounters
    ):
        out.append(
            _issue(
                "encounter-no-diagnosis",
                "Encounter has no diagnosis (no Encounter.diagnosis, no reasonCode; link Conditions with "
                "Condition.encounter): it cannot count where the measure needs a diagnosis, unless a Condition "
                "naming it arrives later",
                "Encounter.diagnosis",
            )
        )
    for n, concept in enumerate(reasons):
        _check_concept(concept, f"Encounter.reasonCode[{n}]", "diagnosis", rules, out)


def _procedure(r: Mapping[str, Any], rules: QualityRules, out: list[Issue]) -> None:
    status = r.get("status")
    if status != "completed":
        out.append(
            _issue(
                "procedure-not-completed",
                f"Procedure status is {status!r}, not completed: it will not count",
                "Procedure.status",
            )
        )
    _check_subject(r, "Procedure", "subject", out)
    if "performedDateTime" in r:
        dated = _check_date(r.get("performedDateTime"), "Procedure.performedDateTime", rules, out)
    else:
        period = _obj(r.get("performedPeriod"))
        dated = _check_date(period.get("start"), "Procedure.performedPeriod.start", rules, out)
    if not dated:
        out.append(
            _issue(
                "procedure-no-date",
                "Procedure has no usable performedDateTime or performedPeriod.start: it cannot be dated",
                "Procedure.performed",
            )
        )
    _check_concept(r.get("code"), "Procedure.code", "Procedure code", rules, out)
    for n, concept in enumerate(_list(r.get("reasonCode"))):
        _check_concept(concept, f"Procedure.reasonCode[{n}]", "diagnosis", rules, out)


def _condition(r: Mapping[str, Any], rules: QualityRules, out: list[Issue]) -> None:
    _check_subject(r, "Condition", "subject", out)
    _check_concept(r.get("code"), "Condition.code", "Condition", rules, out)
    if not _obj(r.get("encounter")).get("reference"):
        out.append(
            _issue(
                "condition-no-encounter",
                "Condition has no Condition.encounter: it supports a service only when an Encounter or "
                "Procedure names it",
                "Condition.encounter",
            )
        )
    _check_date(r.get("recordedDate"), "Condition.recordedDate", rules, out)
    _check_date(r.get("onsetDateTime"), "Condition.onsetDateTime", rules, out)


def _claim_like(r: Mapping[str, Any], rtype: str, rules: QualityRules, out: list[Issue]) -> None:
    use = r.get("use")
    if use != "claim":
        out.append(
            _issue(
                "claim-use-not-claim",
                f"{rtype} use is {use!r}, not claim: it will not count (preauthorizations and predeterminations "
                "are not services)",
                f"{rtype}.use",
            )
        )
    status = r.get("status")
    if isinstance(status, str) and status in _COUNTED_CLAIM_STATUS_NOT:
        out.append(
            _issue(
                "claim-status-not-counted",
                f"{rtype} status is {status!r}: it will not count",
                f"{rtype}.status",
            )
        )
    outcome = r.get("outcome")
    if rtype == "ExplanationOfBenefit" and not (
        isinstance(outcome, str) and outcome in _COUNTED_EOB_OUTCOMES
    ):
        out.append(
            _issue(
                "eob-outcome-not-counted",
                f"ExplanationOfBenefit outcome is {r.get('outcome')!r}, not complete or partial: it will not count",
                "ExplanationOfBenefit.outcome",
            )
        )
    _check_subject(r, rtype, "patient", out)
    diagnoses = _list(r.get("diagnosis"))
    if not diagnoses:
        out.append(
            _issue(
                "claim-no-diagnosis",
                f"{rtype} has no diagnosis: it cannot count where the measure needs one",
                f"{rtype}.diagnosis",
            )
        )
    for n, dx in enumerate(diagnoses):
        concept = _obj(dx).get("diagnosisCodeableConcept")
        if concept is not None:
            _check_concept(
                concept, f"{rtype}.diagnosis[{n}].diagnosisCodeableConcept", "diagnosis", rules, out
            )
    for n, raw_item in enumerate(_list(r.get("item"))):
        item = _obj(raw_item)
        where = f"{rtype}.item[{n}]"
        if "servicedDate" in item:
            dated = _check_date(item.get("servicedDate"), f"{where}.servicedDate", rules, out)
        else:
            dated = _check_date(
                _obj(item.get("servicedPeriod")).get("start"), f"{where}.servicedPeriod.start", rules, out
            )
        if not dated:
            line = item.get("sequence", n + 1)
            out.append(
                _issue(
                    "line-no-service-date",
                    f"{rtype} line {line} has no service date (servicedDate or servicedPeriod.start): it is not "
                    "a service",
                    f"{where}.serviced",
                )
            )
        _check_concept(item.get("productOrService"), f"{where}.productOrService", "procedure", rules, out)


def _service_request(r: Mapping[str, Any], rules: QualityRules, out: list[Issue]) -> None:
    _check_subject(r, "ServiceRequest", "subject", out)
    _check_concept(r.get("code"), "ServiceRequest.code", "ServiceRequest", rules, out, valuesets=False)


def check_quality(
    resource: Mapping[str, Any], rules: QualityRules, *, linked_encounters: Collection[str] = ()
) -> list[Issue]:
    """The data-quality issues of one resource (already structurally valid), expressions
    relative to it (``Encounter.diagnosis``). ``linked_encounters``: ids of Encounters that a
    Condition in the same submission names through ``Condition.encounter``."""
    out: list[Issue] = []
    rtype = resource.get("resourceType")
    if rtype == "Patient":
        _patient(resource, rules, out)
    elif rtype == "Coverage":
        _coverage(resource, rules, out)
    elif rtype == "Encounter":
        _encounter(resource, rules, out, linked_encounters)
    elif rtype == "Procedure":
        _procedure(resource, rules, out)
    elif rtype == "Condition":
        _condition(resource, rules, out)
    elif rtype in ("Claim", "ExplanationOfBenefit"):
        _claim_like(resource, rtype, rules, out)
    elif rtype == "ServiceRequest":
        _service_request(resource, rules, out)
    return out


def linked_encounters(resources: Iterable[Mapping[str, Any]]) -> set[str]:
    """Ids of the Encounters that Conditions among ``resources`` name in ``Condition.encounter``."""
    out: set[str] = set()
    for resource in resources:
        if resource.get("resourceType") == "Condition":
            target = parse_reference(_obj(resource.get("encounter")).get("reference"))
            if target is not None and target[0] == "Encounter":
                out.add(target[1])
    return out


def relocate(issue: Issue, prefix: str) -> Issue:
    """``issue`` with its expression moved under ``prefix`` (``Encounter.diagnosis`` →
    ``Bundle.entry[2].resource.diagnosis``)."""
    if not issue.expression:
        return replace(issue, expression=prefix)
    _head, dot, rest = issue.expression.partition(".")
    return replace(issue, expression=f"{prefix}.{rest}" if dot else prefix)
