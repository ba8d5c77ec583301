"""A corpus of real-world malformed inputs through the command line (issue #7 item 5).

``tests/corpus/`` holds NDJSON and Bundle files (truncated lines, CRLF, a byte-order mark, Latin-1
and UTF-16 lines, an EOB with a string where FHIR JSON has an array, an Encounter whose period
ends before it starts, top-level arrays, strings and numbers, NUL, deep nesting, duplicate keys,
a Bundle entry without ``fullUrl`` or id, a truncated Bundle) and Excel-saved extracts (byte-order
mark, CRLF, semicolons, trailing empty columns, Windows-1252, bad rows). Value-set workbooks with
merged cells or without the named sheet are built with openpyxl here (no committed binaries).

Each file goes through ``fhir-adapter ingest``, ``load-enrollment``, ``load-claims`` or ``mappings
import``. Asserted: the errors name ``file:line`` (``file[sheet]:row`` and the column for
workbooks), the exit code is the documented one (3 invalid data, 2 usage, 0 ok), and the store:
``ingest`` keeps exactly the good lines (their bodies as received), the all-or-nothing commands
change nothing at all (every table's row count and a hash of every stored body, before and after).
Both engines (the ``store`` fixture).
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import openpyxl
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import text

from fhir_adapter.cli import main
from fhir_adapter.store.db import Store
from fhir_adapter.store.schema import metadata
from tests.conftest import ENGINES, ROOT, make_store_factory

CORPUS = Path(__file__).resolve().parent / "corpus"
MEASURE = "oregon-se-issue-focused"
#: Cases whose outcome cannot depend on the engine run on SQLite only (the ``store`` fixture's
#: ``engine_name`` parameter overridden), to keep the suite short.
SQLITE_ONLY = pytest.mark.parametrize("engine_name", ["sqlite"])


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def url_of(store: Store) -> str:
    return store.engine.url.render_as_string(hide_password=False)


def snapshot(store: Store) -> tuple[dict[str, int], str]:
    """Row counts of every table and a hash of every stored body with its key and version."""
    with store.read() as conn:
        counts = {t.name: int(conn.execute(text(f"SELECT COUNT(*) FROM {t.name}")).scalar_one())
                  for t in metadata.sorted_tables}  # fmt: skip
        digest = hashlib.sha256()
        rows = conn.execute(
            text(
                "SELECT r.source, r.rtype, r.rid, r.version, r.superseded_at, b.body FROM resources r "
                "JOIN resource_bodies b ON b.rkey = r.rkey ORDER BY r.source, r.rtype, r.rid, r.version"
            )
        )
        for row in rows:
            digest.update(repr(tuple(row[:5])).encode() + bytes(row[5]))
    return counts, digest.hexdigest()


def stored(store: Store, source: str) -> dict[tuple[str, str], bytes]:
    with store.read() as conn:
        rows = conn.execute(
            text(
                "SELECT r.rtype, r.rid, b.body FROM resources r JOIN resource_bodies b ON b.rkey = r.rkey "
                "WHERE r.source = :s AND r.superseded_at IS NULL"
            ),
            {"s": source},
        ).all()
    return {(r[0], r[1]): bytes(r[2]) for r in rows}


@pytest.fixture(scope="module", params=ENGINES)
def loaded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, pg_schemas: list[str]
) -> Iterator[Store]:
    """One store per engine for the module, after good extracts were loaded (so "nothing
    changed" is about real data); each test writes under its own source names and compares
    before and after, so they share it (a PostgreSQL store costs seconds to create)."""
    store = make_store_factory(str(request.param), tmp_path_factory.mktemp("corpus"), pg_schemas)()
    for command, name in (
        ("load-enrollment", "enrollment-excel-good.csv"),
        ("load-claims", "claims-excel-good.csv"),
    ):
        result = run(command, str(CORPUS / "extracts" / name), "--database", url_of(store))
        assert result.exit_code == 0, result.output
    yield store
    store.close()


# -- ingest: bad lines reported at file:line and skipped, good lines kept ---------------------------

INGEST = [
    pytest.param(
        "ndjson/truncated-lines.ndjson",
        [(2, "not JSON: unexpected end of data"), (4, "not JSON: unexpected end of data")],
        {("Patient", "trunc-1"), ("Patient", "trunc-3")},
        id="truncated-lines",
    ),
    pytest.param(
        "ndjson/crlf.ndjson",
        [],
        {("Patient", "crlf-1"), ("Coverage", "cov-crlf-1-ALLCARE"), ("ExplanationOfBenefit", "crlf-e1")},
        id="crlf",
    ),
    pytest.param(
        "ndjson/mixed-encodings.ndjson",
        [(2, "not valid UTF-8"), (3, "not JSON")],
        {("Patient", "enc-1"), ("Patient", "enc-4")},
        id="bom-latin1-utf16",
    ),
    pytest.param(
        "ndjson/eob-string-for-array.ndjson",
        [
            (2, "ExplanationOfBenefit.item is a JSON string, not an array"),
            (3, "ExplanationOfBenefit.diagnosis is a JSON object, not an array"),
        ],
        {("Patient", "arr-1"), ("ExplanationOfBenefit", "arr-e3")},
        id="eob-string-where-array",
    ),
    pytest.param(
        "ndjson/encounter-period-reversed.ndjson",
        [],
        {("Patient", "rev-1"), ("Encounter", "rev-enc1")},
        id="encounter-period-start-after-end",
    ),
    pytest.param(
        "ndjson/wrong-shapes.ndjson",
        [
            (2, "expected a JSON object, got list"),
            (3, "expected a JSON object, got str"),
            (4, "expected a JSON object, got int"),
            (6, "NUL character"),
            (7, "nested deeper than 100 levels"),
            (8, "'bad id' is not a valid FHIR id"),
            (9, "is not a valid FHIR id"),
            (10, "unknown resourceType 'NotAType'"),
        ],
        {("Patient", "shape-ok"), ("Patient", "shape-dup-2"), ("Patient", "shape-ok-2")},
        id="top-level-shapes-nul-deep-ids",
    ),
    pytest.param(
        "bundles/missing-fullurl.json",
        [("1 (Bundle.entry[1])", "Coverage has no id")],
        {("Patient", "6b0c4a8e-9a52-4f0b-9c61-2f3b8c1d0001"), ("ExplanationOfBenefit", "bun-e1")},
        id="bundle-entry-without-fullurl",
    ),
    pytest.param(
        "bundles/truncated.json", [(22, "not JSON: unexpected end of data")], set(), id="bundle-truncated"
    ),
]


@pytest.mark.parametrize(("name", "errors", "kept"), INGEST)
def test_ingest_reports_bad_lines_and_keeps_good_ones(
    loaded: Store, name: str, errors: list[tuple[object, str]], kept: set[tuple[str, str]]
) -> None:
    path = CORPUS / name
    source = "corpus-" + path.stem
    before = snapshot(loaded)
    result = run("ingest", str(path), "--source", source, "--quiet", "--database", url_of(loaded))
    assert result.exit_code == (3 if errors else 0), result.output
    reported = [line for line in result.stderr.splitlines() if line.startswith(f"{path}:")]
    assert len(reported) == len(errors), result.stderr
    for line, (where, message) in zip(reported, errors, strict=True):
        assert line.startswith(f"{path}:{where}: "), line
        assert message in line, line
    bodies = stored(loaded, source)
    assert set(bodies) == kept
    assert f"{len(errors)} rejected" in result.stderr
    if name.endswith(".ndjson"):  # the bodies as received (no CR, no byte-order mark)
        lines = path.read_bytes().removeprefix(b"\xef\xbb\xbf").split(b"\n")
        for body in bodies.values():
            assert body in [line.rstrip(b"\r") for line in lines]
    # nothing else changed: the other sources' data is untouched
    counts, _ = snapshot(loaded)
    assert counts["resources"] == before[0]["resources"] + len(kept)


def test_duplicate_keys_are_read_last_wins_everywhere(loaded: Store) -> None:
    """JSON with a repeated name (RFC 8259 §4: behaviour unpredictable): the store keeps the line as
    received and every reader takes the last value, as the parser that stored it did."""
    run("ingest", str(CORPUS / "ndjson/wrong-shapes.ndjson"), "--source", "dup", "--quiet",
        "--database", url_of(loaded))  # fmt: skip
    body = stored(loaded, "dup")[("Patient", "shape-dup-2")]
    assert body.count(b'"id"') == 2


def test_reversed_period_is_dated_by_its_start(loaded: Store) -> None:
    """An Encounter whose period ends before it starts (R4 per-1 violated) is stored (the store does
    not enforce invariants) and dated by period.start, the day the measure reads."""
    run("ingest", str(CORPUS / "ndjson/encounter-period-reversed.ndjson"), "--source", "rev", "--quiet",
        "--database", url_of(loaded))  # fmt: skip
    with loaded.read() as conn:
        day = conn.execute(
            text(
                "SELECT e.day FROM f_event e JOIN resources r ON r.rkey = e.rkey "
                "WHERE r.source = 'rev' AND r.rid = 'rev-enc1'"
            )
        ).scalar_one()
    from datetime import date

    assert day == date(2025, 6, 30).toordinal()


# -- extracts: all or nothing ---------------------------------------------------------------------

EXTRACTS = [
    pytest.param(
        "load-enrollment", "enrollment-excel-bad-rows.csv",
        [(3, "'13/01/2024' is not a date", "(column span_start)"), (4, "missing CCO id", "(column cco)"),
         (5, "'2021-02-30' is not a date", "(column birth_date)")],
        id="enrollment-bad-rows",
    ),
    pytest.param(
        "load-enrollment", "enrollment-excel-semicolon.csv",
        [(1, "header lacks columns member_id ('MEMBER_ID')", "")],
        id="enrollment-semicolons",
    ),
    pytest.param(
        "load-enrollment", "enrollment-windows-1252.csv",
        [(3, "not utf-8-sig text", "save as 'CSV UTF-8'")],
        id="enrollment-windows-1252",
    ),
    pytest.param(
        "load-claims", "claims-excel-bad-rows.csv",
        [(3, "procedure code '9O834' is neither CPT nor HCPCS", "(column procedure_code)"),
         (4, "'2025-13-01' is not a date", "(column from_date)"),
         (5, "status 'maybe' is not one of", "(column status)")],
        id="claims-bad-rows",
    ),
    pytest.param(
        "load-claims", "claims-excel-semicolon.csv",
        [(1, "header lacks columns claim_id ('CLAIM_ID')", "")],
        id="claims-semicolons",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("command", "name", "errors"), EXTRACTS)
def test_bad_extracts_change_nothing(
    loaded: Store, command: str, name: str, errors: list[tuple[int, str, str]]
) -> None:
    path = CORPUS / "extracts" / name
    before = snapshot(loaded)
    result = run(command, str(path), "--database", url_of(loaded))
    assert result.exit_code == 3, result.output
    for line, message, column in errors:
        found = [text_ for text_ in result.stderr.splitlines() if f"{path}:{line}: " in text_]
        assert found, result.stderr
        assert message in found[0] and column in found[0], found[0]
    assert snapshot(loaded) == before


@pytest.mark.parametrize(
    ("command", "name", "map_name"),
    [
        pytest.param("load-enrollment", "enrollment-excel-semicolon.csv", "enrollment.toml", id="enrollment"),
        pytest.param("load-claims", "claims-excel-semicolon.csv", "claims.toml", id="claims"),
    ],
)
def test_semicolon_extracts_load_with_their_delimiter(
    loaded: Store, tmp_path: Path, command: str, name: str, map_name: str
) -> None:
    """The fix for a semicolon file is data, not code: a copy of the column map saying so."""
    columns = tmp_path / map_name
    columns.write_text(
        (ROOT / "mappings" / "extracts" / map_name).read_text().replace('delimiter = ","', 'delimiter = ";"')
    )
    source = f"semicolon-{map_name.removesuffix('.toml')}"
    path = CORPUS / "extracts" / name
    result = run(
        command, str(path), "--columns", str(columns), "--source", source, "--database", url_of(loaded)
    )
    assert result.exit_code == 0, result.output
    assert "store: 2 created" in result.stderr, (
        result.stderr
    )  # a Patient and a Coverage, or an EOB and its Patient
    assert len(stored(loaded, source)) == 2


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["ingest", "no-such-file.ndjson"], id="ingest-missing-path"),
        pytest.param(["ingest", "ndjson/crlf.ndjson", "--source", "two words"], id="ingest-bad-source"),
        pytest.param(["load-claims", "ndjson/crlf.ndjson", "--columns", "extracts/claims-excel-good.csv"],
                     id="claims-columns-for-ndjson"),
    ],
)  # fmt: skip
def test_usage_errors_exit_2_and_change_nothing(loaded: Store, args: list[str]) -> None:
    before = snapshot(loaded)
    args = [str(CORPUS / a) if a.endswith((".ndjson", ".csv")) else a for a in args]
    result = run(*args, "--database", url_of(loaded))
    assert result.exit_code == 2, result.output
    assert "error:" in result.stderr
    assert snapshot(loaded) == before


# -- value-set workbooks (built here) -------------------------------------------------------------

HEADER = ["Value Set Name", "Code System", "Code", "Description"]


def _merged(path: Path) -> Path:
    """The value-set name written once and merged down over its rows, as people format workbooks."""
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "Value sets"
    sheet.append(HEADER)
    sheet.append(["SE Intervention Procedures", "CPT", "90834", "Psychotherapy, 45 minutes"])
    sheet.append([None, "CPT", "90791", "Diagnostic evaluation"])
    sheet.append([None, "HCPCS", "H0004", "BH counseling"])
    sheet.merge_cells("A2:A4")
    sheet.append(["SE Issue Diagnoses", "ICD-10-CM", "F43.*", "Adjustment disorders"])
    book.save(path)
    return path


def _cover_only(path: Path) -> Path:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "Read me"
    sheet.append(["Official SE value sets: see the next sheet"])
    book.save(path)
    return path


@SQLITE_ONLY  # mappings import writes files; the store is only read for the impact evaluation
@pytest.mark.parametrize(
    ("build", "extra", "where", "message", "code"),
    [
        pytest.param(_merged, [], "[Value sets]:3", "missing value set in column 'Value Set Name' (A)", 3,
                     id="merged-cells"),
        pytest.param(_merged, ["--sheet", "Codes"], "", "unknown sheet 'Codes'; the workbook has sheets: 'Value sets'",
                     3, id="named-sheet-missing"),
        pytest.param(_cover_only, [], "", "missing column code ('Code' or 'Code Value'): no sheet has a header row", 3,
                     id="no-value-set-sheet"),
    ],
)  # fmt: skip
def test_bad_workbooks_change_nothing(
    store: Store,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    build: object,
    extra: list[str],
    where: str,
    message: str,
    code: int,
) -> None:
    site_mappings, site_conformance = tmp_path / "mappings", tmp_path / "conformance"
    shutil.copytree(ROOT / "mappings", site_mappings)
    shutil.copytree(ROOT / "conformance", site_conformance)
    monkeypatch.setenv("FHIR_ADAPTER_MAPPINGS_DIR", str(site_mappings))
    monkeypatch.setenv("FHIR_ADAPTER_CONFORMANCE_DIR", str(site_conformance))
    site = [site_mappings, site_conformance]
    files_before = {p: p.read_bytes() for folder in site for p in sorted(folder.rglob("*")) if p.is_file()}
    store_before = snapshot(store)
    assert callable(build)
    workbook = build(tmp_path / "SE-value-sets-2025-01-15.xlsx")
    result = run("mappings", "import", str(workbook), "--measure", MEASURE, "--year", "2025", *extra,
                 "--database", url_of(store))  # fmt: skip
    assert result.exit_code == code, result.output
    assert f"error: {workbook}{where}: {message}" in result.stderr.replace("\n", " "), result.stderr
    files_after = {p: p.read_bytes() for folder in site for p in sorted(folder.rglob("*")) if p.is_file()}
    assert files_after == files_before
    assert snapshot(store) == store_before
