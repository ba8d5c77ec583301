"""Bulk data over FHIR REST: ``$export`` (Bulk Data Access IG 3.0.0), ``$import`` by manifest, and
our flat ``$export-flat`` for BI tools.

**Export** (Bulk Data 3.0 "Export"; which versions, which patients and which Groups:
:mod:`fhir_adapter.store.export`):

- Kick-off (§ "Bulk Data Kick-off Request"): ``GET /fhir/$export`` (system), ``GET
  /fhir/Patient/$export`` (all patients), ``GET /fhir/Group/{id}/$export`` (a CCO's children,
  ``cco-<CCO id>``, or a stored Group; ``_source`` picks one when two sources hold its id).
  ``Prefer: respond-async`` is required (the IG lets a server
  refuse a request without it: 400 here); ``Accept``, when sent, must allow
  ``application/fhir+json``. Parameters (§ "Query Parameters"): ``_outputFormat``
  (``application/fhir+ndjson``, ``application/ndjson``, ``ndjson``), ``_since`` (a FHIR instant),
  ``_type`` (comma-separated, repeatable; default: every type of
  :data:`fhir_adapter.store.export.EXPORT_TYPES` the caller's scopes allow to read). ``_typeFilter``,
  ``_elements``, ``patient``, ``includeAssociatedData``, ``_until`` and ``organizeOutputBy`` are not
  supported: 400, or with ``Prefer: handling=lenient`` ignored and reported in the manifest's
  ``error`` file. A type the server cannot export is 400 (lenient: reported); asking only for
  types outside the Patient compartment at patient or group level is 400. Success: 202 with the
  status URL (``/fhir/_jobs/{id}``) in ``Content-Location``.
- The job (kind ``export``) takes the data cut at kick-off: ``transactionTime`` is the kick-off
  time and every file holds exactly the versions visible then, whenever the job runs. It writes
  NDJSON files of at most :data:`FILE_MAX_RESOURCES` resources (one type per file) into
  ``settings.export_dir/<job id>/``; served resources carry ``meta.versionId``,
  ``meta.lastUpdated`` (when the adapter stored the version) and ``meta.source`` as reads do.
  With ``_since``, deletions are listed in ``deleted`` files (one transaction Bundle per
  deletion). Its result, at the status URL, is the manifest (§ "Response - Complete Status";
  ``application/json``); ``requiresAccessToken`` is ``settings.auth_required``.
- Files (§ "Bulk Data Output File Request"): ``GET /fhir/_exports/{job}/{file}``, streamed as
  ``application/fhir+ndjson``, while the job is completed; with authorisation on, only to the
  client that started the export (the IG: a server "MAY additionally restrict ... to the client
  that originated the export") and with read scope on the file's type. ``DELETE`` on the status
  URL (§ "Bulk Data Delete Request") cancels the job and deletes its files.

**Import**: ``POST /fhir/$import`` with a JSON manifest or a Parameters resource
(:mod:`fhir_adapter.ingest.bulk_import`: the allow-list and SSRF rules); always asynchronous (202
+ ``Content-Location``, job kind ``import``); the result is the acknowledgement OperationOutcome,
file by file, with the data-quality warnings of ``$ingest``.

**Flat export** (our own operation): ``GET /fhir/$export-flat?measure=…&periodStart=…&periodEnd=…
&table=results|gaps|summary&format=csv|parquet[&sources=claims|all][&cco=ID]``
(:mod:`fhir_adapter.report.export`): a CSV (Excel-friendly) or Parquet file, not a FHIR resource;
with ``Prefer: respond-async`` a job (kind ``export-flat``) whose result is the file.

Tenancy (:mod:`fhir_adapter.auth.policy`, the one policy of every route): an export holds only
the rows the client that started it may read (an EHR: what it submitted; a CCO: its attributed
children, as known at the data cut, and the provider directory), whatever its level; a CCO's
Groups are its own CCOs' ``cco-<id>``. Files are served to that client (or OHA, an administrator),
like its status URL. A flat export needs a role that runs evaluations and holds only a CCO
caller's own children.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import FileResponse, Response

from fhir_adapter.api.capabilities import Contribution
from fhir_adapter.api.deps import AppState, Caller, CallerDep, StateDep, policy_for, require
from fhir_adapter.api.jobs import Job, JobContext, JobResult
from fhir_adapter.api.responses import FHIR_NDJSON, JSON_TYPES
from fhir_adapter.api.routes_ingest import quality_rules
from fhir_adapter.api.routes_jobs import accepted, base_url, wants_async
from fhir_adapter.auth.scopes import ScopeSet
from fhir_adapter.errors import ForbiddenError, NotFoundError, UnsupportedMediaTypeError, UsageError
from fhir_adapter.fhir.dates import from_micros, to_micros
from fhir_adapter.fhir.resources import ID_RE
from fhir_adapter.ingest import bulk_import
from fhir_adapter.ingest.push import instant_text, served
from fhir_adapter.ingest.runner import check_source
from fhir_adapter.report import export as flat
from fhir_adapter.report.conformance import OperationRef, ResourceCapability
from fhir_adapter.settings import DEFAULT_CANONICAL_BASE, Settings
from fhir_adapter.store import export as bulk
from fhir_adapter.store.export import EXPORT_TYPES, NON_COMPARTMENT, Cut, GroupRef, Level

router = APIRouter(tags=["bulk data"])

BULK = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition"
EXPORT_DEFINITION = f"{BULK}/export"
PATIENT_EXPORT_DEFINITION = f"{BULK}/patient-export"
GROUP_EXPORT_DEFINITION = f"{BULK}/group-export"
IMPORT_DEFINITION = f"{DEFAULT_CANONICAL_BASE}/OperationDefinition/import"
EXPORT_FLAT_DEFINITION = f"{DEFAULT_CANONICAL_BASE}/OperationDefinition/export-flat"
EXPORTS_PATH = "/fhir/_exports"
MANIFEST_TYPE = "application/json"
#: Resources per output file (Bulk Data 3.0 "Server Capability Documentation": how datasets are
#: divided into files).
FILE_MAX_RESOURCES = 100_000
#: ``_outputFormat`` values (Bulk Data 3.0 "Query Parameters": the server SHALL accept these).
OUTPUT_FORMATS = frozenset({"application/fhir+ndjson", "application/ndjson", "ndjson"})
#: Kick-off parameters of Bulk Data 3.0 this server does not implement.
UNSUPPORTED = ("_typeFilter", "_elements", "patient", "includeAssociatedData", "_until", "organizeOutputBy")
_ACCEPT_OK = frozenset({"application/fhir+json", "application/json", "*/*", "application/*"})
_FILE_RE = re.compile(r"^[A-Za-z]{1,64}-\d{1,7}\.ndjson$")
_JOB_RE = re.compile(r"^[0-9a-f]{32}$")


def export_root(settings: Settings) -> Path:
    return settings.export_dir or Path(tempfile.gettempdir()) / "fhir-adapter-exports"


def _job_folder(settings: Settings, job_id: str) -> Path:
    if not _JOB_RE.match(job_id):
        raise NotFoundError(f"no export {job_id[:64]}")
    return export_root(settings) / job_id


# -- kick-off ------------------------------------------------------------------------------------


def _lenient(request: Request) -> bool:
    """``Prefer: handling=lenient`` (R4 search.html "Handling errors"; Bulk Data 3.0 "Query
    Parameters": a lenient server MAY process the request instead of returning an error)."""
    prefer = request.headers.get("prefer", "")
    tokens = {part.strip().lower() for chunk in prefer.split(",") for part in chunk.split(";")}
    return "handling=lenient" in tokens


def _check_headers(request: Request) -> None:
    if not wants_async(request):
        raise UsageError(
            "$export runs asynchronously: send 'Prefer: respond-async' (Bulk Data 3.0 "
            '"Bulk Data Kick-off Request")',
            location="Prefer",
        )
    accept = request.headers.get("accept")
    if accept is None:
        return
    kinds = {part.split(";", 1)[0].strip().lower() for part in accept.split(",")}
    if not kinds & _ACCEPT_OK:
        raise UsageError(
            f"Accept {accept[:80]!r}: the kick-off answers application/fhir+json", location="Accept"
        )


def parse_since(value: str) -> int:
    """A FHIR ``instant`` (date, time and offset required) as µs since the epoch."""
    text = value.strip().replace(" ", "+")  # '+' arrives as a space when not percent-encoded
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        moment = None
    if moment is None or "T" not in text or moment.tzinfo is None:
        raise UsageError(
            f"_since {value[:64]!r} is not a FHIR instant (e.g. 2026-01-31T12:00:00Z)", location="_since"
        )
    return to_micros(moment)


def _types(
    pairs: list[tuple[str, str]], level: Level, caller: Caller, lenient: bool, notes: list[str]
) -> list[str]:
    asked: list[str] = []
    for key, value in pairs:
        if key == "_type":
            for part in value.split(","):
                if part.strip() and part.strip() not in asked:
                    asked.append(part.strip())
    if not asked:
        chosen = [t for t in EXPORT_TYPES if caller.scopes.allows(t, "r")]
        if not chosen:
            require(caller, EXPORT_TYPES[0], "r")  # 403 naming the scope
        return chosen
    unknown = [t for t in asked if t not in EXPORT_TYPES]
    if unknown:
        message = (
            f"_type {', '.join(u[:64] for u in unknown)}: not exported by this server (types: "
            f"{', '.join(EXPORT_TYPES)})"
        )
        if not lenient:
            raise UsageError(message, location="_type")
        notes.append(message + "; ignored (Prefer: handling=lenient)")
    chosen = [t for t in asked if t in EXPORT_TYPES]
    if not chosen:
        raise UsageError("_type names no type this server exports", location="_type")
    if level != "system" and all(t in NON_COMPARTMENT for t in chosen):
        raise UsageError(
            f"_type {','.join(chosen)}: only types outside the Patient compartment; use the system-level "
            "$export for them",
            location="_type",
        )
    for rtype in chosen:
        require(caller, rtype, "r")
    return chosen


def _check_group(caller: Caller, group: GroupRef) -> None:
    """A CCO client's Groups are its own CCOs' virtual Groups (stored Groups may list other CCOs'
    members: :mod:`fhir_adapter.auth.policy`)."""
    if caller.role != "cco" or (group.cco is not None and group.cco.id in caller.ccos):
        return
    own = ", ".join(f"Group/{bulk.cco_group_id(c)}/$export" for c in caller.ccos) or "none"
    raise ForbiddenError(f"a CCO client exports only its own CCOs' Groups: {own}")


def _tenant_of(caller: Caller) -> dict[str, Any]:
    """Who asked, as the job keeps it (the rows it may see are decided when the job runs)."""
    return {
        "client_id": caller.client_id,
        "source": caller.source,
        "role": caller.role,
        "ccos": list(caller.ccos),
    }


def _tenant_filter(state: AppState, job: dict[str, Any], cut: Cut) -> bulk.Tenant:
    """The tenancy policy (:meth:`fhir_adapter.auth.policy.Policy.resources`) of the client that
    started the export, with attribution as known at the data cut over the policy's read window
    ending on the cut's day."""
    who = job["tenant"]
    caller = Caller(str(who["client_id"]), str(who["source"]), role=str(who["role"]), ccos=tuple(who["ccos"]))
    policy = policy_for(state, caller)
    window = policy.read_window(from_micros(cut.as_of))

    def tenant(rtype: str, alias: str) -> tuple[str, dict[str, Any]] | None:
        predicate = policy.resources(rtype, window, as_of=cut.as_of, alias=alias)
        return None if predicate.unrestricted else (predicate.sql, dict(predicate.params))

    return tenant


def _kick_off(
    request: Request, state: AppState, caller: Caller, level: Level, group_id: str | None
) -> Response:
    _check_headers(request)
    pairs = list(request.query_params.multi_items())
    lenient = _lenient(request)
    notes: list[str] = []
    for name in UNSUPPORTED:
        if any(k == name for k, _v in pairs):
            message = f"{name} is not supported by this server"
            if not lenient:
                raise UsageError(
                    message + " (send Prefer: handling=lenient to have it ignored)", location=name
                )
            notes.append(message + "; ignored (Prefer: handling=lenient)")
    formats = [v for k, v in pairs if k == "_outputFormat"]
    for fmt in formats:
        if fmt.strip().replace(" ", "+").lower() not in OUTPUT_FORMATS:
            raise UsageError(
                f"_outputFormat {fmt[:64]!r}: only application/fhir+ndjson (or application/ndjson, ndjson)",
                location="_outputFormat",
            )
    since_values = {v for k, v in pairs if k == "_since" and v.strip()}
    if len(since_values) > 1:
        raise UsageError("_since given more than once with different values", location="_since")
    since = parse_since(since_values.pop()) if since_values else None
    types = _types(pairs, level, caller, lenient, notes)
    as_of = to_micros(state.clock())
    group: GroupRef | None = None
    if level == "group":
        assert group_id is not None
        if not ID_RE.match(group_id):
            raise UsageError(f"{group_id[:80]!r} is not a valid FHIR id", location="id")
        require(caller, "Group", "r")
        source = next((v for k, v in pairs if k == "_source" and v), None)
        group = bulk.find_group(state.store, state.mappings.ccos, group_id, as_of, source)
        _check_group(caller, group)
    query = urlencode(pairs)
    job = {
        "level": level,
        "group": group.rid if group else None,
        "group_source": group.source if group else None,
        "cco": group.cco.id if group and group.cco else None,
        "types": types,
        "since": since,
        "as_of": as_of,
        "request": f"{base_url(request)}{request.url.path}" + (f"?{query}" if query else ""),
        "base": base_url(request),
        "notes": notes,
        "file_max": FILE_MAX_RESOURCES,
        "requires_access_token": state.settings.auth_required,
        "tenant": _tenant_of(caller),
    }
    job_id = request.app.state.jobs.submit("export", job, caller.client_id)
    return accepted(request, job_id)


@router.get("/fhir/$export", summary="Bulk Data system-level export (asynchronous, NDJSON)")
def export_system(request: Request, state: StateDep, caller: CallerDep) -> Response:
    return _kick_off(request, state, caller, "system", None)


@router.get("/fhir/Patient/$export", summary="Bulk Data export of all patients' data")
def export_patients(request: Request, state: StateDep, caller: CallerDep) -> Response:
    return _kick_off(request, state, caller, "patient", None)


@router.get("/fhir/Group/{group_id}/$export", summary="Bulk Data export of a Group's members (cco-<CCO id>)")
def export_group(group_id: str, request: Request, state: StateDep, caller: CallerDep) -> Response:
    return _kick_off(request, state, caller, "group", group_id)


# -- the export job ------------------------------------------------------------------------------


class _Files:
    """Output files of one job: one type per file, at most ``file_max`` lines each."""

    def __init__(self, folder: Path, url: str, file_max: int) -> None:
        self.folder = folder
        self.url = url
        self.file_max = max(1, file_max)
        self.numbers: dict[str, int] = {}

    def write(self, prefix: str, rtype: str, lines: Iterable[bytes]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        handle = None
        count = 0
        try:
            for line in lines:
                if handle is None or count >= self.file_max:
                    if handle is not None:
                        handle.close()
                        items[-1]["count"] = count
                    number = self.numbers.get(prefix, 0) + 1
                    self.numbers[prefix] = number
                    name = f"{prefix}-{number}.ndjson"
                    handle = (self.folder / name).open("wb")
                    items.append({"type": rtype, "url": f"{self.url}/{name}", "count": 0})
                    count = 0
                handle.write(line)
                count += 1
        finally:
            if handle is not None:
                handle.close()
                items[-1]["count"] = count
        return items


def _cut(settings: Settings, as_of: int, since: int | None) -> Cut:
    tz = settings.tz
    last = from_micros(as_of).astimezone(tz).date().toordinal()
    first = from_micros(since).astimezone(tz).date().toordinal() if since is not None else last
    return Cut(as_of=as_of, since=since, window=(min(first, last), last))


def _group_ref(state: AppState, job: dict[str, Any]) -> GroupRef | None:
    if job["level"] != "group":
        return None
    if job.get("cco"):
        cco = next((c for c in state.mappings.ccos if c.id == job["cco"]), None)
        if cco is None:
            raise UsageError(f"CCO {job['cco']} is no longer in the CCO list (mappings/ccos.csv)")
        return GroupRef(str(job["group"]), cco=cco)
    return GroupRef(str(job["group"]), source=str(job["group_source"]))


def _resource_lines(rows: Iterable[bulk.ExportRow], ctx: JobContext, rtype: str) -> Iterator[bytes]:
    for n, row in enumerate(rows, start=1):
        resource = served(orjson.loads(row.body), row.source, row.version, row.ingested_at)
        yield orjson.dumps(resource) + b"\n"
        if n % bulk.PAGE == 0:
            ctx.progress(f"{rtype}: {n} resources written")


def run_export_job(state: AppState, ctx: JobContext, job: dict[str, Any]) -> JobResult:
    """Write the export's files and return its manifest (module docstring)."""
    settings = state.settings
    folder = _job_folder(settings, ctx.job_id)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        files = _Files(folder, f"{job['base']}{EXPORTS_PATH}/{ctx.job_id}", int(job.get("file_max") or 1))
        level: Level = job["level"]
        cut = _cut(settings, int(job["as_of"]), job.get("since"))
        output: list[dict[str, Any]] = []
        deleted: list[dict[str, Any]] = []
        tenant = _tenant_filter(state, job, cut)
        with bulk.snapshot(state.store) as conn:
            members = bulk.prepare_scope(conn, level, _group_ref(state, job), cut)
            if level == "group":
                ctx.progress(f"{members} group members")
            for rtype in job["types"]:
                ctx.progress(f"{rtype}: reading")
                rows = bulk.iter_resources(conn, rtype, level, cut, tenant=tenant)
                output += files.write(rtype, rtype, _resource_lines(rows, ctx, rtype))
            if cut.since is not None:
                ctx.progress("deletions: reading")
                lines = (
                    orjson.dumps(flat.deleted_bundle(t.rtype, t.rid, t.source, instant_text(t.deleted_at),
                                                     f"deleted-{t.rkey}")) + b"\n"
                    for rtype in job["types"]
                    for t in bulk.iter_tombstones(conn, rtype, level, cut, tenant=tenant)
                )  # fmt: skip
                deleted = files.write("deleted", "Bundle", lines)
        error = files.write(
            "error",
            "OperationOutcome",
            (
                orjson.dumps(flat.issue_outcome("warning", "not-supported", note)) + b"\n"
                for note in job["notes"]
            ),
        )
        ctx.progress("done")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    manifest = flat.bulk_manifest(
        instant_text(cut.as_of),
        str(job["request"]),
        requires_access_token=bool(job.get("requires_access_token")),
        output=output,
        deleted=deleted,
        error=error,
    )
    return JobResult(orjson.dumps(manifest), MANIFEST_TYPE)


@router.get(EXPORTS_PATH + "/{job_id}/{name}", summary="Download a Bulk Data output file (NDJSON)")
def export_file(job_id: str, name: str, state: StateDep, caller: CallerDep, request: Request) -> Response:
    folder = _job_folder(state.settings, job_id)
    if not _FILE_RE.match(name):
        raise NotFoundError(f"no file {name[:80]!r} in export {job_id}")
    job = request.app.state.jobs.get(job_id)
    if job.kind != "export" or job.status != "completed":
        raise NotFoundError(f"export {job_id} has no files (it is {job.status})")
    policy_for(state, caller).check_job(job_id, job.owner)  # its owner (or OHA, an administrator)
    rtype = name.rsplit("-", 1)[0]
    if rtype in EXPORT_TYPES:
        require(caller, rtype, "r")
    path = folder / name
    if not path.is_file():
        raise NotFoundError(f"no file {name} in export {job_id}")
    return FileResponse(path, media_type=FHIR_NDJSON)


# -- import --------------------------------------------------------------------------------------


def _spool_dir(settings: Settings) -> Path:
    return settings.spool_dir or Path(tempfile.gettempdir()) / "fhir-adapter-spool"


@router.post("/fhir/$import", summary="Bulk import: the server fetches NDJSON files named in a manifest")
async def import_operation(request: Request, state: StateDep, caller: CallerDep) -> Response:
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media not in JSON_TYPES:
        raise UnsupportedMediaTypeError(
            f"Content-Type {media or '(none)'!r}: $import takes a JSON manifest or a Parameters resource"
        )
    body = await request.body()
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise UsageError(f"the request body is not JSON: {exc}") from None
    manifest = bulk_import.parse_manifest(value)
    settings = state.settings
    if not settings.import_allowed_hosts:
        raise UsageError("this server fetches from no hosts: settings.import_allowed_hosts is empty")
    hosts = bulk_import.parse_allowed_hosts(settings.import_allowed_hosts)
    for n, item in enumerate(manifest.inputs):
        try:
            bulk_import.check_url(item.url, hosts, resolve=None)
        except UsageError as exc:
            exc.location = f"input[{n}].url"
            raise
        require(caller, item.type, "c")
        require(caller, item.type, "u")
    source = check_source(caller.source)
    job = {"manifest": manifest.to_json(), "source": source, "scopes": caller.scopes.render()}
    return accepted(request, request.app.state.jobs.submit("import", job, caller.client_id))


def run_import_job(app: FastAPI, ctx: JobContext, job: dict[str, Any]) -> JobResult:
    state: AppState = app.state.adapter
    settings = state.settings
    ack = bulk_import.run_import(
        state.store,
        bulk_import.parse_manifest(job["manifest"]),
        check_source(str(job["source"])),
        allowed_hosts=settings.import_allowed_hosts,
        max_bytes=settings.max_body_bytes,
        rules=quality_rules(app),
        batch_size=settings.ingest_batch_size,
        spool=_spool_dir(settings),
        timeout=settings.pull_timeout_seconds,
        clock=state.clock,
        allowed=ScopeSet.parse(str(job.get("scopes", ""))).allows,
        progress=ctx.progress,
        max_line_bytes=settings.max_ndjson_line_bytes,
    )
    return JobResult(orjson.dumps(ack))


# -- flat export ---------------------------------------------------------------------------------


def _date(pairs: dict[str, str], name: str) -> date:
    value = pairs.get(name)
    if not value:
        raise UsageError(f"{name} is required (YYYY-MM-DD)", location=name)
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{name} {value[:32]!r} is not a date (YYYY-MM-DD)", location=name) from None


def _flat_job(request: Request, state: AppState, caller: Caller) -> dict[str, Any]:
    pairs = dict(request.query_params.items())
    measure = pairs.get("measure")
    if not measure:
        raise UsageError("measure is required (e.g. oregon-se-issue-focused)", location="measure")
    start, end = _date(pairs, "periodStart"), _date(pairs, "periodEnd")
    if start > end:
        raise UsageError("periodStart is after periodEnd", location="periodStart")
    table, fmt = pairs.get("table", "results"), pairs.get("format", "csv")
    sources = pairs.get("sources", "all")
    if sources not in ("all", "claims"):
        raise UsageError(f"sources {sources[:32]!r}: all or claims", location="sources")
    cco = pairs.get("cco") or None
    flat.check_flat_request(table, fmt, cco, state.mappings)
    require(caller, "MeasureReport", "r")
    policy = policy_for(state, caller)
    scope = policy.evaluation_scope()  # 403 for roles that run no evaluations
    if cco is not None:
        policy.check_organization(cco)
    return {"measure": measure, "period_start": start.isoformat(), "period_end": end.isoformat(),
            "table": table, "format": fmt, "sources": sources, "cco": cco, "ccos": scope.to_json()}  # fmt: skip


def run_flat_job(state: AppState, job: dict[str, Any]) -> tuple[bytes, str]:
    table = flat.run_flat_export(
        state.settings,
        state.store,
        state.mappings,
        str(job["measure"]),
        date.fromisoformat(job["period_start"]),
        date.fromisoformat(job["period_end"]),
        str(job["table"]),
        sources=job["sources"],
        cco=job.get("cco"),
        ccos=job.get("ccos"),
        clock=state.clock,
    )
    return table.encode(job["format"]), flat.media_type(job["format"])


@router.get(
    "/fhir/$export-flat", summary="Our operation: per-child results, gaps or summaries as CSV/Parquet"
)
async def export_flat(request: Request, state: StateDep, caller: CallerDep) -> Response:
    job = _flat_job(request, state, caller)
    if wants_async(request):
        return accepted(request, request.app.state.jobs.submit("export-flat", job, caller.client_id))
    data, media = await run_in_threadpool(run_flat_job, state, job)
    ext = "csv" if job["format"] == "csv" else "parquet"
    name = f"{job['measure']}-{job['period_end']}-{job['table']}.{ext}"
    return Response(data, media_type=media, headers={"Content-Disposition": f'attachment; filename="{name}"'})


# -- jobs and capabilities -------------------------------------------------------------------------


def register_jobs(app: FastAPI) -> None:
    """Job kinds ``export`` (result: the manifest; cancelling deletes the files), ``import``
    (result: the acknowledgement) and ``export-flat`` (result: the file)."""
    state: AppState = app.state.adapter
    jobs = app.state.jobs

    def remove_files(job: Job) -> None:
        shutil.rmtree(_job_folder(state.settings, job.id), ignore_errors=True)

    def flat_job(_ctx: JobContext, job: dict[str, Any]) -> JobResult:
        data, media = run_flat_job(state, job)
        return JobResult(data, media)

    jobs.register("export", lambda ctx, job: run_export_job(state, ctx, job))
    jobs.cancel_hooks["export"] = remove_files
    jobs.register("import", lambda ctx, job: run_import_job(app, ctx, job))
    jobs.register("export-flat", flat_job)


_EXPORT_DOC = (
    "Bulk Data 3.0 export, asynchronous (Prefer: respond-async), NDJSON files of at most "
    f"{FILE_MAX_RESOURCES} resources; _outputFormat, _since (deletions in 'deleted'), _type; not "
    "_typeFilter, _elements, patient, includeAssociatedData, _until, organizeOutputBy (400, or ignored with "
    "Prefer: handling=lenient). Organization, Practitioner and PractitionerRole are exported whole at every level."
)
CAPABILITIES = Contribution(
    resources={
        "Patient": ResourceCapability(
            interactions=(),
            operations=(
                OperationRef(
                    "export", PATIENT_EXPORT_DEFINITION, _EXPORT_DOC + " Patient compartment of all patients."
                ),
            ),
        ),
        "Group": ResourceCapability(
            interactions=(),
            operations=(
                OperationRef(
                    "export",
                    GROUP_EXPORT_DEFINITION,
                    _EXPORT_DOC
                    + " Groups: cco-<CCO id> (children enrolled in the CCO during the export window: "
                    "the day of _since to today, else today) and stored Groups (their active members).",
                ),
            ),
        ),
    },
    system_operations=(
        OperationRef("export", EXPORT_DEFINITION, _EXPORT_DOC),
        OperationRef(
            "import",
            IMPORT_DEFINITION,
            "Bulk import by manifest (JSON {inputFormat, inputSource, input[{type, url}]} or Parameters): the server "
            "fetches each NDJSON file from hosts on its allow-list only and stores it like $ingest; asynchronous.",
        ),
        OperationRef(
            "export-flat",
            EXPORT_FLAT_DEFINITION,
            "Per-child results, gap list or per-CCO summary of a measure as CSV (Excel-friendly) or Parquet: "
            "measure, periodStart, periodEnd, table=results|gaps|summary, format=csv|parquet, sources, cco.",
        ),
    ),
)
