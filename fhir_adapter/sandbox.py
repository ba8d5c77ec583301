"""The sandbox: the FHIR service on a store of synthetic children, authorisation off.

``fhir-adapter sandbox`` (README "Sandbox: push, evaluate, read with curl") lets an EHR developer
push resources, run the measure operations and read the answers without credentials and without
any real data. Its store is its own (``sqlite:///./sandbox.db`` unless ``--database`` names another;
``FHIR_ADAPTER_DATABASE_URL`` is deliberately ignored, as by ``fhir-adapter demo``), seeded by
:func:`fhir_adapter.synth.synthesize` and :func:`fhir_adapter.workflow.ingest` when it is new.

A seeded store carries a marker row in ``store_meta`` (key ``sandbox``). The sandbox refuses to
serve a store that holds data without that marker (it would expose real data with authorisation
off), and ``--reset`` refuses to wipe one. The synthetic years are fixed (:data:`FIRST_YEAR` …
:data:`LAST_YEAR`) so that the README's dates and member ids stay valid in later years.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import SQLAlchemyError

from fhir_adapter import workflow
from fhir_adapter.errors import StoreError, UsageError
from fhir_adapter.settings import Settings
from fhir_adapter.store.db import Store, normalise_url
from fhir_adapter.store.schema import metadata

SANDBOX_DATABASE_URL = "sqlite:///./sandbox.db"
DEFAULT_PATIENTS = 200
DEFAULT_SEED = 7
#: The synthesised years: the issue-focused measure starts in 2025, reach ended in 2024.
FIRST_YEAR = 2024
LAST_YEAR = 2025
MARKER_KEY = "sandbox"
BANNER = "SANDBOX: authorisation is OFF; synthetic data only"


@dataclass(frozen=True)
class SandboxStore:
    """What :func:`prepare` found or did."""

    url: str
    seeded_now: bool
    patients: int
    seed: int
    resources: int


def _marker(store: Store) -> dict[str, object] | None:
    with store.read() as conn:
        value = conn.execute(text("SELECT value FROM store_meta WHERE key = :k"), {"k": MARKER_KEY}).scalar()
    if value is None:
        return None
    loaded = orjson.loads(str(value))
    return loaded if isinstance(loaded, dict) else {}


def _write_marker(store: Store, patients: int, seed: int, complete: bool) -> None:
    value = orjson.dumps({"patients": patients, "seed": seed, "complete": complete}).decode()
    with store.write() as conn:
        conn.execute(text("DELETE FROM store_meta WHERE key = :k"), {"k": MARKER_KEY})
        conn.execute(
            text("INSERT INTO store_meta (key, value) VALUES (:k, :v)"), {"k": MARKER_KEY, "v": value}
        )


def _resource_count(store: Store) -> int:
    with store.read() as conn:
        return int(conn.execute(text("SELECT COUNT(*) FROM resources")).scalar() or 0)


def _foreign_data(url: str) -> str:
    return (
        f"the store at {url} holds data the sandbox did not create; the sandbox serves synthetic data "
        "only, with authorisation off: name another store with --database (or use `fhir-adapter serve`)"
    )


def reset_store(url: str) -> None:
    """Drop every view and table of the store at ``url`` (refused for a store that holds data the
    sandbox did not seed)."""
    engine = create_engine(normalise_url(url), future=True)
    try:
        with engine.begin() as conn:
            tables = set(inspect(conn).get_table_names())
            if "store_meta" in tables:
                marked = conn.execute(
                    text("SELECT COUNT(*) FROM store_meta WHERE key = :k"), {"k": MARKER_KEY}
                ).scalar()
                holds = (
                    "resources" in tables and conn.execute(text("SELECT COUNT(*) FROM resources")).scalar()
                )
                if holds and not marked:
                    raise UsageError("--reset: " + _foreign_data(url))
            # views (fhir_adapter/store/views.py) depend on the tables: drop them first
            preparer = conn.dialect.identifier_preparer
            for view in inspect(conn).get_view_names():
                conn.execute(text(f"DROP VIEW IF EXISTS {preparer.quote(view)}"))
            metadata.drop_all(conn)
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot reset the store at {url}: {exc.__class__.__name__}: {exc}") from exc
    finally:
        engine.dispose()


def prepare(
    settings: Settings,
    *,
    patients: int = DEFAULT_PATIENTS,
    seed: int = DEFAULT_SEED,
    reset: bool = False,
    progress: Callable[[str], None] = lambda _m: None,
) -> SandboxStore:
    """Make the sandbox store ready: with ``reset`` drop it first; seed it when it is new (or when an
    earlier seeding did not finish: ingesting the same files again changes nothing already stored)."""
    from fhir_adapter.synth import synthesize

    url = settings.database_url
    if reset:
        reset_store(url)
        progress(f"reset the sandbox store {url}")
    store = workflow.open_store(settings)
    try:
        marker = _marker(store)
        count = _resource_count(store)
        if marker is None and count:
            raise UsageError(_foreign_data(url))
        if marker is not None and marker.get("complete"):
            old_patients, old_seed = int(str(marker.get("patients"))), int(str(marker.get("seed")))
            if (old_patients, old_seed) != (patients, seed):
                progress(
                    f"the sandbox store already holds {old_patients} synthetic children (seed {old_seed}); "
                    "--reset re-seeds it with the options given"
                )
            return SandboxStore(url, False, old_patients, old_seed, count)
        _write_marker(store, patients, seed, complete=False)
        with tempfile.TemporaryDirectory(prefix="fhir-adapter-sandbox-") as tmp:
            summary = synthesize(
                Path(tmp),
                patients,
                seed,
                first_year=FIRST_YEAR,
                last_year=LAST_YEAR,
                timezone=settings.timezone,
            )
            progress(f"synthesised {summary}")
            for folder in sorted(p for p in Path(tmp).iterdir() if p.is_dir()):
                result = workflow.ingest(settings, store, [folder], folder.name)
                progress(f"ingested {result.read} resources as source {folder.name}")
        _write_marker(store, patients, seed, complete=True)
        return SandboxStore(url, True, patients, seed, _resource_count(store))
    finally:
        store.close()


__all__ = [
    "BANNER",
    "DEFAULT_PATIENTS",
    "DEFAULT_SEED",
    "FIRST_YEAR",
    "LAST_YEAR",
    "SANDBOX_DATABASE_URL",
    "SandboxStore",
    "prepare",
    "reset_store",
]
