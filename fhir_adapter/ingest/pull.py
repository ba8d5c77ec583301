"""Pull from a FHIR server into the store: FHIR search with paging, or Bulk Data ``$export``.

Search mode (FHIR R4 §3.1.1 RESTful API "search", §3.1.1.4 "Paging"): for each resource type,
``GET [base]/[type]?_count=n`` (with ``_lastUpdated=gt<since>`` when incremental, FHIR R4 search
§3.1.1.5.8 ``_lastUpdated``), following ``Bundle.link[relation=next]`` until there is none. Paging
links are opaque and followed only on the server's own origin (SMART App Launch 2.2 Backend
Services § "Access FHIR API": do not send the access token elsewhere). A server that sends no
paging links gives one page, which is noted; when its ``Bundle.total`` says there was more, the
run is *incomplete* and the next ``_since`` is not advanced.

Bulk mode: :mod:`fhir_adapter.ingest.bulk_client` (Bulk Data 3.0 ``$export``), resumable from
the progress kept here.

State (table ``pull_state``, one row per source): the base URL, the mode, ``since`` (the next
incremental starting point) and, during an export, the status URL and progress JSON. A
successful search run stores its start (the server's ``Date`` on the first answer, else the local
clock) minus ``pull_since_overlap_seconds``; a successful export stores the manifest's
``transactionTime`` (Bulk Data 3.0 "Incremental": the next ``_since``). ``--since`` overrides.
Everything pulled is stored through :func:`fhir_adapter.ingest.runner.ingest_items` under the
source (default: the server's host name), so re-reading a resource is harmless (unchanged).
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import orjson
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from fhir_adapter.auth.smart_client import BackendServicesClient, SmartAuth, load_signing_key
from fhir_adapter.errors import RemoteError, StoreError, UsageError
from fhir_adapter.fhir.dates import iso_instant, to_micros
from fhir_adapter.fhir.resources import R4_RESOURCE_TYPES, check_resource
from fhir_adapter.ingest.bulk_client import (
    FHIR_JSON,
    BulkClient,
    BulkProgress,
    ExportRequest,
    JobGoneError,
    Level,
    PullReporter,
    QuietReporter,
    RemoteIssue,
    RetryPolicy,
    outcome_text,
    run_export,
    send_with_retry,
)
from fhir_adapter.ingest.files import LineError
from fhir_adapter.ingest.runner import Clock, IngestResult, check_source, ingest_items, utc_now
from fhir_adapter.settings import Settings
from fhir_adapter.store.db import DRIVER_ERRORS, ParsedResource, Store
from fhir_adapter.store.schema import pull_state

#: What the measures read (spec §3: enrollment, claims, clinical services and diagnoses,
#: providers and attribution, referral loop) plus Observation for screenings.
DEFAULT_TYPES = (
    "Patient",
    "Coverage",
    "Encounter",
    "Condition",
    "Procedure",
    "ServiceRequest",
    "Claim",
    "ExplanationOfBenefit",
    "Organization",
    "Practitioner",
    "PractitionerRole",
    "Group",
    "Task",
    "Observation",
)
#: Scope asked for when none is given (SMART v2 syntax; converted to ``system/*.read`` for a
#: server that shows only v1 scopes).
DEFAULT_SCOPE = "system/*.rs"
USER_AGENT = "fhir-adapter (pull)"
#: Answers to a type's first search page that mean "this server does not offer this type (to
#: this client)": the type is skipped with a note rather than failing the whole pull (EHRs rarely
#: hold Claim or ExplanationOfBenefit, payers rarely Encounter).
UNSUPPORTED_STATUSES = frozenset({403, 404, 405, 501})


def check_base_url(base_url: str) -> str:
    """The FHIR base URL without a trailing slash; :class:`UsageError` unless http(s)."""
    parts = urlsplit(base_url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--base {base_url!r} is not an http(s) URL of a FHIR server")
    if parts.query or parts.fragment:
        raise UsageError(f"--base {base_url!r}: a FHIR base URL has no query or fragment")
    return base_url.strip().rstrip("/")


def default_source(base_url: str) -> str:
    """The source name of a server: its host (and port when not the default), lower case, with
    anything but letters, digits, ``.``, ``-`` and ``_`` replaced by ``-``."""
    parts = urlsplit(base_url)
    host = (parts.hostname or "fhir-server").lower()
    default_port = {"http": 80, "https": 443}.get(parts.scheme)
    if parts.port is not None and parts.port != default_port:
        host = f"{host}-{parts.port}"
    name = re.sub(r"[^a-z0-9._-]+", "-", host).strip("-") or "fhir-server"
    return check_source(name[:128])


def check_types(types: tuple[str, ...]) -> tuple[str, ...]:
    unknown = [t for t in types if t not in R4_RESOURCE_TYPES]
    if unknown:
        raise UsageError(
            f"--types: {', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not an R4 resource type"
        )
    if not types:
        raise UsageError("--types is empty")
    return tuple(dict.fromkeys(types))


# -- state --------------------------------------------------------------------------------------


@dataclass
class PullState:
    """One row of ``pull_state``."""

    source: str
    base_url: str
    mode: str
    since: str | None = None
    status_url: str | None = None
    progress: dict[str, Any] | None = None
    updated_at: int = 0


def read_pull_state(store: Store, source: str) -> PullState | None:
    try:
        with store.read() as conn:
            row = conn.execute(select(pull_state).where(pull_state.c.source == source)).mappings().first()
    except DRIVER_ERRORS as exc:
        raise StoreError(f"cannot read the pull state of source {source!r}: {exc}") from exc
    if row is None:
        return None
    progress = orjson.loads(row["progress"]) if row["progress"] else None
    return PullState(
        source=row["source"],
        base_url=row["base_url"],
        mode=row["mode"],
        since=row["since"],
        status_url=row["status_url"],
        progress=progress if isinstance(progress, dict) else None,
        updated_at=int(row["updated_at"]),
    )


def write_pull_state(store: Store, state: PullState) -> None:
    """Insert or replace the row of ``state.source`` (one statement, so a kill never leaves it
    half-written)."""
    values: dict[str, Any] = {
        "source": state.source,
        "base_url": state.base_url,
        "mode": state.mode,
        "since": state.since,
        "status_url": state.status_url,
        "progress": orjson.dumps(state.progress).decode() if state.progress is not None else None,
        "updated_at": state.updated_at,
    }
    dialect = sqlite if store.dialect == "sqlite" else postgresql
    stmt = dialect.insert(pull_state).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=[pull_state.c.source], set_={k: v for k, v in values.items() if k != "source"}
    )
    try:
        with store.write() as conn:
            conn.execute(stmt)
    except DRIVER_ERRORS as exc:
        raise StoreError(f"cannot save the pull state of source {state.source!r}: {exc}") from exc


# -- requests and results -----------------------------------------------------------------------


@dataclass(frozen=True)
class SmartCredentials:
    """SMART Backend Services client credentials (``--client-id``, ``--key``, ``--kid``, ``--scope``)."""

    client_id: str
    key_path: Path
    kid: str | None = None
    scope: str = DEFAULT_SCOPE


@dataclass(frozen=True)
class PullRequest:
    base_url: str
    source: str | None = None
    types: tuple[str, ...] = DEFAULT_TYPES
    #: overrides the remembered starting point
    since: datetime | None = None
    bulk: bool = False
    level: Level = "system"
    group: str | None = None
    #: bulk: forget an interrupted export and start a new one
    restart: bool = False


@dataclass
class PullResult:
    source: str
    base_url: str
    mode: str
    ingest: IngestResult = field(default_factory=IngestResult)
    #: the ``_since`` / ``_lastUpdated`` lower bound used (``None``: everything)
    since_used: str | None = None
    #: saved for the next run (``None`` when the run was incomplete)
    next_since: str | None = None
    pages: int = 0
    files: int = 0
    issues: list[RemoteIssue] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: why the data is incomplete (the next ``_since`` was not advanced)
    incomplete: list[str] = field(default_factory=list)
    resumed: bool = False
    status_url: str | None = None


# -- entry point -------------------------------------------------------------------------------


def pull(
    settings: Settings,
    store: Store,
    request: PullRequest,
    *,
    credentials: SmartCredentials | None = None,
    transport: httpx.BaseTransport | None = None,
    clock: Clock = utc_now,
    sleep: Callable[[float], None] = time.sleep,
    reporter: PullReporter | None = None,
    base_wait: float = 1.0,
    work_dir: Path | None = None,
) -> PullResult:
    """Pull ``request`` into ``store``; see the module docstring. ``transport`` replaces the
    network (tests); ``sleep``/``clock`` make waits and times injectable."""
    base = check_base_url(request.base_url)
    source = check_source(request.source) if request.source else default_source(base)
    types = check_types(request.types)
    if request.level == "group" and not request.group:
        raise UsageError("a group-level export needs --group ID")
    if (request.level != "system" or request.group) and not request.bulk:
        raise UsageError("--group and --patient-level apply to --bulk only")
    reporter = reporter or QuietReporter()
    policy = RetryPolicy(
        attempts=settings.pull_attempts,
        max_wait=settings.pull_max_wait_seconds,
        base_wait=min(base_wait, settings.pull_max_wait_seconds),
        sleep=sleep,
        clock=clock,
    )
    common: dict[str, Any] = {
        "timeout": httpx.Timeout(settings.pull_timeout_seconds),
        "follow_redirects": True,
        "headers": {"User-Agent": USER_AGENT},
    }
    if transport is not None:
        common["transport"] = transport
    plain = httpx.Client(**common)
    http = plain
    try:
        if credentials is not None:
            key = load_signing_key(credentials.key_path, kid=credentials.kid)
            tokens = BackendServicesClient(
                client_id=credentials.client_id,
                key=key,
                scope=credentials.scope,
                http=plain,
                base_url=base,
                clock=clock,
                margin=settings.pull_token_margin_seconds,
                send=lambda build: send_with_retry(plain, build, policy, what="token endpoint"),
            )
            http = httpx.Client(auth=SmartAuth(tokens), **common)
        state = read_pull_state(store, source)
        result = PullResult(source=source, base_url=base, mode="bulk" if request.bulk else "search")
        since = _since_for(request, state, base, result)
        result.since_used = iso_instant(since) if since is not None else None
        if request.bulk:
            _pull_bulk(
                settings,
                store,
                request,
                types,
                since,
                state,
                result,
                http,
                plain,
                policy,
                reporter,
                clock,
                work_dir,
            )
        else:
            _pull_search(settings, store, types, since, state, result, http, policy, reporter, clock)
    finally:
        if http is not plain:
            http.close()
        plain.close()
    for note in result.notes:
        reporter.note(note)
    s = result.ingest.stats
    if s.created or s.updated or s.deleted:
        store.analyze()
    return result


def _since_for(
    request: PullRequest, state: PullState | None, base: str, result: PullResult
) -> datetime | None:
    if request.since is not None:
        return request.since.astimezone(UTC)
    if state is None or not state.since:
        return None
    if state.base_url != base:
        result.notes.append(
            f"source {state.source!r} was last pulled from {state.base_url}, not {base}: pulling everything"
        )
        return None
    return datetime.fromisoformat(state.since.replace("Z", "+00:00")).astimezone(UTC)


# -- search mode -------------------------------------------------------------------------------


def _same_origin(url: str, base: str) -> bool:
    a, b = urlsplit(url), urlsplit(base)
    return (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port)


def _server_date(response: httpx.Response) -> datetime | None:
    value = response.headers.get("Date")
    if not value:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _pull_search(
    settings: Settings,
    store: Store,
    types: tuple[str, ...],
    since: datetime | None,
    state: PullState | None,
    result: PullResult,
    http: httpx.Client,
    policy: RetryPolicy,
    reporter: PullReporter,
    clock: Clock,
) -> None:
    started = clock()
    server_started: datetime | None = None
    base = result.base_url
    for rtype in types:
        params: dict[str, str] | None = {"_count": str(settings.pull_page_size)}
        if since is not None:
            assert params is not None
            params["_lastUpdated"] = f"gt{iso_instant(since)}"
        url = f"{base}/{rtype}"
        seen: set[str] = set()
        matched = 0
        total: int | None = None
        page = 0
        while True:
            page += 1
            query = params

            def build(url: str = url, query: dict[str, str] | None = query) -> httpx.Request:
                return http.build_request("GET", url, params=query, headers={"Accept": FHIR_JSON})

            response = send_with_retry(http, build, policy, what=f"{rtype} search {url}")
            if server_started is None:
                server_started = _server_date(response)
            if page == 1 and response.status_code in UNSUPPORTED_STATUSES:
                result.notes.append(
                    f"{rtype}: skipped, the server does not offer it (HTTP {response.status_code}: "
                    f"{outcome_text(response)})"
                )
                break
            if response.status_code != 200:
                raise RemoteError(
                    f"{rtype} search {response.request.url}: HTTP {response.status_code} ({outcome_text(response)})",
                    status=response.status_code,
                )
            bundle = _bundle(response, rtype)
            label = f"{rtype} search page {page}"
            items, page_matched, outcomes = _page_items(bundle, label)
            for text in outcomes:
                result.notes.append(f"{label}: the server said {text}")
            ingest_items(
                store,
                items,
                result.source,
                batch_size=settings.ingest_batch_size,
                clock=clock,
                result=result.ingest,
            )
            result.pages += 1
            matched += page_matched
            if page == 1 and isinstance(bundle.get("total"), int):
                total = bundle["total"]
            reporter.page(rtype, page_matched, total)
            raw_links = bundle.get("link")
            links: list[Any] = raw_links if isinstance(raw_links, list) else []
            next_url = next(
                (
                    link.get("url")
                    for link in links
                    if isinstance(link, dict)
                    and link.get("relation") == "next"
                    and isinstance(link.get("url"), str)
                ),
                None,
            )
            if next_url is None:
                if not links:
                    result.notes.append(
                        f"{rtype}: the server sent no paging links; took its one page ({page_matched} resources)"
                    )
                if total is not None and total > matched:
                    result.incomplete.append(
                        f"{rtype}: the server reported {total} matches but gave {matched} and no next link"
                    )
                break
            next_url = urljoin(str(response.request.url), next_url)
            if not _same_origin(next_url, base):
                raise RemoteError(
                    f"{rtype} search: the next link {next_url} leaves {base}; not following it (it would carry "
                    "the access token elsewhere)"
                )
            if next_url in seen:
                raise RemoteError(
                    f"{rtype} search: the next link {next_url} repeats; the server's paging loops"
                )
            seen.add(next_url)
            url, params = next_url, None
    if result.incomplete:
        result.next_since = None
        return
    start = server_started or started
    result.next_since = iso_instant(start - timedelta(seconds=settings.pull_since_overlap_seconds))
    write_pull_state(
        store,
        PullState(
            source=result.source,
            base_url=base,
            mode="search",
            since=result.next_since,
            status_url=state.status_url if state else None,
            progress=state.progress if state else None,
            updated_at=to_micros(clock()),
        ),
    )


def _bundle(response: httpx.Response, rtype: str) -> dict[str, Any]:
    try:
        bundle = orjson.loads(response.content)
    except orjson.JSONDecodeError as exc:
        raise RemoteError(f"{rtype} search {response.request.url}: the answer is not JSON: {exc}") from exc
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise RemoteError(f"{rtype} search {response.request.url}: the answer is not a Bundle")
    return bundle


def _page_items(
    bundle: dict[str, Any], label: str
) -> tuple[list[ParsedResource | LineError], int, list[str]]:
    """Resources of one searchset page (matches and includes), the number of matches, and the
    texts of ``search.mode = outcome`` OperationOutcomes (FHIR R4 §3.1.1.4.2)."""
    entries = bundle.get("entry") or []
    items: list[ParsedResource | LineError] = []
    outcomes: list[str] = []
    matched = 0
    if not isinstance(entries, list):
        return [LineError(label, "Bundle.entry is not a list")], 0, outcomes
    for index, entry in enumerate(entries):
        where = f"{label}, Bundle.entry[{index}]"
        if not isinstance(entry, dict):
            items.append(LineError(where, "entry is not an object"))
            continue
        search = entry.get("search")
        mode = search.get("mode") if isinstance(search, dict) else None
        resource = entry.get("resource")
        if mode == "outcome" or (
            isinstance(resource, dict) and resource.get("resourceType") == "OperationOutcome"
        ):
            outcomes.append(_issues_text(resource))
            continue
        if mode != "include":
            matched += 1
        problem = check_resource(resource)
        if problem:
            items.append(LineError(where, problem))
            continue
        assert isinstance(resource, dict)
        items.append(ParsedResource(resource["resourceType"], resource["id"], resource))
    return items, matched, outcomes


def _issues_text(outcome: Any) -> str:
    issues = outcome.get("issue") if isinstance(outcome, dict) else None
    texts = []
    for issue in issues if isinstance(issues, list) else []:
        if isinstance(issue, dict):
            details = issue.get("details")
            detail = details.get("text") if isinstance(details, dict) else None
            texts.append(
                f"{issue.get('severity', '?')}: {issue.get('diagnostics') or detail or issue.get('code')}"
            )
    return "; ".join(texts) or "an OperationOutcome without issues"


# -- bulk mode ---------------------------------------------------------------------------------


def _pull_bulk(
    settings: Settings,
    store: Store,
    request: PullRequest,
    types: tuple[str, ...],
    since: datetime | None,
    state: PullState | None,
    result: PullResult,
    http: httpx.Client,
    plain: httpx.Client,
    policy: RetryPolicy,
    reporter: PullReporter,
    clock: Clock,
    work_dir: Path | None,
) -> None:
    base = result.base_url
    client = BulkClient(http=http, plain=plain, policy=policy, reporter=reporter)
    wanted = ExportRequest(
        base_url=base,
        level=request.level,
        group=request.group,
        types=types,
        since=iso_instant(since) if since is not None else None,
    )
    progress: BulkProgress | None = None
    saved: BulkProgress | None = None
    if state is not None and state.status_url and state.progress:
        if request.restart:
            note = client.delete(state.status_url)
            result.notes.append(f"--restart: dropped the interrupted export at {state.status_url}")
            if note:
                result.notes.append(note)
        else:
            try:
                saved = BulkProgress.from_json(state.progress)
            except (KeyError, TypeError, ValueError) as exc:
                raise UsageError(
                    f"source {result.source!r}: the saved progress of export {state.status_url} is unreadable "
                    f"({exc.__class__.__name__}: {exc}); add --restart to start a new export"
                ) from exc
        if saved is not None and saved.request != wanted:
            raise UsageError(
                f"source {result.source!r} has an interrupted export ({saved.status_url}, started "
                f"{saved.kicked_off_at}) for {_describe(saved.request)}; this run asks for {_describe(wanted)}. "
                "Re-run with the same options to resume it, or add --restart"
            )
        elif saved is not None:
            progress = saved
            reporter.note(f"resuming the export started {saved.kicked_off_at}: {saved.status_url}")
    kept_since = state.since if state is not None else None

    def save(p: BulkProgress) -> None:
        write_pull_state(
            store,
            PullState(
                source=result.source,
                base_url=base,
                mode="bulk",
                since=kept_since,
                status_url=p.status_url,
                progress=p.to_json(),
                updated_at=to_micros(clock()),
            ),
        )

    def export(p: BulkProgress) -> Any:
        return run_export(
            client,
            store,
            result.source,
            p,
            save=save,
            batch_size=settings.ingest_batch_size,
            max_parallel=settings.pull_max_parallel,
            clock=clock,
            work_dir=work_dir,
        )

    resuming = progress is not None
    current = progress or BulkProgress(wanted)
    try:
        try:
            done = export(current)
        except JobGoneError as exc:
            if not resuming:
                raise
            result.notes.append(f"{exc}; starting a new export")
            resuming = False
            current = BulkProgress(wanted)
            done = export(current)
    except RemoteError as exc:
        if current.status_url is None:
            raise
        raise RemoteError(
            f"{exc.message}. The export's progress is saved: run the same command again to resume it "
            f"({current.status_url}), or add --restart to start a new export",
            status=exc.status,
        ) from exc
    result.ingest = done.ingest
    result.files = done.files
    result.issues = done.issues
    result.resumed = resuming
    status_url = done.progress.status_url
    result.status_url = status_url
    if status_url:
        note = client.delete(status_url)
        if note:
            result.notes.append(note)
    result.next_since = done.manifest.transaction_time
    write_pull_state(
        store,
        PullState(
            source=result.source,
            base_url=base,
            mode="bulk",
            since=result.next_since,
            status_url=None,
            progress=None,
            updated_at=to_micros(clock()),
        ),
    )


def _describe(request: ExportRequest) -> str:
    where = {"system": "$export", "patient": "Patient/$export", "group": f"Group/{request.group}/$export"}[
        request.level
    ]
    return f"{where} of {', '.join(request.types) or 'all types'} since {request.since or 'the beginning'}"


__all__ = [
    "DEFAULT_SCOPE",
    "DEFAULT_TYPES",
    "PullRequest",
    "PullResult",
    "PullState",
    "SmartCredentials",
    "check_base_url",
    "check_types",
    "default_source",
    "pull",
    "read_pull_state",
    "write_pull_state",
]
