"""The store: versions per source, supersession, deletion, fact re-materialisation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from fhir_adapter.errors import UsageError
from fhir_adapter.fhir.dates import to_micros
from fhir_adapter.ingest.runner import ingest_items
from fhir_adapter.settings import DEFAULT_MEMBER_ID_SYSTEM
from fhir_adapter.store.db import ParsedResource, Store, normalise_url
from tests import cohorts as c
from tests.conftest import TZ, StoreFactory

T0 = datetime(2026, 1, 5, tzinfo=UTC)


def put(
    store: Store, resource: dict[str, object], source: str = "s", at: datetime = T0, deleted: bool = False
) -> None:
    item = ParsedResource(str(resource["resourceType"]), str(resource["id"]), dict(resource), deleted=deleted)
    ingest_items(store, [item], source, batch_size=10, clock=lambda: at)


def versions(store: Store, rid: str) -> list[tuple[str, int, int | None, int]]:
    with store.read() as conn:
        rows = conn.execute(
            text(
                "SELECT source, version, superseded_at, deleted FROM resources WHERE rid = :r ORDER BY source, version"
            ),
            {"r": rid},
        )
        return [(s, v, sup, d) for s, v, sup, d in rows]


def test_versions_and_supersession(store: Store) -> None:
    put(store, c.patient("p", "2022-01-01"))
    put(store, c.patient("p", "2022-01-01"), at=T0 + timedelta(hours=1))  # unchanged: no new version
    put(store, c.patient("p", "2022-01-02"), at=T0 + timedelta(hours=2))
    put(store, c.patient("p", "2022-01-02"), source="other")
    assert versions(store, "p") == [
        ("other", 1, None, 0),
        ("s", 1, to_micros(T0 + timedelta(hours=2)), 0),
        ("s", 2, None, 0),
    ]


def test_delete_is_a_tombstone_version(store: Store) -> None:
    put(store, c.patient("p", "2022-01-01"))
    put(store, {"resourceType": "Patient", "id": "p"}, at=T0 + timedelta(hours=1), deleted=True)
    put(store, {"resourceType": "Patient", "id": "p"}, at=T0 + timedelta(hours=2), deleted=True)  # idempotent
    assert [(v, d) for _s, v, _sup, d in versions(store, "p")] == [(1, 0), (2, 1)]


def test_facts_follow_the_version(store: Store) -> None:
    put(store, c.patient("p", "2022-01-01"))
    put(store, c.patient("p", "2023-01-01"), at=T0 + timedelta(hours=1))
    with store.read() as conn:
        births = sorted(conn.execute(text("SELECT birth_raw FROM f_patient")).scalars())
    assert births == ["2022-01-01", "2023-01-01"]


def test_extractor_change_rematerialises_facts(store_factory: StoreFactory, engine_name: str) -> None:
    store = store_factory()
    put(store, c.eob("e", "p", "2025-01-01"))
    with store.read() as conn:
        before = conn.execute(text("SELECT COUNT(*) FROM f_code")).scalar_one()
    with store.write() as conn:
        conn.execute(text("UPDATE store_meta SET value = '0' WHERE key = 'extractor_version'"))
        conn.execute(text("DELETE FROM f_code"))
    assert store.reextract() == 1
    with store.read() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM f_code")).scalar_one() == before
        assert (
            conn.execute(text("SELECT value FROM store_meta WHERE key = 'extractor_version'")).scalar_one()
            != "0"
        )
    del engine_name


def test_reopening_with_an_old_extractor_version_reextracts(tmp_path: object) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    store = Store.open(url, tz=TZ, member_system=DEFAULT_MEMBER_ID_SYSTEM)
    put(store, c.patient("p", "2022-01-01"))
    with store.write() as conn:
        conn.execute(text("UPDATE store_meta SET value = '0' WHERE key = 'extractor_version'"))
        conn.execute(text("DELETE FROM f_patient"))
    store.close()
    again = Store.open(url, tz=TZ, member_system=DEFAULT_MEMBER_ID_SYSTEM)
    with again.read() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM f_patient")).scalar_one() == 1
    again.close()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("postgresql://u@h/db", "postgresql+psycopg://u@h/db", id="postgresql"),
        pytest.param("postgres://u@h/db", "postgresql+psycopg://u@h/db", id="postgres-alias"),
        pytest.param("sqlite:///./x.db", "sqlite:///./x.db", id="sqlite"),
    ],
)
def test_normalise_url(url: str, expected: str) -> None:
    assert normalise_url(url) == expected


@pytest.mark.parametrize("url", ["mysql://x/y", "not a url"], ids=["mysql", "garbage"])
def test_unsupported_urls(url: str) -> None:
    with pytest.raises(UsageError):
        normalise_url(url)


def test_analyze_keeps_statistics(store: Store, engine_name: str) -> None:
    put(store, c.patient("p", "2022-01-01"))
    store.analyze()
    with store.read() as conn:
        if engine_name == "sqlite":
            rows = conn.execute(
                text("SELECT COUNT(*) FROM sqlite_stat1 WHERE tbl = 'resources'")
            ).scalar_one()
        else:
            rows = conn.execute(
                text(
                    "SELECT COUNT(*) FROM pg_stat_user_tables WHERE relname = 'resources' AND schemaname = current_schema() AND last_analyze IS NOT NULL"
                )
            ).scalar_one()
    assert rows >= 1
