"""The FHIR REST service: ``create_app(settings)`` builds it, ``fhir-adapter serve`` runs it.

DESIGN.md §1 "API is thin": one router per concern, errors become OperationOutcome in one place
(:mod:`fhir_adapter.api.errors`), long work runs as persisted jobs. Several uvicorn workers may
serve one database: the app keeps no state that another worker would need.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from types import ModuleType
from typing import Any

import orjson
from fastapi import Depends, FastAPI
from prometheus_client import CollectorRegistry, Counter, Histogram

from fhir_adapter import logsafe
from fhir_adapter.api import (
    audit,
    routes_auth,
    routes_bulk,
    routes_dashboard,
    routes_ingest,
    routes_jobs,
    routes_measure,
    routes_meta,
    routes_resources,
)
from fhir_adapter.api.capabilities import Contribution, merge
from fhir_adapter.api.deps import AppState, get_caller
from fhir_adapter.api.errors import install_error_handlers
from fhir_adapter.api.jobs import JobManager
from fhir_adapter.api.limits import RateLimitMiddleware, TokenBuckets
from fhir_adapter.api.openapi import describe
from fhir_adapter.auth.tokens import server_secret
from fhir_adapter.fhir.outcome import error_outcome
from fhir_adapter.ingest.runner import Clock, utc_now
from fhir_adapter.report.conformance import build_capability_statement
from fhir_adapter.settings import Settings
from fhir_adapter.store.db import Store

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Router modules, each exporting ``router`` and ``CAPABILITIES`` (and optionally
#: ``register_jobs(app)``, which registers its job kinds on ``app.state.jobs``).
ROUTER_MODULES: list[ModuleType] = [
    routes_meta,
    routes_auth,
    routes_jobs,
    routes_ingest,
    routes_measure,
    routes_bulk,
    audit,  # before routes_resources: /fhir/AuditEvent is the audit trail, not a stored type
    routes_resources,
    routes_dashboard,
]

SERVICE_DOCUMENTATION = (
    "FHIR R4 service of fhir-adapter: EHR pushes (REST, transaction/batch Bundles, NDJSON), reads and "
    "searches of stored data, DEQM measure operations for Oregon's social-emotional health measures, "
    "asynchronous jobs (Prefer: respond-async)."
)


class Metrics:
    """Per-app Prometheus registry (so several apps in one process, as in tests, do not clash)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "fhir_adapter_http_requests",
            "HTTP requests",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "fhir_adapter_http_request_seconds",
            "HTTP request latency",
            ["method", "route"],
            registry=self.registry,
        )
        self.resources_written = Counter(
            "fhir_adapter_resources_written",
            "Resources written by pushes",
            ["outcome"],
            registry=self.registry,
        )
        self.jobs = Counter(
            "fhir_adapter_jobs", "Asynchronous jobs finished", ["kind", "status"], registry=self.registry
        )


class _MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def _send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, _send)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
            self.metrics.latency.labels(scope["method"], route).observe(time.perf_counter() - started)


class _BodyLimitMiddleware:
    """HTTP 413 with an OperationOutcome for bodies over ``max_body_bytes`` (declared or
    streamed), before any of it is parsed or stored."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _too_large(send, self.limit)
            return
        seen = 0
        started = False

        async def _receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _BodyTooLargeError
            return message

        async def _send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, _receive, _send)
        except _BodyTooLargeError:
            if not started:
                await _too_large(send, self.limit)


class _BodyTooLargeError(Exception):
    pass


class _NulMiddleware:
    """HTTP 400 with an OperationOutcome for a URL whose path or query holds a NUL character
    (``%00``): no FHIR id, type or search value contains one (R4 §2.24.0.1 ``string``), the store
    never holds one, and PostgreSQL cannot even compare text with it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        query = bytes(scope.get("query_string") or b"")
        if scope["type"] == "http" and (
            "\x00" in str(scope.get("path", "")) or b"\x00" in query or b"%00" in query
        ):
            body = orjson.dumps(error_outcome("the URL contains a NUL character (%00)", "invalid"))
            await send(
                {
                    "type": "http.response.start",
                    "status": 400,
                    "headers": [(b"content-type", b"application/fhir+json; charset=utf-8")],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


async def _too_large(send: Send, limit: int) -> None:
    body = orjson.dumps(error_outcome(f"request body larger than {limit} bytes", "too-costly"))
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/fhir+json; charset=utf-8"),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def capabilities() -> Contribution:
    return merge(module.CAPABILITIES for module in ROUTER_MODULES)


def create_app(settings: Settings, *, clock: Clock = utc_now, store: Store | None = None) -> FastAPI:
    """The service for ``settings``; ``store`` may be passed in (tests), else it is opened from
    ``settings.database_url`` and closed at shutdown."""
    logsafe.install()  # no PHI in third-party logs (query strings, SQL rows, tracebacks)
    own_store = store is None
    the_store = store or Store.open(
        settings.database_url, tz=settings.tz, member_system=settings.member_id_system
    )
    state = AppState(settings=settings, store=the_store, clock=clock)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        yield
        for hook in app.state.shutdown_hooks:
            hook()
        if own_store:
            the_store.close()

    from importlib.metadata import version

    app = FastAPI(
        title="fhir-adapter",
        version=version("fhir-adapter"),
        description=SERVICE_DOCUMENTATION,
        lifespan=lifespan,
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    app.state.adapter = state
    app.state.shutdown_hooks = []
    app.state.metrics = Metrics()
    jobs = JobManager(the_store, clock, threads=settings.job_threads)
    app.state.jobs = jobs
    app.state.shutdown_hooks.append(jobs.shutdown)
    contribution = capabilities()
    app.state.capabilities = contribution
    app.state.capability_statement = build_capability_statement(
        settings.canonical_base,
        contribution.resources,
        documentation=SERVICE_DOCUMENTATION,
        system_operations=contribution.system_operations,
        system_interactions=contribution.system_interactions,
        software_version=version("fhir-adapter"),
        formats=("json", "application/fhir+json"),
        security=routes_auth.capability_security(settings) if settings.auth_required else None,
    )
    install_error_handlers(app)
    routes_auth.install(app, settings, the_store, clock)
    for module in ROUTER_MODULES:  # authentication in one place: every route checks the caller
        app.include_router(module.router, dependencies=[Depends(get_caller)])
    for module in ROUTER_MODULES:
        register_jobs = getattr(module, "register_jobs", None)
        if register_jobs is not None:
            register_jobs(app)
    jobs.recover()
    derived_openapi = app.openapi

    def openapi() -> dict[str, Any]:  # what the routes really take and answer (api/openapi.py)
        if app.openapi_schema is None:
            app.openapi_schema = describe(derived_openapi())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(_BodyLimitMiddleware, limit=settings.max_body_bytes)
    app.add_middleware(_NulMiddleware)
    # outermost to innermost: metrics, audit (records every answer, 429s too), rate limit
    identify = audit.Identifier(server_secret(settings, the_store) if settings.auth_required else None)
    if settings.rate_limit_per_minute is not None:
        app.add_middleware(RateLimitMiddleware, buckets=TokenBuckets(settings.rate_limit_per_minute),
                           identify=identify)  # fmt: skip
    app.add_middleware(audit.AuditMiddleware, store=the_store, clock=clock, identify=identify,
                       registry=app.state.metrics.registry)  # fmt: skip
    app.add_middleware(_MetricsMiddleware, metrics=app.state.metrics)
    return app


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` (several worker processes): settings from the
    environment (``FHIR_ADAPTER_*``)."""
    return create_app(Settings())
