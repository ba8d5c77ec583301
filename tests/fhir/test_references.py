"""Reference parsing (FHIR R4 §2.3.0): relative, absolute, versioned, contained, urn:uuid."""

from __future__ import annotations

import pytest

from fhir_adapter.fhir.references import parse_reference


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        pytest.param("Patient/123", ("Patient", "123"), id="relative"),
        pytest.param("https://ehr.example.org/fhir/Patient/a.b-c", ("Patient", "a.b-c"), id="absolute"),
        pytest.param("Patient/123/_history/4", ("Patient", "123"), id="versioned"),
        pytest.param("#contained-1", None, id="contained"),
        pytest.param("urn:uuid:6f1c1a52-0d4e-4a38-9a5a-2f0c3b1d9e11", None, id="unresolved-urn"),
        pytest.param("Patient", None, id="type-only"),
        pytest.param("", None, id="empty"),
        pytest.param(None, None, id="none"),
        pytest.param("patient/1", None, id="lower-case-type"),
    ],
)
def test_parse_reference(ref: object, expected: tuple[str, str] | None) -> None:
    assert parse_reference(ref) == expected


def test_bundle_full_urls() -> None:
    ids = {"urn:uuid:1": ("Encounter", "e1")}
    assert parse_reference("urn:uuid:1", ids) == ("Encounter", "e1")
