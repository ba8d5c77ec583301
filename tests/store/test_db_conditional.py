"""The store's conditional writes (Store.write_prepared(expect_version=…), create_unless_exists)
and per-key write results, on both engines, including concurrent writers."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import text

from fhir_adapter.errors import PreconditionFailedError
from fhir_adapter.store.db import KeyResult, ParsedResource, Prepared, Store, prepare
from tests import cohorts as c
from tests.conftest import StoreFactory

MEMBER = c.MEMBER


def _item(resource: dict[str, Any], *, deleted: bool = False) -> Prepared:
    return prepare(ParsedResource(resource["resourceType"], resource["id"], resource, deleted=deleted))


def _versions(store: Store, rid: str) -> list[tuple[int, int]]:
    with store.read() as conn:
        rows = conn.execute(
            text("SELECT version, deleted FROM resources WHERE rid = :r ORDER BY version"), {"r": rid}
        )
        return [(int(v), int(d)) for v, d in rows]


def test_results_per_key(store: Store) -> None:
    first = store.write_prepared("s", [_item(c.patient("a", "2021-01-01"))], 10)
    assert first.results[("Patient", "a")] == KeyResult("created", 1, 10, False)
    again = store.write_prepared(
        "s",
        [_item(c.patient("a", "2021-01-01")), _item(c.patient("b", "2021-01-01"))],
        20,
        expect_version={},
    )
    assert again.results == {
        ("Patient", "a"): KeyResult("unchanged", 1, 10, False),
        ("Patient", "b"): KeyResult("created", 1, 20, False),
    }
    gone = store.write_prepared(
        "s",
        [_item(c.patient("a", "2021-01-01"), deleted=True), _item(c.patient("z", None), deleted=True)],
        30,
    )
    assert gone.results == {
        ("Patient", "a"): KeyResult("deleted", 2, 30, True),
        ("Patient", "z"): KeyResult("unchanged", None, None, True),
    }


@pytest.mark.parametrize(
    ("expected", "ok"),
    [
        pytest.param(1, True, id="current-version"),
        pytest.param(2, False, id="future-version"),
        pytest.param(None, False, id="expects-absent-but-exists"),
    ],
)
def test_expect_version(store: Store, expected: int | None, ok: bool) -> None:
    store.write_prepared("s", [_item(c.patient("a", "2021-01-01"))], 10)
    write = [_item(c.patient("a", "2021-02-02"))]
    if ok:
        assert store.write_prepared("s", write, 20, expect_version={("Patient", "a"): expected}).updated == 1
        assert _versions(store, "a") == [(1, 0), (2, 0)]
    else:
        with pytest.raises(PreconditionFailedError) as caught:
            store.write_prepared("s", write, 20, expect_version={("Patient", "a"): expected})
        assert caught.value.location == "Patient/a"
        assert _versions(store, "a") == [(1, 0)]


def test_expect_absent_creates_and_other_sources_do_not_count(store: Store) -> None:
    store.write_prepared("other", [_item(c.patient("a", "2021-01-01"))], 10)
    stats = store.write_prepared(
        "s", [_item(c.patient("a", "2021-01-01"))], 20, expect_version={("Patient", "a"): None}
    )
    assert stats.created == 1


def test_concurrent_conditional_writers_one_wins(store_factory: StoreFactory) -> None:
    """Two stores (two connection pools, as two server processes would have) race to update
    version 1: exactly one passes the check, the other gets 412, versions stay 1, 2."""
    first, second = store_factory(), None
    # the second handle on the same database
    second = Store(first.engine, first.tz, first.member_system)
    first.write_prepared("s", [_item(c.patient("a", "2021-01-01"))], 10)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def writer(store: Store, birth: str, at: int) -> None:
        barrier.wait()
        try:
            store.write_prepared(
                "s", [_item(c.patient("a", birth))], at, expect_version={("Patient", "a"): 1}
            )
            outcomes.append("ok")
        except PreconditionFailedError:
            outcomes.append("412")

    threads = [
        threading.Thread(target=writer, args=(first, "2021-02-02", 20)),
        threading.Thread(target=writer, args=(second, "2021-03-03", 21)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes) == ["412", "ok"]
    assert _versions(first, "a") == [(1, 0), (2, 0)]


@pytest.mark.parametrize(
    ("identifier", "matches"),
    [
        pytest.param((MEMBER, "M-1"), ["p1", "p2"], id="system-and-value-two"),
        pytest.param((MEMBER, "M-3"), ["p3"], id="system-and-value-one"),
        pytest.param((MEMBER, "M-9"), [], id="none"),
        pytest.param((None, "M-3"), ["n3", "p3", "q3"], id="any-system"),
        pytest.param(("", "M-3"), ["n3"], id="no-system"),
        pytest.param(("https://other", "M-3"), ["q3"], id="other-system"),
        pytest.param((MEMBER, 'M "quoted"/é'), ["w"], id="value-needing-json-escapes"),
    ],
)
def test_create_unless_exists(store: Store, identifier: tuple[str | None, str], matches: list[str]) -> None:
    store.write_prepared(
        "s",
        [
            _item(c.patient("p1", None, member="M-1")),
            _item(c.patient("p2", None, member="M-1")),
            _item(c.patient("p3", None, member="M-3")),
            _item(c.patient("q3", None, identifier=[{"system": "https://other", "value": "M-3"}])),
            _item(c.patient("n3", None, identifier=[{"value": "M-3"}])),
            _item(c.patient("w", None, member='M "quoted"/é')),
            _item(c.patient("gone", None, member="M-9")),
        ],
        10,
    )
    store.write_prepared("s", [_item(c.patient("gone", None), deleted=True)], 11)
    store.write_prepared("elsewhere", [_item(c.patient("x", None, member="M-9"))], 12)
    found, stats = store.create_unless_exists(
        "s", _item(c.patient("new", None, member="M-9")), 20, identifier=identifier
    )
    assert found == matches
    assert stats.created == (0 if matches else 1)
    assert _versions(store, "new") == ([] if matches else [(1, 0)])


def test_concurrent_conditional_creates_create_once(store_factory: StoreFactory) -> None:
    first = store_factory()
    second = Store(first.engine, first.tz, first.member_system)
    barrier = threading.Barrier(2)
    found: list[list[str]] = []

    def creator(store: Store, rid: str) -> None:
        barrier.wait()
        hits, _stats = store.create_unless_exists(
            "s", _item(c.patient(rid, None, member="M-7")), 10, identifier=(MEMBER, "M-7")
        )
        found.append(hits)

    threads = [threading.Thread(target=creator, args=(s, rid)) for s, rid in ((first, "a"), (second, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(len(hits) for hits in found) == [0, 1]
    with first.read() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM resources")).scalar_one() == 1
