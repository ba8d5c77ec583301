"""``fhir-adapter sandbox``: ``serve`` on a store of synthetic children, authorisation off
(:mod:`fhir_adapter.sandbox`)."""

from __future__ import annotations

import os

import click

from fhir_adapter.cli.common import err, main, settings_for
from fhir_adapter.cli.serve import serve
from fhir_adapter.sandbox import BANNER, DEFAULT_PATIENTS, DEFAULT_SEED, SANDBOX_DATABASE_URL, prepare


def _banner() -> None:
    err.print(f"[bold white on red] {BANNER} [/]", highlight=False)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option(
    "--patients",
    type=click.IntRange(1, 100_000),
    default=DEFAULT_PATIENTS,
    show_default=True,
    help="Synthetic children seeded into a new store.",
)
@click.option("--seed", type=int, default=DEFAULT_SEED, show_default=True)
@click.option(
    "--database",
    default=None,
    help=f"Store URL (default {SANDBOX_DATABASE_URL}; FHIR_ADAPTER_DATABASE_URL is ignored).",
)
@click.option("--reset", is_flag=True, help="Delete the sandbox store and seed it again.")
@click.option(
    "--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]), default="info"
)
@click.pass_context
def sandbox(
    ctx: click.Context, host: str, port: int, patients: int, seed: int, database: str | None, reset: bool,
    log_level: str,
) -> None:  # fmt: skip
    """Serve the FHIR API on a sandbox store of synthetic children, with authorisation OFF.

    The store (default ./sandbox.db) is seeded when it is new; --reset deletes and re-seeds it. A store
    holding data the sandbox did not create is refused."""
    _banner()
    settings = settings_for(database or SANDBOX_DATABASE_URL)
    state = prepare(
        settings,
        patients=patients,
        seed=seed,
        reset=reset,
        progress=lambda message: err.print(message, highlight=False, soft_wrap=True),
    )
    what = "seeded" if state.seeded_now else "reusing"
    err.print(
        f"{what} sandbox store {state.url}: {state.patients} synthetic children (seed {state.seed}), "
        f"{state.resources} resources",
        highlight=False,
        soft_wrap=True,
    )
    # Worker processes read their settings from the environment (see serve); with SMART
    # authorisation in place this switches it off for them (ignored by settings without the field).
    os.environ["FHIR_ADAPTER_AUTH_REQUIRED"] = "false"
    _banner()
    ctx.invoke(serve, host=host, port=port, workers=1, log_level=log_level, database=settings.database_url)
