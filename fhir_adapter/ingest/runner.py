"""Ingest files into the store in bounded batches, keeping good lines and reporting bad ones."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import insert

from fhir_adapter.errors import UsageError
from fhir_adapter.fhir.dates import to_micros
from fhir_adapter.ingest.files import LineError, expand_paths, read_file
from fhir_adapter.store.db import ParsedResource, Store, WriteStats
from fhir_adapter.store.schema import ingest_issues

Clock = Callable[[], datetime]
SOURCE_MAX = 128


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class IngestResult:
    files: int = 0
    read: int = 0
    stats: WriteStats = field(default_factory=WriteStats)
    errors: list[LineError] = field(default_factory=list)


def check_source(source: str) -> str:
    name = source.strip()
    if not name or len(name) > SOURCE_MAX or any(ch in name for ch in "/|\n\r\t"):
        raise UsageError(
            f"source name {source!r} must be 1–{SOURCE_MAX} characters without '/', '|' or spaces"
        )
    return name


def ingest_items(
    store: Store,
    items: Iterable[ParsedResource | LineError],
    source: str,
    *,
    batch_size: int,
    clock: Clock = utc_now,
    result: IngestResult | None = None,
) -> IngestResult:
    """Store ``items`` under ``source`` in batches; a batch is one transaction."""
    result = result or IngestResult()
    batch: list[ParsedResource] = []
    errors_start = len(result.errors)

    def flush() -> None:
        if batch:
            result.stats.add(store.write_batch(source, batch, to_micros(clock())))
            batch.clear()

    for item in items:
        if isinstance(item, LineError):
            result.errors.append(item)
            continue
        result.read += 1
        batch.append(item)
        if len(batch) >= batch_size:
            flush()
    flush()
    new_errors = result.errors[errors_start:]
    if new_errors:
        at = to_micros(clock())
        with store.write() as conn:
            conn.execute(
                insert(ingest_issues),
                [
                    {
                        "source": source,
                        "at": at,
                        "location": e.location[:512],
                        "severity": "error",
                        "message": e.message,
                    }
                    for e in new_errors
                ],
            )
    return result


def ingest_paths(
    store: Store,
    paths: list[Path],
    source: str,
    *,
    batch_size: int,
    clock: Clock = utc_now,
    on_bytes: Callable[[int], None] | None = None,
) -> IngestResult:
    """Ingest NDJSON files/folders and Bundle JSON files under one source name."""
    source = check_source(source)
    files = expand_paths(paths)
    result = IngestResult(files=len(files))
    # Parsed JSON makes no reference cycles; the cyclic collector only costs time here.
    enabled = gc.isenabled()
    gc.disable()
    try:
        for path in files:
            ingest_items(
                store, read_file(path, on_bytes), source, batch_size=batch_size, clock=clock, result=result
            )
    finally:
        if enabled:
            gc.enable()
    return result


def total_bytes(paths: list[Path]) -> int:
    return sum(p.stat().st_size for p in expand_paths(paths))
