"""Column maps (CSV and fixed-width) as data: strict maps, file:line for every bad row."""

from __future__ import annotations

import gzip
from datetime import date
from pathlib import Path

import pytest

from fhir_adapter.errors import InvalidDataError, MappingsError
from fhir_adapter.ingest.columns import (
    ColumnMap,
    Row,
    RowFields,
    check_options,
    load_column_map,
    parse_date,
    read_rows,
    rows_failed,
    value,
)

FIELDS = {"member_id": True, "birth_date": False, "sex": False}
GOOD_CSV = """
format = "csv"
[columns]
member_id = "MEMBER"
birth_date = "DOB"
sex = "SEX"
[values.sex]
M = "male"
f = "female"
"""
GOOD_FIXED = """
format = "fixed-width"
date_formats = ["%Y%m%d"]
[positions]
member_id = [1, 5]
birth_date = [6, 8]
sex = [14, 1]
"""


def _map(tmp_path: Path, text: str, name: str = "map.toml") -> ColumnMap:
    path = tmp_path / name
    path.write_text(text)
    return load_column_map(path, required=FIELDS)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("format = ", "not TOML", id="not-toml"),
        pytest.param('formt = "csv"\n[columns]\nmember_id = "M"', "unknown keys ['formt']", id="unknown-key"),
        pytest.param('format = "xlsx"\n[columns]\nmember_id = "M"', "format must be", id="bad-format"),
        pytest.param("[columns]\nbirth_date = 'DOB'", "lacks required fields ['member_id']", id="missing-field"),
        pytest.param("[columns]\nmember_id = 'M'\nnickname = 'N'", "unknown fields ['nickname']", id="unknown-field"),
        pytest.param("[columns]\nmember_id = 3", "must map field names", id="column-not-text"),
        pytest.param(
            'format = "fixed-width"\n[positions]\nmember_id = [0, 5]', "must be [start (1-based)", id="position-zero"
        ),
        pytest.param(
            'format = "fixed-width"\n[positions]\nmember_id = [1]', "must be [start (1-based)", id="position-short"
        ),
        pytest.param(
            'format = "fixed-width"\n[columns]\nmember_id = "M"', "[positions] lacks required", id="fixed-without-positions"
        ),
        pytest.param(
            "[columns]\nmember_id = 'M'\n[values.sexx]\nM = 'male'", "[values] names unknown fields ['sexx']",
            id="values-unknown-field",
        ),
        pytest.param("[columns]\nmember_id = 'M'\n[values.sex]\nM = 1", "must map file values", id="values-not-text"),
        pytest.param("date_formats = []\n[columns]\nmember_id = 'M'", "date_formats must be", id="no-date-formats"),
        pytest.param("delimiter = ';;'\n[columns]\nmember_id = 'M'", "delimiter must be one", id="long-delimiter"),
        pytest.param("encoding = 'klingon'\n[columns]\nmember_id = 'M'", "unknown encoding", id="bad-encoding"),
        pytest.param("options = 3\n[columns]\nmember_id = 'M'", "[options] must be a table", id="options-not-table"),
    ],
)  # fmt: skip
def test_bad_maps_are_refused_at_file_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(MappingsError) as info:
        _map(tmp_path, text)
    assert message in info.value.message
    assert str(info.value.location).startswith(str(tmp_path / "map.toml") + ":")


def test_missing_map_is_a_mappings_error(tmp_path: Path) -> None:
    with pytest.raises(MappingsError, match="column map not found"):
        load_column_map(tmp_path / "nope.toml", required=FIELDS)


def test_good_maps_load(tmp_path: Path) -> None:
    csv_map = _map(tmp_path, GOOD_CSV)
    assert csv_map.fields == frozenset(FIELDS)
    assert csv_map.values == {"sex": {"M": "male", "f": "female"}}
    fixed = _map(tmp_path, GOOD_FIXED, "fixed.toml")
    assert fixed.format == "fixed-width"
    assert fixed.positions["birth_date"] == (6, 8)
    assert fixed.date_formats == ("%Y%m%d",)


def _rows(path: Path, cmap: ColumnMap) -> list[Row]:
    return list(read_rows(path, cmap))


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param("MEMBER,DOB,SEX\nA1,2021-01-02,M\n", [(2, "A1", "M")], id="plain"),
        pytest.param("\ufeffMEMBER,DOB,SEX\nA1,2021-01-02,M\n", [(2, "A1", "M")], id="byte-order-mark"),
        pytest.param(
            "EXTRA,SEX,DOB,MEMBER\nx,F, 2021-01-02 , A1 \n", [(2, "A1", "F")], id="other-order-extra-col"
        ),
        pytest.param(
            "MEMBER,DOB,SEX\n\n , , \nA1,,M\r\nB2,,\n", [(4, "A1", "M"), (5, "B2", "")], id="blank-lines"
        ),
        pytest.param(
            'MEMBER,DOB,SEX\n"A\n1",,M\nB2,,F\n', [(2, "A\n1", "M"), (4, "B2", "F")], id="multiline-field"
        ),
        pytest.param("MEMBER,DOB,SEX\n", [], id="header-only"),
    ],
)
def test_csv_rows_name_their_first_line(
    tmp_path: Path, content: str, expected: list[tuple[int, str, str]]
) -> None:
    cmap = _map(tmp_path, GOOD_CSV)
    path = tmp_path / "x.csv"
    path.write_text(content, encoding="utf-8")
    rows = _rows(path, cmap)
    assert [(r.location, r.get("member_id"), r.get("sex")) for r in rows] == [
        (f"{path}:{line}", member, sex) for line, member, sex in expected
    ]


@pytest.mark.parametrize(
    ("content", "line", "message"),
    [
        pytest.param("", 1, "empty file", id="empty"),
        pytest.param("MEMBER,SEX\nA1,M\n", 1, "header lacks columns birth_date ('DOB')", id="unknown-header"),
        pytest.param(
            "MEMBER,DOB,SEX,DOB\nA1,,M,\n", 1, "header repeats columns ['DOB']", id="repeated-header"
        ),
        pytest.param("MEMBER,DOB,SEX\nA1,,M,extra\n", 2, "expected 3 fields, got 4", id="field-count"),
        pytest.param('MEMBER,DOB,SEX\n"A1,,M\n', 2, "malformed CSV", id="unclosed-quote"),
        pytest.param('MEMBER,DOB,SEX\nB2,,F\n"A1"x,,M\n', 3, "malformed CSV", id="text-after-quote"),
    ],
)
def test_csv_problems_raise_at_file_line(tmp_path: Path, content: str, line: int, message: str) -> None:
    cmap = _map(tmp_path, GOOD_CSV)
    path = tmp_path / "x.csv"
    path.write_text(content)
    with pytest.raises(InvalidDataError) as info:
        _rows(path, cmap)
    assert info.value.location == f"{path}:{line}"
    assert message in info.value.message


def test_field_count_errors_are_collected_when_asked(tmp_path: Path) -> None:
    cmap = _map(tmp_path, GOOD_CSV)
    path = tmp_path / "x.csv"
    path.write_text("MEMBER,DOB,SEX\nA1,,M,extra\nB2,,F\nC3\n")
    errors: list[InvalidDataError] = []
    rows = list(read_rows(path, cmap, errors))
    assert [r.get("member_id") for r in rows] == ["B2"]
    assert [e.location for e in errors] == [f"{path}:2", f"{path}:4"]


def test_gzipped_csv(tmp_path: Path) -> None:
    cmap = _map(tmp_path, GOOD_CSV)
    path = tmp_path / "x.csv.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write("MEMBER,DOB,SEX\nA1,,M\n")
    assert [r.get("member_id") for r in _rows(path, cmap)] == ["A1"]


def test_corrupt_gzip_and_bad_encoding_are_invalid_data(tmp_path: Path) -> None:
    cmap = _map(tmp_path, GOOD_CSV)
    corrupt = tmp_path / "x.csv.gz"
    corrupt.write_bytes(b"not gzip at all")
    with pytest.raises(InvalidDataError, match="cannot read"):
        _rows(corrupt, cmap)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("MEMBER,DOB,SEX\nJos\xe9,,M\n".encode("latin-1"))
    with pytest.raises(InvalidDataError, match="not utf-8-sig text"):
        _rows(latin, cmap)
    with pytest.raises(InvalidDataError, match="cannot read"):
        _rows(tmp_path / "absent.csv", cmap)


def test_fixed_width_rows(tmp_path: Path) -> None:
    cmap = _map(tmp_path, GOOD_FIXED, "fixed.toml")
    path = tmp_path / "x.txt"
    # line 2 is blank, line 3 lost its trailing blanks (padded back), line 4 is longer than the map
    path.write_text("A1   20210102M\n\nB2   20200101\nC3   20190101Fignored\n")
    rows = _rows(path, cmap)
    assert [(r.location, r.values) for r in rows] == [
        (f"{path}:1", {"member_id": "A1", "birth_date": "20210102", "sex": "M"}),
        (f"{path}:3", {"member_id": "B2", "birth_date": "20200101", "sex": ""}),
        (f"{path}:4", {"member_id": "C3", "birth_date": "20190101", "sex": "F"}),
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("M", "male", id="exact"),
        pytest.param("m", "male", id="upper-case-fallback"),
        pytest.param("f", "female", id="exact-lower-key"),
        pytest.param("X", "X", id="unmapped-passes-through"),
        pytest.param("", "", id="empty"),
    ],
)
def test_value_translation(tmp_path: Path, text: str, expected: str) -> None:
    cmap = _map(tmp_path, GOOD_CSV)
    assert value(Row("f:2", {"sex": text}), cmap, "sex") == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("2021-03-04", date(2021, 3, 4), id="iso"),
        pytest.param("03/04/2021", date(2021, 3, 4), id="us"),
        pytest.param("20210304", date(2021, 3, 4), id="compact"),
        pytest.param("", None, id="empty"),
    ],
)
def test_parse_date(tmp_path: Path, text: str, expected: date | None) -> None:
    cmap = _map(tmp_path, GOOD_CSV)
    assert parse_date(Row("f:2", {"birth_date": text}), cmap, "birth_date") == expected


@pytest.mark.parametrize(
    ("text", "required", "message"),
    [
        pytest.param("", True, "missing date (column birth_date)", id="missing-required"),
        pytest.param("2021-02-30", False, "'2021-02-30' is not a date", id="impossible-day"),
        pytest.param("yesterday", False, "'yesterday' is not a date", id="words"),
    ],
)
def test_parse_date_errors(tmp_path: Path, text: str, required: bool, message: str) -> None:
    cmap = _map(tmp_path, GOOD_CSV)
    with pytest.raises(InvalidDataError) as info:
        parse_date(Row("f.csv:7", {"birth_date": text}), cmap, "birth_date", required=required)
    assert info.value.location == "f.csv:7"
    assert message in info.value.message


def test_row_fields_collect_every_problem(tmp_path: Path) -> None:
    cmap = _map(tmp_path, GOOD_CSV)
    f = RowFields(Row("f.csv:3", {"member_id": "", "birth_date": "soon", "sex": "m"}), cmap)
    assert f.text("member_id", required="member id") == ""
    assert f.date("birth_date") is None
    assert f.text("sex") == "male"
    assert [str(e) for e in f.errors] == [
        "f.csv:3: missing member id (column member_id)",
        "f.csv:3: 'soon' is not a date in %Y-%m-%d, %m/%d/%Y, %Y%m%d (column birth_date)",
    ]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({"colour": "red"}, "unknown [options] ['colour']", id="unknown"),
        pytest.param({"limit": "ten"}, "[options] limit has the wrong type", id="wrong-type"),
    ],
)
def test_check_options(tmp_path: Path, options: dict[str, object], message: str) -> None:
    cmap = ColumnMap(tmp_path / "m.toml", "csv", {}, {}, {}, options=options)
    with pytest.raises(MappingsError) as info:
        check_options(cmap, {"limit": int})
    assert message in info.value.message
    check_options(ColumnMap(tmp_path / "m.toml", "csv", {}, {}, {}, options={"limit": 3}), {"limit": int})


def test_rows_failed_lists_in_line_order_and_caps(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    errors = [InvalidDataError(f"bad {n}", location=f"{path}:{n}") for n in (12, 3, 7)]
    error = rows_failed(path, errors, limit=2)
    assert error.message.splitlines() == [
        f"3 bad rows in {path}; nothing was written:",
        f"{path}:3: bad 3",
        f"{path}:7: bad 7",
        "… and 1 more",
    ]
