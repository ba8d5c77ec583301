"""Shared fixtures: a store on each engine (SQLite file, real PostgreSQL in an isolated schema)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import create_engine, text

from fhir_adapter.mappings import load_mappings
from fhir_adapter.measure.spec import Mappings
from fhir_adapter.settings import DEFAULT_MEMBER_ID_SYSTEM, Settings
from fhir_adapter.store.db import Store

ROOT = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("FHIR_ADAPTER_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
TZ = ZoneInfo("America/Los_Angeles")
ENGINES = ("sqlite", "postgresql")


def _pg_reason() -> str | None:
    try:
        engine = create_engine(PG_URL)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:  # pragma: no cover - depends on the machine
        return f"PostgreSQL at {PG_URL} is not reachable ({exc.__class__.__name__}); PostgreSQL tests skipped"
    return None


@pytest.fixture(scope="session")
def mappings() -> Mappings:
    return load_mappings(ROOT / "mappings")


@pytest.fixture(scope="session")
def pg_schemas() -> Iterator[list[str]]:
    """Schemas made by this run and not yet dropped by their test; dropped at the end, so runs
    never see each other's data."""
    made: list[str] = []
    yield made
    _drop_schemas(made)


def _drop_schemas(schemas: list[str]) -> None:
    """Drop each schema in its own transaction (one transaction over hundreds of schemas runs
    out of PostgreSQL's lock table)."""
    if not schemas:
        return
    engine = create_engine(PG_URL)
    try:
        for schema in list(schemas):
            with engine.begin() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            schemas.remove(schema)
    finally:
        engine.dispose()


StoreFactory = Callable[[], Store]


def make_store_factory(engine_name: str, tmp_path: Path, pg_schemas: list[str]) -> StoreFactory:
    opened: list[Store] = []

    def factory() -> Store:
        if engine_name == "sqlite":
            url = f"sqlite:///{tmp_path / f'store-{len(opened)}.db'}"
        else:
            reason = _pg_reason()
            if reason:
                pytest.skip(reason)
            schema = f"t_{uuid.uuid4().hex[:16]}"
            engine = create_engine(PG_URL)
            with engine.begin() as conn:
                conn.execute(text(f'CREATE SCHEMA "{schema}"'))
            engine.dispose()
            pg_schemas.append(schema)
            url = f"{PG_URL}?options=-csearch_path%3D{schema}"
        store = Store.open(url, tz=TZ, member_system=DEFAULT_MEMBER_ID_SYSTEM)
        opened.append(store)
        return store

    factory.opened = opened  # type: ignore[attr-defined]
    return factory


@pytest.fixture(params=ENGINES)
def engine_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store_factory(engine_name: str, tmp_path: Path, pg_schemas: list[str]) -> Iterator[StoreFactory]:
    before = len(pg_schemas)
    factory = make_store_factory(engine_name, tmp_path, pg_schemas)
    yield factory
    for store in factory.opened:  # type: ignore[attr-defined]
        store.close()
    # Tests run one at a time per (xdist) process, so the schemas added since are this test's.
    mine = pg_schemas[before:]
    del pg_schemas[before:]
    try:
        _drop_schemas(mine)
    finally:
        pg_schemas.extend(mine)  # any left over are dropped at the end of the session


@pytest.fixture
def store(store_factory: StoreFactory) -> Store:
    return store_factory()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(database_url=f"sqlite:///{tmp_path / 'cli.db'}", mappings_dir=ROOT / "mappings")
