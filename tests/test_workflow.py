"""Library entry points: a subject asked for by the id its source sent is named by that id."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from fhir_adapter import workflow
from fhir_adapter.settings import Settings
from fhir_adapter.store.db import ParsedResource, Store
from tests import cohorts as c

ROOT = Path(__file__).resolve().parents[1]


def _write(store: Store, source: str, resources: list[dict[str, object]], now: int) -> None:
    store.write_batch(
        source, [ParsedResource(str(r["resourceType"]), str(r["id"]), r) for r in resources], now
    )


@pytest.mark.parametrize(
    ("subject", "source", "expected"),
    [
        pytest.param("Patient/claims-1", None, ("claims", "claims-1"), id="claims-record"),
        pytest.param("Patient/ehr-9", None, ("ehr", "ehr-9"), id="ehr-record-of-the-same-child"),
        pytest.param("Patient/shared", "ehr", ("ehr", "shared"), id="shared-id-with-source"),
    ],
)
def test_subject_report_names_the_record_asked_for(
    store: Store, subject: str, source: str | None, expected: tuple[str, str]
) -> None:
    _write(store, "claims", [c.patient("claims-1", "2022-06-15", member="M1"), c.full_year("claims-1")], 1)
    _write(
        store, "ehr", [c.patient("ehr-9", "2022-06-15", member="M1"), c.patient("shared", "2021-01-01")], 2
    )
    _write(store, "other", [c.patient("shared", "2020-01-01")], 3)
    settings = Settings(database_url="sqlite://", mappings_dir=ROOT / "mappings")
    request = workflow.EvaluationRequest(
        "oregon-se-issue-focused",
        date(2025, 1, 1),
        date(2025, 12, 31),
        subject=subject,
        subject_source=source,
    )
    ev = workflow.run_evaluation(
        settings, store, request, evidence=True, clock=lambda: datetime(2026, 1, 1, tzinfo=UTC)
    )
    (child,) = ev.children
    assert (child.subject_source, child.subject_id) == expected
