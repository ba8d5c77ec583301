"""Provider rosters and member assignments: ``load-providers`` and ``load-assignments``.

Both convert a flat file to FHIR (Practitioner, Organization, PractitionerRole; an ATR-style
Group per CCO) and store it like any FHIR input, so ``fhir-adapter ingest`` of those resource
types is the other route to the same facts. All or nothing per file: every bad row is printed
as ``file:line`` and the command exits 3 without writing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from fhir_adapter.cli.common import database_option, err, main, settings_for

if TYPE_CHECKING:
    from fhir_adapter.ingest.columns import ColumnMap
    from fhir_adapter.ingest.roster import LoadResult


def _load(
    file: Path,
    columns: Path | None,
    source: str,
    database: str | None,
    default_map: str,
    read_map: Callable[[Path], ColumnMap],
    kind: str,
) -> None:
    from fhir_adapter import workflow
    from fhir_adapter.ingest import roster
    from fhir_adapter.mappings import load_mappings

    settings = settings_for(database)
    cmap = read_map(columns or settings.mappings_dir / "extracts" / default_map)
    ccos = load_mappings(settings.mappings_dir).ccos
    store = workflow.open_store(settings)
    try:
        load = roster.load_roster if kind == "roster" else roster.load_assignments
        result: LoadResult = load(store, file, source, cmap=cmap, ccos=ccos)
    finally:
        store.close()
    s = result.stats
    err.print(
        f"{file}: {result.rows} rows -> {result.resources} resources under source {source!r}: "
        f"{s.created} created, {s.updated} updated, {s.unchanged} unchanged",
        highlight=False,
        soft_wrap=True,
        markup=False,
    )


_COLUMNS_HELP = "Column map (TOML) for this file's layout (default: mappings/extracts/{name})."


@main.command(name="load-providers")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--columns",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help=_COLUMNS_HELP.format(name="providers.toml"),
)
@click.option("--source", default="provider-roster", show_default=True, help="Source name to store under.")
@database_option
def load_providers(file: Path, columns: Path | None, source: str, database: str | None) -> None:
    """Load a provider roster (CSV or fixed-width) as Practitioner, Organization and
    PractitionerRole resources."""
    from fhir_adapter.ingest.roster import ROSTER_MAP, roster_map

    _load(file, columns, source, database, ROSTER_MAP, roster_map, "roster")


@main.command(name="load-assignments")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--columns",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help=_COLUMNS_HELP.format(name="assignments.toml"),
)
@click.option("--source", default="member-assignments", show_default=True, help="Source name to store under.")
@database_option
def load_assignments(file: Path, columns: Path | None, source: str, database: str | None) -> None:
    """Load a member-assignment file (member, CCO, clinic, PCP, dates) as one Da Vinci ATR-style
    Group per CCO."""
    from fhir_adapter.ingest.roster import ASSIGNMENT_MAP, assignment_map

    _load(file, columns, source, database, ASSIGNMENT_MAP, assignment_map, "assignments")
