"""SMART Backend Services, client side: get access tokens for pulling from a FHIR server.

SMART App Launch 2.2 (``HL7/smart-app-launch``):

- "Backend Services" § "Retrieve .well-known/smart-configuration": discovery at
  ``[fhir base]/.well-known/smart-configuration`` (``Accept: application/json``), giving the
  ``token_endpoint``; "Client Authentication: Asymmetric (public key)" § "Advertising server
  support": ``token_endpoint_auth_methods_supported`` includes ``private_key_jwt``,
  ``token_endpoint_auth_signing_alg_values_supported`` at least one of ``RS384``/``ES384``.
- "Client Authentication: Asymmetric" § "Authenticating to the Token endpoint" / "Protocol
  details": a one-time-use JWT, header ``alg``, ``kid`` and ``typ=JWT``; claims ``iss`` = ``sub``
  = client id, ``aud`` = the token URL, ``exp`` no more than five minutes ahead, a unique ``jti``;
  signed ``RS384`` or ``ES384`` (§ "Registering a client": clients SHALL support both).
- "Backend Services" § "Obtain access token": form POST of ``scope``,
  ``grant_type=client_credentials``, ``client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer``
  and ``client_assertion``; the answer has ``access_token``, ``token_type=bearer``,
  ``expires_in`` (SHOULD NOT exceed 300) and ``scope``; errors per RFC 6749 §5.2
  (``invalid_client``, ``invalid_scope``, …). No refresh tokens: a new token is requested
  shortly before the current one expires.
- "Scopes and Launch Context" § "Scopes for requesting clinical data": v2 permissions are an
  in-order subset of ``cruds``; v1 ``.read`` ⇒ v2 ``.rs``, ``.write`` ⇒ ``.cud``, ``.*`` ⇒
  ``.cruds``. Scopes are sent as the user gives them, converted only when the server's
  ``scopes_supported`` (or its ``permission-v1``/``permission-v2`` capabilities) show only the
  other syntax (:func:`adapt_scopes`).

Keys come from a JWKS file holding private JWKs (chosen by ``kid``) or a PEM private key plus a
``kid``. :class:`SmartAuth` is an ``httpx.Auth`` that adds the bearer token and, on a 401,
fetches a new token and retries once.
"""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import httpx
import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from fhir_adapter.auth.scopes import PERMISSIONS, V1_TO_V2
from fhir_adapter.errors import RemoteError, UsageError
from fhir_adapter.ingest.runner import Clock, utc_now

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: "exp … SHALL be no more than five minutes in the future".
MAX_ASSERTION_LIFETIME = 300
#: A minute under the maximum, so a server whose clock runs behind still accepts it.
DEFAULT_ASSERTION_LIFETIME = 240
SIGNING_ALGS = ("RS384", "ES384")
#: ``expires_in`` is required; a server that omits it is assumed to use the recommended 300 s.
DEFAULT_EXPIRES_IN = 300
WELL_KNOWN = ".well-known/smart-configuration"

Syntax = Literal["v1", "v2"]
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
#: Sends one token request (built afresh per attempt: a retried assertion needs a new ``jti``).
TokenSender = Callable[[Callable[[], httpx.Request]], httpx.Response]


# -- discovery --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SmartConfiguration:
    """The parts of ``.well-known/smart-configuration`` a Backend Services client uses."""

    token_endpoint: str
    auth_methods: tuple[str, ...] = ()
    signing_algs: tuple[str, ...] = ()
    grant_types: tuple[str, ...] = ()
    scopes_supported: tuple[str, ...] = ()
    capabilities: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: Any, where: str) -> SmartConfiguration:
        if not isinstance(data, dict):
            raise RemoteError(f"{where}: the SMART configuration is not a JSON object")
        token = data.get("token_endpoint")
        if not isinstance(token, str) or not token:
            raise RemoteError(f"{where}: the SMART configuration has no token_endpoint")

        def strings(key: str) -> tuple[str, ...]:
            value = data.get(key)
            return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()

        return cls(
            token_endpoint=token,
            auth_methods=strings("token_endpoint_auth_methods_supported"),
            signing_algs=strings("token_endpoint_auth_signing_alg_values_supported"),
            grant_types=strings("grant_types_supported"),
            scopes_supported=strings("scopes_supported"),
            capabilities=strings("capabilities"),
        )

    def check_backend_services(self, key: SigningKey) -> None:
        """Refuse early, with a clear message, when the server says it cannot take this client's
        grant (lists that are absent are not held against it)."""
        if self.auth_methods and "private_key_jwt" not in self.auth_methods:
            raise RemoteError(
                f"the server's token endpoint accepts {', '.join(self.auth_methods)}, not private_key_jwt "
                "(SMART Backend Services)"
            )
        if self.grant_types and "client_credentials" not in self.grant_types:
            raise RemoteError(
                f"the server grants {', '.join(self.grant_types)}, not client_credentials (SMART Backend Services)"
            )
        if self.signing_algs and key.alg not in self.signing_algs:
            raise UsageError(
                f"the server verifies {', '.join(self.signing_algs)} signatures; key {key.kid!r} signs {key.alg} "
                "(use an RSA key for RS384 or an EC P-384 key for ES384)"
            )


def discover(http: httpx.Client, base_url: str) -> SmartConfiguration:
    """GET ``{base}/.well-known/smart-configuration``."""
    url = f"{base_url.rstrip('/')}/{WELL_KNOWN}"
    try:
        response = http.get(url, headers={"Accept": "application/json"})
    except httpx.HTTPError as exc:
        raise RemoteError(f"{url}: {exc.__class__.__name__}: {exc}") from exc
    if response.status_code != 200:
        raise RemoteError(
            f"{url}: HTTP {response.status_code}; the server publishes no SMART configuration",
            status=response.status_code,
        )
    try:
        data = orjson.loads(response.content)
    except orjson.JSONDecodeError as exc:
        raise RemoteError(f"{url}: the SMART configuration is not JSON: {exc}") from exc
    return SmartConfiguration.from_json(data, url)


# -- keys -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SigningKey:
    """A private key, its ``kid`` and the JWS algorithm it signs with (``RS384`` or ``ES384``)."""

    kid: str
    alg: str
    key: PrivateKey


def _alg_for(key: object, declared: str | None, where: str) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        alg = "RS384"
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, ec.SECP384R1):
            raise UsageError(f"{where}: EC key on curve {key.curve.name}; ES384 needs P-384 (secp384r1)")
        alg = "ES384"
    else:
        raise UsageError(f"{where}: not an RSA or EC private key")
    if declared is not None and declared != alg:
        raise UsageError(
            f"{where}: the key declares alg {declared}; SMART Backend Services clients sign RS384 (RSA) or ES384 (EC P-384)"
        )
    return alg


def signing_key_from_jwk(
    jwk_data: dict[str, Any], *, kid: str | None = None, where: str = "JWK"
) -> SigningKey:
    """A :class:`SigningKey` from one private JWK (RFC 7517); ``kid`` defaults to the JWK's."""
    key_id = kid or jwk_data.get("kid")
    if not isinstance(key_id, str) or not key_id:
        raise UsageError(f"{where}: the key has no kid; give one with --kid")
    declared = jwk_data.get("alg")
    kty = jwk_data.get("kty")
    try:
        parsed = jwt.PyJWK(jwk_data, algorithm="RS384" if kty == "RSA" else "ES384").key
    except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{where}: not a usable JWK ({exc})") from exc
    if not isinstance(parsed, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise UsageError(f"{where}: key {key_id!r} is a public key; the client signs with its private key")
    alg = _alg_for(parsed, declared if isinstance(declared, str) else None, where)
    return SigningKey(kid=key_id, alg=alg, key=parsed)


def signing_key_from_pem(data: bytes, *, kid: str | None, where: str = "PEM") -> SigningKey:
    """A :class:`SigningKey` from an unencrypted PEM private key (PKCS#8 or traditional)."""
    if not kid:
        raise UsageError(f"{where}: a PEM key needs --kid (the key id registered with the server)")
    try:
        parsed = serialization.load_pem_private_key(data, password=None)
    except TypeError as exc:
        raise UsageError(f"{where}: the PEM key is encrypted; decrypt it first ({exc})") from exc
    except ValueError as exc:
        raise UsageError(f"{where}: not a PEM private key ({exc})") from exc
    if not isinstance(parsed, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise UsageError(f"{where}: not an RSA or EC private key")
    return SigningKey(kid=kid, alg=_alg_for(parsed, None, where), key=parsed)


def load_signing_key(path: Path, *, kid: str | None = None) -> SigningKey:
    """The private key in ``path``: a JWKS (``{"keys": [...]}``) or a single JWK, picking the
    private key whose ``kid`` is ``kid`` (or the only private key), or a PEM file with ``kid``."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the key file ({exc.strerror or exc})") from exc
    if not data.lstrip().startswith(b"{"):
        return signing_key_from_pem(data, kid=kid, where=str(path))
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise UsageError(f"{path}: not JSON ({exc})") from exc
    keys = parsed.get("keys") if isinstance(parsed, dict) and "keys" in parsed else [parsed]
    if not isinstance(keys, list) or not all(isinstance(k, dict) for k in keys):
        raise UsageError(f"{path}: not a JWK or a JWK Set")
    private = [k for k in keys if "d" in k]
    if not private:
        raise UsageError(f"{path}: no private key in the JWK Set (the client signs with its private key)")
    if kid is not None:
        chosen = [k for k in private if k.get("kid") == kid]
        if not chosen and len(private) == 1 and "kid" not in private[0]:
            chosen = private
        if not chosen:
            known = ", ".join(repr(k.get("kid")) for k in private)
            raise UsageError(f"{path}: no private key with kid {kid!r} (private keys: {known})")
    elif len(private) == 1:
        chosen = private
    else:
        known = ", ".join(repr(k.get("kid")) for k in private)
        raise UsageError(f"{path}: {len(private)} private keys ({known}); choose one with --kid")
    return signing_key_from_jwk(chosen[0], kid=kid, where=str(path))


# -- the client assertion -------------------------------------------------------------------


def client_assertion(
    client_id: str,
    token_url: str,
    key: SigningKey,
    *,
    now: datetime,
    lifetime: int = DEFAULT_ASSERTION_LIFETIME,
    jti: str | None = None,
) -> str:
    """The signed authentication JWT ("Protocol details"): header ``alg``/``kid``/``typ=JWT``,
    claims ``iss`` = ``sub`` = ``client_id``, ``aud`` = ``token_url``, ``exp`` = now +
    ``lifetime`` (at most 300 s), a fresh random ``jti``."""
    if not 1 <= lifetime <= MAX_ASSERTION_LIFETIME:
        raise ValueError(f"assertion lifetime must be 1..{MAX_ASSERTION_LIFETIME} s, not {lifetime}")
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": token_url,
        "exp": int(now.timestamp()) + lifetime,
        "jti": jti or secrets.token_urlsafe(24),
    }
    return jwt.encode(claims, key.key, algorithm=key.alg, headers={"kid": key.kid, "typ": "JWT"})


# -- scopes ---------------------------------------------------------------------------------

_CLINICAL_RE = re.compile(
    r"^(?P<context>patient|user|system)/(?P<type>[A-Za-z]+|\*)\.(?P<perms>[A-Za-z*]+)(?P<query>\?.*)?$"
)
_V2_PERMS_RE = re.compile(r"^c?r?u?d?s?$")


def scope_syntax(scope: str) -> Syntax | None:
    """``v1`` (``.read``/``.write``/``.*``), ``v2`` (``.cruds`` subsets) or ``None`` for a scope
    that is not a clinical-data scope (``openid``, ``launch``, malformed)."""
    match = _CLINICAL_RE.match(scope)
    if match is None:
        return None
    perms = match.group("perms")
    if perms in V1_TO_V2 and not match.group("query"):
        return "v1"
    if perms and _V2_PERMS_RE.match(perms):
        return "v2"
    return None


def to_v2(scope: str) -> str:
    """A v1 scope in v2 syntax (``system/*.read`` → ``system/*.rs``); others unchanged."""
    match = _CLINICAL_RE.match(scope)
    if match is None or scope_syntax(scope) != "v1":
        return scope
    return f"{match.group('context')}/{match.group('type')}.{V1_TO_V2[match.group('perms')]}"


def to_v1(scope: str) -> list[str]:
    """A v2 scope in v1 syntax: ``.cruds`` → ``.*``; read or search → ``.read``; create, update or
    delete → ``.write`` (v1 cannot say "read but not search", so ``.r`` becomes ``.read``).
    A v2 scope with ``?param=value`` constraints has no v1 form: :class:`UsageError`."""
    match = _CLINICAL_RE.match(scope)
    if match is None or scope_syntax(scope) != "v2":
        return [scope]
    if match.group("query"):
        raise UsageError(f"scope {scope!r}: v1 scopes cannot carry '?param=value' constraints")
    prefix = f"{match.group('context')}/{match.group('type')}"
    perms = set(match.group("perms"))
    if perms == set(PERMISSIONS):
        return [f"{prefix}.*"]
    out = []
    if perms & set("rs"):
        out.append(f"{prefix}.read")
    if perms & set("cud"):
        out.append(f"{prefix}.write")
    return out


def server_syntaxes(config: SmartConfiguration) -> frozenset[Syntax]:
    """The scope syntaxes the server shows: its ``permission-v1``/``permission-v2``
    capabilities and the forms in ``scopes_supported`` (empty when it shows neither)."""
    found: set[Syntax] = set()
    if "permission-v1" in config.capabilities:
        found.add("v1")
    if "permission-v2" in config.capabilities:
        found.add("v2")
    for scope in config.scopes_supported:
        syntax = scope_syntax(scope)
        if syntax is not None:
            found.add(syntax)
    return frozenset(found)


def adapt_scopes(requested: str, config: SmartConfiguration | None) -> str:
    """``requested`` as given, except that clinical scopes in a syntax the server does not show
    (when it shows exactly one) are converted to the other; duplicates dropped, order kept."""
    syntaxes = server_syntaxes(config) if config is not None else frozenset()
    out: dict[str, None] = {}
    for token in requested.split():
        syntax = scope_syntax(token)
        if syntax is None or not syntaxes or syntax in syntaxes:
            out.setdefault(token, None)
        elif syntax == "v2":
            for converted in to_v1(token):
                out.setdefault(converted, None)
        else:
            out.setdefault(to_v2(token), None)
    return " ".join(out)


# -- tokens ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AccessToken:
    value: str
    expires_at: datetime
    #: The scope granted (may differ from the one requested).
    scope: str
    #: When the client stops reusing it: shortly before ``expires_at``.
    renew_at: datetime


class BackendServicesClient:
    """Gets and caches access tokens with the client-credentials grant and a ``private_key_jwt``
    assertion. Thread-safe: parallel downloads share one token.

    ``token_url`` skips discovery; otherwise ``{base_url}/.well-known/smart-configuration`` is read
    once, on first use. A token is reused until ``margin`` seconds before it expires (at most half
    its lifetime, so short-lived tokens are still reused)."""

    def __init__(
        self,
        *,
        client_id: str,
        key: SigningKey,
        scope: str,
        http: httpx.Client,
        base_url: str | None = None,
        token_url: str | None = None,
        clock: Clock = utc_now,
        margin: float = 60.0,
        assertion_lifetime: int = DEFAULT_ASSERTION_LIFETIME,
        send: TokenSender | None = None,
    ) -> None:
        if base_url is None and token_url is None:
            raise ValueError("give base_url (for discovery) or token_url")
        if not client_id:
            raise UsageError("--client-id is empty")
        if not scope.split():
            raise UsageError("--scope is empty")
        self.client_id = client_id
        self.key = key
        self.requested_scope = scope
        self.base_url = base_url
        self._token_url = token_url
        self._http = http
        self._clock = clock
        self._margin = margin
        self._lifetime = assertion_lifetime
        self._send: TokenSender = send or (lambda build: http.send(build()))
        self._config: SmartConfiguration | None = None
        self._scope: str | None = None
        self._current: AccessToken | None = None
        self._lock = threading.Lock()
        #: Tokens fetched so far (for logs and tests).
        self.fetched = 0

    @property
    def configuration(self) -> SmartConfiguration | None:
        return self._config

    def _prepare(self) -> tuple[str, str]:
        if self._token_url is None or self._scope is None:
            if self._token_url is None:
                assert self.base_url is not None
                self._config = discover(self._http, self.base_url)
                self._config.check_backend_services(self.key)
                self._token_url = self._config.token_endpoint
            self._scope = adapt_scopes(self.requested_scope, self._config)
        return self._token_url, self._scope

    def token(self) -> str:
        """A valid access token, fetching a new one when none is cached or it is due."""
        with self._lock:
            current = self._current
            if current is None or self._clock() >= current.renew_at:
                current = self._current = self._fetch()
            return current.value

    def invalidate(self, value: str) -> None:
        """Forget ``value`` (the server refused it) so the next :meth:`token` fetches anew."""
        with self._lock:
            if self._current is not None and self._current.value == value:
                self._current = None

    @property
    def current(self) -> AccessToken | None:
        return self._current

    def _fetch(self) -> AccessToken:
        token_url, scope = self._prepare()

        def build() -> httpx.Request:
            assertion = client_assertion(
                self.client_id, token_url, self.key, now=self._clock(), lifetime=self._lifetime
            )
            form = {
                "grant_type": "client_credentials",
                "scope": scope,
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": assertion,
            }
            return self._http.build_request(
                "POST", token_url, data=form, headers={"Accept": "application/json"}
            )

        try:
            response = self._send(build)
        except httpx.HTTPError as exc:
            raise RemoteError(f"token endpoint {token_url}: {exc.__class__.__name__}: {exc}") from exc
        issued = self._clock()
        body = _json_object(response)
        if response.status_code != 200:
            raise _token_error(token_url, response.status_code, body, response.text, self.client_id, scope)
        value = body.get("access_token") if body else None
        token_type = body.get("token_type") if body else None
        if not isinstance(value, str) or not value:
            raise RemoteError(f"token endpoint {token_url}: the answer has no access_token")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise RemoteError(f"token endpoint {token_url}: token_type {token_type!r}, expected bearer")
        expires_in = body.get("expires_in") if body else None
        lifetime = (
            float(expires_in)
            if isinstance(expires_in, int | float) and not isinstance(expires_in, bool) and expires_in > 0
            else float(DEFAULT_EXPIRES_IN)
        )
        granted = body.get("scope") if body else None
        self.fetched += 1
        expires_at = issued + timedelta(seconds=lifetime)
        renew_at = expires_at - timedelta(seconds=min(self._margin, lifetime / 2))
        return AccessToken(
            value=value,
            expires_at=expires_at,
            scope=granted if isinstance(granted, str) else scope,
            renew_at=renew_at,
        )


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    try:
        value = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


_HINTS = {
    "invalid_client": (
        "the server did not accept the client assertion: check --client-id, that --key/--kid name the "
        "private key whose public key is registered for this client, and the clocks"
    ),
    "invalid_scope": "ask for scopes the client is pre-authorised for (--scope)",
    "unauthorized_client": "the client is not allowed the client_credentials grant on this server",
}


def _token_error(
    url: str, status: int, body: dict[str, Any] | None, text: str, client_id: str, scope: str
) -> RemoteError:
    error = body.get("error") if body else None
    if isinstance(error, str):
        description = body.get("error_description") if body else None
        detail = f"{error}" + (f" ({description})" if isinstance(description, str) and description else "")
        hint = _HINTS.get(error)
        return RemoteError(
            f"token endpoint {url} refused client {client_id!r} (scope {scope!r}): HTTP {status} {detail}"
            + (f"; {hint}" if hint else ""),
            status=status,
        )
    snippet = " ".join(text.split())[:200]
    return RemoteError(f"token endpoint {url}: HTTP {status}: {snippet or 'no body'}", status=status)


class SmartAuth(httpx.Auth):
    """Adds ``Authorization: Bearer …`` ("Backend Services" § "Access FHIR API"); on a 401 it
    drops the token, gets a new one and sends the request once more."""

    def __init__(self, tokens: BackendServicesClient) -> None:
        self.tokens = tokens

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self.tokens.token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            self.tokens.invalidate(token)
            request.headers["Authorization"] = f"Bearer {self.tokens.token()}"
            yield request


__all__ = [
    "ASSERTION_TYPE",
    "AccessToken",
    "BackendServicesClient",
    "SigningKey",
    "SmartAuth",
    "SmartConfiguration",
    "adapt_scopes",
    "client_assertion",
    "discover",
    "load_signing_key",
    "scope_syntax",
    "server_syntaxes",
    "signing_key_from_jwk",
    "signing_key_from_pem",
    "to_v1",
    "to_v2",
]
