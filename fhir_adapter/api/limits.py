"""Per-client rate limit: HTTP 429 with ``Retry-After`` and an OperationOutcome ``throttled``.

Issue #7 item 4. A token bucket per client (``Settings.rate_limit_per_minute``): it holds at most
that many requests and refills at that many per minute, so a client may burst up to a minute's
allowance and then goes at the steady rate. The client is the one its bearer token names (the
token's signature checked, :class:`fhir_adapter.api.audit.Identifier`; a forged ``sub`` cannot
drain another client's bucket), else the caller's IP address (anonymous requests, and every
``POST /auth/token``: brute-force protection of the token endpoint is per address).
``/healthz`` and ``/metrics`` are not limited (probes and scrapers).

Choice (documented trade-off): the buckets live **in each worker process** (no database write per
request, no extra service), so with W uvicorn workers a client may get up to W times the limit,
and a restart refills every bucket. A shared limit would need a counter in the database (a write
on every request, on SQLite serialised with all other writes) or Redis (not a dependency);
operators who need an exact global limit put it in the reverse proxy in front of the workers.
Memory is bounded: at most :data:`MAX_CLIENTS` buckets; full buckets (clients idle for a minute)
are dropped first.

A throttled request is audited once per burst (the first 429 of a client since its last admitted
request); the rest are only counted, so a flood cannot turn into a flood of audit writes.

RFC 6585 §4 (429 Too Many Requests, ``Retry-After``); the R4 IssueType ``throttled``.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import orjson

from fhir_adapter.api.audit import SKIP, Identifier, client_address
from fhir_adapter.fhir.outcome import error_outcome

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Paths never limited.
EXEMPT = frozenset({"/healthz", "/metrics"})
#: Most buckets kept in one process.
MAX_CLIENTS = 100_000


@dataclass
class _Bucket:
    tokens: float
    at: float
    #: a 429 of the current burst has been audited
    reported: bool = False


@dataclass(frozen=True)
class Decision:
    allowed: bool
    #: whole seconds until one request is allowed again (0 when allowed)
    retry_after: int
    #: first refusal of this burst (audit it)
    first_refusal: bool = False


class TokenBuckets:
    """Token buckets by key; thread-safe; ``monotonic`` is injectable for tests."""

    def __init__(
        self, per_minute: int, *, monotonic: Callable[[], float] = time.monotonic, max_keys: int = MAX_CLIENTS
    ) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.monotonic = monotonic
        self.max_keys = max_keys
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> Decision:
        now = self.monotonic()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= self.max_keys:
                    self._prune(now)
                bucket = self._buckets[key] = _Bucket(self.capacity, now)
            bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                bucket.reported = False
                return Decision(True, 0)
            first = not bucket.reported
            bucket.reported = True
            return Decision(False, max(1, math.ceil((1.0 - bucket.tokens) / self.rate)), first)

    def _prune(self, now: float) -> None:
        full = [k for k, b in self._buckets.items() if b.tokens + (now - b.at) * self.rate >= self.capacity]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) >= self.max_keys:  # everyone busy: forget the oldest half
            for key, _bucket in sorted(self._buckets.items(), key=lambda kv: kv[1].at)[: self.max_keys // 2]:
                del self._buckets[key]


class RateLimitMiddleware:
    """HTTP 429 for a client over its limit, before the request is routed or its body read. It
    sits inside :class:`~fhir_adapter.api.audit.AuditMiddleware`, which records the 429 unless it
    is marked as a repeat of the same burst."""

    def __init__(self, app: ASGIApp, buckets: TokenBuckets, identify: Identifier) -> None:
        self.app = app
        self.buckets = buckets
        self.identify = identify

    def key(self, scope: Scope) -> str:
        path = str(scope.get("path", ""))
        identity = self.identify(scope)
        if identity.verified and path != "/auth/token":
            return f"client:{identity.client_id}"
        return f"ip:{client_address(scope) or 'unknown'}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in EXEMPT:
            await self.app(scope, receive, send)
            return
        decision = self.buckets.take(self.key(scope))
        if decision.allowed:
            await self.app(scope, receive, send)
            return
        if not decision.first_refusal:
            scope.setdefault("state", {})[SKIP] = True
        body = orjson.dumps(
            error_outcome(
                f"too many requests: at most {int(self.buckets.capacity)} per minute per client; "
                f"retry after {decision.retry_after} s",
                "throttled",
            )
        )
        await send(
            {
                "type": "http.response.start",
                "status": 429,
                "headers": [
                    (b"content-type", b"application/fhir+json; charset=utf-8"),
                    (b"retry-after", str(decision.retry_after).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
