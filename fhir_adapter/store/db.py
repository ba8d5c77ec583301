"""The store: one schema, two engines (SQLite embedded default, PostgreSQL reference).

Writes are batched: a batch of parsed resources becomes new resource versions (unchanged
content is skipped, so re-ingesting changes nothing), the versions they replace get
``superseded_at``, and their facts are inserted with the engine's fastest bulk path
(``executemany`` on SQLite, ``COPY`` on PostgreSQL). One batch is one transaction: a failure
leaves nothing half-written.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import orjson
import psycopg
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from fhir_adapter.errors import (
    ConflictError,
    InvalidDataError,
    PreconditionFailedError,
    StoreError,
    UsageError,
)
from fhir_adapter.fhir.resources import json_problem
from fhir_adapter.store.extract import EXTRACTOR_VERSION, Facts, extract
from fhir_adapter.store.schema import FACT_TABLES, SCHEMA_VERSION, metadata
from fhir_adapter.store.views import create_views

log = logging.getLogger("fhir_adapter.store")
T = TypeVar("T")

_CHUNK = 500
#: Advisory-lock stripes of conditional writes (PostgreSQL), and the lock namespace (``FHIR``).
_STRIPES = 1024
_LOCK_NAMESPACE = 0x46484952
#: Identifier values whose JSON text is the same whichever encoder wrote it.
_PLAIN_VALUE = re.compile(r"[A-Za-z0-9 ._:|+=#@,;()*!?$%~-]+")
#: How JSON writes U+0000 (PostgreSQL text cannot hold it; see ``json_problem``).
_NUL_ESCAPE = b"\\u0000"
#: Attempts of one write transaction when PostgreSQL drops the connection (:func:`connection_dropped`).
WRITE_ATTEMPTS = 5
#: Errors from SQLAlchemy and from the drivers used directly for bulk writes.
DRIVER_ERRORS = (SQLAlchemyError, sqlite3.Error, psycopg.Error)


def connection_dropped(exc: BaseException) -> bool:
    """Whether ``exc`` says PostgreSQL's connection was lost (psycopg ``OperationalError``, also
    when SQLAlchemy wraps it: ``AdminShutdown`` from ``pg_terminate_backend`` or a server restart,
    "server closed the connection unexpectedly", "the connection is closed"), as opposed to an error
    of the statement or the data (which a retry would only repeat). SQLite errors never are."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    cause = exc.orig if isinstance(exc, DBAPIError) else exc
    return isinstance(cause, psycopg.OperationalError)


@dataclass(frozen=True)
class ParsedResource:
    """A resource ready to store: its canonical JSON bytes and the parsed dict."""

    rtype: str
    rid: str
    resource: dict[str, Any]
    deleted: bool = False
    #: The bytes as received (an NDJSON line), stored as the immutable raw resource; when absent
    #: (a rewritten Bundle entry, a REST body) the resource is serialised canonically.
    raw: bytes | None = None


@dataclass(slots=True)
class Prepared:
    """A resource ready to write: its stored bytes, their hash and (when extracted ahead, for
    instance in a parsing worker process) its facts. Picklable."""

    rtype: str
    rid: str
    deleted: bool
    body: bytes
    digest: str
    last_updated: str | None
    facts: Facts | None = None
    #: kept only when ``facts`` are to be extracted at write time
    resource: dict[str, Any] | None = None


def prepare(item: ParsedResource, *, extract_for: tuple[str, str, ZoneInfo] | None = None) -> Prepared:
    """Serialise and hash ``item``; with ``extract_for = (source, member_system, tz)`` extract
    its facts now (otherwise they are extracted at write time, only if it changed). Raises
    :class:`InvalidDataError` for a string holding NUL, which no store may keep (PostgreSQL text
    cannot; :func:`~fhir_adapter.fhir.resources.json_problem`): the last guard for writers that
    did not check their input (extract loaders, submitted data)."""
    body = item.raw if item.raw is not None else canonical_bytes(item.resource)
    if _NUL_ESCAPE in body and not item.deleted:
        problem = json_problem(item.resource, body)
        if problem:
            key = f"{item.rtype}/{item.rid}"
            raise InvalidDataError(f"{key}: {problem}", location=key)
    meta = item.resource.get("meta")
    last_updated = meta.get("lastUpdated") if isinstance(meta, dict) else None
    facts = None
    if extract_for is not None and not item.deleted:
        facts = extract(item.resource, *extract_for) or Facts()
    return Prepared(
        item.rtype,
        item.rid,
        item.deleted,
        body,
        content_hash(body),
        last_updated if isinstance(last_updated, str) else None,
        facts,
        None if extract_for is not None else item.resource,
    )


@dataclass(frozen=True)
class KeyResult:
    """What one write did to one ``(type, id)``: ``outcome`` is ``created``, ``updated``,
    ``unchanged`` or ``deleted``; ``version`` and ``at`` (µs) are those of the current version
    afterwards (``None`` when a deletion named a resource that never existed)."""

    outcome: str
    version: int | None
    at: int | None
    deleted: bool


@dataclass
class WriteStats:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    #: Per ``(type, id)`` of this one write (not accumulated by :meth:`add`, so long ingests do
    #: not keep one entry per resource).
    results: dict[tuple[str, str], KeyResult] = field(default_factory=dict)

    def add(self, other: WriteStats) -> None:
        self.created += other.created
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.deleted += other.deleted


def normalise_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 here; anything but SQLite or PostgreSQL is refused."""
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise UsageError(f"not a database URL: {url!r}") from exc
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg"):
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    if parsed.drivername in ("sqlite", "sqlite+pysqlite"):
        return url
    raise UsageError(f"unsupported database {parsed.drivername!r}: use sqlite:/// or postgresql://")


def canonical_bytes(resource: dict[str, Any]) -> bytes:
    return orjson.dumps(resource, option=orjson.OPT_SORT_KEYS)


def content_hash(body: bytes) -> str:
    return hashlib.blake2b(body, digest_size=16).hexdigest()


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_connection.cursor()
        for pragma in (
            "journal_mode=WAL",
            "synchronous=NORMAL",
            "busy_timeout=60000",
            "temp_store=MEMORY",
            "cache_size=-262144",
            "mmap_size=1073741824",
        ):
            cur.execute(f"PRAGMA {pragma}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


class Store:
    """A connection to the store; create with :meth:`open`."""

    def __init__(self, engine: Engine, tz: ZoneInfo, member_system: str) -> None:
        self.engine = engine
        self.tz = tz
        self.member_system = member_system
        self.dialect = engine.dialect.name
        self._cids: dict[tuple[str, str], int] = {}
        self._batches = 0

    @classmethod
    def open(cls, url: str, *, tz: ZoneInfo, member_system: str, create: bool = True) -> Store:
        # hide_parameters: bound values (resource bodies, identifiers) stay out of SQLAlchemy's
        # error messages and SQL log (fhir_adapter/logsafe.py: no PHI in logs)
        normalised = normalise_url(url)
        # pool_pre_ping (PostgreSQL): a pooled connection the server dropped meanwhile (restart,
        # pg_terminate_backend) is replaced at checkout instead of failing the next statement.
        engine = create_engine(
            normalised, future=True, hide_parameters=True, pool_pre_ping=not normalised.startswith("sqlite")
        )
        if engine.dialect.name == "sqlite":
            _sqlite_setup(engine)
        store = cls(engine, tz, member_system)
        try:
            store._prepare(create)
        except SQLAlchemyError as exc:
            raise StoreError(
                f"cannot open the store at {engine.url!r}: {exc.__class__.__name__}: {exc}"
            ) from exc
        return store

    def close(self) -> None:
        self.engine.dispose()

    # -- schema ---------------------------------------------------------------------------
    def _prepare(self, create: bool) -> None:
        with self.engine.begin() as conn:
            if create:
                metadata.create_all(conn)
            rows: dict[str, str] = {k: v for k, v in conn.execute(text("SELECT key, value FROM store_meta"))}
            if "schema_version" not in rows:
                conn.execute(
                    text(
                        "INSERT INTO store_meta (key, value) VALUES ('schema_version', :v), ('extractor_version', :e)"
                    ),
                    {"v": str(SCHEMA_VERSION), "e": str(EXTRACTOR_VERSION)},
                )
                if create:
                    create_views(conn)
                return
            if rows["schema_version"] != str(SCHEMA_VERSION):
                raise StoreError(
                    f"store schema version {rows['schema_version']} is not {SCHEMA_VERSION}; "
                    "ingest the source files again into a new store"
                )
            if create:
                create_views(conn)
        if rows.get("extractor_version") != str(EXTRACTOR_VERSION):
            self.reextract()

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction (``BEGIN IMMEDIATE`` on SQLite, so concurrent writers queue)."""
        with self.engine.connect() as plain:
            conn = plain.execution_options(sqlite_begin="IMMEDIATE")
            with conn.begin():
                yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    # -- writing --------------------------------------------------------------------------
    def write_batch(self, source: str, items: Sequence[ParsedResource], now: int) -> WriteStats:
        """Store one batch as new versions; returns what changed. ``now`` is µs since the epoch.
        Facts are extracted only for resources that changed."""
        return self.write_prepared(source, [prepare(item) for item in items], now)

    def write_prepared(
        self,
        source: str,
        items: Sequence[Prepared],
        now: int,
        *,
        expect_version: Mapping[tuple[str, str], int | None] | None = None,
    ) -> WriteStats:
        """Store prepared resources (see :func:`prepare`) as new versions, in one transaction.

        ``expect_version`` makes the write conditional (FHIR R4 http.html#concurrency "Managing Resource
        Contention", ``If-Match``): for each ``(type, id)`` listed, the current version (a
        tombstone counts) must be the given number, or absent for ``None``; otherwise nothing is
        written and :class:`PreconditionFailedError` is raised with ``location = "Type/id"``.
        When ``expect_version`` is given (even empty) the batch's keys are locked first, so two
        conditional writers of one resource cannot both pass the check: PostgreSQL takes
        transaction-scoped advisory locks, SQLite already serialises writers (``BEGIN IMMEDIATE``).
        """
        stats = WriteStats()
        if not items:
            return stats

        def once() -> WriteStats:
            with self.write() as conn:
                if expect_version is not None:
                    self._lock(conn, (_key_token(source, rtype, rid) for rtype, rid in _keys(items)))
                return self._write_in(conn, source, items, now, expect_version or {})

        try:
            stats = self._retrying(once)
        except DRIVER_ERRORS as exc:
            raise self._write_failed(exc) from exc
        self._after_write()
        return stats

    def _retrying(self, write: Callable[[], T]) -> T:
        """Run the write transaction ``write``, again (at most :data:`WRITE_ATTEMPTS` times in all,
        with a short backoff) when PostgreSQL dropped its connection: the server terminated the
        backend (restart, failover, ``pg_terminate_backend``) or the network closed it. The
        transaction was rolled back with the connection, so running it again loses nothing, and it
        duplicates nothing either: a resource whose current version already has the same content
        is skipped, even when the commit did reach the server before the connection dropped (then
        the repeated write reports those resources as unchanged). Other errors are not retried."""
        for attempt in Retrying(
            retry=retry_if_exception(connection_dropped),
            stop=stop_after_attempt(WRITE_ATTEMPTS),
            wait=wait_exponential(multiplier=0.05, max=2.0),
            before_sleep=self._before_retry,
            reraise=True,
        ):
            with attempt:
                return write()
        raise AssertionError("unreachable: tenacity reraises the last error")  # pragma: no cover

    def _before_retry(self, state: RetryCallState) -> None:
        self._cids.clear()  # code ids cached by the rolled-back attempt may not exist
        log.warning(
            "store connection dropped during a write (attempt %d of %d); writing the batch again",
            state.attempt_number, WRITE_ATTEMPTS,
        )  # fmt: skip

    def create_unless_exists(
        self, source: str, item: Prepared, now: int, *, identifier: tuple[str | None, str]
    ) -> tuple[list[str], WriteStats]:
        """Conditional create (FHIR R4 http.html#ccreate, ``If-None-Exist: identifier=[system|]value``) in
        one write transaction: the ids of the current, not deleted resources of ``item``'s type
        in ``source`` with that identifier (``system`` ``None``: any system, ``""``: none), and
        when there are none, ``item`` written. Concurrent conditional creates with the same
        identifier are serialised (see :meth:`write_prepared`)."""
        system, value = identifier

        def once() -> tuple[list[str], WriteStats]:
            with self.write() as conn:
                self._lock(conn, [f"{source}|{item.rtype}?identifier={system}|{value}"])
                found = self._find_identifier(conn, source, item.rtype, system, value)
                return found, (WriteStats() if found else self._write_in(conn, source, [item], now, {}))

        try:
            found, stats = self._retrying(once)
        except DRIVER_ERRORS as exc:
            raise self._write_failed(exc) from exc
        if not found:
            self._after_write()
        return found, stats

    def _write_failed(self, exc: Exception) -> Exception:
        # The transaction rolled back: code ids cached during it may not exist.
        self._cids.clear()
        if "uq_resource_version" in str(exc):
            return ConflictError(
                "another write of the same resource committed meanwhile; send the request again"
            )
        return StoreError(f"write to the store failed: {exc.__class__.__name__}: {exc}")

    def _after_write(self) -> None:
        self._batches += 1
        if self.dialect == "postgresql" and self._batches & (self._batches - 1) == 0:
            # After batches 1, 2, 4, 8, …: a growing table whose statistics still say "empty"
            # makes PostgreSQL scan it for every batch's version lookup (quadratic loads).
            try:
                with self.engine.begin() as conn:
                    conn.execute(text("ANALYZE resources"))
            except DRIVER_ERRORS as exc:  # the batch is committed; fresher statistics can wait
                log.warning("ANALYZE resources after a write failed: %s", exc.__class__.__name__)

    def _lock(self, conn: Connection, tokens: Iterable[str]) -> None:
        """Transaction-scoped PostgreSQL advisory locks on the stripes of ``tokens``, in
        ascending order (no deadlock between two lockers). Striping bounds the locks one
        transaction holds (PostgreSQL's lock table is small); SQLite needs none."""
        if self.dialect != "postgresql":
            return
        stripes = sorted({int.from_bytes(hashlib.blake2b(t.encode(), digest_size=4).digest()) % _STRIPES
                          for t in tokens})  # fmt: skip
        for stripe in stripes:
            conn.execute(text("SELECT pg_advisory_xact_lock(:ns, :k)"), {"ns": _LOCK_NAMESPACE, "k": stripe})

    def _find_identifier(
        self, conn: Connection, source: str, rtype: str, system: str | None, value: str
    ) -> list[str]:
        sql = (
            "SELECT r.rid, b.body FROM resources r JOIN resource_bodies b ON b.rkey = r.rkey "
            "WHERE r.source = :source AND r.rtype = :rtype AND r.superseded_at IS NULL AND r.deleted = 0"
        )
        params: dict[str, Any] = {"source": source, "rtype": rtype}
        if _PLAIN_VALUE.fullmatch(value):
            # Prefilter on the JSON string's bytes (no JSON encoder escapes these characters).
            params["needle"] = orjson.dumps(value)
            sql += (
                " AND position(:needle in b.body) > 0"
                if self.dialect == "postgresql"
                else " AND instr(b.body, :needle) > 0"
            )
        found: list[str] = []
        for rid, body in conn.execute(text(sql + " ORDER BY r.rid"), params):
            try:
                resource = orjson.loads(body)
            except orjson.JSONDecodeError:
                continue
            for ident in resource.get("identifier") or () if isinstance(resource, dict) else ():
                if not isinstance(ident, dict) or not isinstance(ident.get("value"), str):
                    continue
                if ident["value"] != value:
                    continue
                if system is None or (ident.get("system") or "") == system:
                    found.append(rid)
                    break
        return found

    def _write_in(
        self,
        conn: Connection,
        source: str,
        items: Sequence[Prepared],
        now: int,
        expect_version: Mapping[tuple[str, str], int | None],
    ) -> WriteStats:
        stats = WriteStats()
        # The last occurrence of a key in the batch wins (same arrival time).
        latest: dict[tuple[str, str], Prepared] = {}
        for item in items:
            latest[(item.rtype, item.rid)] = item
        current = self._current_versions(conn, source, list(latest))
        for key, expected in expect_version.items():
            old = current.get(key)
            actual = old[1] if old is not None else None
            if actual != expected:
                have = f"version {actual}" if actual is not None else "no version"
                want = f"version {expected}" if expected is not None else "no version"
                raise PreconditionFailedError(
                    f"{key[0]}/{key[1]} has {have}, not {want}", location=f"{key[0]}/{key[1]}"
                )
        new_rows: list[list[Any]] = []
        superseded: list[int] = []
        pending: list[Prepared] = []
        for key, item in latest.items():
            old = current.get(key)
            if old is not None:
                old_rkey, old_version, old_hash, old_deleted, old_at = old
                if (item.deleted and old_deleted) or (
                    not item.deleted and not old_deleted and old_hash == item.digest
                ):
                    stats.unchanged += 1
                    stats.results[key] = KeyResult("unchanged", old_version, old_at, bool(old_deleted))
                    continue
                superseded.append(old_rkey)
                version = old_version + 1
            elif item.deleted:
                stats.unchanged += 1
                stats.results[key] = KeyResult("unchanged", None, None, True)
                continue
            else:
                version = 1
            if item.deleted:
                stats.deleted += 1
                outcome = "deleted"
            elif old is None:
                stats.created += 1
                outcome = "created"
            else:
                stats.updated += 1
                outcome = "updated"
            stats.results[key] = KeyResult(outcome, version, now, item.deleted)
            new_rows.append(
                [source, item.rtype, item.rid, version, now, None, 1 if item.deleted else 0, item.digest,
                 item.last_updated]
            )  # fmt: skip
            pending.append(item)
        if superseded:
            for chunk in _chunks(superseded, _CHUNK):
                conn.execute(
                    text(f"UPDATE resources SET superseded_at = :now WHERE rkey IN ({_ints(chunk)})"),
                    {"now": now},
                )
        if new_rows:
            rkeys = self._allocate_rkeys(conn, len(new_rows))
            for row, rkey in zip(new_rows, rkeys, strict=True):
                row.insert(0, rkey)
            self._bulk(
                conn,
                "resources",
                ("rkey", "source", "rtype", "rid", "version", "ingested_at", "superseded_at", "deleted",
                 "hash", "last_updated"),
                new_rows,
            )  # fmt: skip
            self._bulk(
                conn,
                "resource_bodies",
                ("rkey", "body"),
                [(rkey, item.body) for rkey, item in zip(rkeys, pending, strict=True)],
            )
            facts = [
                (rkey, self._facts(item, source))
                for rkey, item in zip(rkeys, pending, strict=True)
                if not item.deleted
            ]
            self._write_facts(conn, facts)
        return stats

    def _facts(self, item: Prepared, source: str) -> Facts | None:
        if item.facts is not None:
            return item.facts
        assert item.resource is not None
        return extract(item.resource, source, self.member_system, self.tz)

    def _current_versions(
        self, conn: Connection, source: str, keys: list[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[int, int, str, int, int]]:
        """(rkey, version, hash, deleted, ingested_at) of the current versions of ``keys``."""
        by_type: dict[str, list[str]] = {}
        for rtype, rid in keys:
            by_type.setdefault(rtype, []).append(rid)
        found: dict[tuple[str, str], tuple[int, int, str, int, int]] = {}
        raw = conn.connection.driver_connection
        assert raw is not None
        cur = raw.cursor()
        try:
            for rtype, rids in by_type.items():
                if self.dialect == "postgresql":
                    cur.execute(
                        "SELECT rid, rkey, version, hash, deleted, ingested_at FROM resources WHERE source = %s "
                        "AND rtype = %s "
                        "AND rid = ANY(%s) AND superseded_at IS NULL",
                        (source, rtype, list(rids)),
                    )
                    rows = cur.fetchall()
                else:
                    rows = []
                    for chunk in _chunks(rids, _CHUNK):
                        marks = ", ".join("?" for _ in chunk)
                        cur.execute(
                            "SELECT rid, rkey, version, hash, deleted, ingested_at FROM resources WHERE source = ? "
                            "AND rtype = ? "
                            f"AND rid IN ({marks}) AND superseded_at IS NULL",
                            (source, rtype, *chunk),
                        )
                        rows.extend(cur.fetchall())
                for rid, rkey, version, digest, deleted, at in rows:
                    found[(rtype, rid)] = (rkey, version, digest, deleted, at)
        finally:
            cur.close()
        return found

    def _allocate_rkeys(self, conn: Connection, n: int) -> list[int]:
        if self.dialect == "postgresql":
            rows = conn.execute(
                text(
                    "SELECT nextval(pg_get_serial_sequence('resources', 'rkey')) FROM generate_series(1, :n)"
                ),
                {"n": n},
            )
            return [int(r[0]) for r in rows]
        start = int(conn.execute(text("SELECT COALESCE(MAX(rkey), 0) FROM resources")).scalar_one()) + 1
        return list(range(start, start + n))

    def _bulk(
        self, conn: Connection, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        if not rows:
            return
        raw = conn.connection.driver_connection
        assert raw is not None
        cols = ", ".join(f'"{c}"' for c in columns)
        if self.dialect == "postgresql":
            with raw.cursor() as cur, cur.copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            marks = ", ".join("?" for _ in columns)
            cur = raw.cursor()
            try:
                cur.executemany(f"INSERT INTO {table} ({cols}) VALUES ({marks})", rows)
            finally:
                cur.close()

    def _code_ids(self, conn: Connection, pairs: set[tuple[str, str]]) -> None:
        missing = [p for p in pairs if p not in self._cids]
        if not missing:
            return
        conflict = "ON CONFLICT (system, code) DO NOTHING"
        for chunk in _chunks(missing, _CHUNK):
            params: dict[str, str] = {}
            values = []
            for n, (system, code) in enumerate(chunk):
                params[f"s{n}"] = system[:256]
                params[f"c{n}"] = code[:128]
                values.append(f"(:s{n}, :c{n})")
            conn.execute(
                text(f"INSERT INTO codes (system, code) VALUES {', '.join(values)} {conflict}"), params
            )
        # Read back every id (another writer may have created some of them).
        for chunk in _chunks(missing, _CHUNK):
            params = {}
            conds = []
            for n, (system, code) in enumerate(chunk):
                params[f"s{n}"] = system[:256]
                params[f"c{n}"] = code[:128]
                conds.append(f"(system = :s{n} AND code = :c{n})")
            for cid, system, code in conn.execute(
                text(f"SELECT cid, system, code FROM codes WHERE {' OR '.join(conds)}"), params
            ):
                self._cids[(system, code)] = cid
        for system, code in missing:  # truncated keys map to their truncated twin
            self._cids.setdefault((system, code), self._cids[(system[:256], code[:128])])

    def _write_facts(self, conn: Connection, facts: Iterable[tuple[int, Facts | None]]) -> None:
        patients: list[tuple[Any, ...]] = []
        coverages: list[tuple[Any, ...]] = []
        orgs: list[tuple[Any, ...]] = []
        events: list[tuple[Any, ...]] = []
        lines: list[tuple[Any, ...]] = []
        code_rows: list[tuple[int, int, str, int | None, tuple[str, str]]] = []
        refs: list[tuple[Any, ...]] = []
        providers: list[tuple[Any, ...]] = []
        members: list[tuple[Any, ...]] = []
        reports: list[tuple[Any, ...]] = []
        observations: list[tuple[Any, ...]] = []
        pairs: set[tuple[str, str]] = set()
        for rkey, f in facts:
            if f is None:
                continue
            if f.patient is not None:
                patients.append((rkey, *f.patient))
            coverages.extend((rkey, *row) for row in f.coverages)
            orgs.extend((rkey, *ident) for ident in f.org_idents)
            providers.extend((rkey, *row) for row in f.providers)
            members.extend((rkey, *row) for row in f.group_members)
            if f.report is not None:
                reports.append((rkey, *f.report))
            observations.extend((rkey, *row) for row in f.observations)
            if f.event is not None:
                events.append((rkey, *f.event))
                source = f.event[0]
                lines.extend((rkey, *line) for line in f.lines)
                refs.extend((rkey, source, *ref) for ref in f.refs)
            for line, role, seq, system, code in f.codes:
                pair = (system, code)
                pairs.add(pair)
                code_rows.append((rkey, line, role, seq, pair))
        self._code_ids(conn, pairs)
        cids = self._cids
        self._bulk(conn, "f_patient", _cols("f_patient"), patients)
        self._bulk(conn, "f_coverage", _cols("f_coverage"), coverages)
        self._bulk(conn, "f_org_ident", _cols("f_org_ident"), orgs)
        self._bulk(conn, "f_event", _cols("f_event"), events)
        self._bulk(conn, "f_line", _cols("f_line"), lines)
        self._bulk(conn, "f_ref", _cols("f_ref"), refs)
        self._bulk(conn, "f_provider", _cols("f_provider"), providers)
        self._bulk(conn, "f_group_member", _cols("f_group_member"), members)
        self._bulk(conn, "f_report", _cols("f_report"), reports)
        self._bulk(conn, "f_observation", _cols("f_observation"), observations)
        self._bulk(
            conn,
            "f_code",
            _cols("f_code"),
            [(rkey, line, role, seq, cids[pair]) for rkey, line, role, seq, pair in code_rows],
        )

    # -- maintenance ----------------------------------------------------------------------
    def analyze(self) -> None:
        """Refresh the planner's statistics after a load (PostgreSQL's autovacuum lags behind a
        bulk load; SQLite keeps none until asked). Without them both planners choose nested
        loops over the fact tables. Run again when PostgreSQL dropped the connection (see
        :meth:`_retrying`)."""

        def once() -> None:
            with self.engine.connect() as conn:
                if self.dialect == "postgresql":
                    with conn.begin():
                        conn.execute(text("ANALYZE " + ", ".join(t.name for t in metadata.sorted_tables)))
                else:
                    with conn.begin():  # committed: outside a transaction the statistics roll back
                        conn.exec_driver_sql("PRAGMA analysis_limit = 1000")
                        conn.exec_driver_sql("ANALYZE")

        self._retrying(once)

    def reextract(self, batch: int = 5000) -> int:
        """Re-materialise every fact from the raw resources (after an extractor change)."""
        count = 0
        with self.write() as conn:
            for table in FACT_TABLES:
                conn.execute(text(f"DELETE FROM {table.name}"))
            result = conn.execute(
                text(
                    "SELECT r.rkey, r.source, b.body FROM resources r JOIN resource_bodies b ON b.rkey = r.rkey "
                    "WHERE r.deleted = 0 ORDER BY r.rkey"
                )
            ).yield_per(batch)
            buffer: list[tuple[int, Facts | None]] = []
            for rkey, source, body in result:
                resource = orjson.loads(body)
                buffer.append((rkey, extract(resource, source, self.member_system, self.tz)))
                count += 1
                if len(buffer) >= batch:
                    self._write_facts(conn, buffer)
                    buffer = []
            self._write_facts(conn, buffer)
            conn.execute(
                text("UPDATE store_meta SET value = :v WHERE key = 'extractor_version'"),
                {"v": str(EXTRACTOR_VERSION)},
            )
        return count


_COLUMNS = {table.name: tuple(c.name for c in table.columns) for table in metadata.sorted_tables}


def _cols(table: str) -> tuple[str, ...]:
    return _COLUMNS[table]


def _keys(items: Iterable[Prepared]) -> set[tuple[str, str]]:
    return {(item.rtype, item.rid) for item in items}


def _key_token(source: str, rtype: str, rid: str) -> str:
    return f"{source}|{rtype}/{rid}"


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _ints(values: Iterable[int]) -> str:
    return ", ".join(str(int(v)) for v in values)
