"""OHA's member-level file through its column map: good files as tables of cases, bad rows named
file:line (all of them), duplicates naming both lines, bad maps naming the TOML file."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest

from fhir_adapter.errors import InvalidDataError, MappingsError
from fhir_adapter.ingest.oha_file import (
    DEFAULT_RUN_OUT_DAYS,
    OhaFile,
    cco_lookup,
    load_oha_map,
    read_oha_file,
)
from tests.conftest import ROOT

SHIPPED_MAP = ROOT / "mappings" / "extracts" / "oha-member-file.toml"
MEASURE = "oregon-se-issue-focused"
GROUPS = ("all-enrolled", "identified-need")
CCOS = cco_lookup(["ALLCARE", "IHN"], {"ALLCARE": "AllCare CCO", "IHN": "InterCommunity Health Network CCO"})

FULL_MAP = """
format = "csv"
[columns]
member_id = "Member ID"
numerator = "Num"
denominator = "Den"
cco = "CCO"
group = "Submeasure"
measure = "Measure"
claims_through = "Data Through"
[options]
run_out_days = 30
[values.numerator]
Y = "true"
N = "false"
[values.denominator]
Y = "true"
N = "false"
[values.group]
"All members" = "all-enrolled"
"Identified need" = "identified-need"
[values.measure]
"SE ISSUE-FOCUSED" = "oregon-se-issue-focused"
[values.cco]
"ALLCARE HEALTH" = "ALLCARE"
"""


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _read(tmp_path: Path, body: str, cmap_text: str | None = None) -> OhaFile:
    cmap = load_oha_map(_write(tmp_path / "map.toml", cmap_text) if cmap_text else SHIPPED_MAP)
    return read_oha_file(
        _write(tmp_path / "oha.csv", body),
        cmap,
        measure=MEASURE,
        default_group=GROUPS[0],
        groups=GROUPS,
        ccos=CCOS,
    )


def _summary(f: OhaFile) -> list[tuple[Any, ...]]:
    return [(r.member_id, r.cco, r.denominator, r.numerator, r.group) for r in f.rows]


GOOD = [
    pytest.param(
        "MEMBER_ID,NUMERATOR,DENOMINATOR,CCO\nA1,Y,Y,ALLCARE\nA2,n,yes,ihn\nA3,1,1,AllCare CCO\nA4,FALSE,0,IHN\n",
        None,
        [("A1", "ALLCARE", True, True, "all-enrolled"), ("A2", "IHN", True, False, "all-enrolled"),
         ("A3", "ALLCARE", True, True, "all-enrolled"), ("A4", "IHN", False, False, "all-enrolled")],
        id="shipped-map-flag-spellings-and-cco-names",
    ),
    pytest.param(
        "MEMBER_ID,NUMERATOR,DENOMINATOR,CCO,EXTRA\n\nA1,true,true,IHN,x\n",
        None,
        [("A1", "IHN", True, True, "all-enrolled")],
        id="blank-line-and-extra-column-ignored",
    ),
    pytest.param(
        "MEMBER_ID,NUMERATOR,DENOMINATOR,CCO\n",
        None,
        [],
        id="header-only",
    ),
    pytest.param(
        "MID,NUM\nA1,Y\nA2,N\n",
        '[columns]\nmember_id = "MID"\nnumerator = "NUM"\n[values.numerator]\nY = "true"\nN = "false"\n',
        [("A1", None, True, True, "all-enrolled"), ("A2", None, True, False, "all-enrolled")],
        id="no-denominator-column-means-every-row-is-in-it",
    ),
    pytest.param(
        "Member ID,Num,Den,CCO,Submeasure,Measure,Data Through\n"
        "A1,Y,Y,ALLCARE HEALTH,All members,SE ISSUE-FOCUSED,2026-03-31\n"
        "A1,N,Y,ALLCARE,Identified need,SE ISSUE-FOCUSED,2026-04-30\n"
        "A1,Y,Y,ALLCARE,All members,SE SCREENING,2026-05-31\n",
        FULL_MAP,
        [("A1", "ALLCARE", True, True, "all-enrolled"), ("A1", "ALLCARE", True, False, "identified-need")],
        id="group-and-measure-columns-same-member-in-two-groups",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("body", "cmap", "expected"), GOOD)
def test_good_files(tmp_path: Path, body: str, cmap: str | None, expected: list[tuple[Any, ...]]) -> None:
    assert _summary(_read(tmp_path, body, cmap)) == expected


def test_file_level_facts(tmp_path: Path) -> None:
    body = (
        "Member ID,Num,Den,CCO,Submeasure,Measure,Data Through\n"
        "A1,Y,Y,ALLCARE,All members,SE ISSUE-FOCUSED,2026-03-31\n"
        "A2,N,Y,ALLCARE,All members,SE ISSUE-FOCUSED,2026-04-30\n"
        "A3,Y,Y,ALLCARE,All members,SE SCREENING,2026-05-31\n"
    )
    f = _read(tmp_path, body, FULL_MAP)
    # the skipped row's date does not count
    assert (f.claims_through, f.run_out_days, f.other_measure_rows) == (date(2026, 4, 30), 30, 1)
    assert (f.has_cco, f.has_denominator, f.has_group) == (True, True, True)
    assert f.rows[0].location.endswith("oha.csv:2")
    shipped = _read(tmp_path, "MEMBER_ID,NUMERATOR,DENOMINATOR,CCO\n")
    assert (shipped.run_out_days, shipped.claims_through, shipped.has_group) == (
        DEFAULT_RUN_OUT_DAYS,
        None,
        False,
    )


BAD = [
    pytest.param("MEMBER_ID,NUMERATOR,DENOMINATOR,CCO\nA1,maybe,Y,IHN\n", None,
                 [(":2", "numerator flag 'maybe' is not a known value")], id="bad-flag"),
    pytest.param("MEMBER_ID,NUMERATOR,DENOMINATOR,CCO\nA1,,Y,IHN\n", None,
                 [(":2", "empty numerator flag")], id="empty-flag"),
    pytest.param("MEMBER_ID,NUMERATOR,DENOMINATOR,CCO\n,Y,Y,IHN\n", None,
                 [(":2", "empty member id")], id="empty-member-id"),
    pytest.param("MEMBER_ID,NUMERATOR,DENOMINATOR,CCO\nA1,Y,N,IHN\n", None,
                 [(":2", "in OHA's numerator but not in its denominator")], id="numerator-outside-denominator"),
    pytest.param("MEMBER_ID,NUMERATOR,DENOMINATOR,CCO\nA1,Y,Y,NOPE\n", None,
                 [(":2", "unknown CCO 'NOPE'")], id="unknown-cco"),
    pytest.param("MEMBER_ID,NUMERATOR,DENOMINATOR\nA1,Y,Y\n", None,
                 [(":1", "header lacks columns cco ('CCO')")], id="missing-column"),
    pytest.param("MEMBER_ID,NUMERATOR,DENOMINATOR,CCO\nA1,Y,Y,IHN\nA2,N,Y,IHN\nA1,N,Y,IHN\n", None,
                 [(":4", "duplicate member id 'A1': also at "), (":4", "oha.csv:2")], id="duplicate-names-both-lines"),
    pytest.param("MEMBER_ID,NUMERATOR,DENOMINATOR,CCO\nA1,X,Y,IHN\nA2,Y,Q,IHN\n", None,
                 [(":2", "numerator flag 'X'"), (":3", "denominator flag 'Q'")], id="every-bad-row-listed"),
    pytest.param("Member ID,Num,Den,CCO,Submeasure,Measure,Data Through\n"
                 "A1,Y,Y,IHN,Nope,SE ISSUE-FOCUSED,2026-01-01\n", FULL_MAP,
                 [(":2", "unknown group 'Nope'")], id="unknown-group"),
    pytest.param("Member ID,Num,Den,CCO,Submeasure,Measure,Data Through\n"
                 "A1,Y,Y,IHN,All members,SE ISSUE-FOCUSED,31.12.2025\n", FULL_MAP,
                 [(":2", "'31.12.2025' is not a date")], id="bad-date"),
    pytest.param("Member ID,Num,Den,CCO,Submeasure,Measure,Data Through\n"
                 "A1,Y,Y,IHN,All members,SE SCREENING,2026-01-01\n", FULL_MAP,
                 [(":1", "no rows for measure 'oregon-se-issue-focused'; the file has SE SCREENING")],
                 id="only-other-measures"),
    pytest.param("MEMBER_ID,NUMERATOR,DENOMINATOR,CCO\nA1,Y,Y\n", None,
                 [(":2", "expected 4 fields, got 3")], id="short-row"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "cmap", "expected"), BAD)
def test_bad_files_name_every_line(
    tmp_path: Path, body: str, cmap: str | None, expected: list[tuple[str, str]]
) -> None:
    with pytest.raises(InvalidDataError) as caught:
        _read(tmp_path, body, cmap)
    text = str(caught.value)
    csv_path = str(tmp_path / "oha.csv")
    lines = text.splitlines()
    for line, message in expected:
        assert any(x.startswith(f"{csv_path}{line}: ") and message in x for x in lines), text


BAD_MAPS = [
    pytest.param('[columns]\nmember_id = "M"\n', "lacks required fields ['numerator']", id="no-numerator"),
    pytest.param('[columns]\nmember_id = "M"\nnumerator = "N"\nward = "W"\n', "unknown fields ['ward']",
                 id="unknown-field"),
    pytest.param('[columns]\nmember_id = "M"\nnumerator = "N"\n[options]\nrun_out = 3\n',
                 "unknown [options] ['run_out']", id="unknown-option"),
    pytest.param('[columns]\nmember_id = "M"\nnumerator = "N"\n[options]\nrun_out_days = "90"\n',
                 "run_out_days has the wrong type", id="run-out-not-a-number"),
    pytest.param('[columns]\nmember_id = "M"\nnumerator = "N"\n[options]\nrun_out_days = -1\n',
                 "run_out_days must be a whole number", id="negative-run-out"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), BAD_MAPS)
def test_bad_maps(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path / "map.toml", text)
    with pytest.raises(MappingsError) as caught:
        load_oha_map(path)
    assert caught.value.location == f"{path}:1"
    assert message in caught.value.message


def test_nothing_is_returned_unless_every_row_is_good(tmp_path: Path) -> None:
    with pytest.raises(InvalidDataError) as caught:
        _read(tmp_path, HEADER_SHIPPED + "A1,Y,Y,IHN\nA2,?,Y,IHN\nA3,Y,Y,IHN\n")
    assert "1 bad row" in caught.value.message and "nothing was written" in caught.value.message


HEADER_SHIPPED = "MEMBER_ID,NUMERATOR,DENOMINATOR,CCO\n"


def test_shipped_map_loads() -> None:
    cmap = load_oha_map(SHIPPED_MAP)
    assert {"member_id", "numerator", "denominator", "cco"} <= cmap.fields
