"""Generic fact extraction, at write time, from one FHIR R4 resource.

DESIGN.md §1 "Facts are generic": every coding, diagnosis (with position and line pointers),
local date, provider id and source category, with no value-set filtering. References stay as
``(type, id)`` text and are resolved at query time, so arrival order does not matter.

The extractor is versioned (:data:`EXTRACTOR_VERSION`); a store whose facts were made by another
version re-materialises them from the raw resources.

Element paths follow FHIR R4 (4.0.1) and CARIN Blue Button STU2 for ExplanationOfBenefit; the
denial and replacement rules are spec §3 Edge rule 6.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from fhir_adapter.fhir.dates import DayRange, parse_day_range, ymd
from fhir_adapter.fhir.references import parse_reference

#: Bump whenever the facts produced for the same resource change.
EXTRACTOR_VERSION = 3

CLAIMS_TYPES = frozenset({"ExplanationOfBenefit", "Claim"})
CLINICAL_TYPES = frozenset({"Encounter", "Procedure", "Condition", "ServiceRequest"})
PROVIDER_TYPES = frozenset({"Practitioner", "PractitionerRole", "Organization"})
FACT_TYPES = (
    CLAIMS_TYPES | CLINICAL_TYPES | PROVIDER_TYPES
    | {"Patient", "Coverage", "Group", "MeasureReport", "Task", "Observation"}
)  # fmt: skip

US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition/"
#: The project's Patient extensions for REALD values from eligibility extracts
#: (``<REALD>race-ethnicity``, ``<REALD>language``, ``<REALD>disability``; value[x] a string,
#: Coding or CodeableConcept). UNVERIFIED: OHA publishes no FHIR profile for REALD.
REALD = "https://github.com/fhir-adapter/oregon-se/fhir/StructureDefinition/reald-"
#: National Provider Identifier (US Core, FHIR R4 identifier registry) and the NUCC Health
#: Care Provider Taxonomy (US Core PractitionerRole binds ``specialty`` to it).
NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
NUCC_SYSTEM = "http://nucc.org/provider-taxonomy"
#: Da Vinci Member Attribution (ATR) List STU2 (2.1.0), Extension ``AttributedProvider`` on
#: ``Group.member`` (value: Reference to Practitioner, PractitionerRole or Organization), and
#: ``ContractValidityPeriod`` on ``Group``.
ATR_ATTRIBUTED_PROVIDER = "http://hl7.org/fhir/us/davinci-atr/StructureDefinition/ext-attributedProvider"
ATR_CONTRACT_PERIOD = "http://hl7.org/fhir/us/davinci-atr/StructureDefinition/ext-contractValidityPeriod"
#: The project's own extensions (UNVERIFIED: no Oregon or Da Vinci profile carries these):
#: ``in-network`` (valueBoolean) and ``cco`` (valueString, a CCO id) on PractitionerRole,
#: ``cco`` also on Group and Group.member, ``county`` (valueString) on PractitionerRole.
OREGON_SE_SD = "https://github.com/fhir-adapter/oregon-se/fhir/StructureDefinition/"
EXT_IN_NETWORK = OREGON_SE_SD + "in-network"
EXT_CCO = OREGON_SE_SD + "cco"
EXT_COUNTY = OREGON_SE_SD + "county"
C4BB_DISCRIMINATOR = "http://hl7.org/fhir/us/carin-bb/CodeSystem/C4BBAdjudicationDiscriminator"
C4BB_PAYER_STATUS = "http://hl7.org/fhir/us/carin-bb/CodeSystem/C4BBPayerAdjudicationStatus"
#: Diagnosis rank stored in ``f_code.seq``: principal/primary, or any other position.
PRIMARY, SECONDARY = 1, 2


@dataclass
class Facts:
    """Fact rows for one resource version; codes are ``(system, code)`` until the writer maps
    them to dictionary ids."""

    patient: tuple[Any, ...] | None = None
    coverages: list[tuple[Any, ...]] = field(default_factory=list)
    #: (source, organization id, identifier system, identifier value)
    org_idents: list[tuple[str, str, str, str]] = field(default_factory=list)
    event: tuple[Any, ...] | None = None
    #: (line, first day, last day, denied, provider); a partial from-date keeps its range
    lines: list[tuple[int, int | None, int | None, int, str | None]] = field(default_factory=list)
    #: (line, role, seq, system, code)
    codes: list[tuple[int, str, int | None, str, str]] = field(default_factory=list)
    #: (field, target type, target id, seq, claim line or 0)
    refs: list[tuple[str, str, str, int | None, int]] = field(default_factory=list)
    #: f_provider columns after ``rkey``
    providers: list[tuple[Any, ...]] = field(default_factory=list)
    #: f_group_member columns after ``rkey``
    group_members: list[tuple[Any, ...]] = field(default_factory=list)
    #: f_report columns after ``rkey``
    report: tuple[Any, ...] | None = None
    #: f_observation columns after ``rkey``
    observations: list[tuple[Any, ...]] = field(default_factory=list)


def _codings(concept: Any) -> Iterator[tuple[str, str]]:
    if not isinstance(concept, dict):
        return
    for coding in _items(concept.get("coding")):
        if isinstance(coding, dict):
            code = coding.get("code")
            if isinstance(code, str) and code.strip():
                system = coding.get("system")
                yield (system.strip() if isinstance(system, str) else ""), code.strip()


def _first_code(concept: Any) -> str | None:
    for _system, code in _codings(concept):
        return code
    return None


def _has_code(concepts: Iterable[Any], system: str, code: str) -> bool:
    for concept in concepts:
        for s, c in _codings(concept):
            if s == system and c == code:
                return True
    return False


def _day(value: Any, tz: ZoneInfo) -> DayRange | None:
    return parse_day_range(value, tz)


def _period_start(period: Any, tz: ZoneInfo) -> DayRange | None:
    if isinstance(period, dict):
        return _day(period.get("start"), tz)
    return None


def _ref_id(element: Any, rtype: str | None = None) -> str | None:
    if not isinstance(element, dict):
        return None
    target = parse_reference(element.get("reference"))
    if target is None or (rtype is not None and target[0] != rtype):
        return None
    return target[1]


def _provider(element: Any) -> str | None:
    """An NPI or other identifier value, else the reference text."""
    if not isinstance(element, dict):
        return None
    ident = element.get("identifier")
    if isinstance(ident, dict) and isinstance(ident.get("value"), str):
        return str(ident["value"])[:128]
    ref = element.get("reference")
    return ref[:128] if isinstance(ref, str) else None


def _denied(adjudications: Any) -> int:
    """spec §3 Edge rule 6: category ``denialreason`` (C4BBAdjudicationDiscriminator) or
    ``denied`` (C4BBPayerAdjudicationStatus)."""
    if not isinstance(adjudications, list):
        return 0
    for adj in adjudications:
        if isinstance(adj, dict):
            for system, code in _codings(adj.get("category")):
                if (system == C4BB_DISCRIMINATOR and code == "denialreason") or (
                    system == C4BB_PAYER_STATUS and code == "denied"
                ):
                    return 1
    return 0


def _items(value: Any) -> list[Any]:
    """``value`` when it is a JSON array, else an empty one (R4 JSON §2.6.2 represents every
    0..* element as an array; a scalar or object in its place is not read)."""
    return value if isinstance(value, list) else []


def _obj(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def _ext(resource: dict[str, Any], url: str) -> dict[str, Any] | None:
    for ext in _items(resource.get("extension")):
        if isinstance(ext, dict) and ext.get("url") == url:
            return ext
    return None


def _omb_text(ext: dict[str, Any] | None) -> str | None:
    """US Core race/ethnicity: the ``ombCategory`` display/code, else ``text``."""
    if ext is None:
        return None
    text = None
    for sub in _items(ext.get("extension")):
        if not isinstance(sub, dict):
            continue
        if sub.get("url") == "ombCategory" and isinstance(sub.get("valueCoding"), dict):
            coding = sub["valueCoding"]
            value = coding.get("display") or coding.get("code")
            if isinstance(value, str):
                return value[:64]
        if sub.get("url") == "text" and isinstance(sub.get("valueString"), str):
            text = sub["valueString"][:64]
    return text


def _patient(r: dict[str, Any], source: str, member_system: str, tz: ZoneInfo) -> Facts:
    member_id = None
    for ident in _items(r.get("identifier")):
        if (
            isinstance(ident, dict)
            and ident.get("system") == member_system
            and isinstance(ident.get("value"), str)
        ):
            member_id = ident["value"].strip()[:64] or None
            break
    birth_raw = r.get("birthDate") if isinstance(r.get("birthDate"), str) else None
    birth = _day(birth_raw, tz)
    deceased = 0
    deceased_day = None
    if r.get("deceasedBoolean") is True:
        deceased = 1
    elif isinstance(r.get("deceasedDateTime"), str):
        deceased = 1
        death = _day(r.get("deceasedDateTime"), tz)
        deceased_day = death.first.toordinal() if death else None
    birth_sex_ext = _ext(r, US_CORE + "us-core-birthsex")
    birth_sex = birth_sex_ext.get("valueCode") if birth_sex_ext else None
    language = None
    comms = [c for c in _items(r.get("communication")) if isinstance(c, dict)]
    comms.sort(key=lambda c: c.get("preferred") is not True)
    for comm in comms:
        language = _first_code(comm.get("language"))
        if language:
            break
    county = None
    for address in _items(r.get("address")):
        if isinstance(address, dict) and isinstance(address.get("district"), str):
            county = address["district"][:64]
            break
    gender = r.get("gender") if isinstance(r.get("gender"), str) else None
    return Facts(
        patient=(
            source,
            str(r["id"]),
            member_id,
            birth_raw[:32] if birth_raw else None,
            birth.first.toordinal() if birth else None,
            ymd(birth.first) if birth else None,
            ymd(birth.last) if birth else None,
            gender,
            birth_sex if isinstance(birth_sex, str) else None,
            deceased,
            deceased_day,
            _omb_text(_ext(r, US_CORE + "us-core-race")),
            _omb_text(_ext(r, US_CORE + "us-core-ethnicity")),
            language[:32] if language else None,
            _ext_text(_ext(r, REALD + "disability")),
            county,
            _ext_text(_ext(r, REALD + "race-ethnicity")),
            _ext_text(_ext(r, REALD + "language")),
        )
    )


def _ext_text(ext: dict[str, Any] | None) -> str | None:
    """The value of a simple extension as text: a string, a Coding's display or code, or a
    CodeableConcept's text or first coding."""
    if ext is None:
        return None
    value: Any = ext.get("valueString")
    if value is None and isinstance(ext.get("valueCode"), str):
        value = ext["valueCode"]
    coding = ext.get("valueCoding")
    if value is None and isinstance(coding, dict):
        value = coding.get("display") or coding.get("code")
    concept = ext.get("valueCodeableConcept")
    if value is None and isinstance(concept, dict):
        value = concept.get("text") or _first_code(concept)
    return value.strip()[:128] or None if isinstance(value, str) else None


def _coverage(r: dict[str, Any], source: str, tz: ZoneInfo) -> Facts:
    """One row per payor (a Coverage may name the state and the CCO); the engine keeps the rows
    whose payor is a CCO listed in mappings/."""
    period = _obj(r.get("period"))
    start = _day(period.get("start"), tz)
    end = _day(period.get("end"), tz)
    head = (
        source,
        _ref_id(r.get("beneficiary"), "Patient"),
        r.get("status") if isinstance(r.get("status"), str) else None,
    )
    tail = (start.first.toordinal() if start else None, end.last.toordinal() if end else None)
    facts = Facts()
    for payor in _items(r.get("payor")):
        if not isinstance(payor, dict):
            continue
        ident = payor.get("identifier")
        payor_system = payor_value = None
        if isinstance(ident, dict) and isinstance(ident.get("value"), str):
            payor_system = ident.get("system") if isinstance(ident.get("system"), str) else ""
            payor_value = ident["value"].strip()
        payor_org = _ref_id(payor, "Organization")
        if payor_value or payor_org:
            facts.coverages.append((*head, payor_system, payor_value, payor_org, *tail))
    if not facts.coverages:
        facts.coverages.append((*head, None, None, None, *tail))
    return facts


def _organization(r: dict[str, Any], source: str) -> Facts:
    facts = Facts()
    for ident in _items(r.get("identifier")):
        if isinstance(ident, dict) and isinstance(ident.get("value"), str):
            system = ident.get("system")
            facts.org_idents.append(
                (source, str(r["id"]), system if isinstance(system, str) else "", ident["value"].strip())
            )
    return facts


def _identifier_key(ident: Any) -> str | None:
    """``system|value`` of an Identifier: a claim number means nothing without its system."""
    if not isinstance(ident, dict) or not isinstance(ident.get("value"), str):
        return None
    system = ident.get("system") if isinstance(ident.get("system"), str) else ""
    return f"{system}|{ident['value'].strip()}"


def _claim_like(r: dict[str, Any], source: str, rtype: str, tz: ZoneInfo) -> Facts:
    """ExplanationOfBenefit (CARIN BB) and Claim: header and lines, diagnoses with position and
    line pointers (``item.diagnosisSequence``), replacement links (``related``)."""
    facts = Facts()
    # Diagnoses: principal by type, else the lowest sequence (spec §3 "Diagnosis position").
    diagnoses: list[tuple[int, Any, bool]] = []
    for dx in _items(r.get("diagnosis")):
        if not isinstance(dx, dict):
            continue
        seq: int = dx["sequence"] if isinstance(dx.get("sequence"), int) else 0
        principal = _has_code(
            _items(dx.get("type")), "http://terminology.hl7.org/CodeSystem/ex-diagnosistype", "principal"
        ) or any(code == "principal" for concept in _items(dx.get("type")) for _s, code in _codings(concept))
        diagnoses.append((seq, dx, principal))
    primary_seq = next((s for s, _d, p in diagnoses if p), min((s for s, _d, _p in diagnoses), default=None))
    by_seq: dict[int, list[tuple[str, str]]] = {}
    conditions_by_seq: dict[int, list[str]] = {}
    for seq, dx, _principal in diagnoses:
        rank = PRIMARY if seq == primary_seq else SECONDARY
        pairs = list(_codings(dx.get("diagnosisCodeableConcept")))
        by_seq.setdefault(seq, []).extend(pairs)
        for system, code in pairs:
            facts.codes.append((0, "dx", rank, system, code))
        cond = _ref_id(dx.get("diagnosisReference"), "Condition")
        if cond:
            conditions_by_seq.setdefault(seq, []).append(cond)
            facts.refs.append(("diagnosis", "Condition", cond, rank, 0))
    first_day: int | None = None
    for index, item in enumerate(_items(r.get("item")), start=1):
        if not isinstance(item, dict):
            continue
        line: int = item["sequence"] if isinstance(item.get("sequence"), int) else index
        served = (
            _day(item.get("servicedDate"), tz)
            if "servicedDate" in item
            else _period_start(item.get("servicedPeriod"), tz)
        )
        day = served.first.toordinal() if served else None
        if day is not None and (first_day is None or day < first_day):
            first_day = day
        day_last = served.last.toordinal() if served else None
        facts.lines.append((line, day, day_last, _denied(item.get("adjudication")), None))
        for system, code in _codings(item.get("productOrService")):
            facts.codes.append((line, "proc", None, system, code))
        for pointer in _items(item.get("diagnosisSequence")):
            if isinstance(pointer, int):
                rank = PRIMARY if pointer == primary_seq else SECONDARY
                for system, code in by_seq.get(pointer, ()):
                    facts.codes.append((line, "dx", rank, system, code))
                for cond in conditions_by_seq.get(pointer, ()):
                    facts.refs.append(("diagnosis", "Condition", cond, rank, line))
    for related in _items(r.get("related")):
        if not isinstance(related, dict):
            continue
        codes = {code for _s, code in _codings(related.get("relationship"))}
        fieldname = (
            "replacedby" if "replacedby" in codes else "replaces" if codes & {"prior", "replaces"} else None
        )
        if fieldname is None:
            continue
        target = parse_reference(
            (related.get("claim") or {}).get("reference") if isinstance(related.get("claim"), dict) else None
        )
        if target is not None:
            facts.refs.append((fieldname, target[0], target[1], None, 0))
        ref_ident = _identifier_key(related.get("reference"))
        if ref_ident is not None:
            facts.refs.append((fieldname, "identifier", ref_ident, None, 0))
    for ident in _items(r.get("identifier")):
        key = _identifier_key(ident)
        if key is not None:
            facts.refs.append(("ident", "identifier", key, None, 0))
    header_denied = _denied(r.get("adjudication")) if rtype == "ExplanationOfBenefit" else 0
    facts.event = (
        source,
        rtype,
        str(r["id"]),
        "claims",
        _ref_id(r.get("patient"), "Patient"),
        r.get("status") if isinstance(r.get("status"), str) else None,
        r.get("use") if isinstance(r.get("use"), str) else None,
        r.get("outcome") if isinstance(r.get("outcome"), str) else None,
        header_denied,
        first_day,
        first_day,
        None,
        _ref_id(r.get("claim"), "Claim") if rtype == "ExplanationOfBenefit" else None,
        _provider(r.get("provider")),
        None,
    )
    return facts


def _event(
    r: dict[str, Any],
    source: str,
    rtype: str,
    tz: ZoneInfo,
    *,
    pid: str | None,
    status: Any,
    day: DayRange | None,
    encounter: str | None = None,
    provider: str | None = None,
    verification: str | None = None,
    use: Any = None,
) -> tuple[Any, ...]:
    return (
        source,
        rtype,
        str(r["id"]),
        "clinical",
        pid,
        status if isinstance(status, str) else None,
        use if isinstance(use, str) else None,
        None,
        0,
        day.first.toordinal() if day else None,
        day.last.toordinal() if day else None,
        encounter,
        None,
        provider,
        verification,
    )


def _reasons(r: dict[str, Any], facts: Facts, ref_field: str, *, primary_allowed: bool) -> None:
    """``reasonCode`` and ``reasonReference`` as diagnoses; the first reason is primary (spec §3
    "Diagnosis position" applied to clinical events: UNVERIFIED, the project's reading)."""
    rank = PRIMARY if primary_allowed else SECONDARY
    for concept in _items(r.get("reasonCode")):
        for system, code in _codings(concept):
            facts.codes.append((0, "dx", rank, system, code))
        rank = SECONDARY
    for ref in _items(r.get("reasonReference")):
        cond = _ref_id(ref, "Condition")
        if cond:
            facts.refs.append((ref_field, "Condition", cond, rank, 0))
            rank = SECONDARY


def _encounter(r: dict[str, Any], source: str, tz: ZoneInfo) -> Facts:
    facts = Facts()
    period = _obj(r.get("period"))
    day = _day(period.get("start"), tz) or _day(period.get("end"), tz)
    for concept in [*_items(r.get("type")), r.get("serviceType")]:
        for system, code in _codings(concept):
            facts.codes.append((0, "proc", None, system, code))
    for dx in _items(r.get("diagnosis")):
        if isinstance(dx, dict):
            cond = _ref_id(dx.get("condition"), "Condition")
            if cond:
                rank = PRIMARY if dx.get("rank") == 1 else SECONDARY
                facts.refs.append(("diagnosis", "Condition", cond, rank, 0))
    # Without a rank-1 Encounter.diagnosis, the first reason is the primary diagnosis.
    ranked = any(ref[3] == PRIMARY for ref in facts.refs)
    _reasons(r, facts, "diagnosis", primary_allowed=not ranked)
    provider = _provider(r.get("serviceProvider"))
    for participant in _items(r.get("participant")):
        if isinstance(participant, dict) and participant.get("individual"):
            provider = _provider(participant.get("individual")) or provider
            break
    facts.event = _event(
        r,
        source,
        "Encounter",
        tz,
        pid=_ref_id(r.get("subject"), "Patient"),
        status=r.get("status"),
        day=day,
        provider=provider,
    )
    return facts


def _procedure(r: dict[str, Any], source: str, tz: ZoneInfo) -> Facts:
    facts = Facts()
    if "performedDateTime" in r:
        day = _day(r.get("performedDateTime"), tz)
    else:
        day = _period_start(r.get("performedPeriod"), tz)
    for system, code in _codings(r.get("code")):
        facts.codes.append((0, "proc", None, system, code))
    _reasons(r, facts, "reason", primary_allowed=True)
    provider = None
    for performer in _items(r.get("performer")):
        if isinstance(performer, dict):
            provider = _provider(performer.get("actor"))
            if provider:
                break
    facts.event = _event(
        r,
        source,
        "Procedure",
        tz,
        pid=_ref_id(r.get("subject"), "Patient"),
        status=r.get("status"),
        day=day,
        encounter=_ref_id(r.get("encounter"), "Encounter"),
        provider=provider,
    )
    return facts


def _condition(r: dict[str, Any], source: str, tz: ZoneInfo) -> Facts:
    facts = Facts()
    day = _day(r.get("recordedDate"), tz)
    if day is None:
        day = (
            _day(r.get("onsetDateTime"), tz)
            if "onsetDateTime" in r
            else _period_start(r.get("onsetPeriod"), tz)
        )
    for system, code in _codings(r.get("code")):
        facts.codes.append((0, "dx", SECONDARY, system, code))
    verification = _first_code(r.get("verificationStatus"))
    facts.event = _event(
        r,
        source,
        "Condition",
        tz,
        pid=_ref_id(r.get("subject"), "Patient"),
        status=_first_code(r.get("clinicalStatus")),
        day=day,
        encounter=_ref_id(r.get("encounter"), "Encounter"),
        verification=verification,
    )
    return facts


def _service_request(r: dict[str, Any], source: str, tz: ZoneInfo) -> Facts:
    facts = Facts()
    for concept in [r.get("code"), *_items(r.get("category"))]:
        for system, code in _codings(concept):
            facts.codes.append((0, "proc", None, system, code))
    for concept in _items(r.get("reasonCode")):
        for system, code in _codings(concept):
            facts.codes.append((0, "dx", SECONDARY, system, code))
    facts.event = _event(
        r,
        source,
        "ServiceRequest",
        tz,
        pid=_ref_id(r.get("subject"), "Patient"),
        status=r.get("status"),
        day=_day(r.get("authoredOn"), tz),
        encounter=_ref_id(r.get("encounter"), "Encounter"),
        use=r.get("intent"),
    )
    return facts


def _text(value: Any, limit: int) -> str | None:
    """A trimmed, non-empty string cut to ``limit`` characters (the column width), else ``None``."""
    if not isinstance(value, str):
        return None
    return value.strip()[:limit] or None


def _npi(identifiers: Any) -> str | None:
    """The first NPI (system ``http://hl7.org/fhir/sid/us-npi``) among ``identifiers``."""
    if isinstance(identifiers, dict):
        identifiers = [identifiers]
    for ident in identifiers if isinstance(identifiers, list) else ():
        if isinstance(ident, dict) and ident.get("system") == NPI_SYSTEM:
            value = _text(ident.get("value"), 16)
            if value:
                return value
    return None


def _taxonomy(concepts: Iterable[Any]) -> str | None:
    """The first NUCC provider-taxonomy code among ``concepts``."""
    for concept in concepts:
        for system, code in _codings(concept):
            if system == NUCC_SYSTEM:
                return code[:16]
    return None


def _human_name(names: Any) -> str | None:
    """FHIR R4 HumanName: ``text``, else given names then family; the ``official`` (then
    ``usual``) name first."""
    candidates = [n for n in names if isinstance(n, dict)] if isinstance(names, list) else []
    candidates.sort(key=lambda n: {"official": 0, "usual": 1}.get(str(n.get("use")), 2))
    for name in candidates:
        text = _text(name.get("text"), 256)
        if text:
            return text
        given = [g.strip() for g in _items(name.get("given")) if isinstance(g, str) and g.strip()]
        family = _text(name.get("family"), 256)
        parts = [*given, family] if family else given
        if parts:
            return " ".join(parts)[:256]
    return None


def _county(addresses: Any) -> str | None:
    for address in addresses if isinstance(addresses, list) else ():
        if isinstance(address, dict):
            district = _text(address.get("district"), 64)
            if district:
                return district
    return None


def _practitioner(r: dict[str, Any], source: str) -> Facts:
    """Practitioner (FHIR R4 §8.4; US Core Practitioner): NPI identifier, name, and the NUCC
    taxonomy of ``qualification.code``."""
    qualifications = [_obj(q).get("code") for q in _items(r.get("qualification"))]
    row = (
        source, "Practitioner", str(r["id"]), _npi(r.get("identifier")), _taxonomy(qualifications),
        _human_name(r.get("name")), None, None, None, _county(r.get("address")), None, None,
    )  # fmt: skip
    return Facts(providers=[row])


def _practitioner_role(r: dict[str, Any], source: str) -> Facts:
    """PractitionerRole (FHIR R4 §8.5; US Core PractitionerRole): the practitioner and
    organisation it links, the NUCC taxonomy of ``specialty`` (else ``code``), and the project's
    own ``in-network``, ``cco`` and ``county`` extensions (UNVERIFIED). The NPI is the role's own
    NPI identifier, else the one on the ``practitioner`` reference."""
    practitioner = _obj(r.get("practitioner"))
    organization = _obj(r.get("organization"))
    taxonomy = _taxonomy(_items(r.get("specialty"))) or _taxonomy(_items(r.get("code")))
    network = _ext(r, EXT_IN_NETWORK)
    flag = network.get("valueBoolean") if network else None
    cco = _ext(r, EXT_CCO)
    county = _ext(r, EXT_COUNTY)
    row = (
        source, "PractitionerRole", str(r["id"]),
        _npi(r.get("identifier")) or _npi(practitioner.get("identifier")), taxonomy,
        _text(practitioner.get("display"), 256),
        _ref_id(practitioner, "Practitioner"), _ref_id(organization, "Organization"),
        _text(organization.get("display"), 256), _text(county.get("valueString") if county else None, 64),
        (1 if flag else 0) if isinstance(flag, bool) else None,
        _text(cco.get("valueString") if cco else None, 64),
    )  # fmt: skip
    return Facts(providers=[row])


#: Organization types (http://terminology.hl7.org/CodeSystem/organization-type) that mark a
#: healthcare provider, i.e. something that can be a clinic.
_PROVIDER_ORG_TYPES = frozenset({"prov", "dept", "team"})


def _organization_provider(r: dict[str, Any], source: str) -> tuple[Any, ...]:
    """The f_provider row of an Organization (FHIR R4 §8.1): NPI, name, county from
    ``address.district``, a NUCC taxonomy in ``type`` if any. ``clinic`` is the name when the
    organisation is a provider: it has an NPI (NPPES issues NPIs to providers only), a provider
    type (``prov``, ``dept``, ``team``) or a type mentioning a clinic."""
    npi = _npi(r.get("identifier"))
    types = [t for t in _items(r.get("type")) if isinstance(t, dict)]
    codes = {code for t in types for _s, code in _codings(t)}
    texts = [str(t.get("text") or "") for t in types] + [
        str(c.get("display") or "") for t in types for c in _items(t.get("coding")) if isinstance(c, dict)
    ]
    name = _text(r.get("name"), 256)
    provider = (
        npi is not None or bool(codes & _PROVIDER_ORG_TYPES) or any("clinic" in x.lower() for x in texts)
    )
    return (
        source, "Organization", str(r["id"]), npi, _taxonomy(types), name, None, None,
        name if provider else None, _county(r.get("address")), None, None,
    )  # fmt: skip


def _cco_token(element: Any) -> str | None:
    """A CCO named by the project's ``cco`` extension or an Organization reference's
    ``identifier`` value, else the reference itself as ``Organization/<id>`` (resolved at query
    time through the organisation's identifiers, DESIGN.md §1)."""
    if not isinstance(element, dict):
        return None
    ext = _ext(element, EXT_CCO)
    value = _text(ext.get("valueString"), 64) if ext else None
    if value:
        return value
    ident = element.get("identifier")
    if isinstance(ident, dict):
        value = _text(ident.get("value"), 64)
        if value:
            return value
    org = _ref_id(element, "Organization")
    return f"Organization/{org}" if org else None


def _group(r: dict[str, Any], source: str, member_system: str, tz: ZoneInfo) -> Facts:
    """Group as a Da Vinci ATR Member Attribution List (ATR STU2 2.1.0, profile ``atr-group``):
    one row per active member whose ``entity`` is a Patient reference and/or carries the
    Medicaid member-id identifier. ``member.period`` (else the Group's
    ``ext-contractValidityPeriod``) bounds the assignment; ``ext-attributedProvider`` names the
    clinic (Organization), PCP (Practitioner) or both (PractitionerRole, kept as
    ``PractitionerRole/<id>`` in ``pcp_rid`` and resolved at query time); the CCO is the member's
    or Group's ``cco`` extension, else ``managingEntity`` (ATR: the payer managing the list).
    Members with ``inactive = true`` (FHIR R4 Group.member.inactive) are no longer members."""
    facts = Facts()
    group_cco = _cco_token(r) if _ext(r, EXT_CCO) else _cco_token(r.get("managingEntity"))
    contract = _ext(r, ATR_CONTRACT_PERIOD)
    default_period = _obj(contract.get("valuePeriod")) if contract else {}
    for member in _items(r.get("member")):
        if not isinstance(member, dict) or member.get("inactive") is True:
            continue
        entity = _obj(member.get("entity"))
        pid = _ref_id(entity, "Patient")
        ident = _obj(entity.get("identifier"))
        member_id = _text(ident.get("value"), 64) if ident.get("system") == member_system else None
        if pid is None and member_id is None:
            continue
        period = _obj(member.get("period")) if isinstance(member.get("period"), dict) else default_period
        start = _day(period.get("start"), tz)
        end = _day(period.get("end"), tz)
        clinic = clinic_org = pcp_npi = pcp_rid = None
        ext = _ext(member, ATR_ATTRIBUTED_PROVIDER)
        provider = _obj(ext.get("valueReference")) if ext else {}
        target = parse_reference(provider.get("reference"))
        kind = target[0] if target else provider.get("type")
        if kind == "Organization":
            clinic_org = target[1] if target else None
            clinic = _text(provider.get("display"), 256)
        elif kind == "Practitioner":
            pcp_rid = target[1] if target else None
            pcp_npi = _npi(provider.get("identifier"))
        elif kind == "PractitionerRole" and target is not None:
            role = f"PractitionerRole/{target[1]}"
            pcp_rid = role if len(role) <= 64 else None
            pcp_npi = _npi(provider.get("identifier"))
        cco = _cco_token(member) if _ext(member, EXT_CCO) else group_cco
        facts.group_members.append(
            (source, str(r["id"]), pid, member_id, cco, clinic, clinic_org, pcp_npi, pcp_rid,
             start.first.toordinal() if start else None, end.last.toordinal() if end else None)
        )  # fmt: skip
    return facts


def _reference_text(element: Any) -> str | None:
    """A Reference as ``Type/id`` (relative or absolute literal reference), else its reference
    text as sent (``urn:uuid:…``, ``#contained``), else its identifier value."""
    if not isinstance(element, dict):
        return None
    target = parse_reference(element.get("reference"))
    if target is not None:
        return f"{target[0]}/{target[1]}"
    reference = _text(element.get("reference"), 256)
    if reference:
        return reference
    return _text(_obj(element.get("identifier")).get("value"), 256)


def _measure_report(r: dict[str, Any], source: str, tz: ZoneInfo) -> Facts:
    """MeasureReport (FHIR R4 MeasureReport; DEQM STU5): what its search parameters read (R4
    MeasureReport search parameters ``measure``, ``period``, ``reporter``, ``subject``,
    ``status``). ``measure`` is kept as given (``url`` or ``url|version``); ``period`` as the local
    days of its start and end (a partial date keeps its widest range); ``reporter`` and
    ``subject`` as ``Type/id`` (else the reference text or identifier value)."""
    period = _obj(r.get("period"))
    start = _day(period.get("start"), tz)
    end = _day(period.get("end"), tz)
    return Facts(
        report=(
            source,
            str(r["id"]),
            _text(r.get("measure"), 1024),
            _text(r.get("type"), 32),
            _text(r.get("status"), 32),
            start.first.toordinal() if start else None,
            end.last.toordinal() if end else None,
            _reference_text(r.get("reporter")),
            _reference_text(r.get("subject")),
        )
    )


def _task(r: dict[str, Any], source: str, tz: ZoneInfo) -> Facts:
    """Task (FHIR R4 §12.1; the referral-platform pattern of FHIR R4 Workflow "Request/Task"
    where a Task tracks the fulfilment of a ServiceRequest): one ``f_event`` row (rtype
    ``Task``, ``status`` = Task.status, ``use`` = Task.intent, ``day`` = ``authoredOn``, else
    ``lastModified``, ``provider`` = the ``owner``) and one ``f_ref`` row (field ``basedon``)
    per ServiceRequest named by ``focus`` or ``basedOn``. The measure engine never reads Tasks
    (it selects its own event types); the referral loop does."""
    facts = Facts()
    seen: set[str] = set()
    for element in [r.get("focus"), *_items(r.get("basedOn"))]:
        request = _ref_id(element, "ServiceRequest")
        if request and request not in seen:
            seen.add(request)
            facts.refs.append(("basedon", "ServiceRequest", request, None, 0))
    day = _day(r.get("authoredOn"), tz) or _day(r.get("lastModified"), tz)
    facts.event = _event(
        r,
        source,
        "Task",
        tz,
        pid=_ref_id(r.get("for"), "Patient"),
        status=r.get("status"),
        day=day,
        provider=_provider(r.get("owner")),
        use=r.get("intent"),
    )
    return facts


def _observation_value(r: dict[str, Any]) -> str | None:
    """``Observation.value[x]`` as text (FHIR R4 Observation): a string, a CodeableConcept's
    text, else its first coding's display, else code; a Quantity's value; a boolean, integer,
    time or dateTime as written."""
    concept = r.get("valueCodeableConcept")
    if isinstance(concept, dict):
        text = _text(concept.get("text"), 128)
        if text:
            return text
        for coding in _items(concept.get("coding")):
            if isinstance(coding, dict):
                found = _text(coding.get("display"), 128) or _text(coding.get("code"), 128)
                if found:
                    return found
        return None
    quantity = r.get("valueQuantity")
    if isinstance(quantity, dict):
        number = quantity.get("value")
        return str(number)[:128] if isinstance(number, int | float) and not isinstance(number, bool) else None
    if isinstance(r.get("valueBoolean"), bool):
        return "true" if r["valueBoolean"] else "false"
    if isinstance(r.get("valueInteger"), int):
        return str(r["valueInteger"])
    for key in ("valueString", "valueDateTime", "valueTime"):
        found = _text(r.get(key), 128)
        if found:
            return found
    return None


def _observation(r: dict[str, Any], source: str, tz: ZoneInfo) -> Facts:
    """Observation (FHIR R4 §11.1): one ``f_observation`` row per coding of ``code`` with the
    subject Patient, ``status``, the value as text (:func:`_observation_value`) and the local day
    of ``effectiveDateTime`` / ``effectivePeriod.start`` / ``effectiveInstant``, else ``issued``.
    OPIP health-complexity flags arrive this way (spec §4 "Health complexity")."""
    if "effectiveDateTime" in r:
        day = _day(r.get("effectiveDateTime"), tz)
    elif "effectivePeriod" in r:
        day = _period_start(r.get("effectivePeriod"), tz)
    else:
        day = _day(r.get("effectiveInstant"), tz) or _day(r.get("issued"), tz)
    pid = _ref_id(r.get("subject"), "Patient")
    status = _text(r.get("status"), 32)
    value = _observation_value(r)
    ordinal = day.first.toordinal() if day else None
    facts = Facts()
    for system, code in _codings(r.get("code")):
        facts.observations.append((source, pid, status, system[:256], code[:128], value, ordinal))
    return facts


def extract(resource: dict[str, Any], source: str, member_system: str, tz: ZoneInfo) -> Facts | None:
    """Facts for one resource (already checked to have ``resourceType`` and ``id``), or
    ``None`` for types the measure does not read."""
    rtype = resource["resourceType"]
    if rtype in CLAIMS_TYPES:
        return _claim_like(resource, source, rtype, tz)
    if rtype == "Encounter":
        return _encounter(resource, source, tz)
    if rtype == "Procedure":
        return _procedure(resource, source, tz)
    if rtype == "Condition":
        return _condition(resource, source, tz)
    if rtype == "ServiceRequest":
        return _service_request(resource, source, tz)
    if rtype == "Patient":
        return _patient(resource, source, member_system, tz)
    if rtype == "Coverage":
        return _coverage(resource, source, tz)
    if rtype == "Organization":
        facts = _organization(resource, source)
        facts.providers.append(_organization_provider(resource, source))
        return facts
    if rtype == "Practitioner":
        return _practitioner(resource, source)
    if rtype == "PractitionerRole":
        return _practitioner_role(resource, source)
    if rtype == "Group":
        return _group(resource, source, member_system, tz)
    if rtype == "MeasureReport":
        return _measure_report(resource, source, tz)
    if rtype == "Task":
        return _task(resource, source, tz)
    if rtype == "Observation":
        return _observation(resource, source, tz)
    return None
