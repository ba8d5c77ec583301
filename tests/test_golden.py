"""Golden cohorts: NDJSON in → expected MeasureReport JSON out, compared parsed, on both engines.

Inputs are written by ``tests/golden/make_inputs.py``; each case's README.md derives the
expected counts by hand. Set ``FHIR_ADAPTER_REGEN_GOLDEN=1`` to rewrite the expected files
after a reviewed change (then read the diff).
"""

from __future__ import annotations

import os
import tomllib
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_adapter.ingest.runner import ingest_paths
from fhir_adapter.measure.spec import Mappings
from fhir_adapter.report.measurereport import ReportContext
from fhir_adapter.settings import DEFAULT_CANONICAL_BASE, DEFAULT_MEMBER_ID_SYSTEM
from fhir_adapter.store.db import Store
from fhir_adapter.store.evaluate import evaluate
from fhir_adapter.workflow import build_report
from tests.measure.test_boundaries import FAR

GOLDEN = Path(__file__).resolve().parent / "golden"
CASES = sorted(p for p in GOLDEN.iterdir() if (p / "case.toml").is_file())
T0 = datetime(2026, 2, 1, tzinfo=UTC)
CTX = ReportContext(DEFAULT_CANONICAL_BASE, "golden", T0, DEFAULT_MEMBER_ID_SYSTEM)


def _normalise(value: Any) -> Any:
    """Drop what legitimately changes with the mappings files (their hash)."""
    if isinstance(value, dict):
        if str(value.get("url", "")).endswith("/report-mappings-hash"):
            return {"url": value["url"]}
        return {k: _normalise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    return value


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_golden(case: Path, store: Store, mappings: Mappings) -> None:
    for folder in sorted((case / "input").iterdir()):
        ingest_paths(store, [folder], folder.name, batch_size=1000, clock=lambda: T0)
    spec_runs = tomllib.loads((case / "case.toml").read_text())["run"]
    for run in spec_runs:
        end = date.fromisoformat(run["period_end"])
        spec = mappings.measure_for(run["measure"], end)
        ev = evaluate(store, mappings, spec, date.fromisoformat(run["period_start"]), end, FAR, run["sources"],
                      all_evidence=run["report_type"] != "summary")  # fmt: skip
        produced = _normalise(build_report(ev, CTX, run["report_type"]))
        expected_path = case / run["expected"]
        if os.environ.get("FHIR_ADAPTER_REGEN_GOLDEN") == "1":
            expected_path.write_bytes(
                orjson.dumps(produced, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
            )
        expected = orjson.loads(expected_path.read_bytes())
        assert produced == expected, f"{case.name}/{run['expected']} differs"
