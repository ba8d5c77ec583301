"""``fhir-adapter serve``: the FHIR REST service under uvicorn."""

from __future__ import annotations

import os

import click

from fhir_adapter.cli.common import database_option, err, main, settings_for
from fhir_adapter.logsafe import uvicorn_log_config


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Worker processes sharing the one database (PostgreSQL recommended above 1).",
)
@click.option(
    "--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]), default="info"
)
@database_option
def serve(host: str, port: int, workers: int, log_level: str, database: str | None) -> None:
    """Serve the FHIR API at http://HOST:PORT/fhir (OpenAPI docs at /docs)."""
    import uvicorn

    settings = settings_for(database)
    # Workers are separate processes that read their settings from the environment.
    os.environ["FHIR_ADAPTER_DATABASE_URL"] = settings.database_url
    if workers > 1 and settings.database_url.startswith("sqlite"):
        err.print(
            "note: several workers on SQLite serialise their writes; use PostgreSQL for production",
            highlight=False,
        )
    err.print(f"serving FHIR R4 at http://{host}:{port}/fhir", highlight=False)
    uvicorn.run(
        "fhir_adapter.api.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        log_config=uvicorn_log_config(log_level),  # access lines without query strings (no PHI)
        proxy_headers=True,
    )
