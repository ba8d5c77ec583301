"""A FHIR Bulk Data ``$export`` client that resumes after an interruption.

Bulk Data Access IG 3.0.0 (``HL7/bulk-data``), "Export" and the asynchronous request pattern:

- § "Bulk Data Kick-off Request": ``GET [base]/$export``, ``[base]/Patient/$export`` or
  ``[base]/Group/[id]/$export`` with ``Accept: application/fhir+json`` and ``Prefer:
  respond-async``; parameters ``_outputFormat`` (``application/fhir+ndjson``), ``_since`` (an
  instant, on ``meta.lastUpdated``) and ``_type`` (comma-separated). Success: ``202 Accepted`` and
  the status URL in ``Content-Location``.
- § "Bulk Data Status Request": clients SHOULD poll with exponential backoff and SHOULD follow
  ``Retry-After`` (delay-seconds or an HTTP-date); ``202`` while in progress, optionally with
  ``X-Progress``; ``429 Too Many Requests`` + ``Retry-After`` when polling too often; ``4XX``/``5XX``
  with an OperationOutcome on failure (a ``transient`` issue means "retry later"); ``200`` with
  the manifest when complete.
- § "Response - Complete Status" / the ``BulkDataManifest`` logical model: ``transactionTime``
  (1..1), ``requiresAccessToken`` (1..1), ``output[{type, url, count}]``, ``deleted[]``,
  ``error[]``. ``deleted`` files hold one Bundle per line whose entries have ``request.method =
  DELETE`` and ``request.url = Type/id``; ``error`` files hold OperationOutcomes.
- § "Bulk Data Output File Request": with ``requiresAccessToken = true`` the request SHALL carry
  the access token; with ``false`` a client SHALL NOT send it. Clients SHOULD send
  ``Accept-Encoding: gzip`` and SHALL accept gzip.
- § "Bulk Data Delete Request": ``DELETE`` on the status URL once the files are retrieved (or to
  cancel) lets the server clean up.
- "Incremental": the next export's ``_since`` is this manifest's ``transactionTime``.

Resumable: after each step (kick-off, manifest, each ingested file) the caller's ``save``
callback persists a :class:`BulkProgress`; a later run with that progress polls the same status
URL or downloads only the files not yet ingested. Downloads run in parallel (bounded) into a
temporary folder and are ingested one at a time in this thread. Requests are retried with
exponential backoff (tenacity) on 429, 5xx and transport errors, honouring ``Retry-After``
with a cap.
"""

from __future__ import annotations

import contextlib
import email.utils
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar
from urllib.parse import quote, urljoin

import httpx
import orjson
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from fhir_adapter.errors import RemoteError
from fhir_adapter.fhir.dates import iso_instant
from fhir_adapter.fhir.references import parse_reference
from fhir_adapter.fhir.resources import ID_RE, R4_RESOURCE_TYPES
from fhir_adapter.ingest.files import LineError, read_file
from fhir_adapter.ingest.runner import Clock, IngestResult, ingest_items, utc_now
from fhir_adapter.store.db import ParsedResource, Store

T = TypeVar("T")
Level = Literal["system", "patient", "group"]
FileKind = Literal["output", "deleted", "error"]
NDJSON = "application/fhir+ndjson"
FHIR_JSON = "application/fhir+json"
_CHUNK = 1 << 16


# -- progress reporting ---------------------------------------------------------------------


class PullReporter(Protocol):
    """Where a pull tells what it is doing (the CLI draws progress bars; tests collect)."""

    def note(self, message: str) -> None: ...
    def status(self, message: str) -> None: ...
    def page(self, rtype: str, resources: int, total: int | None) -> None: ...
    def file_started(self, name: str, size: int | None) -> None: ...
    def file_bytes(self, name: str, n: int) -> None: ...
    def file_done(self, name: str) -> None: ...


class QuietReporter:
    """Keeps notes and statuses; draws nothing."""

    def __init__(self) -> None:
        self.notes: list[str] = []
        self.statuses: list[str] = []

    def note(self, message: str) -> None:
        self.notes.append(message)

    def status(self, message: str) -> None:
        self.statuses.append(message)

    def page(self, rtype: str, resources: int, total: int | None) -> None:
        pass

    def file_started(self, name: str, size: int | None) -> None:
        pass

    def file_bytes(self, name: str, n: int) -> None:
        pass

    def file_done(self, name: str) -> None:
        pass


# -- retries --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts per request and waits: ``Retry-After`` when the server gives one, else
    ``base_wait`` doubled per attempt; never longer than ``max_wait``."""

    attempts: int = 5
    max_wait: float = 60.0
    base_wait: float = 1.0
    sleep: Callable[[float], None] = time.sleep
    clock: Clock = utc_now

    def backoff(self, attempt: int) -> float:
        """The wait before attempt ``attempt + 1`` without ``Retry-After`` (1-based)."""
        return float(min(self.max_wait, self.base_wait * 2.0 ** max(0, attempt - 1)))

    def capped(self, seconds: float) -> float:
        return max(0.0, min(self.max_wait, seconds))


class _RetryableError(Exception):
    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after = retry_after


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (RFC 9110 §10.2.3): delay-seconds or an
    HTTP-date; ``None`` when absent or unreadable. Pure."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def _is_retryable_status(status: int) -> bool:
    return status == 429 or status >= 500


def request_with_retry(
    client: httpx.Client,
    build: Callable[[], httpx.Request],
    policy: RetryPolicy,
    *,
    what: str,
    consume: Callable[[httpx.Response], T],
    on_retry: Callable[[], None] | None = None,
) -> T:
    """Send ``build()`` (rebuilt per attempt) and ``consume`` the streamed response inside the
    same attempt, retrying 429, 5xx and transport errors (also those while reading the body) up
    to ``policy.attempts`` times. Other statuses go to ``consume`` as they are."""

    def attempt() -> T:
        request = build()
        try:
            response = client.send(request, stream=True)
        except httpx.TransportError as exc:
            raise _RetryableError(f"{exc.__class__.__name__}: {exc}") from exc
        try:
            if _is_retryable_status(response.status_code):
                response.read()
                wait = parse_retry_after(response.headers.get("Retry-After"), policy.clock())
                raise _RetryableError(
                    f"HTTP {response.status_code}{_outcome_suffix(response)}",
                    status=response.status_code,
                    retry_after=wait,
                )
            try:
                return consume(response)
            except httpx.TransportError as exc:
                raise _RetryableError(f"{exc.__class__.__name__} while reading: {exc}") from exc
        finally:
            response.close()

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _RetryableError) and exc.retry_after is not None:
            return policy.capped(exc.retry_after)
        return policy.backoff(state.attempt_number)

    def before_sleep(_state: RetryCallState) -> None:
        if on_retry is not None:
            on_retry()

    retrying = Retrying(
        stop=stop_after_attempt(policy.attempts),
        wait=wait,
        retry=retry_if_exception_type(_RetryableError),
        sleep=policy.sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
    try:
        return retrying(attempt)
    except _RetryableError as exc:
        raise RemoteError(
            f"{what}: {exc.message} (gave up after {policy.attempts} attempts)", status=exc.status
        ) from exc


def send_with_retry(
    client: httpx.Client, build: Callable[[], httpx.Request], policy: RetryPolicy, *, what: str
) -> httpx.Response:
    """:func:`request_with_retry` returning the whole response (body read)."""

    def read(response: httpx.Response) -> httpx.Response:
        response.read()
        return response

    return request_with_retry(client, build, policy, what=what, consume=read)


def outcome_text(response: httpx.Response) -> str:
    """The issues of an OperationOutcome body, else the start of the body text."""
    try:
        body = orjson.loads(response.content)
    except (orjson.JSONDecodeError, httpx.ResponseNotRead):
        body = None
    if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        texts = []
        for issue in body.get("issue") or []:
            if isinstance(issue, dict):
                text = (
                    issue.get("diagnostics") or (issue.get("details") or {}).get("text") or issue.get("code")
                )
                texts.append(f"{issue.get('severity', 'error')}: {text}")
        if texts:
            return "; ".join(texts)
    try:
        return " ".join(response.text.split())[:200]
    except httpx.ResponseNotRead:
        return ""


def _outcome_suffix(response: httpx.Response) -> str:
    text = outcome_text(response)
    return f" ({text})" if text else ""


# -- the manifest ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ManifestFile:
    kind: FileKind
    type: str | None
    url: str
    count: int | None = None


@dataclass(frozen=True)
class Manifest:
    """A completed export's manifest (§ "Response - Complete Status")."""

    transaction_time: str
    requires_access_token: bool
    files: tuple[ManifestFile, ...]
    raw: dict[str, Any]

    @classmethod
    def from_json(cls, data: Any, base_url: str) -> Manifest:
        where = f"manifest of {base_url}"
        if not isinstance(data, dict):
            raise RemoteError(f"{where}: not a JSON object")
        when = data.get("transactionTime")
        if not isinstance(when, str) or not when:
            raise RemoteError(f"{where}: no transactionTime")
        try:
            datetime.fromisoformat(when.replace("Z", "+00:00"))
        except ValueError as exc:
            raise RemoteError(f"{where}: transactionTime {when!r} is not an instant") from exc
        token = data.get("requiresAccessToken")
        if not isinstance(token, bool):
            raise RemoteError(f"{where}: requiresAccessToken must be true or false")
        files: list[ManifestFile] = []
        kinds: tuple[FileKind, ...] = ("output", "deleted", "error")
        for kind in kinds:
            entries = data.get(kind) or []
            if not isinstance(entries, list):
                raise RemoteError(f"{where}: {kind} is not a list")
            for index, entry in enumerate(entries):
                url = entry.get("url") if isinstance(entry, dict) else None
                if not isinstance(url, str) or not url:
                    raise RemoteError(f"{where}: {kind}[{index}] has no url")
                rtype = entry.get("type")
                count = entry.get("count")
                files.append(
                    ManifestFile(
                        kind=kind,
                        type=rtype if isinstance(rtype, str) else None,
                        url=urljoin(base_url, url),
                        count=count if isinstance(count, int) and not isinstance(count, bool) else None,
                    )
                )
        return cls(transaction_time=when, requires_access_token=token, files=tuple(files), raw=data)


@dataclass(frozen=True)
class RemoteIssue:
    """One issue of an OperationOutcome the server put in an ``error`` file."""

    location: str
    severity: str
    code: str
    text: str

    def __str__(self) -> str:
        return f"{self.location}: {self.severity} {self.code}: {self.text}"


# -- reading downloaded files ---------------------------------------------------------------


def read_deleted(path: Path, label: str) -> Iterator[ParsedResource | LineError]:
    """Tombstones from a ``deleted`` file: each line a Bundle whose entries say ``DELETE
    Type/id`` (the Bundle itself needs no id)."""
    with path.open("rb") as stream:
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            where = f"{label}:{number}"
            try:
                bundle = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                yield LineError(where, f"not JSON: {exc}")
                continue
            if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
                yield LineError(where, "a deleted-file line must be a Bundle")
                continue
            entries = bundle.get("entry")
            if not isinstance(entries, list):
                yield LineError(where, "Bundle has no entry list")
                continue
            for index, entry in enumerate(entries):
                request = entry.get("request") if isinstance(entry, dict) else None
                if not isinstance(request, dict) or request.get("method") != "DELETE":
                    yield LineError(f"{where} (Bundle.entry[{index}])", "entry is not a DELETE request")
                    continue
                target = parse_reference(request.get("url"))
                if target is None or target[0] not in R4_RESOURCE_TYPES or not ID_RE.match(target[1]):
                    yield LineError(
                        f"{where} (Bundle.entry[{index}])", f"cannot delete {request.get('url')!r}"
                    )
                    continue
                yield ParsedResource(
                    target[0], target[1], {"resourceType": target[0], "id": target[1]}, deleted=True
                )


def read_errors(path: Path, label: str) -> Iterator[RemoteIssue]:
    """The issues of the OperationOutcomes in an ``error`` file."""
    with path.open("rb") as stream:
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            where = f"{label}:{number}"
            try:
                outcome = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                yield RemoteIssue(where, "error", "invalid", f"error-file line is not JSON: {exc}")
                continue
            issues = outcome.get("issue") if isinstance(outcome, dict) else None
            if not isinstance(issues, list) or not issues:
                yield RemoteIssue(where, "error", "invalid", "error-file line is not an OperationOutcome")
                continue
            for issue in issues:
                if not isinstance(issue, dict):
                    continue
                details = issue.get("details")
                text = (
                    issue.get("diagnostics")
                    or (details.get("text") if isinstance(details, dict) else None)
                    or ""
                )
                expression = issue.get("expression")
                if isinstance(expression, list) and expression:
                    text = f"{text} [{', '.join(str(e) for e in expression)}]"
                yield RemoteIssue(
                    where,
                    str(issue.get("severity") or "error"),
                    str(issue.get("code") or "unknown"),
                    str(text),
                )


# -- the export -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportRequest:
    """What to export (kept in the progress, so a resumed run can tell whether it matches)."""

    base_url: str
    level: Level = "system"
    group: str | None = None
    types: tuple[str, ...] = ()
    since: str | None = None

    @property
    def kickoff_url(self) -> str:
        base = self.base_url.rstrip("/")
        if self.level == "patient":
            return f"{base}/Patient/$export"
        if self.level == "group":
            if not self.group:
                raise ValueError("a group-level export needs a group id")
            return f"{base}/Group/{quote(self.group, safe='')}/$export"
        return f"{base}/$export"

    def params(self) -> dict[str, str]:
        out = {"_outputFormat": NDJSON}
        if self.types:
            out["_type"] = ",".join(self.types)
        if self.since:
            out["_since"] = self.since
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "base_url": self.base_url,
            "level": self.level,
            "group": self.group,
            "types": list(self.types),
            "since": self.since,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExportRequest:
        return cls(
            base_url=str(data["base_url"]),
            level=data.get("level", "system"),
            group=data.get("group"),
            types=tuple(data.get("types") or ()),
            since=data.get("since"),
        )


@dataclass
class BulkProgress:
    """Where an export stands; saved after every step."""

    request: ExportRequest
    status_url: str | None = None
    kicked_off_at: str | None = None
    manifest: dict[str, Any] | None = None
    #: URLs of the manifest files already ingested (or, for error files, reported)
    done: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "request": self.request.to_json(),
            "status_url": self.status_url,
            "kicked_off_at": self.kicked_off_at,
            "manifest": self.manifest,
            "done": list(self.done),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BulkProgress:
        return cls(
            request=ExportRequest.from_json(data["request"]),
            status_url=data.get("status_url"),
            kicked_off_at=data.get("kicked_off_at"),
            manifest=data.get("manifest"),
            done=[str(u) for u in data.get("done") or []],
        )


@dataclass
class ExportResult:
    progress: BulkProgress
    manifest: Manifest
    ingest: IngestResult
    files: int = 0
    issues: list[RemoteIssue] = field(default_factory=list)
    #: whether this run continued an export an earlier run had started
    resumed: bool = False


class JobGoneError(RemoteError):
    """The saved status URL answers 404/410: the server no longer knows the export."""


@dataclass
class BulkClient:
    """The HTTP side of an export. ``http`` carries the access token (when there is one);
    ``plain`` never does (files with ``requiresAccessToken = false``)."""

    http: httpx.Client
    plain: httpx.Client
    policy: RetryPolicy
    reporter: PullReporter = field(default_factory=QuietReporter)

    def kick_off(self, request: ExportRequest) -> str:
        """Start the export; the status URL (§ "Bulk Data Kick-off Request")."""
        url = request.kickoff_url
        response = send_with_retry(
            self.http,
            lambda: self.http.build_request(
                "GET", url, params=request.params(), headers={"Accept": FHIR_JSON, "Prefer": "respond-async"}
            ),
            self.policy,
            what=f"$export kick-off {url}",
        )
        if response.status_code != 202:
            raise RemoteError(
                f"$export kick-off {url}: HTTP {response.status_code}, expected 202 Accepted{_outcome_suffix(response)}",
                status=response.status_code,
            )
        location = response.headers.get("Content-Location")
        if not location:
            raise RemoteError(f"$export kick-off {url}: 202 without a Content-Location (status URL)")
        return str(urljoin(url, location))

    def poll(self, status_url: str) -> Manifest:
        """Poll until the export completes; its manifest (§ "Bulk Data Status Request")."""
        in_progress = 0
        while True:
            response = send_with_retry(
                self.http,
                lambda: self.http.build_request("GET", status_url, headers={"Accept": "application/json"}),
                self.policy,
                what=f"export status {status_url}",
            )
            if response.status_code == 200:
                try:
                    data = orjson.loads(response.content)
                except orjson.JSONDecodeError as exc:
                    raise RemoteError(f"export status {status_url}: the manifest is not JSON: {exc}") from exc
                return Manifest.from_json(data, status_url)
            if response.status_code == 202:
                in_progress += 1
                progress = response.headers.get("X-Progress")
                self.reporter.status(f"export in progress{': ' + progress if progress else ''}")
                wait = parse_retry_after(response.headers.get("Retry-After"), self.policy.clock())
                self.policy.sleep(
                    self.policy.capped(wait) if wait is not None else self.policy.backoff(in_progress)
                )
                continue
            if response.status_code in (404, 410):
                raise JobGoneError(
                    f"export status {status_url}: HTTP {response.status_code}; the server no longer has this export",
                    status=response.status_code,
                )
            raise RemoteError(
                f"export {status_url} failed: HTTP {response.status_code}{_outcome_suffix(response)}",
                status=response.status_code,
            )

    def delete(self, status_url: str) -> str | None:
        """Tell the server it may clean up (§ "Bulk Data Delete Request"); a problem is returned
        as a note, never raised (the data is already stored)."""
        try:
            response = self.http.delete(status_url, headers={"Accept": FHIR_JSON})
        except httpx.HTTPError as exc:
            return f"could not delete the finished export at {status_url}: {exc.__class__.__name__}: {exc}"
        if response.status_code >= 400 and response.status_code not in (404, 410):
            return f"the server answered HTTP {response.status_code} to deleting the finished export at {status_url}"
        return None

    def download(self, entry: ManifestFile, dest: Path, *, with_token: bool) -> int:
        """Stream one file to ``dest`` (retrying, restarting the file on a dropped connection);
        bytes written (§ "Bulk Data Output File Request")."""
        client = self.http if with_token else self.plain
        name = _file_label(entry)
        written = [0]

        def build() -> httpx.Request:
            return client.build_request(
                "GET", entry.url, headers={"Accept": NDJSON, "Accept-Encoding": "gzip"}
            )

        def consume(response: httpx.Response) -> int:
            if response.status_code != 200:
                response.read()
                raise RemoteError(
                    f"download {entry.url}: HTTP {response.status_code}{_outcome_suffix(response)}"
                    + (
                        " (the server wants an access token: give --client-id/--key)"
                        if response.status_code == 401
                        else ""
                    ),
                    status=response.status_code,
                )
            size = response.headers.get("Content-Length")
            self.reporter.file_started(name, int(size) if size and size.isdigit() else None)
            with dest.open("wb") as out:
                for chunk in response.iter_bytes(_CHUNK):
                    out.write(chunk)
                    written[0] += len(chunk)
                    self.reporter.file_bytes(name, len(chunk))
            return written[0]

        def rewind() -> None:
            if written[0]:
                self.reporter.file_bytes(name, -written[0])
                written[0] = 0

        return request_with_retry(
            client, build, self.policy, what=f"download {entry.url}", consume=consume, on_retry=rewind
        )


def _file_label(entry: ManifestFile) -> str:
    tail = entry.url.rstrip("/").rsplit("/", 1)[-1]
    return f"{entry.kind} {entry.type or ''} {tail}".replace("  ", " ").strip()


def run_export(
    client: BulkClient,
    store: Store,
    source: str,
    progress: BulkProgress,
    *,
    save: Callable[[BulkProgress], None],
    batch_size: int,
    max_parallel: int,
    clock: Clock = utc_now,
    work_dir: Path | None = None,
) -> ExportResult:
    """Kick off (unless ``progress`` has a status URL), poll, download and ingest the files not in
    ``progress.done``, saving ``progress`` after every step. Output files are ingested as they
    arrive, then the deleted files (tombstones), then the error files are reported (and kept as
    ingest issues). The caller deletes the status URL and records ``transactionTime``."""
    resumed = progress.status_url is not None
    if progress.status_url is None:
        progress.status_url = client.kick_off(progress.request)
        progress.kicked_off_at = iso_instant(clock())
        progress.manifest = None
        progress.done = []
        save(progress)
    if progress.manifest is None:
        manifest = client.poll(progress.status_url)
        progress.manifest = manifest.raw
        save(progress)
    else:
        manifest = Manifest.from_json(progress.manifest, progress.status_url)
    result = ExportResult(progress=progress, manifest=manifest, ingest=IngestResult(), resumed=resumed)
    pending = [f for f in manifest.files if f.url not in progress.done]
    order = {"output": 0, "deleted": 1, "error": 2}
    pending.sort(key=lambda f: order[f.kind])
    if not pending:
        return result
    folder = Path(tempfile.mkdtemp(prefix="fhir-adapter-bulk-", dir=work_dir))
    pool = ThreadPoolExecutor(max_workers=max(1, max_parallel), thread_name_prefix="bulk-download")
    finished = False
    try:
        futures: list[tuple[ManifestFile, Path, Future[int]]] = []
        for index, entry in enumerate(pending):
            dest = folder / f"{index:05d}-{entry.kind}-{entry.type or 'file'}.ndjson"
            futures.append(
                (
                    entry,
                    dest,
                    pool.submit(client.download, entry, dest, with_token=manifest.requires_access_token),
                )
            )
        _ingest_in_order(futures, client, store, source, progress, result, save, batch_size, clock)
        finished = True
    finally:
        # On failure, do not wait for the other downloads: what is ingested is saved.
        pool.shutdown(wait=finished, cancel_futures=not finished)
        shutil.rmtree(folder, ignore_errors=True)
    return result


def _ingest_in_order(
    futures: list[tuple[ManifestFile, Path, Future[int]]],
    client: BulkClient,
    store: Store,
    source: str,
    progress: BulkProgress,
    result: ExportResult,
    save: Callable[[BulkProgress], None],
    batch_size: int,
    clock: Clock,
) -> None:
    outputs = [f for f in futures if f[0].kind == "output"]
    # Output files as they finish (any order: each resource is in one file), then the rest in order.
    remaining = list(outputs)
    while remaining:
        finished = next((f for f in remaining if f[2].done()), None)
        if finished is None:
            _wait_any([f[2] for f in remaining])
            continue
        remaining.remove(finished)
        _ingest_one(finished, client, store, source, progress, result, save, batch_size, clock)
    for item in futures:
        if item[0].kind != "output":
            _ingest_one(item, client, store, source, progress, result, save, batch_size, clock)


def _wait_any(futures: list[Future[int]]) -> None:
    wait(futures, return_when=FIRST_COMPLETED)


def _ingest_one(
    item: tuple[ManifestFile, Path, Future[int]],
    client: BulkClient,
    store: Store,
    source: str,
    progress: BulkProgress,
    result: ExportResult,
    save: Callable[[BulkProgress], None],
    batch_size: int,
    clock: Clock,
) -> None:
    entry, dest, future = item
    future.result()  # raises the download's error
    label = entry.url
    if entry.kind == "output":
        if _is_gzip(dest):  # a .ndjson.gz served without Content-Encoding: read_file unzips it
            dest = dest.rename(dest.with_name(dest.name + ".gz"))
        # Lines are located by URL:line, not by the temporary file name.
        items = (_relabel(x, dest, label) for x in read_file(dest))
        ingest_items(store, items, source, batch_size=batch_size, clock=clock, result=result.ingest)
    elif entry.kind == "deleted":
        ingest_items(
            store, read_deleted(dest, label), source, batch_size=batch_size, clock=clock, result=result.ingest
        )
    else:
        issues = list(read_errors(dest, label))
        result.issues.extend(issues)
        if issues:
            # Kept for the data-quality report like rejected lines, under the same source.
            ingest_items(
                store,
                [LineError(i.location, f"server reported {i.severity} {i.code}: {i.text}") for i in issues],
                source,
                batch_size=batch_size,
                clock=clock,
                result=IngestResult(),
            )
    result.files += 1
    client.reporter.file_done(_file_label(entry))
    progress.done.append(entry.url)
    save(progress)
    with contextlib.suppress(OSError):
        os.unlink(dest)


def _is_gzip(path: Path) -> bool:
    with path.open("rb") as stream:
        return stream.read(2) == b"\x1f\x8b"


def _relabel(item: ParsedResource | LineError, dest: Path, label: str) -> ParsedResource | LineError:
    if isinstance(item, LineError) and item.location.startswith(str(dest)):
        return LineError(label + item.location[len(str(dest)) :], item.message)
    return item


__all__ = [
    "BulkClient",
    "BulkProgress",
    "ExportRequest",
    "ExportResult",
    "JobGoneError",
    "Manifest",
    "ManifestFile",
    "PullReporter",
    "QuietReporter",
    "RemoteIssue",
    "RetryPolicy",
    "outcome_text",
    "parse_retry_after",
    "read_deleted",
    "read_errors",
    "request_with_retry",
    "run_export",
    "send_with_retry",
]
