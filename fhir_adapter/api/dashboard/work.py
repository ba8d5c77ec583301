"""Computations shared by dashboard requests: each runs once per key on a few worker threads
(lower ``priority`` first, then in order of arrival) and its result is kept in memory (least
recently used first out).

A computation may depend on others: it is handed to the pool only once they are done, so a pool
thread never waits for another (no deadlock with few threads). A request waits for the results it
needs up to a deadline and renders what is ready; the rest keeps running and a reload shows it. A
failed computation is dropped from the cache (the request that waited for it sees the error; the
next one tries again).
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Sequence
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from typing import Any, TypeVar

log = logging.getLogger("fhir_adapter.dashboard")

T = TypeVar("T")


class Work:
    """Keyed, cached computations on ``threads`` daemon threads; at most ``capacity`` results kept."""

    def __init__(self, *, threads: int = 2, capacity: int = 256) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[Hashable, Future[Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._queue: queue.PriorityQueue[tuple[int, int, Callable[[], None] | None]] = queue.PriorityQueue()
        self._order = itertools.count()
        self._stopped = False
        self._threads = [
            threading.Thread(target=self._worker, name=f"dashboard-{n}", daemon=True) for n in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def _worker(self) -> None:
        while True:
            _priority, _n, run = self._queue.get()
            if run is None:
                return
            try:
                run()
            except BaseException:  # pragma: no cover - run() stores its errors in its future
                log.exception("dashboard computation failed")

    def peek(self, key: Hashable) -> Future[Any] | None:
        with self._lock:
            return self._entries.get(key)

    def get(
        self, key: Hashable, compute: Callable[..., T], *deps: Future[Any], priority: int = 0
    ) -> Future[T]:
        """The future of ``compute(*results of deps)`` for ``key``: the cached one when there is
        one, else a new one, queued once every dependency is done (a failed dependency fails it)."""
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                return found
            future: Future[T] = Future()
            self._entries[key] = future
            self._evict()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(compute(*(d.result() for d in deps)))
            except BaseException as exc:
                self._drop(key, future)
                future.set_exception(exc)

        self._after(deps, run, priority)
        return future

    def _after(self, deps: Sequence[Future[Any]], run: Callable[[], None], priority: int) -> None:
        pending = [d for d in deps if not d.done()]
        if not pending:
            self._submit(run, priority)
            return
        remaining = [len(pending)]
        lock = threading.Lock()

        def one_done(_f: Future[Any]) -> None:
            with lock:
                remaining[0] -= 1
                last = remaining[0] == 0
            if last:
                self._submit(run, priority)

        for d in pending:
            d.add_done_callback(one_done)

    def _submit(self, run: Callable[[], None], priority: int) -> None:
        if self._stopped:  # the app is stopping: run here
            run()
            return
        self._queue.put((priority, next(self._order), run))

    def _drop(self, key: Hashable, future: Future[Any]) -> None:
        with self._lock:
            if self._entries.get(key) is future:
                del self._entries[key]

    def _evict(self) -> None:
        """Drop the least recently used finished results beyond the capacity (never running ones)."""
        excess = len(self._entries) - self.capacity
        if excess <= 0:
            return
        for key in [k for k, f in self._entries.items() if f.done()][:excess]:
            del self._entries[key]

    def clear(self) -> None:
        with self._lock:
            self._entries = OrderedDict((k, f) for k, f in self._entries.items() if not f.done())

    def shutdown(self) -> None:
        """Stop the threads after their current computation (queued ones are dropped)."""
        self._stopped = True
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        for _thread in self._threads:
            self._queue.put((-1, next(self._order), None))


def wait_until(futures: Iterable[Future[Any]], deadline: float) -> None:
    """Wait for ``futures`` until ``deadline`` (``time.monotonic()`` seconds)."""
    remaining = deadline - time.monotonic()
    if remaining > 0:
        wait_futures(list(futures), timeout=remaining)


__all__ = ["Work", "wait_until"]
