"""Fact extraction of providers (Practitioner, PractitionerRole, Organization) and member
attribution (Group, Da Vinci ATR List STU2): one table of resource shapes each."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_adapter.store.extract import (
    ATR_ATTRIBUTED_PROVIDER,
    ATR_CONTRACT_PERIOD,
    EXT_CCO,
    EXT_COUNTY,
    EXT_IN_NETWORK,
    FACT_TYPES,
    NPI_SYSTEM,
    NUCC_SYSTEM,
    extract,
)
from fhir_adapter.store.schema import f_group_member, f_provider
from tests.cohorts import MEMBER
from tests.conftest import TZ

PROVIDER_COLS = [c.name for c in f_provider.columns][1:]
MEMBER_COLS = [c.name for c in f_group_member.columns][1:]
NPI = {"system": NPI_SYSTEM, "value": "1234567893"}
ORG_NPI = {"system": NPI_SYSTEM, "value": "1245319599"}
PEDS = {"coding": [{"system": NUCC_SYSTEM, "code": "208000000X"}]}
ORG_TYPE = "http://terminology.hl7.org/CodeSystem/organization-type"


def providers(resource: dict[str, Any]) -> list[dict[str, Any]]:
    facts = extract(resource, "src", MEMBER, TZ)
    assert facts is not None
    return [dict(zip(PROVIDER_COLS, row, strict=True)) for row in facts.providers]


def members(resource: dict[str, Any]) -> list[dict[str, Any]]:
    facts = extract(resource, "src", MEMBER, TZ)
    assert facts is not None
    return [dict(zip(MEMBER_COLS, row, strict=True)) for row in facts.group_members]


def provider_row(rtype: str, rid: str, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(PROVIDER_COLS)
    row.update(source="src", rtype=rtype, rid=rid, **values)
    return row


def test_new_types_are_fact_types() -> None:
    assert {"Practitioner", "PractitionerRole", "Organization", "Group"} <= FACT_TYPES


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        pytest.param(
            {"resourceType": "Practitioner", "id": "p1", "identifier": [{"system": "urn:x", "value": "9"}, NPI],
             "name": [{"use": "old", "text": "Old Name"}, {"use": "official", "family": "Smith", "given": ["Jane", "Q"]}],
             "qualification": [{"code": {"coding": [{"system": "urn:other", "code": "MD"}]}}, {"code": PEDS}],
             "address": [{"city": "Salem"}, {"district": "Marion"}]},
            provider_row("Practitioner", "p1", npi="1234567893", taxonomy="208000000X", name="Jane Q Smith",
                         county="Marion"),
            id="full-official-name-given-family",
        ),
        pytest.param(
            {"resourceType": "Practitioner", "id": "p2", "name": [{"text": " Dr. Lee ", "family": "Lee"}]},
            provider_row("Practitioner", "p2", name="Dr. Lee"),
            id="name-text-wins-no-npi",
        ),
        pytest.param(
            {"resourceType": "Practitioner", "id": "p3", "identifier": [{"system": "urn:state-license", "value": "X"}],
             "qualification": [{"code": {"coding": [{"code": "208000000X"}]}}], "name": [{"family": "Ng"}]},
            provider_row("Practitioner", "p3", name="Ng"),
            id="taxonomy-without-nucc-system-and-other-identifier-ignored",
        ),
        pytest.param(
            {"resourceType": "Practitioner", "id": "p4", "name": "not a list", "qualification": "junk"},
            provider_row("Practitioner", "p4"),
            id="malformed-fields",
        ),
        pytest.param(
            {"resourceType": "PractitionerRole", "id": "r1",
             "extension": [{"url": EXT_IN_NETWORK, "valueBoolean": True}, {"url": EXT_CCO, "valueString": "ALLCARE"},
                           {"url": EXT_COUNTY, "valueString": "Marion"}],
             "practitioner": {"reference": "Practitioner/p1", "display": "Jane Smith", "identifier": NPI},
             "organization": {"reference": "https://ehr.example/fhir/Organization/o1", "display": "Salem Peds"},
             "code": [{"coding": [{"system": NUCC_SYSTEM, "code": "261QP2300X"}]}], "specialty": [PEDS]},
            provider_row("PractitionerRole", "r1", npi="1234567893", taxonomy="208000000X", name="Jane Smith",
                         practitioner_rid="p1", org_rid="o1", clinic="Salem Peds", county="Marion", in_network=1,
                         cco="ALLCARE"),
            id="role-full-specialty-before-code",
        ),
        pytest.param(
            {"resourceType": "PractitionerRole", "id": "r2", "identifier": [ORG_NPI],
             "extension": [{"url": EXT_IN_NETWORK, "valueBoolean": False}],
             "practitioner": {"identifier": NPI}, "code": [{"coding": [{"system": NUCC_SYSTEM, "code": "261QP2300X"}]}]},
            provider_row("PractitionerRole", "r2", npi="1245319599", taxonomy="261QP2300X", in_network=0),
            id="role-own-npi-out-of-network-code-taxonomy-logical-practitioner",
        ),
        pytest.param(
            {"resourceType": "PractitionerRole", "id": "r3", "extension": [{"url": EXT_IN_NETWORK, "valueString": "Y"}],
             "practitioner": {"reference": "Organization/o9"}},
            provider_row("PractitionerRole", "r3"),
            id="role-network-flag-not-boolean-and-wrong-reference-type",
        ),
        pytest.param(
            {"resourceType": "PractitionerRole", "id": "r4", "practitioner": {"identifier": NPI, "display": "J S"}},
            provider_row("PractitionerRole", "r4", npi="1234567893", name="J S"),
            id="role-npi-from-practitioner-identifier",
        ),
    ],
)  # fmt: skip
def test_practitioner_and_role(resource: dict[str, Any], expected: dict[str, Any]) -> None:
    assert providers(resource) == [expected]


@pytest.mark.parametrize(
    ("resource", "expected", "idents"),
    [
        pytest.param(
            {"resourceType": "Organization", "id": "o1", "identifier": [ORG_NPI], "name": "Salem Peds",
             "address": [{"district": "Marion"}]},
            provider_row("Organization", "o1", npi="1245319599", name="Salem Peds", clinic="Salem Peds",
                         county="Marion"),
            [("src", "o1", NPI_SYSTEM, "1245319599")],
            id="npi-makes-a-clinic",
        ),
        pytest.param(
            {"resourceType": "Organization", "id": "cco", "name": "AllCare CCO",
             "identifier": [{"system": "https://oregon.gov/oha/cco-id", "value": "ALLCARE"}],
             "type": [{"coding": [{"system": ORG_TYPE, "code": "pay"}]}]},
            provider_row("Organization", "cco", name="AllCare CCO"),
            [("src", "cco", "https://oregon.gov/oha/cco-id", "ALLCARE")],
            id="payer-is-not-a-clinic",
        ),
        pytest.param(
            {"resourceType": "Organization", "id": "o2", "name": "Coast", "type": [{"text": "Pediatric Clinic"}]},
            provider_row("Organization", "o2", name="Coast", clinic="Coast"),
            [],
            id="type-text-clinic",
        ),
        pytest.param(
            {"resourceType": "Organization", "id": "o3", "name": "Dept",
             "type": [{"coding": [{"system": ORG_TYPE, "code": "prov"}, {"system": NUCC_SYSTEM, "code": "261QP2300X"}]}]},
            provider_row("Organization", "o3", name="Dept", clinic="Dept", taxonomy="261QP2300X"),
            [],
            id="provider-type-with-nucc-taxonomy",
        ),
        pytest.param(
            {"resourceType": "Organization", "id": "o4"},
            provider_row("Organization", "o4"),
            [],
            id="bare",
        ),
    ],
)  # fmt: skip
def test_organization_keeps_identifiers_and_adds_a_provider_row(
    resource: dict[str, Any], expected: dict[str, Any], idents: list[tuple[str, str, str, str]]
) -> None:
    facts = extract(resource, "src", MEMBER, TZ)
    assert facts is not None
    assert facts.org_idents == idents
    assert providers(resource) == [expected]


def atr_member(
    entity: dict[str, Any], provider: str | dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    extensions = list(extra.pop("extension", []))
    m: dict[str, Any] = {"entity": entity, **extra}
    if provider is not None:
        ref = {"reference": provider} if isinstance(provider, str) else provider
        extensions.append({"url": ATR_ATTRIBUTED_PROVIDER, "valueReference": ref})
    if extensions:
        m["extension"] = extensions
    return m


def group(*member_list: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Group",
        "id": "g",
        "type": "person",
        "actual": True,
        "member": list(member_list),
        **extra,
    }


def member_row(**values: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(MEMBER_COLS)
    row.update(source="src", group_rid="g", **values)
    return row


def day(text: str) -> int:
    from datetime import date

    return date.fromisoformat(text).toordinal()


BY_ID = {"identifier": {"system": MEMBER, "value": "M-1"}, "type": "Patient"}
PERIOD = {"start": "2025-01-01", "end": "2025-06-30"}


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        pytest.param(
            group(
                atr_member({"reference": "Patient/1"}, {"reference": "Organization/2", "display": "Salem Peds"},
                           period={"start": "2014-10-08", "end": "2020-10-08"}),
                atr_member({"reference": "Patient/2"}, "Practitioner/1", period={"start": "2015-04-02"}),
                atr_member({"reference": "Patient/3"}, "PractitionerRole/1", inactive=False),
                managingEntity={"reference": "Organization/1", "display": "Payer"},
            ),
            [
                member_row(pid="1", cco="Organization/1", clinic="Salem Peds", clinic_org_rid="2",
                           start_day=day("2014-10-08"), end_day=day("2020-10-08")),
                member_row(pid="2", cco="Organization/1", pcp_rid="1", start_day=day("2015-04-02")),
                member_row(pid="3", cco="Organization/1", pcp_rid="PractitionerRole/1"),
            ],
            id="atr-reference-members-each-provider-kind-managing-entity-reference",
        ),
        pytest.param(
            group(
                atr_member(BY_ID, {"type": "Practitioner", "identifier": NPI}, period=PERIOD),
                atr_member({"identifier": {"system": "urn:other", "value": "X"}}, "Practitioner/1"),
                atr_member({"reference": "Practitioner/9"}),
                managingEntity={"identifier": {"system": "https://oregon.gov/oha/cco-id", "value": "IHN"}},
            ),
            [member_row(member_id="M-1", cco="IHN", pcp_npi="1234567893", start_day=day("2025-01-01"),
                        end_day=day("2025-06-30"))],
            id="atr-identifier-member-logical-pcp-others-skipped",
        ),
        pytest.param(
            group(
                atr_member({"reference": "Patient/1", "identifier": {"system": MEMBER, "value": "M-1"}},
                           {"reference": "PractitionerRole/r", "identifier": NPI}),
                atr_member({"reference": "Patient/2"}, extension=[{"url": EXT_CCO, "valueString": "JCC"}],
                           period={"start": "2025-02-01"}),
                extension=[{"url": EXT_CCO, "valueString": "ALLCARE"},
                           {"url": ATR_CONTRACT_PERIOD, "valuePeriod": {"start": "2025-01-01", "end": "2025-12-31"}}],
                managingEntity={"identifier": {"value": "IHN"}},
            ),
            [member_row(pid="1", member_id="M-1", cco="ALLCARE", pcp_rid="PractitionerRole/r", pcp_npi="1234567893",
                        start_day=day("2025-01-01"), end_day=day("2025-12-31")),
             member_row(pid="2", cco="JCC", start_day=day("2025-02-01"))],
            id="cco-member-over-group-extension-over-managing-entity-contract-period-fallback",
        ),
        pytest.param(
            group(
                atr_member(BY_ID, "PractitionerRole/" + "r" * 64, extension=[{"url": EXT_CCO, "valueString": "JCC"}]),
                atr_member(BY_ID, period={"start": "2025-01-01T07:30:00Z", "end": "2026-01-01T07:30:00Z"}),
                atr_member(BY_ID, inactive=True),
            ),
            [
                member_row(member_id="M-1", cco="JCC"),
                member_row(member_id="M-1", start_day=day("2024-12-31"), end_day=day("2025-12-31")),
            ],
            id="long-role-id-dropped-member-cco-instants-local-inactive-skipped",
        ),
        pytest.param(
            group(
                atr_member(BY_ID, "Organization/o", period={"start": "2025-03", "end": "2025"}),
                atr_member(BY_ID, "Patient/p", period="junk"),
            ),
            [
                member_row(member_id="M-1", clinic_org_rid="o", start_day=day("2025-03-01"), end_day=day("2025-12-31")),
                member_row(member_id="M-1"),
            ],
            id="partial-dates-widest-and-bad-period-open",
        ),
        pytest.param(group(), [], id="no-members"),
        pytest.param({"resourceType": "Group", "id": "g", "member": "junk"}, [], id="malformed-member-list"),
    ],
)  # fmt: skip
def test_group_members(resource: dict[str, Any], expected: list[dict[str, Any]]) -> None:
    assert members(resource) == expected
