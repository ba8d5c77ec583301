"""mappings/ checks and imports; the generated conformance resources."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from fhir_adapter.cli.common import database_option, err, main, settings_for

if TYPE_CHECKING:
    from fhir_adapter.mappings_import import ImportResult
    from fhir_adapter.measure.spec import CodeRow


@main.group()
def mappings() -> None:
    """Inspect and check mappings/ (measures, value sets, shared tables)."""


@mappings.command("check")
@click.option(
    "--dir", "folder", type=click.Path(path_type=Path), default=None, help="Mappings folder to check."
)
def mappings_check(folder: Path | None) -> None:
    """Load every measure and table strictly; errors name file:line."""
    from fhir_adapter.mappings import check_mappings

    root = folder or settings_for(None).mappings_dir
    for line in check_mappings(root):
        click.echo(line)


@mappings.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--measure", required=True, help="Measure id, e.g. oregon-se-issue-focused.")
@click.option("--year", type=int, required=True, help="Measurement year: the folder <measure>/<year>/.")
@click.option(
    "--columns",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Workbook column map (TOML; default mappings/extracts/valueset-workbook.toml).",
)
@click.option("--sheet", "sheets", multiple=True, help="Sheet to read (repeatable; default: the map's).")
@click.option("--dry-run", is_flag=True, help="Print the diff and the impact; write nothing.")
@click.option(
    "--sources",
    type=click.Choice(["all", "claims"]),
    multiple=True,
    help="Source modes of the impact evaluation (repeatable; default: all and claims).",
)
@database_option
def mappings_import(
    file: Path,
    measure: str,
    year: int,
    columns: Path | None,
    sheets: tuple[str, ...],
    dry_run: bool,
    sources: tuple[str, ...],
    database: str | None,
) -> None:
    """Import an official value-set workbook (.xlsx or CSV) into <measure>/<year>/valuesets/.

    Rows become status=official with the workbook's name and date as source. Prints the code
    diff per value set and who enters or leaves each population for calendar year YEAR; then,
    unless --dry-run, replaces the value-set CSVs and regenerates conformance/. A bad workbook
    changes nothing (exit 3, the error names file[sheet]:row and the column).
    """
    from fhir_adapter.mappings_import import DEFAULT_SOURCES, import_workbook

    settings = settings_for(database)
    result = import_workbook(
        settings, file, measure, year, columns=columns, sheets=sheets or None, dry_run=dry_run,
        sources=sources or DEFAULT_SOURCES,  # type: ignore[arg-type]
    )  # fmt: skip
    for line in import_lines(result):
        click.echo(line)
    if dry_run:
        err.print("dry run: nothing written", highlight=False, markup=False)
    else:
        err.print(
            f"{len(result.written)} value-set files replaced; {len(result.conformance)} conformance files "
            f"written to {settings.conformance_dir}",
            highlight=False,
            markup=False,
        )


def _row_text(row: CodeRow) -> str:
    validity = ""
    if row.valid_from or row.valid_to:
        validity = f" {row.valid_from or ''}..{row.valid_to or ''}"
    return f"{row.match}{validity} [{row.provenance.status}]"


def import_lines(result: ImportResult) -> list[str]:
    """The code diff and the per-child impact of an import, as printed lines."""
    from fhir_adapter.terminology.valueset_diff import written_code

    wb = result.workbook
    lines = [
        f"workbook {wb.path.name} dated {wb.date} (from the {wb.date_basis}); source = {wb.source!r}",
        f"  sheets read: {', '.join(wb.sheets)}"
        + (f"; skipped (no header row): {', '.join(wb.skipped_sheets)}" if wb.skipped_sheets else ""),
        f"  {len(wb.rows)} rows for {len(wb.valuesets())} value sets; "
        f"{wb.dropped_displays} CPT descriptions dropped (AMA copyright); {wb.duplicates} repeated rows kept once",
        f"value sets of {result.measure} {result.year}:",
    ]

    def code_text(system: str, code: str) -> str:
        cs = result.systems.get(system)
        return f"{cs.name if cs else system} {written_code(cs.normalise if cs else 'none', code)}"

    diffs = {d.name: d for d in result.diffs}
    for name in [*wb.valuesets(), *(n for n in diffs if n not in wb.valuesets())]:
        diff = diffs.get(name)
        if diff is None:
            lines.append(f"  {name}: no change")
            continue
        counts = diff.counts
        lines.append(
            f"  {name}: {counts['added']} added, {counts['removed']} removed, {counts['changed']} changed"
        )
        for change in diff.changes:
            label = code_text(change.system, change.code)
            if change.kind == "added":
                lines.extend(f"    + {label} {_row_text(r)}" for r in change.after)
            elif change.kind == "removed":
                lines.extend(f"    - {label} {_row_text(r)}" for r in change.before)
            else:
                lines.append(f"    ~ {label}: {'; '.join(change.details())}")
    for impact in result.impacts:
        lines.append(
            f"impact on the store ({result.year}-01-01..{result.year}-12-31, sources {impact.sources}):"
        )
        width = max((len(c.population) for c in impact.counts), default=0)
        for count in impact.counts:
            delta = f" ({count.delta:+d})" if count.delta else ""
            lines.append(f"  {count.population:<{width}}  {count.before} -> {count.after}{delta}")
        if impact.unchanged:
            lines.append("  no child enters or leaves a population")
        for ch in impact.changes:
            verb = "enters" if ch.entered else "leaves"
            lines.append(
                f"  {verb} {ch.population}: member {ch.member_id or '(none)'}, {ch.patient} "
                f"(source {ch.patient_source}), CCO {ch.cco or '(none)'}: "
                f"{'in' if ch.before else 'out'} -> {'in' if ch.after else 'out'} "
                f"({ch.reason_before or '-'} -> {ch.reason_after or '-'})"
            )
    return lines


@main.group()
def conformance() -> None:
    """The FHIR conformance resources generated from mappings/."""


@conformance.command("build")
@click.option(
    "--out", type=click.Path(path_type=Path), default=None, help="Folder (default: the conformance dir)."
)
def conformance_build(out: Path | None) -> None:
    """Regenerate Measure, Library, ValueSets and CapabilityStatement from mappings/."""
    from fhir_adapter.mappings import load_mappings
    from fhir_adapter.report.conformance import write_conformance

    settings = settings_for(None)
    folder = out or settings.conformance_dir
    written = write_conformance(load_mappings(settings.mappings_dir), folder, settings.canonical_base)
    for path in written:
        click.echo(str(path))
    err.print(f"{len(written)} files written to {folder}", highlight=False)
