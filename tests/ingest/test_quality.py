"""Data-quality warnings: one named case per check, the clean resources that must not warn,
and the details coding every issue carries."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_adapter.fhir.outcome import Issue
from fhir_adapter.ingest.quality import (
    CHECKS,
    DQ_SYSTEM,
    QualityRules,
    check_quality,
    linked_encounters,
    relocate,
)
from fhir_adapter.measure.spec import Mappings
from tests import cohorts as c
from tests.conftest import TZ

LOCAL = "https://ehr.example.org/fhir/CodeSystem/visit-type"
Resource = dict[str, Any]


@pytest.fixture(scope="module")
def rules(mappings: Mappings) -> QualityRules:
    return QualityRules(mappings, c.MEMBER, TZ)


def _codes(issues: list[Issue]) -> list[str]:
    return [i.details[1] for i in issues if i.details]


def _without(resource: Resource, *keys: str) -> Resource:
    return {k: v for k, v in resource.items() if k not in keys}


def _eob_no_date() -> Resource:
    r = c.eob("x", "p", "2025-01-02")
    del r["item"][0]["servicedDate"]
    return r


def _condition_in(encounter_id: str) -> Resource:
    return c.condition("dx", "p", encounter_id=encounter_id)


CASES = [
    # (resource, code, expression, words in the diagnostics)
    pytest.param(c.patient("p", "2021-01-01", unlinked=True), "patient-no-member-id", "Patient.identifier",
                 c.MEMBER, id="patient-no-member-id"),
    pytest.param(c.patient("p", "2021-01-01", identifier=[{"system": "https://other", "value": "1"}]),
                 "patient-no-member-id", "Patient.identifier", "linked across sources", id="member-id-other-system"),
    pytest.param(c.patient("p", None), "patient-no-birth-date", "Patient.birthDate", "no birth date",
                 id="patient-no-birth-date"),
    pytest.param(c.patient("p", "2021"), "partial-date", "Patient.birthDate", "ambiguous", id="partial-birth-year"),
    pytest.param(c.patient("p", "2021-13-01"), "invalid-date", "Patient.birthDate", "not a FHIR date",
                 id="invalid-birth-date"),
    pytest.param(c.coverage("v", "p", "2025-01-01", None, cco="NOT-A-CCO"), "coverage-payor-not-cco",
                 "Coverage.payor", "mappings/ccos.csv", id="coverage-payor-not-cco"),
    pytest.param(c.coverage("v", "p", "2025-01-01", None, payor=[]), "coverage-payor-not-cco", "Coverage.payor",
                 "no payor identifier", id="coverage-no-payor"),
    pytest.param(c.coverage("v", "p", "2025-01-01", None, payor=[{"reference": "Organization/o1"}]),
                 "coverage-payor-reference", "Coverage.payor", "Organization/o1", id="coverage-payor-reference"),
    pytest.param(c.coverage("v", "p", "2025-01-01", None, status="cancelled"), "coverage-not-active",
                 "Coverage.status", "not active", id="coverage-not-active"),
    pytest.param(c.coverage("v", "p", "2025-03", None), "partial-date", "Coverage.period.start", "ambiguous",
                 id="coverage-partial-start"),
    pytest.param(c.encounter("e", "p", "2025-02-02"), "encounter-no-diagnosis", "Encounter.diagnosis",
                 "Condition.encounter", id="encounter-no-diagnosis"),
    pytest.param(c.encounter("e", "p", "2025-02-02", status="in-progress", reason="F43.22"),
                 "encounter-not-finished", "Encounter.status", "it will not count", id="encounter-not-finished"),
    pytest.param(_without(c.encounter("e", "p", "2025-02-02", reason="F43.22"), "period"), "encounter-no-period",
                 "Encounter.period", "no period", id="encounter-no-period"),
    pytest.param(c.encounter("e", "p", "2025-02", reason="F43.22"), "partial-date", "Encounter.period.start",
                 "2025-02", id="encounter-partial-date"),
    pytest.param(_without(c.encounter("e", "p", "2025-02-02", reason="F43.22"), "type"),
                 "encounter-no-service-code", "Encounter.type", "serviceType", id="encounter-no-service-code"),
    pytest.param(c.encounter("e", "p", "2025-02-02", system="http://example.org/my-codes", reason="F43.22"),
                 "unknown-code-system", "Encounter.type[0].coding[0].system", "http://example.org/my-codes",
                 id="encounter-type-unknown-system"),
    pytest.param(c.encounter("e", "p", "2025-02-02", code="BH-PSYTX-45", system=LOCAL, reason="F43.22"),
                 "local-code-mapped", "Encounter.type[0].coding[0]", "90834", id="local-visit-type-mapped"),
    pytest.param(c.encounter("e", "p", "2025-02-02", code="BH-UNKNOWN", system=LOCAL, reason="F43.22"),
                 "local-code-unmapped", "Encounter.type[0].coding[0]", "mappings/local-codes.csv",
                 id="local-visit-type-unmapped"),
    pytest.param(c.encounter("e", "p", "2025-02-02", code="99392", reason="F43.22"), "code-not-in-valuesets",
                 "Encounter.type[0]", "99392", id="well-child-visit-not-in-valuesets"),
    pytest.param(c.encounter("e", "p", "2025-02-02", reason="F84.0"), "code-not-in-valuesets",
                 "Encounter.reasonCode[0]", "F84.0", id="diagnosis-not-in-valuesets"),
    pytest.param(c.encounter("e", "p", "2025-02-02", reason="F43.22") | {"subject": {"reference": "urn:uuid:9"}},
                 "no-patient", "Encounter.subject", "urn:uuid:9", id="encounter-unresolved-subject"),
    pytest.param(c.procedure("x", "p", "2025-02-02", status="not-done", reason="F43.22"),
                 "procedure-not-completed", "Procedure.status", "not completed", id="procedure-not-completed"),
    pytest.param(_without(c.procedure("x", "p", "2025-02-02", reason="F43.22"), "performedDateTime"),
                 "procedure-no-date", "Procedure.performed", "cannot be dated", id="procedure-no-date"),
    pytest.param(c.procedure("x", "p", "2025-02-02", code="1234", reason="F43.22")
                 | {"code": {"coding": [{"system": "urn:oid:1.2.3", "code": "1234"}]}},
                 "unknown-code-system", "Procedure.code.coding[0].system", "urn:oid:1.2.3",
                 id="procedure-code-unknown-system"),
    pytest.param(c.condition("dx", "p"), "condition-no-encounter", "Condition.encounter", "Condition.encounter",
                 id="condition-no-encounter"),
    pytest.param(c.claim("x", "p", "2025-02-02", use="preauthorization"), "claim-use-not-claim", "Claim.use",
                 "not claim", id="claim-use-not-claim"),
    pytest.param(c.eob("x", "p", "2025-02-02", use="predetermination"), "claim-use-not-claim",
                 "ExplanationOfBenefit.use", "not claim", id="eob-use-not-claim"),
    pytest.param(c.claim("x", "p", "2025-02-02", status="cancelled"), "claim-status-not-counted", "Claim.status",
                 "cancelled", id="claim-cancelled"),
    pytest.param(c.eob("x", "p", "2025-02-02", outcome="queued"), "eob-outcome-not-counted",
                 "ExplanationOfBenefit.outcome", "queued", id="eob-outcome-queued"),
    pytest.param(c.eob("x", "p", "2025-02-02", dx=()), "claim-no-diagnosis", "ExplanationOfBenefit.diagnosis",
                 "no diagnosis", id="eob-no-diagnosis"),
    pytest.param(_eob_no_date(), "line-no-service-date", "ExplanationOfBenefit.item[0].serviced",
                 "no service date", id="eob-line-without-service-date"),
    pytest.param(c.eob("x", "p", "2025-02-02", code="90834", system="https://example.org/proc"),
                 "unknown-code-system", "ExplanationOfBenefit.item[0].productOrService.coding[0].system",
                 "https://example.org/proc", id="eob-procedure-unknown-system"),
    pytest.param(c.eob("x", "p", "2025-02-02", dx_system="http://hl7.org/fhir/sid/icd-9-cm"), "unknown-code-system",
                 "ExplanationOfBenefit.diagnosis[0].diagnosisCodeableConcept.coding[0].system", "icd-9-cm",
                 id="eob-diagnosis-unknown-system"),
    pytest.param(_without(c.eob("x", "p", "2025-02-02"), "patient"), "no-patient", "ExplanationOfBenefit.patient",
                 "no Patient reference", id="eob-no-patient"),
]  # fmt: skip


@pytest.mark.parametrize(("resource", "code", "expression", "words"), CASES)
def test_each_check(rules: QualityRules, resource: Resource, code: str, expression: str, words: str) -> None:
    issues = check_quality(resource, rules)
    hits = [i for i in issues if i.details == (DQ_SYSTEM, code)]
    assert len(hits) == 1, [(i.details, i.expression) for i in issues]
    issue = hits[0]
    check = CHECKS[code]
    assert (issue.severity, issue.code) == (check.severity, check.issue_type)
    assert issue.expression == expression
    assert words in issue.diagnostics


def test_every_check_has_a_case() -> None:
    covered = {param.values[1] for param in CASES}
    assert covered == set(CHECKS)


CLEAN = [
    pytest.param(c.patient("p", "2021-06-14"), id="patient"),
    pytest.param(c.full_year("p"), id="coverage"),
    pytest.param(c.coverage("v", "p", "2025-01-01", None, cco="IHN"), id="coverage-other-cco"),
    pytest.param(c.encounter("e", "p", "2025-02-02T10:00:00-08:00", reason="F43.22"), id="encounter"),
    pytest.param(c.encounter("e", "p", "2025-02-02", code="H0004", system=c.HCPCS, reason="F43.22"),
                 id="encounter-hcpcs"),
    pytest.param(c.encounter("e", "p", "2025-02-02", code="90834", system="urn:oid:2.16.840.1.113883.6.12",
                             reason="F4322"), id="encounter-cpt-oid-undotted-icd"),
    pytest.param(c.encounter("e", "p", "2025-02-02") | {"diagnosis": [{"condition": {"reference": "Condition/d"}}]},
                 id="encounter-with-diagnosis"),
    pytest.param(c.procedure("x", "p", "2025-02-02", reason="F43.22", encounter_id="e"), id="procedure"),
    pytest.param(c.condition("dx", "p", encounter_id="e"), id="condition"),
    pytest.param(c.eob("x", "p", "2025-02-02"), id="eob"),
    pytest.param(c.claim("x", "p", "2025-02-02"), id="claim"),
    pytest.param({"resourceType": "Organization", "id": "o"}, id="other-type"),
]  # fmt: skip


@pytest.mark.parametrize("resource", CLEAN)
def test_clean_resources_have_no_issues(rules: QualityRules, resource: Resource) -> None:
    assert check_quality(resource, rules) == []


def test_linked_encounters_silence_the_no_diagnosis_warning(rules: QualityRules) -> None:
    encounter = c.encounter("e1", "p", "2025-02-02")
    linked = linked_encounters([encounter, _condition_in("e1"), c.condition("other", "p")])
    assert linked == {"e1"}
    assert "encounter-no-diagnosis" not in _codes(check_quality(encounter, rules, linked_encounters=linked))
    assert "encounter-no-diagnosis" in _codes(check_quality(encounter, rules, linked_encounters={"e2"}))


def test_member_system_is_a_setting(mappings: Mappings) -> None:
    site = QualityRules(mappings, "https://example.org/member", TZ)
    assert "patient-no-member-id" in _codes(check_quality(c.patient("p", "2021-01-01"), site))
    assert (
        check_quality(
            c.patient("p", "2021-01-01", identifier=[{"system": "https://example.org/member", "value": "9"}]),
            site,
        )
        == []
    )


@pytest.mark.parametrize(
    ("expression", "prefix", "expected"),
    [
        pytest.param("Encounter.diagnosis", "Bundle.entry[2].resource", "Bundle.entry[2].resource.diagnosis",
                     id="element"),
        pytest.param("Encounter", "Bundle.entry[0].resource", "Bundle.entry[0].resource", id="root"),
        pytest.param(None, "Bundle.entry[1].resource", "Bundle.entry[1].resource", id="none"),
    ],
)  # fmt: skip
def test_relocate(expression: str | None, prefix: str, expected: str) -> None:
    assert relocate(Issue("warning", "required", "x", expression), prefix).expression == expected


def test_details_render_as_a_coding() -> None:
    issue = Issue("warning", "required", "x", "Patient.birthDate", (DQ_SYSTEM, "patient-no-birth-date"))
    assert issue.to_json() == {
        "severity": "warning",
        "code": "required",
        "details": {"coding": [{"system": DQ_SYSTEM, "code": "patient-no-birth-date"}]},
        "diagnostics": "x",
        "expression": ["Patient.birthDate"],
    }
    assert "details" not in Issue("error", "invalid", "y").to_json()
