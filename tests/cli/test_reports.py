"""``fhir-adapter report …``, ``evaluate --persist`` and ``load-complexity`` as a user meets them, on
SQLite and PostgreSQL: Excel-friendly CSV, JSON with every table, Parquet, exit codes and
file:line errors."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from sqlalchemy import text

from fhir_adapter.cli import main
from fhir_adapter.fhir.dates import from_micros
from fhir_adapter.report.capacity import NONE_COLUMNS
from fhir_adapter.report.referrals import LIST_COLUMNS
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
SNOMED = "http://snomed.info/sct"
COHORT = [
    c.patient("a", "2022-02-02", address=[{"district": "Marion"}]), c.full_year("a"),
    c.eob("e1", "a", "2025-03-10"),
    {"resourceType": "ServiceRequest", "id": "sr1", "status": "active", "intent": "order",
     "code": {"coding": [{"system": SNOMED, "code": "306226009"}]}, "subject": {"reference": "Patient/a"},
     "authoredOn": "2025-03-01"},
    c.patient("b", "2021-01-01"), c.full_year("b", cco="IHN"),
    c.patient("nobirth", None),
]  # fmt: skip


def run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def db(store: Store, tmp_path: Path) -> str:
    url = store.engine.url.render_as_string(hide_password=False)
    data = tmp_path / "data.ndjson"
    data.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in COHORT) + b"{broken\n")
    assert run("ingest", str(data), "--source", "feed", "--database", url, "--quiet").exit_code == 3
    return url


def _csv(data: bytes) -> list[dict[str, str]]:
    assert data.startswith(b"\xef\xbb\xbf") and b"\r\n" in data
    return list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))


def test_referrals_csv_and_json(db: str) -> None:
    result = run("report", "referrals", *PERIOD, "--database", db)
    assert result.exit_code == 0, result.output
    rows = _csv(result.stdout_bytes)
    assert list(rows[0]) == list(LIST_COLUMNS)
    assert [(r["referral"], r["status"], r["closing_service"], r["cco"]) for r in rows] == [
        ("ServiceRequest/sr1", "closed", "ExplanationOfBenefit/e1", "ALLCARE"),
    ]
    counts = _csv(run("report", "referrals", *PERIOD, "--table", "counts", "--database", db).stdout_bytes)
    assert {(r["cco"], r["clinic"], r["closed"]) for r in counts} >= {("all", "all", "1")}
    doc = json.loads(run("report", "referrals", *PERIOD, "--format", "json", "--database", db).stdout)
    assert set(doc["tables"]) == {"referrals", "counts"} and doc["meta"]["window_days"] == 90


def test_parquet_file(db: str, tmp_path: Path) -> None:
    out = tmp_path / "out" / "capacity.parquet"
    result = run("report", "capacity", *PERIOD, "--format", "parquet", "--table", "counties-without", "--out", str(out),
                 "--database", db)  # fmt: skip
    assert result.exit_code == 0, result.output
    table = pq.read_table(out)
    assert table.column_names == list(NONE_COLUMNS)
    counties = table.column("county").to_pylist()
    assert len([x for x in counties if x]) >= 35 and "Marion" not in counties[:36]
    assert not (tmp_path / "out" / "capacity.parquet.tmp").exists()


def test_evaluate_persist_then_trend_reads_it(db: str) -> None:
    result = run("evaluate", *PERIOD, "--persist", "--database", db)
    assert result.exit_code == 0 and "persisted as run run-" in result.stderr
    store = Store.open(db, tz=ZoneInfo("America/Los_Angeles"), member_system=c.MEMBER)
    try:
        with store.read() as conn:
            cut_us = conn.execute(text("SELECT DISTINCT data_cut_us FROM v_child_results")).scalar_one()
            assert conn.execute(text("SELECT COUNT(*) FROM v_child_results")).scalar_one() == 2 * 3
    finally:
        store.close()
    cut = from_micros(int(cut_us)).isoformat()
    trend = json.loads(
        run("report", "trend", *PERIOD, "--format", "json", "--as-of", cut, "--database", db).stdout
    )
    origins = {(r["period"], r["origin"]) for r in trend["tables"]["rates"]}
    assert ("12m-2025-12-31", "persisted") in origins and ("2025Q1", "computed") in origins
    assert {r["cco"] for r in trend["tables"]["targets"]} == {"ALLCARE", "IHN", "all"}
    assert run("evaluate", *PERIOD, "--persist", "--subject", "Patient/a", "--database", db).exit_code == 2


def test_data_quality_tables(db: str) -> None:
    rejections = _csv(
        run("report", "data-quality", *PERIOD, "--table", "rejections", "--database", db).stdout_bytes
    )
    assert [(r["source"], r["count"]) for r in rejections] == [("feed", "1")]
    sources = _csv(run("report", "data-quality", *PERIOD, "--database", db).stdout_bytes)
    assert [(r["source"], r["patients"], r["rejected"]) for r in sources] == [("feed", "3", "1")]
    evaluation = _csv(
        run("report", "data-quality", *PERIOD, "--table", "evaluation", "--database", db).stdout_bytes
    )
    assert {
        "check": "outside-initial-population",
        "group": "",
        "detail": "no-birth-date",
        "count": "1",
    } in evaluation


def test_load_complexity_and_report(db: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("MEMBER_ID,MEDICAL_COMPLEXITY,SOCIAL_COMPLEXITY\nM-b,high,low\n,high,low\n")
    result = run("load-complexity", str(bad), "--database", db)
    assert result.exit_code == 3 and f"{bad}:3: missing member id" in result.stderr
    good = tmp_path / "good.csv"
    good.write_text("MEMBER_ID,MEDICAL_COMPLEXITY,SOCIAL_COMPLEXITY\nM-b,high,low\n")
    result = run("load-complexity", str(good), "--database", db)
    assert result.exit_code == 0 and "3 created" in result.stderr
    gaps = _csv(run("report", "complexity", *PERIOD, "--table", "gaps", "--database", db).stdout_bytes)
    assert [(r["patient"], r["medical_complexity"], r["social_complexity"]) for r in gaps] == [
        ("Patient/b", "high", "low"),
    ]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        pytest.param(["report", "referrals", *PERIOD, "--cco", "NOPE"], 2, "unknown CCO 'NOPE'", id="unknown-cco"),
        pytest.param(["report", "trend", *PERIOD, "--table", "nope"], 2, "no table 'nope'", id="unknown-table"),
        pytest.param(["report", "capacity", *PERIOD, "--format", "json", "--table", "summary"], 2,
                     "--table applies to csv and parquet", id="table-with-json"),
        pytest.param(["report", "trend", "--measure", "nope", "--period-start", "2025-01-01", "--period-end",
                      "2025-12-31"], 3, "no mappings for measure 'nope'", id="unknown-measure"),
        pytest.param(["report", "referrals", *PERIOD[:3], "2026-01-01", *PERIOD[4:]], 2,
                     "--period-start is after --period-end", id="reversed-period"),
    ],
)  # fmt: skip
def test_usage_errors(db: str, args: list[str], code: int, message: str) -> None:
    result = run(*args, "--database", db)
    assert result.exit_code == code and message in result.stderr
