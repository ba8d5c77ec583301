"""The audit trail: one ``audit_events`` row per request to a data route, served as R4 AuditEvents.

Issue #7 item 3: every read of PHI and every write is recorded with who (client id and role),
what (action, interaction, resource type and id), when and the outcome.

**Recording** (:class:`AuditMiddleware`, an ASGI middleware of :func:`fhir_adapter.api.app.create_app`):
after the response is sent, one row per request under ``/fhir`` (except discovery: ``metadata``,
``.well-known``, ``docs``) and per ``POST /auth/token``; a transaction or batch Bundle gives one
row per entry (the route lists them with :func:`note`). Failures are recorded too (401, 403, any
4xx and 5xx, 413 from the body limit, the first 429 of a throttled client). What a row holds:

- ``client_id`` / ``role``: from the bearer token, its signature checked here (an expired token
  still names its client; a token that is not ours names no one: ``anonymous``). With
  authorisation off, the ``anonymous`` ``dev`` caller. For the token endpoint, the client id the
  assertion claims (its ``iss``), marked unverified when the request was refused; never the
  assertion.
- ``action`` (R4 ``AuditEvent.action``, http://hl7.org/fhir/R4/valueset-audit-event-action.html):
  ``C`` create (also an update that created), ``R`` read and vread, ``U`` update, ``D`` delete,
  ``E`` execute: operations, the token request and searches ("perform a query/search operation"
  is E in R4's definition of the code).
- ``interaction``: the R4 restful-interaction code (read, vread, search-type, create, update,
  delete, transaction, batch, operation), or ``login`` for the token endpoint.
- ``outcome`` (R4 ``AuditEvent.outcome``): 0 success (HTTP < 400), 4 minor failure (4xx: "often
  equivalent to an HTTP 400 response"), 8 serious failure (5xx); 12 (the system died) is never
  written by a request.
- ``detail``: JSON with the caller's address, the operation name, and for searches and
  operations the **names** of the parameters, never their values (a search value may be a name,
  a birth date or a member id); for job and export paths what was read.

The row is written in its own transaction after the response, never in the transaction of the
write it records. Trade-off: a crash between the two loses that row, but (1) the write itself is
still traceable, since every stored version keeps its source and ``ingested_at``; (2) failed and
rolled-back requests, which are exactly what security review looks for, would lose their rows if
the audit row shared the data transaction; (3) one hook here covers every route and job instead
of one per write path. A row that cannot be written never fails the request; it is logged at
ERROR (``AUDIT ROW LOST``, without PHI) and counted in ``fhir_adapter_audit_failures`` on
``/metrics`` so an alert can fire.

**Serving** (R4 AuditEvent, http://hl7.org/fhir/R4/auditevent.html): ``GET /fhir/AuditEvent``
(search: ``date`` with prefixes, ``agent`` = a client id (``agent:identifier`` takes
``system|value``; R4 declares ``agent`` a reference and clients are not resources here),
``entity-type`` (a resource type, R4 ValueSet audit-entity-type includes the resource types),
``action``, ``outcome``, ``subtype``, ``_count``, paging; newest first), ``POST
/fhir/AuditEvent/_search``, ``GET /fhir/AuditEvent/{id}`` and its only version ``_history/1``.
OHA, admin and (authorisation off) dev callers only, with scope ``system/AuditEvent.rs`` (or
``system/*.read``): others get 403. ``type`` is audit-event-type ``rest`` with the
restful-interaction ``subtype``, or for the token endpoint DICOM ``110114`` User Authentication
with subtype ``110122`` Login (the R4 audit-event-type ValueSet includes these DICOM codes);
``agent.who.identifier`` the client id (system ``<canonical base>/client-id``, the project's own,
UNVERIFIED as a standard); ``source.observer`` this server; ``entity.what`` the resource
reference and ``entity.type`` its type.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

import anyio
import jwt
import orjson
from fastapi import APIRouter, Request
from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import ColumnElement, Row, and_, false, func, insert, or_, select, true
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from fhir_adapter.api.capabilities import Contribution
from fhir_adapter.api.deps import Caller, CallerDep, StateDep, require
from fhir_adapter.api.responses import FhirResponse
from fhir_adapter.api.routes_jobs import base_url
from fhir_adapter.auth.policy import UNRESTRICTED_ROLES
from fhir_adapter.auth.tokens import ACCESS_TOKEN_ALG, AUDIENCE, ISSUER
from fhir_adapter.errors import ForbiddenError, NotFoundError, UnsupportedMediaTypeError, UsageError
from fhir_adapter.fhir.dates import from_micros, to_micros
from fhir_adapter.fhir.outcome import Issue, operation_outcome
from fhir_adapter.ingest.runner import Clock
from fhir_adapter.report.conformance import ResourceCapability, SearchParam
from fhir_adapter.store import search
from fhir_adapter.store.db import Store
from fhir_adapter.store.schema import audit_events

log = logging.getLogger("fhir_adapter.audit")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

AUDIT_EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
RESTFUL_INTERACTION = "http://hl7.org/fhir/restful-interaction"
DICOM = "http://dicom.nema.org/resources/ontology/DCM"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
RESOURCE_TYPES = "http://hl7.org/fhir/resource-types"
NETWORK_TYPE_IP = "2"
TOKEN_PATH = "/auth/token"
LOGIN = "login"
ACTIONS = ("C", "R", "U", "D", "E")
OUTCOMES = {0: "Success", 4: "Minor failure", 8: "Serious failure", 12: "Major failure"}
INTERACTIONS = (
    "read", "vread", "update", "patch", "delete", "create", "search-type", "transaction", "batch",
    "operation", "search-system", LOGIN,
)  # fmt: skip
#: Roles that may read the audit trail (OHA and administrators; ``dev`` is authorisation off).
READERS = UNRESTRICTED_ROLES
#: ``FHIR`` paths that carry no data and are not audited.
UNAUDITED = frozenset({"metadata", ".well-known", "docs"})
#: Keys of ``request.state`` (``scope["state"]``) that routes fill through :func:`note`.
ENTITIES, INTERACTION, DETAIL, CLIENT, PARAMETER_NAMES = (
    "audit_entities", "audit_interaction", "audit_detail", "audit_client_id", "audit_parameter_names",
)  # fmt: skip
#: Set by the rate limiter for throttled requests it has already audited once.
SKIP = "audit_skip"
IDENTITY_KEY = "fhir_adapter.identity"
MAX_PATH = 512
MAX_NAMES = 40

_TYPE = re.compile(r"^[A-Z][A-Za-z]{0,63}$")
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:\-]{0,63}$")
_LOCATION = re.compile(r"/fhir/([A-Z][A-Za-z]{0,63})/([A-Za-z0-9\-.]{1,64})(?:/_history/|$)")


# --------------------------------------------------------------------------------------------------
# what routes tell the audit


@dataclass(frozen=True)
class Entity:
    """One resource a request touched: ``action`` C/R/U/D/E, and the HTTP ``status`` of its own
    part when it differs from the request's (an entry of a batch)."""

    rtype: str | None
    rid: str | None
    action: str
    status: int | None = None


def note(
    request: Request,
    entities: Iterable[Entity] = (),
    *,
    interaction: str | None = None,
    detail: str | None = None,
) -> None:
    """Tell the audit what this request touched (one row per entity; no entities: one row for the
    request as classified from its method and path). ``detail`` must hold no PHI."""
    state = request.state
    listed = list(entities)
    if listed:
        setattr(state, ENTITIES, listed)
    if interaction is not None:
        setattr(state, INTERACTION, interaction)
    if detail is not None:
        setattr(state, DETAIL, detail)


def note_parameter_names(request: Request, names: Iterable[str]) -> None:
    """Search parameter names read from a form body (``POST …/_search``): names only."""
    setattr(request.state, PARAMETER_NAMES, list(names))


def note_token_client(request: Request, params: dict[str, str]) -> None:
    """The client a token request claims to be: the ``iss`` of its assertion (not verified here;
    the audit row says whether the request succeeded), else its ``client_id`` parameter."""
    claimed: str | None = None
    assertion = params.get("client_assertion")
    if assertion:
        try:
            iss = jwt.decode(assertion, options={"verify_signature": False}).get("iss")
        except jwt.PyJWTError:
            iss = None
        claimed = iss if isinstance(iss, str) else None
    claimed = claimed or params.get("client_id")
    if claimed:
        setattr(request.state, CLIENT, claimed[:128])


def bundle_entities(raw_entries: Sequence[Any], response: dict[str, Any], status: int) -> list[Entity]:
    """The entities of a transaction or batch: each request entry's type and id (the server-assigned
    id of a create from its response ``location``), its method's action and its own status."""
    responses = response.get("entry") if response.get("resourceType") == "Bundle" else None
    out = []
    for index, raw in enumerate(raw_entries):
        entry: dict[str, Any] = raw if isinstance(raw, dict) else {}
        req: dict[str, Any] = entry["request"] if isinstance(entry.get("request"), dict) else {}
        method = str(req.get("method", "")).upper()
        resource: dict[str, Any] = entry["resource"] if isinstance(entry.get("resource"), dict) else {}
        url = str(req.get("url", "")).split("?", 1)[0].strip("/").split("/")
        rtype = url[0] if url and _TYPE.match(url[0]) else resource.get("resourceType")
        rid = url[1] if len(url) > 1 and _ID.match(url[1]) else None
        entry_status = status
        if isinstance(responses, list) and index < len(responses) and isinstance(responses[index], dict):
            answer = responses[index].get("response") or {}
            code = str(answer.get("status", "")).split(" ", 1)[0]
            entry_status = int(code) if code.isdigit() else status
            found = _LOCATION.search("/fhir/" + str(answer.get("location", "")))
            if found:
                rtype, rid = found.group(1), found.group(2)
        action = {"POST": "C", "PUT": "C" if entry_status == 201 else "U", "PATCH": "U", "DELETE": "D"}.get(
            method, "R" if method == "GET" else "E"
        )
        out.append(Entity(str(rtype) if isinstance(rtype, str) and _TYPE.match(rtype) else None, rid,
                          action, entry_status))  # fmt: skip
    return out


# --------------------------------------------------------------------------------------------------
# who is calling (before routing; also used by the rate limiter)


@dataclass(frozen=True)
class Identity:
    client_id: str
    role: str | None
    #: the id comes from a token whose signature this server checked
    verified: bool


ANONYMOUS = Identity("anonymous", None, False)


class Identifier:
    """The client id of a request from its bearer token, the signature checked (HS256 with the
    server secret, our issuer and audience) but not the expiry or the revocation: enough to
    attribute and rate-limit a request, which :func:`fhir_adapter.api.deps.get_caller` then
    authenticates fully. Cached in the ASGI scope."""

    def __init__(self, secret: bytes | None) -> None:
        self.secret = secret  # None: authorisation off

    def __call__(self, scope: Scope) -> Identity:
        cached = scope.get(IDENTITY_KEY)
        if isinstance(cached, Identity):
            return cached
        identity = self._identify(scope)
        scope[IDENTITY_KEY] = identity
        return identity

    def _identify(self, scope: Scope) -> Identity:
        if self.secret is None:
            return Identity("anonymous", "dev", False)
        header = next((v for k, v in scope.get("headers") or () if k == b"authorization"), b"")
        scheme, _, token = header.decode("latin-1").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return ANONYMOUS
        try:
            claims = jwt.decode(
                token.strip(),
                self.secret,
                algorithms=[ACCESS_TOKEN_ALG],
                audience=AUDIENCE,
                issuer=ISSUER,
                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
            )
        except jwt.PyJWTError:
            return ANONYMOUS
        sub, role = claims.get("sub"), claims.get("role")
        if not isinstance(sub, str) or not sub:
            return ANONYMOUS
        return Identity(sub[:128], str(role)[:16] if isinstance(role, str) else None, True)


def client_address(scope: Scope) -> str | None:
    client = scope.get("client")
    return str(client[0])[:64] if client else None


# --------------------------------------------------------------------------------------------------
# classification of a request


@dataclass(frozen=True)
class Classified:
    interaction: str
    action: str
    rtype: str | None
    rid: str | None
    note: str | None = None


def classify(method: str, path: str) -> Classified | None:
    """What a request is, from its method and path alone; ``None`` for unaudited paths."""
    if path == TOKEN_PATH:
        return Classified(LOGIN, "E", None, None, "access token request")
    segments = [s for s in path.split("/") if s]
    if not segments or segments[0] != "fhir":
        return None
    rest = segments[1:]
    if rest and rest[0] in UNAUDITED:
        return None
    if not rest:
        return (
            Classified("transaction", "E", None, None)
            if method == "POST"
            else Classified("search-system", "E", None, None)
        )
    operation = next((i for i, s in enumerate(rest) if s.startswith("$")), None)
    if operation is not None:
        rtype = rest[0] if operation >= 1 and _TYPE.match(rest[0]) else None
        rid = rest[1] if operation == 2 and rtype and _ID.match(rest[1]) else None
        return Classified("operation", "E", rtype, rid, rest[operation][:64])
    if rest[0].startswith("_"):  # job status URLs and Bulk Data output files
        what = {"_jobs": "asynchronous job", "_exports": "bulk export file"}.get(rest[0], rest[0][:32])
        interaction, action = {"DELETE": ("delete", "D")}.get(method, ("read", "R"))
        return Classified(interaction, action, None, None, what)
    rtype = rest[0] if _TYPE.match(rest[0]) else None
    rid = rest[1] if len(rest) > 1 and _ID.match(rest[1]) else None
    if len(rest) == 1 or (len(rest) == 2 and rest[1] == "_search"):
        if method == "POST" and len(rest) == 1:
            return Classified("create", "C", rtype, None)
        return Classified("search-type", "E", rtype, None)
    if len(rest) == 4 and rest[2] == "_history":
        return Classified("vread", "R", rtype, rid, f"version {rest[3][:16]}")
    interaction, action = {
        "PUT": ("update", "U"),
        "PATCH": ("patch", "U"),
        "DELETE": ("delete", "D"),
        "POST": ("create", "C"),
    }.get(method, ("read", "R"))
    return Classified(interaction, action, rtype, rid)


def _clean(text: str, limit: int) -> str:
    """Text as every engine stores it: no NUL (PostgreSQL ``text`` cannot hold one), bounded."""
    return text.replace("\x00", "\\0")[:limit]


def outcome_of(status: int) -> int:
    """R4 AuditEvent.outcome of an HTTP status."""
    if status < 400:
        return 0
    return 4 if status < 500 else 8


def _parameter_names(query: bytes, extra: Iterable[str]) -> list[str]:
    keys = [k for k, _v in parse_qsl(query.decode("latin-1"), keep_blank_values=True)]
    names = sorted({k for k in [*keys, *extra] if _NAME.match(k)})
    others = len({k for k in [*keys, *extra] if not _NAME.match(k)})
    if others:
        names.append(f"({others} other)")
    return names[:MAX_NAMES]


def audit_rows(
    scope: Scope,
    state: dict[str, Any],
    status: int,
    location: str | None,
    identity: Identity,
    now: int,
) -> list[dict[str, Any]]:
    """The ``audit_events`` rows of one finished request (none for unaudited paths)."""
    method = str(scope.get("method", "GET")).upper()
    path = str(scope.get("path", ""))
    info = classify(method, path)
    if info is None:
        return []
    client_id, role = identity.client_id, identity.role
    detail: dict[str, Any] = {}
    address = client_address(scope)
    if address:
        detail["address"] = address
    if info.interaction == LOGIN:
        claimed = state.get(CLIENT)
        client_id, role = (str(claimed), None) if claimed else ("unknown", None)
        detail["note"] = (
            "access token issued" if status < 400 else "access token refused (client id as claimed)"
        )
    else:
        names = _parameter_names(bytes(scope.get("query_string") or b""), state.get(PARAMETER_NAMES) or ())
        if names:
            detail["parameters"] = names
        noted = state.get(DETAIL)
        text = str(noted) if noted else info.note
        if text:
            detail["note"] = _clean(text, 500)
    if not identity.verified and info.interaction != LOGIN and status in (401, 403):
        detail.setdefault("note", "not authenticated" if status == 401 else "forbidden")
    interaction = str(state.get(INTERACTION) or info.interaction)
    rtype, rid, action = info.rtype, info.rid, info.action
    if info.interaction == "create" and location:
        found = _LOCATION.search(location)
        if found:
            rtype, rid = found.group(1), found.group(2)
    if interaction == "update" and status == 201:
        action = "C"
    entities: list[Entity] = list(state.get(ENTITIES) or ()) or [Entity(rtype, rid, action)]
    detail_text = orjson.dumps(detail).decode() if detail else None
    rows = []
    for entity in entities:
        entity_status = entity.status if entity.status is not None else status
        rows.append(
            {
                "at": now,
                "client_id": _clean(client_id, 128),
                "role": _clean(role, 16) if role else None,
                "action": entity.action if entity.action in ACTIONS else "E",
                "interaction": interaction[:32],
                "resource_type": entity.rtype[:64] if entity.rtype else None,
                "resource_id": entity.rid[:64] if entity.rid else None,
                "path": _clean(path, MAX_PATH),
                "status": entity_status,
                "outcome": outcome_of(entity_status),
                "detail": detail_text,
            }
        )
    return rows


# --------------------------------------------------------------------------------------------------
# the middleware


class AuditMiddleware:
    """Records each audited request after its response (module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        store: Store,
        clock: Clock,
        identify: Identifier,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.app = app
        self.store = store
        self.clock = clock
        self.identify = identify
        self.failures = Counter(
            "fhir_adapter_audit_failures",
            "Requests whose audit row could not be written",
            registry=registry,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or classify(str(scope.get("method", "")), str(scope.get("path", ""))) is None
        ):
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        status = 500
        location: str | None = None

        async def _send(message: Message) -> None:
            nonlocal status, location
            if message["type"] == "http.response.start":
                status = int(message["status"])
                for key, value in message.get("headers") or ():
                    if key.lower() == b"location":
                        location = value.decode("latin-1")
            await send(message)

        try:
            await self.app(scope, receive, _send)
        finally:
            if not state.get(SKIP):
                with anyio.CancelScope(shield=True):
                    await self._record(scope, state, status, location)

    async def _record(self, scope: Scope, state: dict[str, Any], status: int, location: str | None) -> None:
        identity = self.identify(scope)
        try:
            rows = audit_rows(scope, state, status, location, identity, to_micros(self.clock()))
            if rows:
                await run_in_threadpool(self._write, rows)
        except Exception as exc:  # the request is answered; never fail it, say so loudly
            self.failures.inc()
            info = classify(str(scope.get("method", "")), str(scope.get("path", "")))
            log.error(
                "AUDIT ROW LOST: %s %s %s by client %s answered %s could not be recorded (%s)",
                scope.get("method"),
                info.interaction if info else "?",
                info.rtype if info and info.rtype else "",
                identity.client_id,
                status,
                exc.__class__.__name__,
            )

    def _write(self, rows: list[dict[str, Any]]) -> None:
        with self.store.write() as conn:
            conn.execute(insert(audit_events), rows)


# --------------------------------------------------------------------------------------------------
# AuditEvent resources


def client_system(canonical_base: str) -> str:
    return f"{canonical_base.rstrip('/')}/client-id"


def _instant(micros: int) -> str:
    moment = from_micros(micros)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}Z"


def to_resource(row: Row[Any], canonical_base: str, observer: str) -> dict[str, Any]:
    """One ``audit_events`` row as an R4 AuditEvent."""
    m = row._mapping
    detail: dict[str, Any] = {}
    if m["detail"]:
        try:
            loaded = orjson.loads(m["detail"])
            detail = loaded if isinstance(loaded, dict) else {"note": str(loaded)}
        except orjson.JSONDecodeError:
            detail = {"note": str(m["detail"])}
    interaction = str(m["interaction"])
    if interaction == LOGIN:
        event_type = {"system": DICOM, "code": "110114", "display": "User Authentication"}
        subtype = {"system": DICOM, "code": "110122", "display": "Login"}
    else:
        event_type = {"system": AUDIT_EVENT_TYPE, "code": "rest", "display": "RESTful Operation"}
        subtype = {"system": RESTFUL_INTERACTION, "code": interaction}
    agent: dict[str, Any] = {
        "who": {"identifier": {"system": client_system(canonical_base), "value": m["client_id"]}},
        "name": m["client_id"],
        "requestor": True,
    }
    if m["role"]:
        agent["role"] = [{"text": m["role"]}]
    if detail.get("address"):
        agent["network"] = {"address": str(detail["address"]), "type": NETWORK_TYPE_IP}
    description = f"HTTP {m['status']} {m['path']}"
    if detail.get("note"):
        description += f" ({detail['note']})"
    if detail.get("parameters"):
        description += "; parameters: " + ", ".join(str(p) for p in detail["parameters"])
    resource: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": str(m["id"]),
        "meta": {"versionId": "1", "lastUpdated": _instant(int(m["at"]))},
        "type": event_type,
        "subtype": [subtype],
        "action": m["action"],
        "recorded": _instant(int(m["at"])),
        "outcome": str(m["outcome"]),
        "outcomeDesc": description,
        "agent": [agent],
        "source": {
            "observer": {
                "display": observer,
                "identifier": {"system": "urn:ietf:rfc:3986", "value": canonical_base},
            },
            "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}],
        },
    }
    if m["resource_type"]:
        entity: dict[str, Any] = {"type": {"system": RESOURCE_TYPES, "code": m["resource_type"]}}
        if m["resource_id"]:
            entity["what"] = {"reference": f"{m['resource_type']}/{m['resource_id']}"}
        resource["entity"] = [entity]
    return resource


# --------------------------------------------------------------------------------------------------
# search


def _authorise(caller: Caller, permission: str) -> None:
    if caller.role not in READERS:
        raise ForbiddenError(
            f"the audit trail is served to OHA and administrator clients only (this client's role is "
            f"{caller.role!r})"
        )
    require(caller, "AuditEvent", permission)


def _tokens(raw: str, name: str, system: str | None) -> list[str]:
    """The codes of a token parameter (alternatives ORed); a value with another system than
    ``system`` matches nothing (``""`` is returned for it)."""
    out = []
    for alternative in search.alternatives(raw):
        token = search.parse_token(alternative, name)
        if token.system is not None and token.system != (system or ""):
            out.append("")
        else:
            out.append(token.code or "")
    return out


def _condition(
    name: str, modifier: str | None, raw: str, ctx: search.SearchContext, base: str
) -> ColumnElement[bool]:
    c = audit_events.c
    if name == "date":
        if modifier:
            raise UsageError(f"date:{modifier}: modifiers are not supported", location="date")
        parts = []
        for alternative in search.alternatives(raw):
            bound = search.parse_instant_bound(alternative, ctx, "date")
            first, last = bound.first, bound.last
            parts.append({
                "eq": and_(c.at >= first, c.at <= last), "ne": or_(c.at < first, c.at > last),
                "gt": c.at > last, "lt": c.at < first, "ge": c.at >= first, "le": c.at <= last,
                "sa": c.at > last, "eb": c.at < first,
            }[bound.prefix])  # fmt: skip
        return or_(*parts)
    if name == "agent":
        if modifier not in (None, "identifier"):
            raise UsageError(
                f"agent:{modifier}: only agent (a client id) and agent:identifier", location="agent"
            )
        if modifier is None:
            ids = [search.unescape(v) for v in search.alternatives(raw)]
        else:
            ids = _tokens(raw, "agent:identifier", client_system(base))
        return c.client_id.in_([i for i in ids if i]) if any(ids) else false()
    if modifier:
        raise UsageError(f"{name}:{modifier}: modifiers are not supported", location=name)
    if name == "entity-type":
        codes = [code for code in _tokens(raw, name, RESOURCE_TYPES) if code]
        return c.resource_type.in_(codes) if codes else false()
    if name == "action":
        codes = [code for code in _tokens(raw, name, "http://hl7.org/fhir/audit-event-action") if code]
        return c.action.in_(codes) if codes else false()
    if name == "outcome":
        numbers = [int(code) for code in _tokens(raw, name, "http://hl7.org/fhir/audit-event-outcome")
                   if code.isdigit()]  # fmt: skip
        return c.outcome.in_(numbers) if numbers else false()
    if name == "subtype":
        codes = [code for code in _tokens(raw, name, RESTFUL_INTERACTION) if code]
        codes += [LOGIN for code in _tokens(raw, name, DICOM) if code == "110122"]
        return c.interaction.in_(codes) if codes else false()
    raise AssertionError(name)  # pragma: no cover


SEARCH_PARAMS: tuple[SearchParam, ...] = (
    SearchParam("date", "date", "http://hl7.org/fhir/SearchParameter/AuditEvent-date",
                "When the event was recorded (recorded); prefixes eq ne gt lt ge le sa eb."),
    SearchParam("agent", "reference", "http://hl7.org/fhir/SearchParameter/AuditEvent-agent",
                "The client id (agent.who.identifier.value); agent:identifier takes system|value."),
    SearchParam("entity-type", "token", "http://hl7.org/fhir/SearchParameter/AuditEvent-entity-type",
                "The resource type touched (http://hl7.org/fhir/resource-types)."),
    SearchParam("action", "token", "http://hl7.org/fhir/SearchParameter/AuditEvent-action", "C | R | U | D | E."),
    SearchParam("outcome", "token", "http://hl7.org/fhir/SearchParameter/AuditEvent-outcome", "0 | 4 | 8 | 12."),
    SearchParam("subtype", "token", "http://hl7.org/fhir/SearchParameter/AuditEvent-subtype",
                "The R4 restful-interaction code (read, search-type, create, update, delete, transaction, "
                "batch, operation), or DICOM 110122 (Login) for token requests."),
)  # fmt: skip
_NAMES = frozenset(p.name for p in SEARCH_PARAMS)
_RESULT = frozenset({"_count", "_page", "_format", "_sort"})


def _strict(request: Request) -> bool:
    prefer = request.headers.get("prefer", "")
    return "handling=strict" in {p.strip().lower() for chunk in prefer.split(",") for p in chunk.split(";")}


@dataclass
class _Page:
    count: int
    capped: int | None
    used: list[tuple[str, str]]
    condition: ColumnElement[bool]
    digest: str
    token: dict[str, int] | None


def _parse(request: Request, state: Any, pairs: list[tuple[str, str]]) -> _Page:
    settings = state.settings
    ctx = search.SearchContext(settings.tz, settings.member_id_system)
    count, capped = settings.search_count_default, None
    conditions: list[ColumnElement[bool]] = []
    used: list[tuple[str, str]] = []
    unknown: list[str] = []
    page_raw = None
    for key, value in pairs:
        if key == "_count":
            if not value.strip().isdigit():
                raise UsageError(f"_count: {value[:32]!r} is not a non-negative integer", location="_count")
            asked = int(value)
            count = min(asked, settings.search_count_max)
            capped = asked if asked > settings.search_count_max else None
        elif key == "_page":
            page_raw = value
        elif key == "_format":
            if value.strip().replace(" ", "+").lower() not in (
                "json",
                "application/json",
                "application/fhir+json",
            ):
                raise UsageError(f"_format {value[:32]!r}: only JSON is served", location="_format")
        elif key == "_sort":
            if value not in ("-date", "") and _strict(request):
                raise UsageError(
                    "_sort: only -date (newest first, the default) is supported", location="_sort"
                )
        else:
            name, _, modifier = key.partition(":")
            if name not in _NAMES:
                unknown.append(key)
                continue
            if value == "":
                continue
            conditions.append(_condition(name, modifier or None, value, ctx, settings.canonical_base))
            used.append((key, value))
    if unknown and _strict(request):
        raise UsageError(
            f"unknown or unsupported search parameter(s): {', '.join(sorted(set(unknown)))[:300]}",
            location=unknown[0],
        )
    digest = hashlib.blake2b(orjson.dumps(sorted(used)), digest_size=8).hexdigest()
    token = _decode_page(page_raw, digest) if page_raw else None
    return _Page(count, capped, used, and_(true(), *conditions), digest, token)


def _encode_page(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).decode("ascii").rstrip("=")


def _decode_page(raw: str, digest: str) -> dict[str, int]:
    try:
        data = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        data = None
    if (
        not isinstance(data, dict)
        or data.get("h") != digest
        or not all(isinstance(data.get(k), int) for k in ("b", "n", "a"))
    ):
        raise UsageError("_page: not a page token of this search", location="_page")
    return {k: int(data[k]) for k in ("b", "n", "a")}


def _search(request: Request, state: Any, pairs: list[tuple[str, str]]) -> Response:
    page = _parse(request, state, pairs)
    c = audit_events.c
    with state.store.read() as conn:
        if page.token is None:
            bound = int(conn.execute(select(func.coalesce(func.max(c.id), 0))).scalar_one())
            total = int(conn.execute(select(func.count()).where(page.condition, c.id <= bound)).scalar_one())
            after = bound + 1
        else:
            bound, total, after = page.token["b"], page.token["n"], page.token["a"]
        rows = []
        if page.count:
            query = (
                select(audit_events)
                .where(page.condition, c.id <= bound, c.id < after)
                .order_by(c.id.desc())
                .limit(page.count + 1)
            )
            rows = list(conn.execute(query).all())
    more = len(rows) > page.count
    rows = rows[: page.count]
    base = base_url(request)

    def link(relation: str, token: dict[str, Any] | None) -> dict[str, str]:
        params = [*page.used, ("_count", str(page.count))]
        if token is not None:
            params.append(("_page", _encode_page({**token, "h": page.digest})))
        return {"relation": relation, "url": f"{base}/fhir/AuditEvent?{urlencode(params)}"}

    links = [link("self", None if page.token is None else {"b": bound, "n": total, "a": after})]
    if more and rows:
        links.append(link("next", {"b": bound, "n": total, "a": int(rows[-1]._mapping["id"])}))
    settings = state.settings
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": f"{base}/fhir/AuditEvent/{row._mapping['id']}",
            "resource": to_resource(row, settings.canonical_base, settings.reporter_display),
            "search": {"mode": "match"},
        }
        for row in rows
    ]
    if page.capped is not None:
        outcome = operation_outcome([Issue(
            "warning", "too-costly",
            f"_count {page.capped} exceeds the maximum page size; pages hold at most {page.count} entries",
            "_count",
        )])  # fmt: skip
        entries.append({"resource": outcome, "search": {"mode": "outcome"}})
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "total": total, "link": links}
    if entries:
        bundle["entry"] = entries
    return FhirResponse(bundle)


# --------------------------------------------------------------------------------------------------
# routes

router = APIRouter(tags=["audit"])


@router.get("/fhir/AuditEvent", summary="Search the audit trail (OHA and admin clients)")
def search_audit(request: Request, state: StateDep, caller: CallerDep) -> Response:
    _authorise(caller, "s")
    return _search(request, state, list(request.query_params.multi_items()))


@router.post("/fhir/AuditEvent/_search", summary="Search the audit trail by POST (form-encoded)")
async def search_audit_post(request: Request, state: StateDep, caller: CallerDep) -> Response:
    _authorise(caller, "s")
    body = await request.body()
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if body and media != "application/x-www-form-urlencoded":
        raise UnsupportedMediaTypeError(
            f"POST _search takes application/x-www-form-urlencoded, not {media or 'no content type'}"
        )
    try:
        form = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError as exc:
        raise UsageError("the form body is not UTF-8") from exc
    note_parameter_names(request, (k for k, _v in form))
    pairs = list(request.query_params.multi_items()) + form
    return await run_in_threadpool(_search, request, state, pairs)


def _read(state: Any, event_id: str) -> dict[str, Any]:
    if not event_id.isdigit() or len(event_id) > 18:
        raise NotFoundError(f"AuditEvent/{event_id[:64]} is not known", location="id")
    with state.store.read() as conn:
        row = conn.execute(select(audit_events).where(audit_events.c.id == int(event_id))).first()
    if row is None:
        raise NotFoundError(f"AuditEvent/{event_id} is not known", location="id")
    return to_resource(row, state.settings.canonical_base, state.settings.reporter_display)


@router.get("/fhir/AuditEvent/{event_id}", summary="Read one audit event (OHA and admin clients)")
def read_audit(event_id: str, state: StateDep, caller: CallerDep) -> Response:
    _authorise(caller, "r")
    return FhirResponse(_read(state, event_id), headers={"ETag": 'W/"1"'})


@router.get("/fhir/AuditEvent/{event_id}/_history/{vid}", summary="Read an audit event's only version")
def vread_audit(event_id: str, vid: str, state: StateDep, caller: CallerDep) -> Response:
    _authorise(caller, "r")
    resource = _read(state, event_id)
    if vid != "1":
        raise NotFoundError(
            f"AuditEvent/{event_id} has no version {vid[:16]!r}: audit events are never changed"
        )
    return FhirResponse(resource, headers={"ETag": 'W/"1"'})


CAPABILITIES = Contribution(
    resources={
        "AuditEvent": ResourceCapability(
            interactions=("read", "vread", "search-type"),
            search_params=SEARCH_PARAMS,
            documentation=(
                "This server's own audit trail: one event per request to a data route (reads, searches "
                "with parameter names only, writes per Bundle entry, operations, token requests, "
                "failures). OHA and admin clients with scope system/AuditEvent.rs; newest first; "
                "AuditEvents cannot be written."
            ),
        )
    }
)

__all__ = [
    "CAPABILITIES",
    "AuditMiddleware",
    "Entity",
    "Identifier",
    "Identity",
    "audit_rows",
    "bundle_entities",
    "classify",
    "note",
    "note_parameter_names",
    "note_token_client",
    "router",
    "to_resource",
]
