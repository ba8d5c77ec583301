"""Provider capacity on SQLite and PostgreSQL: one clinician seen on an Encounter (by reference)
and on claims (by NPI) counted once with all the children served, a PractitionerRole naming a
practitioner and an organisation, an NPI nobody describes, county names, FIPS codes and
non-Oregon places, and the counties with no provider (statewide and per CCO)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from fhir_adapter.errors import MappingsError
from fhir_adapter.ingest import roster
from fhir_adapter.ingest.runner import ingest_items
from fhir_adapter.measure.spec import Mappings
from fhir_adapter.report import capacity as cp
from fhir_adapter.settings import Settings
from fhir_adapter.store.db import ParsedResource, Store
from fhir_adapter.store.extract import NPI_SYSTEM
from tests import cohorts as c
from tests.conftest import ROOT

COUNTIES = cp.load_counties(ROOT / "mappings")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("Marion", "Marion", id="name"),
        pytest.param("marion county", "Marion", id="lower-case-with-county"),
        pytest.param("  Hood   River ", "Hood River", id="extra-spaces"),
        pytest.param("41047", "Marion", id="five-digit-fips"),
        pytest.param("047", "Marion", id="three-digit-fips"),
        pytest.param("Narnia", None, id="not-oregon"),
        pytest.param("", None, id="empty"),
        pytest.param(None, None, id="none"),
    ],
)
def test_county_names(raw: str | None, expected: str | None) -> None:
    found = COUNTIES.find(raw)
    assert (found.name if found else None) == expected


def test_thirty_six_counties() -> None:
    assert len(COUNTIES.counties) == 36
    assert [c_.fips for c_ in COUNTIES.counties] == [f"41{n:03d}" for n in range(1, 72, 2)]


def test_bad_fips_names_the_line(tmp_path: Path) -> None:
    (tmp_path / cp.COUNTIES_FILE).write_text(
        "county,fips,status,source\nBaker,41001,verified,s\nX,4100,verified,s\n"
    )
    with pytest.raises(MappingsError, match="must be 5 digits") as info:
        cp.load_counties(tmp_path)
    assert info.value.location == f"{tmp_path / cp.COUNTIES_FILE}:3"


JANE, LEE, OTHER = "1234567893", "1003000126", "1003000134"
LOADED = datetime(2026, 1, 2, tzinfo=UTC)
NOW = datetime(2026, 1, 15, tzinfo=UTC)
ROSTER = [
    "NPI,TAXONOMY,PROVIDER_NAME,ORG_NPI,ORG_NAME,CLINIC,COUNTY,CCO,IN_NETWORK",
    f"{JANE},103TC2200X,Jane Smith,1245319599,Salem Pediatrics,,Marion,ALLCARE,Y",
    f"{LEE},103TC2200X,Sam Lee,,,Coast Clinic,Lincoln,IHN,Y",
]


def _child(pid: str, cco: str, county: str) -> list[dict[str, Any]]:
    return [c.patient(pid, "2022-02-02", address=[{"district": county}]), c.full_year(pid, cco=cco)]


def _eob(eid: str, pid: str, npi: str) -> dict[str, Any]:
    r = c.eob(eid, pid, "2025-04-04")
    r["provider"] = {"identifier": {"system": NPI_SYSTEM, "value": npi}}
    return r


CLAIMS = [
    *_child("k1", "ALLCARE", "Marion"), _eob("e1", "k1", JANE),
    *_child("k2", "ALLCARE", "Marion County"), _eob("e2", "k2", JANE),
    *_child("k3", "IHN", "Lincoln County"),
    *_child("k4", "IHN", "41043"),  # Linn, by FIPS: a denominator child and no provider
    *_child("k6", "ALLCARE", "Narnia"), _eob("e6", "k6", OTHER),
    *_child("k7", "ALLCARE", "Marion"),
]  # fmt: skip
EHR: list[dict[str, Any]] = [
    c.patient("k1", "2022-02-02"),
    c.patient("k3", "2022-02-02"),
    {"resourceType": "Practitioner", "id": "doc1", "identifier": [{"system": NPI_SYSTEM, "value": JANE}]},
    {"resourceType": "Practitioner", "id": "p-lee", "identifier": [{"system": NPI_SYSTEM, "value": LEE}]},
    {"resourceType": "Organization", "id": "org1", "name": "Coast Clinic"},
    {"resourceType": "PractitionerRole", "id": "r1", "practitioner": {"reference": "Practitioner/p-lee"},
     "organization": {"reference": "Organization/org1"}},
    {**c.encounter("v1", "k1", "2025-05-05", reason="F43.22"),
     "participant": [{"individual": {"reference": "Practitioner/doc1"}}]},
    {**c.procedure("pr1", "k3", "2025-06-06", reason="F43.22"), "performer": [{"actor": {"reference": "PractitionerRole/r1"}}]},
    # a non-qualifying visit (screening code) by another provider: not capacity
    {**c.encounter("v9", "k7", "2025-05-05", code="96127", reason="F43.22"),
     "participant": [{"individual": {"identifier": {"system": NPI_SYSTEM, "value": OTHER}}}]},
]  # fmt: skip


@pytest.fixture
def capacity(store: Store, mappings: Mappings, settings: Settings, tmp_path: Path) -> cp.Capacity:
    for source, resources in (("claims", CLAIMS), ("ehr", EHR)):
        items = [ParsedResource(r["resourceType"], r["id"], r) for r in resources]
        ingest_items(store, items, source, batch_size=100, clock=lambda: LOADED)
    path = tmp_path / "roster.csv"
    path.write_text("\n".join(ROSTER) + "\n")
    cmap = roster.roster_map(ROOT / "mappings" / "extracts" / roster.ROSTER_MAP)
    roster.load_roster(store, path, "roster", cmap=cmap, ccos=mappings.ccos, clock=lambda: LOADED)
    return cp.run_capacity(settings, store, "oregon-se-issue-focused", date(2025, 1, 1), date(2025, 12, 31),
                           mappings=mappings, clock=lambda: NOW)  # fmt: skip


def test_providers_counted_once_with_children_served(capacity: cp.Capacity) -> None:
    got = {(r["cco"], r["county"], r["provider"]): (r["kind"], r["children"], r["service_records"], r["county_basis"])
           for r in capacity.providers if r["cco"] != "all"}  # fmt: skip
    assert got == {
        # Jane: EOBs of k1 and k2 by NPI and k1's Encounter by reference: one provider, two children
        ("ALLCARE", "Marion", f"npi:{JANE}"): ("practitioner", 2, 3, "provider"),
        # an NPI no roster describes, for a child living outside Oregon
        ("ALLCARE", "unknown", f"npi:{OTHER}"): ("unknown", 1, 1, "unknown"),
        # a PractitionerRole: the practitioner (county from the roster) and the organisation
        # (no county of its own: the child's)
        ("IHN", "Lincoln", f"npi:{LEE}"): ("practitioner", 1, 1, "provider"),
        ("IHN", "Lincoln", "ehr|Organization/org1"): ("organization", 1, 1, "child"),
    }
    jane = next(r for r in capacity.providers if r["provider"] == f"npi:{JANE}" and r["cco"] == "ALLCARE")
    assert (jane["npi"], jane["taxonomy"], jane["name"], jane["organization"]) == (
        JANE, "103TC2200X", "Jane Smith", "Salem Pediatrics",
    )  # fmt: skip


def test_summary_per_cco_and_county(capacity: cp.Capacity) -> None:
    got = {(r["cco"], r["county"]): (r["practitioners"], r["organizations"], r["unknown_kind"], r["children_served"],
                                     r["children_in_denominator"]) for r in capacity.summary}  # fmt: skip
    assert got == {
        ("ALLCARE", "Marion"): (1, 0, 0, 2, 3),
        ("ALLCARE", "unknown"): (0, 0, 1, 1, 1),
        ("IHN", "Lincoln"): (1, 1, 0, 1, 1),
        ("IHN", "Linn"): (0, 0, 0, 0, 1),
        ("all", "Marion"): (1, 0, 0, 2, 3),
        ("all", "Lincoln"): (1, 1, 0, 1, 1),
        ("all", "Linn"): (0, 0, 0, 0, 1),
        ("all", "unknown"): (0, 0, 1, 1, 1),
    }
    assert next(r for r in capacity.summary if r["county"] == "Linn")["fips"] == "41043"


def test_counties_without_a_provider(capacity: cp.Capacity) -> None:
    statewide = {
        r["county"]: r["children_in_denominator"] for r in capacity.counties_without if r["cco"] == "all"
    }
    assert len(statewide) == 34 and "Marion" not in statewide and "Lincoln" not in statewide
    assert statewide["Linn"] == 1 and statewide["Baker"] == 0
    assert [r for r in capacity.counties_without if r["cco"] != "all"] == [
        {"cco": "IHN", "county": "Linn", "fips": "41043", "children_in_denominator": 1}
    ]
