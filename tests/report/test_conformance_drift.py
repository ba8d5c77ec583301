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
