"""Fact extraction of Task (referral tracking) and Observation (health complexity): which element
each fact comes from, local days, and what is left out."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from fhir_adapter.store.extract import extract
from tests.conftest import TZ

MEMBER = "https://oregon.gov/oha/ohp/member-id"
SYS = "https://example.org/cs"


def _task(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Task", "id": "t1", "status": "cancelled", "intent": "order",
            "for": {"reference": "Patient/p1"}, **extra}  # fmt: skip


@pytest.mark.parametrize(
    ("task", "refs", "day_iso"),
    [
        pytest.param(_task(focus={"reference": "ServiceRequest/sr1"}, authoredOn="2025-03-01"),
                     [("basedon", "ServiceRequest", "sr1", None, 0)], "2025-03-01", id="focus-authored"),
        pytest.param(_task(basedOn=[{"reference": "ServiceRequest/sr1"}, {"reference": "ServiceRequest/sr2"}],
                           focus={"reference": "ServiceRequest/sr1"}, lastModified="2025-03-02T07:30:00Z"),
                     [("basedon", "ServiceRequest", "sr1", None, 0), ("basedon", "ServiceRequest", "sr2", None, 0)],
                     "2025-03-01", id="basedon-deduplicated-lastmodified-local-day"),
        pytest.param(_task(focus={"reference": "Encounter/e1"}), [], None, id="focus-not-a-request"),
    ],
)  # fmt: skip
def test_task_facts(task: dict[str, Any], refs: list[tuple[Any, ...]], day_iso: str | None) -> None:
    facts = extract(task, "plat", MEMBER, TZ)
    assert facts is not None and facts.event is not None
    source, rtype, rid, category, pid, status, use = facts.event[:7]
    assert (source, rtype, rid, category, pid, status, use) == (
        "plat",
        "Task",
        "t1",
        "clinical",
        "p1",
        "cancelled",
        "order",
    )
    day = facts.event[9]
    assert (date.fromordinal(day).isoformat() if day is not None else None) == day_iso
    assert facts.refs == refs


def _obs(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": "o1", "status": "final", "subject": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": SYS, "code": "a"}, {"system": SYS, "code": "b"}]}, **extra}  # fmt: skip


@pytest.mark.parametrize(
    ("obs", "value", "day_iso"),
    [
        pytest.param(_obs(valueString=" high ", effectiveDateTime="2025-06-30"), "high", "2025-06-30", id="string"),
        pytest.param(_obs(valueCodeableConcept={"text": "Complex", "coding": [{"code": "3"}]}), "Complex", None,
                     id="concept-text-first"),
        pytest.param(_obs(valueCodeableConcept={"coding": [{"code": "3", "display": "Complex chronic"}]}),
                     "Complex chronic", None, id="concept-display"),
        pytest.param(_obs(valueCodeableConcept={"coding": [{"code": "3"}]}), "3", None, id="concept-code"),
        pytest.param(_obs(valueQuantity={"value": 2}), "2", None, id="quantity"),
        pytest.param(_obs(valueBoolean=False), "false", None, id="boolean"),
        pytest.param(_obs(valueInteger=0), "0", None, id="integer-zero"),
        pytest.param(_obs(effectivePeriod={"start": "2025-01-01T02:00:00Z"}), None, "2024-12-31", id="period-local-day"),
        pytest.param(_obs(issued="2025-02-02T12:00:00-08:00"), None, "2025-02-02", id="issued"),
    ],
)  # fmt: skip
def test_observation_facts(obs: dict[str, Any], value: str | None, day_iso: str | None) -> None:
    facts = extract(obs, "s", MEMBER, TZ)
    assert facts is not None and facts.event is None
    day = date.fromisoformat(day_iso).toordinal() if day_iso else None
    assert facts.observations == [("s", "p1", "final", SYS, code, value, day) for code in ("a", "b")]
