"""Reads and searches: ``GET /fhir/{type}/{id}``, ``…/_history/{vid}``, ``GET /fhir/{type}`` and
``POST /fhir/{type}/_search`` (FHIR R4 RESTful API, http.html#read, #vread, #search).

Stored types (any R4 type the store holds) are read from the store: the body as received, with
``meta.versionId`` (the store's version), ``meta.lastUpdated`` (when the adapter stored it, to
the microsecond) and ``meta.source`` (the source name), ``ETag: W/"<version>"`` and
``Last-Modified`` (R4 http.html#read and #vread; ``meta.source`` as R4 ``_source``).
Ids are the ids the sources sent (DESIGN.md §2): when the same ``Type/id`` is current in two
sources, ``_source`` picks one, else the caller's own source does, else the answer is 400 naming
the sources. A deleted resource answers 410, an unknown id 404, a name that is not an R4 resource
type 404 with IssueType ``not-supported``.

Measure, Library and ValueSet are the definitional resources generated in memory from the loaded
mappings (:func:`fhir_adapter.report.conformance.render_conformance`), with their generated ids,
which carry the year (``Measure/oregon-se-issue-focused-2025``): several measurement years share
one canonical URL and differ by ``version``; ``meta.versionId`` is a hash of the content.

Search (R4 search.html, SQL in :mod:`fhir_adapter.store.search`): a ``searchset`` Bundle with
``total``, ``self``/``next``/``previous`` links built on the public base URL, entries with
``fullUrl`` and ``search.mode = match``; ``_count`` (default and cap from settings),
``_summary=count``, ``_page`` (an opaque token the links carry). Unknown parameters are ignored
and left out of the self link, unless ``Prefer: handling=strict`` (400) (R4 search.html "Handling
errors"); an unsupported modifier or a malformed value is always 400. ``_format`` accepts JSON
only (406 otherwise).

Authorisation: reads need the type's SMART ``r`` scope and searches its ``s`` scope (the generated
definitional types any token); every read, vread, count and page is restricted to the rows the
caller's tenancy allows (:mod:`fhir_adapter.auth.policy`, docs/security.md), so another tenant's
resource answers 404 like an unknown one, and page tokens carry the tenancy (400 when replayed by
another tenant).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson
from fastapi import APIRouter, Request
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor
from starlette.responses import Response

from fhir_adapter.api import audit
from fhir_adapter.api.capabilities import Contribution
from fhir_adapter.api.deps import AppState, Caller, CallerDep, PolicyDep, StateDep, require
from fhir_adapter.api.errors import outcome_response
from fhir_adapter.api.responses import FhirResponse
from fhir_adapter.api.routes_jobs import base_url
from fhir_adapter.auth.policy import Policy, Predicate
from fhir_adapter.errors import GoneError, NotFoundError, UnsupportedMediaTypeError, UsageError
from fhir_adapter.fhir.dates import from_micros
from fhir_adapter.fhir.outcome import Issue
from fhir_adapter.fhir.resources import R4_RESOURCE_TYPES
from fhir_adapter.measure.spec import Mappings
from fhir_adapter.report.conformance import ResourceCapability, SearchParam, render_conformance
from fhir_adapter.store import search
from fhir_adapter.store.db import Store


class _TypeConvertor(Convertor[str]):
    """A resource type name segment: ``/fhir/metadata``, ``/fhir/$export`` or ``/fhir/_jobs/…``
    do not match, so routes of other routers are never shadowed whatever their order."""

    regex = "[A-Z][A-Za-z]{0,63}"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


class _IdConvertor(_TypeConvertor):
    """A FHIR id segment (R4 ``id``: ``[A-Za-z0-9\\-\\.]{1,64}``): ``$operation`` and
    ``_search`` segments do not match."""

    regex = r"[A-Za-z0-9\-\.]{1,64}"


register_url_convertor("fhirtype", _TypeConvertor())
register_url_convertor("fhirid", _IdConvertor())

router = APIRouter(tags=["resources"])

#: Definitional resources served from the loaded mappings, not from the store.
DEFINITIONAL = ("Library", "Measure", "ValueSet")
#: Result parameters (R4 search.html "Modifying search results") handled here.
RESULT_PARAMS = frozenset({"_count", "_summary", "_page", "_format"})
#: ``_format`` values meaning JSON (R4 http.html#mime-type "Content Types and encodings").
JSON_FORMATS = frozenset({"json", "application/json", "application/fhir+json", "application/json+fhir"})

Pairs = list[tuple[str, str]]


# --------------------------------------------------------------------------------------------------
# shared helpers


def _instant(micros: int) -> str:
    """FHIR ``instant`` in UTC with microseconds (the store's clock unit)."""
    moment = from_micros(micros)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}Z"


def _check_type(rtype: str) -> Response | None:
    if rtype not in R4_RESOURCE_TYPES:
        return outcome_response(
            404, [Issue("error", "not-supported", f"{rtype[:64]!r} is not an R4 resource type", "type")]
        )
    return None


def _check_format(pairs: Pairs) -> Response | None:
    for key, value in pairs:
        if key == "_format" and value.strip().replace(" ", "+").lower() not in JSON_FORMATS:
            return outcome_response(
                406,
                [Issue("error", "not-supported", f"_format {value[:64]!r}: only JSON is served", "_format")],
            )
    return None


def _strict(request: Request) -> bool:
    """``Prefer: handling=strict`` (R4 search.html "Handling errors"; RFC 7240)."""
    prefer = request.headers.get("prefer", "")
    tokens = {part.strip().lower() for chunk in prefer.split(",") for part in chunk.split(";")}
    return "handling=strict" in tokens


def _served(body: bytes, source: str, version: int, ingested_at: int) -> dict[str, Any]:
    resource: dict[str, Any] = orjson.loads(body)
    meta = resource.get("meta")
    resource["meta"] = {
        **(meta if isinstance(meta, dict) else {}),
        "versionId": str(version),
        "lastUpdated": _instant(ingested_at),
        "source": source,
    }
    return resource


def _resource_response(resource: dict[str, Any], version: str, ingested_at: int | None) -> Response:
    headers = {"ETag": f'W/"{version}"'}
    if ingested_at is not None:
        headers["Last-Modified"] = format_datetime(from_micros(ingested_at), usegmt=True)
    return FhirResponse(resource, headers=headers)


@dataclass(frozen=True)
class _Version:
    rkey: int
    source: str
    version: int
    ingested_at: int
    deleted: bool


def _choose(rtype: str, rid: str, rows: Sequence[_Version], caller: Caller, what: str) -> _Version:
    """One version among sources: the only one, else the caller's own source's (DESIGN.md §2: the
    client's own source disambiguates), else 400 naming the sources."""
    if len(rows) == 1:
        return rows[0]
    own = [row for row in rows if row.source == caller.source]
    if own:
        return own[0]
    names = ", ".join(sorted(row.source for row in rows))
    raise UsageError(
        f"{rtype}/{rid}{what} exists in several sources ({names}): add _source=<name> to choose one",
        location="_source",
    )


def _versions(
    store: Store, rtype: str, rid: str, *, version: int | None, source: str | None, restrict: Predicate
) -> list[_Version]:
    """Versions the caller may see (``restrict``: its tenancy, :mod:`fhir_adapter.auth.policy`);
    another tenant's resource is as unknown as a missing one (404)."""
    sql = search.versions_sql(current=version is None, source=source, restrict=restrict.and_sql())
    params: dict[str, Any] = {**restrict.params, "rtype": rtype, "rid": rid}
    if version is not None:
        params["version"] = version
    if source is not None:
        params["source"] = source
    with store.read() as conn:
        rows = conn.execute(text(sql), params).all()
    return [_Version(int(r[0]), str(r[1]), int(r[2]), int(r[3]), bool(r[4])) for r in rows]


def _body(store: Store, rkey: int) -> bytes:
    with store.read() as conn:
        body = conn.execute(text(search.BODY_SQL), {"rkey": rkey}).scalar_one()
    return bytes(body)


def _single(pairs: Pairs, name: str) -> str | None:
    values = [v for k, v in pairs if k == name and v != ""]
    if len(values) > 1 and len(set(values)) > 1:
        raise UsageError(f"{name} given more than once with different values", location=name)
    return values[0] if values else None


# --------------------------------------------------------------------------------------------------
# definitional resources (Measure, Library, ValueSet)


@dataclass(frozen=True)
class _Definition:
    rtype: str
    rid: str
    resource: dict[str, Any]
    version_id: str


class _Definitions:
    """The generated Measure, Library and ValueSet resources of one ``Mappings`` object."""

    def __init__(self, mappings: Mappings, canonical_base: str) -> None:
        self.mappings = mappings
        self.canonical_base = canonical_base
        self.by_type: dict[str, list[_Definition]] = {rtype: [] for rtype in DEFINITIONAL}
        for data in render_conformance(mappings, canonical_base).values():
            resource: dict[str, Any] = orjson.loads(data)
            rtype = resource.get("resourceType")
            if rtype not in self.by_type:
                continue  # the CLI's CapabilityStatement
            version_id = hashlib.blake2b(data, digest_size=8).hexdigest()
            meta = resource.get("meta")
            resource["meta"] = {**(meta if isinstance(meta, dict) else {}), "versionId": version_id}
            self.by_type[str(rtype)].append(
                _Definition(str(rtype), str(resource["id"]), resource, version_id)
            )
        for items in self.by_type.values():
            items.sort(key=lambda d: d.rid)

    def get(self, rtype: str, rid: str) -> _Definition:
        for item in self.by_type[rtype]:
            if item.rid == rid:
                return item
        known = [d.rid for d in self.by_type[rtype] if d.rid.startswith(rid + "-")]
        hint = f"; ids carry the measurement year: {', '.join(known)}" if known else ""
        raise NotFoundError(f"{rtype}/{rid} is not known{hint}", location="id")


def _definitions(request: Request, state: AppState) -> _Definitions:
    """Built once per loaded ``Mappings`` object (reloading mappings rebuilds them)."""
    mappings = state.mappings
    cached: _Definitions | None = getattr(request.app.state, "resource_definitions", None)
    base = state.settings.canonical_base
    if cached is None or cached.mappings is not mappings or cached.canonical_base != base:
        cached = _Definitions(mappings, base)
        request.app.state.resource_definitions = cached
    return cached


def _fold(value: str) -> str:
    """R4 string search: case- and accent-insensitive."""
    decomposed = unicodedata.normalize("NFKD", value)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


Matcher = Callable[[dict[str, Any]], bool]


def _definition_matcher(name: str, modifier: str | None, raw: str) -> Matcher:
    """One occurrence of a definitional search parameter (alternatives ORed)."""
    if modifier is not None and not (name == "name" and modifier in ("exact", "contains")):
        raise UsageError(f"{name}:{modifier}: modifier not supported", location=name)
    values = [search.unescape(v) for v in search.alternatives(raw)]

    def field_is(key: str, accepted: Sequence[str]) -> Matcher:
        return lambda r: r.get(key) in accepted

    if name == "_id":
        return field_is("id", values)
    if name in ("version", "status"):
        codes = [search.parse_token(v, name).code or "" for v in search.alternatives(raw)]
        return field_is(name, codes)
    if name == "url":
        wanted_urls = [(v.split("|", 1)[0], v.split("|", 1)[1] if "|" in v else None) for v in values]
        return lambda r: any(
            r.get("url") == u and (ver is None or r.get("version") == ver) for u, ver in wanted_urls
        )
    # name: string search
    wanted = values if modifier == "exact" else [_fold(v) for v in values]

    def name_matches(r: dict[str, Any]) -> bool:
        have = r.get("name")
        if not isinstance(have, str):
            return False
        if modifier == "exact":
            return have in wanted
        folded = _fold(have)
        if modifier == "contains":
            return any(w in folded for w in wanted)
        return any(folded.startswith(w) for w in wanted)

    return name_matches


DEFINITION_PARAMS: tuple[SearchParam, ...] = (
    SearchParam("_id", "token", "http://hl7.org/fhir/SearchParameter/Resource-id",
                "Generated id: <measure id>-<year>[-<value set name>]."),
    SearchParam("url", "uri", None, "Canonical URL (the same for every measurement year); url|version narrows."),
    SearchParam("version", "token", None, "Business version (contains the measurement year)."),
    SearchParam("name", "string", None, "Computable name: starts with, case-insensitive; :exact, :contains."),
    SearchParam("status", "token", None, "draft | active | retired | unknown."),
)  # fmt: skip
_DEFINITION_NAMES = frozenset(p.name for p in DEFINITION_PARAMS)


# --------------------------------------------------------------------------------------------------
# search plumbing


@dataclass
class _Request:
    """A search request after the result parameters are taken out."""

    criteria: list[tuple[str, str | None, str]]
    #: the parameters used, as given (echoed in links)
    used: Pairs
    count: int
    summary_count: bool
    page: dict[str, Any] | None
    digest: str


def _parse(
    rtype: str, pairs: Pairs, known: frozenset[str], *, strict: bool, state: AppState, tenant: str = "all"
) -> _Request:
    """``tenant`` (:attr:`fhir_adapter.auth.policy.Policy.key`) goes into the digest page tokens carry,
    so a token is refused (400) when replayed by a caller of another tenant."""
    settings = state.settings
    criteria: list[tuple[str, str | None, str]] = []
    used: Pairs = []
    unknown: list[str] = []
    count = settings.search_count_default
    summary_count = False
    page_raw: str | None = None
    for key, value in pairs:
        if key == "_format":
            continue
        if key == "_count":
            if not value.strip().isdigit():
                raise UsageError(f"_count: {value[:32]!r} is not a non-negative integer", location="_count")
            count = min(int(value), settings.search_count_max)
            continue
        if key == "_summary":
            if value == "count":
                summary_count = True
                used.append((key, value))
            elif value == "false":
                used.append((key, value))
            elif strict:
                raise UsageError(
                    f"_summary={value[:32]}: only count and false are supported", location="_summary"
                )
            continue
        if key == "_page":
            page_raw = value
            continue
        name, _, modifier = key.partition(":")
        if name not in known:
            unknown.append(key)
            continue
        if value == "":
            continue  # an empty parameter is ignored
        criteria.append((name, modifier or None, value))
        used.append((key, value))
    if unknown and strict:
        raise UsageError(
            f"unknown or unsupported search parameter(s): {', '.join(sorted(set(unknown)))[:300]}",
            location=unknown[0],
        )
    digest = hashlib.blake2b(orjson.dumps([rtype, sorted(used), tenant]), digest_size=8).hexdigest()
    page = _decode_page(page_raw, digest) if page_raw else None
    return _Request(criteria, used, count, summary_count, page, digest)


def _encode_page(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).decode("ascii").rstrip("=")


def _decode_page(token: str, digest: str) -> dict[str, Any]:
    try:
        data = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        data = None
    if (
        not isinstance(data, dict)
        or data.get("v") != 1
        or not all(isinstance(v, int) for k, v in data.items() if k != "h")
    ):
        raise UsageError("_page: not a page token of this server", location="_page")
    if data.get("h") != digest:
        raise UsageError("_page: the token belongs to a search with other parameters", location="_page")
    return data


def _link(
    request: Request, rtype: str, req: _Request, relation: str, page: dict[str, Any] | None
) -> dict[str, str]:
    pairs = [*req.used, ("_count", str(req.count))]
    if page is not None:
        pairs.append(("_page", _encode_page(page)))
    return {"relation": relation, "url": f"{base_url(request)}/fhir/{rtype}?{urlencode(pairs)}"}


def _bundle(
    request: Request,
    rtype: str,
    req: _Request,
    total: int,
    entries: list[tuple[str, dict[str, Any]]],
    pages: dict[str, dict[str, Any] | None],
) -> Response:
    """The searchset Bundle (R4 search.html "Paging", Bundle.link relations self, next, previous)."""
    links = [_link(request, rtype, req, "self", req.page)]
    for relation in ("next", "previous"):
        if relation in pages:
            links.append(_link(request, rtype, req, relation, pages[relation]))
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "total": total, "link": links}
    if entries:
        base = base_url(request)
        bundle["entry"] = [
            {"fullUrl": f"{base}/fhir/{rtype}/{rid}", "resource": resource, "search": {"mode": "match"}}
            for rid, resource in entries
        ]
    return FhirResponse(bundle)


def _search_stored(
    request: Request, state: AppState, rtype: str, req: _Request, restrict: Predicate
) -> Response:
    """``restrict`` (the caller's tenancy) is ANDed into the count and into every page's query, so
    following links (or replaying a token) never reaches another tenant's rows."""
    ctx = search.SearchContext(state.settings.tz, state.settings.member_id_system)
    query = search.build_query(rtype, req.criteria, ctx)
    if not restrict.unrestricted:
        query.where.append(f"({restrict.sql})")
        query.params.update(restrict.params)
    page = req.page
    if page is not None and not ({"b", "n"} <= page.keys() and ("a" in page) != ("p" in page)):
        raise UsageError("_page: not a page token of this server", location="_page")
    after = None if page is None else page.get("a")
    before = None if page is None else page.get("p")
    with state.store.read() as conn:
        if page is None:
            bound = int(conn.execute(text(search.MAX_RKEY_SQL)).scalar_one())
            sql, params = search.count_sql(query, rtype, bound)
            total = int(conn.execute(text(sql), params).scalar_one())
        else:
            bound, total = int(page["b"]), int(page["n"])
        if req.summary_count or req.count == 0:
            return _bundle(request, rtype, req, total, [], {})
        sql, params = search.page_sql(query, rtype, bound, after=after, before=before, limit=req.count + 1)
        rows = list(conn.execute(text(sql), params).all())
    more = len(rows) > req.count
    rows = rows[: req.count]
    if before is not None:
        rows.reverse()
    head = {"v": 1, "h": req.digest, "b": bound, "n": total}
    pages: dict[str, dict[str, Any] | None] = {}
    if rows:
        forward_more = more if before is None else True
        backward_more = (page is not None) if before is None else more
        if forward_more:
            pages["next"] = {**head, "a": int(rows[-1][0])}
        if backward_more:
            pages["previous"] = {**head, "p": int(rows[0][0])}
    entries = [(str(r[2]), _served(bytes(r[5]), str(r[1]), int(r[3]), int(r[4]))) for r in rows]
    return _bundle(request, rtype, req, total, entries, pages)


def _search_definitions(request: Request, state: AppState, rtype: str, req: _Request) -> Response:
    matchers = [_definition_matcher(name, modifier, raw) for name, modifier, raw in req.criteria]
    items = [d for d in _definitions(request, state).by_type[rtype] if all(m(d.resource) for m in matchers)]
    total = len(items)
    if req.summary_count or req.count == 0:
        return _bundle(request, rtype, req, total, [], {})
    offset = 0 if req.page is None else int(req.page.get("o", -1))
    if offset < 0:
        raise UsageError("_page: not a page token of this server", location="_page")
    chosen = items[offset : offset + req.count]
    head = {"v": 1, "h": req.digest}
    pages: dict[str, dict[str, Any] | None] = {}
    if offset + req.count < total:
        pages["next"] = {**head, "o": offset + req.count}
    if offset > 0:
        pages["previous"] = {**head, "o": max(0, offset - req.count)}
    return _bundle(request, rtype, req, total, [(d.rid, d.resource) for d in chosen], pages)


def _restriction(state: AppState, policy: Policy, rtype: str) -> Predicate:
    """The caller's tenancy on stored ``rtype`` rows, attribution as of now over the read window."""
    return policy.resources(rtype, policy.read_window(state.clock()))


def _search(
    request: Request, state: AppState, rtype: str, pairs: Pairs, caller: Caller, policy: Policy
) -> Response:
    problem = _check_type(rtype) or _check_format(pairs)
    if problem is not None:
        return problem
    strict = _strict(request)
    if rtype in DEFINITIONAL:  # generated from the mappings: any authenticated caller
        req = _parse(rtype, pairs, _DEFINITION_NAMES, strict=strict, state=state)
        return _search_definitions(request, state, rtype, req)
    require(caller, rtype, "s")
    req = _parse(
        rtype, pairs, frozenset(search.params_for(rtype)), strict=strict, state=state, tenant=policy.key
    )
    return _search_stored(request, state, rtype, req, _restriction(state, policy, rtype))


# --------------------------------------------------------------------------------------------------
# routes


@router.get("/fhir/{rtype:fhirtype}", summary="Search a resource type (R4 search-type)")
def search_type(
    rtype: str, request: Request, state: StateDep, caller: CallerDep, policy: PolicyDep
) -> Response:
    return _search(request, state, rtype, list(request.query_params.multi_items()), caller, policy)


@router.post("/fhir/{rtype:fhirtype}/_search", summary="Search by POST (R4 http.html#search, form-encoded)")
async def search_post(
    rtype: str, request: Request, state: StateDep, caller: CallerDep, policy: PolicyDep
) -> Response:
    body = await request.body()
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if body and media != "application/x-www-form-urlencoded":
        raise UnsupportedMediaTypeError(
            f"POST _search takes application/x-www-form-urlencoded, not {media or 'no content type'}"
        )
    try:
        form = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError as exc:
        raise UsageError("the form body is not UTF-8") from exc
    if any("\x00" in key or "\x00" in value for key, value in form):
        raise UsageError("the form body contains a NUL character (%00)")
    audit.note_parameter_names(request, (key for key, _value in form))
    pairs = list(request.query_params.multi_items()) + form
    return await run_in_threadpool(_search, request, state, rtype, pairs, caller, policy)


@router.get("/fhir/{rtype:fhirtype}/{rid:fhirid}", summary="Read the current version (R4 read)")
def read(
    rtype: str, rid: str, request: Request, state: StateDep, caller: CallerDep, policy: PolicyDep
) -> Response:
    pairs = list(request.query_params.multi_items())
    problem = _check_type(rtype) or _check_format(pairs)
    if problem is not None:
        return problem
    if rtype in DEFINITIONAL:
        item = _definitions(request, state).get(rtype, rid)
        return _resource_response(item.resource, item.version_id, None)
    require(caller, rtype, "r")
    source = _single(pairs, "_source")
    restrict = _restriction(state, policy, rtype)
    rows = _versions(state.store, rtype, rid, version=None, source=source, restrict=restrict)
    if not rows:
        where = f" in source {source}" if source else ""
        raise NotFoundError(f"{rtype}/{rid} is not known{where}", location="id")
    live = [row for row in rows if not row.deleted]
    if not live:
        raise GoneError(f"{rtype}/{rid} was deleted", location="id")
    chosen = _choose(rtype, rid, live, caller, "")
    resource = _served(_body(state.store, chosen.rkey), chosen.source, chosen.version, chosen.ingested_at)
    return _resource_response(resource, str(chosen.version), chosen.ingested_at)


@router.get("/fhir/{rtype:fhirtype}/{rid:fhirid}/_history/{vid}", summary="Read one version (R4 vread)")
def vread(
    rtype: str, rid: str, vid: str, request: Request, state: StateDep, caller: CallerDep, policy: PolicyDep
) -> Response:
    pairs = list(request.query_params.multi_items())
    problem = _check_type(rtype) or _check_format(pairs)
    if problem is not None:
        return problem
    if rtype in DEFINITIONAL:
        item = _definitions(request, state).get(rtype, rid)
        if vid != item.version_id:
            raise NotFoundError(f"{rtype}/{rid} has no version {vid[:64]!r} (current: {item.version_id})")
        return _resource_response(item.resource, item.version_id, None)
    require(caller, rtype, "r")
    if not vid.isdigit() or len(vid) > 9:
        raise NotFoundError(f"{rtype}/{rid} has no version {vid[:64]!r}", location="vid")
    source = _single(pairs, "_source")
    restrict = _restriction(state, policy, rtype)
    rows = _versions(state.store, rtype, rid, version=int(vid), source=source, restrict=restrict)
    if not rows:
        raise NotFoundError(f"{rtype}/{rid} has no version {vid}", location="vid")
    chosen = _choose(rtype, rid, rows, caller, f"/_history/{vid}")
    if chosen.deleted:
        raise GoneError(f"{rtype}/{rid} version {vid} is a deletion", location="vid")
    resource = _served(_body(state.store, chosen.rkey), chosen.source, chosen.version, chosen.ingested_at)
    return _resource_response(resource, str(chosen.version), chosen.ingested_at)


# --------------------------------------------------------------------------------------------------
# capabilities

_INTERACTIONS = ("read", "vread", "search-type")


def _capabilities() -> Contribution:
    """Every R4 type: read, vread and search with exactly the parameters implemented."""
    resources: dict[str, ResourceCapability] = {}
    for rtype in sorted(R4_RESOURCE_TYPES - {"AuditEvent"}):  # the audit trail: fhir_adapter.api.audit
        if rtype in DEFINITIONAL:
            resources[rtype] = ResourceCapability(
                interactions=_INTERACTIONS,
                search_params=DEFINITION_PARAMS,
                documentation="Generated from the loaded mappings; ids carry the measurement year "
                "(<measure id>-<year>), versionId is a hash of the content.",
            )
            continue
        params = tuple(
            SearchParam(p.name, p.type, p.definition, p.documentation)
            for p in search.params_for(rtype).values()
        )
        resources[rtype] = ResourceCapability(interactions=_INTERACTIONS, search_params=params)
    return Contribution(resources=resources)


CAPABILITIES = _capabilities()
