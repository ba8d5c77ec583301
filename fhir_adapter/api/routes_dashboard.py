"""The dashboard: ``GET /dashboard``, a server-rendered HTML page of the measures' panels (rates,
strata, trend, gaps, referral loop, capacity, reconciliation, data quality) for one selection, and
``GET /dashboard/table/<name>.csv|.parquet`` with the same query, each table as a download.

Outside ``/fhir`` (DESIGN.md §2) and not part of the FHIR API: the routes are left out of the
CapabilityStatement and the OpenAPI document. The page needs no JavaScript (plain GET forms;
``static/dashboard.js`` only enhances the selectors) and no external asset; the answers carry a
strict Content-Security-Policy (scripts and styles from this server only, no inline script).

**Sign-in.** With ``auth_required`` off (``fhir-adapter demo`` data served for development, the
sandbox) there is none. Otherwise the dashboard reads the same SMART access tokens as the API
(:mod:`fhir_adapter.auth.tokens`): a script may send ``Authorization: Bearer``; a person pastes a
token (from ``POST /auth/token``, e.g. ``fhir-adapter clients token``) into ``/dashboard/login``,
which validates it and keeps it in an ``HttpOnly``, ``SameSite=Strict`` cookie (``Secure`` over
https) scoped to ``/dashboard`` for the token's lifetime. :func:`fhir_adapter.api.deps.get_caller`
accepts that cookie only on GETs of dashboard paths, and the dashboard only reads, so a forged
cross-site request can change nothing (and SameSite=Strict keeps the cookie off it anyway).
Without a token the page answers 401 with a link to the sign-in page.

**Tenancy**: the caller needs ``MeasureReport`` read scope and an evaluating role
(:meth:`fhir_adapter.auth.policy.Policy.evaluation_scope`); a CCO client sees only its CCOs in
the selectors, tables, charts and downloads (:mod:`fhir_adapter.api.dashboard.data`).
"""

from __future__ import annotations

import re
import threading
from importlib import resources
from urllib.parse import parse_qs, urlencode, urlsplit

from fastapi import APIRouter, FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, RedirectResponse, Response

from fhir_adapter.api.capabilities import Contribution
from fhir_adapter.api.dashboard import render
from fhir_adapter.api.dashboard.data import Dashboard, csv_bytes, parquet_bytes
from fhir_adapter.api.dashboard.selection import options, parse
from fhir_adapter.api.dashboard.work import Work
from fhir_adapter.api.deps import DASHBOARD_COOKIE, AppState, Caller, CallerDep, PolicyDep, StateDep, require
from fhir_adapter.api.html import Html, el
from fhir_adapter.api.routes_jobs import base_url
from fhir_adapter.auth.policy import EVALUATING_ROLES, Policy
from fhir_adapter.auth.tokens import TokenService, challenge
from fhir_adapter.errors import AdapterError, AuthenticationError, UsageError
from fhir_adapter.fhir.dates import from_micros, iso_instant
from fhir_adapter.store.runs import list_runs

router = APIRouter(include_in_schema=False)
CAPABILITIES = Contribution()

PAGE = "/dashboard"
TABLE = "/dashboard/table/{name}"
LOGIN = "/dashboard/login"
LOGOUT = "/dashboard/logout"
STATIC = "/dashboard/static/{name}"
STATIC_FILES = {"dashboard.css": "text/css; charset=utf-8", "dashboard.js": "text/javascript; charset=utf-8"}
MAX_FORM_BYTES = 16 * 1024
#: Seconds a page waits for its panels before showing those still running as "still computing".
WAIT_SECONDS = 5.0
#: Answers carrying member-level data: never cached, never framed, no referrer to other sites,
#: scripts and styles from this server only.
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: with no-referrer browsers send "Origin: null" on the sign-in form
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
}
_NEXT = re.compile(r"^/dashboard(?:[/?#].*)?$")
_lock = threading.Lock()


def install_dashboard(app: FastAPI, *, wait_seconds: float = WAIT_SECONDS, threads: int = 2) -> Dashboard:
    """Put a :class:`Dashboard` on ``app.state.dashboard`` (its threads stop with the app)."""
    state: AppState = app.state.adapter
    work = Work(threads=threads, capacity=64)
    dash = Dashboard(
        state.settings, state.store, lambda: state.mappings, work=work, wait_seconds=wait_seconds
    )
    app.state.dashboard = dash
    app.state.shutdown_hooks.append(work.shutdown)
    return dash


def dashboard_of(request: Request) -> Dashboard:
    """The app's :class:`Dashboard`, made on first use."""
    found: Dashboard | None = getattr(request.app.state, "dashboard", None)
    if found is not None:
        return found
    with _lock:
        found = getattr(request.app.state, "dashboard", None)
        return found if found is not None else install_dashboard(request.app)


def _html(page: Html, status: int = 200, headers: dict[str, str] | None = None) -> HTMLResponse:
    return HTMLResponse(str(page), status_code=status, headers={**SECURITY_HEADERS, **(headers or {})})


def _signed_out(caller: Caller, state: AppState) -> bool:
    return state.settings.auth_required and caller.role == "anonymous"


def _who(caller: Caller, state: AppState) -> Html:
    if not state.settings.auth_required:
        return render.who_html("Authorisation is off (development): every CCO is shown.", can_sign_out=False)
    ccos = f", CCOs {', '.join(caller.ccos)}" if caller.ccos else ""
    return render.who_html(f"Signed in as {caller.client_id} (role {caller.role}{ccos})", can_sign_out=True)


def _default_year(state: AppState, measure: str | None) -> int | None:
    """The year of the newest persisted run of the measure (the demo's), else ``None``."""
    runs = list_runs(state.store, measure)
    return max(
        (r.period_end.year for r in runs if r.period_end.month == 12 and r.period_end.day == 31), default=None
    )


def _page(request: Request, state: AppState, caller: Caller, policy: Policy) -> Response:
    settings = state.settings
    if _signed_out(caller, state):
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return _html(
            render.document(
                "Sign in required: dashboard",
                el("h1", "Sign in required"),
                el(
                    "p",
                    "This server requires an access token. ",
                    el("a", "Sign in to the dashboard", href=render.login_url(here)),
                    ".",
                ),
            ),
            401,
            {"WWW-Authenticate": challenge()},
        )
    try:
        require(caller, "MeasureReport", "r")
        scope = policy.evaluation_scope()
        dash = dashboard_of(request)
        today = state.clock().astimezone(settings.tz).date()
        mappings = state.mappings
        opts = options(mappings, scope.ccos, today)
        params = {k: v for k, v in request.query_params.items()}
        notices: list[str] = []
        measure = params.get("measure") or (opts.measures[0][0] if opts.measures else None)
        selection = parse(
            params, opts, default_year=_default_year(state, measure), today=today, notices=notices
        )
        ctx = dash.start(selection, scope, unrestricted=policy.unrestricted, today=today)
        panels = dash.panels(ctx)
    except AdapterError as exc:
        return _html(render.error_page(exc.http_status, exc.message, location=exc.location), exc.http_status)
    status = [
        ("Measure", f"{ctx.spec.title} ({ctx.spec.id} {ctx.spec.version})"),
        ("Period", selection.period_label),
        ("CCO", selection.scope_label),
        ("Sources", selection.sources),
        ("Data cut", _instant(ctx.cut)),
    ]
    page = render.dashboard_page(
        selection, opts, panels, status=status, who=_who(caller, state), notices=notices
    )
    return _html(page)


def _instant(micros: int) -> str:
    return iso_instant(from_micros(micros)) if micros else "no data loaded"


@router.get(PAGE, summary="Dashboard (HTML)")
def dashboard(request: Request, state: StateDep, caller: CallerDep, policy: PolicyDep) -> Response:
    return _page(request, state, caller, policy)


@router.get(TABLE, summary="One dashboard table as CSV or Parquet")
def table(name: str, request: Request, state: StateDep, caller: CallerDep, policy: PolicyDep) -> Response:
    if _signed_out(caller, state):
        raise AuthenticationError(
            "an access token is required: sign in at /dashboard/login or send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": challenge()},
        )
    require(caller, "MeasureReport", "r")
    scope = policy.evaluation_scope()
    stem, dot, ext = name.rpartition(".")
    if not dot or ext not in ("csv", "parquet"):
        raise UsageError(f"ask for <table>.csv or <table>.parquet, not {name!r}", location="name")
    settings = state.settings
    today = state.clock().astimezone(settings.tz).date()
    opts = options(state.mappings, scope.ccos, today)
    params = {k: v for k, v in request.query_params.items()}
    measure = params.get("measure") or (opts.measures[0][0] if opts.measures else None)
    selection = parse(params, opts, default_year=_default_year(state, measure), today=today)
    dash = dashboard_of(request)
    ctx = dash.start(selection, scope, unrestricted=policy.unrestricted, today=today)
    data = dash.table(ctx, stem)
    label = f"{stem}-{selection.measure}-{selection.period[0].isoformat()}-{selection.period[1].isoformat()}"
    label += f"-{selection.cco or 'statewide'}-{selection.sources}"
    headers = {
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        "Content-Disposition": f'attachment; filename="{_safe_filename(label)}.{ext}"',
    }
    if ext == "csv":
        return Response(csv_bytes(data), media_type="text/csv; charset=utf-8", headers=headers)
    return Response(parquet_bytes(data), media_type="application/vnd.apache.parquet", headers=headers)


def _safe_filename(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", label)[:180]


@router.get(STATIC, summary="Dashboard stylesheet and script")
def static(name: str) -> Response:
    media = STATIC_FILES.get(name)
    if media is None:
        return Response(b"not found", status_code=404, media_type="text/plain; charset=utf-8")
    body = resources.files("fhir_adapter.api.dashboard").joinpath("static", name).read_bytes()
    return Response(
        body,
        media_type=media,
        headers={"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"},
    )


def _next(value: str | None) -> str:
    """Only a dashboard path (no open redirect)."""
    if value and _NEXT.match(value) and "//" not in value and "\\" not in value:
        return value
    return PAGE


@router.get(LOGIN, summary="Dashboard sign-in form")
def login_form(request: Request, state: StateDep) -> Response:
    page = render.login_page(
        auth_required=state.settings.auth_required, next_url=_next(request.query_params.get("next"))
    )
    return _html(page)


async def _form(request: Request) -> dict[str, str]:
    media = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        raise UsageError("send the sign-in form as application/x-www-form-urlencoded")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise UsageError(f"the sign-in form is larger than {MAX_FORM_BYTES} bytes")
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=8)
    except (UnicodeDecodeError, ValueError):
        raise UsageError("the sign-in form is malformed") from None
    return {k: v[0] for k, v in parsed.items()}


def _same_origin(request: Request) -> bool:
    """A browser's ``Origin`` (when it sends one) must be this server's (login CSRF)."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    theirs = urlsplit(origin)
    mine = {(urlsplit(base_url(request)).scheme, urlsplit(base_url(request)).netloc),
            (request.url.scheme, request.url.netloc)}  # fmt: skip
    return (theirs.scheme, theirs.netloc) in mine


def _secure(request: Request, state: AppState) -> bool:
    public = state.settings.public_base_url or ""
    return request.url.scheme == "https" or public.startswith("https://")


@router.post(LOGIN, summary="Dashboard sign-in: validate an access token and keep it in a cookie")
async def login(request: Request, state: StateDep) -> Response:
    settings = state.settings
    if not settings.auth_required:
        return RedirectResponse(PAGE, status_code=303)
    if not _same_origin(request):
        return _html(render.login_page(error="The sign-in form must be sent from this server's page.",
                                       auth_required=True), 403)  # fmt: skip
    try:
        form = await _form(request)
    except UsageError as exc:
        return _html(render.login_page(error=exc.message, auth_required=True), 400)
    next_url = _next(form.get("next"))
    token = "".join((form.get("token") or "").split())
    if token.lower().startswith("bearer"):
        token = token[len("bearer") :]
    if not token:
        return _html(
            render.login_page(error="Paste an access token.", auth_required=True, next_url=next_url), 400
        )
    service: TokenService = request.app.state.auth
    try:
        identity = await run_in_threadpool(service.verify_access_token, token)
    except AuthenticationError as exc:
        return _html(
            render.login_page(
                error=f"This token cannot sign in: {exc.message}", auth_required=True, next_url=next_url
            ),
            401,
        )
    if identity.role not in EVALUATING_ROLES or not identity.scopes.allows("MeasureReport", "r"):
        return _html(
            render.login_page(
                error=(
                    f"Client {identity.client_id} (role {identity.role}) may not use the dashboard: it needs the role "
                    "cco, oha or admin and the scope system/MeasureReport.r (or system/*.read)."
                ),
                auth_required=True,
                next_url=next_url,
            ),
            403,
        )
    now = int(state.clock().timestamp())
    lifetime = max(identity.expires_at - now, 1)
    response = RedirectResponse(next_url, status_code=303, headers={"Cache-Control": "no-store"})
    response.set_cookie(
        DASHBOARD_COOKIE,
        token,
        max_age=lifetime,
        path=PAGE,
        httponly=True,
        samesite="strict",
        secure=_secure(request, state),
    )
    return response


@router.post(LOGOUT, summary="Dashboard sign-out: forget the token cookie")
def logout(request: Request, state: StateDep) -> Response:
    response = RedirectResponse(
        f"{LOGIN}?{urlencode({'next': PAGE})}", status_code=303, headers={"Cache-Control": "no-store"}
    )
    response.delete_cookie(
        DASHBOARD_COOKIE, path=PAGE, httponly=True, samesite="strict", secure=_secure(request, state)
    )
    return response


__all__ = ["CAPABILITIES", "WAIT_SECONDS", "dashboard_of", "install_dashboard", "router"]
