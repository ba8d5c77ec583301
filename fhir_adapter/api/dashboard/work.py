"""Computations shared by dashboard requests: each runs once per key in a small thread pool and
its result is kept in memory (least recently used first out).

A computation may depend on others: it is handed to the pool only once they are done, so a pool
thread never waits for another (no deadlock with few threads). A request waits for the results it
needs up to a deadline and renders what is ready; the rest keeps running and a reload shows it. A
failed computation is dropped from the cache (the request that waited for it sees the error; the
next one tries again).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from typing import Any, TypeVar

log = logging.getLogger("fhir_adapter.dashboard")

T = TypeVar("T")


class Work:
    """Keyed, cached computations on ``threads`` pool threads; at most ``capacity`` results kept."""

    def __init__(self, *, threads: int = 2, capacity: int = 256) -> None:
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="dashboard")
        self.capacity = capacity
        self._entries: OrderedDict[Hashable, Future[Any]] = OrderedDict()
        self._lock = threading.Lock()

    def peek(self, key: Hashable) -> Future[Any] | None:
        with self._lock:
            return self._entries.get(key)

    def get(self, key: Hashable, compute: Callable[..., T], *deps: Future[Any]) -> Future[T]:
        """The future of ``compute(*results of deps)`` for ``key``: the cached one when there is
        one, else a new one, started once every dependency is done (a failed dependency fails it)."""
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

        self._after(deps, run)
        return future

    def _after(self, deps: Sequence[Future[Any]], run: Callable[[], None]) -> None:
        pending = [d for d in deps if not d.done()]
        if not pending:
            self._submit(run)
            return
        remaining = [len(pending)]
        lock = threading.Lock()

        def one_done(_f: Future[Any]) -> None:
            with lock:
                remaining[0] -= 1
                last = remaining[0] == 0
            if last:
                self._submit(run)

        for d in pending:
            d.add_done_callback(one_done)

    def _submit(self, run: Callable[[], None]) -> None:
        try:
            self.pool.submit(run)
        except RuntimeError:  # the pool is shut down (the app is stopping): run here
            run()

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
        self.pool.shutdown(wait=False, cancel_futures=True)


def wait_until(futures: Iterable[Future[Any]], deadline: float) -> None:
    """Wait for ``futures`` until ``deadline`` (``time.monotonic()`` seconds)."""
    remaining = deadline - time.monotonic()
    if remaining > 0:
        wait_futures(list(futures), timeout=remaining)


__all__ = ["Work", "wait_until"]
