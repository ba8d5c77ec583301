"""The dashboard's computation cache: once per key, dependencies first, priorities, failures
retried, bounded size."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future

import pytest

from fhir_adapter.api.dashboard.work import Work, wait_until


@pytest.fixture
def work() -> Iterator[Work]:
    pool = Work(threads=2, capacity=4)
    yield pool
    pool.shutdown()


def test_a_key_is_computed_once(work: Work) -> None:
    calls: list[int] = []
    gate = threading.Event()

    def compute() -> int:
        gate.wait(5)
        calls.append(1)
        return 42

    first = work.get("k", compute)
    second = work.get("k", compute)
    assert first is second
    gate.set()
    assert first.result(5) == 42 and calls == [1]
    assert work.get("k", compute).result(0) == 42 and calls == [1]


def test_dependencies_run_first_and_feed_their_results(work: Work) -> None:
    gate = threading.Event()
    a = work.get("a", lambda: (gate.wait(5), 2)[1])
    b = work.get("b", lambda: 3)
    total = work.get("sum", lambda x, y: x + y, a, b)
    time.sleep(0.05)
    assert not total.done()
    gate.set()
    assert total.result(5) == 5


def test_a_failure_fails_dependents_and_is_retried(work: Work) -> None:
    attempts: list[int] = []

    def flaky() -> int:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("transient")
        return 7

    failed = work.get("f", flaky)
    dependent = work.get("d", lambda v: v * 2, failed)
    with pytest.raises(RuntimeError, match="transient"):
        dependent.result(5)
    with pytest.raises(RuntimeError):
        failed.result(5)
    assert work.get("f", flaky).result(5) == 7  # dropped from the cache, so computed again
    assert len(attempts) == 2


def test_lower_priority_waits_behind(work: Work) -> None:
    order: list[str] = []
    gate = threading.Event()
    blockers = [work.get(f"block{n}", lambda: gate.wait(5)) for n in range(2)]  # both threads busy
    time.sleep(0.05)
    late = work.get("late", lambda: order.append("late"), priority=10)
    early = work.get("early", lambda: order.append("early"), priority=0)
    gate.set()
    wait_until([*blockers, late, early], time.monotonic() + 5)
    assert order[0] == "early"


def test_finished_results_beyond_the_capacity_are_dropped(work: Work) -> None:
    futures = [work.get(n, lambda n=n: n) for n in range(8)]
    wait_until(futures, time.monotonic() + 5)
    work.get("one-more", lambda: 0).result(5)
    assert work.peek(0) is None and work.peek("one-more") is not None


def test_wait_until_returns_at_the_deadline() -> None:
    never: Future[int] = Future()
    started = time.monotonic()
    wait_until([never], started + 0.1)
    assert 0.09 <= time.monotonic() - started < 2
