"""The BI views on SQLite and PostgreSQL: ISO dates computed in SQL agree with Python's calendar at
its boundaries, each view shows current versions only with readable columns, persisted runs
appear in ``v_child_results``, and views are created once per version."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

import pytest
from sqlalchemy import text

from fhir_adapter.fhir.dates import to_micros
from fhir_adapter.measure.spec import Mappings
from fhir_adapter.store import views
from fhir_adapter.store.db import Store
from fhir_adapter.store.evaluate import evaluate
from fhir_adapter.store.extract import NPI_SYSTEM
from fhir_adapter.store.runs import persist_run
from tests import cohorts as c
from tests.conftest import ROOT
from tests.measure.test_boundaries import load
from tests.store.test_runs import COHORT

T1 = datetime(2026, 2, 10, tzinfo=UTC)


def _values(store: Store, expr: str, values: Sequence[int | None]) -> list[Any]:
    with store.engine.connect() as conn, conn.begin():
        conn.execute(text("CREATE TEMP TABLE t_v (n INTEGER, v BIGINT)"))
        conn.execute(
            text("INSERT INTO t_v (n, v) VALUES (:n, :v)"), [{"n": i, "v": v} for i, v in enumerate(values)]
        )
        out = [row[0] for row in conn.execute(text(f"SELECT {expr.format(col='v')} FROM t_v ORDER BY n"))]
        conn.execute(text("DROP TABLE t_v"))
    return out


#: named calendar boundaries (one query per engine, compared case by case)
DATES = {
    "ordinal-1": date(1, 1, 1),
    "three-digit-year": date(999, 12, 31),
    "1900-not-leap-feb-28": date(1900, 2, 28),
    "1900-not-leap-mar-1": date(1900, 3, 1),
    "century-eve": date(1999, 12, 31),
    "2000-leap-day": date(2000, 2, 29),
    "2000-mar-1": date(2000, 3, 1),
    "2024-leap-day": date(2024, 2, 29),
    "year-start": date(2025, 1, 1),
    "quarter-end": date(2025, 9, 30),
    "two-digit-month": date(2025, 10, 1),
    "year-end": date(2025, 12, 31),
    "2100-not-leap": date(2100, 2, 28),
    "2100-mar-1": date(2100, 3, 1),
    "max-date": date(9999, 12, 31),
}


def test_iso_dates_match_python_at_calendar_boundaries(store: Store) -> None:
    names = list(DATES)
    by_ordinal = _values(store, views.iso_date_sql("{col}"), [DATES[n].toordinal() for n in names])
    ymds = [d.year * 10000 + d.month * 100 + d.day for d in (DATES[n] for n in names)]
    by_ymd = _values(store, views.iso_ymd_sql("{col}"), ymds)
    expected = {n: DATES[n].isoformat() for n in names}
    assert dict(zip(names, by_ordinal, strict=True)) == expected
    assert dict(zip(names, by_ymd, strict=True)) == expected


def test_every_day_of_four_years_and_null(store: Store) -> None:
    days = list(range(date(2023, 1, 1).toordinal(), date(2027, 1, 1).toordinal()))
    got = _values(store, views.iso_date_sql("{col}"), [*days, None])
    assert got == [*(date.fromordinal(d).isoformat() for d in days), None]


@pytest.mark.parametrize(
    "moment",
    [
        pytest.param(datetime(1970, 1, 1, tzinfo=UTC), id="epoch"),
        pytest.param(datetime(2024, 2, 29, 12, 5, 9, 999_999, tzinfo=UTC), id="leap-day-truncated-seconds"),
        pytest.param(datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC), id="last-second-of-year"),
        pytest.param(datetime(2026, 1, 1, tzinfo=UTC), id="midnight"),
    ],
)
def test_iso_instant_matches_python(store: Store, moment: datetime) -> None:
    expected = moment.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert _values(store, views.iso_instant_sql("{col}"), [to_micros(moment), None]) == [expected, None]


def _rows(store: Store, sql: str) -> list[dict[str, Any]]:
    with store.read() as conn:
        return [dict(r._mapping) for r in conn.execute(text(sql))]


RESOURCES = [
    c.patient("p1", "2022-06-15", member="M-1", address=[{"district": "Marion"}]),
    c.patient("p2", "2021", unlinked=True),
    c.coverage("cov1", "p1", "2024-07-01", "2025-12-31"),
    {"resourceType": "Organization", "id": "cco-org", "identifier": [
        {"system": NPI_SYSTEM, "value": "1234567893"}, {"system": c.CCO_SYSTEM, "value": "IHN"}]},
    {"resourceType": "Coverage", "id": "cov2", "status": "active", "beneficiary": {"reference": "Patient/p2"},
     "payor": [{"reference": "Organization/cco-org"}], "period": {"start": "2025-01-01T00:30:00-08:00"}},
    c.eob("e1", "p1", "2025-03-01", dx=("F43.22", "Z63.8")),
    c.encounter("v1", "p1", "2025-04-02T23:30:00-07:00", reason="F93.0"),
    c.encounter("gone", "p1", "2025-05-05"),
]  # fmt: skip


def test_views_show_current_versions_with_readable_columns(store: Store) -> None:
    load(store, RESOURCES)
    # a newer version of the EOB (another code) and a deleted encounter
    from fhir_adapter.ingest.runner import ingest_items
    from fhir_adapter.store.db import ParsedResource

    newer = c.eob("e1", "p1", "2025-03-02", code="90837", dx=("F43.22", "Z63.8"))
    ingest_items(
        store, [ParsedResource("ExplanationOfBenefit", "e1", newer)], "s1", batch_size=10, clock=lambda: T1
    )
    gone = c.encounter("gone", "p1", "2025-05-05")
    ingest_items(
        store,
        [ParsedResource("Encounter", "gone", gone, deleted=True)],
        "s1",
        batch_size=10,
        clock=lambda: T1,
    )

    services = _rows(store, "SELECT * FROM v_services ORDER BY resource_type, resource_id, line")
    assert [
        (s["resource_type"], s["resource_id"], s["version"], s["line"], s["service_date"], s["procedure_code"],
         s["member_id"], s["person"], s["category"], s["denied"])
        for s in services
    ] == [
        ("Encounter", "v1", 1, 0, "2025-04-02", "90834", "M-1", "m:M-1", "clinical", 0),
        ("ExplanationOfBenefit", "e1", 2, 1, "2025-03-02", "90837", "M-1", "m:M-1", "claims", 0),
    ]  # fmt: skip
    assert services[1]["provider"] == "1234567893" and services[1]["service_date_last"] == "2025-03-02"

    dx = _rows(store, "SELECT * FROM v_service_diagnoses ORDER BY resource_id, line, diagnosis_code")
    assert [(d["resource_id"], d["line"], d["rank"], d["diagnosis_code"], d["event_date"]) for d in dx] == [
        ("e1", 0, 1, "F43.22", "2025-03-02"),
        ("e1", 0, 2, "Z63.8", "2025-03-02"),
        ("e1", 1, 1, "F43.22", "2025-03-02"),
        ("e1", 1, 2, "Z63.8", "2025-03-02"),
        ("v1", 0, 1, "F93.0", "2025-04-02"),
    ]

    spans = _rows(store, "SELECT * FROM v_enrollment_spans ORDER BY coverage_id")
    assert [
        (s["coverage_id"], s["patient_id"], s["member_id"], s["cco_system"], s["cco_value"], s["start_date"],
         s["end_date"], s["status"])
        for s in spans
    ] == [
        ("cov1", "p1", "M-1", c.CCO_SYSTEM, "ALLCARE", "2024-07-01", "2025-12-31", "active"),
        ("cov2", "p2", None, c.CCO_SYSTEM, "IHN", "2025-01-01", None, "active"),
    ]  # fmt: skip

    patients = _rows(store, "SELECT * FROM v_patients ORDER BY patient_id")
    assert [
        (
            p["patient_id"],
            p["person"],
            p["birth_date"],
            p["birth_date_first"],
            p["birth_date_last"],
            p["county"],
        )
        for p in patients
    ] == [
        ("p1", "m:M-1", "2022-06-15", "2022-06-15", "2022-06-15", "Marion"),
        ("p2", "u:s1/p2", "2021", "2021-01-01", "2021-12-31", None),
    ]


def test_child_results_view_reads_persisted_runs(store: Store, mappings: Mappings) -> None:
    load(store, COHORT)
    spec = mappings.measure_for("oregon-se-issue-focused", date(2025, 12, 31))
    as_of = to_micros(datetime(2026, 3, 1, 8, 30, tzinfo=UTC))
    ev = evaluate(store, mappings, spec, date(2025, 1, 1), date(2025, 12, 31), as_of, "all")
    run_id = persist_run(store, ev, now_us=as_of)
    rows = _rows(store, "SELECT * FROM v_child_results ORDER BY person, group_id")
    assert len(rows) == 2 * len(ev.children)
    served = next(r for r in rows if r["person"] == "m:M-served" and r["group_id"] == "all-enrolled")
    assert {k: served[k] for k in ("run_id", "measure", "period_start", "period_end", "sources", "data_cut",
                                   "initial_population", "denominator", "denominator_exclusion", "numerator",
                                   "reason", "cco", "patient")} == {
        "run_id": run_id, "measure": "oregon-se-issue-focused", "period_start": "2025-01-01",
        "period_end": "2025-12-31", "sources": "all", "data_cut": "2026-03-01T08:30:00Z",
        "initial_population": 1, "denominator": 1, "denominator_exclusion": 0, "numerator": 1,
        "reason": "qualifying-service", "cco": "ALLCARE", "patient": "Patient/served",
    }  # fmt: skip


def test_views_are_created_once_per_version(store: Store) -> None:
    with store.write() as conn:
        assert views.create_views(conn) is False  # created when the store was opened
        conn.execute(text("DROP VIEW v_patients"))
    with store.write() as conn:
        assert views.create_views(conn) is True
        assert views.create_views(conn) is False
        conn.execute(text("UPDATE store_meta SET value = '0' WHERE key = 'views_version'"))
    with store.write() as conn:
        assert views.create_views(conn) is True
    assert _rows(store, "SELECT * FROM v_patients") == []


DOC = ROOT / "docs" / "sql-views.md"
EXAMPLES = re.findall(r"```sql\n(.*?)```", DOC.read_text(), flags=re.S)


def test_documented_examples_run(store: Store, mappings: Mappings) -> None:
    """Every ```sql block of docs/sql-views.md runs and finds the cohort's rows."""
    load(store, [*COHORT, *RESOURCES[3:5]])
    spec = mappings.measure_for("oregon-se-issue-focused", date(2025, 12, 31))
    ev = evaluate(store, mappings, spec, date(2025, 1, 1), date(2025, 12, 31), to_micros(T1), "all")
    persist_run(store, ev, now_us=to_micros(T1))
    assert len(EXAMPLES) == 5
    results = [_rows(store, sql) for sql in EXAMPLES]
    rates = {(r["cco"], r["group_id"]): r["rate"] for r in results[0]}
    assert rates[("ALLCARE", "all-enrolled")] == 1.0 and rates[("IHN", "all-enrolled")] == 0.0
    assert results[1] == []  # ALLCARE's only denominator child was served
    assert results[2] == [{"month": "2025-03", "category": "claims", "source": "s1", "lines": 1}]
    assert {(r["cco"], r["children"]) for r in results[3]} >= {("ALLCARE", 2), ("IHN", 1)}
    assert [r["resource_id"] for r in results[4]] == ["e1"]
