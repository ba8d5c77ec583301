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
    """Schemas made by this run; dropped at the end, so runs never see each other's data."""
    made: list[str] = []
    yield made
    if made:
        engine = create_engine(PG_URL)
        with engine.begin() as conn:
            for schema in made:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
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
    factory = make_store_factory(engine_name, tmp_path, pg_schemas)
    yield factory
    for store in factory.opened:  # type: ignore[attr-defined]
        store.close()


@pytest.fixture
def store(store_factory: StoreFactory) -> Store:
    return store_factory()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(database_url=f"sqlite:///{tmp_path / 'cli.db'}", mappings_dir=ROOT / "mappings")
