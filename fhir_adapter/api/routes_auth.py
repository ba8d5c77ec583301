"""SMART Backend Services endpoints: ``POST /auth/token`` and
``GET /fhir/.well-known/smart-configuration`` (SMART App Launch 2.2).

- Discovery (2.2 "Conformance", § "FHIR Authorization Endpoint and Capabilities Discovery using a
  Well-Known Uniform Resource Identifiers (URIs)"): JSON at ``[base]/.well-known/smart-configuration``
  with ``token_endpoint``, ``capabilities`` and the client-confidential-asymmetric properties
  ``token_endpoint_auth_methods_supported`` [``private_key_jwt``] and
  ``token_endpoint_auth_signing_alg_values_supported`` [``RS384``, ``ES384``]. This server has no
  authorization endpoint (no launch flows), so ``authorization_endpoint`` and PKCE methods are
  not listed.
- Token endpoint (2.2 "Backend Services", § "Obtain access token"): a form POST
  (``application/x-www-form-urlencoded``); answers and errors are OAuth JSON (RFC 6749 §5.1,
  §5.2), not OperationOutcome, with ``Cache-Control: no-store``.

The form body is parsed here (``urllib.parse``), so the app needs no multipart library.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qs

from fastapi import APIRouter, FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from fhir_adapter.api import audit
from fhir_adapter.api.capabilities import Contribution
from fhir_adapter.api.routes_jobs import base_url
from fhir_adapter.auth.clients import SIGNING_ALGS
from fhir_adapter.auth.tokens import TokenService
from fhir_adapter.errors import OAuthError
from fhir_adapter.ingest.runner import Clock
from fhir_adapter.settings import Settings
from fhir_adapter.store.db import Store

log = logging.getLogger("fhir_adapter.auth")

router = APIRouter()
CAPABILITIES = Contribution()

TOKEN_PATH = "/auth/token"
SMART_CONFIGURATION_PATH = "/fhir/.well-known/smart-configuration"
FORM = "application/x-www-form-urlencoded"
MAX_FORM_BYTES = 64 * 1024
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
#: SMART capabilities (2.2 "Conformance", § "Capabilities"): asymmetric client authentication,
#: v1 and v2 scope syntax (granular ``?param`` constraints are refused with invalid_scope).
SMART_CAPABILITIES = ("client-confidential-asymmetric", "permission-v1", "permission-v2")
SECURITY_SERVICE = "http://terminology.hl7.org/CodeSystem/restful-security-service"
OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"


def install(app: FastAPI, settings: Settings, store: Store, clock: Clock) -> None:
    """Put the token service on ``app.state.auth`` and say loudly when authorisation is off."""
    app.state.auth = TokenService(settings, store, clock)
    if not settings.auth_required:
        log.warning(
            "AUTHORISATION IS OFF (auth_required=false): every request is served as an anonymous "
            "caller with every permission. Use this for development only."
        )
    elif not settings.public_base_url:
        log.warning(
            "public_base_url is not set: the token URL that client assertions must name as 'aud' "
            "is taken from each request's Host header; set FHIR_ADAPTER_PUBLIC_BASE_URL in production."
        )


def token_url(request: Request) -> str:
    """The token endpoint's URL, which a client assertion's ``aud`` must equal exactly."""
    return base_url(request) + TOKEN_PATH


def capability_security(settings: Settings) -> dict[str, object]:
    """``CapabilityStatement.rest.security`` for a server that requires SMART tokens: the R4
    restful-security-service code ``SMART-on-FHIR`` and the SMART ``oauth-uris`` extension with
    the token URL (absolute when ``public_base_url`` is set, else the path). SMART 2.2 calls this
    mechanism deprecated in favour of the well-known document, which it points to."""
    base = (settings.public_base_url or "").rstrip("/").removesuffix("/fhir")
    return {
        "extension": [
            {"url": OAUTH_URIS, "extension": [{"url": "token", "valueUri": base + TOKEN_PATH}]},
        ],
        "service": [
            {
                "coding": [{"system": SECURITY_SERVICE, "code": "SMART-on-FHIR", "display": "SMART-on-FHIR"}],
                "text": "SMART Backend Services (OAuth 2.0 client credentials, private_key_jwt)",
            }
        ],
        "description": (
            "Every request except discovery needs a bearer token from the token endpoint (SMART App "
            "Launch 2.2 Backend Services; see [base]/.well-known/smart-configuration)."
        ),
    }


#: Scopes a client may request (2.2 "Conformance": the server SHALL support all listed; the
#: list need not be exhaustive): the wildcards in v2 and v1 syntax. Any ``system/<Type>.<cruds>``
#: within a client's registration is granted too; the CapabilityStatement says which types and
#: interactions exist.
SCOPES_SUPPORTED = (
    "system/*.cruds",
    "system/*.rs",
    "system/*.cud",
    "system/*.read",
    "system/*.write",
    "system/*.*",
)


def _oauth_error(status: int, error: str, description: str) -> Response:
    return JSONResponse(
        {"error": error, "error_description": description}, status_code=status, headers=NO_STORE
    )


_FORM_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            FORM: {
                "schema": {
                    "type": "object",
                    "required": ["grant_type", "scope", "client_assertion_type", "client_assertion"],
                    "properties": {
                        "grant_type": {"type": "string", "enum": ["client_credentials"]},
                        "scope": {"type": "string", "example": "system/MeasureReport.rs"},
                        "client_assertion_type": {
                            "type": "string",
                            "enum": ["urn:ietf:params:oauth:client-assertion-type:jwt-bearer"],
                        },
                        "client_assertion": {"type": "string", "description": "the signed JWT"},
                    },
                }
            }
        },
    }
}


@router.post(
    TOKEN_PATH,
    tags=["auth"],
    summary="Access token for a SMART Backend Services client (client_credentials, private_key_jwt)",
    openapi_extra=_FORM_DOC,
    response_model=None,
)
async def token(request: Request) -> Response:
    media = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    if not media:
        return _oauth_error(400, "invalid_request", f"send the parameters as {FORM}")
    if media != FORM:
        return _oauth_error(415, "invalid_request", f"content type {media!r}: send {FORM}")
    too_large = _oauth_error(
        413, "invalid_request", f"the request body is larger than {MAX_FORM_BYTES} bytes"
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_FORM_BYTES:
        return too_large
    body = bytearray()
    async for chunk in request.stream():  # never more than the limit in memory
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return too_large
    try:
        parsed = parse_qs(
            body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body), max_num_fields=32
        )
    except (UnicodeDecodeError, ValueError):
        return _oauth_error(400, "invalid_request", "the form body is malformed")
    repeated = sorted(name for name, values in parsed.items() if len(values) > 1)
    if repeated:  # RFC 6749 §3.2: parameters MUST NOT be included more than once
        return _oauth_error(
            400, "invalid_request", f"parameter(s) sent more than once: {', '.join(repeated)}"
        )
    params = {name: values[0] for name, values in parsed.items()}
    audit.note_token_client(request, params)  # the claimed client id, never the assertion
    service: TokenService = request.app.state.auth
    try:
        issued = await run_in_threadpool(service.issue, params, token_url(request))
    except OAuthError as exc:
        log.info("token request refused: %s: %s", exc.error, exc.message)
        return _oauth_error(exc.http_status, exc.error, exc.message)
    return JSONResponse(issued.to_json(), headers=NO_STORE)


@router.get(
    SMART_CONFIGURATION_PATH, tags=["discovery"], summary="SMART configuration (SMART App Launch 2.2)"
)
def smart_configuration(request: Request) -> Response:
    document = {
        "token_endpoint": token_url(request),
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": list(SIGNING_ALGS),
        "grant_types_supported": ["client_credentials"],
        "scopes_supported": list(SCOPES_SUPPORTED),
        "capabilities": list(SMART_CAPABILITIES),
    }
    return JSONResponse(document)
