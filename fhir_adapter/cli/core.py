"""Load, evaluate, list gaps, synthesise, demo."""

from __future__ import annotations

import sys
import time
from datetime import date
from pathlib import Path

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from fhir_adapter.cli.common import database_option, err, main, parse_date, settings_for, write_json
from fhir_adapter.errors import UsageError
from fhir_adapter.fhir.dates import parse_instant
from fhir_adapter.settings import DEFAULT_DATABASE_URL


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--source", default="local", show_default=True, help="Name of the source these files come from."
)
@database_option
@click.option("--quiet", is_flag=True, help="No progress bar.")
def ingest(paths: tuple[Path, ...], source: str, database: str | None, quiet: bool) -> None:
    """Load NDJSON files/folders (also .gz) and Bundle JSON into the store."""
    from fhir_adapter import workflow
    from fhir_adapter.ingest.runner import total_bytes

    settings = settings_for(database)
    store = workflow.open_store(settings)
    started = time.perf_counter()
    try:
        total = total_bytes(list(paths))
        with Progress(
            TextColumn("ingest"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
            console=err, disable=quiet, transient=False,
        ) as progress:  # fmt: skip
            task = progress.add_task("ingest", total=total)
            result = workflow.ingest(
                settings, store, list(paths), source, on_bytes=lambda n: progress.advance(task, n)
            )
    finally:
        store.close()
    elapsed = time.perf_counter() - started
    for error in result.errors[:200]:
        err.print(f"{error.location}: {error.message}", highlight=False, soft_wrap=True, markup=False)
    if len(result.errors) > 200:
        err.print(f"… and {len(result.errors) - 200} more bad lines", highlight=False)
    s = result.stats
    err.print(
        f"{result.files} files, {result.read} resources read in {elapsed:.1f}s: {s.created} created, "
        f"{s.updated} updated, {s.unchanged} unchanged, {s.deleted} deleted; {len(result.errors)} rejected",
        highlight=False,
    )
    if result.errors:
        sys.exit(3)


@main.command(name="evaluate")
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
@click.option("--subject", default=None, help="Patient/<id> for one child's individual report.")
@click.option("--source", default=None, help="Source of --subject when two sources share the id.")
@click.option("--sources", type=click.Choice(["claims", "all"]), default="all", show_default=True)
@click.option("--as-of", default=None, help="Data cut: evaluate the store as it was at this time (ISO 8601).")
@click.option(
    "--out", type=click.Path(path_type=Path), default=None, help="Write to this file instead of stdout."
)
@click.option("--persist", is_flag=True, help="Also store the per-child results as a run (eval_runs).")
@click.option(
    "--suppress", type=click.IntRange(min=2), is_flag=False, flag_value=11, default=None, metavar="[N]",
    help="Mask counts 1..N-1 and their complements in a summary (default N 11; setting suppression_threshold).",
)  # fmt: skip
@database_option
def evaluate_cmd(
    measure: str, period_start: date, period_end: date, report_type: str, subject: str | None, source: str | None,
    sources: str, as_of: str | None, out: Path | None, persist: bool, suppress: int | None, database: str | None,
) -> None:  # fmt: skip
    """Evaluate a measure and print a DEQM MeasureReport (JSON)."""
    from fhir_adapter import workflow
    from fhir_adapter.mappings import load_mappings

    settings = settings_for(database)
    if persist and subject is not None:
        raise UsageError("--persist stores a whole population's results; it cannot be used with --subject")
    if suppress is not None and report_type != "summary":
        raise UsageError("--suppress applies to summary reports (the published ones), not to " + report_type)
    if report_type == "individual" and subject is None:
        err.print("note: no --subject: writing a Bundle of individual reports", highlight=False)
    as_of_time = None
    if as_of is not None:
        try:
            as_of_time = parse_instant(as_of, settings.tz)
        except ValueError as exc:
            raise UsageError(f"--as-of: {exc}") from None
    mappings = load_mappings(settings.mappings_dir)
    store = workflow.open_store(settings)
    try:
        request = workflow.EvaluationRequest(
            measure, period_start, period_end, sources,  # type: ignore[arg-type]
            as_of=as_of_time, subject=subject, subject_source=source,
        )  # fmt: skip
        ev = workflow.run_evaluation(
            settings, store, request, evidence=report_type != "summary", mappings=mappings
        )
        if persist:
            from fhir_adapter.fhir.dates import to_micros
            from fhir_adapter.ingest.runner import utc_now
            from fhir_adapter.store.runs import persist_run

            run_id = persist_run(store, ev, now_us=to_micros(utc_now()))
            err.print(f"persisted as run {run_id}", highlight=False)
    finally:
        store.close()
    ctx = workflow.report_context(settings, ev.spec.hash)
    report = workflow.build_report(ev, ctx, report_type)  # type: ignore[arg-type]
    threshold = suppress if suppress is not None else settings.suppression_threshold
    if threshold is not None and report_type == "summary":
        from fhir_adapter.report.suppression import extension_url, suppress_report

        report = suppress_report(report, threshold, extension_url=extension_url(settings.canonical_base))
    write_json(report, out)


@main.command()
@click.option("--measure", required=True)
@click.option("--period-start", required=True, callback=parse_date)
@click.option("--period-end", required=True, callback=parse_date)
@click.option("--cco", default=None, help="Only this CCO's children.")
@click.option("--group", "group_id", default=None, help="Group id (default: the measure's first group).")
@click.option("--sources", type=click.Choice(["claims", "all"]), default="all", show_default=True)
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None)
@database_option
def gaps(
    measure: str, period_start: date, period_end: date, cco: str | None, group_id: str | None, sources: str,
    fmt: str, out: Path | None, database: str | None,
) -> None:  # fmt: skip
    """Gap list: denominator children without a qualifying service, with each child's assigned
    clinic and PCP on the period's last day."""
    from fhir_adapter import workflow
    from fhir_adapter.mappings import load_mappings
    from fhir_adapter.store.providers import assignments

    settings = settings_for(database)
    mappings = load_mappings(settings.mappings_dir)
    store = workflow.open_store(settings)
    try:
        request = workflow.EvaluationRequest(measure, period_start, period_end, sources)  # type: ignore[arg-type]
        ev = workflow.run_evaluation(settings, store, request, evidence=False, mappings=mappings)
        assigned = assignments(store, ev.as_of, period_end, ccos=mappings.ccos)
    finally:
        store.close()
    rows = workflow.gap_rows(ev, cco=cco, group=group_id, assignments=assigned)
    if fmt == "json":
        write_json(rows, out)
        return
    data = workflow.gaps_csv(rows)
    if out is None:
        sys.stdout.buffer.write(data)
    else:
        out.write_bytes(data)


@main.command()
@click.option("--patients", type=click.IntRange(1, 10_000_000), default=1000, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True)
@click.option("--first-year", type=int, default=None, help="Default: two years before --last-year.")
@click.option("--last-year", type=int, default=None, help="Default: the last full calendar year.")
def synthesize(patients: int, seed: int, out: Path, first_year: int | None, last_year: int | None) -> None:
    """Deterministic, messy synthetic children (NDJSON per source and resource type)."""
    from fhir_adapter.synth import synthesize as run

    last = last_year or date.today().year - 1
    first = first_year or last - 1
    summary = run(out, patients, seed, first_year=first, last_year=last)
    err.print(f"wrote {summary} to {out}", highlight=False, soft_wrap=True)


@main.command()
@click.option("--patients", type=click.IntRange(1, 1_000_000), default=2000, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("demo-output"), show_default=True)
@click.option("--database", default=None, help=f"Store URL (default {DEFAULT_DATABASE_URL}).")
def demo(patients: int, seed: int, out: Path, database: str | None) -> None:
    """Synthesise children, ingest them, evaluate both measures, write reports, print a table.

    The demo writes to the embedded SQLite store ./fhir-adapter.db unless --database is given
    (FHIR_ADAPTER_DATABASE_URL is deliberately ignored, so synthetic children never land in a
    production database by accident)."""
    from fhir_adapter.demo import run_demo

    settings = settings_for(database or DEFAULT_DATABASE_URL)
    console = Console()
    if not console.is_terminal:  # a pipe or a log: keep the table readable
        console = Console(width=120)
    run_demo(settings, out, patients=patients, seed=seed, console=console, progress=err)
