"""Operational reports (spec §4): ``fhir-adapter report referrals|trend|capacity|data-quality|
complexity`` and ``fhir-adapter load-complexity``.

Every report is a set of named tables. ``--format json`` writes them all with the report's
parameters (``{"meta": …, "tables": {name: rows}}``); ``csv`` (Excel-friendly) and ``parquet``
write one table, ``--table`` (default: the report's first). Output goes to stdout or, with
``--out``, atomically to a file.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

import click

from fhir_adapter.cli.common import database_option, err, main, parse_date, settings_for, write_json
from fhir_adapter.errors import UsageError

F = TypeVar("F", bound=Callable[..., Any])
FORMATS = ("csv", "json", "parquet")


@dataclass(frozen=True)
class ReportTables:
    """A report as named tables, each with its columns; the first is the default."""

    meta: dict[str, Any]
    tables: dict[str, tuple[Sequence[str], list[dict[str, Any]]]]


def check_table(fmt: str, table: str | None, names: Sequence[str]) -> None:
    """Refuse a ``--table`` the report does not have, or one given with JSON, before any work."""
    if table is None:
        return
    if fmt == "json":
        raise UsageError("--table applies to csv and parquet; json holds every table")
    if table not in names:
        raise UsageError(f"no table {table!r}; tables: {', '.join(names)}")


def emit(report: ReportTables, fmt: str, out: Path | None, table: str | None) -> None:
    """Write ``report`` in ``fmt`` (module docstring)."""
    from fhir_adapter.report.export import rows_csv, rows_parquet

    check_table(fmt, table, list(report.tables))
    if fmt == "json":
        write_json({"meta": report.meta, "tables": {k: rows for k, (_c, rows) in report.tables.items()}}, out)
        return
    columns, rows = report.tables[table or next(iter(report.tables))]
    data = rows_csv(rows, columns) if fmt == "csv" else rows_parquet(rows, columns)
    if out is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(out)  # never a half-written file


def _common(func: F) -> F:
    options = [
        click.option("--measure", required=True, help="Measure id, e.g. oregon-se-issue-focused."),
        click.option("--period-start", required=True, callback=parse_date, help="First day (YYYY-MM-DD)."),
        click.option("--period-end", required=True, callback=parse_date, help="Last day, included."),
        click.option("--sources", type=click.Choice(["claims", "all"]), default="all", show_default=True),
        click.option("--format", "fmt", type=click.Choice(FORMATS), default="csv", show_default=True),
        click.option("--table", default=None, help="Table to write as csv/parquet (default: the first)."),
        click.option("--out", type=click.Path(path_type=Path), default=None, help="File instead of stdout."),
        database_option,
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _cco_option(func: F) -> F:
    return click.option("--cco", default=None, help="Only this CCO (an id of mappings/ccos.csv).")(func)


def _run(database: str | None, build: Callable[..., ReportTables]) -> ReportTables:
    from fhir_adapter import workflow
    from fhir_adapter.mappings import load_mappings

    settings = settings_for(database)
    mappings = load_mappings(settings.mappings_dir)
    store = workflow.open_store(settings)
    try:
        return build(settings, store, mappings)
    finally:
        store.close()


@main.group()
def report() -> None:
    """Operational reports: referral loop, trend and targets, provider capacity, data quality,
    health complexity (CSV, JSON or Parquet)."""


@report.command("referrals")
@_common
@_cco_option
def report_referrals(
    measure: str, period_start: date, period_end: date, sources: str, fmt: str, table: str | None,
    out: Path | None, database: str | None, cco: str | None,
) -> None:  # fmt: skip
    """SE referrals authored in the period: closed, open, overdue or cancelled (tables
    ``referrals``, ``counts`` per CCO and clinic)."""
    check_table(fmt, table, ("referrals", "counts"))
    from fhir_adapter.report.referrals import COUNT_COLUMNS, LIST_COLUMNS, run_referral_loop

    def build(settings: Any, store: Any, mappings: Any) -> ReportTables:
        loop = run_referral_loop(settings, store, measure, period_start, period_end, sources=sources,  # type: ignore[arg-type]
                                 cco=cco, mappings=mappings)  # fmt: skip
        return ReportTables(
            loop.meta(), {"referrals": (LIST_COLUMNS, loop.rows), "counts": (COUNT_COLUMNS, loop.counts)}
        )

    emit(_run(database, build), fmt, out, table)


@report.command("trend")
@_common
@_cco_option
@click.option(
    "--persisted",
    type=click.Choice(["exact", "latest", "never"]),
    default="exact",
    show_default=True,
    help="Read periods from persisted runs: of this data cut (--as-of) only, the latest one, or never.",
)
@click.option("--persist", is_flag=True, help="Store the periods evaluated as runs.")
@click.option("--as-of", default=None, help="Data cut (ISO 8601; default: now).")
def report_trend(
    measure: str, period_start: date, period_end: date, sources: str, fmt: str, table: str | None,
    out: Path | None, database: str | None, cco: str | None, persisted: str, persist: bool, as_of: str | None,
) -> None:  # fmt: skip
    """Quarterly and rolling 12-month rates per CCO and group, and progress against the
    benchmark and improvement target (tables ``rates``, ``targets``)."""
    check_table(fmt, table, ("rates", "targets"))
    from fhir_adapter.fhir.dates import from_micros, parse_instant
    from fhir_adapter.ingest.runner import utc_now
    from fhir_adapter.report.trend import TARGET_COLUMNS, TREND_COLUMNS, run_trend

    def build(settings: Any, store: Any, mappings: Any) -> ReportTables:
        cut = utc_now()
        if as_of is not None:
            try:
                cut = parse_instant(as_of, settings.tz)
            except ValueError as exc:
                raise UsageError(f"--as-of: {exc}") from None
        trend = run_trend(settings, store, measure, period_start, period_end, sources=sources,  # type: ignore[arg-type]
                          persisted=persisted, persist=persist, cco=cco, mappings=mappings,  # type: ignore[arg-type]
                          clock=lambda: cut)  # fmt: skip
        meta = {"measure": measure, "period_start": period_start.isoformat(), "period_end": period_end.isoformat(),
                "sources": sources, "data_cut": from_micros(trend.as_of).isoformat(), "persisted": persisted}  # fmt: skip
        return ReportTables(
            meta, {"rates": (TREND_COLUMNS, trend.rows()), "targets": (TARGET_COLUMNS, trend.targets)}
        )

    emit(_run(database, build), fmt, out, table)


@report.command("capacity")
@_common
@_cco_option
def report_capacity(
    measure: str, period_start: date, period_end: date, sources: str, fmt: str, table: str | None,
    out: Path | None, database: str | None, cco: str | None,
) -> None:  # fmt: skip
    """Practitioners and organisations delivering qualifying services per CCO and county, the
    children each served, and counties with none (tables ``summary``, ``providers``,
    ``counties-without``)."""
    check_table(fmt, table, ("summary", "providers", "counties-without"))
    from fhir_adapter.report.capacity import NONE_COLUMNS, PROVIDER_COLUMNS, SUMMARY_COLUMNS, run_capacity

    def build(settings: Any, store: Any, mappings: Any) -> ReportTables:
        cap = run_capacity(settings, store, measure, period_start, period_end, sources=sources,  # type: ignore[arg-type]
                           cco=cco, mappings=mappings)  # fmt: skip
        return ReportTables(
            cap.meta(),
            {"summary": (SUMMARY_COLUMNS, cap.summary), "providers": (PROVIDER_COLUMNS, cap.providers),
             "counties-without": (NONE_COLUMNS, cap.counties_without)},
        )  # fmt: skip

    emit(_run(database, build), fmt, out, table)


@report.command("data-quality")
@_common
def report_data_quality(
    measure: str, period_start: date, period_end: date, sources: str, fmt: str, table: str | None,
    out: Path | None, database: str | None,
) -> None:  # fmt: skip
    """Per source: resources, rejected lines by reason, staleness, unlinked Patients, unknown code
    systems; per evaluation: children not evaluated and why (tables ``sources``, ``resources``,
    ``rejections``, ``evaluation``)."""
    check_table(fmt, table, ("sources", "resources", "rejections", "evaluation"))
    from fhir_adapter.report import dataquality as dq

    def build(settings: Any, store: Any, mappings: Any) -> ReportTables:
        result = dq.run_data_quality(settings, store, measure, period_start, period_end, sources=sources,  # type: ignore[arg-type]
                                     mappings=mappings)  # fmt: skip
        meta = {k: result.evaluation[k] for k in ("measure", "measure_version", "period_start", "period_end",
                                                  "sources", "data_cut")}  # fmt: skip
        return ReportTables(
            meta,
            {"sources": (dq.SOURCE_COLUMNS, dq.source_rows(result.sources)),
             "resources": (dq.RESOURCE_COLUMNS, dq.resource_rows(result.sources)),
             "rejections": (dq.REJECTION_COLUMNS, dq.rejection_rows(result.sources)),
             "evaluation": (dq.EVALUATION_COLUMNS, dq.evaluation_rows(result.evaluation))},
        )  # fmt: skip

    emit(_run(database, build), fmt, out, table)


@report.command("complexity")
@_common
@_cco_option
@click.option("--group", "group_id", default=None, help="Gap-list group (default: the measure's first).")
def report_complexity(
    measure: str, period_start: date, period_end: date, sources: str, fmt: str, table: str | None,
    out: Path | None, database: str | None, cco: str | None, group_id: str | None,
) -> None:  # fmt: skip
    """Rates and the gap list split by OPIP medical and social complexity (tables ``rates``,
    ``gaps``)."""
    check_table(fmt, table, ("rates", "gaps"))
    from fhir_adapter.report.complexity import GAP_COLUMNS, RATE_COLUMNS, run_complexity

    def build(settings: Any, store: Any, mappings: Any) -> ReportTables:
        result = run_complexity(settings, store, measure, period_start, period_end, sources=sources,  # type: ignore[arg-type]
                                cco=cco, group=group_id, mappings=mappings)  # fmt: skip
        return ReportTables(
            result.meta(), {"rates": (RATE_COLUMNS, result.rates), "gaps": (GAP_COLUMNS, result.gaps)}
        )

    emit(_run(database, build), fmt, out, table)


@main.command(name="load-complexity")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--columns",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Column map (TOML) for this file's layout (default: mappings/extracts/complexity.toml).",
)
@click.option("--source", default="opip-complexity", show_default=True, help="Source name to store under.")
@database_option
def load_complexity_cmd(file: Path, columns: Path | None, source: str, database: str | None) -> None:
    """Load an OPIP health-complexity file (member id, medical and social complexity) as FHIR
    Observations; all or nothing, bad rows reported as file:line (exit 3)."""
    from fhir_adapter import workflow
    from fhir_adapter.ingest.complexity import COMPLEXITY_MAP, complexity_map, load_complexity

    settings = settings_for(database)
    cmap = complexity_map(columns or settings.mappings_dir / "extracts" / COMPLEXITY_MAP)
    store = workflow.open_store(settings)
    try:
        count, stats = load_complexity(store, file, source, cmap=cmap)
    finally:
        store.close()
    err.print(
        f"{file}: {count} resources under source {source!r}: {stats.created} created, {stats.updated} updated, "
        f"{stats.unchanged} unchanged",
        highlight=False,
        soft_wrap=True,
        markup=False,
    )


__all__ = ["ReportTables", "emit"]
