"""Ingest files into the store in bounded batches, keeping good lines and reporting bad ones."""

from __future__ import annotations

import gc
import multiprocessing as mp
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.queues import Queue
from pathlib import Path
from queue import Empty
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import insert

from fhir_adapter.errors import StoreError, UsageError
from fhir_adapter.fhir.dates import to_micros
from fhir_adapter.ingest.files import LineError, expand_paths, read_file
from fhir_adapter.store.db import ParsedResource, Prepared, Store, WriteStats, prepare
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
    if not name or len(name) > SOURCE_MAX or any(ch in name for ch in "/| \n\r\t"):
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
    _record_errors(store, source, result.errors[errors_start:], clock)
    return result


def _record_errors(store: Store, source: str, new_errors: list[LineError], clock: Clock) -> None:
    """Keep rejected lines for the data-quality report."""
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


def ingest_paths(
    store: Store,
    paths: list[Path],
    source: str,
    *,
    batch_size: int,
    clock: Clock = utc_now,
    on_bytes: Callable[[int], None] | None = None,
    workers: int = 1,
    parallel_min_bytes: int | None = None,
    max_line_bytes: int | None = None,
) -> IngestResult:
    """Ingest NDJSON files/folders and Bundle JSON files under one source name; an NDJSON line
    longer than ``max_line_bytes`` is a line error, the other lines are kept.

    With ``workers >= 2`` and more than :data:`PARALLEL_MIN_BYTES` of input, a second process
    reads, parses and extracts facts while this one writes; the result is the same.
    """
    source = check_source(source)
    files = expand_paths(paths)
    result = IngestResult(files=len(files))
    # Parsed JSON makes no reference cycles; the cyclic collector only costs time here.
    enabled = gc.isenabled()
    gc.disable()
    try:
        threshold = PARALLEL_MIN_BYTES if parallel_min_bytes is None else parallel_min_bytes
        if workers >= 2 and sum(p.stat().st_size for p in files) > threshold:
            _ingest_parallel(store, files, source, batch_size, clock, on_bytes, result, max_line_bytes)
        else:
            for path in files:
                ingest_items(
                    store,
                    read_file(path, on_bytes, max_line_bytes),
                    source,
                    batch_size=batch_size,
                    clock=clock,
                    result=result,
                )
    finally:
        if enabled:
            gc.enable()
    if result.stats.created or result.stats.updated or result.stats.deleted:
        store.analyze()
    return result


#: Below this much input a worker process costs more than it saves.
PARALLEL_MIN_BYTES = 16 * 1024 * 1024
_QUEUE_DEPTH = 4  # batches in flight: bounds memory


def _parse_worker(
    files: list[str],
    source: str,
    member_system: str,
    tz_name: str,
    batch_size: int,
    out: Queue[Any],
    max_line_bytes: int | None = None,
) -> None:
    """Runs in the worker process: read, parse, hash and extract; send batches in file order."""
    try:
        gc.disable()
        extract_for = (source, member_system, ZoneInfo(tz_name))
        for name in files:
            batch: list[Prepared] = []
            errors: list[LineError] = []
            read = [0]

            def count(n: int, read: list[int] = read) -> None:
                read[0] += n

            for item in read_file(Path(name), count, max_line_bytes):
                if isinstance(item, LineError):
                    errors.append(item)
                    continue
                batch.append(prepare(item, extract_for=extract_for))
                if len(batch) >= batch_size:
                    out.put(("batch", batch, errors, read[0]))
                    batch, errors, read[0] = [], [], 0
            out.put(("batch", batch, errors, read[0]))
        out.put(("done",))
    except BaseException as exc:  # reported by the parent, never lost
        out.put(("error", f"{exc.__class__.__name__}: {exc}"))


def _ingest_parallel(
    store: Store,
    files: list[Path],
    source: str,
    batch_size: int,
    clock: Clock,
    on_bytes: Callable[[int], None] | None,
    result: IngestResult,
    max_line_bytes: int | None = None,
) -> None:
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context("spawn")
    queue: Queue[Any] = ctx.Queue(maxsize=_QUEUE_DEPTH)
    worker = ctx.Process(
        target=_parse_worker,
        args=(
            [str(p) for p in files],
            source,
            store.member_system,
            store.tz.key,
            batch_size,
            queue,
            max_line_bytes,
        ),
        daemon=True,
    )
    worker.start()
    errors: list[LineError] = []
    try:
        while True:
            try:
                message = queue.get(timeout=5)
            except Empty:
                if not worker.is_alive():
                    raise StoreError(f"the parsing worker died (exit code {worker.exitcode})") from None
                continue
            if message[0] == "done":
                break
            if message[0] == "error":
                raise StoreError(f"the parsing worker failed: {message[1]}")
            _, batch, batch_errors, read = message
            result.read += len(batch)
            errors.extend(batch_errors)
            if batch:
                result.stats.add(store.write_prepared(source, batch, to_micros(clock())))
            if on_bytes:
                on_bytes(read)
    finally:
        worker.join(timeout=10)
        if worker.is_alive():
            worker.kill()
    result.errors.extend(errors)
    _record_errors(store, source, errors, clock)


def total_bytes(paths: list[Path]) -> int:
    return sum(p.stat().st_size for p in expand_paths(paths))
