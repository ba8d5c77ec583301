"""Providers and member assignment read back as of a time, on SQLite and PostgreSQL: period
boundaries, a CCO switch, a re-loaded file, both member forms (identifier and Patient
reference), each kind of attributed provider, and the provider directory."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fhir_adapter.fhir.dates import to_micros
from fhir_adapter.ingest import roster
from fhir_adapter.ingest.runner import ingest_items
from fhir_adapter.measure.spec import Mappings
from fhir_adapter.store.db import ParsedResource, Store
from fhir_adapter.store.extract import ATR_ATTRIBUTED_PROVIDER, EXT_CCO, EXT_IN_NETWORK, NPI_SYSTEM
from fhir_adapter.store.providers import Assignment, Provider, assignments, provider_directory
from tests import cohorts as c
from tests.conftest import ROOT

EXTRACTS = ROOT / "mappings" / "extracts"
JANE, LEE, SALEM = "1234567893", "1003000126", "1245319599"
T0 = datetime(2026, 1, 5, tzinfo=UTC)
T1 = T0 + timedelta(days=30)
LATER = to_micros(T1 + timedelta(days=1))
ROSTER = [
    "NPI,TAXONOMY,PROVIDER_NAME,ORG_NPI,ORG_NAME,CLINIC,COUNTY,CCO,IN_NETWORK",
    f"{JANE},208000000X,Jane Smith,{SALEM},Salem Pediatrics,,Marion,ALLCARE,Y",
    f"{JANE},208000000X,Jane Smith,{SALEM},Salem Pediatrics,,Marion,IHN,N",
    f"{LEE},103TC2200X,Sam Lee,,,Coast Clinic,Lincoln,IHN,Y",
]
HEAD = "MEMBER_ID,CCO,CLINIC,PCP_NPI,START_DATE,END_DATE"
ASSIGN = [
    HEAD,
    f"M-1,ALLCARE,{SALEM},{JANE},2025-01-01,2025-06-30",
    f"M-1,IHN,Coast Clinic,{LEE},2025-07-01,",
    f"M-2,ALLCARE,{SALEM},,2025-03-15,2025-03-15",
]


def write(tmp_path: Path, name: str, lines: list[str]) -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def load(store: Store, tmp_path: Path, mappings: Mappings, assign: list[str], at: datetime = T0) -> None:
    cmap_r = roster.roster_map(EXTRACTS / roster.ROSTER_MAP)
    cmap_a = roster.assignment_map(EXTRACTS / roster.ASSIGNMENT_MAP)
    roster.load_roster(store, write(tmp_path, "r.csv", ROSTER), "roster", cmap=cmap_r, ccos=mappings.ccos,
                       clock=lambda: at)  # fmt: skip
    roster.load_assignments(store, write(tmp_path, "a.csv", assign), "cco-file", cmap=cmap_a, ccos=mappings.ccos,
                            clock=lambda: at)  # fmt: skip


SALEM_JANE = Assignment("ALLCARE", "Salem Pediatrics", SALEM, JANE, "Jane Smith")
COAST_LEE = Assignment("IHN", "Coast Clinic", None, LEE, "Sam Lee")
SALEM_ONLY = Assignment("ALLCARE", "Salem Pediatrics", SALEM, None, None)


@pytest.mark.parametrize(
    ("on_day", "expected"),
    [
        pytest.param(date(2024, 12, 31), {}, id="day-before-first"),
        pytest.param(date(2025, 1, 1), {"m:M-1": SALEM_JANE}, id="first-day"),
        pytest.param(date(2025, 3, 15), {"m:M-1": SALEM_JANE, "m:M-2": SALEM_ONLY}, id="one-day-assignment"),
        pytest.param(date(2025, 3, 16), {"m:M-1": SALEM_JANE}, id="day-after-one-day-assignment"),
        pytest.param(date(2025, 6, 30), {"m:M-1": SALEM_JANE}, id="last-day-before-cco-switch"),
        pytest.param(date(2025, 7, 1), {"m:M-1": COAST_LEE}, id="cco-switch-first-day"),
        pytest.param(date(2030, 1, 1), {"m:M-1": COAST_LEE}, id="open-end"),
    ],
)
def test_assignment_period_boundaries_and_cco_switch(
    store: Store, tmp_path: Path, mappings: Mappings, on_day: date, expected: dict[str, Assignment]
) -> None:
    load(store, tmp_path, mappings, ASSIGN)
    assert assignments(store, LATER, on_day, ccos=mappings.ccos) == expected


def test_reloaded_file_changing_the_pcp_keeps_the_earlier_answer_as_of(
    store: Store, tmp_path: Path, mappings: Mappings
) -> None:
    load(store, tmp_path, mappings, ASSIGN, at=T0)
    changed = [HEAD, f"M-1,ALLCARE,{SALEM},{LEE},2025-01-01,2025-06-30", *ASSIGN[2:]]
    load(store, tmp_path, mappings, changed, at=T1)
    before = assignments(store, to_micros(T1) - 1, date(2025, 3, 1), ccos=mappings.ccos)
    after = assignments(store, to_micros(T1), date(2025, 3, 1), ccos=mappings.ccos)
    assert before["m:M-1"] == SALEM_JANE
    assert after["m:M-1"] == Assignment("ALLCARE", "Salem Pediatrics", SALEM, LEE, "Sam Lee")
    assert assignments(store, to_micros(T0) - 1, date(2025, 3, 1)) == {}  # before anything was loaded


def put(store: Store, source: str, *resources: dict[str, Any], at: datetime = T0) -> None:
    items = [ParsedResource(str(r["resourceType"]), str(r["id"]), r) for r in resources]
    ingest_items(store, items, source, batch_size=100, clock=lambda: at)


def member(
    entity: dict[str, Any], provider: str | None, start: str | None, end: str | None = None
) -> dict[str, Any]:
    m: dict[str, Any] = {"entity": entity}
    if provider:
        m["extension"] = [{"url": ATR_ATTRIBUTED_PROVIDER, "valueReference": {"reference": provider}}]
    period = {k: v for k, v in (("start", start), ("end", end)) if v}
    if period:
        m["period"] = period
    return m


def atr_group(gid: str, *members: dict[str, Any], managing: dict[str, Any] | None = None) -> dict[str, Any]:
    g: dict[str, Any] = {
        "resourceType": "Group",
        "id": gid,
        "type": "person",
        "actual": True,
        "member": list(members),
    }
    if managing:
        g["managingEntity"] = managing
    return g


FHIR_DIRECTORY: list[dict[str, Any]] = [
    {"resourceType": "Organization", "id": "1", "name": "AllCare CCO",
     "identifier": [{"system": "https://oregon.gov/oha/cco-id", "value": "ALLCARE"}]},
    {"resourceType": "Organization", "id": "2", "name": "Valley Clinic", "identifier": [{"system": NPI_SYSTEM, "value": SALEM}]},
    {"resourceType": "Practitioner", "id": "1", "name": [{"given": ["Pat"], "family": "Ng"}],
     "identifier": [{"system": NPI_SYSTEM, "value": LEE}]},
    {"resourceType": "Practitioner", "id": "2", "identifier": [{"system": NPI_SYSTEM, "value": JANE}]},
    {"resourceType": "PractitionerRole", "id": "1", "practitioner": {"reference": "Practitioner/2"},
     "organization": {"reference": "Organization/2"}},
]  # fmt: skip


@pytest.mark.parametrize(
    ("entity", "provider", "key", "expected"),
    [
        pytest.param({"reference": "Patient/p1"}, "Organization/2", "m:M-p1",
                     Assignment("ALLCARE", "Valley Clinic", SALEM, None, None), id="reference-member-organization"),
        pytest.param({"reference": "Patient/nobody"}, "Practitioner/1", "u:ehr/nobody",
                     Assignment("ALLCARE", None, None, LEE, "Pat Ng"), id="unknown-patient-practitioner"),
        pytest.param({"reference": "Patient/p2"}, "PractitionerRole/1", "u:ehr/p2",
                     Assignment("ALLCARE", "Valley Clinic", SALEM, JANE, "Jane Smith"),
                     id="unlinked-patient-role-name-from-directory"),
        pytest.param({"identifier": {"system": c.MEMBER, "value": "M-9"}}, None, "m:M-9",
                     Assignment("ALLCARE", None, None, None, None), id="identifier-member-no-provider"),
    ],
)  # fmt: skip
def test_fhir_route_members_and_providers(
    store: Store, tmp_path: Path, mappings: Mappings, entity: dict[str, Any], provider: str | None, key: str,
    expected: Assignment,
) -> None:  # fmt: skip
    load(store, tmp_path, mappings, [HEAD])  # the roster names Jane in another source
    patients = [c.patient("p1", "2022-01-01"), c.patient("p2", "2022-01-01", unlinked=True)]
    group = atr_group("g", member(entity, provider, "2025-01-01"), managing={"reference": "Organization/1"})
    put(store, "ehr", *FHIR_DIRECTORY, *patients, group)
    assert assignments(store, LATER, date(2025, 12, 31), ccos=mappings.ccos) == {key: expected}


def test_managing_entity_reference_needs_the_cco_table(store: Store, mappings: Mappings) -> None:
    put(store, "ehr", FHIR_DIRECTORY[0], atr_group("g", member({"reference": "Patient/x"}, None, None),
                                                   managing={"reference": "Organization/1"}))  # fmt: skip
    assert assignments(store, LATER, date(2025, 1, 1), ccos=mappings.ccos)["u:ehr/x"].cco == "ALLCARE"
    assert assignments(store, LATER, date(2025, 1, 1))["u:ehr/x"].cco is None


@pytest.mark.parametrize(
    ("spans", "expected_pcp"),
    [
        pytest.param([("2025-01-01", None, "Practitioner/1"), ("2025-06-01", None, "Practitioner/2")], JANE,
                     id="latest-start-wins"),
        pytest.param([("2025-06-01", None, "Practitioner/2"), (None, None, "Practitioner/1")], JANE,
                     id="open-start-is-earliest"),
        pytest.param([("2025-01-01", "2025-12-30", "Practitioner/2"), ("2024-01-01", None, "Practitioner/1")], LEE,
                     id="ended-span-does-not-cover"),
    ],
)  # fmt: skip
def test_overlapping_assignments(
    store: Store, spans: list[tuple[str | None, str | None, str]], expected_pcp: str
) -> None:
    entity = {"identifier": {"system": c.MEMBER, "value": "M-5"}}
    group = atr_group("g", *(member(entity, p, s, e) for s, e, p in spans))
    put(store, "ehr", *FHIR_DIRECTORY, group)
    assert assignments(store, LATER, date(2025, 12, 31))["m:M-5"].pcp_npi == expected_pcp


def test_two_groups_same_start_later_load_wins(store: Store) -> None:
    entity = {"identifier": {"system": c.MEMBER, "value": "M-5"}}
    put(store, "ehr", *FHIR_DIRECTORY, atr_group("a", member(entity, "Practitioner/1", "2025-01-01")))
    put(store, "ehr", atr_group("b", member(entity, "Practitioner/2", "2025-01-01")), at=T1)
    assert assignments(store, LATER, date(2025, 5, 1))["m:M-5"].pcp_npi == JANE
    assert assignments(store, to_micros(T1) - 1, date(2025, 5, 1))["m:M-5"].pcp_npi == LEE


def test_provider_directory(store: Store, tmp_path: Path, mappings: Mappings) -> None:
    load(store, tmp_path, mappings, ASSIGN)
    directory = provider_directory(store, LATER, ccos=mappings.ccos)
    assert directory[JANE] == Provider(
        JANE, "208000000X", "Jane Smith", "Salem Pediatrics", "Salem Pediatrics", "Marion", True, ("ALLCARE",)
    )
    assert directory[LEE] == Provider(LEE, "103TC2200X", "Sam Lee", "Coast Clinic", "Coast Clinic", "Lincoln", True,
                                      ("IHN",))  # fmt: skip
    assert directory[SALEM].name == "Salem Pediatrics" and directory[SALEM].in_network is None
    assert set(directory) == {JANE, LEE, SALEM}
    assert provider_directory(store, to_micros(T0) - 1) == {}


@pytest.mark.parametrize(
    ("flags", "in_network", "ccos"),
    [
        pytest.param([("ALLCARE", False), ("IHN", False)], False, (), id="all-out"),
        pytest.param([("ALLCARE", None)], None, ("ALLCARE",), id="unknown-flag-still-lists-cco"),
        pytest.param([("ALLCARE", False), ("IHN", True)], True, ("IHN",), id="any-in"),
    ],
)
def test_directory_network_flags(
    store: Store, flags: list[tuple[str, bool | None]], in_network: bool | None, ccos: tuple[str, ...]
) -> None:
    roles = []
    for n, (cco, flag) in enumerate(flags):
        ext: list[dict[str, Any]] = [{"url": EXT_CCO, "valueString": cco}]
        if flag is not None:
            ext.append({"url": EXT_IN_NETWORK, "valueBoolean": flag})
        roles.append({"resourceType": "PractitionerRole", "id": f"r{n}", "extension": ext,
                      "practitioner": {"reference": "Practitioner/2"}})  # fmt: skip
    put(store, "ehr", FHIR_DIRECTORY[3], *roles)
    got = provider_directory(store, LATER)[JANE]
    assert (got.in_network, got.ccos) == (in_network, ccos)
