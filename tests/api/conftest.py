"""A test client over the real app on the parametrised store (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from fhir_adapter.api.app import create_app
from fhir_adapter.settings import Settings
from fhir_adapter.store.db import Store


@pytest.fixture
def api_settings(settings: Settings) -> Settings:
    return settings


@pytest.fixture
def client(api_settings: Settings, store: Store) -> Iterator[TestClient]:
    """The service on the parametrised ``store``; the clock is real (jobs and versions need
    increasing times)."""
    app = create_app(api_settings, store=store)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client
