"""Builders for tiny FHIR cohorts used by the engine's boundary tables and golden tests.

Each builder returns a plain R4 dict, as an EHR or a payer would send it.
"""

from __future__ import annotations

from typing import Any

MEMBER = "https://oregon.gov/oha/ohp/member-id"
CCO_SYSTEM = "https://oregon.gov/oha/cco-id"
CPT = "http://www.ama-assn.org/go/cpt"
HCPCS = "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
C4BB_DISC = "http://hl7.org/fhir/us/carin-bb/CodeSystem/C4BBAdjudicationDiscriminator"
Resource = dict[str, Any]


def patient(
    pid: str, birth: str | None, *, member: str | None = None, unlinked: bool = False, **extra: Any
) -> Resource:
    r: Resource = {"resourceType": "Patient", "id": pid, "gender": "female"}
    if birth is not None:
        r["birthDate"] = birth
    if not unlinked:
        r["identifier"] = [{"system": MEMBER, "value": member or f"M-{pid}"}]
    r.update(extra)
    return r


def coverage(
    cid: str, pid: str, start: str | None, end: str | None, *, cco: str = "ALLCARE", **extra: Any
) -> Resource:
    period: dict[str, str] = {}
    if start:
        period["start"] = start
    if end:
        period["end"] = end
    r: Resource = {
        "resourceType": "Coverage",
        "id": cid,
        "status": "active",
        "beneficiary": {"reference": f"Patient/{pid}"},
        "payor": [{"identifier": {"system": CCO_SYSTEM, "value": cco}}],
    }
    if period:
        r["period"] = period
    r.update(extra)
    return r


def full_year(pid: str, year: int = 2025, cco: str = "ALLCARE") -> Resource:
    return coverage(f"cov-{pid}-{cco}", pid, f"{year - 1}-07-01", None, cco=cco)


def eob(
    eid: str,
    pid: str,
    day: str,
    code: str = "90834",
    dx: tuple[str, ...] = ("F43.22",),
    *,
    system: str = CPT,
    denied: bool = False,
    line_denied: bool = False,
    outcome: str = "complete",
    status: str = "active",
    use: str = "claim",
    pointers: tuple[int, ...] | None = None,
    related: list[Resource] | None = None,
    claim: str | None = None,
    dx_system: str = ICD,
) -> Resource:
    item: Resource = {
        "sequence": 1,
        "productOrService": {"coding": [{"system": system, "code": code}]},
        "servicedDate": day,
        "diagnosisSequence": list(pointers if pointers is not None else range(1, len(dx) + 1)),
    }
    if line_denied:
        item["adjudication"] = [{"category": {"coding": [{"system": C4BB_DISC, "code": "denialreason"}]}}]
    r: Resource = {
        "resourceType": "ExplanationOfBenefit",
        "id": eid,
        "status": status,
        "use": use,
        "outcome": outcome,
        "type": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]
        },
        "patient": {"reference": f"Patient/{pid}"},
        "created": day,
        "insurer": {"display": "CCO"},
        "provider": {"identifier": {"system": "http://hl7.org/fhir/sid/us-npi", "value": "1234567893"}},
        "diagnosis": [
            {"sequence": n, "diagnosisCodeableConcept": {"coding": [{"system": dx_system, "code": code_}]}}
            for n, code_ in enumerate(dx, start=1)
        ],
        "item": [item],
    }
    if denied:
        r["adjudication"] = [{"category": {"coding": [{"system": C4BB_DISC, "code": "denialreason"}]}}]
    if related:
        r["related"] = related
    if claim:
        r["claim"] = {"reference": f"Claim/{claim}"}
    return r


def claim(
    cid: str,
    pid: str,
    day: str,
    code: str = "90834",
    dx: tuple[str, ...] = ("F43.22",),
    *,
    use: str = "claim",
    status: str = "active",
) -> Resource:
    r = eob(cid, pid, day, code, dx, use=use, status=status)
    r["resourceType"] = "Claim"
    del r["outcome"]
    return r


def replaces(target_type: str, target_id: str, code: str = "prior") -> Resource:
    return {
        "claim": {"reference": f"{target_type}/{target_id}"},
        "relationship": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/ex-relatedclaimrelationship", "code": code}
            ]
        },
    }


def encounter(
    eid: str,
    pid: str,
    start: str,
    code: str = "90834",
    *,
    system: str = CPT,
    status: str = "finished",
    reason: str | None = None,
) -> Resource:
    r: Resource = {
        "resourceType": "Encounter",
        "id": eid,
        "status": status,
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "type": [{"coding": [{"system": system, "code": code}]}],
        "subject": {"reference": f"Patient/{pid}"},
        "period": {"start": start},
    }
    if reason:
        r["reasonCode"] = [{"coding": [{"system": ICD, "code": reason}]}]
    return r


def condition(
    cid: str,
    pid: str,
    code: str = "F43.22",
    *,
    encounter_id: str | None = None,
    verification: str = "confirmed",
    recorded: str | None = None,
) -> Resource:
    r: Resource = {
        "resourceType": "Condition",
        "id": cid,
        "subject": {"reference": f"Patient/{pid}"},
        "code": {"coding": [{"system": ICD, "code": code}]},
        "verificationStatus": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": verification}
            ]
        },
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-category",
                        "code": "encounter-diagnosis",
                    }
                ]
            }
        ],
    }
    if encounter_id:
        r["encounter"] = {"reference": f"Encounter/{encounter_id}"}
    if recorded:
        r["recordedDate"] = recorded
    return r


def procedure(
    prid: str,
    pid: str,
    day: str,
    code: str = "90834",
    *,
    status: str = "completed",
    encounter_id: str | None = None,
    reason: str | None = None,
) -> Resource:
    r: Resource = {
        "resourceType": "Procedure",
        "id": prid,
        "status": status,
        "subject": {"reference": f"Patient/{pid}"},
        "code": {"coding": [{"system": CPT, "code": code}]},
        "performedDateTime": day,
    }
    if encounter_id:
        r["encounter"] = {"reference": f"Encounter/{encounter_id}"}
    if reason:
        r["reasonCode"] = [{"coding": [{"system": ICD, "code": reason}]}]
    return r
