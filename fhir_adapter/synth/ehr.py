"""The EHR sources (``ehr-clinic-a``, ``ehr-clinic-b``): US Core-like clinical records.

FHIR R4 shapes (http://hl7.org/fhir/R4/encounter.html, condition.html, procedure.html,
servicerequest.html) with US Core conventions: encounter diagnoses as Conditions with category
``encounter-diagnosis`` pointing at their Encounter, problem-list Conditions without encounter,
US Core race/ethnicity/birthsex extensions. Encounter ``type`` carries CPT/HCPCS and/or the local
visit-type codes of helpers-common.md. Referral codes are SNOMED CT (UNVERIFIED choice, see
``vocab.REFERRAL_CODES``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import orjson

from fhir_adapter.synth import vocab
from fhir_adapter.synth.calendar import Calendar
from fhir_adapter.synth.claims import add_deceased, race_extensions
from fhir_adapter.synth.plan import LATE_NIGHT, Child, Problem, Referral, Visit
from fhir_adapter.synth.shared import Codings, Emit, ProviderPool, Providers, Rand, Resource, frag, reference

_AMB: Final = frag({"system": vocab.ACT_CODE, "code": "AMB", "display": "ambulatory"})
_PPRF: Final = frag([{"coding": [{"system": vocab.PARTICIPATION_TYPE, "code": "PPRF"}]}])
_MR_TYPE: Final = frag({"coding": [{"system": vocab.V2_IDENTIFIER_TYPE, "code": "MR"}]})
_MB_TYPE: Final = frag({"coding": [{"system": vocab.V2_IDENTIFIER_TYPE, "code": "MB"}]})
_ENCOUNTER_DX: Final = frag(
    [{"coding": [{"system": vocab.CONDITION_CATEGORY, "code": "encounter-diagnosis"}]}]
)
_PROBLEM: Final = frag([{"coding": [{"system": vocab.CONDITION_CATEGORY, "code": "problem-list-item"}]}])
_ACTIVE: Final = frag({"coding": [{"system": vocab.CONDITION_CLINICAL, "code": "active"}]})
_RESOLVED: Final = frag({"coding": [{"system": vocab.CONDITION_CLINICAL, "code": "resolved"}]})
_INACTIVE: Final = frag({"coding": [{"system": vocab.CONDITION_CLINICAL, "code": "inactive"}]})
_CONFIRMED: Final = frag({"coding": [{"system": vocab.CONDITION_VERIFICATION, "code": "confirmed"}]})
_REFUTED: Final = frag({"coding": [{"system": vocab.CONDITION_VERIFICATION, "code": "refuted"}]})
_ENTERED_IN_ERROR: Final = frag(
    {"coding": [{"system": vocab.CONDITION_VERIFICATION, "code": "entered-in-error"}]}
)
_REFERRAL_CATEGORY: Final = frag(
    [
        {
            "coding": [
                {
                    "system": vocab.SNOMED,
                    "code": vocab.REFERRAL_CATEGORY[0],
                    "display": vocab.REFERRAL_CATEGORY[1],
                }
            ]
        }
    ]
)
_REFERRAL_CODES: Final = tuple(
    frag({"coding": [{"system": vocab.SNOMED, "code": code, "display": display}], "text": display})
    for code, display in vocab.REFERRAL_CODES
)
_PROVIDER_ORG_TYPE: Final = frag(
    [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/organization-type", "code": "prov"}]}]
)
_VISIT_MINUTES: Final = {"well": 30, "sick": 20, "dx": 30, "bh": 50, "screen": 15, "aba": 120}
#: EHR variants whose service must not count: no completed Procedure may stand in for it.
_UNCOUNTED_EHR: Final = frozenset(
    (
        "ehr-cancelled-only",
        "ehr-refuted-dx-only",
        "condition-entered-in-error-only",
        "in-progress-encounter-only",
    )
)
#: Extra lines of a visit worth their own Procedure (screening, vaccine administration).
_PROCEDURE_EXTRAS: Final = frozenset(("96110", "96127", "90460"))


@dataclass(frozen=True)
class EhrSource:
    """One EHR: folder name, site key ``a``/``b``, organisation sites and practitioners."""

    folder: str
    site: str
    name: str
    cities: tuple[str, ...]
    mrn_system: str
    pool: ProviderPool
    org_npis: tuple[str, ...]
    #: Per practitioner: Encounter.participant, Procedure.performer and a plain reference.
    participants: tuple[orjson.Fragment, ...]
    performers: tuple[orjson.Fragment, ...]
    requesters: tuple[orjson.Fragment, ...]
    #: Per organisation site: Encounter.serviceProvider.
    org_refs: tuple[orjson.Fragment, ...]

    @classmethod
    def build(
        cls,
        folder: str,
        site: str,
        name: str,
        cities: tuple[str, ...],
        mrn_system: str,
        pool: ProviderPool,
        org_npis: tuple[str, ...],
    ) -> EhrSource:
        individuals = [
            {
                "reference": f"Practitioner/{pool.practitioner_id(i)}",
                "identifier": {"system": vocab.NPI_SYSTEM, "value": npi},
                "display": f"{given} {family}",
            }
            for i, ((family, given), npi) in enumerate(zip(pool.names, pool.npis, strict=True))
        ]
        return cls(
            folder=folder,
            site=site,
            name=name,
            cities=cities,
            mrn_system=mrn_system,
            pool=pool,
            org_npis=org_npis,
            participants=tuple(frag([{"type": _PPRF, "individual": ind}]) for ind in individuals),
            performers=tuple(frag([{"actor": ind}]) for ind in individuals),
            requesters=tuple(frag(ind) for ind in individuals),
            org_refs=tuple(reference(f"Organization/org-{site}-{i + 1}") for i in range(len(cities))),
        )

    def org_id(self, i: int) -> str:
        return f"org-{self.site}-{i + 1}"

    def organizations(self) -> list[Resource]:
        return [
            {
                "resourceType": "Organization",
                "id": self.org_id(i),
                "identifier": [{"system": vocab.NPI_SYSTEM, "value": npi}],
                "active": True,
                "type": _PROVIDER_ORG_TYPE,
                "name": f"{self.name} - {city}",
                "address": [{"city": city, "state": "OR", "country": "US"}],
            }
            for i, (city, npi) in enumerate(zip(self.cities, self.org_npis, strict=True))
        ]

    def practitioners(self) -> list[Resource]:
        return [
            {
                "resourceType": "Practitioner",
                "id": self.pool.practitioner_id(i),
                "identifier": [{"system": vocab.NPI_SYSTEM, "value": npi}],
                "active": True,
                "name": [{"family": family, "given": [given]}],
            }
            for i, (npi, (family, given)) in enumerate(zip(self.pool.npis, self.pool.names, strict=True))
        ]


def ehr_sources(providers: Providers) -> tuple[EhrSource, EhrSource]:
    folder_a, site_a, name_a, cities_a = vocab.EHR_A
    folder_b, site_b, name_b, cities_b = vocab.EHR_B
    return (
        EhrSource.build(
            folder_a, site_a, name_a, cities_a, vocab.MRN_SYSTEM_A, providers.a, providers.org_npis_a
        ),
        EhrSource.build(
            folder_b, site_b, name_b, cities_b, vocab.MRN_SYSTEM_B, providers.b, providers.org_npis_b
        ),
    )


@dataclass(frozen=True)
class EhrRenderer:
    """Renders one child's records in one EHR source."""

    calendar: Calendar
    codings: Codings

    def render(self, source: EhrSource, child: Child, r: Rand, emit: Emit, tags: set[str]) -> None:
        site = source.site
        linked = child.linked_a if site == "a" else child.linked_b
        pid = child.patient_a if site == "a" else child.patient_b
        emit("Patient", self.patient(source, child, pid, linked, r))
        ctx = _ChildContext(
            source=source,
            child=child,
            subject=reference(f"Patient/{pid}"),
            org=source.org_refs[child.index % len(source.cities)],
            emit=emit,
            r=r,
            tags=tags,
        )
        encounter_ids: dict[int, str] = {}
        for i, visit in enumerate(child.visits):
            if visit.ehr and visit.site == site:
                encounter_id = self.visit(ctx, visit)
                if encounter_id:
                    encounter_ids[i] = encounter_id
        for referral in child.referrals:
            if child.visits[referral.visit].site == site and referral.visit in encounter_ids:
                self.referral(ctx, referral, encounter_ids[referral.visit])
        for problem in child.problems:
            if problem.site == site:
                self.problem(ctx, problem)

    def patient(self, source: EhrSource, child: Child, pid: str, linked: bool, r: Rand) -> Resource:
        lang_code, lang_name = vocab.LANGUAGES[child.language]
        county, city, _ccos = vocab.COUNTIES[child.county]
        res: Resource = {"resourceType": "Patient", "id": pid}
        extensions = race_extensions(child) if (child.race >= 0 or child.ethnicity >= 0) else []
        if child.sex in ("male", "female") and r() < 0.6:
            extensions.append(
                {"url": vocab.US_CORE_BIRTHSEX, "valueCode": "M" if child.sex == "male" else "F"}
            )
        if extensions:
            res["extension"] = extensions
        identifiers = [
            {"type": _MR_TYPE, "system": source.mrn_system, "value": f"{source.site.upper()}{child.key}"}
        ]
        if linked:
            identifiers.append({"type": _MB_TYPE, "system": vocab.MEMBER_ID_SYSTEM, "value": child.member_id})
        res["identifier"] = identifiers
        res["active"] = True
        res["name"] = [{"use": "official", "family": child.family, "given": [child.given]}]
        res["gender"] = child.sex
        if child.birth is not None:
            res["birthDate"] = child.birth
        add_deceased(res, child, self.calendar)
        res["address"] = [{"use": "home", "city": city, "district": county, "state": "OR", "country": "US"}]
        if r() < 0.85:
            res["communication"] = [
                {
                    "language": {
                        "coding": [{"system": vocab.BCP47, "code": lang_code, "display": lang_name}],
                        "text": lang_name,
                    },
                    "preferred": True,
                }
            ]
        return res

    def _type(self, code: str, variant: str, r: Rand) -> list[orjson.Fragment]:
        """Encounter.type: CPT/HCPCS, the local visit type, or both in one CodeableConcept."""
        if variant == "ehr-procedure-only":
            return [self.codings.concept(vocab.LOCAL_VISIT_SYSTEM, vocab.LOCAL_OFFICE_VISIT)]
        local = vocab.LOCAL_VISIT_TYPES.get(code)
        if variant == "local-visit-type" and local:
            return [self.codings.concept(vocab.LOCAL_VISIT_SYSTEM, local)]
        canonical = self.codings.proc_variant(code, 0)
        if local is None:
            return [canonical]
        x = r()
        if x < 0.5:
            return [canonical]
        if x < 0.75:
            return [self.codings.concept(vocab.LOCAL_VISIT_SYSTEM, local)]
        return [self.codings.local_and_canonical(local, code)]

    def visit(self, ctx: _ChildContext, visit: Visit) -> str:
        """Encounter (unless the variant has none), its Conditions and Procedures."""
        cal, r, child, source, codings = self.calendar, ctx.r, ctx.child, ctx.source, self.codings
        variant = visit.variant
        counters = ctx.counters
        minute = visit.minute
        if not visit.qualifying and r() < 0.01:
            minute = LATE_NIGHT
        late = minute == LATE_NIGHT
        length = _VISIT_MINUTES[visit.kind]
        if late or r() < 0.15:
            start = cal.utc(visit.day, minute)
            end = cal.utc(visit.day, minute + length)
        else:
            start = cal.local(visit.day, minute)
            end = cal.local(visit.day, minute + length)
        if late and not visit.qualifying:
            ctx.tags.add("encounter-late-night-utc")

        if variant == "procedure-not-done-only":
            counters[2] += 1
            ctx.emit(
                "Procedure",
                {
                    "resourceType": "Procedure",
                    "id": f"proc-{child.key}-{counters[2]}",
                    "status": "not-done",
                    "code": codings.proc_variant(visit.codes[0], 0),
                    "subject": ctx.subject,
                    "performedDateTime": start,
                    "reasonCode": [codings.icd(visit.dx[0], 0.0)],
                },
            )
            return ""

        status = "finished"
        if variant == "ehr-cancelled-only":
            status = "cancelled"
        elif variant == "in-progress-encounter-only":
            status = "in-progress"
        elif not visit.qualifying:
            x = r()
            if x < 0.02:
                status = "cancelled"
            elif x < 0.03:
                status = "in-progress"
        counters[0] += 1
        encounter_id = f"enc-{child.key}-{counters[0]}"
        encounter_ref = {"reference": f"Encounter/{encounter_id}"}
        encounter: Resource = {
            "resourceType": "Encounter",
            "id": encounter_id,
            "status": status,
            "class": _AMB,
            "type": self._type(visit.codes[0], variant, r),
            "subject": ctx.subject,
            "participant": source.participants[visit.provider],
            "period": {"start": start} if status == "in-progress" else {"start": start, "end": end},
            "serviceProvider": ctx.org,
        }
        reason_only = variant == "encounter-reason-code-dx"
        no_dx = False
        if reason_only or (not visit.qualifying and r() < 0.05):
            encounter["reasonCode"] = [codings.icd(code, 0.0) for code in visit.dx]
        elif status == "finished" and visit.kind == "sick" and r() < 0.03:
            no_dx = True
            ctx.tags.add("encounter-without-diagnosis")
        conditions: list[Resource] = []
        if not no_dx and not reason_only:
            recorded = cal.day(visit.day)
            clinical = _RESOLVED if visit.kind in ("sick", "well") else _ACTIVE
            linked = variant != "encounter-diagnosis-element"
            for n, code in enumerate(visit.dx):
                counters[1] += 1
                condition_id = f"cond-{child.key}-{counters[1]}"
                concept = codings.icd(code, r()) if r() < 0.1 else codings.icd(code, 0.0)
                if visit.qualifying and n == 0 and variant == "condition-entered-in-error-only":
                    condition: Resource = {
                        "resourceType": "Condition",
                        "id": condition_id,
                        "verificationStatus": _ENTERED_IN_ERROR,
                    }
                else:
                    refuted = visit.qualifying and n == 0 and variant == "ehr-refuted-dx-only"
                    condition = {
                        "resourceType": "Condition",
                        "id": condition_id,
                        "clinicalStatus": _INACTIVE if refuted else clinical,
                        "verificationStatus": _REFUTED if refuted else _CONFIRMED,
                    }
                condition["category"] = _ENCOUNTER_DX
                condition["code"] = concept
                condition["subject"] = ctx.subject
                if linked:
                    condition["encounter"] = encounter_ref
                condition["recordedDate"] = recorded
                conditions.append(condition)
            if not linked:
                encounter["diagnosis"] = [
                    {"condition": {"reference": f"Condition/{c['id']}"}, "rank": rank}
                    for rank, c in enumerate(conditions, 1)
                ]
        ctx.emit("Encounter", encounter)
        for condition in conditions:
            ctx.emit("Condition", condition)
        # Procedures: the coded service (BH visits, some), screening and vaccine lines.
        if (
            visit.kind == "bh"
            and variant not in _UNCOUNTED_EHR
            and (variant == "ehr-procedure-only" or r() < 0.4)
        ):
            counters[2] += 1
            procedure: Resource = {
                "resourceType": "Procedure",
                "id": f"proc-{child.key}-{counters[2]}",
                "status": "completed" if status == "finished" else "not-done",
                "code": codings.proc_variant(visit.codes[0], 0),
                "subject": ctx.subject,
                "encounter": encounter_ref,
            }
            if r() < 0.7:
                procedure["performedDateTime"] = start
            else:
                procedure["performedPeriod"] = {"start": start, "end": end}
            procedure["performer"] = source.performers[visit.provider]
            procedure["reasonCode"] = [codings.icd(visit.dx[0], 0.0)]
            ctx.emit("Procedure", procedure)
        if len(visit.codes) > 1 and status == "finished":
            for code in visit.codes[1:]:
                if code in _PROCEDURE_EXTRAS:
                    counters[2] += 1
                    ctx.emit(
                        "Procedure",
                        {
                            "resourceType": "Procedure",
                            "id": f"proc-{child.key}-{counters[2]}",
                            "status": "completed",
                            "code": codings.proc_variant(code, 0),
                            "subject": ctx.subject,
                            "encounter": encounter_ref,
                            "performedDateTime": start,
                            "performer": source.performers[visit.provider],
                        },
                    )
        return encounter_id

    def referral(self, ctx: _ChildContext, referral: Referral, encounter_id: str) -> None:
        visit = ctx.child.visits[referral.visit]
        ctx.counters[3] += 1
        ctx.emit(
            "ServiceRequest",
            {
                "resourceType": "ServiceRequest",
                "id": f"sr-{ctx.child.key}-{ctx.counters[3]}",
                "status": referral.status,
                "intent": "order",
                "category": _REFERRAL_CATEGORY,
                "code": _REFERRAL_CODES[referral.code],
                "subject": ctx.subject,
                "encounter": {"reference": f"Encounter/{encounter_id}"},
                "authoredOn": self.calendar.local(visit.day, min(visit.minute + 25, 23 * 60 + 59)),
                "requester": ctx.source.requesters[visit.provider],
                "reasonCode": [self.codings.icd(referral.dx, 0.0)],
            },
        )

    def problem(self, ctx: _ChildContext, problem: Problem) -> None:
        ctx.counters[1] += 1
        ctx.emit(
            "Condition",
            {
                "resourceType": "Condition",
                "id": f"cond-{ctx.child.key}-{ctx.counters[1]}",
                "clinicalStatus": _ACTIVE,
                "verificationStatus": _CONFIRMED,
                "category": _PROBLEM,
                "code": self.codings.icd(problem.dx, 0.0),
                "subject": ctx.subject,
                "recordedDate": problem.recorded,
            },
        )


@dataclass
class _ChildContext:
    """Mutable per-(child, source) state: references and id counters."""

    source: EhrSource
    child: Child
    subject: orjson.Fragment
    org: orjson.Fragment
    emit: Emit
    r: Rand
    tags: set[str]
    #: Encounters, Conditions, Procedures, ServiceRequests written so far.
    counters: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
