"""Official value-set workbooks (spec §3 "Official lists", "Code handling"): the column map,
header detection, code systems by name/URI/OID, wildcards, CPT descriptors, dates, and an error
naming sheet, row and column for every bad workbook. Workbooks are built here with openpyxl."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from fhir_adapter.errors import InvalidDataError, MappingsError
from fhir_adapter.ingest.workbook import (
    WorkbookMap,
    load_workbook_map,
    read_valueset_workbook,
    workbook_date,
)
from fhir_adapter.measure.spec import Mappings, MeasureSpec

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MAP = ROOT / "mappings" / "extracts" / "valueset-workbook.toml"
CPT = "http://www.ama-assn.org/go/cpt"
HCPCS = "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
SCT = "http://snomed.info/sct"
HEADER = ["Value Set Name", "Code System", "Code", "Description", "Effective Date", "End Date"]
INTER, DIAG = "SE Intervention Procedures", "SE Issue Diagnoses"

Rows = Sequence[Sequence[Any]]


def xlsx(path: Path, sheets: dict[str, Rows]) -> Path:
    book = openpyxl.Workbook()
    book.remove(book.active)  # type: ignore[arg-type]
    for name, rows in sheets.items():
        sheet = book.create_sheet(name)
        for r in rows:
            sheet.append(list(r))
    book.save(path)
    return path


def csv_file(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def wmap() -> WorkbookMap:
    return load_workbook_map(DEFAULT_MAP)


@pytest.fixture(scope="module")
def spec(mappings: Mappings) -> MeasureSpec:
    return mappings.measures[("oregon-se-issue-focused", 2025)]


def read(
    path: Path, wmap: WorkbookMap, mappings: Mappings, spec: MeasureSpec, **kw: Any
) -> list[tuple[Any, ...]]:
    wb = read_valueset_workbook(path, wmap, mappings, spec, **kw)
    return [(r.valueset, r.system, r.code, r.match, r.valid_from, r.valid_to, r.display) for r in wb.rows]


INT, DX = "se-intervention-procedures", "se-issue-diagnoses"


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        pytest.param([INTER, "CPT", 90834, "Psychotherapy 45 min"], (INT, CPT, "90834", "exact", None, None, ""),
                     id="cpt-number-cell-description-dropped"),
        pytest.param([INTER, "CPT", 90834.0, None], (INT, CPT, "90834", "exact", None, None, ""),
                     id="cpt-float-cell"),
        pytest.param([INTER, "HCPCS", "90834", "Psychotherapy 45 min"], (INT, HCPCS, "90834", "exact", None, None, ""),
                     id="cpt-code-filed-under-hcpcs-description-dropped"),
        pytest.param([INTER, "HCPCS Level II", "h0004", "Behavioral health counseling"],
                     (INT, HCPCS, "H0004", "exact", None, None, "Behavioral health counseling"),
                     id="hcpcs-alias-name-description-kept"),
        pytest.param([INTER, "2.16.840.1.113883.6.12", "90837"], (INT, CPT, "90837", "exact", None, None, ""),
                     id="bare-oid"),
        pytest.param([INTER, "urn:oid:2.16.840.1.113883.6.285", "H0032"], (INT, HCPCS, "H0032", "exact", None, None, ""),
                     id="urn-oid"),
        pytest.param([INTER, "https://bluebutton.cms.gov/resources/codesystem/hcpcs", "H2014"],
                     (INT, HCPCS, "H2014", "exact", None, None, ""), id="alias-uri"),
        pytest.param([DIAG, "ICD10CM", "F4322", "Adjustment disorder with anxiety"],
                     (DX, ICD, "F43.22", "exact", None, None, "Adjustment disorder with anxiety"),
                     id="icd-name-without-punctuation-code-dotted"),
        pytest.param([DIAG, "icd-10-cm", "f43.22"], (DX, ICD, "F43.22", "exact", None, None, ""),
                     id="icd-lower-case"),
        pytest.param([DIAG, "ICD-10-CM", "F43.*", "Stress"], (DX, ICD, "F43", "prefix", None, None, "Stress"),
                     id="wildcard-dot-star"),
        pytest.param([DIAG, "ICD-10-CM", "F43%"], (DX, ICD, "F43", "prefix", None, None, ""), id="wildcard-percent"),
        pytest.param([DIAG, "ICD-10-CM", "F98.8*"], (DX, ICD, "F98.8", "prefix", None, None, ""),
                     id="wildcard-star-keeps-dot"),
        pytest.param([DIAG, "SNOMEDCT", "444333001"], (DX, SCT, "444333001", "exact", None, None, ""),
                     id="snomed-mapped-name"),
        pytest.param(["se-issue-diagnoses", "http://hl7.org/fhir/sid/icd-10-cm", "Z62"],
                     (DX, ICD, "Z62", "exact", None, None, ""), id="value-set-id-and-uri"),
        pytest.param([DIAG, "ICD-10-CM", "F43.22", None, datetime(2024, 10, 1), "09/30/2025"],
                     (DX, ICD, "F43.22", "exact", date(2024, 10, 1), date(2025, 9, 30), ""),
                     id="date-cell-and-us-date-text"),
        pytest.param([DIAG, "ICD-10-CM", "F43.22", None, 20241001, "2025-09-30"],
                     (DX, ICD, "F43.22", "exact", date(2024, 10, 1), date(2025, 9, 30), ""),
                     id="yyyymmdd-number-and-iso"),
    ],
)  # fmt: skip
def test_rows(
    tmp_path: Path,
    wmap: WorkbookMap,
    mappings: Mappings,
    spec: MeasureSpec,
    row: list[Any],
    expected: tuple[Any, ...],
) -> None:
    path = xlsx(tmp_path / "wb.xlsx", {"Codes": [HEADER, row]})
    assert read(path, wmap, mappings, spec) == [expected]


def test_match_column_and_header_detection(tmp_path: Path, mappings: Mappings, spec: MeasureSpec) -> None:
    cmap = tmp_path / "map.toml"
    cmap.write_text(
        '[columns]\nvalueset = "VS"\nsystem = "System"\ncode = "Code"\nmatch = "Match Type"\n'
        '[values.match]\n"Starts with" = "prefix"\n[values.valueset]\n"SE Issue Diagnoses" = "se-issue-diagnoses"\n'
    )
    path = xlsx(
        tmp_path / "wb.xlsx",
        {
            "Notes": [["This workbook lists the codes"], ["Code lists follow on the next sheet"]],
            "Codes": [
                ["OHA SE measure value sets"],
                [],
                ["  vs ", "SYSTEM", "code", "Match Type"],
                [DIAG, "ICD-10-CM", "F43", "Starts with"],
                [DIAG, "ICD-10-CM", "F43.22", "EXACT"],
                [DIAG, "ICD-10-CM", "F93", ""],
                [None, None, None, None],
                [DIAG, "ICD-10-CM", "F43", "starts with"],  # an exact repeat: kept once
            ],
        },
    )
    wb = read_valueset_workbook(path, load_workbook_map(cmap), mappings, spec)
    assert [(r.code, r.match, r.location) for r in wb.rows] == [
        ("F43", "prefix", f"{path}[Codes]:4"),
        ("F43.22", "exact", f"{path}[Codes]:5"),
        ("F93", "exact", f"{path}[Codes]:6"),
    ]
    assert (wb.sheets, wb.skipped_sheets, wb.duplicates) == (("Codes",), ("Notes",), 1)


def test_csv_with_default_value_set_and_system(tmp_path: Path, mappings: Mappings, spec: MeasureSpec) -> None:
    cmap = tmp_path / "map.toml"
    cmap.write_text(
        'default_valueset = "SE Issue Diagnoses"\ndefault_system = "ICD-10-CM"\ndelimiter = ";"\n'
        '[columns]\ncode = "DX"\ndisplay = "Label"\n[values.valueset]\n"SE Issue Diagnoses" = "se-issue-diagnoses"\n'
    )
    path = csv_file(tmp_path / "dx.csv", 'DX;Label\nF4322;"Adjustment; anxiety"\n\nZ62.*;Upbringing\n')
    assert read(path, load_workbook_map(cmap), mappings, spec) == [
        (DX, ICD, "F43.22", "exact", None, None, "Adjustment; anxiety"),
        (DX, ICD, "Z62", "prefix", None, None, "Upbringing"),
    ]


def test_cpt_descriptions_are_counted_when_dropped(
    tmp_path: Path, wmap: WorkbookMap, mappings: Mappings, spec: MeasureSpec
) -> None:
    path = xlsx(
        tmp_path / "wb.xlsx",
        {
            "Codes": [
                HEADER,
                [INTER, "CPT", "90834", "Psychotherapy"],
                [INTER, "HCPCS", "H0004", "BH counseling"],
            ]
        },
    )
    wb = read_valueset_workbook(path, wmap, mappings, spec)
    assert wb.dropped_displays == 1
    assert [r.display for r in wb.rows] == ["", "BH counseling"]


# --------------------------------------------------------------------------------------------
# bad workbooks: every error names the place


@pytest.mark.parametrize(
    ("sheets", "options", "where", "message"),
    [
        pytest.param({"Codes": [HEADER, [INTER, "CPT", "90834"]]}, {"sheets": ["Nope"]}, "",
                     "unknown sheet 'Nope'; the workbook has sheets: 'Codes'", id="unknown-sheet"),
        pytest.param({"Codes": [["Value Set Name", "Code"], [INTER, "90834"]]}, {}, "[Codes]:1",
                     "missing column system ('Code System' or", id="missing-column"),
        pytest.param({"Codes": [["Value Set Name", "Code System"], [INTER, "CPT"]]}, {"sheets": ["Codes"]},
                     "[Codes]:1", "missing column code ('Code' or 'Code Value'): no header row", id="no-header"),
        pytest.param({"Codes": [["x"], HEADER]}, {"header_row": 1}, "[Codes]:1",
                     "missing column valueset", id="header-row-fixed-wrong"),
        pytest.param({"Codes": [HEADER, [INTER, "CPT", "90834"], [INTER, "LOINC", "1234-5"]]}, {}, "[Codes]:3",
                     "unknown code system 'LOINC' in column 'Code System' (B)", id="unknown-code-system"),
        pytest.param({"Codes": [HEADER, ["SE Screening", "CPT", "96110"]]}, {}, "[Codes]:2",
                     "unknown value set 'SE Screening' in column 'Value Set Name' (A)", id="unknown-value-set"),
        pytest.param({"Codes": [HEADER, ["se-assessment-procedures", "CPT", "96110"]]}, {}, "[Codes]:2",
                     "unknown value set 'se-assessment-procedures'", id="value-set-of-another-measure"),
        pytest.param({"Codes": [HEADER, [DIAG, "ICD-10-CM", "F43", None, "2024-13-45"]]}, {}, "[Codes]:2",
                     "bad date '2024-13-45' in column 'Effective Date' (E)", id="bad-date"),
        pytest.param({"Codes": [HEADER, [DIAG, "ICD-10-CM", "F43", None, "2025-10-01", "2024-09-30"]]}, {},
                     "[Codes]:2", "bad date: column 'Effective Date' (E) 2025-10-01 is after", id="dates-reversed"),
        pytest.param({"Codes": [HEADER, [DIAG, "ICD-10-CM", None, "Stress"]]}, {}, "[Codes]:2",
                     "missing code in column 'Code' (C)", id="missing-code"),
        pytest.param({"Codes": [HEADER, [None, "ICD-10-CM", "F43"]]}, {}, "[Codes]:2",
                     "missing value set in column 'Value Set Name' (A)", id="missing-value-set"),
        pytest.param({"Codes": [HEADER, [DIAG, "ICD-10-CM", datetime(2025, 1, 2)]]}, {}, "[Codes]:2",
                     "code in column 'Code' (C) is a date cell", id="code-as-date"),
        pytest.param({"A": [HEADER, [DIAG, "ICD-10-CM", "F43.22", "Adjustment"]],
                      "B": [HEADER, [DIAG, "ICD-10-CM", "F4322", "Adjustment disorder"]]}, {}, "[B]:2",
                     "duplicate code F43.22 (exact, value set se-issue-diagnoses) with conflicting description: "
                     "first at", id="duplicate-conflicting-description"),
        pytest.param({"Codes": [HEADER, [DIAG, "ICD-10-CM", "F43", None, None, "2025-01-01"],
                                [DIAG, "ICD-10-CM", "F43", None, None, "2026-01-01"]]}, {}, "[Codes]:3",
                     "with conflicting valid_to", id="duplicate-conflicting-validity"),
        pytest.param({"Codes": [["Notes only"]]}, {}, "", "missing column code ('Code' or 'Code Value'): no sheet has a header row",
                     id="no-sheet-has-a-header"),
        pytest.param({"Codes": [HEADER]}, {}, "", "no value-set rows found", id="empty"),
    ],
)  # fmt: skip
def test_bad_workbook(
    tmp_path: Path,
    mappings: Mappings,
    spec: MeasureSpec,
    sheets: dict[str, Rows],
    options: dict[str, Any],
    where: str,
    message: str,
) -> None:
    own = [f"{k} = {v!r}".replace("'", '"') for k, v in options.items()]
    shipped = [
        line for line in DEFAULT_MAP.read_text().splitlines() if not line.startswith(("sheets", "header_row"))
    ]
    cmap = tmp_path / "map.toml"
    cmap.write_text("\n".join([*own, *shipped]) + "\n")
    path = xlsx(tmp_path / "bad.xlsx", sheets)
    with pytest.raises(InvalidDataError) as info:
        read_valueset_workbook(path, load_workbook_map(cmap), mappings, spec)
    assert info.value.location == f"{path}{where}"
    assert message in info.value.message
    assert info.value.exit_code == 3


@pytest.mark.parametrize(
    ("name", "text", "where", "message"),
    [
        pytest.param("wb.csv", "Value Set Name,Code System,Code\n" + DIAG + ",ICD-10-CM,F43,extra\n", ":2",
                     "expected at most 3 fields, got 4", id="csv-long-row"),
        pytest.param("wb.csv", "Value Set Name,Code System,Code\n" + DIAG + ",ICD9,250\n", ":2",
                     "unknown code system 'ICD9' in column 'Code System'", id="csv-unknown-system"),
        pytest.param("wb.csv", "Code System,Code\nICD-10-CM,F43\n", ":1",
                     "missing column valueset", id="csv-missing-column"),
        pytest.param("wb.xls", "not excel", "", "unsupported file type '.xls'", id="xls"),
        pytest.param("wb.xlsx", "not a zip", "", "not a readable .xlsx workbook", id="xlsx-not-a-zip"),
    ],
)  # fmt: skip
def test_bad_files(
    tmp_path: Path, wmap: WorkbookMap, mappings: Mappings, spec: MeasureSpec, name: str, text: str, where: str,
    message: str,
) -> None:  # fmt: skip
    path = csv_file(tmp_path / name, text)
    with pytest.raises(InvalidDataError) as info:
        read_valueset_workbook(path, wmap, mappings, spec)
    assert (info.value.location, message in info.value.message) == (f"{path}{where}", True), (
        info.value.message
    )


def test_value_set_built_by_include_cannot_be_imported(
    tmp_path: Path, wmap: WorkbookMap, mappings: Mappings, spec: MeasureSpec
) -> None:
    derived = replace(spec.valuesets[DX], path=str(Path(spec.path) / "measure.toml"))
    spec = replace(spec, valuesets={**spec.valuesets, DX: derived})
    path = xlsx(tmp_path / "wb.xlsx", {"Codes": [HEADER, [DIAG, "ICD-10-CM", "F43"]]})
    with pytest.raises(InvalidDataError, match=r"is built by 'include' in measure\.toml") as info:
        read(path, wmap, mappings, spec)
    assert info.value.location == f"{path}[Codes]:2"


def test_value_set_mapped_to_an_undeclared_id(tmp_path: Path, mappings: Mappings, spec: MeasureSpec) -> None:
    cmap = tmp_path / "map.toml"
    cmap.write_text('[columns]\nvalueset = "VS"\nsystem = "S"\ncode = "C"\n[values.valueset]\nDx = "se-dx"\n')
    path = xlsx(tmp_path / "wb.xlsx", {"Codes": [["VS", "S", "C"], ["DX", "ICD-10-CM", "F43"]]})
    with pytest.raises(
        InvalidDataError, match=r"\[values.valueset\] maps it to 'se-dx', which is not declared"
    ):
        read(path, load_workbook_map(cmap), mappings, spec)


def test_sheet_option_overrides_the_map(
    tmp_path: Path, wmap: WorkbookMap, mappings: Mappings, spec: MeasureSpec
) -> None:
    path = xlsx(
        tmp_path / "wb.xlsx",
        {"A": [HEADER, [DIAG, "ICD-10-CM", "F43"]], "B": [HEADER, [DIAG, "ICD-10-CM", "F93"]]},
    )
    assert [r[2] for r in read(path, wmap, mappings, spec, sheets=["B"])] == ["F93"]
    with pytest.raises(InvalidDataError, match="unknown sheet 'C'"):
        read(path, wmap, mappings, spec, sheets=["C"])


# --------------------------------------------------------------------------------------------
# the column map


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        pytest.param('sheet = "all"\n[columns]\ncode = "Code"\n', 1, "unknown keys ['sheet']", id="unknown-key"),
        pytest.param('sheets = 3\n[columns]\ncode = "Code"\n', 1, 'sheets must be "all"', id="bad-sheets"),
        pytest.param('header_row = 0\n[columns]\ncode = "Code"\n', 1, "header_row must be", id="bad-header-row"),
        pytest.param('default_system = "CPT"\n[columns]\nvalueset = "VS"\n', 2, "lacks required field 'code'",
                     id="no-code-column"),
        pytest.param('[columns]\ncode = "Code"\nsystem = "S"\n', 1, "lacks 'valueset' and there is no default",
                     id="no-value-set-column-or-default"),
        pytest.param('[columns]\ncode = "Code"\nvalueset = "V"\nsystem = "S"\nnote = "N"\n', 1,
                     "unknown field 'note'", id="unknown-field"),
        pytest.param('[columns]\ncode = []\nvalueset = "V"\nsystem = "S"\n', 2, "code must be a header text",
                     id="empty-alternatives"),
        pytest.param('[columns]\ncode = "C"\nvalueset = "V"\nsystem = "S"\n[values.match]\nx = "fuzzy"\n', 5,
                     "targets ['fuzzy'] are not exact or prefix", id="bad-match-target"),
        pytest.param('[columns]\ncode = "C"\nvalueset = "V"\nsystem = "S"\n[values.colour]\nx = "y"\n', 5,
                     "unknown table [values.colour]", id="unknown-values-table"),
        pytest.param('optional = ["code"]\n[columns]\ncode = "C"\nvalueset = "V"\nsystem = "S"\n', 1,
                     "code column cannot be optional", id="optional-code"),
        pytest.param("[columns\n", 1, "not TOML", id="not-toml"),
    ],
)  # fmt: skip
def test_bad_map(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = tmp_path / "map.toml"
    path.write_text(text)
    with pytest.raises(MappingsError) as info:
        load_workbook_map(path)
    assert info.value.location == f"{path}:{line}"
    assert message in info.value.message


def test_shipped_map_loads() -> None:
    wmap = load_workbook_map(DEFAULT_MAP)
    assert wmap.sheets is None and wmap.header_row is None
    assert wmap.values["valueset"]["se intervention procedures"] == "se-intervention-procedures"


# --------------------------------------------------------------------------------------------
# the workbook's date


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("SE-valuesets-2025-01-15.csv", date(2025, 1, 15), id="iso"),
        pytest.param("SE_2025_01_15_final.csv", date(2025, 1, 15), id="underscores"),
        pytest.param("SE20250115.csv", date(2025, 1, 15), id="compact"),
        pytest.param("SE-2024-12-01-rev-2025-02-03.csv", date(2025, 2, 3), id="last-date-wins"),
        pytest.param("SE-2025-13-01.csv", date(2024, 6, 1), id="invalid-date-falls-back-to-mtime"),
        pytest.param("SE-2025.csv", date(2024, 6, 1), id="year-only-falls-back-to-mtime"),
    ],
)
def test_date_from_name_else_mtime(tmp_path: Path, name: str, expected: date) -> None:
    path = csv_file(tmp_path / name, "x\n")
    stamp = datetime(2024, 6, 1, 12, tzinfo=UTC).timestamp()
    os.utime(path, (stamp, stamp))
    day, basis = workbook_date(path)
    assert day == expected
    assert basis == ("file modification time" if expected == date(2024, 6, 1) else "file name")


def test_date_from_workbook_properties(tmp_path: Path) -> None:
    book = openpyxl.Workbook()
    path = tmp_path / "wb.xlsx"
    book.save(path)  # openpyxl stamps `modified` with the time of saving (UTC)
    stamp = datetime(2020, 1, 1, tzinfo=UTC).timestamp()
    os.utime(path, (stamp, stamp))
    day, basis = workbook_date(path)
    assert basis == "workbook properties"
    assert day == datetime.now(UTC).date()
