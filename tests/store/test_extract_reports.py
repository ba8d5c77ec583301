"""MeasureReport facts (``f_report``): what the MeasureReport search parameters read."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from sqlalchemy import text

from fhir_adapter.settings import DEFAULT_MEMBER_ID_SYSTEM
from fhir_adapter.store.db import ParsedResource, Store
from fhir_adapter.store.extract import FACT_TYPES, extract
from tests.conftest import TZ

URL = "https://github.com/fhir-adapter/oregon-se/fhir/Measure/oregon-se-issue-focused"


def _day(text: str) -> int:
    return date.fromisoformat(text).toordinal()


def _report(**fields: Any) -> dict[str, Any]:
    return {"resourceType": "MeasureReport", "id": "mr", "status": "complete", "type": "individual", **fields}


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param(
            {"measure": f"{URL}|2025.1.0", "period": {"start": "2025-01-01", "end": "2025-12-31"},
             "subject": {"reference": "Patient/p1"}, "reporter": {"reference": "Organization/cco"}},
            (f"{URL}|2025.1.0", "individual", "complete", _day("2025-01-01"), _day("2025-12-31"),
             "Organization/cco", "Patient/p1"),
            id="versioned-canonical-and-relative-references",
        ),
        pytest.param(
            {"measure": URL, "period": {"start": "2025", "end": "2025-06"},
             "subject": {"reference": "https://ehr.example/fhir/Patient/p1"},
             "reporter": {"identifier": {"system": "urn:ietf:rfc:3986", "value": "urn:example:cco"}}},
            (URL, "individual", "complete", _day("2025-01-01"), _day("2025-06-30"), "urn:example:cco", "Patient/p1"),
            id="partial-dates-widest-range-absolute-subject-reporter-identifier",
        ),
        pytest.param(
            {"measure": URL, "period": {"start": "2025-01-01T08:00:00Z", "end": "2026-01-01T07:59:59Z"},
             "subject": {"reference": "urn:uuid:1f2e"}},
            (URL, "individual", "complete", _day("2025-01-01"), _day("2025-12-31"), None, "urn:uuid:1f2e"),
            id="instants-become-local-days",
        ),
        pytest.param(
            {"status": "pending", "type": "summary"},
            (None, "summary", "pending", None, None, None, None),
            id="no-measure-no-period",
        ),
    ],
)  # fmt: skip
def test_measure_report_facts(fields: dict[str, Any], expected: tuple[Any, ...]) -> None:
    facts = extract(_report(**fields), "evals", DEFAULT_MEMBER_ID_SYSTEM, TZ)
    assert facts is not None and facts.report is not None
    assert facts.report == ("evals", "mr", *expected)
    assert "MeasureReport" in FACT_TYPES


def test_stored_reports_get_a_row_per_version(store: Store) -> None:
    first = _report(measure=f"{URL}|2025.1.0", period={"start": "2025-01-01", "end": "2025-12-31"})
    second = {**first, "status": "error"}
    store.write_batch("evals", [ParsedResource("MeasureReport", "mr", first)], 1_000)
    store.write_batch("evals", [ParsedResource("MeasureReport", "mr", second)], 2_000)
    with store.read() as conn:
        rows = conn.execute(
            text(
                "SELECT r.version, f.measure, f.status, f.period_start FROM f_report f "
                "JOIN resources r ON r.rkey = f.rkey ORDER BY r.version"
            )
        ).all()
    assert [tuple(row) for row in rows] == [
        (1, f"{URL}|2025.1.0", "complete", _day("2025-01-01")),
        (2, f"{URL}|2025.1.0", "error", _day("2025-01-01")),
    ]
