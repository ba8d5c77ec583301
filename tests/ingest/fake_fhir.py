"""A fake FHIR server for the pull tests, served by uvicorn on 127.0.0.1 in a background thread.

It speaks just enough of three specifications, and can misbehave on request:

- FHIR search (``GET /fhir/{type}``) with ``_count``, ``_lastUpdated=gt…`` and opaque ``next``
  links (or none, ``paging=False``), and a fixed ``Date`` header when asked;
- Bulk Data 3.0 ``$export`` (system, Patient, Group): kick-off answered with 429 + Retry-After a
  number of times, polls answered 202 with ``X-Progress`` (optionally 503 on chosen polls), then a
  manifest with output, deleted and error files; a download that drops its connection midway the
  first time; a download that blocks until released; ``DELETE`` on the status URL;
- SMART Backend Services: ``/.well-known/smart-configuration`` and a token endpoint that verifies
  the client assertion with the registered public key (signature, ``iss``/``sub``, ``aud``,
  ``exp`` ≤ 5 minutes ahead, unused ``jti``); bearer tokens are then required on the FHIR API
  and on files when the manifest says ``requiresAccessToken``; a file fetched *with* a token when
  the manifest says ``false`` is recorded as a violation.

Counters (kick-offs, polls per job, downloads per file, deletes, tokens issued) let tests check
what the client did.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import jwt
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

FHIR_JSON = "application/fhir+json"


@dataclass
class BulkFile:
    name: str
    kind: str  # output | deleted | error
    type: str
    body: bytes


@dataclass
class AuthConfig:
    client_id: str
    public_key: Any
    alg: str
    expires_in: int = 300
    scopes_supported: tuple[str, ...] = ("system/*.rs",)
    capabilities: tuple[str, ...] = ("client-confidential-asymmetric", "permission-v2")
    #: the n-th use (1-based, over all requests) of the first token answers 401 (to test refresh)
    revoke_first_token_at_use: int | None = None


@dataclass
class FakeConfig:
    resources: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    paging: bool = True
    date_header: str | None = None
    #: types whose search answers 404 (a server that does not offer them)
    unsupported: frozenset[str] = frozenset()
    # bulk
    files: list[BulkFile] = field(default_factory=list)
    transaction_time: str = "2025-06-01T12:00:00.000Z"
    requires_access_token: bool = False
    kickoff_429: int = 0
    kickoff_retry_after: str = "0"
    polls_in_progress: int = 0
    poll_retry_after: str | None = "0"
    poll_5xx: frozenset[int] = frozenset()
    drop_first_download: frozenset[str] = frozenset()
    block: dict[str, threading.Event] = field(default_factory=dict)
    #: seconds each download takes (to observe how many run at once)
    download_delay: float = 0.0
    auth: AuthConfig | None = None


class FakeFhirServer:
    def __init__(self, config: FakeConfig) -> None:
        self.config = config
        self.lock = threading.Lock()
        self.kickoffs = 0
        #: kick-offs answered 202 (exports started)
        self.accepted_kickoffs = 0
        self.kickoff_requests: list[dict[str, Any]] = []
        self.polls: Counter[str] = Counter()
        self.downloads: Counter[str] = Counter()
        self.active_downloads = 0
        self.max_active_downloads = 0
        self.deletes: list[str] = []
        self.search_requests: list[dict[str, str]] = []
        self.tokens: dict[str, float] = {}  # token -> expiry (epoch seconds)
        self.token_uses: Counter[str] = Counter()
        self.jtis: set[str] = set()
        self.assertions: list[dict[str, Any]] = []
        self.violations: list[str] = []
        self.poll_started = threading.Event()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.app = Starlette(
            routes=[
                Route("/fhir/.well-known/smart-configuration", self.smart_configuration),
                Route("/auth/token", self.token, methods=["POST"]),
                Route("/fhir/$export", self.kickoff),
                Route("/fhir/Patient/$export", self.kickoff),
                Route("/fhir/Group/{group}/$export", self.kickoff),
                Route("/fhir/bulkstatus/{job}", self.status, methods=["GET", "DELETE"]),
                Route("/files/{name}", self.file),
                Route("/fhir/{rtype}", self.search),
            ]
        )

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeFhirServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_level="critical",
            lifespan="off",
            timeout_graceful_shutdown=1,
            access_log=False,
            date_header=False,  # a Date header only when the test sets one
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the fake FHIR server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        for event in self.config.block.values():
            event.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    # -- auth ------------------------------------------------------------------------------
    def _authorised(self, request: Request) -> bool:
        auth = self.config.auth
        if auth is None:
            return True
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return False
        token = header.removeprefix("Bearer ")
        with self.lock:
            expiry = self.tokens.get(token)
            if expiry is None or time.time() >= expiry:
                return False
            self.token_uses[token] += 1
            first = next(iter(self.tokens))
            if (
                token == first
                and auth.revoke_first_token_at_use is not None
                and self.token_uses[token] >= auth.revoke_first_token_at_use
            ):
                return False
        return True

    def _unauthorised(self) -> Response:
        return _outcome(401, "login", "a valid bearer token is required")

    async def smart_configuration(self, request: Request) -> Response:
        auth = self.config.auth
        if auth is None:
            return _outcome(404, "not-found", "no SMART here")
        return JSONResponse(
            {
                "token_endpoint": f"{self.origin}/auth/token",
                "token_endpoint_auth_methods_supported": ["private_key_jwt"],
                "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
                "grant_types_supported": ["client_credentials"],
                "scopes_supported": list(auth.scopes_supported),
                "capabilities": list(auth.capabilities),
            }
        )

    async def token(self, request: Request) -> Response:
        auth = self.config.auth
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        if auth is None:
            return JSONResponse(
                {"error": "invalid_client", "error_description": "no clients"}, status_code=400
            )
        if form.get("grant_type") != "client_credentials":
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        if form.get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer":
            return JSONResponse(
                {"error": "invalid_request", "error_description": "assertion type"}, status_code=400
            )
        assertion = form.get("client_assertion", "")
        try:
            header = jwt.get_unverified_header(assertion)
            claims = jwt.decode(
                assertion,
                auth.public_key,
                algorithms=[auth.alg],
                audience=f"{self.origin}/auth/token",
                options={"require": ["iss", "sub", "aud", "exp", "jti"]},
            )
        except jwt.PyJWTError as exc:
            return JSONResponse({"error": "invalid_client", "error_description": str(exc)}, status_code=400)
        problems = []
        if header.get("typ") != "JWT" or not header.get("kid"):
            problems.append("header needs typ=JWT and kid")
        if claims["iss"] != auth.client_id or claims["sub"] != auth.client_id:
            problems.append("iss and sub must be the client id")
        if claims["exp"] > time.time() + 300:
            problems.append("exp more than 5 minutes ahead")
        with self.lock:
            if claims["jti"] in self.jtis:
                problems.append("jti reused")
            self.jtis.add(claims["jti"])
            self.assertions.append({"header": header, "claims": claims, "scope": form.get("scope")})
        if problems:
            return JSONResponse(
                {"error": "invalid_client", "error_description": "; ".join(problems)}, status_code=400
            )
        with self.lock:
            value = f"tok-{len(self.tokens) + 1}"
            self.tokens[value] = time.time() + auth.expires_in
        return JSONResponse(
            {
                "access_token": value,
                "token_type": "bearer",
                "expires_in": auth.expires_in,
                "scope": form.get("scope"),
            }
        )

    # -- search ----------------------------------------------------------------------------
    async def search(self, request: Request) -> Response:
        if not self._authorised(request):
            return self._unauthorised()
        rtype = request.path_params["rtype"]
        query = dict(request.query_params)
        with self.lock:
            self.search_requests.append({"type": rtype, **query})
        if rtype in self.config.unsupported:
            return _outcome(404, "not-supported", f"{rtype} is not supported here")
        found = list(self.config.resources.get(rtype, []))
        since = query.get("_lastUpdated")
        if since:
            assert since.startswith("gt"), since
            found = [r for r in found if r.get("meta", {}).get("lastUpdated", "") > since[2:]]
        count = int(query.get("_count", "50"))
        offset = int(query.get("_page_offset", "0"))
        page = found[offset : offset + count]
        bundle: dict[str, Any] = {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(found),
            "entry": [
                {
                    "fullUrl": f"{self.base}/{rtype}/{r.get('id', 'no-id')}",
                    "resource": r,
                    "search": {"mode": "match"},
                }
                for r in page
            ],
        }
        if self.config.paging:
            links = [{"relation": "self", "url": str(request.url)}]
            if offset + count < len(found):
                links.append(
                    {
                        "relation": "next",
                        "url": f"{self.base}/{rtype}?_count={count}&_page_offset={offset + count}",
                    }
                    if "_lastUpdated" not in query
                    else {
                        "relation": "next",
                        "url": f"{self.base}/{rtype}?_count={count}&_lastUpdated={since}&_page_offset={offset + count}",
                    }
                )
            bundle["link"] = links
        headers = {"Date": self.config.date_header} if self.config.date_header else {}
        return Response(orjson.dumps(bundle), media_type=FHIR_JSON, headers=headers)

    # -- bulk ------------------------------------------------------------------------------
    async def kickoff(self, request: Request) -> Response:
        if not self._authorised(request):
            return self._unauthorised()
        with self.lock:
            self.kickoffs += 1
            number = self.kickoffs
            self.kickoff_requests.append(
                {
                    "path": request.url.path,
                    "params": dict(request.query_params),
                    "accept": request.headers.get("accept"),
                    "prefer": request.headers.get("prefer"),
                }
            )
        if number <= self.config.kickoff_429:
            return _outcome(
                429, "throttled", "busy", headers={"Retry-After": self.config.kickoff_retry_after}
            )
        with self.lock:
            self.accepted_kickoffs += 1
        job = f"job{number}"
        return Response(status_code=202, headers={"Content-Location": f"{self.base}/bulkstatus/{job}"})

    async def status(self, request: Request) -> Response:
        if not self._authorised(request):
            return self._unauthorised()
        job = request.path_params["job"]
        if request.method == "DELETE":
            with self.lock:
                self.deletes.append(job)
            return Response(status_code=202)
        with self.lock:
            self.polls[job] += 1
            number = self.polls[job]
        self.poll_started.set()
        if number in self.config.poll_5xx:
            return _outcome(503, "transient", "try again")
        if number <= self.config.polls_in_progress:
            headers = {"X-Progress": f"{100 * number // (self.config.polls_in_progress + 1)}% done"}
            if self.config.poll_retry_after is not None:
                headers["Retry-After"] = self.config.poll_retry_after
            return Response(status_code=202, headers=headers)
        manifest: dict[str, Any] = {
            "transactionTime": self.config.transaction_time,
            "request": f"{self.base}/$export",
            "requiresAccessToken": self.config.requires_access_token,
            "output": [],
            "deleted": [],
            "error": [],
        }
        for f in self.config.files:
            manifest[f.kind].append({"type": f.type, "url": f"{self.origin}/files/{f.name}"})
        return JSONResponse(manifest)

    async def file(self, request: Request) -> Response:
        name = request.path_params["name"]
        if self.config.requires_access_token:
            if not self._authorised(request):
                return self._unauthorised()
        elif "authorization" in request.headers:
            with self.lock:
                self.violations.append(f"token sent for {name} although requiresAccessToken is false")
        found = next((f for f in self.config.files if f.name == name), None)
        if found is None:
            return _outcome(404, "not-found", name)
        with self.lock:
            self.downloads[name] += 1
            number = self.downloads[name]
            self.active_downloads += 1
            self.max_active_downloads = max(self.max_active_downloads, self.active_downloads)
        try:
            event = self.config.block.get(name)
            if event is not None:
                while not event.is_set():
                    await asyncio.sleep(0.02)
            if self.config.download_delay:
                await asyncio.sleep(self.config.download_delay)
        finally:
            with self.lock:
                self.active_downloads -= 1
        body = found.body
        headers = {"Content-Length": str(len(body))}
        if name in self.config.drop_first_download and number == 1:
            return StreamingResponse(_dropping(body), media_type="application/fhir+ndjson", headers=headers)
        return Response(body, media_type="application/fhir+ndjson", headers=headers)


async def _dropping(body: bytes) -> Any:
    yield body[: len(body) // 2]
    await asyncio.sleep(0.05)
    raise ConnectionAbortedError("simulated: the connection dropped midway")


def _outcome(status: int, code: str, text: str, headers: dict[str, str] | None = None) -> Response:
    body = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": text}],
    }
    return Response(orjson.dumps(body), status_code=status, media_type=FHIR_JSON, headers=headers)


def ndjson(resources: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in resources)


def deleted_bundle(*refs: str) -> dict[str, Any]:
    """One line of a Bulk Data ``deleted`` file (a transaction Bundle of DELETE entries)."""
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"request": {"method": "DELETE", "url": ref}} for ref in refs],
    }


def running(config: FakeConfig) -> Iterator[FakeFhirServer]:
    """For fixtures: ``yield from running(config)``."""
    server = FakeFhirServer(config).start()
    try:
        yield server
    finally:
        server.stop()
