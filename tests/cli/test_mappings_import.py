"""``fhir-adapter mappings import`` end to end (spec §3 "Official lists"): a workbook built here
with openpyxl is imported into a copy of the shipped mappings folder; the command prints the
code diff and who enters or leaves each population, writes official rows, regenerates
conformance/, and changes nothing at all when the workbook is bad or on --dry-run."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from click.testing import CliRunner, Result

from fhir_adapter.cli import main
from fhir_adapter.ingest.runner import ingest_items
from fhir_adapter.mappings import load_mappings
from fhir_adapter.settings import Settings
from fhir_adapter.store.db import ParsedResource
from fhir_adapter.workflow import open_store
from tests import cohorts as c
from tests.conftest import ROOT

MEASURE = "oregon-se-issue-focused"
HEADER = ["Value Set Name", "Code System", "Code", "Description"]
INTER, DIAG = "SE Intervention Procedures", "SE Issue Diagnoses"
WB_NAME = "SE-value-sets-2025-01-15.xlsx"
SOURCE = f"{WB_NAME} (2025-01-15)"

COHORT = [
    c.patient("keep", "2022-06-15"), c.full_year("keep"), c.eob("e-keep", "keep", "2025-03-01", "90834"),
    c.patient("enter", "2021-02-02"), c.full_year("enter"), c.eob("e-enter", "enter", "2025-04-01", "90791"),
    c.patient("leave", "2023-01-20"), c.full_year("leave"),
    c.eob("e-leave", "leave", "2025-05-01", "H0004", system=c.HCPCS),
    c.patient("prefix", "2022-09-09"), c.full_year("prefix"),
    c.eob("e-prefix", "prefix", "2025-06-01", "90834", ("F43.10",)),
]  # fmt: skip

Rows = Sequence[Sequence[Any]]


@dataclass(frozen=True)
class Site:
    root: Path
    mappings: Path
    conformance: Path
    database: str

    @property
    def year_dir(self) -> Path:
        return self.mappings / MEASURE / "2025"

    def snapshot(self) -> dict[str, bytes]:
        """Every file of mappings/ and conformance/, by relative path."""
        return {
            str(p.relative_to(self.root)): p.read_bytes()
            for folder in (self.mappings, self.conformance)
            for p in sorted(folder.rglob("*"))
            if p.is_file()
        }

    def valueset(self, name: str) -> list[dict[str, str]]:
        with (self.year_dir / "valuesets" / f"{name}.csv").open(newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Site:
    s = Site(tmp_path, tmp_path / "mappings", tmp_path / "conformance", f"sqlite:///{tmp_path / 'store.db'}")
    shutil.copytree(ROOT / "mappings", s.mappings)
    shutil.copytree(ROOT / "conformance", s.conformance)
    monkeypatch.setenv("FHIR_ADAPTER_MAPPINGS_DIR", str(s.mappings))
    monkeypatch.setenv("FHIR_ADAPTER_CONFORMANCE_DIR", str(s.conformance))
    settings = Settings(mappings_dir=s.mappings, conformance_dir=s.conformance, database_url=s.database)
    store = open_store(settings)
    try:
        ingest_items(
            store, [ParsedResource(r["resourceType"], r["id"], r) for r in COHORT], "ehr", batch_size=100
        )
    finally:
        store.close()
    return s


def xlsx(path: Path, sheets: dict[str, Rows]) -> Path:
    book = openpyxl.Workbook()
    book.remove(book.active)  # type: ignore[arg-type]
    for name, rows in sheets.items():
        sheet = book.create_sheet(name)
        for r in rows:
            sheet.append(list(r))
    book.save(path)
    return path


def run(site: Site, path: Path, *extra: str) -> Result:
    args = [
        "mappings",
        "import",
        str(path),
        "--measure",
        MEASURE,
        "--year",
        "2025",
        "--database",
        site.database,
    ]
    return CliRunner().invoke(main, [*args, *extra], catch_exceptions=False)


PROCEDURES: list[list[Any]] = [
    [INTER, "CPT", 90834, "Psychotherapy, 45 minutes"],
    [INTER, "HCPCS", "H0004", "BH counseling"],
]
DIAGNOSES: list[list[Any]] = [
    [DIAG, "ICD-10-CM", "F43.*", "Reaction to severe stress, and adjustment disorders"]
]


@pytest.mark.parametrize(
    ("rows", "diff_lines", "impact_lines"),
    [
        pytest.param(
            [*PROCEDURES, [INTER, "CPT", "90791", None], *DIAGNOSES],
            ["  se-intervention-procedures: 1 added, 26 removed, 2 changed",
             "    + CPT 90791 exact [official]",
             "    - CPT 90832 exact [candidate]",
             "    ~ CPT 90834: status: candidate -> official",
             "    ~ HCPCS H0004: display: (empty) -> BH counseling; status: candidate -> official"],
            ["  enters all-enrolled-numerator: member M-enter, Patient/enter (source ehr), CCO ALLCARE: "
             "out -> in (no-qualifying-service -> qualifying-service)",
             "  enters identified-need-numerator: member M-enter, Patient/enter (source ehr), CCO ALLCARE: "
             "out -> in (no-qualifying-service -> qualifying-service)"],
            id="added-code-child-enters-numerator",
        ),
        pytest.param(
            [PROCEDURES[0], *DIAGNOSES],
            ["    - HCPCS H0004 exact [candidate]"],
            ["  leaves all-enrolled-numerator: member M-leave, Patient/leave (source ehr), CCO ALLCARE: "
             "in -> out (qualifying-service -> no-qualifying-service)",
             "  all-enrolled-numerator                 3 -> 2 (-1)"],
            id="removed-code-child-leaves",
        ),
        pytest.param(
            [*PROCEDURES, [DIAG, "ICD-10-CM", "F43", None], [DIAG, "ICD-10-CM", "F4322", None]],
            ["  se-issue-diagnoses: 1 added, 23 removed, 1 changed",
             "    ~ ICD-10-CM F43: match: prefix -> exact; display: Reaction to severe stress, and adjustment "
             "disorders -> (empty); status: candidate -> official",
             "    + ICD-10-CM F43.22 exact [official]"],
            ["  leaves all-enrolled-numerator: member M-prefix, Patient/prefix (source ehr), CCO ALLCARE: "
             "in -> out (qualifying-service -> service-without-qualifying-diagnosis)",
             "  leaves identified-need-denominator: member M-prefix, Patient/prefix (source ehr), CCO ALLCARE: "
             "in -> out (qualifying-service -> no-identified-need)"],
            id="prefix-to-exact",
        ),
    ],
)  # fmt: skip
def test_import_prints_diff_and_impact_and_writes(
    site: Site, rows: Rows, diff_lines: list[str], impact_lines: list[str]
) -> None:
    path = xlsx(site.root / WB_NAME, {"Read me": [["Official SE value sets"]], "Value sets": [HEADER, *rows]})
    result = run(site, path)
    assert result.exit_code == 0, result.stderr
    out = result.stdout.splitlines()
    assert f"workbook {WB_NAME} dated 2025-01-15 (from the file name); source = '{SOURCE}'" in out
    assert "  sheets read: Value sets; skipped (no header row): Read me" in out
    for line in [*diff_lines, *impact_lines]:
        assert line in out, result.stdout
    assert "impact on the store (2025-01-01..2025-12-31, sources claims):" in out
    assert "value-set files replaced" in result.stderr
    written = site.valueset("se-intervention-procedures")
    assert {(r["status"], r["source"]) for r in written} == {("official", SOURCE)}
    assert next(r for r in written if r["code"] == "90834")["display"] == ""  # CPT descriptor dropped
    diagnoses = [r["code"] for r in site.valueset("se-issue-diagnoses")]
    assert all(len(code) <= 3 or code[3] == "." for code in diagnoses), diagnoses  # ICD-10-CM written dotted
    m = load_mappings(site.mappings)
    assert m.measures[(MEASURE, 2025)].valuesets["hospice"].rows[0].provenance.status == "candidate"
    vs = json.loads(
        (site.conformance / f"ValueSet-{MEASURE}-2025-se-intervention-procedures.json").read_bytes()
    )
    codes = {concept["code"] for inc in vs["compose"]["include"] for concept in inc.get("concept", [])}
    assert codes == {r["code"] for r in written}


def test_reimport_is_idempotent(site: Site) -> None:
    path = xlsx(site.root / WB_NAME, {"Codes": [HEADER, *PROCEDURES, *DIAGNOSES]})
    assert run(site, path).exit_code == 0
    after_first = site.snapshot()
    again = run(site, path)
    assert again.exit_code == 0
    assert "  se-intervention-procedures: no change" in again.stdout.splitlines()
    assert "  se-issue-diagnoses: no change" in again.stdout.splitlines()
    assert again.stdout.count("no child enters or leaves a population") == 2
    assert "0 value-set files replaced" in again.stderr
    assert site.snapshot() == after_first


def test_dry_run_writes_nothing(site: Site) -> None:
    before = site.snapshot()
    path = xlsx(site.root / WB_NAME, {"Codes": [HEADER, PROCEDURES[0], *DIAGNOSES]})
    result = run(site, path, "--dry-run", "--sources", "claims")
    assert result.exit_code == 0, result.stderr
    assert "    - HCPCS H0004 exact [candidate]" in result.stdout
    assert (
        "  leaves all-enrolled-numerator: member M-leave, Patient/leave (source ehr), CCO ALLCARE: "
        in result.stdout
    )
    assert "sources all" not in result.stdout  # --sources claims: the EOB counts, only one mode evaluated
    assert "dry run: nothing written" in result.stderr
    assert site.snapshot() == before


def test_csv_variant_with_oid_systems(site: Site) -> None:
    path = site.root / "se-lists.csv"
    path.write_text(
        "Value Set Name,Code System,Code,Description,Effective Date\n"
        f'{INTER},2.16.840.1.113883.6.12,90834,"Psychotherapy, 45 minutes",\n'
        f"{INTER},urn:oid:2.16.840.1.113883.6.285,H0004,BH counseling,01/01/2025\n"
        f"{DIAG},2.16.840.1.113883.6.90,F43%,Stress,\n",
        encoding="utf-8",
    )
    result = run(site, path)
    assert result.exit_code == 0, result.stderr
    assert [(r["system"], r["code"], r["match"], r["valid_from"], r["display"])
            for r in site.valueset("se-intervention-procedures")] == [
        (c.CPT, "90834", "exact", "", ""),
        (c.HCPCS, "H0004", "exact", "2025-01-01", "BH counseling"),
    ]  # fmt: skip
    assert [(r["code"], r["match"], r["display"]) for r in site.valueset("se-issue-diagnoses")] == [
        ("F43", "prefix", "Stress")
    ]
    source = site.valueset("se-issue-diagnoses")[0]["source"]
    assert source.startswith("se-lists.csv (") and source.endswith(")")  # dated by the file's mtime


def test_columns_and_sheet_options(site: Site) -> None:
    cmap = site.root / "map.toml"
    cmap.write_text(
        'sheets = ["Wrong"]\nheader_row = 2\n[columns]\nvalueset = "VS"\nsystem = "System"\ncode = "Code"\n'
        '[values.valueset]\n"Dx" = "se-issue-diagnoses"\n'
    )
    path = xlsx(
        site.root / WB_NAME, {"Dx": [["title"], ["VS", "System", "Code"], ["Dx", "ICD-10-CM", "F93.*"]]}
    )
    result = run(site, path, "--columns", str(cmap), "--sheet", "Dx")
    assert result.exit_code == 0, result.stderr
    assert [r["code"] for r in site.valueset("se-issue-diagnoses")] == ["F93"]


BAD = [
    pytest.param({"Codes": [HEADER, *PROCEDURES]}, ["--sheet", "Nope"], "", "unknown sheet 'Nope'",
                 id="unknown-sheet"),
    pytest.param({"Codes": [["Value Set Name", "Code", "Description"], [INTER, "90834", "x"]]}, [], "[Codes]:1",
                 "missing column system ('Code System' or", id="missing-column"),
    pytest.param({"Codes": [["Value Set Name", "Code System"], [INTER, "CPT"]]}, ["--sheet", "Codes"],
                 "[Codes]:1", "missing column code ('Code' or 'Code Value'): no header row", id="no-code-column-in-sheet"),
    pytest.param({"Codes": [["Value Set Name", "Code System"], [INTER, "CPT"]]}, [], "",
                 "missing column code ('Code' or 'Code Value'): no sheet has a header row naming it",
                 id="no-code-column-in-any-sheet"),
    pytest.param({"Codes": [HEADER, *PROCEDURES, [INTER, "LOINC", "1234-5"]]}, [], "[Codes]:4",
                 "unknown code system 'LOINC' in column 'Code System' (B)", id="unknown-code-system"),
    pytest.param({"Codes": [HEADER, *PROCEDURES, ["SE Screening", "CPT", "96110"]]}, [], "[Codes]:4",
                 "unknown value set 'SE Screening' in column 'Value Set Name' (A)", id="unknown-value-set"),
    pytest.param({"Codes": [[*HEADER, "Effective Date"], [INTER, "CPT", "90834", None, "31/12/2025"]]}, [],
                 "[Codes]:2", "bad date '31/12/2025' in column 'Effective Date' (E)", id="bad-date"),
    pytest.param({"Codes": [HEADER, *PROCEDURES, [INTER, "HCPCS", "H0004", "Other text"]]}, [], "[Codes]:4",
                 "duplicate code H0004 (exact, value set se-intervention-procedures) with conflicting description",
                 id="duplicate-conflicting"),
    pytest.param({"Codes": [HEADER, [DIAG, "ICD-10-CM", "F43.*"]]}, ["--columns", "MAP"], "[Codes]:2",
                 "ends in a wildcard but column 'Match' (D) says exact", id="wildcard-says-exact"),
]  # fmt: skip


@pytest.mark.parametrize(("sheets", "options", "where", "message"), BAD)
def test_bad_workbook_changes_nothing(
    site: Site, sheets: dict[str, Rows], options: list[str], where: str, message: str
) -> None:
    if "MAP" in options:
        cmap = site.root / "map.toml"
        cmap.write_text('[columns]\nvalueset = "Value Set Name"\nsystem = "Code System"\ncode = "Code"\nmatch = "M"\n'
                        '[values.valueset]\n"SE Issue Diagnoses" = "se-issue-diagnoses"\n')  # fmt: skip
        options = ["--columns", str(cmap)]
        sheets = {"Codes": [[*HEADER[:3], "M"], [*sheets["Codes"][1], "exact"]]}
    before = site.snapshot()
    path = xlsx(site.root / WB_NAME, sheets)
    result = run(site, path, *options)
    assert result.exit_code == 3, result.stdout
    error = " ".join(result.stderr.split())
    assert f"error: {path}{where}: " in error, error
    assert message.replace("column 'Match' (D)", "column 'M' (D)") in error, error
    assert result.stdout == ""
    assert site.snapshot() == before


def test_unknown_measure_year(site: Site) -> None:
    path = xlsx(site.root / WB_NAME, {"Codes": [HEADER, *PROCEDURES]})
    result = CliRunner().invoke(
        main,
        [
            "mappings",
            "import",
            str(path),
            "--measure",
            MEASURE,
            "--year",
            "2019",
            "--database",
            site.database,
        ],
    )
    assert result.exit_code == 3
    assert "no measure folder oregon-se-issue-focused/2019" in result.stderr


def test_sheet_option_on_a_csv_is_a_usage_error(site: Site) -> None:
    path = site.root / "lists.csv"
    path.write_text("Value Set Name,Code System,Code\nSE Issue Diagnoses,ICD-10-CM,F43\n", encoding="utf-8")
    before = site.snapshot()
    result = run(site, path, "--sheet", "Codes")
    assert result.exit_code == 2
    assert "--sheet applies to Excel workbooks only" in result.stderr
    assert site.snapshot() == before


def test_new_files_are_checked_by_loading_a_copy_before_anything_is_replaced(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fhir_adapter.mappings_import as mi

    def broken(rows: Sequence[Any], source: str, status: str = "official") -> bytes:
        return b"system,code\nhttp://www.ama-assn.org/go/cpt,90834\n"

    monkeypatch.setattr(mi, "valueset_csv", broken)
    before = site.snapshot()
    path = xlsx(site.root / WB_NAME, {"Codes": [HEADER, *PROCEDURES]})
    result = run(site, path)
    assert result.exit_code == 3
    error = " ".join(result.stderr.split())
    expected = site.year_dir / "valuesets" / "se-intervention-procedures.csv"
    assert f"{expected}:1: the imported value sets would make mappings/ invalid: bad header" in error, error
    assert site.snapshot() == before
