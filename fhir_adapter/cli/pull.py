"""``fhir-adapter pull``: fetch from a FHIR server (search or Bulk Data ``$export``) into the store."""

from __future__ import annotations

import sys
import time
from datetime import UTC, date, datetime
from datetime import time as dtime
from pathlib import Path

import click
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from fhir_adapter.cli.common import database_option, err, main, settings_for
from fhir_adapter.errors import RemoteError, UsageError
from fhir_adapter.fhir.dates import parse_instant


class _RichReporter:
    """Progress on stderr: one line per resource type (search), a status line and one bar per
    file (bulk). Download threads call it too; rich's Progress is thread-safe."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, TaskID] = {}
        self.status_task: TaskID | None = None

    def note(self, message: str) -> None:
        self.progress.console.print(f"note: {message}", markup=False, highlight=False, soft_wrap=True)

    def status(self, message: str) -> None:
        if self.status_task is None:
            self.status_task = self.progress.add_task(message, total=None)
        else:
            self.progress.update(self.status_task, description=message)

    def page(self, rtype: str, resources: int, total: int | None) -> None:
        task = self.tasks.get(rtype)
        if task is None:
            task = self.tasks[rtype] = self.progress.add_task(rtype, total=total)
        self.progress.advance(task, resources)

    def file_started(self, name: str, size: int | None) -> None:
        if self.status_task is not None:  # the export is ready: its status line has done its job
            self.progress.remove_task(self.status_task)
            self.status_task = None
        task = self.tasks.get(name)
        if task is None:
            self.tasks[name] = self.progress.add_task(name, total=size)
        else:
            self.progress.reset(task, total=size)

    def file_bytes(self, name: str, n: int) -> None:
        task = self.tasks.get(name)
        if task is not None:
            self.progress.advance(task, n)

    def file_done(self, name: str) -> None:
        task = self.tasks.get(name)
        if task is not None:
            done = next((t.completed for t in self.progress.tasks if t.id == task), 0)
            self.progress.update(task, total=done, description=f"{name} ✓")


def _parse_since(value: str, tz_name: str) -> datetime:
    """An instant with an offset, or a date meaning the start of that day in the reporting zone."""
    from zoneinfo import ZoneInfo

    text = value.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime.combine(day, dtime.min, tzinfo=ZoneInfo(tz_name)).astimezone(UTC)
        return parse_instant(text)
    except ValueError as exc:
        raise UsageError(f"--since {value!r}: {exc} (give YYYY-MM-DD or an instant with an offset)") from None


@main.command()
@click.option("--base", "base_url", required=True, help="FHIR base URL of the server to pull from.")
@click.option(
    "--types", default=None, help="Comma-separated resource types (default: what the measures read)."
)
@click.option(
    "--since", default=None, help="Only resources changed after this instant or date (default: the last run)."
)
@click.option(
    "--source", default=None, help="Source name for the pulled data (default: the server's host name)."
)
@click.option("--bulk", is_flag=True, help="Use Bulk Data $export instead of search.")
@click.option("--group", default=None, help="Bulk: export Group/ID/$export.")
@click.option("--patient-level", is_flag=True, help="Bulk: export Patient/$export.")
@click.option("--restart", is_flag=True, help="Bulk: drop an interrupted export and start a new one.")
@click.option("--client-id", default=None, help="SMART Backend Services client id.")
@click.option(
    "--key",
    "key_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Private key: a JWKS/JWK file or a PEM file (with --kid).",
)
@click.option("--kid", default=None, help="Key id (picks the key in a JWKS; required with a PEM key).")
@click.option(
    "--scope", default=None, help="Scopes to ask for (default system/*.rs; v1 system/*.read also works)."
)
@click.option(
    "--max-parallel", type=click.IntRange(1, 16), default=None, help="Bulk: concurrent downloads (default 2)."
)
@click.option(
    "--max-wait",
    type=click.FloatRange(0.001, 3600),
    default=None,
    help="Longest wait between status polls and before retries, seconds (default 60).",
)
@database_option
@click.option("--quiet", is_flag=True, help="No progress bars.")
def pull(
    base_url: str, types: str | None, since: str | None, source: str | None, bulk: bool, group: str | None,
    patient_level: bool, restart: bool, client_id: str | None, key_path: Path | None, kid: str | None,
    scope: str | None, max_parallel: int | None, max_wait: float | None, database: str | None, quiet: bool,
) -> None:  # fmt: skip
    """Fetch resources from a FHIR server into the store (search with paging, or --bulk $export),
    incrementally after the first run."""
    from fhir_adapter import workflow
    from fhir_adapter.ingest.pull import DEFAULT_SCOPE, DEFAULT_TYPES, PullRequest, SmartCredentials
    from fhir_adapter.ingest.pull import pull as run_pull

    settings = settings_for(database)
    overrides: dict[str, object] = {}
    if max_parallel is not None:
        overrides["pull_max_parallel"] = max_parallel
    if max_wait is not None:
        overrides["pull_max_wait_seconds"] = max_wait
    if overrides:
        settings = settings.model_copy(update=overrides)
    if (group or patient_level) and not bulk:
        raise UsageError("--group and --patient-level need --bulk")
    if group and patient_level:
        raise UsageError("give --group or --patient-level, not both")
    if restart and not bulk:
        raise UsageError("--restart applies to --bulk")
    credentials = None
    if client_id or key_path or kid or scope:
        if not client_id or key_path is None:
            raise UsageError(
                "SMART Backend Services needs both --client-id and --key (and --scope, default system/*.rs)"
            )
        credentials = SmartCredentials(
            client_id=client_id, key_path=key_path, kid=kid, scope=scope or DEFAULT_SCOPE
        )
    type_list = (
        tuple(t.strip() for t in types.split(",") if t.strip()) if types is not None else DEFAULT_TYPES
    )
    request = PullRequest(
        base_url=base_url,
        source=source,
        types=type_list,
        since=_parse_since(since, settings.timezone) if since else None,
        bulk=bulk,
        level="group" if group else "patient" if patient_level else "system",
        group=group,
        restart=restart,
    )
    store = workflow.open_store(settings)
    started = time.perf_counter()
    try:
        with Progress(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn() if bulk else TextColumn("{task.completed}"),
            TimeElapsedColumn(), console=err, disable=quiet, transient=False,
        ) as progress:  # fmt: skip
            result = run_pull(
                settings, store, request, credentials=credentials, reporter=_RichReporter(progress)
            )
    finally:
        store.close()
    elapsed = time.perf_counter() - started
    for issue in result.issues[:200]:
        err.print(f"server error file: {issue}", highlight=False, soft_wrap=True, markup=False)
    if len(result.issues) > 200:
        err.print(
            f"… and {len(result.issues) - 200} more issues in the server's error files", highlight=False
        )
    for error in result.ingest.errors[:200]:
        err.print(f"{error.location}: {error.message}", highlight=False, soft_wrap=True, markup=False)
    if len(result.ingest.errors) > 200:
        err.print(f"… and {len(result.ingest.errors) - 200} more rejected resources", highlight=False)
    s = result.ingest.stats
    unit = f"{result.files} files" if result.mode == "bulk" else f"{result.pages} pages"
    resumed = " (resumed)" if result.resumed else ""
    err.print(
        f"{result.mode} pull{resumed} from {result.base_url} as source {result.source!r}"
        f"{' since ' + result.since_used if result.since_used else ''}: {unit}, {result.ingest.read} resources read "
        f"in {elapsed:.1f}s: {s.created} created, {s.updated} updated, {s.unchanged} unchanged, {s.deleted} deleted; "
        f"{len(result.ingest.errors)} rejected; {len(result.issues)} server-reported issues",
        highlight=False,
        soft_wrap=True,
        markup=False,
    )
    if result.incomplete:
        raise RemoteError(
            "the pull is incomplete, the next run starts from the same point: " + "; ".join(result.incomplete)
        )
    err.print(f"next incremental pull: since {result.next_since}", highlight=False, markup=False)
    if result.ingest.errors:
        sys.exit(3)
