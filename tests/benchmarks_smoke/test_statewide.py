"""Smoke test of benchmarks/statewide.py: a 50-child run on SQLite records a complete, consistent
JSON line (issue #3 §10's benchmark must stay runnable). Its speed is measured in benchmarks/,
never asserted here (the subprocess timeout only stops a hung run)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from benchmarks.statewide import EVALUATIONS, machine_info
from benchmarks.table import markdown

ROOT = Path(__file__).resolve().parents[2]
PATIENTS = 50


@dataclass(frozen=True)
class Run:
    seconds: float
    record: dict[str, Any]
    lines: list[dict[str, Any]]
    work: Path


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    work = tmp_path_factory.mktemp("statewide")
    results = work / "results.jsonl"
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable, "-m", "benchmarks.statewide", "--patients", str(PATIENTS), "--engine", "sqlite",
            "--work", str(work / "run"), "--results", str(results),
        ],
        cwd=ROOT, capture_output=True, check=False, timeout=120,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    assert done.returncode == 0, done.stderr.decode()
    lines = [orjson.loads(line) for line in results.read_bytes().splitlines()]
    return Run(seconds, orjson.loads(done.stdout), lines, work / "run")


CHECKS: list[Any] = [
    pytest.param(lambda r: r.lines == [r.record], id="one-json-line-appended-equal-to-stdout"),
    pytest.param(
        lambda r: r.record["patients"] == PATIENTS and r.record["engine"] == "sqlite", id="run-identity"
    ),
    pytest.param(
        lambda r: r.record["ingest"]["resources"] == r.record["resources"] > 0, id="every-resource-read"
    ),
    pytest.param(
        lambda r: all(
            p["rejected"] == 0 and p["created"] == p["expected"]
            for p in r.record["ingest"]["per_source"].values()
        ),
        id="every-resource-created",
    ),
    pytest.param(
        lambda r: list(r.record["evaluations"]) == [e[0] for e in EVALUATIONS], id="three-evaluations"
    ),
    pytest.param(
        lambda r: all(e["children"] > 0 for e in r.record["evaluations"].values()), id="children-evaluated"
    ),
    pytest.param(
        lambda r: abs(sum(r.record["phases"].values()) - r.record["total_s"]) < 0.01,
        id="total-is-sum-of-phases",
    ),
    pytest.param(
        lambda r: r.record["synthesize_s"] is not None and "synthesize" not in r.record["phases"],
        id="synthesis-timed-outside-the-target",
    ),
    pytest.param(lambda r: 10 < r.record["peak_rss_mb"] < 4096, id="peak-rss-plausible"),
    pytest.param(lambda r: r.record["git"]["commit"] != "unknown", id="commit-recorded"),
    pytest.param(lambda r: not (r.work / "sqlite" / "store.db").exists(), id="store-removed-without-keep"),
    pytest.param(lambda r: not (r.work / "data").exists(), id="synthetic-data-removed"),
    pytest.param(lambda r: f"| {PATIENTS} |" in markdown(r.lines), id="table-renders-the-run"),
]


@pytest.mark.parametrize("check", CHECKS)
def test_statewide_run(run: Run, check: Callable[[Run], bool]) -> None:
    assert check(run)


@pytest.mark.parametrize(
    ("cpuinfo", "meminfo", "cpu", "memory_gb"),
    [
        pytest.param(
            "processor\t: 0\nmodel name\t: AMD EPYC 7B13\n",
            "MemTotal:       24684092 kB\n",
            "AMD EPYC 7B13",
            23.5,
            id="linux-proc-files",
        ),
        pytest.param("processor\t: 0\n", "", None, 0.0, id="no-model-no-memory"),
    ],
)
def test_machine_info(cpuinfo: str, meminfo: str, cpu: str | None, memory_gb: float) -> None:
    info = machine_info(cpuinfo, meminfo)
    assert info["memory_gb"] == memory_gb
    if cpu is not None:
        assert info["cpu"] == cpu
    assert info["nproc"] >= 1
