"""``fhir-adapter clients token``: an access token for a registered client, to paste into the
dashboard's sign-in page (``/dashboard/login``) or to send as ``Authorization: Bearer``.

SMART App Launch 2.2 Backend Services (:mod:`fhir_adapter.auth.smart_client`): discovery at
``<url>/fhir/.well-known/smart-configuration``, then the client-credentials grant with a
``private_key_jwt`` assertion signed by the client's private key (a JWK Set file holding private
JWKs, or a PEM file with ``--kid``).
"""

from __future__ import annotations

from pathlib import Path

import click
import httpx

from fhir_adapter.cli.clients import clients


@clients.command(name="token")
@click.argument("client_id")
@click.option(
    "--key",
    "key_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The client's private key: a JWK Set file of private JWKs, or a PEM file (with --kid).",
)
@click.option("--kid", default=None, help="Key id (needed with a PEM key; picks a key of a JWK Set).")
@click.option(
    "--url",
    default="http://127.0.0.1:8080",
    show_default=True,
    help="The server (its FHIR base is <url>/fhir).",
)
@click.option("--scope", default="system/*.rs", show_default=True, help="Scopes to ask for.")
def token(client_id: str, key_file: Path, kid: str | None, url: str, scope: str) -> None:
    """Print an access token of CLIENT_ID (valid for at most 5 minutes)."""
    from fhir_adapter.auth.smart_client import BackendServicesClient, load_signing_key

    key = load_signing_key(key_file, kid=kid)
    base = url.rstrip("/").removesuffix("/fhir") + "/fhir"
    with httpx.Client(timeout=30.0, follow_redirects=False) as http:
        client = BackendServicesClient(client_id=client_id, key=key, scope=scope, http=http, base_url=base)
        click.echo(client.token())
