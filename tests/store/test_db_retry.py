"""A write whose PostgreSQL connection drops is written again: no loss, no duplicate (issue #7).

The connection is dropped for real: a second connection runs ``pg_terminate_backend`` on the
writer's backend in the middle of its transaction (what a server restart or a failover does to
it). The real PostgreSQL server is never restarted: other sessions' tests use it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.exc import OperationalError

from fhir_adapter.errors import StoreError
from fhir_adapter.store import db
from fhir_adapter.store.db import ParsedResource, Store, connection_dropped, prepare
from tests import cohorts as c
from tests.conftest import PG_URL, StoreFactory

POSTGRESQL = pytest.mark.parametrize("engine_name", ["postgresql"])


def _items(n: int, prefix: str = "r") -> list[ParsedResource]:
    resources = [c.patient(f"{prefix}{i}", "2021-01-01", member=f"M-{prefix}{i}") for i in range(n)]
    return [ParsedResource("Patient", r["id"], r) for r in resources]


def _terminate(pid: int) -> None:
    engine = create_engine(PG_URL)
    try:
        with engine.begin() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar_one()
    finally:
        engine.dispose()


def _versions(store: Store) -> list[tuple[str, int]]:
    with store.read() as conn:
        return [
            (r[0], int(r[1])) for r in conn.execute(text("SELECT rid, version FROM resources ORDER BY rid"))
        ]


def _kill_on_calls(store: Store, calls: set[int], monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make the writer's backend be terminated at the start of the listed ``_write_in`` calls
    (1-based), inside its open transaction; returns the list of calls made."""
    made: list[int] = []
    real: Callable[..., Any] = store._write_in

    def write_in(conn: Connection, *args: Any, **kwargs: Any) -> Any:
        made.append(len(made) + 1)
        if len(made) in calls:
            raw = conn.connection.driver_connection
            assert isinstance(raw, psycopg.Connection)
            _terminate(raw.info.backend_pid)
        return real(conn, *args, **kwargs)

    monkeypatch.setattr(store, "_write_in", write_in)
    return made


@POSTGRESQL
@pytest.mark.parametrize("expect", [None, {}], ids=["plain-batch", "conditional-write"])
def test_a_dropped_connection_is_retried_without_loss_or_duplication(
    store_factory: StoreFactory, monkeypatch: pytest.MonkeyPatch, expect: dict[tuple[str, str], int] | None
) -> None:
    store = store_factory()
    store.write_batch("src", _items(30, "before"), 1)
    made = _kill_on_calls(store, {1, 2}, monkeypatch)
    stats = store.write_prepared("src", [prepare(i) for i in _items(200)], 2, expect_version=expect)
    assert made == [1, 2, 3]  # two attempts lost their connection, the third wrote
    assert stats.created == 200
    versions = _versions(store)
    assert len(versions) == 230 and {v for _rid, v in versions} == {1}
    # the store goes on working on the next write (the pool replaced the dead connection)
    assert store.write_batch("src", _items(5, "after"), 3).created == 5


@POSTGRESQL
def test_a_commit_whose_answer_was_lost_is_not_written_twice(
    store_factory: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection drops after the server committed but before the client heard it: the retry
    finds the same content current and skips it (the batch is idempotent)."""
    store = store_factory()
    real_write = store.write
    calls = []

    @contextmanager
    def write() -> Iterator[Connection]:
        calls.append(1)
        with real_write() as conn:
            yield conn
        if len(calls) == 1:  # committed; then the "network" fails
            raise OperationalError(
                "COMMIT", {}, psycopg.OperationalError("server closed the connection unexpectedly")
            )

    monkeypatch.setattr(store, "write", write)
    stats = store.write_batch("src", _items(50), 1)
    assert len(calls) == 2
    assert (stats.created, stats.unchanged) == (0, 50)  # the retry saw the committed batch
    assert {v for _rid, v in _versions(store)} == {1} and len(_versions(store)) == 50


@POSTGRESQL
def test_attempts_are_bounded_and_nothing_is_half_written(
    store_factory: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = store_factory()
    monkeypatch.setattr(db, "WRITE_ATTEMPTS", 3)
    made = _kill_on_calls(store, {1, 2, 3, 4}, monkeypatch)
    with pytest.raises(StoreError, match="write to the store failed"):
        store.write_batch("src", _items(20), 1)
    assert made == [1, 2, 3]
    assert _versions(store) == []


@pytest.mark.parametrize(
    ("error", "dropped"),
    [
        pytest.param(psycopg.errors.AdminShutdown("terminating connection"), True, id="admin-shutdown"),
        pytest.param(psycopg.OperationalError("the connection is closed"), True, id="closed"),
        pytest.param(OperationalError("SELECT 1", {}, psycopg.OperationalError("server closed")), True,
                     id="wrapped-by-sqlalchemy"),
        pytest.param(psycopg.errors.UniqueViolation("uq_resource_version"), False, id="unique-violation"),
        pytest.param(psycopg.errors.DataError("invalid input"), False, id="data-error"),
        pytest.param(OperationalError("BEGIN", {}, sqlite3.OperationalError("database is locked")), False,
                     id="sqlite-locked"),
        pytest.param(ValueError("x"), False, id="not-a-database-error"),
    ],
)  # fmt: skip
def test_only_dropped_connections_are_retried(error: BaseException, dropped: bool) -> None:
    assert connection_dropped(error) is dropped
