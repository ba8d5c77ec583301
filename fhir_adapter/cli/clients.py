"""``fhir-adapter clients``: register, list, revoke and re-key SMART Backend Services clients.

Registration is the out-of-band step of SMART App Launch 2.2 Backend Services (§ "Register"):
the client's public JWK Set (a file, or preferably a URL the client hosts, so it rotates its own
keys), its role and what it is pre-authorised to do. See :mod:`fhir_adapter.auth.clients`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import orjson
from rich.console import Console
from rich.table import Table

from fhir_adapter.cli.common import database_option, err, main, settings_for, write_json
from fhir_adapter.errors import InvalidDataError

_JWKS_HELP = "File with the client's public JWK Set (JSON with a 'keys' array)."
_JWKS_URL_HELP = (
    "URL where the client publishes its JWK Set (https://; preferred: the client rotates its own keys)."
)


def _read_jwks(path: Path) -> Any:
    try:
        return orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise InvalidDataError(f"not JSON: {exc}", location=str(path)) from exc


@main.group()
def clients() -> None:
    """SMART Backend Services clients allowed to call the FHIR service."""


@clients.command(name="add")
@click.argument("client_id")
@click.option("--role", type=click.Choice(["ehr", "cco", "oha", "admin"]), required=True)
@click.option("--source", default=None, help="Source name its pushes are stored under (required for ehr).")
@click.option("--cco", "ccos", multiple=True, help="CCO id from mappings/ccos.csv (cco clients; repeatable).")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    help="Scope it may be granted, e.g. system/MeasureReport.rs or system/*.read (repeatable; "
    "default by role: ehr and admin system/*.cruds, cco and oha system/*.rs).",
)
@click.option(
    "--jwks", "jwks_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help=_JWKS_HELP
)
@click.option("--jwks-url", default=None, help=_JWKS_URL_HELP)
@click.option("--name", default=None, help="Display name.")
@database_option
def add(
    client_id: str,
    role: str,
    source: str | None,
    ccos: tuple[str, ...],
    scopes: tuple[str, ...],
    jwks_file: Path | None,
    jwks_url: str | None,
    name: str | None,
    database: str | None,
) -> None:
    """Register CLIENT_ID with its public keys."""
    from fhir_adapter import workflow
    from fhir_adapter.auth.clients import Registration, register
    from fhir_adapter.ingest.runner import utc_now
    from fhir_adapter.mappings import load_mappings

    settings = settings_for(database)
    known = [c.id for c in load_mappings(settings.mappings_dir).ccos] if role == "cco" else []
    if jwks_file is not None and jwks_url is not None:
        raise click.UsageError("give --jwks or --jwks-url, not both")
    if jwks_file is None and jwks_url is None:
        raise click.UsageError("give --jwks FILE or --jwks-url URL")
    jwks = _read_jwks(jwks_file) if jwks_file is not None else None
    reg = Registration(
        client_id=client_id,
        role=role,
        source=source,
        ccos=ccos,
        scopes=scopes,
        jwks=jwks,
        jwks_url=jwks_url,
        name=name,
    )
    store = workflow.open_store(settings)
    try:
        client = register(
            store, reg, known_ccos=known, now=utc_now(), reserved_sources=(settings.report_source,)
        )
    finally:
        store.close()
    err.print(
        f"registered {client.client_id} ({client.role}, source {client.source!r}, scopes {client.scopes.render()})",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


@clients.command(name="list")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@database_option
def list_(fmt: str, database: str | None) -> None:
    """List registered clients (key ids only, never key material)."""
    from fhir_adapter import workflow
    from fhir_adapter.auth.clients import list_clients

    store = workflow.open_store(settings_for(database))
    try:
        found = list_clients(store)
    finally:
        store.close()
    if fmt == "json":
        write_json([c.to_json() for c in found], None)
        return
    table = Table("client", "role", "source", "CCOs", "scopes", "keys", "status")
    for c in found:
        keys = c.jwks_url or ", ".join(str(k.get("kid")) for k in (c.jwks or {}).get("keys", []))
        table.add_row(
            c.client_id,
            c.role,
            c.source,
            " ".join(c.ccos),
            c.scopes.render(),
            keys,
            "revoked" if c.revoked else "active",
        )
    Console(soft_wrap=True).print(table)


@clients.command(name="revoke")
@click.argument("client_id")
@database_option
def revoke_(client_id: str, database: str | None) -> None:
    """Refuse CLIENT_ID from now on (its unexpired tokens stop working too)."""
    from fhir_adapter import workflow
    from fhir_adapter.auth.clients import revoke
    from fhir_adapter.ingest.runner import utc_now

    store = workflow.open_store(settings_for(database))
    try:
        revoke(store, client_id, now=utc_now())
    finally:
        store.close()
    err.print(f"revoked {client_id}", highlight=False, markup=False)


@clients.command(name="rotate")
@click.argument("client_id")
@click.option(
    "--jwks", "jwks_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help=_JWKS_HELP
)
@click.option("--jwks-url", default=None, help=_JWKS_URL_HELP)
@database_option
def rotate(client_id: str, jwks_file: Path | None, jwks_url: str | None, database: str | None) -> None:
    """Replace CLIENT_ID's keys. To rotate without downtime, register a set holding the old and
    the new key, let the client switch, then register the new key alone."""
    from fhir_adapter import workflow
    from fhir_adapter.auth.clients import set_keys
    from fhir_adapter.ingest.runner import utc_now

    if (jwks_file is None) == (jwks_url is None):
        raise click.UsageError("give exactly one of --jwks FILE or --jwks-url URL")
    jwks = _read_jwks(jwks_file) if jwks_file is not None else None
    store = workflow.open_store(settings_for(database))
    try:
        client = set_keys(store, client_id, now=utc_now(), jwks=jwks, jwks_url=jwks_url)
    finally:
        store.close()
    keys = client.jwks_url or ", ".join(str(k.get("kid")) for k in (client.jwks or {}).get("keys", []))
    err.print(f"{client_id} now uses {keys}", highlight=False, markup=False, soft_wrap=True)
