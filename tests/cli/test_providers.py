"""``load-providers`` and ``load-assignments`` as a user meets them, and the gap list that
shows each child's assigned clinic and PCP."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from fhir_adapter.cli import main
from tests import cohorts as c

JANE, SALEM = "1234567893", "1245319599"
ROSTER = [
    "NPI,TAXONOMY,PROVIDER_NAME,ORG_NPI,ORG_NAME,CLINIC,COUNTY,CCO,IN_NETWORK",
    f"{JANE},208000000X,Jane Smith,{SALEM},Salem Pediatrics,,Marion,ALLCARE,Y",
]
ASSIGN = [
    "MEMBER_ID,CCO,CLINIC,PCP_NPI,START_DATE,END_DATE",
    f"M-g,ALLCARE,{SALEM},{JANE},2025-01-01,",
    f"M-c,ALLCARE,{SALEM},{JANE},2025-01-01,",
]
PERIOD = [
    "--measure",
    "oregon-se-issue-focused",
    "--period-start",
    "2025-01-01",
    "--period-end",
    "2025-12-31",
]


def run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}"


def test_load_providers_and_assignments(tmp_path: Path, db: str) -> None:
    first = run("load-providers", str(write(tmp_path / "r.csv", ROSTER)), "--database", db)
    assert first.exit_code == 0, first.stderr
    assert "1 rows -> 3 resources under source 'provider-roster': 3 created" in first.stderr
    again = run("load-providers", str(tmp_path / "r.csv"), "--database", db)
    assert "0 created, 0 updated, 3 unchanged" in again.stderr
    assigned = run(
        "load-assignments", str(write(tmp_path / "a.csv", ASSIGN)), "--database", db, "--source", "allcare"
    )
    assert assigned.exit_code == 0, assigned.stderr
    assert "2 rows -> 5 resources under source 'allcare': 5 created" in assigned.stderr


@pytest.mark.parametrize(
    ("command", "lines", "errors"),
    [
        pytest.param("load-providers", [ROSTER[0], f"{JANE}1,,,,,,,,", ROSTER[1], ",,,,,,,XX,"],
                     [":2: '12345678931' is not a valid NPI", ":4: unknown CCO 'XX'"], id="roster"),
        pytest.param("load-assignments", [ASSIGN[0], "M-1,ALLCARE,,,2025-01-01,", "M-2,ALLCARE,,,1/2/3/4,", "M-3"],
                     [":3: '1/2/3/4' is not a date", ":4: expected 6 fields, got 1"], id="assignments"),
    ],
)  # fmt: skip
def test_bad_rows_exit_3_and_write_nothing(
    tmp_path: Path, db: str, command: str, lines: list[str], errors: list[str]
) -> None:
    path = write(tmp_path / "f.csv", lines)
    result = run(command, str(path), "--database", db)
    assert result.exit_code == 3
    for error in errors:
        assert f"{path}{error}" in result.stderr
    assert "nothing was written" in result.stderr
    gaps = run("gaps", *PERIOD, "--database", db)
    assert gaps.exit_code == 0  # the store opens and is empty
    assert gaps.stdout.lstrip("\ufeff").count("\n") == 1


def test_column_map_option(tmp_path: Path, db: str) -> None:
    cmap = tmp_path / "mine.toml"
    cmap.write_text('[columns]\nmember_id = "Member"\ncco = "Plan"\nstart = "From"\n')
    data = write(tmp_path / "a.csv", ["Member;Plan;From", "M-1;IHN;2025-01-01"])
    wrong = run("load-assignments", str(data), "--columns", str(cmap), "--database", db)
    assert wrong.exit_code == 3 and "header lacks columns" in wrong.stderr
    cmap.write_text('delimiter = ";"\n' + cmap.read_text())
    right = run("load-assignments", str(data), "--columns", str(cmap), "--database", db)
    assert right.exit_code == 0, right.stderr
    bad_map = tmp_path / "bad.toml"
    bad_map.write_text('[columns]\nmember_id = "Member"\n')
    broken = run("load-assignments", str(data), "--columns", str(bad_map), "--database", db)
    assert broken.exit_code == 3 and "lacks required fields" in broken.stderr


def test_gap_list_shows_assigned_clinic_and_pcp(tmp_path: Path, db: str) -> None:
    resources = [
        c.patient("c", "2022-06-15"), c.full_year("c"), c.eob("e", "c", "2025-03-01"),
        c.patient("g", "2021-02-02"), c.full_year("g"),
        c.patient("h", "2021-02-02"), c.full_year("h"),
    ]  # fmt: skip
    data = tmp_path / "d.ndjson"
    data.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in resources))
    assert run("ingest", str(data), "--database", db, "--quiet").exit_code == 0
    run("load-providers", str(write(tmp_path / "r.csv", ROSTER)), "--database", db)
    run("load-assignments", str(write(tmp_path / "a.csv", ASSIGN)), "--database", db)
    out = run("gaps", *PERIOD, "--database", db)
    assert out.exit_code == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout.lstrip("\ufeff"))))
    assert list(rows[0])[-4:] == ["clinic", "clinic_npi", "pcp_npi", "pcp_name"]
    by_patient = {r["patient"]: r for r in rows}
    assert set(by_patient) == {"Patient/g", "Patient/h"}  # c has its service: no gap
    g = by_patient["Patient/g"]
    assert (g["clinic"], g["clinic_npi"], g["pcp_npi"], g["pcp_name"]) == (
        "Salem Pediatrics",
        SALEM,
        JANE,
        "Jane Smith",
    )
    h = by_patient["Patient/h"]
    assert (h["clinic"], h["clinic_npi"], h["pcp_npi"], h["pcp_name"]) == ("", "", "", "")  # not assigned
    as_json = json.loads(run("gaps", *PERIOD, "--format", "json", "--database", db).stdout)
    assert {r["patient"]: r["pcp_name"] for r in as_json} == {"Patient/g": "Jane Smith", "Patient/h": None}
