"""The command line: parse, call the library, print. Data to stdout, logs and progress to stderr."""

from __future__ import annotations

import click


@click.group()
def main() -> None:
    """Oregon social-emotional health metric from FHIR R4 data."""
