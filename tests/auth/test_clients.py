"""The client registry: consistent registrations, public keys only, revocation, key rotation."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from fhir_adapter.auth.clients import (
    Registration,
    check_jwks,
    check_jwks_url,
    get_client,
    list_clients,
    register,
    require_client,
    revoke,
    set_keys,
)
from fhir_adapter.errors import ConflictError, InvalidDataError, NotFoundError, UsageError
from fhir_adapter.store.db import Store
from tests.conftest import make_store_factory
from tests.smart import jwks, key_pair

NOW = datetime(2026, 2, 1, 12, tzinfo=UTC)
CCOS = {"IHN", "ALLCARE"}


@pytest.fixture
def sqlite_store(tmp_path: Path, pg_schemas: list[str]) -> Iterator[Store]:
    """For checks that fail before the database is touched: one engine is enough."""
    store = make_store_factory("sqlite", tmp_path, pg_schemas)()
    yield store
    store.close()


def _reg(**kw: Any) -> Registration:
    base: dict[str, Any] = {"client_id": "c1", "role": "oha", "jwks": jwks(key_pair("ES384"))}
    return Registration(**{**base, **kw})


@pytest.mark.parametrize(
    ("reg", "error", "words"),
    [
        pytest.param(_reg(role="ehr"), UsageError, "needs --source", id="ehr-without-source"),
        pytest.param(_reg(role="cco"), UsageError, "at least one --cco", id="cco-without-cco"),
        pytest.param(_reg(role="cco", ccos=("NOPE",)), UsageError, "unknown CCO id", id="cco-unknown-cco"),
        pytest.param(_reg(role="oha", ccos=("IHN",)), UsageError, "for cco clients", id="ccos-on-oha"),
        pytest.param(_reg(role="root"), UsageError, "not one of", id="unknown-role"),
        pytest.param(_reg(client_id="has space"), UsageError, "client id", id="bad-client-id"),
        pytest.param(_reg(jwks=None), UsageError, "exactly one", id="no-keys"),
        pytest.param(_reg(jwks_url="https://x.example/jwks"), UsageError, "exactly one", id="both-keys"),
        pytest.param(
            _reg(jwks=None, jwks_url="http://x.example/jwks"), UsageError, "https", id="plain-http-url"
        ),
        pytest.param(_reg(source="a/b"), UsageError, "source name", id="bad-source"),
        pytest.param(_reg(source="adapter-reports"), UsageError, "reserved", id="reserved-source"),
        pytest.param(_reg(scopes=("patient/*.rs",)), UsageError, "only system/", id="bad-scope"),
        pytest.param(_reg(jwks={"kty": "EC"}), InvalidDataError, "JWK Set", id="bare-jwk-not-a-set"),
    ],
)
def test_inconsistent_registrations_are_refused(
    sqlite_store: Store, reg: Registration, error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        register(sqlite_store, reg, known_ccos=CCOS, now=NOW, reserved_sources=("adapter-reports",))
    assert list_clients(sqlite_store) == []


@pytest.mark.parametrize(
    ("reg", "source", "ccos", "scopes"),
    [
        pytest.param(_reg(role="ehr", source="epic-salem"), "epic-salem", (), "system/*.cruds", id="ehr"),
        pytest.param(
            _reg(role="cco", ccos=("IHN", "ALLCARE", "IHN")),
            "c1",
            ("ALLCARE", "IHN"),
            "system/*.rs",
            id="cco",
        ),
        pytest.param(_reg(role="oha", scopes=("system/*.read",)), "c1", (), "system/*.rs", id="oha-v1-scope"),
        pytest.param(
            _reg(role="admin", scopes=("system/MeasureReport.rs", "system/Encounter.cu")),
            "c1",
            (),
            "system/Encounter.cu system/MeasureReport.rs",
            id="admin-scopes",
        ),
        pytest.param(
            _reg(jwks=None, jwks_url="http://127.0.0.1:8999/jwks"), "c1", (), "system/*.rs", id="loopback-url"
        ),
    ],
)
def test_registration(
    store: Store, reg: Registration, source: str, ccos: tuple[str, ...], scopes: str
) -> None:
    client = register(store, reg, known_ccos=CCOS, now=NOW)
    assert (client.source, client.ccos, client.scopes.render()) == (source, ccos, scopes)
    assert get_client(store, "c1") == client
    assert not client.revoked


def test_ids_and_sources_are_not_shared(store: Store) -> None:
    register(store, _reg(role="ehr", source="epic"), known_ccos=CCOS, now=NOW)
    with pytest.raises(ConflictError, match="already registered"):
        register(store, _reg(role="oha"), known_ccos=CCOS, now=NOW)
    with pytest.raises(ConflictError, match="belongs to active client 'c1'"):
        register(store, _reg(client_id="c2", role="ehr", source="epic"), known_ccos=CCOS, now=NOW)
    revoke(store, "c1", now=NOW)
    with pytest.raises(ConflictError, match="never reused"):
        register(store, _reg(role="ehr", source="epic"), known_ccos=CCOS, now=NOW)
    # the source is free again once its client is revoked (a replacement client)
    assert (
        register(store, _reg(client_id="c2", role="ehr", source="epic"), known_ccos=CCOS, now=NOW).source
        == "epic"
    )


def test_revoke_and_rotate(store: Store) -> None:
    old, new = key_pair("ES384", "old"), key_pair("RS384", "new")
    register(store, _reg(jwks=jwks(old)), known_ccos=CCOS, now=NOW)
    both = set_keys(store, "c1", now=NOW, jwks=jwks(old, new))
    assert [k["kid"] for k in both.jwks["keys"]] == ["old", "new"]  # type: ignore[index]
    url = set_keys(store, "c1", now=NOW, jwks_url="https://keys.example/c1.json")
    assert (url.jwks, url.jwks_url) == (None, "https://keys.example/c1.json")
    revoked = revoke(store, "c1", now=NOW)
    assert revoked.revoked_at is not None
    assert revoke(store, "c1", now=datetime(2027, 1, 1, tzinfo=UTC)).revoked_at == revoked.revoked_at
    with pytest.raises(ConflictError, match="revoked"):
        set_keys(store, "c1", now=NOW, jwks=jwks(new))
    with pytest.raises(NotFoundError):
        revoke(store, "nobody", now=NOW)
    with pytest.raises(NotFoundError):
        require_client(store, "nobody")


def _rsa_jwk(bits: int) -> dict[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return {**json.loads(RSAAlgorithm.to_jwk(key.public_key())), "kid": "r"}


def _ec_jwk(curve: ec.EllipticCurve) -> dict[str, Any]:
    key = ec.generate_private_key(curve)
    return {**json.loads(ECAlgorithm.to_jwk(key.public_key())), "kid": "e"}


ES = key_pair("ES384").public_jwk


@pytest.mark.parametrize(
    ("keys", "words"),
    [
        pytest.param([key_pair("ES384").private_jwk], "member 'd'", id="ec-private-key"),
        pytest.param([key_pair("RS384").private_jwk], "member 'd'", id="rsa-private-key"),
        pytest.param([{"kty": "oct", "k": "c2VjcmV0", "kid": "s"}], "member 'k'", id="symmetric-key"),
        pytest.param([{**ES, "kid": ""}], "needs a 'kid'", id="no-kid"),
        pytest.param([ES, ES], "appears twice", id="duplicate-kid"),
        pytest.param([{**ES, "alg": "ES256"}], "only RSA keys", id="wrong-alg"),
        pytest.param([_ec_jwk(ec.SECP256R1())], "P-384", id="ec-p256"),
        pytest.param([_rsa_jwk(1024)], "at least 2048", id="rsa-1024"),
        pytest.param([{**ES, "use": "enc"}], "'use'", id="encryption-key"),
        pytest.param([{**ES, "x": "AAAA"}], "not a valid", id="broken-key"),
        pytest.param([], "no keys", id="empty-set"),
    ],
)
def test_jwks_must_hold_usable_public_keys(keys: list[dict[str, Any]], words: str) -> None:
    with pytest.raises(InvalidDataError, match=words) as caught:
        check_jwks({"keys": keys}, where="keys.json")
    assert str(caught.value).startswith("keys.json")


def test_jwks_accepts_rs384_and_es384_public_keys() -> None:
    keys = [key_pair("RS384", "a").public_jwk, key_pair("ES384", "b").public_jwk, _rsa_jwk(3072)]
    assert check_jwks({"keys": keys}) == {"keys": keys}


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        pytest.param("https://ehr.example/.well-known/jwks.json", True, id="https"),
        pytest.param("http://127.0.0.1:8000/jwks", True, id="loopback-http"),
        pytest.param("http://ehr.example/jwks", False, id="plain-http"),
        pytest.param("http://localhost/jwks", False, id="localhost-name"),
        pytest.param("file:///etc/passwd", False, id="file"),
        pytest.param("https:///nohost", False, id="no-host"),
    ],
)
def test_jwks_url_needs_tls(url: str, ok: bool) -> None:
    if ok:
        assert check_jwks_url(url) == url
    else:
        with pytest.raises(UsageError):
            check_jwks_url(url)
