"""Store facts the data-quality report reads per source (spec §4 "Data quality": resources
accepted and rejected with reasons, unlinked persons, staleness of each feed), as of a data cut
(the engine's :func:`~fhir_adapter.measure.engine.visible`). Plain aggregate SQL, the same on
SQLite and PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text

from fhir_adapter.measure.engine import visible
from fhir_adapter.store.db import Store


def resource_counts(store: Store, as_of: int) -> dict[tuple[str, str], int]:
    """(source, resource type) -> current resources (not deleted) at ``as_of``."""
    sql = (
        f"SELECT r.source, r.rtype, COUNT(*) FROM resources r WHERE {visible('r')} GROUP BY r.source, r.rtype"
    )
    with store.read() as conn:
        return {(str(s), str(t)): int(n) for s, t, n in conn.execute(text(sql), {"as_of": as_of}).tuples()}


def last_ingested(store: Store, as_of: int) -> dict[str, int]:
    """Source -> the latest time (µs) it delivered a new version or a deletion, up to ``as_of``."""
    sql = "SELECT source, MAX(ingested_at) FROM resources WHERE ingested_at <= :as_of GROUP BY source"
    with store.read() as conn:
        return {str(s): int(t) for s, t in conn.execute(text(sql), {"as_of": as_of}).tuples()}


@dataclass(frozen=True)
class IssueCount:
    source: str
    message: str
    count: int
    first_location: str
    last_at: int


def ingest_issue_counts(store: Store, as_of: int) -> list[IssueCount]:
    """Rejected lines (``ingest_issues``) recorded up to ``as_of``, counted per source and
    message."""
    sql = """
        SELECT source, message, COUNT(*), MIN(location), MAX(at) FROM ingest_issues WHERE at <= :as_of
        GROUP BY source, message"""
    with store.read() as conn:
        rows = conn.execute(text(sql), {"as_of": as_of}).tuples()
        out = [IssueCount(str(s), str(m), int(n), str(loc), int(at)) for s, m, n, loc, at in rows]
    out.sort(key=lambda i: (i.source, -i.count, i.message))
    return out


@dataclass(frozen=True)
class PatientCounts:
    patients: int
    #: without the Medicaid member id: never linked to records of other sources (spec §3 "Identity")
    unlinked: int
    without_birth_date: int


def patient_counts(store: Store, as_of: int) -> dict[str, PatientCounts]:
    """Source -> counts of its current Patients."""
    sql = f"""
        SELECT p.source, COUNT(*),
               SUM(CASE WHEN p.member_id IS NULL THEN 1 ELSE 0 END),
               SUM(CASE WHEN p.birth_lo_day IS NULL THEN 1 ELSE 0 END)
        FROM f_patient p JOIN resources r ON r.rkey = p.rkey WHERE {visible("r")} GROUP BY p.source"""
    with store.read() as conn:
        return {
            str(s): PatientCounts(int(n), int(u or 0), int(b or 0))
            for s, n, u, b in conn.execute(text(sql), {"as_of": as_of}).tuples()
        }


def coding_systems(store: Store, as_of: int) -> dict[tuple[str, str], int]:
    """(source, code system) -> resources with a procedure or diagnosis coding in that system."""
    sql = f"""
        SELECT r.source, c.system, COUNT(DISTINCT fc.rkey)
        FROM f_code fc JOIN codes c ON c.cid = fc.cid JOIN resources r ON r.rkey = fc.rkey
        WHERE {visible("r")} GROUP BY r.source, c.system"""
    with store.read() as conn:
        return {(str(s), str(y)): int(n) for s, y, n in conn.execute(text(sql), {"as_of": as_of}).tuples()}


__all__ = [
    "IssueCount",
    "PatientCounts",
    "coding_systems",
    "ingest_issue_counts",
    "last_ingested",
    "patient_counts",
    "resource_counts",
]
