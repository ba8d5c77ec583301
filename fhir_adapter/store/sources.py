"""Per-source load status (table ``source_status``): what kind of extract a source holds, how far
its claims are paid through, when it was last loaded and the latest day of data it carried.

Reconciliation and data quality read it (spec §4 "Data quality": staleness of each feed; OHA's
"data lag" reason). Written by ``load-enrollment`` / ``load-claims`` after a load; one row per
source, replaced on each load (an upsert that works on SQLite and PostgreSQL).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from fhir_adapter.errors import StoreError, UsageError
from fhir_adapter.fhir.dates import from_micros
from fhir_adapter.store.db import DRIVER_ERRORS, Store
from fhir_adapter.store.schema import source_status

SourceKind = Literal["enrollment", "claims"]
KINDS: tuple[SourceKind, ...] = ("enrollment", "claims")


@dataclass(frozen=True)
class SourceStatus:
    """One row of ``source_status``, with days as dates and the load time as a UTC datetime."""

    source: str
    kind: str
    #: claims: adjudicated (paid or denied) through this day; ``None`` when unknown
    paid_through: date | None
    last_loaded_at: datetime | None
    #: the latest day the data itself covers (latest service from-date, latest span start)
    last_data: date | None
    note: str | None = None


def _day(ordinal: int | None) -> date | None:
    return date.fromordinal(ordinal) if ordinal is not None else None


def write_source_status(
    store: Store,
    source: str,
    kind: SourceKind,
    *,
    loaded_at: int,
    paid_through: date | None = None,
    last_data: date | None = None,
    note: str | None = None,
) -> None:
    """Insert or replace the row of ``source`` (``loaded_at`` in µs since the epoch)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    row: dict[str, Any] = {
        "source": source,
        "kind": kind,
        "paid_through_day": paid_through.toordinal() if paid_through else None,
        "last_loaded_at": loaded_at,
        "last_data_day": last_data.toordinal() if last_data else None,
        "note": note,
    }
    dialect = sqlite if store.dialect == "sqlite" else postgresql
    stmt = dialect.insert(source_status).values(**row)
    stmt = stmt.on_conflict_do_update(
        index_elements=[source_status.c.source], set_={k: v for k, v in row.items() if k != "source"}
    )
    try:
        with store.write() as conn:
            conn.execute(stmt)
    except DRIVER_ERRORS as exc:
        raise StoreError(f"cannot record the status of source {source!r}: {exc}") from exc


def read_source_status(store: Store, *, kind: str | None = None) -> dict[str, SourceStatus]:
    """Every source's status (optionally of one kind), keyed and ordered by source name."""
    query = select(source_status).order_by(source_status.c.source)
    if kind is not None:
        query = query.where(source_status.c.kind == kind)
    with store.read() as conn:
        rows = conn.execute(query).mappings().all()
    return {
        str(r["source"]): SourceStatus(
            source=str(r["source"]),
            kind=str(r["kind"]),
            paid_through=_day(r["paid_through_day"]),
            last_loaded_at=from_micros(r["last_loaded_at"]) if r["last_loaded_at"] is not None else None,
            last_data=_day(r["last_data_day"]),
            note=r["note"],
        )
        for r in rows
    }


def check_kind(store: Store, source: str, kind: SourceKind) -> None:
    """Refuse to load ``kind`` data under a source that already holds the other kind (an
    eligibility snapshot would delete the claims loader's Patients, and the reverse)."""
    status = read_source_status(store).get(source)
    if status is not None and status.kind != kind:
        raise UsageError(f"source {source!r} holds {status.kind} data; load {kind} under another --source")


__all__ = ["KINDS", "SourceKind", "SourceStatus", "check_kind", "read_source_status", "write_source_status"]
