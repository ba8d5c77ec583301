"""conformance/ is generated from mappings/ and must not drift (run `fhir-adapter conformance build`)."""

from __future__ import annotations

from pathlib import Path

from fhir_adapter.measure.spec import Mappings
from fhir_adapter.report.conformance import render_conformance
from fhir_adapter.settings import DEFAULT_CANONICAL_BASE

CONFORMANCE = Path(__file__).resolve().parents[2] / "conformance"


def test_conformance_folder_matches_mappings(mappings: Mappings) -> None:
    expected = render_conformance(mappings, DEFAULT_CANONICAL_BASE)
    on_disk = {p.name: p.read_bytes() for p in CONFORMANCE.glob("*.json")}
    assert sorted(on_disk) == sorted(expected), "stale or missing files: run `fhir-adapter conformance build`"
    drifted = [name for name in expected if on_disk[name] != expected[name]]
    assert drifted == [], f"{drifted} differ from mappings/: run `fhir-adapter conformance build`"


def test_prefix_rows_get_one_include_each(mappings: Mappings) -> None:
    """R4 ValueSet.compose.include.filter: several filters in one include must ALL hold."""
    rendered = render_conformance(mappings, DEFAULT_CANONICAL_BASE)
    import json

    vs = json.loads(rendered["ValueSet-oregon-se-issue-focused-2025-se-issue-diagnoses.json"])
    includes = vs["compose"]["include"]
    assert all(len(inc.get("filter", [])) <= 1 for inc in includes)
    assert sum(1 for inc in includes if inc.get("filter")) == 24
