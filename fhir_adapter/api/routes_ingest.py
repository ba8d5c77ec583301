"""Ingestion over FHIR REST: pushes, ``$ingest``, ``$validate`` and the "what to send" page.

- ``POST /fhir`` with a ``transaction`` or ``batch`` Bundle (R4 http.html#transaction), answered by a
  ``transaction-response`` / ``batch-response`` Bundle (:mod:`fhir_adapter.ingest.push`).
- ``PUT /fhir/{type}/{id}`` (update or create, R4 http.html#update; ``If-Match``: #concurrency
  "Managing Resource Contention"), ``POST /fhir/{type}`` (#create; ``If-None-Exist``: #ccreate
  conditional create), ``DELETE /fhir/{type}/{id}`` (#delete; here a tombstone version).
  ``Prefer: return=minimal | representation | OperationOutcome`` (R4 http.html) picks the body;
  the OperationOutcome carries the data-quality warnings.
- ``POST /fhir/$ingest``: our own operation, a raw NDJSON body (``application/fhir+ndjson``)
  stored like ``fhir-adapter ingest`` and acknowledged with an OperationOutcome; with
  ``Prefer: respond-async`` or a body above ``settings.ingest_async_bytes`` it runs as a job
  (the body waits in a spool file under ``settings.spool_dir``).
- ``POST /fhir/$validate`` and ``POST /fhir/{type}/$validate`` (R4 Resource-validate): the same
  checks, nothing stored.
- ``GET /fhir/docs/what-to-send``: docs/what-to-send.md as HTML (or Markdown with
  ``Accept: text/markdown``).

Every write is stored under the caller's source (:class:`~fhir_adapter.api.deps.Caller`).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor
from starlette.responses import HTMLResponse, Response

from fhir_adapter.api import audit, markdown
from fhir_adapter.api.capabilities import Contribution
from fhir_adapter.api.deps import AppState, CallerDep, StateDep, get_state, require
from fhir_adapter.api.jobs import JobContext, JobResult
from fhir_adapter.api.responses import FHIR_NDJSON, JSON_TYPES, FhirResponse
from fhir_adapter.api.routes_jobs import accepted, base_url, wants_async
from fhir_adapter.auth.scopes import ScopeSet
from fhir_adapter.errors import (
    ConflictError,
    InvalidDataError,
    MappingsError,
    NotFoundError,
    PreconditionFailedError,
    UnsupportedMediaTypeError,
    UsageError,
)
from fhir_adapter.fhir.dates import from_micros, to_micros
from fhir_adapter.fhir.outcome import Issue, operation_outcome
from fhir_adapter.fhir.resources import ID_RE, json_problem
from fhir_adapter.ingest import push
from fhir_adapter.ingest.quality import QualityRules, check_quality
from fhir_adapter.ingest.runner import check_source
from fhir_adapter.report.conformance import OperationRef, ResourceCapability
from fhir_adapter.settings import DEFAULT_CANONICAL_BASE, DEFAULT_MEMBER_ID_SYSTEM, packaged_dir
from fhir_adapter.store.db import KeyResult

log = logging.getLogger("fhir_adapter.api.ingest")

#: Media types of ``$ingest`` bodies (Bulk Data ``application/fhir+ndjson``; also the common
#: ``application/x-ndjson`` and ``application/ndjson``).
NDJSON_TYPES = frozenset({FHIR_NDJSON, "application/x-ndjson", "application/ndjson"})
RESOURCE_VALIDATE = "http://hl7.org/fhir/OperationDefinition/Resource-validate"
INGEST_DEFINITION = f"{DEFAULT_CANONICAL_BASE}/OperationDefinition/ingest"
WHAT_TO_SEND = "what-to-send.md"
#: Replaced by the loaded CCO list when the page is served.
CCO_MARKER = "<!-- ccos -->"


class _TypeConvertor(Convertor[str]):
    """``{type:fhirtype}``: a capitalised resource-type name, so ``/fhir/$ingest``,
    ``/fhir/_jobs/…`` and ``/fhir/docs/…`` never reach the type routes. Same name and pattern as
    the one of :mod:`fhir_adapter.api.routes_resources` (whichever registers last wins)."""

    regex = "[A-Z][A-Za-z]{0,63}"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("fhirtype", _TypeConvertor())

router = APIRouter(tags=["ingestion"])

_VALIDATE = OperationRef(
    "validate",
    RESOURCE_VALIDATE,
    "Structural checks and the measures' data-quality warnings, nothing stored (a resource, a Parameters "
    "with 'resource', or a transaction/batch Bundle)",
)
CAPABILITIES = Contribution(
    resources={
        rtype: ResourceCapability(interactions=("create", "update", "delete"), operations=(_VALIDATE,))
        for rtype in sorted(push.WRITABLE_TYPES)
    },
    system_interactions=("transaction", "batch"),
    system_operations=(
        OperationRef(
            "ingest",
            INGEST_DEFINITION,
            "Raw NDJSON body (application/fhir+ndjson): good lines stored, bad lines reported; acknowledged "
            "with an OperationOutcome of counts and data-quality warnings; Prefer: respond-async runs it as a job",
        ),
        _VALIDATE,
    ),
)


# --------------------------------------------------------------------------------------------
# helpers


def quality_rules(app: FastAPI) -> QualityRules | None:
    """The data-quality rules of the loaded mappings (rebuilt when they are reloaded); ``None``
    (and logged) when ``mappings/`` cannot be loaded: writes must not fail because of it."""
    state: AppState = app.state.adapter
    try:
        mappings = state.mappings
    except MappingsError:
        log.exception("data-quality checks skipped: mappings cannot be loaded")
        return None
    cached = getattr(app.state, "ingest_quality_rules", None)
    if cached is None or cached[0] is not mappings:
        cached = (mappings, QualityRules(mappings, state.settings.member_id_system, state.settings.tz))
        app.state.ingest_quality_rules = cached
    rules: QualityRules = cached[1]
    return rules


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _require_json(request: Request) -> None:
    media = _media_type(request)
    if media not in JSON_TYPES:
        raise UnsupportedMediaTypeError(
            f"Content-Type {media or '(none)'!r} is not accepted: send application/fhir+json (or application/json)"
        )


async def _json_body(request: Request) -> Any:
    _require_json(request)
    body = await request.body()
    if not body.strip():
        raise UsageError("the request body is empty: send a FHIR JSON resource")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise UsageError(f"the request body is not JSON: {exc}") from None
    problem = json_problem(value, body)
    if problem:
        raise UsageError(f"the request body cannot be stored: {problem}")
    return value


def _now(state: AppState) -> int:
    return to_micros(state.clock())


def _check_type(rtype: str) -> None:
    problem = push.type_problem(rtype, rtype)
    if problem:
        raise NotFoundError(problem.message)


def _check_id(rid: str) -> None:
    if not ID_RE.match(rid):
        raise UsageError(f"{rid[:80]!r} is not a valid FHIR id ([A-Za-z0-9-.]{{1,64}})")


def _check_structure(value: Any, rtype: str) -> dict[str, Any]:
    """The body as a resource of ``rtype`` (its id is checked by the caller): 422 when it is not a
    resource at all, 400 when its type is not the URL's (R4 http.html#update)."""
    probe = {**value, "id": value.get("id", "x")} if isinstance(value, dict) else value
    problem = push.structure_problem(probe, "")
    if problem and not problem.expression.endswith(".id"):
        raise InvalidDataError(problem.message, location=problem.expression)
    assert isinstance(value, dict)
    if value.get("resourceType") != rtype:
        raise UsageError(
            f"resourceType {value.get('resourceType')!r} does not match the URL type {rtype}",
            location=f"{value.get('resourceType')}.resourceType",
        )
    return value


def _prefer_return(request: Request) -> str:
    for part in request.headers.get("prefer", "").split(","):
        name, _, value = part.strip().partition("=")
        if name.strip().lower() == "return" and value.strip().strip('"') in (
            "minimal",
            "representation",
            "OperationOutcome",
        ):
            return value.strip().strip('"')
    return "representation"


def _version_headers(request: Request, rtype: str, rid: str, result: KeyResult) -> dict[str, str]:
    headers: dict[str, str] = {}
    if result.version is not None:
        headers["ETag"] = f'W/"{result.version}"'
        headers["Location"] = f"{base_url(request)}/fhir/{rtype}/{rid}/_history/{result.version}"
    if result.at is not None:
        headers["Last-Modified"] = format_datetime(from_micros(result.at), usegmt=True)
    return headers


def _count(request: Request, outcome: str, n: int = 1) -> None:
    if n:
        request.app.state.metrics.resources_written.labels(outcome).inc(n)


def _count_stats(request: Request, created: int, updated: int, unchanged: int, deleted: int) -> None:
    for outcome, n in (
        ("created", created),
        ("updated", updated),
        ("unchanged", unchanged),
        ("deleted", deleted),
    ):
        _count(request, outcome, n)


def _written(
    request: Request,
    status: int,
    resource: dict[str, Any],
    source: str,
    result: KeyResult,
    warnings: list[Issue],
) -> Response:
    rtype, rid = resource["resourceType"], resource["id"]
    headers = _version_headers(request, rtype, rid, result)
    prefer = _prefer_return(request)
    if prefer == "minimal":
        return Response(status_code=status, headers=headers)
    if prefer == "OperationOutcome":
        return FhirResponse(operation_outcome(warnings), status_code=status, headers=headers)
    assert result.version is not None and result.at is not None
    return FhirResponse(
        push.served(resource, source, result.version, result.at), status_code=status, headers=headers
    )


# --------------------------------------------------------------------------------------------
# routes: fixed paths first (the type routes must not see them)


@router.post("/fhir", summary="Transaction or batch Bundle (R4 http.html#transaction)")
async def transaction_or_batch(request: Request, state: StateDep, caller: CallerDep) -> Response:
    value = await _json_body(request)
    if not isinstance(value, dict) or value.get("resourceType") != "Bundle":
        raise UsageError(
            "POST /fhir takes a transaction or batch Bundle; create single resources with POST /fhir/{type}",
            location="Bundle",
        )
    kind = value.get("type")
    if kind not in ("transaction", "batch"):
        raise UsageError(
            f"Bundle.type {kind!r} is not processed here: send a transaction or batch Bundle (request.method and "
            "request.url on every entry), or send the Bundle as one line of NDJSON to POST /fhir/$ingest",
            location="Bundle.type",
        )
    entries = push.bundle_entries(value, state.settings.max_bundle_entries)
    rules = quality_rules(request.app)
    run = push.transaction if kind == "transaction" else push.batch
    source = check_source(caller.source)
    audit.note(request, interaction=kind)
    result = await run_in_threadpool(
        lambda: run(state.store, source, entries, _now(state), rules=rules, allowed=caller.scopes.allows)
    )
    audit.note(request, audit.bundle_entities(entries, result.body, result.status))
    s = result.stats
    _count_stats(request, s.created, s.updated, s.unchanged, s.deleted)
    _count(request, "rejected", result.rejected)
    return FhirResponse(result.body, status_code=result.status)


@router.post("/fhir/$ingest", summary="Our operation: raw NDJSON body, good lines stored, acknowledged")
async def ingest_operation(request: Request, state: StateDep, caller: CallerDep) -> Response:
    media = _media_type(request)
    if media not in NDJSON_TYPES:
        raise UnsupportedMediaTypeError(
            f"Content-Type {media or '(none)'!r} is not accepted by $ingest: send application/fhir+ndjson"
        )
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise UnsupportedMediaTypeError(f"Content-Encoding {encoding!r} is not accepted by $ingest")
    settings = state.settings
    source = check_source(caller.source)
    declared = request.headers.get("content-length", "")
    to_job = wants_async(request) or (declared.isdigit() and int(declared) > settings.ingest_async_bytes)
    body, path, size, digest = await _receive(request, settings.ingest_async_bytes, to_job, _spool_dir(state))
    if size == 0 or (body is not None and not body.strip()):
        if path is not None:
            path.unlink(missing_ok=True)
        raise UsageError("the request body is empty: send NDJSON, one resource per line")
    if path is not None:
        job = {
            "path": str(path),
            "bytes": size,
            "sha256": digest,
            "source": source,
            "scopes": caller.scopes.render(),
        }
        job_id = request.app.state.jobs.submit("ingest", job, caller.client_id)
        return accepted(request, job_id)
    assert body is not None
    result, ack = await run_in_threadpool(
        push.ingest_ndjson,
        state.store,
        io.BytesIO(body),
        source,
        rules=quality_rules(request.app),
        batch_size=settings.ingest_batch_size,
        clock=state.clock,
        allowed=caller.scopes.allows,
        max_line_bytes=settings.max_ndjson_line_bytes,
    )
    s = result.stats
    _count_stats(request, s.created, s.updated, s.unchanged, s.deleted)
    _count(request, "rejected", len(result.errors))
    audit.note(request, detail=f"$ingest: created {s.created}, updated {s.updated}, unchanged {s.unchanged}, "
               f"deleted {s.deleted}, rejected {len(result.errors)}")  # fmt: skip
    return FhirResponse(ack)


def _spool_dir(state: AppState) -> Path:
    return state.settings.spool_dir or Path(tempfile.gettempdir()) / "fhir-adapter-spool"


async def _receive(
    request: Request, threshold: int, to_file: bool, spool: Path
) -> tuple[bytes | None, Path | None, int, str]:
    """The body in memory, or (when ``to_file`` or larger than ``threshold``) in a new spool
    file: ``(bytes or None, path or None, size, sha256)``. A failed upload leaves no file."""
    buffer = bytearray()
    digest = hashlib.sha256()
    size = 0
    path: Path | None = None
    handle = None
    try:
        async for chunk in request.stream():
            size += len(chunk)
            digest.update(chunk)
            if handle is None and (to_file or size > threshold):
                spool.mkdir(parents=True, exist_ok=True)
                fd, name = tempfile.mkstemp(prefix="ingest-", suffix=".ndjson", dir=spool)
                handle = os.fdopen(fd, "wb")
                path = Path(name)
                handle.write(buffer)
                buffer.clear()
            if handle is not None:
                handle.write(chunk)
            else:
                buffer += chunk
    except BaseException:
        if handle is not None:
            handle.close()
            handle = None
        if path is not None:
            path.unlink(missing_ok=True)
        raise
    finally:
        if handle is not None:
            handle.close()
    return (None if path is not None else bytes(buffer)), path, size, digest.hexdigest()


@router.post("/fhir/$validate", summary="Resource-validate (R4): checks and warnings, nothing stored")
async def validate(request: Request, state: StateDep, caller: CallerDep) -> Response:
    return await _validate(request, None)


@router.get("/fhir/docs/what-to-send", summary="What EHRs and payers should send (HTML, or Markdown)")
def what_to_send(request: Request, state: StateDep) -> Response:
    text = what_to_send_markdown(state)
    if "text/markdown" in request.headers.get("accept", ""):
        return Response(text, media_type="text/markdown; charset=utf-8")
    return HTMLResponse(
        markdown.page(text, "What to send to fhir-adapter"),
        headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"},
    )


def what_to_send_markdown(state: AppState) -> str:
    """docs/what-to-send.md with this site's member-id system and its loaded CCO list."""
    path = packaged_dir("docs") / WHAT_TO_SEND
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise NotFoundError(f"the page {WHAT_TO_SEND} is not installed ({exc.__class__.__name__})") from None
    system = state.settings.member_id_system
    if system != DEFAULT_MEMBER_ID_SYSTEM:
        text = text.replace(DEFAULT_MEMBER_ID_SYSTEM, system)
    try:
        ccos = state.mappings.ccos
    except MappingsError:
        return text.replace(CCO_MARKER, "(the CCO list cannot be loaded on this server)")
    rows = ["| CCO | identifier system | identifier value |", "|---|---|---|"]
    rows += [
        f"| {cco.name} | `{system_}` | `{value}` |" for cco in ccos for system_, value in cco.identifiers
    ]
    return text.replace(CCO_MARKER, "\n".join(rows))


@router.post("/fhir/{type:fhirtype}/$validate", summary="Resource-validate (R4) for one type")
async def validate_type(type: str, request: Request, state: StateDep, caller: CallerDep) -> Response:
    _check_type(type)
    return await _validate(request, type)


async def _validate(request: Request, rtype: str | None) -> Response:
    """R4 Resource-validate: the body is a resource or a Parameters with ``resource`` (and
    optional ``mode`` create/update, ``profile``); 200 with an OperationOutcome whatever the
    verdict (errors for structural problems, warnings and information for data quality)."""
    value = await _json_body(request)
    issues: list[Issue] = []
    mode = "create"
    if isinstance(value, dict) and value.get("resourceType") == "Parameters":
        value, mode, notes = _validate_parameters(value)
        issues.extend(notes)
    rules = quality_rules(request.app)
    probe = {**value, "id": value.get("id", "x")} if isinstance(value, dict) and mode == "create" else value
    problem = push.structure_problem(probe, "")
    if problem:
        issues.append(problem.issue())
        return FhirResponse(operation_outcome(issues))
    assert isinstance(value, dict)
    found = value["resourceType"]
    if rtype is not None and found != rtype:
        issues.append(Issue("error", "invalid", f"resourceType {found!r} is not {rtype} (the URL type)",
                            f"{found}.resourceType"))  # fmt: skip
    if found == "Bundle" and value.get("type") in ("transaction", "batch"):
        settings = get_state(request).settings
        entries = push.bundle_entries(value, settings.max_bundle_entries)
        issues.extend(push.validate_bundle(entries, transaction=value["type"] == "transaction", rules=rules))
        return FhirResponse(operation_outcome(issues))
    if found not in push.WRITABLE_TYPES:
        issues.append(
            Issue("warning", "not-supported", f"{found} is not accepted by create, update, transaction or batch "
                  "here (POST /fhir/$ingest takes it)", f"{found}.resourceType")
        )  # fmt: skip
    if rules is not None:
        issues.extend(check_quality(value, rules))
    return FhirResponse(operation_outcome(issues))


def _validate_parameters(parameters: dict[str, Any]) -> tuple[Any, str, list[Issue]]:
    resource: Any = None
    mode = "create"
    notes: list[Issue] = []
    for n, param in enumerate(parameters.get("parameter") or ()):
        if not isinstance(param, dict):
            continue
        name = param.get("name")
        if name == "resource":
            resource = param.get("resource")
        elif name == "mode":
            mode = str(param.get("valueCode"))
            if mode not in ("create", "update"):
                raise UsageError(
                    f"mode {mode!r} is not supported: create or update", location=f"Parameters.parameter[{n}]"
                )
        elif name == "profile":
            notes.append(
                Issue("information", "informational", f"profile {param.get('valueUri')!r} is not checked: only "
                      "structural checks and the measures' data-quality checks run", f"Parameters.parameter[{n}]")
            )  # fmt: skip
    if resource is None:
        raise UsageError("Parameters has no 'resource' parameter", location="Parameters.parameter")
    return resource, mode, notes


@router.post("/fhir/{type:fhirtype}", summary="Create with a server-assigned id (If-None-Exist supported)")
async def create(type: str, request: Request, state: StateDep, caller: CallerDep) -> Response:
    _check_type(type)
    require(caller, type, "c")
    resource = _check_structure(await _json_body(request), type)
    source = check_source(caller.source)
    rid = push.new_id()  # R4 http.html#create: an id in the body is ignored
    resource = {**resource, "id": rid}
    rules = quality_rules(request.app)
    warnings = check_quality(resource, rules) if rules else []
    item = push.prepared(type, rid, resource)
    criterion = request.headers.get("if-none-exist")
    if criterion is None:
        stats = await run_in_threadpool(
            state.store.write_prepared, source, [item], _now(state), expect_version={}
        )
        _count(request, "created")
        return _written(request, 201, resource, source, stats.results[(type, rid)], warnings)
    identifier = push.parse_if_none_exist(criterion)
    found, stats = await run_in_threadpool(
        lambda: state.store.create_unless_exists(source, item, _now(state), identifier=identifier)
    )
    if not found:
        _count(request, "created")
        return _written(request, 201, resource, source, stats.results[(type, rid)], warnings)
    if len(found) > 1:
        listed = ", ".join(f"{type}/{f}" for f in found[:10])
        raise PreconditionFailedError(
            f"If-None-Exist matches {len(found)} resources ({listed}); nothing was created",
            location="If-None-Exist",
        )
    existing = await run_in_threadpool(push.current_resource, state.store, source, type, found[0])
    if existing is None:
        raise ConflictError(f"{type}/{found[0]} changed meanwhile; send the request again")
    _count(request, "unchanged")
    body, result = existing
    return _written(request, 200, body, source, result, check_quality(body, rules) if rules else [])


@router.put("/fhir/{type:fhirtype}/{id}", summary="Update or create (If-Match supported)")
async def update(type: str, id: str, request: Request, state: StateDep, caller: CallerDep) -> Response:
    _check_type(type)
    require(caller, type, "u")
    _check_id(id)
    resource = _check_structure(await _json_body(request), type)
    if resource.get("id") != id:
        raise UsageError(
            f"the resource id {resource.get('id')!r} is not the id in the URL ({id})", location=f"{type}.id"
        )
    source = check_source(caller.source)
    header = request.headers.get("if-match")
    expect = {(type, id): push.parse_if_match(header)} if header is not None else {}
    rules = quality_rules(request.app)
    warnings = check_quality(resource, rules) if rules else []
    stats = await run_in_threadpool(
        lambda: state.store.write_prepared(
            source, [push.prepared(type, id, resource)], _now(state), expect_version=expect
        )
    )
    result = stats.results[(type, id)]
    _count(request, result.outcome)
    return _written(request, 201 if result.outcome == "created" else 200, resource, source, result, warnings)


@router.delete("/fhir/{type:fhirtype}/{id}", summary="Delete (a tombstone version; If-Match supported)")
async def delete(type: str, id: str, request: Request, state: StateDep, caller: CallerDep) -> Response:
    _check_type(type)
    require(caller, type, "d")
    _check_id(id)
    source = check_source(caller.source)
    header = request.headers.get("if-match")
    expect = {(type, id): push.parse_if_match(header)} if header is not None else {}
    stats = await run_in_threadpool(
        lambda: state.store.write_prepared(
            source, [push.prepared(type, id, None, deleted=True)], _now(state), expect_version=expect
        )
    )
    result = stats.results[(type, id)]
    _count(request, result.outcome)
    headers = {"ETag": f'W/"{result.version}"'} if result.version is not None else {}
    return Response(status_code=204, headers=headers)


# --------------------------------------------------------------------------------------------
# jobs


def register_jobs(app: FastAPI) -> None:
    """Job kind ``ingest``: the ``$ingest`` of a spooled NDJSON body; its result is the
    acknowledgement. The spool file is removed once the job has succeeded (a failed job keeps
    it, so ``$rerun`` works)."""
    state: AppState = app.state.adapter

    def run(ctx: JobContext, request: dict[str, Any]) -> JobResult:
        path = Path(str(request["path"]))
        source = check_source(str(request["source"]))
        if not path.is_file():
            raise UsageError(
                f"the NDJSON body of this job is no longer in the spool folder ({path.name}); send it again"
            )
        digest = hashlib.sha256()
        with path.open("rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                digest.update(chunk)
        if digest.hexdigest() != request.get("sha256"):
            raise UsageError(
                f"the spooled NDJSON body {path.name} changed since it was received; send it again"
            )
        ctx.progress("0 lines read")
        with path.open("rb") as stream:
            _result, ack = push.ingest_ndjson(
                state.store,
                stream,
                source,
                rules=quality_rules(app),
                batch_size=state.settings.ingest_batch_size,
                clock=state.clock,
                on_progress=lambda n: ctx.progress(f"{n} lines read"),
                allowed=ScopeSet.parse(str(request.get("scopes", ""))).allows,
                max_line_bytes=state.settings.max_ndjson_line_bytes,
            )
        path.unlink(missing_ok=True)
        return JobResult(orjson.dumps(ack))

    app.state.jobs.register("ingest", run)
