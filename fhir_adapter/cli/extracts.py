"""Load flat extracts: ``load-enrollment`` (eligibility) and ``load-claims`` (claims lines, or
CARIN Blue Button EOB NDJSON). Summaries and errors go to stderr; exit 3 on invalid data."""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path

import click

from fhir_adapter.cli.common import database_option, err, main, parse_date, settings_for
from fhir_adapter.errors import UsageError
from fhir_adapter.ingest.columns import MAX_LISTED, ColumnMap, load_column_map
from fhir_adapter.settings import Settings


def _column_map(
    settings: Settings, columns: Path | None, default: Path, fields: dict[str, bool]
) -> ColumnMap:
    path = columns if columns is not None else settings.mappings_dir / default
    return load_column_map(path, required=fields)


def _print(text: str) -> None:
    err.print(text, highlight=False, soft_wrap=True, markup=False)


@main.command(name="load-enrollment")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--columns",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Column map (TOML); default: <mappings>/extracts/enrollment.toml (X12 834: enrollment-834.toml).",
)
@click.option(
    "--source", default="eligibility", show_default=True, help="Source name the load is stored under."
)
@click.option("--full", is_flag=True, help="The file lists every member: members absent from it are removed.")
@database_option
def load_enrollment_cmd(
    file: Path, columns: Path | None, source: str, full: bool, database: str | None
) -> None:
    """Load an eligibility extract as Patient and Coverage resources (a snapshot per member)."""
    from fhir_adapter import workflow
    from fhir_adapter.ingest.enrollment import (
        DEFAULT_MAP,
        ENROLLMENT_FIELDS,
        EnrollmentOptions,
        load_enrollment,
    )
    from fhir_adapter.ingest.x834 import DEFAULT_834_MAP, is_834_file, load_834_map, load_enrollment_834
    from fhir_adapter.mappings import load_mappings

    settings = settings_for(database)
    x834 = load_834_map(columns or settings.mappings_dir / DEFAULT_834_MAP) if is_834_file(file) else None
    cmap = x834.cmap if x834 else _column_map(settings, columns, DEFAULT_MAP, dict(ENROLLMENT_FIELDS))
    cco_system = EnrollmentOptions.from_map(cmap).cco_system
    known = {
        value
        for cco in load_mappings(settings.mappings_dir).ccos
        for s, value in cco.identifiers
        if s == cco_system
    }
    store = workflow.open_store(settings)
    try:
        if x834 is not None:
            loaded = load_enrollment_834(store, file, x834, source, full=full, known_ccos=known)
        else:
            loaded = load_enrollment(store, file, cmap, source, full=full, known_ccos=known)
    finally:
        store.close()
    _print(loaded.summary())


@main.command(name="load-claims")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--columns",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Column map (TOML) for CSV/fixed-width files; default: <mappings>/extracts/claims.toml.",
)
@click.option("--source", default="claims", show_default=True, help="Source name the load is stored under.")
@click.option(
    "--paid-through",
    callback=parse_date,
    default=None,
    help="Claims are adjudicated through this day (YYYY-MM-DD); default: the latest paid date in the file.",
)
@database_option
def load_claims_cmd(
    file: Path, columns: Path | None, source: str, paid_through: date | None, database: str | None
) -> None:
    """Load a claims extract (one row per claim line) or CARIN Blue Button EOB NDJSON."""
    from fhir_adapter import workflow
    from fhir_adapter.ingest.claims import (
        CLAIMS_FIELDS,
        DEFAULT_MAP,
        is_fhir_file,
        load_claims,
        load_claims_ndjson,
    )

    settings = settings_for(database)
    fhir = is_fhir_file(file)
    if fhir and columns is not None:
        raise UsageError("--columns applies to CSV and fixed-width files, not to FHIR NDJSON")
    cmap = None if fhir else _column_map(settings, columns, DEFAULT_MAP, dict(CLAIMS_FIELDS))
    store = workflow.open_store(settings)
    try:
        if cmap is None:
            loaded = load_claims_ndjson(
                store, file, source, batch_size=settings.ingest_batch_size, workers=settings.ingest_workers,
                paid_through=paid_through,
            )  # fmt: skip
        else:
            loaded = load_claims(store, file, cmap, source, paid_through=paid_through)
    finally:
        store.close()
    errors = loaded.result.errors
    for error in errors[:MAX_LISTED]:
        _print(f"{error.location}: {error.message}")
    if len(errors) > MAX_LISTED:
        _print(f"… and {len(errors) - MAX_LISTED} more bad lines")
    _print(loaded.summary())
    if errors:
        sys.exit(3)
