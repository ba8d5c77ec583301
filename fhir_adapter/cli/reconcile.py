"""Dual rates (claims vs all sources) and per-child reconciliation with OHA's member file."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import click
import orjson
from rich.console import Console
from rich.table import Table

from fhir_adapter.cli.common import database_option, err, main, parse_date, settings_for

OUT_DEFAULT = Path("reconcile-output")


def write_files(out_dir: Path, files: dict[str, bytes]) -> None:
    """Write every file beside its final name, then move them all into place: a failure
    leaves no half-written file (and no new file at all while the temporary ones are written)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[tuple[Path, Path]] = []
    try:
        for name, data in files.items():
            final = out_dir / name
            tmp = final.with_name(f".{name}.tmp-{os.getpid()}")
            tmp.write_bytes(data)
            written.append((tmp, final))
    except BaseException:
        for tmp, _final in written:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, final in written:
        tmp.replace(final)


def _console() -> Console:
    console = Console()
    if not console.is_terminal:  # a pipe or a log: keep the table readable
        console = Console(width=140)
    return console


def _pct(rate: float | None) -> str:
    return "–" if rate is None else f"{100 * rate:.1f}%"


def _pp(diff: float | None) -> str:
    return "–" if diff is None else f"{100 * diff:+.1f} pp"


@main.command()
@click.option("--measure", required=True, help="Measure id, e.g. oregon-se-issue-focused.")
@click.option("--period-start", required=True, callback=parse_date, help="First day (YYYY-MM-DD).")
@click.option("--period-end", required=True, callback=parse_date, help="Last day, included.")
@click.option("--cco", default=None, help="Only this CCO's children (no statewide row).")
@click.option(
    "--out-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Write rates.csv, ehr-only.csv, summary-claims.json, summary-all.json and summary-both.json here.",
)
@database_option
def rates(
    measure: str,
    period_start: date,
    period_end: date,
    cco: str | None,
    out_dir: Path | None,
    database: str | None,
) -> None:
    """Rates from claims only (comparable with OHA) and from all sources, per CCO and group,
    with the children counted only thanks to EHR data."""
    from fhir_adapter import workflow
    from fhir_adapter.mappings import load_mappings
    from fhir_adapter.report import dual as d

    settings = settings_for(database)
    mappings = load_mappings(settings.mappings_dir)
    store = workflow.open_store(settings)
    try:
        result = d.run_dual_rates(
            settings, store, measure, period_start, period_end, cco=cco, mappings=mappings
        )
    finally:
        store.close()
    if out_dir is not None:
        ctx = workflow.report_context(settings, result.all.spec.hash)
        claims_report, all_report = d.summary_reports(result, ctx)
        pretty = orjson.OPT_INDENT_2
        write_files(
            out_dir,
            {
                "rates.csv": d.rates_csv(result),
                "ehr-only.csv": d.ehr_only_csv(result),
                "summary-claims.json": orjson.dumps(claims_report, option=pretty) + b"\n",
                "summary-all.json": orjson.dumps(all_report, option=pretty) + b"\n",
                "summary-both.json": orjson.dumps(d.summary_bundle(result, ctx), option=pretty) + b"\n",
            },
        )
    spec = result.all.spec
    table = Table(title=f"{spec.id} {spec.version}: {period_start} to {period_end}, claims vs all sources")
    for name in ("group", "CCO", "claims den", "claims num", "claims rate", "all den", "all num", "all rate",
                 "diff", "EHR-only"):  # fmt: skip
        table.add_column(name, justify="left" if name in ("group", "CCO") else "right")
    for row in result.rows:
        table.add_row(
            row.group, row.cco,
            str(row.claims.base), str(row.claims.numerator), _pct(row.claims.rate),
            str(row.all.base), str(row.all.numerator), _pct(row.all.rate),
            _pp(row.difference), str(row.ehr_only),
            end_section=row.cco == d.STATEWIDE,
        )  # fmt: skip
    _console().print(table)
    if out_dir is not None:
        err.print(f"wrote rates, EHR-only children and summary reports to {out_dir}", highlight=False)


@main.command()
@click.option(
    "--oha-file", required=True, type=click.Path(path_type=Path), help="OHA's member-level file (CSV)."
)
@click.option("--measure", required=True, help="Measure id, e.g. oregon-se-issue-focused.")
@click.option("--period-start", required=True, callback=parse_date, help="First day (YYYY-MM-DD).")
@click.option("--period-end", required=True, callback=parse_date, help="Last day, included.")
@click.option("--cco", default=None, help="Compare only this CCO's children (ours and OHA's).")
@click.option(
    "--columns",
    type=click.Path(path_type=Path),
    default=None,
    help="Column map (TOML) of the OHA file (default: mappings/extracts/oha-member-file.toml).",
)
@click.option(
    "--group", "group_id", default=None, help="Group of rows without a group column (default: the first)."
)
@click.option("--run-out-days", type=int, default=None, help="Claims run-out in days (default: the map's).")
@click.option(
    "--oha-claims-through",
    callback=parse_date,
    default=None,
    help="Date OHA's claims data runs through (default: the file's claims_through column).",
)
@click.option("--out-dir", type=click.Path(path_type=Path), default=OUT_DEFAULT, show_default=True)
@database_option
def reconcile(
    oha_file: Path, measure: str, period_start: date, period_end: date, cco: str | None, columns: Path | None,
    group_id: str | None, run_out_days: int | None, oha_claims_through: date | None, out_dir: Path,
    database: str | None,
) -> None:  # fmt: skip
    """Compare our claims-mode results per child with OHA's member-level file: differences with
    reason codes, a dispute packet and a summary."""
    from fhir_adapter import workflow
    from fhir_adapter.mappings import load_mappings
    from fhir_adapter.report import reconcile_run as rr

    settings = settings_for(database)
    mappings = load_mappings(settings.mappings_dir)
    # The whole file is read and checked before anything is evaluated or written.
    oha = rr.read_oha(
        settings, oha_file, measure, period_end, columns=columns, group=group_id, mappings=mappings
    )
    store = workflow.open_store(settings)
    try:
        result = rr.run_reconciliation(
            settings, store, oha, measure, period_start, period_end, cco=cco, group=group_id,
            oha_claims_through=oha_claims_through, run_out_days=run_out_days, mappings=mappings,
        )  # fmt: skip
    finally:
        store.close()
    write_files(out_dir, rr.output_files(result))
    scope = f"CCO {cco}" if cco else "all CCOs"
    table = Table(title=f"Agreement with OHA: {measure}, {period_start} to {period_end}, {scope} (claims)")
    for name in ("group", "population", "both", "only OHA", "only us", "agreement"):
        table.add_column(name, justify="left" if name in ("group", "population") else "right")
    for s in result.summaries:
        table.add_row(
            s.group, s.population, str(s.both), str(s.only_oha), str(s.only_us),
            "n/a" if s.agreement is None else _pct(s.agreement),
        )  # fmt: skip
    _console().print(table)
    err.print(
        f"{len(result.differences)} differences, {len(result.dispute)} dispute rows; wrote {out_dir}",
        highlight=False,
    )
