"""`fhir-adapter demo` end to end on a small cohort: reports written, table printed, checks pass."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

from rich.console import Console

from fhir_adapter.demo import run_demo
from fhir_adapter.mappings import load_mappings
from fhir_adapter.report.checks import check_measure_report
from fhir_adapter.report.conformance import build_measure
from fhir_adapter.settings import Settings


def test_demo_writes_reports_that_pass_the_checks(settings: Settings, tmp_path: Path) -> None:
    console = Console(record=True, width=160)
    out = tmp_path / "demo-output"
    run_demo(settings, out, patients=150, seed=3, console=console, progress=console, today=date(2026, 11, 23))
    text = console.export_text()
    assert "all CCOs" in text and "not OHA's official specification" in text
    mappings = load_mappings(settings.mappings_dir)
    for name, measure_id, year in (
        ("issue-focused-2025-summary.json", "oregon-se-issue-focused", 2025),
        ("reach-2024-summary.json", "oregon-se-reach", 2024),
    ):
        report = json.loads((out / name).read_text())
        measure = build_measure(mappings.measure_for(measure_id, date(year, 12, 31)), settings.canonical_base)
        assert check_measure_report(report, measure) == [], name
    quality = json.loads((out / "data-quality.json").read_text())
    assert quality["issue-focused-all"]["children"] > 100
    assert (out / "issue-focused-2025-gaps.csv").read_bytes().startswith(b"\xef\xbb\xbfmember_id")
