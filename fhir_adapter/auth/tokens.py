"""The token service: checks SMART Backend Services client assertions and issues access tokens.

SMART App Launch 2.2:

- "Client Authentication: Asymmetric (public key)", § "Authenticating to the Token endpoint":
  the assertion is a JWT signed by the client (header ``alg``, ``kid``, ``typ`` = ``JWT``,
  optional ``jku``; claims ``iss`` = ``sub`` = client id, ``aud`` = the token URL, ``exp`` no
  more than five minutes ahead, ``jti`` a nonce); § "Signature Verification": validate per
  RFC 7523 §3, refuse a ``jti`` already seen for that ``iss`` within the assertion's lifetime,
  accept a ``jku`` only when it is the registered JWK Set URL, pick the single key whose ``kid``
  matches and whose ``kty`` fits ``alg``; any failure is ``invalid_client``.
- "Backend Services", § "Obtain access token": grant ``client_credentials``; § "Evaluate
  Requested Access": grant only pre-authorised scopes; § "Issue Access Token": ``access_token``,
  ``token_type`` = ``bearer``, ``expires_in`` (SHOULD NOT exceed 300), ``scope``; no refresh
  tokens; errors per RFC 6749 §5.2.

Only ``RS384`` and ``ES384`` signatures are accepted, checked here by name before PyJWT sees the
token: ``none`` and the ``HS*`` family (where a public key could be misused as a shared secret)
are refused explicitly.

Access tokens are the server's own JWTs (HS256 with the server secret, ``typ`` ``at+jwt`` as in
RFC 9068), carrying the client id, role, source, CCOs and granted scopes, so any worker on the
same store verifies them without a lookup; the client registry is still read on each request so
a revocation takes effect at once. The secret comes from ``Settings.auth_token_secret`` or, when
unset, is generated once and kept in ``store_meta`` (shared by every worker).

Seen ``jti`` values live in table ``auth_jti`` (primary key client id + jti) until their
``exp`` plus the leeway: a second insert is a replay, also across workers on one store.
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import httpx
import jwt
import orjson
from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError

from fhir_adapter.auth.clients import SIGNING_ALGS, Client, check_jwks, get_client, key_algorithm
from fhir_adapter.auth.scopes import ScopeSet, grant
from fhir_adapter.errors import AuthenticationError, InvalidDataError, OAuthError, UsageError
from fhir_adapter.ingest.runner import Clock
from fhir_adapter.settings import Settings
from fhir_adapter.store.db import Store
from fhir_adapter.store.schema import auth_jti, store_meta

log = logging.getLogger("fhir_adapter.auth")

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
GRANT_TYPE = "client_credentials"
#: SMART 2.2: an assertion's ``exp`` SHALL be no more than five minutes in the future.
MAX_ASSERTION_SECONDS = 300
MAX_JTI_CHARS = 256
ACCESS_TOKEN_ALG = "HS256"
ISSUER = "fhir-adapter"
AUDIENCE = "fhir-adapter-api"
SECRET_META_KEY = "auth_token_secret"
MIN_SECRET_BYTES = 32
#: Longest a fetched JWK Set is kept (shorter when the client's Cache-Control says so).
JWKS_CACHE_SECONDS = 300.0
#: An unknown ``kid`` refetches a JWK Set URL at most this often (a rotation shows at once,
#: and random kids cannot make the server hammer the client).
JWKS_REFETCH_SECONDS = 10.0
JWKS_MAX_BYTES = 256 * 1024
JWKS_TIMEOUT_SECONDS = 5.0
REALM = "fhir-adapter"


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_in: int
    scope: str

    def to_json(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "token_type": "bearer",
            "expires_in": self.expires_in,
            "scope": self.scope,
        }


@dataclass(frozen=True)
class Identity:
    """Who a valid access token speaks for."""

    client_id: str
    role: str
    source: str
    ccos: tuple[str, ...]
    scopes: ScopeSet
    expires_at: int


def _invalid_client(message: str) -> NoReturn:
    raise OAuthError("invalid_client", message)


# -- JWK Set URLs -----------------------------------------------------------------------------

_MAX_AGE = re.compile(r"max-age\s*=\s*(\d+)", re.IGNORECASE)


def cache_seconds(cache_control: str | None) -> float:
    """How long a JWK Set may be kept: SMART 2.2 "SHALL NOT cache a JWKS for longer than the
    client's cache-control header indicates", and never longer than :data:`JWKS_CACHE_SECONDS`."""
    if not cache_control:
        return JWKS_CACHE_SECONDS
    lowered = cache_control.lower()
    if "no-store" in lowered or "no-cache" in lowered:
        return 0.0
    match = _MAX_AGE.search(cache_control)
    return min(JWKS_CACHE_SECONDS, float(match.group(1))) if match else JWKS_CACHE_SECONDS


class JwksCache:
    """Fetched JWK Sets by URL (a GET with ``Accept: application/json``, SMART 2.2), each checked
    like a registered set (public RS384/ES384 keys only)."""

    def __init__(
        self, http: httpx.Client | None = None, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._http = http
        self._monotonic = monotonic
        self._lock = threading.Lock()
        #: url → (keys, fetched at, keep until)
        self._sets: dict[str, tuple[list[dict[str, Any]], float, float]] = {}

    def keys(self, url: str, *, refresh: bool = False) -> list[dict[str, Any]]:
        now = self._monotonic()
        with self._lock:
            cached = self._sets.get(url)
        if cached is not None:
            keys, fetched, until = cached
            fresh_enough = now < until and not (refresh and now - fetched >= JWKS_REFETCH_SECONDS)
            if fresh_enough:
                return keys
        keys, ttl = self._fetch(url)
        with self._lock:
            self._sets[url] = (keys, now, now + ttl)
        return keys

    def _fetch(self, url: str) -> tuple[list[dict[str, Any]], float]:
        http = self._http or httpx.Client(timeout=JWKS_TIMEOUT_SECONDS)
        try:
            with http.stream(
                "GET", url, headers={"Accept": "application/json"}, follow_redirects=False
            ) as response:
                if response.status_code != 200:
                    _invalid_client(f"the registered JWK Set URL answered HTTP {response.status_code}")
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > JWKS_MAX_BYTES:
                        _invalid_client(
                            f"the JWK Set at the registered URL is larger than {JWKS_MAX_BYTES} bytes"
                        )
                ttl = cache_seconds(response.headers.get("cache-control"))
        except httpx.HTTPError as exc:
            _invalid_client(f"the registered JWK Set URL could not be fetched ({exc.__class__.__name__})")
        finally:
            if self._http is None:
                http.close()
        try:
            jwks = check_jwks(orjson.loads(bytes(body)), where=url)
        except orjson.JSONDecodeError:
            _invalid_client("the registered JWK Set URL did not answer JSON")
        except InvalidDataError as exc:
            _invalid_client(f"the JWK Set at the registered URL is unusable: {exc}")
        keys: list[dict[str, Any]] = jwks["keys"]
        return keys, ttl


# -- the server secret ------------------------------------------------------------------------


def server_secret(settings: Settings, store: Store) -> bytes:
    """The access-token key: ``auth_token_secret`` when set, else the one kept in the store
    (generated at the first start; concurrent first starts agree on one)."""
    if settings.auth_token_secret is not None:
        value = settings.auth_token_secret.get_secret_value().encode()
        if len(value) < MIN_SECRET_BYTES:
            raise UsageError(f"auth_token_secret must be at least {MIN_SECRET_BYTES} bytes")
        return value
    query = select(store_meta.c.value).where(store_meta.c.key == SECRET_META_KEY)
    with store.read() as conn:
        found = conn.execute(query).scalar()
    if found is None:
        try:
            with store.write() as conn:
                conn.execute(insert(store_meta).values(key=SECRET_META_KEY, value=secrets.token_urlsafe(48)))
        except IntegrityError:
            pass  # another worker stored one first: use that
        with store.read() as conn:
            found = conn.execute(query).scalar()
    assert found is not None
    return str(found).encode()


# -- the token service ------------------------------------------------------------------------


class TokenService:
    """Issues access tokens at ``POST /auth/token`` and verifies them on API requests."""

    def __init__(
        self, settings: Settings, store: Store, clock: Clock, *, http: httpx.Client | None = None
    ) -> None:
        self.store = store
        self.clock = clock
        self.ttl = settings.auth_token_ttl_seconds
        self.leeway = settings.auth_leeway_seconds
        self._secret = server_secret(settings, store)
        self.jwks = JwksCache(http)

    def _now(self) -> int:
        return int(self.clock().timestamp())

    # -- token endpoint ---------------------------------------------------------------------
    def issue(self, params: Mapping[str, str], token_url: str) -> IssuedToken:
        """Answer a token request (form parameters already parsed); :class:`OAuthError` with
        the RFC 6749 §5.2 code otherwise."""
        grant_type = params.get("grant_type")
        if not grant_type:
            raise OAuthError("invalid_request", "grant_type is required")
        if grant_type != GRANT_TYPE:
            raise OAuthError(
                "unsupported_grant_type", f"grant_type {grant_type!r}: only {GRANT_TYPE} is supported"
            )
        assertion_type = params.get("client_assertion_type")
        assertion = params.get("client_assertion")
        if not assertion_type and not assertion:
            _invalid_client(
                "no client authentication: send client_assertion_type and client_assertion (private_key_jwt)"
            )
        if not assertion_type:
            raise OAuthError("invalid_request", "client_assertion_type is required")
        if assertion_type != ASSERTION_TYPE:
            _invalid_client(f"client_assertion_type must be {ASSERTION_TYPE}")
        if not assertion:
            raise OAuthError("invalid_request", "client_assertion is required")
        requested = params.get("scope")
        if not requested or not requested.strip():
            raise OAuthError("invalid_request", "scope is required (for example system/*.rs)")
        client = self.verify_assertion(assertion, token_url, client_id=params.get("client_id"))
        try:
            granted, scope_text = grant(requested, client.scopes)
        except UsageError as exc:
            raise OAuthError("invalid_scope", exc.message) from exc
        if not granted:
            raise OAuthError(
                "invalid_scope",
                f"none of the requested scopes is allowed for this client (allowed: {client.scopes.render()})",
            )
        return self.mint(client, scope_text)

    def verify_assertion(self, assertion: str, token_url: str, *, client_id: str | None = None) -> Client:
        """The registered, active client whose valid, unused assertion this is; otherwise
        :class:`OAuthError` ``invalid_client``. ``token_url`` is the exact ``aud`` required."""
        try:
            header = jwt.get_unverified_header(assertion)
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            _invalid_client("client_assertion is not a well-formed JWT")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg.lower() == "none":
            _invalid_client("unsigned client assertions (alg 'none') are refused")
        if alg.upper().startswith("HS"):
            _invalid_client(f"alg {alg}: shared-secret signatures are refused; sign with RS384 or ES384")
        if alg not in SIGNING_ALGS:
            _invalid_client(f"alg {alg!r} is not accepted; sign with RS384 or ES384")
        typ = header.get("typ")
        if typ is not None and str(typ).upper() != "JWT":
            _invalid_client(f"header typ {typ!r}: a client assertion has typ JWT")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            _invalid_client("the assertion header needs the kid of the signing key")
        iss, sub = unverified.get("iss"), unverified.get("sub")
        if not isinstance(iss, str) or not iss:
            _invalid_client("claim iss (the client id) is required")
        if sub != iss:
            _invalid_client("claims iss and sub must both be the client id")
        if client_id is not None and client_id != iss:
            _invalid_client("client_id does not match the assertion's iss")
        client = get_client(self.store, iss)
        if client is None or client.revoked:
            log.warning("token request refused: unknown or revoked client %.128r", iss)
            _invalid_client("unknown or revoked client")
        jku = header.get("jku")
        if jku is not None and jku != client.jwks_url:
            _invalid_client("header jku is not the JWK Set URL registered for this client")
        key = self._key(client, kid, alg)
        try:
            claims = jwt.decode(
                assertion,
                key,
                algorithms=[alg],
                audience=token_url,
                issuer=iss,
                options={
                    "require": ["iss", "sub", "aud", "exp", "jti"],
                    "verify_exp": False,  # checked below against the injected clock
                    "verify_nbf": False,
                    "verify_iat": False,
                    "strict_aud": True,
                },
            )
        except jwt.InvalidSignatureError:
            _invalid_client(f"the signature does not verify with key {kid!r}")
        except jwt.MissingRequiredClaimError as exc:
            _invalid_client(f"claim {exc.claim} is required")
        except jwt.InvalidAudienceError:
            _invalid_client(f"aud must be the token URL {token_url}")
        except jwt.PyJWTError as exc:
            _invalid_client(f"invalid client assertion: {exc}")
        now = self._now()
        exp = _number(claims.get("exp"), "exp")
        if exp + self.leeway < now:
            _invalid_client("the client assertion has expired")
        if exp > now + MAX_ASSERTION_SECONDS + self.leeway:
            _invalid_client(f"exp is more than {MAX_ASSERTION_SECONDS} seconds ahead")
        for name in ("nbf", "iat"):
            if name in claims and _number(claims[name], name) > now + self.leeway:
                _invalid_client(f"{name} is in the future")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_CHARS:
            _invalid_client(f"jti must be a non-empty string of at most {MAX_JTI_CHARS} characters")
        self._use_jti(client.client_id, jti, int(exp) + self.leeway, now)
        return client

    def _key(self, client: Client, kid: str, alg: str) -> Any:
        """SMART 2.2 § "Signature Verification" steps 1–3: the one key with this ``kid`` whose
        ``kty`` fits ``alg``, from the registered set or the registered URL."""
        if client.jwks is not None:
            keys: list[dict[str, Any]] = client.jwks["keys"]
            found = _candidates(keys, kid, alg)
        else:
            assert client.jwks_url is not None
            found = _candidates(self.jwks.keys(client.jwks_url), kid, alg)
            if not found:  # perhaps rotated since it was cached
                found = _candidates(self.jwks.keys(client.jwks_url, refresh=True), kid, alg)
        if len(found) != 1:
            _invalid_client(
                f"no registered {alg} key has kid {kid!r}"
                if not found
                else f"several registered keys have kid {kid!r}"
            )
        return jwt.PyJWK(found[0], algorithm=alg).key

    def _use_jti(self, client_id: str, jti: str, expires_at: int, now: int) -> None:
        try:
            with self.store.write() as conn:
                conn.execute(delete(auth_jti).where(auth_jti.c.expires_at < now))
                conn.execute(insert(auth_jti).values(client_id=client_id, jti=jti, expires_at=expires_at))
        except IntegrityError:
            log.warning("token request refused: replayed jti for client %r", client_id)
            _invalid_client("this jti was already used: client assertions are single-use")

    def mint(self, client: Client, scope: str) -> IssuedToken:
        now = self._now()
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": client.client_id,
            "role": client.role,
            "source": client.source,
            "ccos": list(client.ccos),
            "scope": scope,
            "iat": now,
            "exp": now + self.ttl,
            "jti": secrets.token_urlsafe(16),
        }
        token = jwt.encode(claims, self._secret, algorithm=ACCESS_TOKEN_ALG, headers={"typ": "at+jwt"})
        return IssuedToken(token, self.ttl, scope)

    # -- resource server --------------------------------------------------------------------
    def verify_access_token(self, token: str) -> Identity:
        """The identity of a valid, unexpired token of this server whose client is still
        active; :class:`AuthenticationError` (401, RFC 6750 ``invalid_token``) otherwise."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            _invalid_token("the access token is not a JWT issued by this server")
        if header.get("alg") != ACCESS_TOKEN_ALG:
            _invalid_token("the access token is not a JWT issued by this server")
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ACCESS_TOKEN_ALG],
                audience=AUDIENCE,
                issuer=ISSUER,
                options={
                    "require": ["iss", "aud", "sub", "exp", "scope"],
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "strict_aud": True,
                },
            )
        except jwt.PyJWTError:
            _invalid_token("the access token is not valid")
        exp = int(_number(claims.get("exp"), "exp", token_error=True))
        if exp + self.leeway <= self._now():
            _invalid_token("the access token has expired; request a new one")
        client = get_client(self.store, str(claims["sub"]))
        if client is None or client.revoked:
            _invalid_token("the client of this access token is revoked")
        try:
            scopes = ScopeSet.parse(str(claims["scope"]))
        except UsageError:
            _invalid_token("the access token is not valid")
        return Identity(
            client_id=client.client_id,
            role=str(claims.get("role", client.role)),
            source=str(claims.get("source", client.source)),
            ccos=tuple(str(c) for c in claims.get("ccos", ())),
            scopes=scopes,
            expires_at=exp,
        )


def _candidates(keys: list[dict[str, Any]], kid: str, alg: str) -> list[dict[str, Any]]:
    return [k for k in keys if k.get("kid") == kid and key_algorithm(k) == alg]


def _number(value: object, name: str, *, token_error: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        if token_error:
            _invalid_token("the access token is not valid")
        _invalid_client(f"claim {name} must be a number (seconds since the epoch)")
    return float(value)


def challenge(error: str | None = None, description: str | None = None, scope: str | None = None) -> str:
    """A ``WWW-Authenticate: Bearer`` challenge (RFC 6750 §3): no error code when the request
    carried no token (§3.1)."""
    parts = [f'realm="{REALM}"']
    if error:
        parts.append(f'error="{error}"')
    if description:
        parts.append('error_description="{}"'.format(re.sub(r'["\\\x00-\x1f\x7f-\uffff]', "", description)))
    if scope:
        parts.append(f'scope="{scope}"')
    return "Bearer " + ", ".join(parts)


def _invalid_token(message: str) -> NoReturn:
    raise AuthenticationError(message, headers={"WWW-Authenticate": challenge("invalid_token", message)})


__all__ = [
    "ASSERTION_TYPE",
    "GRANT_TYPE",
    "MAX_ASSERTION_SECONDS",
    "Identity",
    "IssuedToken",
    "JwksCache",
    "TokenService",
    "cache_seconds",
    "challenge",
    "server_secret",
]
