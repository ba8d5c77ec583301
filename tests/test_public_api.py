"""The public library API: ``__all__`` is sorted and everything in it imports."""

from __future__ import annotations

import fhir_adapter


def test_all_is_sorted_and_importable() -> None:
    assert fhir_adapter.__all__ == sorted(fhir_adapter.__all__)
    missing = [name for name in fhir_adapter.__all__ if not hasattr(fhir_adapter, name)]
    assert missing == []


def test_errors_know_their_exit_codes() -> None:
    assert fhir_adapter.UsageError("x").exit_code == 2
    assert fhir_adapter.MappingsError("x", location="a.toml:3").exit_code == 3
    assert str(fhir_adapter.MappingsError("bad", location="a.toml:3")) == "a.toml:3: bad"
