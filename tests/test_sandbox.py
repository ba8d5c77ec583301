"""The sandbox store (fhir_adapter/sandbox.py) on both engines: seeded when new, reused after,
re-seeded after an unfinished seeding or with reset, and never touching data it did not create."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from fhir_adapter.errors import UsageError
from fhir_adapter.sandbox import MARKER_KEY, prepare, reset_store
from fhir_adapter.settings import Settings
from fhir_adapter.store.db import ParsedResource, Store

ROOT = Path(__file__).resolve().parent.parent
PATIENTS = 4


def _settings(store: Store) -> Settings:
    url = store.engine.url.render_as_string(hide_password=False)
    return Settings(database_url=url, mappings_dir=ROOT / "mappings", ingest_workers=1)


def _count(store: Store, where: str = "1 = 1") -> int:
    with store.read() as conn:
        return int(conn.execute(text(f"SELECT COUNT(*) FROM resources WHERE {where}")).scalar() or 0)


def _push(store: Store, rid: str) -> None:
    store.write_batch("rest", [ParsedResource("Patient", rid, {"resourceType": "Patient", "id": rid})], 1)


def test_new_store_is_seeded_then_reused(store: Store) -> None:
    settings = _settings(store)
    messages: list[str] = []
    first = prepare(settings, patients=PATIENTS, seed=3, progress=messages.append)
    assert first.seeded_now
    assert (first.patients, first.seed) == (PATIENTS, 3)
    assert first.resources == _count(store) > 0
    sources = {"oha-claims", "ehr-clinic-a", "ehr-clinic-b"}
    with store.read() as conn:
        assert {s for (s,) in conn.execute(text("SELECT DISTINCT source FROM resources"))} == sources
    assert any(m.startswith("ingested") for m in messages)

    messages.clear()
    again = prepare(settings, patients=PATIENTS + 1, seed=3, progress=messages.append)
    assert not again.seeded_now
    assert (again.patients, again.resources) == (PATIENTS, first.resources)
    assert any("--reset re-seeds" in m for m in messages)


def test_foreign_data_is_refused_and_never_reset(store: Store) -> None:
    _push(store, "real-child")
    settings = _settings(store)
    with pytest.raises(UsageError, match="did not create"):
        prepare(settings, patients=PATIENTS)
    with pytest.raises(UsageError, match=r"--reset: .*did not create"):
        prepare(settings, patients=PATIENTS, reset=True)
    with pytest.raises(UsageError):
        reset_store(settings.database_url)
    assert _count(store) == 1


def test_unfinished_seeding_is_completed(store: Store) -> None:
    settings = _settings(store)
    with store.write() as conn:
        conn.execute(
            text("INSERT INTO store_meta (key, value) VALUES (:k, :v)"),
            {"k": MARKER_KEY, "v": '{"patients": 4, "seed": 7, "complete": false}'},
        )
    _push(store, "half-way")
    state = prepare(settings, patients=PATIENTS, seed=7)
    assert state.seeded_now
    assert _count(store, "source = 'oha-claims'") > 0


def test_reset_drops_pushes_and_reseeds(store: Store) -> None:
    settings = _settings(store)
    seeded = prepare(settings, patients=PATIENTS)
    _push(store, "pushed-in-the-sandbox")
    assert _count(store, "rid = 'pushed-in-the-sandbox'") == 1
    store.close()  # let the reset drop the tables
    state = prepare(settings, patients=PATIENTS, reset=True)
    assert state.seeded_now
    assert state.resources == seeded.resources
    assert _count(store, "rid = 'pushed-in-the-sandbox'") == 0


def test_reset_of_a_store_that_does_not_exist_yet(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    reset_store(url)  # nothing to drop, no error
    state = prepare(Settings(database_url=url, mappings_dir=ROOT / "mappings", ingest_workers=1), patients=2)
    assert state.seeded_now and state.resources > 0
