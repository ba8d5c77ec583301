"""``fhir-adapter export-flat`` as a user runs it, on SQLite and PostgreSQL: the three tables as
Excel-friendly CSV or typed Parquet, written atomically, and usage errors before any work."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from fhir_adapter.cli import main
from fhir_adapter.report.export import RESULT_COLUMNS
from fhir_adapter.store.db import Store
from tests import cohorts as c

PERIOD = [
    "--measure",
    "oregon-se-issue-focused",
    "--period-start",
    "2025-01-01",
    "--period-end",
    "2025-12-31",
]
COHORT = [
    c.patient("a", "2022-02-02"), c.full_year("a"), c.eob("e1", "a", "2025-03-10"),
    c.patient("b", "2021-01-01"), c.full_year("b", cco="IHN"),
]  # fmt: skip


def run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def db(store: Store, tmp_path: Path) -> str:
    url = store.engine.url.render_as_string(hide_password=False)
    data = tmp_path / "data.ndjson"
    data.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in COHORT))
    assert run("ingest", str(data), "--source", "feed", "--database", url, "--quiet").exit_code == 0
    return url


@pytest.mark.parametrize(
    ("table", "rows", "first_column"),
    [
        pytest.param("results", 4, "measure", id="results"),
        pytest.param("gaps", 1, "member_id", id="gaps"),
        pytest.param("summary", 6, "measure", id="summary"),
    ],
)
def test_csv_tables(db: str, tmp_path: Path, table: str, rows: int, first_column: str) -> None:
    out = tmp_path / "out" / f"{table}.csv"
    result = run("export-flat", *PERIOD, "--table", table, "--out", str(out), "--database", db)
    assert result.exit_code == 0, result.output
    data = out.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf") and b"\r\n" in data
    parsed = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    assert len(parsed) == rows
    assert next(iter(parsed[0])) == first_column
    assert not list(out.parent.glob("*.tmp"))


def test_parquet_results_and_stdout(db: str, tmp_path: Path) -> None:
    out = tmp_path / "results.parquet"
    result = run(
        "export-flat", *PERIOD, "--format", "parquet", "--cco", "IHN", "--out", str(out), "--database", db
    )
    assert result.exit_code == 0, result.output
    table = pq.read_table(out)
    assert table.schema.names == list(RESULT_COLUMNS)
    assert table.schema.field("initial_population").type == pa.bool_()
    assert set(table.column("patient").to_pylist()) == {"Patient/b"}
    stdout = run("export-flat", *PERIOD, "--table", "gaps", "--database", db)
    assert stdout.exit_code == 0
    assert stdout.stdout_bytes.startswith(b"\xef\xbb\xbf") and b"Patient/b" in stdout.stdout_bytes


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        pytest.param(["--cco", "NOPE"], 2, "not in the CCO list", id="unknown-cco"),
        pytest.param(["--table", "nonsense"], 2, "nonsense", id="unknown-table"),
        pytest.param(["--period-start", "2025-13-01"], 2, "not a date", id="bad-date"),
    ],
)
def test_usage_errors(db: str, tmp_path: Path, args: list[str], code: int, message: str) -> None:
    out = tmp_path / "never.csv"
    result = CliRunner().invoke(main, ["export-flat", *PERIOD, *args, "--out", str(out), "--database", db])
    assert result.exit_code == code
    assert message in result.output
    assert not out.exists()
