"""``fhir-adapter publish``: evaluate, then PUT the MeasureReports to another FHIR server (and with
``--submit-data`` POST DEQM data-exchange bundles); see :mod:`fhir_adapter.report.publish`."""

from __future__ import annotations

import sys
from datetime import UTC, date, datetime
from pathlib import Path

import click
import httpx
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fhir_adapter.cli.common import database_option, err, main, parse_date, settings_for
from fhir_adapter.errors import UsageError
from fhir_adapter.fhir.dates import parse_instant
from fhir_adapter.measure.spec import SourceMode
from fhir_adapter.report.publish import (
    BearerAuth,
    PublishRequest,
    PublishResult,
    RetryPolicy,
    base_url,
    data_cut,
    dry_run_ndjson,
    report_resources,
    send,
    submit_data_requests,
    update_requests,
)

#: SMART v2 scopes: create and update of what ``publish`` PUTs; ``$deqm-submit-data`` bundles also hold
#: the children's data (Patient, Coverage, Encounter, …).
REPORT_SCOPE = "system/MeasureReport.cu system/List.cu"
SUBMIT_SCOPE = "system/*.cu"
OUTCOME_STYLE = {"created": "green", "updated": "green", "submitted": "green", "failed": "bold red"}


@main.command()
@click.option("--to", "to", required=True, help="Base URL of the receiving FHIR server (…/fhir).")
@click.option("--measure", required=True, help="Measure id, e.g. oregon-se-issue-focused.")
@click.option(
    "--period-start", required=True, callback=parse_date, help="First day of the period (YYYY-MM-DD)."
)
@click.option("--period-end", required=True, callback=parse_date, help="Last day of the period, included.")
@click.option(
    "--report-type",
    type=click.Choice(["summary", "subject-list", "individual"]),
    default="summary",
    show_default=True,
)
@click.option("--sources", type=click.Choice(["claims", "all"]), default="all", show_default=True)
@click.option(
    "--as-of",
    default=None,
    help="Data cut (ISO 8601). Default: the store's last change, so publishing again without new data "
    "sends the same report ids.",
)
@click.option(
    "--submit-data",
    is_flag=True,
    help="Also POST Measure/$deqm-submit-data: one snapshot bundle per child with the data of interest.",
)
@click.option(
    "--bearer",
    envvar="FHIR_ADAPTER_PUBLISH_TOKEN",
    default=None,
    help="Access token sent as 'Authorization: Bearer …' (env FHIR_ADAPTER_PUBLISH_TOKEN).",
)
@click.option("--client-id", default=None, help="SMART Backend Services client id (with --key).")
@click.option(
    "--key",
    "key_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Private key: a JWKS/JWK file or a PEM file (with --kid).",
)
@click.option("--kid", default=None, help="Key id (picks the key in a JWKS; required with a PEM key).")
@click.option(
    "--scope",
    default=None,
    help=f"Scopes to ask for (default {REPORT_SCOPE!r}; with --submit-data {SUBMIT_SCOPE!r}).",
)
@click.option(
    "--retries",
    type=click.IntRange(0, 20),
    default=4,
    show_default=True,
    help="Retries per request on HTTP 429, 5xx and network errors (Retry-After is honoured).",
)
@click.option("--timeout", type=click.FloatRange(1, 3600), default=60.0, show_default=True, help="Seconds.")
@click.option("--dry-run", is_flag=True, help="Write the requests to stdout as NDJSON; send nothing.")
@database_option
def publish(
    to: str, measure: str, period_start: date, period_end: date, report_type: str, sources: str,
    as_of: str | None, submit_data: bool, bearer: str | None, client_id: str | None, key_path: Path | None,
    kid: str | None, scope: str | None, retries: int, timeout: float, dry_run: bool, database: str | None,
) -> None:  # fmt: skip
    """Evaluate a measure and publish its MeasureReports to a FHIR server (PUT with stable ids: publishing
    the same evaluation again updates, never duplicates). Exit code 1 when any request failed."""
    from fhir_adapter import workflow
    from fhir_adapter.mappings import load_mappings

    settings = settings_for(database)
    base = base_url(to)
    if bearer and (client_id or key_path):
        raise UsageError("give either --bearer or SMART Backend Services credentials (--client-id, --key)")
    if bool(client_id) != bool(key_path):
        raise UsageError("SMART Backend Services needs both --client-id and --key")
    if (kid or scope) and not client_id:
        raise UsageError("--kid and --scope go with SMART Backend Services credentials (--client-id, --key)")
    signing_key = None
    if key_path is not None:
        from fhir_adapter.auth.smart_client import load_signing_key

        signing_key = load_signing_key(key_path, kid=kid)  # a bad key fails before any work
    cut: datetime | None = None
    if as_of is not None:
        try:
            cut = parse_instant(as_of, settings.tz)
        except ValueError as exc:
            raise UsageError(f"--as-of: {exc}") from None
    mappings = load_mappings(settings.mappings_dir)
    store = workflow.open_store(settings)
    try:
        if cut is None:
            cut = data_cut(store, exclude_source=settings.report_source)
            if cut is None:
                raise UsageError("the store is empty: ingest data before publishing")
            exact = cut.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # µs: --as-of gives the same ids
            err.print(f"data cut: {exact} (the store's last change)", highlight=False)
        mode: SourceMode = "claims" if sources == "claims" else "all"
        request = workflow.EvaluationRequest(measure, period_start, period_end, mode, as_of=cut)
        ev = workflow.run_evaluation(
            settings, store, request, evidence=report_type != "summary" or submit_data, mappings=mappings
        )
        ctx = workflow.report_context(settings, ev.spec.hash)
        built = workflow.build_report(ev, ctx, report_type)  # type: ignore[arg-type]
        requests = update_requests(report_resources(built))
        if submit_data:
            requests += submit_data_requests(store, ev, ctx)
    finally:
        store.close()
    if not requests:
        err.print("nothing to publish (no child in an initial population)", highlight=False)
        return
    if dry_run:
        sys.stdout.buffer.write(dry_run_ndjson(base, requests))
        sys.stdout.flush()
        err.print(f"dry run: {len(requests)} requests for {base} written to stdout", highlight=False)
        return
    policy = RetryPolicy(attempts=retries + 1)
    with httpx.Client(timeout=timeout) as plain:
        auth: httpx.Auth | None = BearerAuth(bearer) if bearer else None
        if client_id and signing_key is not None:
            from fhir_adapter.auth.smart_client import BackendServicesClient, SmartAuth

            tokens = BackendServicesClient(
                client_id=client_id,
                key=signing_key,
                scope=scope or (SUBMIT_SCOPE if submit_data else REPORT_SCOPE),
                http=plain,
                base_url=base,
            )
            auth = SmartAuth(tokens)
        with httpx.Client(timeout=timeout, auth=auth) as client:
            results = _send_with_progress(client, base, requests, policy)
    print_results(base, results)
    if any(not r.ok for r in results):
        sys.exit(1)


def _send_with_progress(
    client: httpx.Client, base: str, requests: list[PublishRequest], policy: RetryPolicy
) -> list[PublishResult]:
    from rich.progress import Progress

    with Progress(console=err, transient=True, disable=not err.is_terminal) as progress:
        task = progress.add_task(f"publishing to {base}", total=len(requests))
        return send(client, base, requests, policy, on_result=lambda _r: progress.advance(task))


def print_results(base: str, results: list[PublishResult]) -> None:
    """The per-request table and a count line, on stderr."""
    table = Table(title=f"published to {base}", title_justify="left")
    table.add_column("resource", overflow="fold")
    table.add_column("HTTP", justify="right")
    table.add_column("outcome")
    table.add_column("attempts", justify="right")
    table.add_column("detail", overflow="fold")
    for r in results:
        style = OUTCOME_STYLE.get(r.outcome, "")
        table.add_row(
            escape(r.label),
            "-" if r.status is None else str(r.status),
            f"[{style}]{r.outcome}[/]" if style else r.outcome,
            str(r.attempts),
            escape(r.detail),
        )
    # A log or a pipe gets whole ids on one line.
    console = err if err.is_terminal else Console(stderr=True, width=240)
    console.print(table)
    counts = {k: sum(1 for r in results if r.outcome == k) for k in OUTCOME_STYLE}
    summary = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
    err.print(f"{len(results)} requests: {summary}", highlight=False)
