"""A test client over the real app on the parametrised store (SQLite and PostgreSQL).

``client`` runs without authorisation (``auth_required=False``: the anonymous ``dev`` caller with
every permission), so router tests test their routers. Secured tests use ``auth_client`` (SMART
Backend Services on) and ``mint_token`` (registers a client and gets it a real access token from
``POST /auth/token``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from fhir_adapter.api.app import create_app
from fhir_adapter.auth.clients import Registration, register
from fhir_adapter.settings import Settings
from fhir_adapter.store.db import Store
from tests.smart import assertion, jwks, key_pair, token_form

#: ``mint_token(role="cco", scope=..., ccos=..., source=..., allowed=...)`` → access token
MintToken = Callable[..., str]


@pytest.fixture(scope="package", autouse=True)
def _auth_off_unless_asked() -> Iterator[None]:
    """Settings made anywhere in this package (also by module-scoped fixtures that build their
    own ``Settings``) default to ``auth_required=False``; secured tests set it explicitly."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FHIR_ADAPTER_AUTH_REQUIRED", "false")
        yield


@pytest.fixture
def api_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"auth_required": False})


@pytest.fixture
def client(api_settings: Settings, store: Store) -> Iterator[TestClient]:
    """The service on the parametrised ``store``; the clock is real (jobs and versions need
    increasing times)."""
    app = create_app(api_settings, store=store)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def auth_settings(settings: Settings) -> Settings:
    """SMART Backend Services on; the public base is the test client's, so the token URL
    (``aud`` of client assertions) is ``http://testserver/auth/token``."""
    return settings.model_copy(update={"auth_required": True, "public_base_url": "http://testserver"})


@pytest.fixture
def auth_client(auth_settings: Settings, store: Store) -> Iterator[TestClient]:
    app = create_app(auth_settings, store=store)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def mint_token(auth_client: TestClient, store: Store) -> MintToken:
    """Register a client (ES384 key) and return an access token from the real token endpoint.
    ``allowed`` is what the registration pre-authorises (default: the requested ``scope``)."""
    numbers = itertools.count(1)

    def mint(
        role: str = "cco",
        scope: str = "system/*.rs",
        *,
        ccos: Sequence[str] = ("IHN",),
        source: str | None = None,
        allowed: Sequence[str] | None = None,
    ) -> str:
        client_id = f"test-{role}-{next(numbers)}"
        key = key_pair("ES384", "mint")
        register(
            store,
            Registration(
                client_id=client_id,
                role=role,
                source=source or (f"{client_id}-src" if role == "ehr" else None),
                ccos=ccos if role == "cco" else (),
                scopes=allowed or scope.split(),
                jwks=jwks(key),
            ),
            known_ccos={"IHN", "ALLCARE", "HEALTH-SHARE"},
            now=datetime.now(UTC),
        )
        answer = auth_client.post("/auth/token", data=token_form(assertion(key, client_id), scope))
        assert answer.status_code == 200, answer.text
        token: str = answer.json()["access_token"]
        return token

    return mint
