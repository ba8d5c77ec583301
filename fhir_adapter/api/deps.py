"""What routes get injected (full-stack-fastapi-template style ``Annotated`` aliases).

The app factory puts one :class:`AppState` on ``app.state``; routes ask for the parts they need.

Authentication happens in one place, :func:`get_caller`, which the app factory applies to every
router: with ``auth_required`` every request outside :data:`PUBLIC_PATHS` needs a bearer token
from ``/auth/token`` (SMART App Launch 2.2 Backend Services, § "Access FHIR API": the resource
server SHALL validate the token, that it has not expired and that its scope covers the request).
Routes that read or write data take ``caller: CallerDep`` and call :func:`require` with the
resource type and SMART permission of each interaction; which rows a caller sees is decided by
one policy, :mod:`fhir_adapter.auth.policy` (``PolicyDep``; docs/security.md).
"""

from __future__ import annotations

import hmac
import threading
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from fhir_adapter.auth.policy import Policy
from fhir_adapter.auth.scopes import PERMISSIONS, ScopeSet
from fhir_adapter.auth.tokens import TokenService, challenge
from fhir_adapter.errors import AuthenticationError, ForbiddenError
from fhir_adapter.ingest.runner import Clock
from fhir_adapter.mappings import load_mappings
from fhir_adapter.measure.spec import Mappings
from fhir_adapter.settings import Settings
from fhir_adapter.store.db import Store

#: Route paths served without a token: discovery, liveness and the token endpoint (FastAPI's
#: own ``/docs`` and ``/openapi.json`` are outside the routers and never checked).
PUBLIC_PATHS = frozenset(
    {
        "/fhir/metadata",
        "/fhir/.well-known/smart-configuration",
        "/healthz",
        "/auth/token",
        "/fhir/docs/what-to-send",
        "/dashboard/login",
        "/dashboard/logout",
        "/dashboard/static/{name}",
    }
)
#: The one path the static scrape token (``Settings.metrics_token``) opens.
METRICS_PATH = "/metrics"
#: The dashboard (a browser page that only reads, with GET) may carry the access token in this
#: HttpOnly, SameSite=Strict cookie instead of the Authorization header (routes_dashboard.py).
DASHBOARD_PATH = "/dashboard"
DASHBOARD_COOKIE = "fhir_adapter_dashboard"
_PERMISSION_NAMES = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}


@dataclass(frozen=True)
class Caller:
    """Who is calling: a registered client (role ``ehr``, ``cco``, ``oha`` or ``admin``) with the
    scopes its access token grants; with ``auth_required`` off, the anonymous ``dev`` caller
    with every permission, whose pushes are stored under ``settings.api_default_source``."""

    client_id: str
    #: Source name under which this caller's pushes are stored.
    source: str
    role: str = "anonymous"
    ccos: tuple[str, ...] = ()
    scopes: ScopeSet = field(default_factory=ScopeSet)


@dataclass
class AppState:
    settings: Settings
    store: Store
    clock: Clock
    _mappings: Mappings | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def mappings(self) -> Mappings:
        """Loaded once per process (``reload_mappings`` after an import)."""
        with self._lock:
            if self._mappings is None:
                self._mappings = load_mappings(self.settings.mappings_dir)
            return self._mappings

    def reload_mappings(self) -> None:
        with self._lock:
            self._mappings = None


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.adapter
    return state


def get_settings(request: Request) -> Settings:
    return get_state(request).settings


def get_store(request: Request) -> Store:
    return get_state(request).store


def get_mappings(request: Request) -> Mappings:
    return get_state(request).mappings


def get_caller(request: Request) -> Caller:
    """The authenticated caller; :class:`AuthenticationError` (401 with a ``WWW-Authenticate:
    Bearer`` challenge) for a missing, invalid or expired token or a revoked client."""
    settings = get_state(request).settings
    if not settings.auth_required:
        return Caller("anonymous", settings.api_default_source, role="dev", scopes=ScopeSet.everything())
    path = getattr(request.scope.get("route"), "path", None)
    if path in PUBLIC_PATHS:
        return Caller("anonymous", settings.api_default_source)
    scheme, _, token = (request.headers.get("authorization") or "").strip().partition(" ")
    scrape = settings.metrics_token
    if (
        path == METRICS_PATH
        and scrape is not None
        and scheme.lower() == "bearer"
        and hmac.compare_digest(token.strip().encode(), scrape.get_secret_value().encode())
    ):
        return Caller("metrics-scraper", settings.api_default_source, role="metrics")
    if scheme.lower() != "bearer" and _dashboard_read(request, path):
        token = request.cookies.get(DASHBOARD_COOKIE, "")
        if not token.strip():  # the dashboard answers with its sign-in page
            return Caller("anonymous", settings.api_default_source)
        scheme = "bearer"
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError(
            "an access token is required: 'Authorization: Bearer <token>', from POST /auth/token "
            "(SMART Backend Services)",
            headers={"WWW-Authenticate": challenge()},
        )
    service: TokenService = request.app.state.auth
    identity = service.verify_access_token(token.strip())
    return Caller(
        client_id=identity.client_id,
        source=identity.source,
        role=identity.role,
        ccos=identity.ccos,
        scopes=identity.scopes,
    )


def _dashboard_read(request: Request, path: str | None) -> bool:
    """A GET (or HEAD) of a dashboard page: the only requests the dashboard cookie authenticates
    (so it can never authorise a change, whatever another site makes a browser send)."""
    return (
        path is not None
        and (path == DASHBOARD_PATH or path.startswith(DASHBOARD_PATH + "/"))
        and request.method in ("GET", "HEAD")
    )


def require(caller: Caller, resource_type: str, permission: str) -> None:
    """HTTP 403 unless the caller's scopes allow ``permission`` (one of ``c r u d s``, SMART App
    Launch 2.2 "Scopes and Launch Context") on ``resource_type``; RFC 6750 §3.1
    ``insufficient_scope`` names the scope that would."""
    if len(permission) != 1 or permission not in PERMISSIONS:
        raise ValueError(f"permission must be one of {PERMISSIONS!r}, not {permission!r}")
    if caller.scopes.allows(resource_type, permission):
        return
    needed = f"system/{resource_type}.{permission}"
    raise ForbiddenError(
        f"the access token's scopes ({caller.scopes.render() or 'none'}) do not allow "
        f"{_PERMISSION_NAMES[permission]} of {resource_type}: that needs {needed}",
        headers={"WWW-Authenticate": challenge("insufficient_scope", scope=needed)},
    )


def policy_for(state: AppState, caller: Caller) -> Policy:
    """The tenancy policy (:mod:`fhir_adapter.auth.policy`) for ``caller``."""
    settings = state.settings
    return Policy.for_caller(
        caller,
        ccos=state.mappings.ccos if caller.role == "cco" else (),
        report_source=settings.report_source,
        lookback_days=settings.tenant_lookback_days,
        tz=settings.tz,
        dialect=state.store.dialect,
    )


def get_policy(request: Request, caller: Annotated[Caller, Depends(get_caller)]) -> Policy:
    return policy_for(get_state(request), caller)


StateDep = Annotated[AppState, Depends(get_state)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
MappingsDep = Annotated[Mappings, Depends(get_mappings)]
CallerDep = Annotated[Caller, Depends(get_caller)]
PolicyDep = Annotated[Policy, Depends(get_policy)]
