"""SMART Backend Services over HTTP: the token endpoint, discovery, and authentication of every
API request (SMART App Launch 2.2 Backend Services; RFC 6749 §5.2 errors; RFC 6750 challenges)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fhir_adapter.api.app import create_app
from fhir_adapter.api.deps import Caller, CallerDep, require
from fhir_adapter.auth.clients import Registration, register, revoke, set_keys
from fhir_adapter.auth.scopes import ScopeSet
from fhir_adapter.errors import ForbiddenError
from fhir_adapter.settings import Settings
from fhir_adapter.store.db import Store
from tests.api.conftest import MintToken
from tests.conftest import make_store_factory
from tests.smart import ASSERTION_TYPE, KeyPair, assertion, jwks, key_pair, token_form
from tests.validators.harness import node_validate, validators_available

ES, RS = key_pair("ES384", "es-1"), key_pair("RS384", "rs-1")
NOW = datetime.now(UTC)


@pytest.fixture
def sqlite_auth_client(
    auth_settings: Settings, tmp_path: Path, pg_schemas: list[str]
) -> Iterator[TestClient]:
    """Auth on, over SQLite only: for request checks that fail before any data is read."""
    store = make_store_factory("sqlite", tmp_path, pg_schemas)()
    with TestClient(create_app(auth_settings, store=store), raise_server_exceptions=False) as api:
        yield api
    store.close()


def _register(store: Store, client_id: str = "ehr-1", *, role: str = "ehr", **kw: Any) -> None:
    kw.setdefault("jwks", jwks(ES, RS))
    kw.setdefault("source", f"{client_id}-src" if role == "ehr" else None)
    register(store, Registration(client_id=client_id, role=role, **kw), known_ccos={"IHN"}, now=NOW)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _outcome(response: Any, code: str) -> dict[str, Any]:
    assert response.headers["content-type"].startswith("application/fhir+json")
    body: dict[str, Any] = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == code
    return body


def _add_probe(app: FastAPI) -> None:
    """A route that reads with ``require`` as the data routes do."""

    @app.get("/fhir/_probe/{rtype}/{permission}")
    def probe(rtype: str, permission: str, caller: CallerDep) -> dict[str, Any]:
        require(caller, rtype, permission)
        return {
            "client_id": caller.client_id,
            "role": caller.role,
            "source": caller.source,
            "ccos": list(caller.ccos),
        }


# -- token endpoint ---------------------------------------------------------------------------


@pytest.mark.parametrize("key", [pytest.param(RS, id="RS384"), pytest.param(ES, id="ES384")])
def test_token_endpoint_issues_a_bearer_token(auth_client: TestClient, store: Store, key: KeyPair) -> None:
    _register(store)
    answer = auth_client.post("/auth/token", data=token_form(assertion(key, "ehr-1"), "system/*.read"))
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["cache-control"] == "no-store"
    body = answer.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    assert (body["token_type"], body["scope"]) == ("bearer", "system/*.read")
    assert 0 < body["expires_in"] <= 300
    search = auth_client.get("/fhir/Patient", headers=_bearer(body["access_token"]))
    assert search.status_code == 200, search.text


@pytest.mark.parametrize(
    ("content_type", "body", "status", "error"),
    [
        pytest.param(
            "application/json",
            b'{"grant_type": "client_credentials"}',
            415,
            "invalid_request",
            id="json-body",
        ),
        pytest.param(None, b"grant_type=client_credentials", 400, "invalid_request", id="no-content-type"),
        pytest.param(
            "application/x-www-form-urlencoded",
            b"scope=system/*.rs",
            400,
            "invalid_request",
            id="no-grant-type",
        ),
        pytest.param(
            "application/x-www-form-urlencoded",
            b"grant_type=authorization_code&code=x",
            400,
            "unsupported_grant_type",
            id="authorization-code",
        ),
        pytest.param(
            "application/x-www-form-urlencoded",
            b"grant_type=client_credentials&scope=system/*.rs",
            401,
            "invalid_client",
            id="no-client-authentication",
        ),
        pytest.param(
            "application/x-www-form-urlencoded",
            b"grant_type=client_credentials&scope=system/*.rs&client_assertion_type=urn:x&client_assertion=a.b.c",
            401,
            "invalid_client",
            id="other-assertion-type",
        ),
        pytest.param(
            "application/x-www-form-urlencoded",
            b"grant_type=client_credentials&grant_type=client_credentials",
            400,
            "invalid_request",
            id="repeated-parameter",
        ),
        pytest.param(
            "application/x-www-form-urlencoded", b"%%%", 400, "invalid_request", id="malformed-form"
        ),
        pytest.param(
            "application/x-www-form-urlencoded",
            b"grant_type=client_credentials&client_assertion=" + b"x" * 70_000,
            413,
            "invalid_request",
            id="too-large",
        ),
        pytest.param(
            "application/x-www-form-urlencoded",
            "scope=é".encode("latin-1"),
            400,
            "invalid_request",
            id="not-utf8",
        ),
        pytest.param(
            "application/x-www-form-urlencoded; charset=utf-8",
            b"grant_type=client_credentials&client_assertion_type="
            + ASSERTION_TYPE.encode()
            + b"&client_assertion=x",
            400,
            "invalid_request",
            id="no-scope",
        ),
    ],
)
def test_token_request_errors_are_oauth_json(
    sqlite_auth_client: TestClient, content_type: str | None, body: bytes, status: int, error: str
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    answer = sqlite_auth_client.post("/auth/token", content=body, headers=headers)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["cache-control"] == "no-store"
    payload = answer.json()
    assert set(payload) == {"error", "error_description"}
    assert payload["error"] == error


@pytest.mark.parametrize(
    ("scope", "error"),
    [
        pytest.param("system/Encounter.c", "invalid_scope", id="not-pre-authorised"),
        pytest.param("system/Observation.rs?category=laboratory", "invalid_scope", id="granular"),
    ],
)
def test_scope_errors(auth_client: TestClient, store: Store, scope: str, error: str) -> None:
    _register(store, scopes=("system/*.rs",))
    answer = auth_client.post("/auth/token", data=token_form(assertion(ES, "ehr-1"), scope))
    assert (answer.status_code, answer.json()["error"]) == (400, error)


def test_assertion_errors_are_invalid_client(auth_client: TestClient, store: Store) -> None:
    _register(store)
    wrong_aud = assertion(ES, "ehr-1", aud="https://other.example/auth/token")
    answer = auth_client.post("/auth/token", data=token_form(wrong_aud))
    assert (answer.status_code, answer.json()["error"]) == (401, "invalid_client")
    assert "http://testserver/auth/token" in answer.json()["error_description"]


def test_replayed_assertion_is_refused_by_another_worker(
    auth_settings: Settings, auth_client: TestClient, store: Store
) -> None:
    """Two app instances (two workers) on one database."""
    _register(store)
    url = store.engine.url.render_as_string(hide_password=False)
    second_store = Store.open(url, tz=store.tz, member_system=store.member_system)
    try:
        with TestClient(
            create_app(auth_settings, store=second_store), raise_server_exceptions=False
        ) as second:
            form = token_form(assertion(ES, "ehr-1"))
            assert auth_client.post("/auth/token", data=form).status_code == 200
            for worker in (second, auth_client):
                replay = worker.post("/auth/token", data=form)
                assert (replay.status_code, replay.json()["error"]) == (401, "invalid_client")
                assert "already used" in replay.json()["error_description"]
            # a token from one worker is accepted by the other
            fresh = auth_client.post("/auth/token", data=token_form(assertion(ES, "ehr-1"))).json()
            assert second.get("/fhir/Patient", headers=_bearer(fresh["access_token"])).status_code == 200
    finally:
        second_store.close()


def test_key_rotation_over_http(auth_client: TestClient, store: Store) -> None:
    old, new = key_pair("ES384", "2025"), key_pair("ES384", "2026")
    _register(store, jwks=jwks(old))

    def status(key: KeyPair) -> int:
        return int(auth_client.post("/auth/token", data=token_form(assertion(key, "ehr-1"))).status_code)

    assert (status(old), status(new)) == (200, 401)
    set_keys(store, "ehr-1", now=NOW, jwks=jwks(old, new))
    assert (status(old), status(new)) == (200, 200)
    set_keys(store, "ehr-1", now=NOW, jwks=jwks(new))
    assert (status(old), status(new)) == (401, 200)


# -- authentication of API requests -----------------------------------------------------------

PUBLIC = ["/fhir/metadata", "/fhir/.well-known/smart-configuration", "/healthz", "/docs", "/openapi.json"]
PROTECTED = [
    ("GET", "/fhir/Patient"),
    ("GET", "/fhir/Patient/p1"),
    ("POST", "/fhir"),
    ("GET", "/fhir/_jobs/some-job"),
    ("GET", "/metrics"),
]


def test_public_paths_need_no_token(auth_client: TestClient) -> None:
    for path in PUBLIC:
        assert auth_client.get(path).status_code == 200, path


@pytest.mark.parametrize(("method", "path"), [pytest.param(m, p, id=f"{m} {p}") for m, p in PROTECTED])
@pytest.mark.parametrize(
    ("authorization", "error"),
    [
        pytest.param(None, None, id="no-token"),
        pytest.param("Basic dXNlcjpwYXNz", None, id="basic-scheme"),
        pytest.param("Bearer ", None, id="empty-bearer"),
        pytest.param("Bearer not-a-token", "invalid_token", id="garbage-token"),
    ],
)
def test_protected_paths_need_a_valid_token(
    sqlite_auth_client: TestClient, method: str, path: str, authorization: str | None, error: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    answer = sqlite_auth_client.request(method, path, headers=headers)
    assert answer.status_code == 401
    _outcome(answer, "login")
    challenge = answer.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="fhir-adapter"')
    assert (f'error="{error}"' in challenge) if error else ("error=" not in challenge)


def test_expired_access_token_is_refused(auth_settings: Settings, store: Store) -> None:
    clock = _Clock()
    _register(store)
    with TestClient(
        create_app(auth_settings, store=store, clock=clock), raise_server_exceptions=False
    ) as api:
        answer = api.post("/auth/token", data=token_form(assertion(ES, "ehr-1", now=clock().timestamp())))
        token = answer.json()["access_token"]
        assert api.get("/fhir/Patient", headers=_bearer(token)).status_code == 200
        clock.at += timedelta(seconds=answer.json()["expires_in"] + auth_settings.auth_leeway_seconds)
        expired = api.get("/fhir/Patient", headers=_bearer(token))
        assert expired.status_code == 401
        assert "expired" in _outcome(expired, "login")["issue"][0]["diagnostics"]
        assert 'error="invalid_token"' in expired.headers["www-authenticate"]


class _Clock:
    def __init__(self) -> None:
        self.at = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.at


def test_revoked_client_token_stops_working(
    auth_client: TestClient, store: Store, mint_token: MintToken
) -> None:
    token = mint_token("oha", "system/*.rs")
    assert auth_client.get("/fhir/Patient", headers=_bearer(token)).status_code == 200
    revoke(store, "test-oha-1", now=NOW)
    answer = auth_client.get("/fhir/Patient", headers=_bearer(token))
    assert answer.status_code == 401
    assert "revoked" in _outcome(answer, "login")["issue"][0]["diagnostics"]


@pytest.mark.parametrize(
    ("scope", "rtype", "permission", "status"),
    [
        pytest.param("system/MeasureReport.rs", "MeasureReport", "r", 200, id="allowed"),
        pytest.param("system/MeasureReport.rs", "Patient", "r", 403, id="other-type"),
        pytest.param("system/MeasureReport.rs", "MeasureReport", "c", 403, id="other-permission"),
        pytest.param("system/*.read", "Patient", "s", 200, id="v1-read-searches"),
        pytest.param("system/Encounter.cu", "Encounter", "u", 200, id="write"),
    ],
)
def test_scopes_are_enforced_per_interaction(
    auth_client: TestClient, mint_token: MintToken, scope: str, rtype: str, permission: str, status: int
) -> None:
    _add_probe(auth_client.app)  # type: ignore[arg-type]
    token = mint_token("cco", scope, ccos=("IHN",))
    answer = auth_client.get(f"/fhir/_probe/{rtype}/{permission}", headers=_bearer(token))
    assert answer.status_code == status, answer.text
    if status == 200:
        assert answer.json() == {
            "client_id": "test-cco-1",
            "role": "cco",
            "source": "test-cco-1",
            "ccos": ["IHN"],
        }
    else:
        _outcome(answer, "forbidden")
        challenge = answer.headers["www-authenticate"]
        assert 'error="insufficient_scope"' in challenge
        assert f'scope="system/{rtype}.{permission}"' in challenge


@pytest.mark.parametrize(
    ("scopes", "rtype", "permission", "allowed"),
    [
        pytest.param("system/*.cruds", "Patient", "d", True, id="everything"),
        pytest.param("system/Patient.rs", "Patient", "d", False, id="no-delete"),
        pytest.param("", "Patient", "r", False, id="no-scopes"),
    ],
)
def test_require(scopes: str, rtype: str, permission: str, allowed: bool) -> None:
    caller = Caller("c", "src", role="cco", scopes=ScopeSet.parse(scopes))
    if allowed:
        require(caller, rtype, permission)
    else:
        with pytest.raises(ForbiddenError, match=f"system/{rtype}.{permission}"):
            require(caller, rtype, permission)
    with pytest.raises(ValueError, match="permission"):
        require(caller, rtype, "read")


def test_without_auth_every_caller_is_the_dev_caller(
    api_settings: Settings, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="fhir_adapter.auth"):
        app = create_app(api_settings, store=store)
    assert "AUTHORISATION IS OFF" in caplog.text
    _add_probe(app)
    with TestClient(app, raise_server_exceptions=False) as api:
        for permission in "cruds":
            answer = api.get(f"/fhir/_probe/Patient/{permission}")
            assert answer.status_code == 200
            assert answer.json()["role"] == "dev"
        assert "security" not in api.get("/fhir/metadata").json()["rest"][0]


# -- discovery --------------------------------------------------------------------------------


def test_smart_configuration(auth_client: TestClient) -> None:
    answer = auth_client.get(
        "/fhir/.well-known/smart-configuration", headers={"Accept": "application/fhir+json"}
    )
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"  # SMART: JSON whatever Accept says
    config = answer.json()
    assert config["token_endpoint"] == "http://testserver/auth/token"
    assert config["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert config["token_endpoint_auth_signing_alg_values_supported"] == ["RS384", "ES384"]
    assert config["grant_types_supported"] == ["client_credentials"]
    assert set(config["capabilities"]) == {"client-confidential-asymmetric", "permission-v1", "permission-v2"}
    assert {"system/*.rs", "system/*.read"} <= set(config["scopes_supported"])
    for scope in config["scopes_supported"]:
        ScopeSet.parse(scope)  # every advertised scope is one the server accepts


@pytest.fixture
def statement(sqlite_auth_client: TestClient) -> Iterator[dict[str, Any]]:
    yield sqlite_auth_client.get("/fhir/metadata").json()


def test_capability_statement_declares_smart_security(statement: dict[str, Any]) -> None:
    security = statement["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    (uris,) = security["extension"]
    assert uris["url"] == "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
    assert uris["extension"] == [{"url": "token", "valueUri": "http://testserver/auth/token"}]


@pytest.mark.node
def test_secured_statement_passes_both_r4_validators(statement: dict[str, Any]) -> None:
    reason = validators_available()
    if reason:
        pytest.skip(reason)
    (result,) = node_validate([statement])
    assert result.ok, result.describe()
