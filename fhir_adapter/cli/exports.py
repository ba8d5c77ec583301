"""``fhir-adapter export-flat``: a measure's per-child results, gap list or per-CCO summary as a
flat file for BI tools (CSV that Excel opens, or Parquet; :mod:`fhir_adapter.report.export`), the
same tables as ``GET /fhir/$export-flat``. Output goes to stdout or, with ``--out``, atomically
to a file.
"""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path

import click

from fhir_adapter.cli.common import database_option, err, main, parse_date, settings_for
from fhir_adapter.report.export import FLAT_FORMATS, FLAT_TABLES


@main.command(name="export-flat")
@click.option("--measure", required=True, help="Measure id, e.g. oregon-se-issue-focused.")
@click.option("--period-start", required=True, callback=parse_date, help="First day (YYYY-MM-DD).")
@click.option("--period-end", required=True, callback=parse_date, help="Last day, included.")
@click.option("--table", type=click.Choice(FLAT_TABLES), default="results", show_default=True)
@click.option("--format", "fmt", type=click.Choice(FLAT_FORMATS), default="csv", show_default=True)
@click.option("--sources", type=click.Choice(["claims", "all"]), default="all", show_default=True)
@click.option("--cco", default=None, help="Only this CCO (an id of mappings/ccos.csv).")
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="File instead of stdout."
)
@database_option
def export_flat(
    measure: str, period_start: date, period_end: date, table: str, fmt: str, sources: str, cco: str | None,
    out: Path | None, database: str | None,
) -> None:  # fmt: skip
    """Per-child results (one row per child and group), the gap list of every group, or the
    per-CCO summary with rates, as CSV (UTF-8 with BOM, CRLF) or Parquet (typed columns)."""
    from fhir_adapter import workflow
    from fhir_adapter.mappings import load_mappings
    from fhir_adapter.report.export import check_flat_request, run_flat_export

    settings = settings_for(database)
    mappings = load_mappings(settings.mappings_dir)
    check_flat_request(table, fmt, cco, mappings)
    store = workflow.open_store(settings)
    try:
        result = run_flat_export(
            settings, store, mappings, measure, period_start, period_end, table, sources=sources, cco=cco,  # type: ignore[arg-type]
        )  # fmt: skip
    finally:
        store.close()
    data = result.encode(fmt)
    if out is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(out)  # never a half-written file
    err.print(
        f"{out}: {len(result.rows)} rows ({table}, {fmt})", highlight=False, soft_wrap=True, markup=False
    )
