"""What every command shares: the ``main`` group, settings from options, the error edge,
date parsing and atomic output. Data to stdout, logs and progress to stderr.

Exit codes (DESIGN.md §2): 0 ok, 1 runtime failure, 2 usage, 3 invalid data or mappings.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

import click
import orjson
from rich.console import Console
from rich.markup import escape

from fhir_adapter.errors import AdapterError, UsageError
from fhir_adapter.settings import DEFAULT_DATABASE_URL, Settings

F = TypeVar("F", bound=Callable[..., Any])
err = Console(stderr=True)


def settings_for(database: str | None) -> Settings:
    overrides: dict[str, Any] = {}
    if database:
        overrides["database_url"] = database
    try:
        return Settings(**overrides)
    except ValueError as exc:
        raise UsageError(f"invalid settings: {exc}") from exc


def database_option(func: F) -> F:
    return click.option(
        "--database",
        envvar="FHIR_ADAPTER_DATABASE_URL",
        default=None,
        help=f"Store URL (default {DEFAULT_DATABASE_URL}; env FHIR_ADAPTER_DATABASE_URL).",
    )(func)


def parse_date(_ctx: click.Context, _param: click.Parameter, value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)") from None


def write_json(data: Any, out: Path | None) -> None:
    payload = orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n"
    if out is None:
        sys.stdout.buffer.write(payload)
        sys.stdout.flush()
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(payload)
    tmp.replace(out)  # never a half-written report


class AdapterGroup(click.Group):
    """Turns every :class:`AdapterError` into one message on stderr and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AdapterError as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            sys.exit(exc.exit_code)


@click.group(cls=AdapterGroup)
@click.version_option(package_name="fhir-adapter")
def main() -> None:
    """Oregon's social-emotional health metric from FHIR R4 data, as DEQM MeasureReports."""
