"""The ``oha-claims`` source: Patient, Coverage, Claim and CARIN-BB-like ExplanationOfBenefit.

Shapes follow FHIR R4 (http://hl7.org/fhir/R4/explanationofbenefit.html, claim.html,
coverage.html) with CARIN Blue Button conventions (HL7/carin-bb): claim number as identifier
type ``uc``; header/line ``adjudication`` with C4BBAdjudicationDiscriminator ``denialreason``
or C4BBPayerAdjudicationStatus ``denied``/``paid``; adjustments linked by ``related.reference``
(the other claim's number, which is also its resource id here) with relationship ``prior``
(ex-relatedclaimrelationship) on the replacement and ``replacedby`` (C4BBRelatedClaimRelationship
Codes) on some originals; careTeam role C4BBClaimCareTeamRole ``performing``. CCO encounter
records are ``Claim`` with ``use = claim``.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import orjson

from fhir_adapter.synth import vocab
from fhir_adapter.synth.calendar import Calendar
from fhir_adapter.synth.plan import Child, Span, Visit
from fhir_adapter.synth.shared import Codings, Emit, Providers, Rand, Resource, frag, reference

_PROFESSIONAL: Final = frag({"coding": [{"system": vocab.CLAIM_TYPE, "code": "professional"}]})
_UC_TYPE: Final = frag({"coding": [{"system": vocab.C4BB_IDENTIFIER_TYPE, "code": "uc"}]})
_MB_TYPE: Final = frag({"coding": [{"system": vocab.V2_IDENTIFIER_TYPE, "code": "MB"}]})
_PRINCIPAL: Final = frag([{"coding": [{"system": vocab.DIAGNOSIS_TYPE, "code": "principal"}]}])
_SECONDARY: Final = frag([{"coding": [{"system": vocab.C4BB_DIAGNOSIS_TYPE, "code": "secondary"}]}])
_PERFORMING: Final = frag({"coding": [{"system": vocab.C4BB_CARE_TEAM_ROLE, "code": "performing"}]})
_SUBMITTED: Final = frag({"coding": [{"system": vocab.ADJUDICATION, "code": "submitted"}]})
_BENEFIT: Final = frag({"coding": [{"system": vocab.ADJUDICATION, "code": "benefit"}]})
_DENIAL_REASON: Final = frag(
    {"coding": [{"system": vocab.C4BB_ADJUDICATION_DISCRIMINATOR, "code": "denialreason"}]}
)
_STATUS_DENIED: Final = frag({"coding": [{"system": vocab.C4BB_PAYER_ADJUDICATION_STATUS, "code": "denied"}]})
_STATUS_PAID: Final = frag({"coding": [{"system": vocab.C4BB_PAYER_ADJUDICATION_STATUS, "code": "paid"}]})
#: CARC 50 (not medically necessary), 27 (after coverage terminated), 96 (non-covered charge).
_CARC: Final = tuple(frag({"coding": [{"system": vocab.CARC, "code": c}]}) for c in ("50", "27", "96"))
_PRIOR: Final = frag({"coding": [{"system": vocab.RELATED_CLAIM, "code": "prior"}]})
_REPLACED_BY: Final = frag({"coding": [{"system": vocab.C4BB_RELATED_CLAIM, "code": "replacedby"}]})
_NORMAL_PRIORITY: Final = frag({"coding": [{"system": vocab.PROCESS_PRIORITY, "code": "normal"}]})
_MEDICAID: Final = frag({"coding": [{"system": vocab.SOPT, "code": "2", "display": "MEDICAID"}]})
_SELF: Final = frag({"coding": [{"system": vocab.SUBSCRIBER_RELATIONSHIP, "code": "self"}]})
_PLAN_CLASS: Final = frag(
    [
        {
            "type": {"coding": [{"system": vocab.COVERAGE_CLASS, "code": "plan"}]},
            "value": "OHP-PLUS",
            "name": "Oregon Health Plan Plus",
        }
    ]
)
_PAYER_ORG_TYPE: Final = frag(
    [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/organization-type", "code": "pay"}]}]
)
_HEADER_DENIAL: Final = tuple(frag({"category": _DENIAL_REASON, "reason": _CARC[i]}) for i in (0, 1))
_HEADER_STATUS_DENIED: Final = frag({"category": _STATUS_DENIED})
_HEADER_STATUS_PAID: Final = frag({"category": _STATUS_PAID})
_LINE_DENIAL: Final = frag({"category": _DENIAL_REASON, "reason": _CARC[2]})
_QUANTITY_1: Final = frag({"value": 1})
#: Line charges are whole dollars 40 … 199; paid lines get 62 % of the charge.
_CHARGES: Final = 160


def _line_adjudication(charge: int, paid: bool, line_denied: bool) -> orjson.Fragment:
    amount = float(40 + charge)
    entries: list[Any] = [
        {"category": _SUBMITTED, "amount": {"value": amount, "currency": "USD"}},
        {
            "category": _BENEFIT,
            "amount": {"value": round(amount * 0.62, 2) if paid else 0.0, "currency": "USD"},
        },
    ]
    if line_denied:
        entries.append(_LINE_DENIAL)
    return frag(entries)


_PAID_ADJUDICATION: Final = tuple(_line_adjudication(c, True, False) for c in range(_CHARGES))
_DENIED_ADJUDICATION: Final = tuple(_line_adjudication(c, False, False) for c in range(_CHARGES))
_LINE_DENIED_ADJUDICATION: Final = tuple(_line_adjudication(c, False, True) for c in range(_CHARGES))
_POINTER_1: Final = [1]
_POINTER_12: Final = [1, 2]
#: ICD-10-CM spellings (see shared.Codings.icd) by cumulative share, and an ``x`` selecting each.
_ICD_SPELLING_CUM: Final = (0.72, 0.87, 0.95, 1.0)
_ICD_SPELLING_X: Final = (0.0, 0.8, 0.9, 0.97)
#: Non-SE principal diagnosis for the dx-secondary / dx-not-on-line variants.
_OTHER_COUNSELING_DX: Final = "Z71.89"
_REPLACEMENT_CODE: Final = "96127"


def cco_org_id(cco: int) -> str:
    return "cco-" + vocab.CCOS[cco][0].lower()


@dataclass(frozen=True)
class ClaimsRenderer:
    """Renders the claims-side records of one child at a time."""

    calendar: Calendar
    codings: Codings
    providers: Providers
    insurers: tuple[orjson.Fragment, ...]
    payor_refs: tuple[orjson.Fragment, ...]
    #: careTeam (one performing provider) per site and provider index.
    care_teams: dict[str, tuple[orjson.Fragment, ...]]
    billing_a: tuple[orjson.Fragment, ...]
    billing_b: tuple[orjson.Fragment, ...]
    billing_other: tuple[orjson.Fragment, ...]
    diagnosis_cache: dict[tuple[tuple[str, ...], str, int], tuple[orjson.Fragment, list[int]]]

    @classmethod
    def build(cls, calendar: Calendar, codings: Codings, providers: Providers) -> ClaimsRenderer:
        insurers = tuple(
            frag({"identifier": {"system": vocab.CCO_SYSTEM, "value": cco_id}, "display": name})
            for cco_id, name in vocab.CCOS
        )
        payor_refs = tuple(
            frag({"reference": f"Organization/{cco_org_id(i)}", "display": name})
            for i, (_c, name) in enumerate(vocab.CCOS)
        )
        care_teams = {
            site: tuple(
                frag([{"sequence": 1, "provider": _npi_reference(npi), "role": _PERFORMING}])
                for npi in providers.pool(site).npis
            )
            for site in ("a", "b", "o")
        }
        return cls(
            calendar,
            codings,
            providers,
            insurers,
            payor_refs,
            care_teams,
            tuple(frag(_npi_reference(npi)) for npi in providers.org_npis_a),
            tuple(frag(_npi_reference(npi)) for npi in providers.org_npis_b),
            tuple(frag(_npi_reference(npi)) for npi in providers.other.npis),
            {},
        )

    def organizations(self) -> list[Resource]:
        """CCO Organizations that ``payor`` references point at, sorted by id."""
        orgs = [
            {
                "resourceType": "Organization",
                "id": cco_org_id(i),
                "identifier": [{"system": vocab.CCO_SYSTEM, "value": cco_id}],
                "active": True,
                "type": _PAYER_ORG_TYPE,
                "name": name,
            }
            for i, (cco_id, name) in enumerate(vocab.CCOS)
        ]
        return sorted(orgs, key=lambda o: str(o["id"]))

    # -- one child ---------------------------------------------------------------------------
    def render(self, child: Child, r: Rand, emit: Emit, tags: set[str]) -> None:
        pid = child.patient_claims
        patient_ref = reference(f"Patient/{pid}")
        emit("Patient", self.patient(child, r))

        coverage_refs: list[orjson.Fragment] = []
        for n, span in enumerate(child.spans, 1):
            cov_id = f"cov-{child.key}-{n}"
            coverage_refs.append(reference(f"Coverage/{cov_id}"))
            emit("Coverage", self.coverage(child, span, cov_id, patient_ref))

        counters = [0, 0]  # EOBs, Claims
        for visit in child.visits:
            if not visit.claims:
                continue
            cov_index = _coverage_for(child.spans, visit.day)
            coverage = coverage_refs[cov_index]
            cco = child.spans[cov_index].cco
            self.visit_records(child, visit, r, emit, tags, patient_ref, coverage, cco, counters)

    def patient(self, child: Child, r: Rand) -> Resource:
        lang_code, lang_name = vocab.LANGUAGES[child.language]
        county, city, _ccos = vocab.COUNTIES[child.county]
        res: Resource = {"resourceType": "Patient", "id": child.patient_claims}
        if child.race >= 0 and r() < 0.5:
            res["extension"] = race_extensions(child)
        res["identifier"] = [{"type": _MB_TYPE, "system": vocab.MEMBER_ID_SYSTEM, "value": child.member_id}]
        res["active"] = True
        res["name"] = [{"use": "official", "family": child.family, "given": [child.given]}]
        res["gender"] = child.sex
        if child.birth is not None:
            res["birthDate"] = child.birth
        add_deceased(res, child, self.calendar)
        res["address"] = [{"use": "home", "city": city, "district": county, "state": "OR", "country": "US"}]
        res["communication"] = [
            {
                "language": {"coding": [{"system": vocab.BCP47, "code": lang_code, "display": lang_name}]},
                "preferred": True,
            }
        ]
        return res

    def coverage(self, child: Child, span: Span, cov_id: str, patient_ref: orjson.Fragment) -> Resource:
        cal = self.calendar
        style = child.period_style
        period: Resource
        if style == "date":
            period = {"start": cal.day(span.start)}
            if span.end is not None:
                period["end"] = cal.day(span.end)
        else:
            utc = style == "utc"
            period = {"start": cal.exact(span.start, 0, 0, 0, in_utc=utc)}
            if span.end is not None:
                period["end"] = cal.exact(span.end, 23, 59, 59, in_utc=utc)
        payor = self.payor_refs[span.cco] if child.payor_reference else self.insurers[span.cco]
        return {
            "resourceType": "Coverage",
            "id": cov_id,
            "identifier": [{"type": _MB_TYPE, "system": vocab.MEMBER_ID_SYSTEM, "value": child.member_id}],
            "status": span.status,
            "type": _MEDICAID,
            "subscriberId": child.member_id,
            "beneficiary": patient_ref,
            "relationship": _SELF,
            "period": period,
            "payor": [payor],
            "class": _PLAN_CLASS,
        }

    def visit_records(
        self,
        child: Child,
        visit: Visit,
        r: Rand,
        emit: Emit,
        tags: set[str],
        patient_ref: orjson.Fragment,
        coverage: orjson.Fragment,
        cco: int,
        counters: list[int],
    ) -> None:
        """The Claim and/or EOB(s) of one visit, per the child's variant."""
        variant = visit.variant
        shared = self._shared(child, visit, r, patient_ref, coverage, cco)
        x = r()
        if variant == "encounter-record-claim" or (not variant and x < 0.08):
            self.claim(child, visit, r, emit, shared, counters, use="claim")
            return
        if variant == "preauth-only":
            self.claim(child, visit, r, emit, shared, counters, use="preauthorization")
            return
        claim_ref = None
        denied = variant == "denied-only"
        if variant == "claim-judged-by-denied-eob" or (not variant and x < 0.11):
            claim_id = self.claim(child, visit, r, emit, shared, counters, use="claim")
            claim_ref = reference(f"Claim/{claim_id}")
            denied = variant == "claim-judged-by-denied-eob"
        status, outcome = "active", "complete"
        if variant == "cancelled-eob-only":
            status = "cancelled" if r() < 0.6 else "entered-in-error"
        elif variant == "eob-error-only":
            outcome = "error" if r() < 0.6 else "queued"
        elif variant == "partial-outcome":
            outcome = "partial"
        elif not visit.qualifying:
            y = r()
            if y < 0.03:
                denied = True
            elif y < 0.045:
                status = "cancelled"
            elif y < 0.05:
                status = "entered-in-error"
            elif y < 0.07:
                outcome = "partial"
            elif y < 0.08:
                outcome = "error"
            elif y < 0.09:
                outcome = "queued"
        replace = variant == "replaced-only" or (
            not variant and status == "active" and outcome == "complete" and not denied and r() < 0.03
        )
        counters[0] += 1
        eob_id = f"eob-{child.key}-{counters[0]}"
        original = self.eob(visit, r, shared, eob_id, status, outcome, denied, claim_ref, "")
        if not replace:
            emit("ExplanationOfBenefit", original)
            return
        # Adjustment: the original, then its replacement naming it as prior.
        counters[0] += 1
        new_id = f"eob-{child.key}-{counters[0]}"
        if r() < 0.5:
            original["related"] = [{"relationship": _REPLACED_BY, "reference": _claim_number(new_id)}]
        emit("ExplanationOfBenefit", original)
        code = _REPLACEMENT_CODE if variant == "replaced-only" else ""
        replacement = self.eob(visit, r, shared, new_id, status, outcome, denied, claim_ref, code)
        replacement["related"] = [{"relationship": _PRIOR, "reference": _claim_number(eob_id)}]
        emit("ExplanationOfBenefit", replacement)
        tags.add("adjusted-claim")

    def _shared(
        self,
        child: Child,
        visit: Visit,
        r: Rand,
        patient_ref: orjson.Fragment,
        coverage: orjson.Fragment,
        cco: int,
    ) -> _VisitParts:
        """Elements every Claim/EOB of one visit shares, drawn once.

        One ICD-10-CM spelling per visit (a payer's extract uses one system).
        """
        variant = visit.variant
        dx_kind = variant if variant in ("dx-secondary-only", "dx-not-on-line") else ""
        key = (visit.dx, dx_kind, bisect.bisect_right(_ICD_SPELLING_CUM, r()))
        found = self.diagnosis_cache.get(key)
        if found is None:
            found = self._diagnoses(*key)
            self.diagnosis_cache[key] = found
        diagnoses, pointer = found
        day = self.calendar.day(visit.day)
        end = self.calendar.day(visit.day + 6) if variant == "serviced-period-across-year" else day
        site = visit.site
        if site == "o":
            billing = self.billing_other[visit.provider]
        else:
            orgs = self.billing_a if site == "a" else self.billing_b
            billing = orgs[child.index % len(orgs)]
        return _VisitParts(
            day,
            {"start": day, "end": end},
            patient_ref,
            coverage,
            self.insurers[cco],
            billing,
            self.care_teams[site][visit.provider],
            diagnoses,
            pointer,
        )

    def _diagnoses(
        self, codes: tuple[str, ...], dx_kind: str, spelling: int
    ) -> tuple[orjson.Fragment, list[int]]:
        """Header diagnoses (fragment) and the main line's diagnosis pointers."""
        pointer = _POINTER_1
        if dx_kind == "dx-secondary-only":
            codes = (_OTHER_COUNSELING_DX, *codes)
            pointer = _POINTER_12
        elif dx_kind == "dx-not-on-line":
            codes = (*codes, _OTHER_COUNSELING_DX)
            pointer = [len(codes)]
        elif len(codes) > 1:
            pointer = _POINTER_12
        x = _ICD_SPELLING_X[spelling]
        entries = [
            {
                "sequence": seq,
                "diagnosisCodeableConcept": self.codings.icd(code, x),
                "type": _PRINCIPAL if seq == 1 else _SECONDARY,
            }
            for seq, code in enumerate(codes, 1)
        ]
        return frag(entries), pointer

    def _items(
        self,
        visit: Visit,
        r: Rand,
        parts: _VisitParts,
        *,
        adjudicate: bool,
        denied: bool,
        replacement_code: str,
    ) -> list[Resource]:
        variant = visit.variant
        day = parts.day
        codes = visit.codes
        if replacement_code:
            codes = (replacement_code, *codes[1:])
        if variant == "line-denied-only":
            codes = (*codes, "96127")
        proc = self.codings.proc
        items: list[Resource] = []
        for seq, code in enumerate(codes, 1):
            if seq == 1 and variant:
                item = self._variant_item(visit, r, parts, code)
            else:
                item = {
                    "sequence": seq,
                    "careTeamSequence": _POINTER_1,
                    "diagnosisSequence": parts.pointer if seq == 1 else _POINTER_1,
                    "productOrService": proc(code, r()),
                }
                if r() < 0.15:
                    item["servicedPeriod"] = {"start": day, "end": day}
                else:
                    item["servicedDate"] = day
            item["quantity"] = _QUANTITY_1
            if adjudicate:
                charge = int(r() * _CHARGES)
                if seq == 1 and variant == "line-denied-only":
                    item["adjudication"] = _LINE_DENIED_ADJUDICATION[charge]
                else:
                    item["adjudication"] = (_DENIED_ADJUDICATION if denied else _PAID_ADJUDICATION)[charge]
            items.append(item)
        return items

    def _variant_item(self, visit: Visit, r: Rand, parts: _VisitParts, code: str) -> Resource:
        """The first line of a variant child's service (unknown system, no date, long period)."""
        variant = visit.variant
        if variant == "unknown-code-system-only":
            product = self.codings.concept(vocab.UNKNOWN_PROC_SYSTEM, code)
        else:
            product = self.codings.proc(code, r())
        item: Resource = {
            "sequence": 1,
            "careTeamSequence": _POINTER_1,
            "diagnosisSequence": parts.pointer,
            "productOrService": product,
        }
        if variant == "serviced-period-across-year":
            item["servicedPeriod"] = parts.billable
        elif variant != "line-without-date-only":
            item["servicedDate"] = parts.day
        return item

    def eob(
        self,
        visit: Visit,
        r: Rand,
        parts: _VisitParts,
        eob_id: str,
        status: str,
        outcome: str,
        denied: bool,
        claim_ref: orjson.Fragment | None,
        replacement_code: str,
    ) -> Resource:
        items = self._items(
            visit, r, parts, adjudicate=True, denied=denied, replacement_code=replacement_code
        )
        res: Resource = {
            "resourceType": "ExplanationOfBenefit",
            "id": eob_id,
            "identifier": [{"type": _UC_TYPE, "system": vocab.CLAIM_NUMBER_SYSTEM, "value": eob_id}],
            "status": status,
            "type": _PROFESSIONAL,
            "use": "claim",
            "patient": parts.patient,
            "billablePeriod": parts.billable,
            "created": self.calendar.day(visit.day + 10 + int(r() * 35)),
            "insurer": parts.insurer,
            "provider": parts.provider,
        }
        if claim_ref is not None:
            res["claim"] = claim_ref
        res["outcome"] = outcome
        res["careTeam"] = parts.care_team
        res["diagnosis"] = parts.diagnoses
        res["insurance"] = [{"focal": True, "coverage": parts.coverage}]
        res["item"] = items
        if denied:
            if r() < 0.7:
                res["adjudication"] = [_HEADER_DENIAL[0] if r() < 0.8 else _HEADER_DENIAL[1]]
            else:
                res["adjudication"] = [_HEADER_STATUS_DENIED]
        elif r() < 0.5:
            res["adjudication"] = [_HEADER_STATUS_PAID]
        return res

    def claim(
        self,
        child: Child,
        visit: Visit,
        r: Rand,
        emit: Emit,
        parts: _VisitParts,
        counters: list[int],
        *,
        use: str,
    ) -> str:
        """A Claim: a CCO encounter record (``use`` claim) or a preauthorization request."""
        counters[1] += 1
        claim_id = f"clm-{child.key}-{counters[1]}"
        items = self._items(visit, r, parts, adjudicate=False, denied=False, replacement_code="")
        status = "active"
        if not visit.qualifying and r() < 0.02:
            status = "cancelled" if r() < 0.5 else "draft"
        created = visit.day - 14 if use == "preauthorization" else visit.day + 5 + int(r() * 20)
        emit(
            "Claim",
            {
                "resourceType": "Claim",
                "id": claim_id,
                "identifier": [{"type": _UC_TYPE, "system": vocab.CLAIM_NUMBER_SYSTEM, "value": claim_id}],
                "status": status,
                "type": _PROFESSIONAL,
                "use": use,
                "patient": parts.patient,
                "billablePeriod": parts.billable,
                "created": self.calendar.day(created),
                "insurer": parts.insurer,
                "provider": parts.provider,
                "priority": _NORMAL_PRIORITY,
                "careTeam": parts.care_team,
                "diagnosis": parts.diagnoses,
                "insurance": [{"sequence": 1, "focal": True, "coverage": parts.coverage}],
                "item": items,
            },
        )
        return claim_id


class _VisitParts(NamedTuple):
    """Elements shared by every Claim/EOB of one visit (a NamedTuple: built per visit)."""

    day: str
    billable: dict[str, str]
    patient: orjson.Fragment
    coverage: orjson.Fragment
    insurer: orjson.Fragment
    provider: orjson.Fragment
    care_team: orjson.Fragment
    diagnoses: orjson.Fragment
    pointer: list[int]


def _npi_reference(npi: str) -> Resource:
    return {"identifier": {"system": vocab.NPI_SYSTEM, "value": npi}}


def _claim_number(claim_id: str) -> Resource:
    return {"system": vocab.CLAIM_NUMBER_SYSTEM, "value": claim_id}


def _coverage_for(spans: tuple[Span, ...], day: int) -> int:
    """The active span covering ``day``, else the nearest active span before it, else the first."""
    best = -1
    for i, sp in enumerate(spans):
        if sp.status != "active":
            continue
        if sp.start <= day and (sp.end is None or day <= sp.end):
            return i
        if sp.start <= day or best < 0:
            best = i
    return max(best, 0)


def race_extensions(child: Child) -> list[Resource]:
    """US Core race / ethnicity extensions (OMB categories plus the required ``text``)."""
    out: list[Resource] = []
    if child.race >= 0:
        code, display = vocab.RACES[child.race]
        out.append(
            {
                "url": vocab.US_CORE_RACE,
                "extension": [
                    {
                        "url": "ombCategory",
                        "valueCoding": {"system": vocab.OMB_RACE_ETHNICITY, "code": code, "display": display},
                    },
                    {"url": "text", "valueString": display},
                ],
            }
        )
    if child.ethnicity >= 0:
        code, display = vocab.ETHNICITIES[child.ethnicity]
        out.append(
            {
                "url": vocab.US_CORE_ETHNICITY,
                "extension": [
                    {
                        "url": "ombCategory",
                        "valueCoding": {"system": vocab.OMB_RACE_ETHNICITY, "code": code, "display": display},
                    },
                    {"url": "text", "valueString": display},
                ],
            }
        )
    return out


def add_deceased(res: Resource, child: Child, calendar: Calendar) -> None:
    """``deceasedDateTime`` (date, or local noon with offset) or ``deceasedBoolean``."""
    if child.deceased == "boolean":
        res["deceasedBoolean"] = True
    elif child.deceased == "datetime" and child.death_day is not None:
        if child.index % 2:
            res["deceasedDateTime"] = calendar.day(child.death_day)
        else:
            res["deceasedDateTime"] = calendar.local(child.death_day, 12 * 60)
