"""Provider rosters and member-assignment files converted to FHIR: NPI checks, deterministic
ids, one ATR-style Group per CCO, every bad row reported at file:line, nothing written on error."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from fhir_adapter.errors import InvalidDataError, MappingsError
from fhir_adapter.fhir.resources import ID_RE, check_resource
from fhir_adapter.ingest import roster
from fhir_adapter.ingest.columns import ColumnMap
from fhir_adapter.ingest.runner import ingest_items
from fhir_adapter.measure.spec import Mappings
from fhir_adapter.store.db import ParsedResource, Store
from fhir_adapter.store.extract import (
    ATR_ATTRIBUTED_PROVIDER,
    EXT_CCO,
    EXT_COUNTY,
    EXT_IN_NETWORK,
    NPI_SYSTEM,
)
from tests.cohorts import MEMBER
from tests.conftest import ROOT

EXTRACTS = ROOT / "mappings" / "extracts"
ROSTER_HEAD = "NPI,TAXONOMY,PROVIDER_NAME,ORG_NPI,ORG_NAME,CLINIC,COUNTY,CCO,IN_NETWORK"
ASSIGN_HEAD = "MEMBER_ID,CCO,CLINIC,PCP_NPI,START_DATE,END_DATE"
JANE, LEE, SALEM = "1234567893", "1003000126", "1245319599"
T0 = datetime(2026, 2, 1, tzinfo=UTC)


def write(tmp_path: Path, name: str, lines: list[str]) -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def roster_map() -> ColumnMap:
    return roster.roster_map(EXTRACTS / roster.ROSTER_MAP)


@pytest.fixture(scope="module")
def assignment_map() -> ColumnMap:
    return roster.assignment_map(EXTRACTS / roster.ASSIGNMENT_MAP)


def by_type(resources: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for r in resources:
        out.setdefault(r["resourceType"], {})[r["id"]] = r
    return out


@pytest.mark.parametrize(
    ("npi", "valid"),
    [
        pytest.param(JANE, True, id="cms-example"),
        pytest.param(SALEM, True, id="organisation"),
        pytest.param(LEE, True, id="another"),
        pytest.param("1234567890", False, id="wrong-check-digit"),
        pytest.param("123456789", False, id="nine-digits"),
        pytest.param("12345678930", False, id="eleven-digits"),
        pytest.param("12345678 3", False, id="blank-inside"),
        pytest.param("", False, id="empty"),
    ],
)
def test_npi_check_digit(npi: str, valid: bool) -> None:
    assert roster.npi_valid(npi) is valid


def test_roster_becomes_practitioners_organisations_and_roles(
    tmp_path: Path, roster_map: ColumnMap, mappings: Mappings
) -> None:
    path = write(tmp_path, "roster.csv", [
        ROSTER_HEAD,
        f"{JANE},208000000x,Jane Smith,{SALEM},Salem Pediatrics,Salem Peds - North,Marion,ALLCARE,Y",
        f"{JANE},103TC2200X,JANE  SMITH,{SALEM},,,Marion,InterCommunity Health Network CCO,no",
        f"{LEE},,,,,Coast Clinic,Lincoln,,",
        ",,,,Coast Clinic,,Lincoln,IHN,PAR",
        ",,,,Quiet Clinic,,,,",
    ])  # fmt: skip
    out = roster.convert_roster(path, roster_map, ccos=mappings.ccos)
    assert out.errors == [] and out.rows == 5
    got = by_type(out.resources)
    assert sorted(got) == ["Organization", "Practitioner", "PractitionerRole"]
    jane = got["Practitioner"]["npi-" + JANE]
    assert jane["identifier"] == [{"system": NPI_SYSTEM, "value": JANE}]
    assert jane["name"] == [{"text": "Jane Smith"}]
    assert [q["code"]["coding"][0]["code"] for q in jane["qualification"]] == ["208000000X", "103TC2200X"]
    salem = got["Organization"]["npi-" + SALEM]
    assert salem["name"] == "Salem Pediatrics" and salem["address"] == [{"district": "Marion"}]
    coast_id = roster.organization_id(None, "coast clinic")
    assert set(got["Organization"]) == {
        "npi-" + SALEM,
        coast_id,
        roster.organization_id(None, "Quiet Clinic"),
    }
    roles = got["PractitionerRole"]
    allcare = roles[roster.role_id(JANE, "npi-" + SALEM, "ALLCARE")]
    assert allcare["extension"] == [
        {"url": EXT_IN_NETWORK, "valueBoolean": True},
        {"url": EXT_CCO, "valueString": "ALLCARE"},
        {"url": EXT_COUNTY, "valueString": "Marion"},
    ]
    assert allcare["organization"]["display"] == "Salem Peds - North"
    assert allcare["practitioner"]["reference"] == f"Practitioner/npi-{JANE}"
    ihn = roles[roster.role_id(JANE, "npi-" + SALEM, "IHN")]
    assert {"url": EXT_IN_NETWORK, "valueBoolean": False} in ihn["extension"]
    org_role = roles[roster.role_id(None, coast_id, "IHN")]
    assert (
        "practitioner" not in org_role and org_role["organization"]["reference"] == f"Organization/{coast_id}"
    )
    assert len(roles) == 4  # Jane x2, Lee at Coast, Coast's own IHN role; Quiet Clinic says nothing
    for r in out.resources:
        assert check_resource(r) is None and ID_RE.match(r["id"])
    assert roster.convert_roster(path, roster_map, ccos=mappings.ccos).resources == out.resources


def test_name_only_row_joins_the_organisation_with_that_name_and_npi(
    tmp_path: Path, roster_map: ColumnMap
) -> None:
    path = write(tmp_path, "r.csv", [
        ROSTER_HEAD,
        f"{LEE},,,,salem pediatrics,,,,",
        f"{JANE},,,{SALEM},Salem Pediatrics,,,,",
    ])  # fmt: skip
    got = by_type(roster.convert_roster(path, roster_map).resources)
    assert list(got["Organization"]) == ["npi-" + SALEM]


@pytest.mark.parametrize(
    ("rows", "problems"),
    [
        pytest.param([f"{JANE[:-1]}0,,,,,,,,"], [":2: '1234567890' is not a valid NPI (10 digits with a check digit) (column NPI)"],
                     id="bad-npi"),
        pytest.param([f"{JANE},20800000,,,,,,,"], [":2: '20800000' is not a NUCC taxonomy code"], id="bad-taxonomy"),
        pytest.param([f"{JANE},,,,,,,NOPE,"], [":2: unknown CCO 'NOPE' (known: ADVANCED-HEALTH"], id="unknown-cco"),
        pytest.param([f"{JANE},,,,,,,,maybe"], [":2: 'maybe' is not a network flag"], id="bad-flag"),
        pytest.param([",,Nobody,,,,,,"], [":2: a row needs an NPI or an organisation"], id="nothing-to-key"),
        pytest.param([f"{JANE},,Jane Smith,,,,,,", f"{JANE},,John Smith,,,,,,"],
                     [":3: name of NPI 1234567893 differs from 'Jane Smith' given at"], id="npi-named-twice"),
        pytest.param([f",,,{SALEM},Salem,,,,", f",,,{SALEM},Portland,,,,"],
                     [":3: name of organisation NPI 1245319599 differs from 'Salem'"], id="org-named-twice"),
        pytest.param([f"{JANE},,,,,,,ALLCARE,Y", f"{JANE},,,,,,,ALLCARE,N"],
                     [":3: the same provider, organisation and CCO is described differently at"], id="role-twice"),
        pytest.param([f"{JANE},,,,,,,,", f"{JANE},,,", "1,2,3,4,5,6,7,8,9,10,11", f"{JANE}x,,,,,,,,"],
                     [":3: expected 9 fields, got 4", ":4: expected 9 fields, got 11", ":5: '1234567893x' is not a valid NPI"],
                     id="every-bad-row-reported"),
    ],
)  # fmt: skip
def test_roster_errors(
    tmp_path: Path, roster_map: ColumnMap, mappings: Mappings, rows: list[str], problems: list[str]
) -> None:
    path = write(tmp_path, "roster.csv", [ROSTER_HEAD, *rows])
    out = roster.convert_roster(path, roster_map, ccos=mappings.ccos)
    messages = sorted(f"{e.location}: {e.message}" for e in out.errors)
    assert len(messages) == len(problems)
    for message, expected in zip(messages, sorted(problems), strict=True):
        assert message.startswith(f"{path}{expected}"), message


def test_assignments_become_one_atr_group_per_cco(
    tmp_path: Path, assignment_map: ColumnMap, mappings: Mappings
) -> None:
    path = write(tmp_path, "assign.csv", [
        ASSIGN_HEAD,
        f"M-2,ALLCARE,,{JANE},01/01/2025,",
        f"M-1,ALLCARE,{SALEM},{JANE},2025-01-01,2025-06-30",
        "M-1,IHN,Coast Clinic,,2025-07-01,",
        "M-3,allcare,,,20250101,20251231",
        f"M-1,ALLCARE,{SALEM},{JANE},2025-01-01,2025-06-30",
    ])  # fmt: skip
    out = roster.convert_assignments(path, assignment_map, member_system=MEMBER, ccos=mappings.ccos)
    assert out.errors == [] and out.rows == 5
    got = by_type(out.resources)
    assert sorted(got["Group"]) == ["atr-allcare", "atr-ihn"]
    allcare = got["Group"]["atr-allcare"]
    assert allcare["managingEntity"]["identifier"] == {
        "system": "https://oregon.gov/oha/cco-id",
        "value": "ALLCARE",
    }
    assert allcare["managingEntity"]["reference"] == "Organization/cco-allcare"
    assert allcare["quantity"] == 3  # the repeated row is one member
    entities = [(m["entity"]["identifier"]["value"], m["period"]) for m in allcare["member"]]
    assert entities == [
        ("M-1", {"start": "2025-01-01", "end": "2025-06-30"}),
        ("M-2", {"start": "2025-01-01"}),
        ("M-3", {"start": "2025-01-01", "end": "2025-12-31"}),
    ]
    providers = [m.get("extension", [{}])[0].get("valueReference") for m in allcare["member"]]
    role = roster.role_id(JANE, "npi-" + SALEM, "ALLCARE")
    assert providers == [
        {"reference": f"PractitionerRole/{role}", "type": "PractitionerRole"},
        {"reference": f"Practitioner/npi-{JANE}", "type": "Practitioner",
         "identifier": {"system": NPI_SYSTEM, "value": JANE}},
        None,
    ]  # fmt: skip
    assert allcare["member"][0]["extension"][0]["url"] == ATR_ATTRIBUTED_PROVIDER
    ihn = got["Group"]["atr-ihn"]["member"][0]["extension"][0]["valueReference"]
    assert ihn == {"reference": f"Organization/{roster.organization_id(None, 'Coast Clinic')}",
                   "type": "Organization", "display": "Coast Clinic"}  # fmt: skip
    assert got["PractitionerRole"][role]["organization"]["reference"] == f"Organization/npi-{SALEM}"
    assert set(got["Organization"]) == {
        "cco-allcare",
        "cco-ihn",
        "npi-" + SALEM,
        roster.organization_id(None, "Coast Clinic"),
    }
    for r in out.resources:
        assert check_resource(r) is None
    shuffled = write(tmp_path, "again.csv", [ASSIGN_HEAD, *reversed(path.read_text().splitlines()[1:])])
    again = roster.convert_assignments(shuffled, assignment_map, member_system=MEMBER, ccos=mappings.ccos)
    assert again.resources == out.resources  # row order does not matter


@pytest.mark.parametrize(
    ("rows", "problems"),
    [
        pytest.param([",ALLCARE,,,2025-01-01,"], [":2: missing member id (column MEMBER_ID)"], id="no-member"),
        pytest.param(["M-1,,,,2025-01-01,"], [":2: missing CCO (column CCO)"], id="no-cco"),
        pytest.param(["M-1,ALLCARE,,,,"], [":2: missing date (column START_DATE)"], id="no-start"),
        pytest.param(["M-1,ALLCARE,,,2025-02-30,"], [":2: '2025-02-30' is not a date in"], id="bad-start"),
        pytest.param(["M-1,ALLCARE,,,2025-02-01,2025-01-31"], [":2: ends (2025-01-31) before it starts (2025-02-01)"],
                     id="end-before-start"),
        pytest.param(["M-1,ALLCARE,1245319590,,2025-01-01,"], [":2: '1245319590' is not a valid NPI"], id="bad-clinic-npi"),
        pytest.param(["M-1,ALLCARE,,999,2025-01-01,", "M-2,XX,,,2025-01-01,"],
                     [":2: '999' is not a valid NPI", ":3: unknown CCO 'XX'"], id="every-row"),
    ],
)  # fmt: skip
def test_assignment_errors(
    tmp_path: Path, assignment_map: ColumnMap, mappings: Mappings, rows: list[str], problems: list[str]
) -> None:
    path = write(tmp_path, "a.csv", [ASSIGN_HEAD, *rows])
    out = roster.convert_assignments(path, assignment_map, member_system=MEMBER, ccos=mappings.ccos)
    messages = sorted(f"{e.location}: {e.message}" for e in out.errors)
    assert len(messages) == len(problems)
    for message, expected in zip(messages, sorted(problems), strict=True):
        assert message.startswith(f"{path}{expected}"), message


def test_same_day_start_equal_to_end_is_one_day(tmp_path: Path, assignment_map: ColumnMap) -> None:
    path = write(tmp_path, "a.csv", [ASSIGN_HEAD, "M-1,ALLCARE,,,2025-01-01,2025-01-01"])
    out = roster.convert_assignments(path, assignment_map, member_system=MEMBER)
    assert out.errors == []


def count(store: Store) -> int:
    with store.read() as conn:
        return int(conn.execute(text("SELECT COUNT(*) FROM resources")).scalar_one())


def test_a_bad_row_writes_nothing(store: Store, tmp_path: Path, assignment_map: ColumnMap) -> None:
    path = write(tmp_path, "a.csv", [ASSIGN_HEAD, "M-1,ALLCARE,,,2025-01-01,", "M-2,ALLCARE,,,2025-99-01,"])
    with pytest.raises(InvalidDataError) as info:
        roster.load_assignments(store, path, "asg", cmap=assignment_map, clock=lambda: T0)
    assert f"{path}:3: '2025-99-01' is not a date" in str(info.value)
    assert "nothing was written" in str(info.value)
    assert count(store) == 0


def test_load_is_versioned_and_idempotent(store: Store, tmp_path: Path, roster_map: ColumnMap) -> None:
    path = write(tmp_path, "r.csv", [ROSTER_HEAD, f"{JANE},,Jane Smith,{SALEM},Salem,,Marion,ALLCARE,Y"])
    first = roster.load_roster(store, path, "roster", cmap=roster_map, clock=lambda: T0)
    assert (first.rows, first.resources, first.stats.created) == (1, 3, 3)
    again = roster.load_roster(store, path, "roster", cmap=roster_map, clock=lambda: T0)
    assert (again.stats.created, again.stats.updated, again.stats.unchanged) == (0, 0, 3)
    path.write_text(f"{ROSTER_HEAD}\n{JANE},,Jane Smith,{SALEM},Salem,,Marion,ALLCARE,N\n")
    changed = roster.load_roster(store, path, "roster", cmap=roster_map, clock=lambda: T0)
    assert (changed.stats.updated, changed.stats.unchanged) == (1, 2)


def test_assignments_keep_richer_resources_the_source_holds(
    store: Store, tmp_path: Path, roster_map: ColumnMap, assignment_map: ColumnMap
) -> None:
    roster_file = write(tmp_path, "r.csv", [ROSTER_HEAD, f"{JANE},,Jane Smith,,,,,,"])
    roster.load_roster(store, roster_file, "cco", cmap=roster_map, clock=lambda: T0)
    assign = write(tmp_path, "a.csv", [ASSIGN_HEAD, f"M-1,ALLCARE,,{JANE},2025-01-01,"])
    result = roster.load_assignments(store, assign, "cco", cmap=assignment_map, clock=lambda: T0)
    assert result.stats.created == 2 and result.stats.unchanged == 1  # Group + CCO org; Jane kept
    with store.read() as conn:
        names = conn.execute(text("SELECT name FROM f_provider WHERE rtype = 'Practitioner'")).scalars().all()
    assert names == ["Jane Smith"]


def test_fixed_width_layout(tmp_path: Path) -> None:
    cmap_path = tmp_path / "fw.toml"
    cmap_path.write_text(
        'format = "fixed-width"\ndate_formats = ["%Y%m%d"]\n'
        "[positions]\nmember_id = [1, 6]\ncco = [7, 8]\nstart = [15, 8]\npcp_npi = [23, 10]\n"
    )
    cmap = roster.assignment_map(cmap_path)
    data = write(tmp_path, "a.txt", [f"M-0001ALLCARE 20250101{JANE}", "M-0002IHN     20250201"])
    out = roster.convert_assignments(data, cmap, member_system=MEMBER)
    assert out.errors == []
    groups = by_type(out.resources)["Group"]
    assert [m["entity"]["identifier"]["value"] for m in groups["atr-allcare"]["member"]] == ["M-0001"]
    assert groups["atr-ihn"]["member"][0]["period"] == {"start": "2025-02-01"}


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        pytest.param(
            '[columns]\nnpi = "NPI"\n[options]\nstatus = "x"\nflavour = 1\n',
            "unknown [options]",
            id="options",
        ),
        pytest.param('[columns]\nname = "N"\n', "lacks required fields ['npi']", id="no-npi-column"),
        pytest.param(
            '[columns]\nnpi = "NPI"\nmember_id = "M"\n', "unknown fields ['member_id']", id="unknown-field"
        ),
    ],
)
def test_roster_column_map_errors(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "m.toml"
    path.write_text(toml)
    with pytest.raises(MappingsError, match=message.replace("[", r"\[").replace("]", r"\]")):
        roster.roster_map(path)


def test_ids_are_valid_fhir_ids_for_awkward_names() -> None:
    long_name = "Clínica   de la Comunidad — " * 5
    ids = [
        roster.organization_id(None, long_name),
        roster.organization_id(None, "***"),
        roster.group_id("Some CCO / Region"),
        roster.group_id("ALLCARE"),
        roster.cco_org_id("ümlaut"),
        roster.role_id(None, "org-x", None),
    ]
    assert all(ID_RE.match(i) for i in ids), ids
    assert roster.group_id("ALLCARE") == "atr-allcare"
    assert roster.organization_id(None, "Coast  CLINIC") == roster.organization_id(None, "coast clinic")


def test_loaded_resources_go_through_the_normal_path(store: Store) -> None:
    """The FHIR route: the same resource ingested as FHIR gives the same facts as from CSV."""
    group = {
        "resourceType": "Group", "id": "atr-allcare", "type": "person", "actual": True,
        "member": [{"entity": {"identifier": {"system": MEMBER, "value": "M-1"}}, "period": {"start": "2025-01-01"}}],
    }  # fmt: skip
    ingest_items(
        store, [ParsedResource("Group", "atr-allcare", group)], "fhir", batch_size=5, clock=lambda: T0
    )
    with store.read() as conn:
        rows = conn.execute(text("SELECT source, group_rid, member_id FROM f_group_member")).all()
    assert [tuple(r) for r in rows] == [("fhir", "atr-allcare", "M-1")]
