"""Client assertions (SMART App Launch 2.2 client-confidential-asymmetric) and access tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from pydantic import SecretStr, ValidationError
from sqlalchemy import func, select

from fhir_adapter.auth.clients import Registration, register, revoke, set_keys
from fhir_adapter.auth.tokens import (
    JWKS_CACHE_SECONDS,
    JWKS_REFETCH_SECONDS,
    JwksCache,
    TokenService,
    cache_seconds,
    server_secret,
)
from fhir_adapter.errors import AuthenticationError, OAuthError, UsageError
from fhir_adapter.settings import Settings
from fhir_adapter.store.db import Store
from fhir_adapter.store.schema import auth_jti
from tests.conftest import StoreFactory, make_store_factory
from tests.smart import TOKEN_URL, KeyPair, assertion, jwks, key_pair, token_form

T0 = datetime(2026, 2, 1, 12, 0, tzinfo=UTC)
ES, RS = key_pair("ES384", "es-1"), key_pair("RS384", "rs-1")


class FakeClock:
    def __init__(self, at: datetime = T0) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)

    @property
    def ts(self) -> float:
        return self.at.timestamp()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _register(store: Store, client_id: str = "ehr-1", *, scopes: tuple[str, ...] = (), **kw: Any) -> None:
    kw.setdefault("jwks", jwks(ES, RS))
    register(
        store,
        Registration(client_id=client_id, role="ehr", source=f"{client_id}-src", scopes=scopes, **kw),
        known_ccos=(),
        now=T0,
    )


@pytest.fixture
def sqlite_store(tmp_path: Path, pg_schemas: list[str]) -> Iterator[Store]:
    """For checks whose database use is the same as the success path's: one engine is enough."""
    store = make_store_factory("sqlite", tmp_path, pg_schemas)()
    yield store
    store.close()


def _service(settings: Settings, store: Store, clock: FakeClock, **kw: Any) -> TokenService:
    return TokenService(settings, store, clock, **kw)


def _seg(part: bytes) -> bytes:
    return base64.urlsafe_b64encode(part).rstrip(b"=")


def _hs256(secret: bytes, header: dict[str, Any], claims: dict[str, Any]) -> str:
    """Signed by hand: PyJWT itself refuses a PEM key as an HMAC secret."""
    signing_input = _seg(json.dumps(header).encode()) + b"." + _seg(json.dumps(claims).encode())
    signature = _seg(hmac.new(secret, signing_input, hashlib.sha256).digest())
    return (signing_input + b"." + signature).decode()


def _unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return (_seg(json.dumps(header).encode()) + b"." + _seg(json.dumps(claims).encode()) + b".").decode()


def _claims(now: float, client_id: str = "ehr-1") -> dict[str, Any]:
    return {"iss": client_id, "sub": client_id, "aud": TOKEN_URL, "exp": int(now) + 60, "jti": "j-1"}


def _public_pem(key: KeyPair) -> bytes:
    pem: bytes = key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem


# -- success ----------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [pytest.param(RS, id="RS384"), pytest.param(ES, id="ES384")])
def test_valid_assertion_gets_a_short_lived_token(
    settings: Settings, store: Store, clock: FakeClock, key: KeyPair
) -> None:
    _register(store)
    service = _service(settings, store, clock)
    issued = service.issue(token_form(assertion(key, "ehr-1", now=clock.ts), "system/*.rs"), TOKEN_URL)
    assert issued.to_json()["token_type"] == "bearer"
    assert issued.expires_in == settings.auth_token_ttl_seconds <= 300
    assert issued.scope == "system/*.rs"
    claims = jwt.decode(issued.access_token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == issued.expires_in
    identity = service.verify_access_token(issued.access_token)
    assert (identity.client_id, identity.role, identity.source) == ("ehr-1", "ehr", "ehr-1-src")
    assert identity.scopes.allows("Encounter", "r") and not identity.scopes.allows("Encounter", "c")


def test_token_ttl_is_at_most_five_minutes(settings: Settings, sqlite_store: Store, clock: FakeClock) -> None:
    with pytest.raises(ValidationError, match="auth_token_ttl_seconds"):
        Settings(auth_token_ttl_seconds=301)
    short = settings.model_copy(update={"auth_token_ttl_seconds": 60})
    _register(sqlite_store)
    issued = _service(short, sqlite_store, clock).issue(
        token_form(assertion(ES, "ehr-1", now=clock.ts)), TOKEN_URL
    )
    assert issued.expires_in == 60


# -- refused assertions -----------------------------------------------------------------------

Make = Callable[[float], str]

REFUSED: list[Any] = [
    pytest.param(
        lambda now: _unsigned({"alg": "none", "kid": "es-1", "typ": "JWT"}, _claims(now)),
        "alg 'none'",
        id="alg-none",
    ),
    pytest.param(
        lambda now: _hs256(_public_pem(RS), {"alg": "HS256", "kid": "rs-1", "typ": "JWT"}, _claims(now)),
        "shared-secret",
        id="hs256-with-public-key-as-secret",
    ),
    pytest.param(
        lambda now: jwt.encode(_claims(now), RS.private, algorithm="RS256", headers={"kid": "rs-1"}),
        "not accepted",
        id="rs256",
    ),
    pytest.param(
        lambda now: assertion(key_pair("ES384", "unknown-kid"), "ehr-1", now=now),
        "no registered",
        id="wrong-kid",
    ),
    pytest.param(
        lambda now: assertion(key_pair("ES384", "other"), "ehr-1", now=now, headers={"kid": "es-1"}),
        "does not verify",
        id="signed-by-another-key",
    ),
    pytest.param(
        lambda now: jwt.encode(_claims(now), ES.private, algorithm="ES384", headers={"kid": "rs-1"}),
        "no registered ES384 key",
        id="kid-of-a-key-of-another-type",
    ),
    pytest.param(
        lambda now: assertion(ES, "ehr-1", now=now, aud="https://elsewhere.example/auth/token"),
        "aud must be",
        id="wrong-aud",
    ),
    pytest.param(
        lambda now: assertion(ES, "ehr-1", now=now, aud="http://testserver/auth/token/"),
        "aud must be",
        id="aud-not-exact",
    ),
    pytest.param(lambda now: assertion(ES, "ehr-1", now=now, aud=[TOKEN_URL]), "aud", id="aud-as-list"),
    pytest.param(
        lambda now: assertion(ES, "ehr-1", now=now, claims={"sub": "ehr-2"}), "iss and sub", id="iss-not-sub"
    ),
    pytest.param(
        lambda now: assertion(ES, "ehr-1", now=now, lifetime=400), "more than 300", id="exp-too-far"
    ),
    pytest.param(lambda now: assertion(ES, "ehr-1", now=now - 200, lifetime=100), "expired", id="expired"),
    pytest.param(lambda now: assertion(ES, "ehr-1", now=now, drop=("exp",)), "claim exp", id="missing-exp"),
    pytest.param(lambda now: assertion(ES, "ehr-1", now=now, drop=("jti",)), "claim jti", id="missing-jti"),
    pytest.param(
        lambda now: assertion(ES, "ehr-1", now=now, claims={"jti": 7}), "JWT ID|jti must", id="numeric-jti"
    ),
    pytest.param(lambda now: assertion(ES, "ehr-1", now=now, claims={"jti": ""}), "jti must", id="empty-jti"),
    pytest.param(
        lambda now: assertion(ES, "ehr-1", now=now, claims={"jti": "j" * 257}), "jti must", id="long-jti"
    ),
    pytest.param(
        lambda now: assertion(ES, "ehr-1", now=now, claims={"nbf": int(now) + 120}), "nbf", id="not-yet-valid"
    ),
    pytest.param(
        lambda now: assertion(ES, "ehr-1", now=now, headers={"typ": "at+jwt"}), "typ", id="wrong-typ"
    ),
    pytest.param(
        lambda now: assertion(ES, "ehr-1", now=now, headers={"jku": "https://evil.example/jwks"}),
        "jku",
        id="jku-not-registered",
    ),
    pytest.param(lambda now: assertion(ES, "nobody", now=now), "unknown or revoked", id="unknown-client"),
    pytest.param(lambda now: "not.a.jwt", "well-formed", id="garbage"),
]


@pytest.mark.parametrize(("make", "words"), REFUSED)
def test_refused_assertions_are_invalid_client(
    settings: Settings, sqlite_store: Store, clock: FakeClock, make: Make, words: str
) -> None:
    _register(sqlite_store)
    service = _service(settings, sqlite_store, clock)
    with pytest.raises(OAuthError, match=words) as caught:
        service.issue(token_form(make(clock.ts)), TOKEN_URL)
    assert (caught.value.error, caught.value.http_status) == ("invalid_client", 401)


def test_leeway_tolerates_small_skew(settings: Settings, sqlite_store: Store, clock: FakeClock) -> None:
    _register(sqlite_store)
    service = _service(settings.model_copy(update={"auth_leeway_seconds": 30}), sqlite_store, clock)
    late = assertion(ES, "ehr-1", now=clock.ts - 80, lifetime=60)  # expired 20 s ago
    assert service.issue(token_form(late), TOKEN_URL).access_token
    ahead = assertion(ES, "ehr-1", now=clock.ts + 20, lifetime=300)  # 320 s ahead
    assert service.issue(token_form(ahead), TOKEN_URL).access_token


def test_revoked_client_is_refused(settings: Settings, store: Store, clock: FakeClock) -> None:
    _register(store)
    service = _service(settings, store, clock)
    token = service.issue(token_form(assertion(ES, "ehr-1", now=clock.ts)), TOKEN_URL).access_token
    revoke(store, "ehr-1", now=T0)
    with pytest.raises(OAuthError, match="unknown or revoked"):
        service.issue(token_form(assertion(ES, "ehr-1", now=clock.ts)), TOKEN_URL)
    with pytest.raises(AuthenticationError, match="revoked"):
        service.verify_access_token(token)


# -- replay -----------------------------------------------------------------------------------


def test_jti_is_single_use_across_workers(
    settings: Settings, store_factory: StoreFactory, clock: FakeClock
) -> None:
    """Two token services on one database (two workers): a jti used at one is refused at both."""
    first = store_factory()
    _register(first)
    url = first.engine.url.render_as_string(hide_password=False)
    second = Store.open(url, tz=first.tz, member_system=first.member_system)
    try:
        one, two = _service(settings, first, clock), _service(settings, second, clock)
        signed = assertion(ES, "ehr-1", now=clock.ts, claims={"jti": "once"})
        assert one.issue(token_form(signed), TOKEN_URL)
        for service in (one, two):
            with pytest.raises(OAuthError, match="already used") as caught:
                service.issue(token_form(signed), TOKEN_URL)
            assert caught.value.error == "invalid_client"
        # the same jti from another client is another nonce (SMART: "for the given iss")
        _register(first, "ehr-2")
        assert two.issue(token_form(assertion(ES, "ehr-2", now=clock.ts, claims={"jti": "once"})), TOKEN_URL)
    finally:
        second.close()


def test_expired_jtis_are_purged(settings: Settings, store: Store, clock: FakeClock) -> None:
    _register(store)
    service = _service(settings, store, clock)
    service.issue(token_form(assertion(ES, "ehr-1", now=clock.ts, lifetime=60)), TOKEN_URL)
    clock.advance(60 + settings.auth_leeway_seconds + 1)
    service.issue(token_form(assertion(ES, "ehr-1", now=clock.ts, lifetime=60)), TOKEN_URL)
    with store.read() as conn:
        assert conn.execute(select(func.count()).select_from(auth_jti)).scalar() == 1


# -- scopes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("allowed", "requested", "answer"),
    [
        pytest.param(("system/*.rs",), "system/*.read", "system/*.read", id="v1-request"),
        pytest.param(
            ("system/MeasureReport.rs",), "system/*.rs", "system/MeasureReport.rs", id="v2-narrowed"
        ),
        pytest.param(
            ("system/*.cruds",),
            "system/Encounter.cu system/Patient.rs",
            "system/Encounter.cu system/Patient.rs",
            id="v2-several",
        ),
        pytest.param(("system/*.*",), "system/*.write", "system/*.write", id="v1-write"),
    ],
)
def test_granted_scope_is_requested_and_allowed(
    settings: Settings,
    sqlite_store: Store,
    clock: FakeClock,
    allowed: tuple[str, ...],
    requested: str,
    answer: str,
) -> None:
    _register(sqlite_store, scopes=allowed)
    issued = _service(settings, sqlite_store, clock).issue(
        token_form(assertion(ES, "ehr-1", now=clock.ts), requested), TOKEN_URL
    )
    assert issued.scope == answer


@pytest.mark.parametrize(
    ("requested", "words"),
    [
        pytest.param("system/Encounter.c", "none of the requested scopes", id="nothing-allowed"),
        pytest.param("system/Observation.rs?category=laboratory", "granular", id="granular"),
        pytest.param("patient/*.read", "only system/", id="patient-scope"),
    ],
)
def test_invalid_scope(
    settings: Settings, sqlite_store: Store, clock: FakeClock, requested: str, words: str
) -> None:
    _register(sqlite_store, scopes=("system/*.rs",))
    with pytest.raises(OAuthError, match=words) as caught:
        _service(settings, sqlite_store, clock).issue(
            token_form(assertion(ES, "ehr-1", now=clock.ts), requested), TOKEN_URL
        )
    assert (caught.value.error, caught.value.http_status) == ("invalid_scope", 400)


# -- key rotation -----------------------------------------------------------------------------


def test_rotation_old_key_works_until_removed(settings: Settings, store: Store, clock: FakeClock) -> None:
    old, new = key_pair("ES384", "2025"), key_pair("RS384", "2026")
    _register(store, jwks=jwks(old))
    service = _service(settings, store, clock)

    def works(key: KeyPair) -> bool:
        try:
            service.issue(token_form(assertion(key, "ehr-1", now=clock.ts)), TOKEN_URL)
        except OAuthError:
            return False
        return True

    assert (works(old), works(new)) == (True, False)
    set_keys(store, "ehr-1", now=T0, jwks=jwks(old, new))
    assert (works(old), works(new)) == (True, True)
    set_keys(store, "ehr-1", now=T0, jwks=jwks(new))
    assert (works(old), works(new)) == (False, True)


# -- JWK Set URLs -----------------------------------------------------------------------------

JWKS_URL = "https://ehr.example/.well-known/jwks.json"


class KeyHost:
    """The client's JWK Set URL, as an in-memory transport that counts fetches."""

    def __init__(self, *keys: KeyPair, cache_control: str | None = None) -> None:
        self.keys = list(keys)
        self.cache_control = cache_control
        self.fetches = 0
        self.status = 200

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.fetches += 1
        assert request.headers["accept"] == "application/json"
        headers = {"Cache-Control": self.cache_control} if self.cache_control else {}
        return httpx.Response(self.status, json=jwks(*self.keys), headers=headers)

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self))


def test_jwks_url_is_fetched_cached_and_refetched_for_a_new_kid(
    settings: Settings, sqlite_store: Store, clock: FakeClock
) -> None:
    old, new = key_pair("ES384", "2025"), key_pair("ES384", "2026")
    host = KeyHost(old)
    _register(sqlite_store, jwks=None, jwks_url=JWKS_URL)
    service = _service(settings, sqlite_store, clock)
    monotonic = [1000.0]
    service.jwks = JwksCache(host.client(), monotonic=lambda: monotonic[0])

    def issue(key: KeyPair, **kw: Any) -> None:
        service.issue(token_form(assertion(key, "ehr-1", now=clock.ts, **kw)), TOKEN_URL)

    for _ in range(3):
        issue(old)
    assert host.fetches == 1, "cached"
    host.keys = [old, new]  # the client rotates its own keys
    monotonic[0] += JWKS_REFETCH_SECONDS
    issue(new)
    assert host.fetches == 2, "an unknown kid refetches the set"
    issue(new, headers={"jku": JWKS_URL})  # a jku equal to the registered URL is accepted
    with pytest.raises(OAuthError, match="no registered"):
        issue(key_pair("ES384", "random"))
    assert host.fetches == 2, "unknown kids do not refetch more often than every few seconds"
    monotonic[0] += JWKS_CACHE_SECONDS
    issue(old)
    assert host.fetches == 3, "the cache expires"


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        pytest.param({"keys": [ES.private_jwk]}, 200, "unusable", id="private-key-published"),
        pytest.param(jwks(ES), 404, "HTTP 404", id="not-found"),
        pytest.param({"kty": "EC"}, 200, "unusable", id="not-a-set"),
    ],
)
def test_unusable_jwks_url_is_invalid_client(
    settings: Settings, sqlite_store: Store, clock: FakeClock, body: dict[str, Any], status: int, words: str
) -> None:
    _register(sqlite_store, jwks=None, jwks_url=JWKS_URL)
    http = httpx.Client(transport=httpx.MockTransport(lambda _request: httpx.Response(status, json=body)))
    with pytest.raises(OAuthError, match=words) as caught:
        _service(settings, sqlite_store, clock, http=http).issue(
            token_form(assertion(ES, "ehr-1", now=clock.ts)), TOKEN_URL
        )
    assert caught.value.error == "invalid_client"


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        pytest.param(None, 300.0, id="absent"),
        pytest.param("max-age=60", 60.0, id="max-age"),
        pytest.param("public, max-age=86400", 300.0, id="capped"),
        pytest.param("no-store", 0.0, id="no-store"),
        pytest.param("no-cache, max-age=60", 0.0, id="no-cache"),
    ],
)
def test_jwks_cache_follows_cache_control(header: str | None, seconds: float) -> None:
    assert cache_seconds(header) == seconds


# -- access tokens ----------------------------------------------------------------------------


def test_expired_or_foreign_access_tokens_are_refused(
    settings: Settings, store: Store, clock: FakeClock, tmp_path: Path, pg_schemas: list[str]
) -> None:
    _register(store)
    service = _service(settings, store, clock)
    token = service.issue(token_form(assertion(ES, "ehr-1", now=clock.ts)), TOKEN_URL).access_token
    clock.advance(settings.auth_token_ttl_seconds + settings.auth_leeway_seconds - 1)
    assert service.verify_access_token(token).client_id == "ehr-1"
    clock.advance(1)
    with pytest.raises(AuthenticationError, match="expired") as caught:
        service.verify_access_token(token)
    assert caught.value.http_status == 401
    assert 'error="invalid_token"' in caught.value.headers["WWW-Authenticate"]
    # another server (another store, so another generated secret) does not accept it
    (tmp_path / "other").mkdir()
    other = make_store_factory("sqlite", tmp_path / "other", pg_schemas)()
    try:
        _register(other)
        foreign = _service(settings, other, FakeClock()).issue(
            token_form(assertion(ES, "ehr-1", now=T0.timestamp())), TOKEN_URL
        )
        with pytest.raises(AuthenticationError, match="not valid"):
            _service(settings, store, FakeClock()).verify_access_token(foreign.access_token)
    finally:
        other.close()


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(
            lambda t, c: t[:-4] + ("AAAA" if not t.endswith("AAAA") else "BBBB"), id="bad-signature"
        ),
        pytest.param(lambda t, c: _unsigned({"alg": "none", "typ": "at+jwt"}, c), id="alg-none"),
        pytest.param(
            lambda t, c: jwt.encode({**c, "scope": "system/*.cruds"}, "x" * 32, algorithm="HS256"),
            id="guessed-secret",
        ),
        pytest.param(lambda t, c: jwt.encode(c, ES.private, algorithm="ES384"), id="client-signed"),
        pytest.param(lambda t, c: "garbage", id="garbage"),
    ],
)
def test_forged_access_tokens_are_refused(
    settings: Settings, sqlite_store: Store, clock: FakeClock, forge: Callable[[str, dict[str, Any]], str]
) -> None:
    _register(sqlite_store)
    service = _service(settings, sqlite_store, clock)
    token = service.issue(token_form(assertion(ES, "ehr-1", now=clock.ts)), TOKEN_URL).access_token
    claims = jwt.decode(token, options={"verify_signature": False})
    with pytest.raises(AuthenticationError):
        service.verify_access_token(forge(token, claims))


def test_server_secret_is_shared_through_the_store(settings: Settings, store_factory: StoreFactory) -> None:
    first = store_factory()
    url = first.engine.url.render_as_string(hide_password=False)
    second = Store.open(url, tz=first.tz, member_system=first.member_system)
    try:
        generated = server_secret(settings, first)
        assert len(generated) >= 32
        assert server_secret(settings, second) == generated
        configured = settings.model_copy(update={"auth_token_secret": SecretStr("s" * 40)})
        assert server_secret(configured, first) == b"s" * 40
        with pytest.raises(UsageError, match="at least 32"):
            server_secret(settings.model_copy(update={"auth_token_secret": SecretStr("short")}), first)
    finally:
        second.close()
