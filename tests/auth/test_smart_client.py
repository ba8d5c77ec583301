"""SMART Backend Services client: assertions, keys, discovery, token reuse, scopes, errors.

The token endpoint and FHIR server are in-memory (``httpx.MockTransport``); every assertion the
client sends is verified there with the public key, as a real authorisation server would.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from fhir_adapter.auth.smart_client import (
    ASSERTION_TYPE,
    BackendServicesClient,
    SigningKey,
    SmartAuth,
    SmartConfiguration,
    adapt_scopes,
    client_assertion,
    discover,
    load_signing_key,
    scope_syntax,
    to_v1,
    to_v2,
)
from fhir_adapter.errors import RemoteError, UsageError

BASE = "https://ehr.example.org/fhir"
TOKEN_URL = "https://ehr.example.org/auth/token"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _private(alg: str) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    if alg == "RS384":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP384R1())


def _jwk(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, kid: str, *, private: bool = True
) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPrivateKey):
        data = json.loads(RSAAlgorithm.to_jwk(key if private else key.public_key()))
    else:
        data = json.loads(ECAlgorithm.to_jwk(key if private else key.public_key()))
    data["kid"] = kid
    return dict(data)


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture(scope="module", params=["RS384", "ES384"])
def alg(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def keys() -> dict[str, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey]:
    return {"RS384": _private("RS384"), "ES384": _private("ES384")}


def _signing(keys: dict[str, Any], alg: str, kid: str = "k1") -> SigningKey:
    return SigningKey(kid=kid, alg=alg, key=keys[alg])


# -- the assertion ---------------------------------------------------------------------------


def test_assertion_header_and_claims_verify_with_the_public_key(keys: dict[str, Any], alg: str) -> None:
    key = _signing(keys, alg, kid="key-2026")
    token = client_assertion("client-7", TOKEN_URL, key, now=datetime.now(UTC))
    header = jwt.get_unverified_header(token)
    assert header == {"alg": alg, "kid": "key-2026", "typ": "JWT"}
    claims = jwt.decode(token, keys[alg].public_key(), algorithms=[alg], audience=TOKEN_URL)
    assert claims["iss"] == claims["sub"] == "client-7"
    assert claims["aud"] == TOKEN_URL
    assert 0 < claims["exp"] - datetime.now(UTC).timestamp() <= 300
    assert set(claims) == {"iss", "sub", "aud", "exp", "jti"}


def test_assertion_fails_verification_with_another_key(keys: dict[str, Any], alg: str) -> None:
    token = client_assertion("c", TOKEN_URL, _signing(keys, alg), now=datetime.now(UTC))
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, _private(alg).public_key(), algorithms=[alg], audience=TOKEN_URL)


def test_each_assertion_has_a_fresh_jti(keys: dict[str, Any]) -> None:
    key = _signing(keys, "ES384")
    jtis = {
        jwt.decode(client_assertion("c", TOKEN_URL, key, now=NOW), options={"verify_signature": False})["jti"]
        for _ in range(20)
    }
    assert len(jtis) == 20


@pytest.mark.parametrize(
    ("lifetime", "ok"),
    [
        pytest.param(300, True, id="five-minutes"),
        pytest.param(1, True, id="one-second"),
        pytest.param(301, False, id="over-five-minutes"),
        pytest.param(0, False, id="zero"),
    ],
)
def test_assertion_lifetime_at_most_five_minutes(keys: dict[str, Any], lifetime: int, ok: bool) -> None:
    key = _signing(keys, "ES384")
    if not ok:
        with pytest.raises(ValueError, match="lifetime"):
            client_assertion("c", TOKEN_URL, key, now=NOW, lifetime=lifetime)
        return
    token = client_assertion("c", TOKEN_URL, key, now=NOW, lifetime=lifetime)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] == int(NOW.timestamp()) + lifetime


# -- keys ------------------------------------------------------------------------------------


def test_jwks_file_picks_the_private_key_by_kid(tmp_path: Path, keys: dict[str, Any]) -> None:
    path = tmp_path / "jwks.json"
    other = _private("RS384")
    path.write_text(
        json.dumps(
            {
                "keys": [
                    _jwk(keys["ES384"], "ec-1"),
                    _jwk(other, "rsa-1"),
                    _jwk(keys["RS384"], "pub", private=False),
                ]
            }
        )
    )
    chosen = load_signing_key(path, kid="rsa-1")
    assert (chosen.kid, chosen.alg) == ("rsa-1", "RS384")
    token = client_assertion("c", TOKEN_URL, chosen, now=datetime.now(UTC))
    jwt.decode(token, other.public_key(), algorithms=["RS384"], audience=TOKEN_URL)
    ec_key = load_signing_key(path, kid="ec-1")
    assert (ec_key.kid, ec_key.alg) == ("ec-1", "ES384")


def test_pem_file_with_kid(tmp_path: Path, keys: dict[str, Any], alg: str) -> None:
    path = tmp_path / "key.pem"
    path.write_bytes(_pem(keys[alg]))
    key = load_signing_key(path, kid="pem-1")
    assert (key.kid, key.alg) == ("pem-1", alg)
    token = client_assertion("c", TOKEN_URL, key, now=datetime.now(UTC))
    jwt.decode(token, keys[alg].public_key(), algorithms=[alg], audience=TOKEN_URL)


def _write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


@pytest.mark.parametrize(
    ("make", "kid", "words"),
    [
        pytest.param(lambda k: ("k.pem", _pem(k["RS384"])), None, "needs --kid", id="pem-without-kid"),
        pytest.param(
            lambda k: ("k.json", json.dumps({"keys": [_jwk(k["RS384"], "a"), _jwk(k["ES384"], "b")]})),
            None,
            "choose one with --kid",
            id="two-keys-no-kid",
        ),
        pytest.param(
            lambda k: ("k.json", json.dumps({"keys": [_jwk(k["RS384"], "a")]})),
            "zzz",
            "no private key with kid",
            id="unknown-kid",
        ),
        pytest.param(
            lambda k: ("k.json", json.dumps({"keys": [_jwk(k["RS384"], "a", private=False)]})),
            None,
            "no private key",
            id="public-only",
        ),
        pytest.param(
            lambda k: ("k.json", json.dumps(_jwk(ec.generate_private_key(ec.SECP256R1()), "p256"))),
            None,
            "ES384 needs P-384",
            id="p256-curve",
        ),
        pytest.param(
            lambda k: ("k.json", json.dumps({**_jwk(k["RS384"], "a"), "alg": "RS256"})),
            None,
            "declares alg RS256",
            id="rs256-declared",
        ),
        pytest.param(lambda k: ("k.json", "{not json"), None, "not JSON", id="bad-json"),
        pytest.param(
            lambda k: ("k.pem", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
            "x",
            "not a PEM private key",
            id="bad-pem",
        ),
    ],
)
def test_unusable_keys_are_clear_usage_errors(
    tmp_path: Path,
    keys: dict[str, Any],
    make: Callable[[dict[str, Any]], tuple[str, bytes | str]],
    kid: str | None,
    words: str,
) -> None:
    name, data = make(keys)
    path = _write(tmp_path, name, data)
    with pytest.raises(UsageError, match=words) as info:
        load_signing_key(path, kid=kid)
    assert str(path) in str(info.value)


def test_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read the key file"):
        load_signing_key(tmp_path / "nope.json")


# -- a fake authorisation server --------------------------------------------------------------


@dataclass
class FakeAuthServer:
    """Discovery, a token endpoint that verifies assertions, and a FHIR endpoint needing a token."""

    public_key: Any
    alg: str
    client_id: str = "client-7"
    expires_in: int | None = 300
    scopes_supported: list[str] = field(default_factory=lambda: ["system/*.rs"])
    capabilities: list[str] = field(default_factory=lambda: ["client-confidential-asymmetric"])
    token_error: tuple[int, dict[str, Any]] | None = None
    token_type: str = "bearer"
    discovery_status: int = 200
    #: tokens the FHIR endpoint refuses with 401 (as if revoked)
    refused: set[str] = field(default_factory=set)
    issued: list[str] = field(default_factory=list)
    token_requests: list[dict[str, list[str]]] = field(default_factory=list)
    fhir_auth: list[str] = field(default_factory=list)

    def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/fhir/.well-known/smart-configuration":
            assert request.headers["accept"] == "application/json"
            if self.discovery_status != 200:
                return httpx.Response(self.discovery_status, text="nope")
            return httpx.Response(
                200,
                json={
                    "token_endpoint": TOKEN_URL,
                    "token_endpoint_auth_methods_supported": ["private_key_jwt"],
                    "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
                    "grant_types_supported": ["client_credentials"],
                    "scopes_supported": self.scopes_supported,
                    "capabilities": self.capabilities,
                },
            )
        if request.url.path == "/auth/token":
            form = parse_qs(request.content.decode())
            self.token_requests.append(form)
            assert request.headers["content-type"] == "application/x-www-form-urlencoded"
            assert form["grant_type"] == ["client_credentials"]
            assert form["client_assertion_type"] == [ASSERTION_TYPE]
            claims = jwt.decode(
                form["client_assertion"][0], self.public_key, algorithms=[self.alg], audience=TOKEN_URL
            )
            assert claims["iss"] == claims["sub"] == self.client_id
            if self.token_error is not None:
                return httpx.Response(self.token_error[0], json=self.token_error[1])
            value = f"token-{len(self.issued) + 1}"
            self.issued.append(value)
            body: dict[str, Any] = {
                "access_token": value,
                "token_type": self.token_type,
                "scope": form["scope"][0],
            }
            if self.expires_in is not None:
                body["expires_in"] = self.expires_in
            return httpx.Response(200, json=body)
        if request.url.path.startswith("/fhir/"):
            auth = request.headers.get("authorization", "")
            self.fhir_auth.append(auth)
            token = auth.removeprefix("Bearer ")
            if token not in self.issued or token in self.refused:
                return httpx.Response(401, json={"resourceType": "OperationOutcome", "issue": []})
            return httpx.Response(200, json={"resourceType": "Bundle", "type": "searchset"})
        return httpx.Response(404)


class Clock:
    """An injected clock starting at the real time (the fake server checks ``exp`` for real)."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def _client(
    server: FakeAuthServer, key: SigningKey, clock: Clock, *, scope: str = "system/*.rs", margin: float = 60.0
) -> BackendServicesClient:
    http = httpx.Client(transport=httpx.MockTransport(server.handler))
    return BackendServicesClient(
        client_id=server.client_id, key=key, scope=scope, http=http, base_url=BASE, clock=clock, margin=margin
    )


@pytest.fixture
def es_server(keys: dict[str, Any]) -> FakeAuthServer:
    return FakeAuthServer(public_key=keys["ES384"].public_key(), alg="ES384")


# -- tokens ----------------------------------------------------------------------------------


def test_token_request_is_verified_by_the_server(keys: dict[str, Any], alg: str) -> None:
    server = FakeAuthServer(public_key=keys[alg].public_key(), alg=alg)
    tokens = _client(server, _signing(keys, alg), Clock())
    assert tokens.token() == "token-1"
    assert server.token_requests[0]["scope"] == ["system/*.rs"]
    assert tokens.configuration is not None and tokens.configuration.token_endpoint == TOKEN_URL


@pytest.mark.parametrize(
    ("expires_in", "margin", "reused_until", "label"),
    [
        pytest.param(300, 60.0, 240, "renewed a minute before expiry", id="300s-margin-60"),
        pytest.param(300, 0.0, 300, "used until expiry", id="300s-margin-0"),
        pytest.param(30, 60.0, 15, "half the lifetime when the margin is longer", id="30s-margin-60"),
        pytest.param(None, 60.0, 240, "missing expires_in taken as 300", id="no-expires-in"),
    ],
)
def test_token_reused_until_shortly_before_expiry(
    keys: dict[str, Any],
    es_server: FakeAuthServer,
    expires_in: int | None,
    margin: float,
    reused_until: int,
    label: str,
) -> None:
    es_server.expires_in = expires_in
    clock = Clock()
    tokens = _client(es_server, _signing(keys, "ES384"), clock, margin=margin)
    first = tokens.token()
    clock.advance(reused_until - 0.5)
    assert tokens.token() == first, label
    assert tokens.fetched == 1
    clock.advance(0.5)
    second = tokens.token()
    assert second != first, label
    assert tokens.fetched == 2
    assert len(es_server.token_requests) == 2
    # Each token request carried its own assertion.
    jtis = {
        jwt.decode(r["client_assertion"][0], options={"verify_signature": False})["jti"]
        for r in es_server.token_requests
    }
    assert len(jtis) == 2


def test_auth_adds_the_bearer_token_and_refreshes_once_on_401(
    keys: dict[str, Any], es_server: FakeAuthServer
) -> None:
    tokens = _client(es_server, _signing(keys, "ES384"), Clock())
    http = httpx.Client(transport=httpx.MockTransport(es_server.handler), auth=SmartAuth(tokens))
    assert http.get(f"{BASE}/Patient").status_code == 200
    assert es_server.fhir_auth == ["Bearer token-1"]
    es_server.refused.add("token-1")  # revoked on the server side
    assert http.get(f"{BASE}/Patient").status_code == 200
    assert es_server.fhir_auth[1:] == ["Bearer token-1", "Bearer token-2"]
    # A second refusal in a row is the caller's problem: one retry only.
    es_server.refused.add("token-2")
    assert http.get(f"{BASE}/Patient").status_code == 200
    es_server.refused.update({"token-3", "token-4"})
    assert http.get(f"{BASE}/Patient").status_code == 401
    assert es_server.fhir_auth[-2:] == ["Bearer token-3", "Bearer token-4"]


# -- discovery -------------------------------------------------------------------------------


def test_discovery_reads_the_configuration() -> None:
    server = FakeAuthServer(public_key=None, alg="ES384", scopes_supported=["system/*.read", "launch"])
    config = discover(httpx.Client(transport=httpx.MockTransport(server.handler)), BASE + "/")
    assert config.token_endpoint == TOKEN_URL
    assert config.auth_methods == ("private_key_jwt",)
    assert config.signing_algs == ("RS384", "ES384")
    assert config.grant_types == ("client_credentials",)
    assert config.scopes_supported == ("system/*.read", "launch")


@pytest.mark.parametrize(
    ("status", "error", "words"),
    [
        pytest.param(404, RemoteError, "publishes no SMART configuration", id="404"),
        pytest.param(500, RemoteError, "HTTP 500", id="500"),
    ],
)
def test_discovery_failures(status: int, error: type[Exception], words: str) -> None:
    server = FakeAuthServer(public_key=None, alg="ES384", discovery_status=status)
    with pytest.raises(error, match=words):
        discover(httpx.Client(transport=httpx.MockTransport(server.handler)), BASE)


@pytest.mark.parametrize(
    ("config", "alg", "error", "words"),
    [
        pytest.param({"token_endpoint": TOKEN_URL}, "RS384", None, "", id="nothing-listed-ok"),
        pytest.param(
            {"token_endpoint": TOKEN_URL, "token_endpoint_auth_signing_alg_values_supported": ["ES384"]},
            "RS384",
            UsageError,
            "verifies ES384",
            id="alg-not-accepted",
        ),
        pytest.param(
            {"token_endpoint": TOKEN_URL, "token_endpoint_auth_methods_supported": ["client_secret_basic"]},
            "ES384",
            RemoteError,
            "not private_key_jwt",
            id="no-private-key-jwt",
        ),
        pytest.param(
            {"token_endpoint": TOKEN_URL, "grant_types_supported": ["authorization_code"]},
            "ES384",
            RemoteError,
            "not client_credentials",
            id="no-client-credentials",
        ),
        pytest.param(
            {"scopes_supported": []}, "ES384", RemoteError, "no token_endpoint", id="no-token-endpoint"
        ),
    ],
)
def test_configuration_checks(
    keys: dict[str, Any], config: dict[str, Any], alg: str, error: type[Exception] | None, words: str
) -> None:
    key = _signing(keys, alg)
    if error is None:
        SmartConfiguration.from_json(config, "test").check_backend_services(key)
        return
    with pytest.raises(error, match=words):
        SmartConfiguration.from_json(config, "test").check_backend_services(key)


# -- scopes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scope", "syntax", "v1", "v2"),
    [
        pytest.param("system/*.read", "v1", ["system/*.read"], "system/*.rs", id="v1-read"),
        pytest.param(
            "system/Patient.write", "v1", ["system/Patient.write"], "system/Patient.cud", id="v1-write"
        ),
        pytest.param("system/*.*", "v1", ["system/*.*"], "system/*.cruds", id="v1-star"),
        pytest.param("system/*.rs", "v2", ["system/*.read"], "system/*.rs", id="v2-rs"),
        pytest.param(
            "system/Encounter.r", "v2", ["system/Encounter.read"], "system/Encounter.r", id="v2-r-broadens"
        ),
        pytest.param("system/*.cruds", "v2", ["system/*.*"], "system/*.cruds", id="v2-all"),
        pytest.param(
            "system/Task.crs",
            "v2",
            ["system/Task.read", "system/Task.write"],
            "system/Task.crs",
            id="v2-mixed",
        ),
        pytest.param(
            "patient/Observation.rs",
            "v2",
            ["patient/Observation.read"],
            "patient/Observation.rs",
            id="patient",
        ),
        pytest.param("openid", None, ["openid"], "openid", id="not-clinical"),
        pytest.param("system/*.sr", None, ["system/*.sr"], "system/*.sr", id="out-of-order"),
    ],
)
def test_scope_conversion(scope: str, syntax: str | None, v1: list[str], v2: str) -> None:
    assert scope_syntax(scope) == syntax
    assert to_v1(scope) == v1
    assert to_v2(scope) == v2


def test_v2_scope_with_constraints_has_no_v1_form() -> None:
    scope = "system/Observation.rs?category=laboratory"
    assert scope_syntax(scope) == "v2"
    with pytest.raises(UsageError, match="cannot carry"):
        to_v1(scope)


def _config(scopes: list[str], caps: list[str] | None = None) -> SmartConfiguration:
    return SmartConfiguration.from_json(
        {"token_endpoint": TOKEN_URL, "scopes_supported": scopes, "capabilities": caps or []}, "test"
    )


@pytest.mark.parametrize(
    ("requested", "config", "sent"),
    [
        pytest.param("system/*.rs", _config(["system/*.read"]), "system/*.read", id="v2-to-v1-server"),
        pytest.param("system/*.read", _config(["system/*.rs"]), "system/*.rs", id="v1-to-v2-server"),
        pytest.param("system/*.rs", _config(["system/*.rs", "system/*.read"]), "system/*.rs", id="both-kept"),
        pytest.param("system/*.read", _config([], ["permission-v2"]), "system/*.rs", id="capability-v2"),
        pytest.param("system/*.rs", _config([], ["permission-v1"]), "system/*.read", id="capability-v1"),
        pytest.param(
            "system/*.rs system/*.read", _config([], []), "system/*.rs system/*.read", id="unknown-kept"
        ),
        pytest.param("system/*.rs", None, "system/*.rs", id="no-discovery"),
        pytest.param(
            "system/Patient.rs system/Patient.read",
            _config(["system/*.read"]),
            "system/Patient.read",
            id="deduplicated",
        ),
    ],
)
def test_scopes_adapted_to_what_the_server_shows(
    requested: str, config: SmartConfiguration | None, sent: str
) -> None:
    assert adapt_scopes(requested, config) == sent


def test_v1_only_server_gets_v1_scopes_in_the_token_request(keys: dict[str, Any]) -> None:
    server = FakeAuthServer(
        public_key=keys["RS384"].public_key(), alg="RS384", scopes_supported=["system/*.read"]
    )
    _client(server, _signing(keys, "RS384"), Clock(), scope="system/*.rs").token()
    assert server.token_requests[0]["scope"] == ["system/*.read"]


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "words"),
    [
        pytest.param(
            400,
            {"error": "invalid_client", "error_description": "signature does not verify"},
            r"refused client 'client-7'.*HTTP 400 invalid_client \(signature does not verify\).*check --client-id",
            id="invalid-client",
        ),
        pytest.param(401, {"error": "invalid_client"}, "HTTP 401 invalid_client", id="invalid-client-401"),
        pytest.param(400, {"error": "invalid_scope"}, "invalid_scope.*pre-authorised", id="invalid-scope"),
        pytest.param(403, {"unexpected": True}, "HTTP 403", id="not-oauth-json"),
    ],
)
def test_token_endpoint_errors_are_clear(
    keys: dict[str, Any], es_server: FakeAuthServer, status: int, body: dict[str, Any], words: str
) -> None:
    es_server.token_error = (status, body)
    tokens = _client(es_server, _signing(keys, "ES384"), Clock())
    with pytest.raises(RemoteError, match=words) as info:
        tokens.token()
    assert info.value.status == status
    assert TOKEN_URL in str(info.value)


def test_token_type_must_be_bearer(keys: dict[str, Any], es_server: FakeAuthServer) -> None:
    es_server.token_type = "mac"
    with pytest.raises(RemoteError, match="expected bearer"):
        _client(es_server, _signing(keys, "ES384"), Clock()).token()


def test_wrong_key_is_refused_by_the_server_verification(keys: dict[str, Any]) -> None:
    """The fake verifies with the registered public key: a different private key fails there."""
    server = FakeAuthServer(public_key=keys["ES384"].public_key(), alg="ES384")
    stranger = SigningKey(kid="k1", alg="ES384", key=_private("ES384"))
    with pytest.raises(jwt.InvalidSignatureError):
        _client(server, stranger, Clock()).token()


def test_empty_scope_and_client_id_are_usage_errors(keys: dict[str, Any], es_server: FakeAuthServer) -> None:
    http = httpx.Client(transport=httpx.MockTransport(es_server.handler))
    with pytest.raises(UsageError, match="--scope is empty"):
        BackendServicesClient(client_id="c", key=_signing(keys, "ES384"), scope=" ", http=http, base_url=BASE)
    with pytest.raises(UsageError, match="--client-id is empty"):
        BackendServicesClient(
            client_id="", key=_signing(keys, "ES384"), scope="system/*.rs", http=http, base_url=BASE
        )
