"""Every scenario tag means what TAGS says: checked on the records of tagged children.

The checks read the records the way spec/oregon-se-metric.md §3 does (a qualifying service is an
intervention code with an SE diagnosis on a counted claim or finished encounter), so the
``*-only`` tags are shown to leave the child without any counted service.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import cached_property
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from fhir_adapter.synth import TAGS, ChildRecords, render_children, vocab
from tests.synth.conftest import SCAN, SMALL, Cohort, Resource

FIRST_YEAR, LAST_YEAR = 2024, 2025
TZ = ZoneInfo("America/Los_Angeles")
INTERVENTIONS = {code for code, _w in vocab.INTERVENTIONS}
LOCAL_INTERVENTIONS = {"BH-PSYTX-30", "BH-PSYTX-45", "BH-PSYTX-60", "BH-FAM", "BH-PCIT"}
SE_DX = {code.replace(".", "") for code, _w in vocab.SE_DIAGNOSES}
KNOWN_PROC_SYSTEMS = set(vocab.CPT_VARIANTS) | set(vocab.HCPCS_VARIANTS)
RENDER_TAGS = {"adjusted-claim", "encounter-late-night-utc", "encounter-without-diagnosis"}
EXAMPLES = 2


def local_day(text: str) -> date:
    """A FHIR date or dateTime as a local date (offsets converted, spec §3)."""
    if "T" not in text:
        return date.fromisoformat(text)
    return datetime.fromisoformat(text).astimezone(TZ).date()


def concept_codes(concept: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c["system"], c["code"]) for c in concept.get("coding", [])]


def is_se(concept: dict[str, Any]) -> bool:
    return any(code.replace(".", "") in SE_DX for _s, code in concept_codes(concept))


@dataclass(frozen=True)
class Span:
    start: date
    end: date | None
    cco: str
    status: str


@dataclass(frozen=True)
class Child:
    """One child's records, with the measure-like reading the checks need."""

    records: ChildRecords

    def of(self, source: str, resource_type: str) -> tuple[Resource, ...]:
        return self.records.resources.get(source, {}).get(resource_type, ())

    def ehr(self, resource_type: str) -> list[Resource]:
        return [*self.of("ehr-clinic-a", resource_type), *self.of("ehr-clinic-b", resource_type)]

    @property
    def sources(self) -> set[str]:
        return {s for s, per_type in self.records.resources.items() if per_type.get("Patient")}

    @property
    def patients(self) -> list[Resource]:
        return [*self.of("oha-claims", "Patient"), *self.ehr("Patient")]

    @property
    def eobs(self) -> tuple[Resource, ...]:
        return self.of("oha-claims", "ExplanationOfBenefit")

    @property
    def claims(self) -> tuple[Resource, ...]:
        return self.of("oha-claims", "Claim")

    # -- enrollment --------------------------------------------------------------------------
    @cached_property
    def spans(self) -> list[Span]:
        out = []
        for coverage in self.of("oha-claims", "Coverage"):
            payor = coverage["payor"][0]
            cco = payor["identifier"]["value"] if "identifier" in payor else payor["reference"]
            period = coverage["period"]
            end = local_day(period["end"]) if "end" in period else None
            out.append(Span(local_day(period["start"]), end, cco, coverage["status"]))
        return sorted(out, key=lambda s: s.start)

    @cached_property
    def gaps(self) -> list[int]:
        """Uncovered days between merged active spans."""
        active = [s for s in self.spans if s.status == "active"]
        gaps: list[int] = []
        covered_to: date | None = None
        for span in active:
            if covered_to is not None and span.start > covered_to + timedelta(days=1):
                gaps.append((span.start - covered_to).days - 1)
            if span.end is None:
                covered_to = date.max - timedelta(days=2)
            elif covered_to is None or span.end > covered_to:
                covered_to = span.end
        return gaps

    # -- claims ------------------------------------------------------------------------------
    @cached_property
    def replaced(self) -> set[str]:
        """Claim numbers of EOBs replaced by another (related prior, or replacedby on itself)."""
        out: set[str] = set()
        for eob in self.eobs:
            for related in eob.get("related", []):
                code = related["relationship"]["coding"][0]["code"]
                if code == "prior":
                    out.add(related["reference"]["value"])
                elif code == "replacedby":
                    out.add(eob["identifier"][0]["value"])
        return out

    @cached_property
    def adjudicated_claims(self) -> set[str]:
        return {eob["claim"]["reference"] for eob in self.eobs if "claim" in eob}

    @staticmethod
    def denied(eob: Resource) -> bool:
        return any(
            c["code"] in ("denialreason", "denied")
            for a in eob.get("adjudication", [])
            for c in a["category"]["coding"]
        )

    @staticmethod
    def intervention_lines(
        claim: Resource, *, known_only: bool = True, dated_only: bool = True
    ) -> list[Resource]:
        lines = []
        for item in claim["item"]:
            coding = item["productOrService"]["coding"][0]
            if coding["code"] not in INTERVENTIONS:
                continue
            if known_only and coding["system"] not in KNOWN_PROC_SYSTEMS:
                continue
            if dated_only and "servicedDate" not in item and "servicedPeriod" not in item:
                continue
            if any(
                c["code"] == "denialreason"
                for a in item.get("adjudication", [])
                for c in a["category"]["coding"]
            ):
                continue
            lines.append(item)
        return lines

    def counted_claim(self, claim: Resource) -> bool:
        """Spec §3 numerator sources for claims (diagnosis position ``any``)."""
        if claim["use"] != "claim" or claim["status"] != "active":
            return False
        if claim["resourceType"] == "ExplanationOfBenefit":
            if claim["outcome"] not in ("complete", "partial") or self.denied(claim):
                return False
            if claim["identifier"][0]["value"] in self.replaced:
                return False
        elif f"Claim/{claim['id']}" in self.adjudicated_claims:
            return False
        has_se = any(is_se(d["diagnosisCodeableConcept"]) for d in claim["diagnosis"])
        return has_se and bool(self.intervention_lines(claim))

    @cached_property
    def qualifying_claims(self) -> list[Resource]:
        return [c for c in (*self.eobs, *self.claims) if self.counted_claim(c)]

    def intervention_claims(self) -> list[Resource]:
        return [
            c
            for c in (*self.eobs, *self.claims)
            if self.intervention_lines(c, known_only=False, dated_only=False)
            and any(is_se(d["diagnosisCodeableConcept"]) for d in c["diagnosis"])
        ]

    # -- EHR ---------------------------------------------------------------------------------
    @staticmethod
    def encounter_codes(encounter: Resource) -> set[str]:
        return {code for t in encounter.get("type", []) for _s, code in concept_codes(t)}

    def is_intervention_encounter(self, encounter: Resource) -> bool:
        codes = self.encounter_codes(encounter)
        return bool(codes & INTERVENTIONS or codes & LOCAL_INTERVENTIONS)

    def encounter_conditions(self, encounter: Resource) -> list[Resource]:
        ref = f"Encounter/{encounter['id']}"
        listed = {d["condition"]["reference"] for d in encounter.get("diagnosis", [])}
        return [
            c
            for c in self.ehr("Condition")
            if c.get("encounter", {}).get("reference") == ref or f"Condition/{c['id']}" in listed
        ]

    def counted_encounter(self, encounter: Resource) -> bool:
        if encounter["status"] != "finished" or not self.is_intervention_encounter(encounter):
            return False
        for condition in self.encounter_conditions(encounter):
            status = condition["verificationStatus"]["coding"][0]["code"]
            if status not in ("refuted", "entered-in-error") and is_se(condition["code"]):
                return True
        return any(is_se(reason) for reason in encounter.get("reasonCode", []))

    @cached_property
    def qualifying_encounters(self) -> list[Resource]:
        return [e for e in self.ehr("Encounter") if self.counted_encounter(e)]

    @cached_property
    def qualifying_procedures(self) -> list[Resource]:
        return [
            p
            for p in self.ehr("Procedure")
            if p["status"] == "completed"
            and self.is_intervention_encounter({"type": [p["code"]]})
            and any(is_se(r) for r in p.get("reasonCode", []))
        ]

    @property
    def counted(self) -> bool:
        return bool(self.qualifying_claims or self.qualifying_encounters or self.qualifying_procedures)

    def all_dx(self) -> Iterable[dict[str, Any]]:
        for claim in (*self.eobs, *self.claims):
            for d in claim["diagnosis"]:
                yield d["diagnosisCodeableConcept"]
        for condition in self.ehr("Condition"):
            yield condition["code"]
        for encounter in self.ehr("Encounter"):
            yield from encounter.get("reasonCode", [])

    def all_procedure_codes(self) -> set[str]:
        codes = {
            i["productOrService"]["coding"][0]["code"] for c in (*self.eobs, *self.claims) for i in c["item"]
        }
        codes |= {code for e in self.ehr("Encounter") for code in self.encounter_codes(e)}
        codes |= {code for p in self.ehr("Procedure") for _s, code in concept_codes(p["code"])}
        return codes


def _birth_dates(c: Child) -> list[str]:
    return [p["birthDate"] for p in c.patients if "birthDate" in p]


def _member_ids(patient: Resource) -> set[str]:
    return {i["value"] for i in patient["identifier"] if i["system"] == vocab.MEMBER_ID_SYSTEM}


def _any_dec31_overlap(c: Child) -> bool:
    active = [s for s in c.spans if s.status == "active"]
    for year in range(FIRST_YEAR, LAST_YEAR + 1):
        anchor = date(year, 12, 31)
        on = {s.cco for s in active if s.start <= anchor and (s.end is None or anchor <= s.end)}
        if len(on) >= 2:
            return True
    return False


def _adjacent_same_cco(c: Child) -> bool:
    active = [s for s in c.spans if s.status == "active"]
    return any(
        a.cco == b.cco and a.end is not None and b.start <= a.end + timedelta(days=1)
        for a, b in itertools.pairwise(active)
    )


def _same_service(c: Child) -> bool:
    claim_days = {
        local_day(i.get("servicedDate") or i["servicedPeriod"]["start"])
        for claim in c.qualifying_claims
        for i in c.intervention_lines(claim)
    }
    return any(local_day(e["period"]["start"]) in claim_days for e in c.qualifying_encounters)


def _uses(c: Child, code: str, dx_prefix: str) -> bool:
    for claim in (*c.eobs, *c.claims):
        if any(i["productOrService"]["coding"][0]["code"] == code for i in claim["item"]) and any(
            d["diagnosisCodeableConcept"]["coding"][0]["code"].startswith(dx_prefix)
            for d in claim["diagnosis"]
        ):
            return True
    return False


def _eob_with(c: Child, test: Callable[[Resource], bool]) -> bool:
    return any(test(eob) for eob in c.intervention_claims() if eob["resourceType"] == "ExplanationOfBenefit")


def _encounter_with(c: Child, test: Callable[[Resource], bool]) -> bool:
    return any(test(e) for e in c.ehr("Encounter") if c.is_intervention_encounter(e))


def _line_points_away(claim: Resource) -> bool:
    se_sequences = {d["sequence"] for d in claim["diagnosis"] if is_se(d["diagnosisCodeableConcept"])}
    return any(not set(i["diagnosisSequence"]) & se_sequences for i in Child.intervention_lines(claim))


def _linked_conditions(c: Child) -> set[str]:
    return {
        *(cond["encounter"]["reference"] for cond in c.ehr("Condition") if "encounter" in cond),
        *(f"Encounter/{e['id']}" for e in c.ehr("Encounter") if e.get("diagnosis") or e.get("reasonCode")),
    }


#: tag -> a check on the child's records; every tag in TAGS has one.
CHECKS: dict[str, Callable[[Child], bool]] = {
    "birth-dec-31": lambda c: bool(_birth_dates(c)) and all(b.endswith("-12-31") for b in _birth_dates(c)),
    "birth-jan-1": lambda c: bool(_birth_dates(c)) and all(b.endswith("-01-01") for b in _birth_dates(c)),
    "birth-year-only": lambda c: bool(_birth_dates(c)) and all(len(b) == 4 for b in _birth_dates(c)),
    "birth-year-month": lambda c: bool(_birth_dates(c)) and all(len(b) == 7 for b in _birth_dates(c)),
    "no-birth-date": lambda c: not _birth_dates(c),
    "born-during-year": lambda c: all(int(b[:4]) >= FIRST_YEAR for b in _birth_dates(c)),
    "deceased-datetime": lambda c: all("deceasedDateTime" in p for p in c.patients),
    "deceased-boolean": lambda c: all(p.get("deceasedBoolean") is True for p in c.patients),
    "claims-and-ehr": lambda c: (
        "oha-claims" in c.sources
        and len(c.sources) >= 2
        and len({p["id"] for p in c.patients}) == len(c.patients)
    ),
    "in-both-ehrs": lambda c: {"ehr-clinic-a", "ehr-clinic-b"} <= c.sources,
    "ehr-only": lambda c: "oha-claims" not in c.sources and not any(_member_ids(p) for p in c.patients),
    "claims-only": lambda c: c.sources == {"oha-claims"},
    "unlinked-ehr": lambda c: (
        bool(c.of("oha-claims", "Patient")) and any(not _member_ids(p) for p in c.ehr("Patient"))
    ),
    "ehr-id-collision": lambda c: (
        c.of("ehr-clinic-b", "Patient")[0]["id"] != f"p{2_000_000 + c.records.index}"
        and c.of("ehr-clinic-b", "Patient")[0]["id"] != f"{1_000_000 + c.records.index}"
    ),
    "continuous-enrollment": lambda c: (
        not c.gaps
        and len({s.cco for s in c.spans if s.status == "active"}) == 1
        and any(s.end is None or s.end >= date(LAST_YEAR, 12, 31) for s in c.spans if s.status == "active")
    ),
    "enrolled-since-birth": lambda c: (
        any(c.spans[0].start == date.fromisoformat(b) for b in _birth_dates(c))
        or any(len(b) < 10 for b in _birth_dates(c))
        or not _birth_dates(c)
    ),
    "gap-30": lambda c: c.gaps == [30],
    "gap-45": lambda c: c.gaps == [45],
    "gap-46": lambda c: c.gaps == [46],
    "two-gaps": lambda c: c.gaps == [10, 20],
    "cco-switch": lambda c: len({s.cco for s in c.spans if s.status == "active"}) == 2,
    "enrolled-mid-year": lambda c: c.spans[0].start.year >= FIRST_YEAR and c.spans[0].start.month >= 2,
    "disenrolled-before-anchor": lambda c: (
        (end := c.spans[-1].end) is not None and end.year <= LAST_YEAR and end < date(end.year, 12, 31)
    ),
    "two-ccos-on-anchor": _any_dec31_overlap,
    "adjacent-spans": _adjacent_same_cco,
    "retro-enrollment": lambda c: bool(c.spans),
    "cancelled-coverage": lambda c: any(s.status == "cancelled" for s in c.spans),
    "draft-coverage": lambda c: any(s.status == "draft" for s in c.spans),
    "payor-organization-reference": lambda c: all(
        cov["payor"][0]["reference"].startswith("Organization/cco-") for cov in c.of("oha-claims", "Coverage")
    ),
    "coverage-datetime-period": lambda c: all(
        "T" in cov["period"]["start"] for cov in c.of("oha-claims", "Coverage")
    ),
    "se-diagnosis": lambda c: any(is_se(concept) for concept in c.all_dx()),
    "qualifying-service": lambda c: c.counted,
    "qualifying-claims": lambda c: bool(c.qualifying_claims),
    "qualifying-ehr": lambda c: bool(c.qualifying_encounters),
    "same-service-ehr-and-claim": _same_service,
    "screening-only": lambda c: (
        "96127" in c.all_procedure_codes()
        and not c.all_procedure_codes() & (INTERVENTIONS | LOCAL_INTERVENTIONS)
        and not any(is_se(concept) for concept in c.all_dx())
    ),
    "aba-autism": lambda c: _uses(c, vocab.ABA, "F84"),
    "service-without-qualifying-diagnosis": lambda c: _uses(c, "90834", "F90"),
    "adjusted-claim": lambda c: any(
        r["relationship"]["coding"][0]["code"] == "prior" for eob in c.eobs for r in eob.get("related", [])
    ),
    "denied-only": lambda c: not c.counted and _eob_with(c, Child.denied),
    "replaced-only": lambda c: (
        not c.counted and _eob_with(c, lambda eob: eob["identifier"][0]["value"] in c.replaced)
    ),
    "preauth-only": lambda c: (
        not c.counted and any(cl["use"] == "preauthorization" for cl in c.intervention_claims())
    ),
    "claim-judged-by-denied-eob": lambda c: (
        not c.counted and _eob_with(c, lambda eob: "claim" in eob and Child.denied(eob))
    ),
    "cancelled-eob-only": lambda c: (
        not c.counted and _eob_with(c, lambda eob: eob["status"] in ("cancelled", "entered-in-error"))
    ),
    "eob-error-only": lambda c: (
        not c.counted and _eob_with(c, lambda eob: eob["outcome"] in ("error", "queued"))
    ),
    "line-denied-only": lambda c: (
        not c.counted
        and any(
            a["category"]["coding"][0]["code"] == "denialreason"
            for eob in c.eobs
            for i in eob["item"]
            for a in i.get("adjudication", [])
        )
    ),
    "dx-secondary-only": lambda c: (
        c.counted
        and all(not is_se(cl["diagnosis"][0]["diagnosisCodeableConcept"]) for cl in c.qualifying_claims)
    ),
    "dx-not-on-line": lambda c: c.counted and all(_line_points_away(cl) for cl in c.qualifying_claims),
    "unknown-code-system-only": lambda c: (
        not c.counted
        and any(
            i["productOrService"]["coding"][0]["system"] == vocab.UNKNOWN_PROC_SYSTEM
            for cl in c.eobs
            for i in cl["item"]
        )
    ),
    "line-without-date-only": lambda c: (
        not c.counted
        and any(
            "servicedDate" not in i and "servicedPeriod" not in i
            for cl in c.intervention_claims()
            for i in cl["item"]
        )
    ),
    "encounter-record-claim": lambda c: (
        bool(c.qualifying_claims) and all(cl["resourceType"] == "Claim" for cl in c.qualifying_claims)
    ),
    "partial-outcome": lambda c: (
        bool(c.qualifying_claims) and all(cl["outcome"] == "partial" for cl in c.qualifying_claims)
    ),
    "serviced-period-across-year": lambda c: any(
        i["servicedPeriod"]["start"][5:] == "12-29" and i["servicedPeriod"]["end"][5:] == "01-04"
        for cl in c.qualifying_claims
        for i in cl["item"]
        if "servicedPeriod" in i
    ),
    "ehr-cancelled-only": lambda c: (
        not c.counted and _encounter_with(c, lambda e: e["status"] == "cancelled")
    ),
    "ehr-refuted-dx-only": lambda c: (
        not c.counted
        and any(cond["verificationStatus"]["coding"][0]["code"] == "refuted" for cond in c.ehr("Condition"))
    ),
    "condition-entered-in-error-only": lambda c: (
        not c.counted
        and any(
            cond["verificationStatus"]["coding"][0]["code"] == "entered-in-error"
            for cond in c.ehr("Condition")
        )
    ),
    "procedure-not-done-only": lambda c: (
        not c.counted and any(p["status"] == "not-done" and "encounter" not in p for p in c.ehr("Procedure"))
    ),
    "ehr-procedure-only": lambda c: bool(c.qualifying_procedures) and not c.qualifying_encounters,
    "local-visit-type": lambda c: any(
        {s for t in e["type"] for s, _code in concept_codes(t)} == {vocab.LOCAL_VISIT_SYSTEM}
        for e in c.qualifying_encounters
    ),
    "year-end-utc": lambda c: any(
        e["period"]["start"].endswith("-01-01T07:30:00Z") and local_day(e["period"]["start"]).day == 31
        for e in c.qualifying_encounters
    ),
    "encounter-reason-code-dx": lambda c: any(
        e.get("reasonCode") and not c.encounter_conditions(e) for e in c.qualifying_encounters
    ),
    "encounter-diagnosis-element": lambda c: any(
        e.get("diagnosis") and all("encounter" not in cond for cond in c.encounter_conditions(e))
        for e in c.qualifying_encounters
    ),
    "in-progress-encounter-only": lambda c: (
        not c.counted
        and _encounter_with(c, lambda e: e["status"] == "in-progress" and "end" not in e["period"])
    ),
    "referral-open": lambda c: any(sr["status"] == "active" for sr in c.ehr("ServiceRequest")),
    "referral-closed": lambda c: any(sr["status"] == "completed" for sr in c.ehr("ServiceRequest")),
    "referral-revoked": lambda c: any(sr["status"] == "revoked" for sr in c.ehr("ServiceRequest")),
    "problem-list-only-dx": lambda c: any(
        cond["category"][0]["coding"][0]["code"] == "problem-list-item"
        and "encounter" not in cond
        and is_se(cond["code"])
        for cond in c.ehr("Condition")
    ),
    "partial-recorded-date": lambda c: any(len(cond["recordedDate"]) == 7 for cond in c.ehr("Condition")),
    "encounter-without-diagnosis": lambda c: any(
        e["status"] == "finished" and f"Encounter/{e['id']}" not in _linked_conditions(c)
        for e in c.ehr("Encounter")
    ),
    "encounter-late-night-utc": lambda c: any(
        e["period"]["start"].endswith(("T07:30:00Z", "T06:30:00Z")) for e in c.ehr("Encounter")
    ),
}


def test_every_tag_has_a_check() -> None:
    assert set(CHECKS) == set(TAGS)


@pytest.fixture(scope="module")
def tagged(scan: dict[str, list[int]], small_cohort: Cohort) -> dict[str, list[Child]]:
    """EXAMPLES children per tag: plan tags from the scan, render-only tags from the small cohort."""
    plan_indices = sorted({i for tag, found in scan.items() for i in found[:EXAMPLES]})
    rendered = {r.index: r for r in render_children(plan_indices, SCAN["patients"], SCAN["seed"])}
    out: dict[str, list[Child]] = {
        tag: [Child(rendered[i]) for i in found[:EXAMPLES]] for tag, found in scan.items()
    }
    small_indices = sorted(
        int(key)
        for tag in RENDER_TAGS
        for key in [k for k, e in small_cohort.manifest["children"].items() if tag in e["tags"]][:EXAMPLES]
    )
    for records in render_children(small_indices, SMALL["patients"], SMALL["seed"]):
        for tag in RENDER_TAGS & set(records.tags):
            out.setdefault(tag, []).append(Child(records))
    return out


@pytest.mark.parametrize("tag", sorted(TAGS))
def test_tagged_children_match_the_tag(tagged: dict[str, list[Child]], tag: str) -> None:
    children = tagged.get(tag, [])
    assert children, f"no child tagged {tag}"
    for child in children:
        assert tag in child.records.tags
        assert CHECKS[tag](child), (tag, child.records.index, TAGS[tag])


@pytest.mark.parametrize(
    "tag",
    [
        pytest.param("qualifying-service", id="counted"),
        pytest.param("denied-only", id="not-counted"),
    ],
)
def test_checks_can_fail(tagged: dict[str, list[Child]], tag: str) -> None:
    """The checks discriminate: a counted child fails the denied-only check and vice versa."""
    other = "denied-only" if tag == "qualifying-service" else "qualifying-service"
    assert not CHECKS[other](tagged[tag][0])


def test_render_children_matches_the_written_cohort(small_cohort: Cohort) -> None:
    [records] = render_children([7], SMALL["patients"], SMALL["seed"])
    written = [
        e
        for e in small_cohort.of_type("oha-claims", "ExplanationOfBenefit")
        if e["id"].startswith(f"eob-{records.key}-")
    ]
    assert list(records.resources["oha-claims"]["ExplanationOfBenefit"]) == written
    assert list(records.tags) == small_cohort.manifest["children"][records.key]["tags"]
