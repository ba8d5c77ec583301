"""mappings/ checks and imports; the generated conformance resources."""

from __future__ import annotations

from pathlib import Path

import click

from fhir_adapter.cli.common import err, main, settings_for


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
