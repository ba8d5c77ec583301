"""The command line as a user meets it: exit codes, file:line errors, stdout data, stderr logs."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from fhir_adapter.cli import main
from tests import cohorts as c

GOOD = [c.patient("c", "2022-06-15"), c.full_year("c"), c.eob("e", "c", "2025-03-01")]


def _ndjson(path: Path, lines: list[Any]) -> Path:
    path.write_bytes(b"".join((x if isinstance(x, bytes) else orjson.dumps(x)) + b"\n" for x in lines))
    return path


def run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}"


def test_ingest_reports_bad_lines_and_keeps_good_ones(tmp_path: Path, db: str) -> None:
    path = _ndjson(
        tmp_path / "data.ndjson", [GOOD[0], b"{not json", {"resourceType": "Nope", "id": "x"}, *GOOD[1:]]
    )
    first = run("ingest", str(path), "--database", db, "--quiet")
    assert first.exit_code == 3
    assert f"{path}:2: not JSON" in first.stderr
    assert f"{path}:3: unknown resourceType 'Nope'" in first.stderr
    assert "3 created" in first.stderr
    again = run("ingest", str(path), "--database", db, "--quiet")
    assert "0 created, 0 updated, 3 unchanged" in again.stderr


def test_ingest_gzip_folder_and_bundle(tmp_path: Path, db: str) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    with gzip.open(folder / "Patient.ndjson.gz", "wb") as fh:
        fh.write(orjson.dumps(GOOD[0]) + b"\n")
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:6f1c1a52-0d4e-4a38-9a5a-2f0c3b1d9e11",
             "resource": {**c.coverage("x", "c", "2024-01-01", None), "id": None} | {"beneficiary": {"reference": "Patient/c"}},
             "request": {"method": "POST", "url": "Coverage"}},
            {"fullUrl": "urn:uuid:0b6d3c8e-8f0b-4a52-9a61-0d2c1e7f3a21",
             "resource": {k: v for k, v in c.eob("e", "c", "2025-03-01").items() if k != "id"},
             "request": {"method": "POST", "url": "ExplanationOfBenefit"}},
        ],
    }  # fmt: skip
    del bundle["entry"][0]["resource"]["id"]  # type: ignore[index]
    (folder / "bundle.json").write_bytes(orjson.dumps(bundle))
    result = run("ingest", str(folder), "--database", db, "--quiet")
    assert result.exit_code == 0, result.stderr
    assert "3 created" in result.stderr
    out = run("evaluate", "--measure", "oregon-se-issue-focused", "--period-start", "2025-01-01",
              "--period-end", "2025-12-31", "--database", db)  # fmt: skip
    report = json.loads(out.stdout)
    counts = {p["id"]: p["count"] for p in report["group"][0]["population"]}
    assert counts["all-enrolled-numerator"] == 1


def test_evaluate_summary_individual_and_gaps(tmp_path: Path, db: str) -> None:
    extra = [c.patient("g", "2021-02-02"), c.full_year("g")]
    run("ingest", str(_ndjson(tmp_path / "d.ndjson", [*GOOD, *extra])), "--database", db, "--quiet")
    period = [
        "--measure",
        "oregon-se-issue-focused",
        "--period-start",
        "2025-01-01",
        "--period-end",
        "2025-12-31",
    ]
    summary = json.loads(run("evaluate", *period, "--database", db).stdout)
    assert summary["type"] == "summary"
    assert summary["group"][0]["measureScore"]["value"] == 0.5
    one = json.loads(
        run(
            "evaluate", *period, "--report-type", "individual", "--subject", "Patient/c", "--database", db
        ).stdout
    )
    assert one["type"] == "individual"
    assert one["subject"]["reference"] == "Patient/c"
    refs = {e["reference"] for e in one["evaluatedResource"]}
    assert refs == {"Patient/c", "Coverage/cov-c-ALLCARE", "ExplanationOfBenefit/e"}
    gaps = run("gaps", *period, "--database", db)
    lines = gaps.stdout.lstrip("\ufeff").splitlines()
    assert lines[0].startswith("member_id,patient")
    assert len(lines) == 2 and "Patient/g" in lines[1]
    out_file = tmp_path / "out" / "s.json"
    assert run("evaluate", *period, "--database", db, "--out", str(out_file)).exit_code == 0
    assert json.loads(out_file.read_text())["type"] == "summary"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        pytest.param(["--period-start", "2025-13-01", "--period-end", "2025-12-31"], 2, "is not a date", id="bad-date"),
        pytest.param(["--period-start", "2025-12-31", "--period-end", "2025-01-01"], 2, "after", id="start-after-end"),
        pytest.param(["--period-start", "2025-01-01", "--period-end", "2025-12-31", "--subject", "Patient/zz"], 3,
                     "no Patient/zz", id="unknown-subject"),
        pytest.param(["--period-start", "2025-01-01", "--period-end", "2025-12-31", "--subject", "Encounter/1"], 2,
                     "Patient/<id>", id="subject-not-patient"),
        pytest.param(["--period-start", "2025-01-01", "--period-end", "2025-12-31", "--as-of", "yesterday"], 2,
                     "--as-of", id="bad-as-of"),
    ],
)  # fmt: skip
def test_evaluate_usage_errors(db: str, args: list[str], code: int, message: str) -> None:
    result = run("evaluate", "--measure", "oregon-se-issue-focused", *args, "--database", db)
    assert result.exit_code == code
    assert message in result.stderr


def test_unknown_measure(db: str) -> None:
    result = run("evaluate", "--measure", "nope", "--period-start", "2025-01-01", "--period-end", "2025-12-31",
                 "--database", db)  # fmt: skip
    assert result.exit_code == 3
    assert "no mappings for measure 'nope'" in result.stderr


def test_ingest_missing_path(db: str, tmp_path: Path) -> None:
    result = run("ingest", str(tmp_path / "missing.ndjson"), "--database", db)
    assert result.exit_code == 2
    assert "no such file" in result.stderr


def test_unsupported_database(tmp_path: Path) -> None:
    result = run("ingest", str(tmp_path), "--database", "mysql://x/y")
    assert result.exit_code == 2
    assert "unsupported database" in result.stderr


def test_mappings_check_ok_and_broken(tmp_path: Path) -> None:
    ok = run("mappings", "check")
    assert ok.exit_code == 0
    assert "oregon-se-issue-focused" in ok.stdout
    broken = tmp_path / "mappings"
    src = Path(__file__).resolve().parent.parent / "mappings"
    import shutil

    shutil.copytree(src, broken)
    toml = broken / "oregon-se-issue-focused" / "2025" / "measure.toml"
    toml.write_text(toml.read_text().replace("[age]", "[age]\nsurprise = 1", 1))
    result = run("mappings", "check", "--dir", str(broken))
    assert result.exit_code == 3
    assert "measure.toml:" in result.stderr and "surprise" in result.stderr
    assert "[age]" in result.stderr  # bracketed TOML tables survive the console markup
