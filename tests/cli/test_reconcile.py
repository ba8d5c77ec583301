"""``fhir-adapter rates`` and ``fhir-adapter reconcile`` as a user meets them: tables on stdout,
files in the output folder, exit 3 with file:line for a bad OHA file and nothing written."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from fhir_adapter.cli import main
from fhir_adapter.mappings import load_mappings
from fhir_adapter.report.checks import check_measure_report
from fhir_adapter.report.conformance import build_measure
from fhir_adapter.settings import DEFAULT_CANONICAL_BASE
from tests import cohorts as c
from tests.conftest import ROOT

PERIOD = [
    "--measure",
    "oregon-se-issue-focused",
    "--period-start",
    "2025-01-01",
    "--period-end",
    "2025-12-31",
]
CLAIMS = [
    c.patient("a", "2022-06-15"), c.full_year("a"), c.eob("e1", "a", "2025-03-01"),
    c.patient("b", "2021-04-01"), c.full_year("b"),
    c.patient("i", "2023-01-01"), c.full_year("i", cco="IHN"),
]  # fmt: skip
EHR = [c.patient("b", "2021-04-01"), c.encounter("v1", "b", "2025-09-09", reason="F43.22")]
OHA_HEADER = "MEMBER_ID,NUMERATOR,DENOMINATOR,CCO\n"


def run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _ndjson(path: Path, resources: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in resources))
    return path


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    for name, resources in (("claims-feed", CLAIMS), ("ehr-a", EHR)):
        result = run("ingest", str(_ndjson(tmp_path / f"{name}.ndjson", resources)), "--source", name,
                     "--database", url, "--quiet")  # fmt: skip
        assert result.exit_code == 0, result.stderr
    return url


def test_rates_table_and_files(tmp_path: Path, db: str) -> None:
    out = tmp_path / "rates"
    result = run("rates", *PERIOD, "--out-dir", str(out), "--database", db)
    assert result.exit_code == 0, result.stderr
    table = result.stdout
    assert "claims rate" in table and "all rate" in table
    allcare = next(line for line in table.splitlines() if "all-enrolled" in line and "ALLCARE" in line)
    assert "50.0%" in allcare and "100.0%" in allcare and "+50.0 pp" in allcare
    assert any("statewide" in line and "33.3%" in line and "66.7%" in line for line in table.splitlines())
    assert sorted(p.name for p in out.iterdir()) == [
        "ehr-only.csv", "rates.csv", "summary-all.json", "summary-both.json", "summary-claims.json",
    ]  # fmt: skip
    ehr = (out / "ehr-only.csv").read_bytes()
    assert (
        ehr.startswith(b"\xef\xbb\xbf")
        and b"M-b,Patient/b,claims-feed,ALLCARE,all-enrolled,Encounter/v1" in ehr
    )
    bundle = json.loads((out / "summary-both.json").read_text())
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "collection"
    mappings = load_mappings(ROOT / "mappings")
    measure = build_measure(
        mappings.measure_for("oregon-se-issue-focused", date(2025, 12, 31)),
        DEFAULT_CANONICAL_BASE, ccos=mappings.ccos,
    )  # fmt: skip
    reports = [e["resource"] for e in bundle["entry"]]
    assert reports == [json.loads((out / f"summary-{m}.json").read_text()) for m in ("claims", "all")]
    for report in reports:
        assert check_measure_report(report, measure) == []


RATE_USAGE = [
    pytest.param(["--cco", "NOPE"], 2, "unknown CCO 'NOPE'", id="unknown-cco"),
    pytest.param(["--measure", "nope"], 3, "no mappings for measure 'nope'", id="unknown-measure"),
    pytest.param(
        ["--period-start", "2026-01-01"], 2, "--period-start is after --period-end", id="period-reversed"
    ),
]


@pytest.mark.parametrize(("extra", "code", "message"), RATE_USAGE)
def test_rates_usage_errors(tmp_path: Path, db: str, extra: list[str], code: int, message: str) -> None:
    result = run("rates", *PERIOD, *extra, "--out-dir", str(tmp_path / "x"), "--database", db)
    assert result.exit_code == code, result.stderr
    assert message in result.stderr
    assert not (tmp_path / "x").exists()


def test_rates_for_one_cco(db: str) -> None:
    result = run("rates", *PERIOD, "--cco", "IHN", "--database", db)
    assert result.exit_code == 0, result.stderr
    assert "IHN" in result.stdout and "statewide" not in result.stdout and "ALLCARE" not in result.stdout


def _oha(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "oha.csv"
    path.write_text(body, encoding="utf-8")
    return path


def test_reconcile_writes_outputs_and_prints_agreement(
    tmp_path: Path, db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the default --out-dir is ./reconcile-output
    oha = _oha(tmp_path, OHA_HEADER + "M-a,Y,Y,ALLCARE\nM-b,Y,Y,ALLCARE\nM-i,N,Y,IHN\n")
    result = run("reconcile", "--oha-file", str(oha), *PERIOD, "--database", db)
    assert result.exit_code == 0, result.stderr
    den = next(line for line in result.stdout.splitlines() if "denominator" in line)
    num = next(line for line in result.stdout.splitlines() if "numerator" in line)
    assert "100.0%" in den and "50.0%" in num
    out = tmp_path / "reconcile-output"
    assert sorted(p.name for p in out.iterdir()) == [
        "differences.csv", "dispute-packet.csv", "summary.json", "summary.md",
    ]  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert [p["agreementRate"] for p in summary["populations"]] == [1.0, 0.5]
    differences = (out / "differences.csv").read_text(encoding="utf-8-sig")
    # the EHR-only service of child b does not count in claims mode: OHA's claim is missing to us
    assert "M-b,Patient/b,ALLCARE,numerator,Y,N,only-oha,no-claim" in differences
    assert "1 differences, 0 dispute rows" in result.stderr


def test_reconcile_for_one_cco_with_own_map(tmp_path: Path, db: str) -> None:
    cmap = tmp_path / "map.toml"
    cmap.write_text(
        '[columns]\nmember_id = "ID"\nnumerator = "SE"\n[values.numerator]\n"1" = "true"\n"0" = "false"\n'
        "[options]\nrun_out_days = 0\n"
    )
    oha = _oha(tmp_path, "ID,SE\nM-i,1\n")
    out = tmp_path / "out"
    result = run("reconcile", "--oha-file", str(oha), *PERIOD, "--cco", "IHN", "--columns", str(cmap),
                 "--out-dir", str(out), "--database", db)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cco"] == "IHN" and summary["dataLag"]["runOutDays"] == 0
    assert [(p["both"], p["onlyOha"], p["onlyUs"]) for p in summary["populations"]] == [(1, 0, 0), (0, 1, 0)]


BAD = [
    pytest.param(OHA_HEADER + "M-a,Y,Y,ALLCARE\nM-b,perhaps,Y,ALLCARE\n", None, [":3: numerator flag 'perhaps'"],
                 id="bad-flag"),
    pytest.param("MEMBER_ID,DENOMINATOR,CCO\nM-a,Y,ALLCARE\n", None, [":1: header lacks columns numerator"],
                 id="missing-column"),
    pytest.param(OHA_HEADER + "M-a,Y,Y,ALLCARE\nM-b,N,Y,ALLCARE\nM-a,N,Y,ALLCARE\n", None,
                 [":4: duplicate member id 'M-a': also at ", "oha.csv:2"], id="duplicate-member-names-both-lines"),
    pytest.param(OHA_HEADER + "M-a,Y,Y,ALLCARE\n", '[columns]\nnumerator = "NUMERATOR"\n',
                 ["map.toml:1: [columns] lacks required fields ['member_id']"], id="bad-column-map"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "cmap", "messages"), BAD)
def test_bad_oha_file_exits_3_and_writes_nothing(
    tmp_path: Path, db: str, body: str, cmap: str | None, messages: list[str]
) -> None:
    extra: list[str] = []
    if cmap is not None:
        (tmp_path / "map.toml").write_text(cmap)
        extra = ["--columns", str(tmp_path / "map.toml")]
    out = tmp_path / "out"
    result = run("reconcile", "--oha-file", str(_oha(tmp_path, body)), *PERIOD, *extra, "--out-dir", str(out),
                 "--database", db)  # fmt: skip
    assert result.exit_code == 3, result.stderr
    for message in messages:
        assert message in result.stderr
    assert not out.exists()


def test_reconcile_unknown_cco_is_a_usage_error(tmp_path: Path, db: str) -> None:
    oha = _oha(tmp_path, OHA_HEADER)
    result = run("reconcile", "--oha-file", str(oha), *PERIOD, "--cco", "NOPE", "--out-dir", str(tmp_path / "o"),
                 "--database", db)  # fmt: skip
    assert result.exit_code == 2 and "unknown CCO 'NOPE'" in result.stderr
    assert not (tmp_path / "o").exists()


def test_existing_outputs_are_replaced_whole(tmp_path: Path, db: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.md").write_text("old")
    result = run("reconcile", "--oha-file", str(_oha(tmp_path, OHA_HEADER)), *PERIOD, "--out-dir", str(out),
                 "--database", db)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert (out / "summary.md").read_text().startswith("# Reconciliation with OHA")
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
