"""schemathesis over the service's own OpenAPI document (issue #7 item 5: bad input).

Every operation of ``/openapi.json`` (:mod:`fhir_adapter.api.openapi` rewrites FastAPI's derived
document to say what the routes really take and answer) gets schema-generated requests, valid
and invalid (schemathesis positive and negative modes), in process through its ASGI transport.
Each response must be no server error, have a documented status code and content type, and a
body that conforms to the documented schema (``4XX``: an OperationOutcome).

CI-sized and deterministic: hypothesis ``derandomize`` with a fixed small budget per operation
(``BUDGET``; the measure operations, whose valid requests evaluate a measure, and the Bulk Data
kick-offs, which start jobs, get a tiny one), no example database, no shrinking. Two passes:
authorisation off (the anonymous ``dev`` caller), and SMART on with a real bearer token from
``POST /auth/token`` (the ``mint_token`` fixture of ``tests/api/conftest.py``: an EHR client with
``system/*.cruds``). The first runs on SQLite and PostgreSQL (the ``store`` fixture), the
second on SQLite.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from fhir_adapter.api.app import create_app
from fhir_adapter.api.openapi import undocumented
from fhir_adapter.api.responses import FHIR_NDJSON
from fhir_adapter.settings import Settings
from fhir_adapter.store.db import Store
from tests import cohorts
from tests.api.conftest import MintToken

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
#: Examples per operation and generation mode.
BUDGET = {GenerationMode.POSITIVE: 20, GenerationMode.NEGATIVE: 10}
#: Operations whose valid requests start evaluations or jobs: a tiny budget.
SLOW = ("$evaluate", "$care-gaps", "$export", "$import", "$rerun", "$data-requirements", "$deqm-submit-data")
SLOW_BUDGET = 3
#: Path parameters naming seeded data (see ``SEED``), and the examples spent on them.
KNOWN = {
    "type": "Patient",
    "rtype": "Patient",
    "id": "p1",
    "rid": "p1",
    "vid": "1",
    "measure_id": "oregon-se-issue-focused",
}
KNOWN_BUDGET = 6

SEED = [
    cohorts.patient("p1", "2021-03-04"),
    cohorts.full_year("p1"),
    cohorts.encounter("e1", "p1", "2025-02-03"),
]


@schemathesis.serializer(FHIR_NDJSON)
def _ndjson(_context: Any, value: Any) -> bytes:
    """The ``$ingest`` body: the items of the documented array, one JSON value per line (anything
    else generated for it, as one line)."""
    items = value if isinstance(value, list) else [value]
    return "\n".join(json.dumps(item) for item in items).encode()


def _seed(client: TestClient, headers: dict[str, str]) -> None:
    """A few stored resources, so reads and searches also answer 200 with real content."""
    for resource in SEED:
        answer = client.put(
            f"/fhir/{resource['resourceType']}/{resource['id']}",
            json=resource,
            headers={**headers, "Content-Type": "application/fhir+json"},
        )
        assert answer.status_code in (200, 201), answer.text


def _budget(label: str, mode: GenerationMode) -> int:
    return SLOW_BUDGET if any(word in label for word in SLOW) else BUDGET[mode]


def run_schemathesis(app: FastAPI, headers: dict[str, str]) -> dict[str, str]:
    """Run every operation in both modes; returns ``{operation + check: first failure}``."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: dict[str, str] = {}
    results = list(schema.get_all_operations())
    assert all(isinstance(result, Ok) for result in results), results  # every operation's schema is valid
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert operations
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if mode is GenerationMode.NEGATIVE and not (len(operation.body) or len(operation.query)):
                # Only path segments or headers to negate: invalid segments are other URLs (404
                # from routing), and hypothesis spends seconds filtering for them.
                continue
            try:
                _one_operation(operation, mode, headers, failures)()
            except Unsatisfiable:
                continue  # nothing to negate (no parameters, no body)
        names = {p.name for p in operation.path_parameters}
        # Also aim at stored data, so successful answers are checked too (not DELETE: it would
        # remove the data the other operations aim at).
        if names and names <= set(KNOWN) and operation.method.upper() != "DELETE":
            fixed = {name: KNOWN[name] for name in names}
            _one_operation(operation, GenerationMode.POSITIVE, headers, failures, fixed)()
    return failures


def _one_operation(
    operation: Any,
    mode: GenerationMode,
    headers: dict[str, str],
    failures: dict[str, str],
    path_parameters: dict[str, str] | None = None,
) -> Callable[[], None]:
    label = operation.label
    budget = _budget(label, mode) if path_parameters is None else KNOWN_BUDGET

    @settings(
        max_examples=budget,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
    def test(case: Any) -> None:
        response = case.call(headers=headers)
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except FailureGroup as exc:
            for failure in exc.exceptions:
                key = f"{label} [{mode.value}] {getattr(failure, 'title', type(failure).__name__)}"
                failures.setdefault(key, f"{failure}\n{case.as_curl_command(headers=headers)}"[:2000])

    return test


def _report(failures: dict[str, str]) -> str:
    return "\n\n".join(f"{key}:\n{text}" for key, text in sorted(failures.items()))


@pytest.mark.parametrize("engine_name", ["sqlite"])  # the document does not depend on the engine
def test_every_operation_is_described(engine_name: str, api_settings: Settings, store: Store) -> None:
    """Every route has its entry in ``fhir_adapter/api/openapi.py`` (otherwise its document is
    the generic default, which says little)."""
    app = create_app(api_settings, store=store)
    document = app.openapi()
    assert list(undocumented(document)) == []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            where = (method, path)
            assert "HTTPValidationError" not in str(responses.get("422", "")), where
            assert "4XX" in responses, where  # errors are documented (OperationOutcome)
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_no_server_errors_and_honest_schema_without_auth(api_settings: Settings, store: Store) -> None:
    """Authorisation off (``auth_required=False``): the anonymous caller may do everything."""
    app = create_app(api_settings, store=store)
    with TestClient(app, raise_server_exceptions=False) as client:
        _seed(client, {})
        failures = run_schemathesis(app, {})
    assert not failures, _report(failures)


@pytest.mark.parametrize("engine_name", ["sqlite"])  # overrides the store fixture's engines
def test_no_server_errors_and_honest_schema_with_a_bearer_token(
    engine_name: str, auth_client: TestClient, mint_token: MintToken
) -> None:
    """SMART Backend Services on, every request with a valid bearer token (an EHR client with
    ``system/*.cruds``). SQLite only: the pass without authorisation covers both engines, and this
    one the token and scope checks, which are the same on both (CI time budget)."""
    token = mint_token("ehr", "system/*.cruds")
    headers = {"Authorization": f"Bearer {token}"}
    _seed(auth_client, headers)
    app = auth_client.app
    assert isinstance(app, FastAPI)
    failures = run_schemathesis(app, headers)
    assert not failures, _report(failures)


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/fhir/_jobs/%00", id="job-id"),
        pytest.param("/fhir/Patient?_source=%00", id="search-source"),
        pytest.param("/fhir/Encounter?code=a%00b", id="search-code"),
        pytest.param("/fhir/Patient/p1?_source=x%00", id="read-source"),
    ],
)
def test_nul_in_a_url_is_400(client: TestClient, path: str) -> None:
    """Found by this run on PostgreSQL: a NUL in a path or query value reached SQL (``text``
    cannot hold NUL) and answered 500."""
    answer = client.get(path)
    assert answer.status_code == 400, answer.text
    assert answer.json()["resourceType"] == "OperationOutcome"
