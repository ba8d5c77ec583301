"""The CapabilityStatement at /fhir/metadata lists exactly what the mounted routes implement."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from tests.validators.harness import node_validate, validators_available

#: interaction → (method, path template relative to /fhir, with {type} for the resource type)
INTERACTION_ROUTES = {
    "read": ("GET", "/{type}/{id}"),
    "vread": ("GET", "/{type}/{id}/_history/{vid}"),
    "search-type": ("GET", "/{type}"),
    "create": ("POST", "/{type}"),
    "update": ("PUT", "/{type}/{id}"),
    "delete": ("DELETE", "/{type}/{id}"),
}
SYSTEM_ROUTES = {"transaction": ("POST", ""), "batch": ("POST", "")}
#: routes under /fhir that are not interactions or operations
INFRASTRUCTURE = re.compile(r"^/fhir/(metadata|_jobs/.*|_exports/.*|docs/.*|\.well-known/.*)$")


def _routes(client: TestClient) -> set[tuple[str, str]]:
    out = set()
    pending = list(client.app.routes)  # type: ignore[attr-defined]
    while pending:
        route = pending.pop()
        inner = getattr(route, "original_router", None)  # FastAPI ≥ 0.16x wraps included routers
        if inner is not None:
            pending.extend(inner.routes)
        if isinstance(route, APIRoute):
            for method in route.methods or ():
                out.add((method, route.path))
    return out


def _matches(routes: set[tuple[str, str]], method: str, path: str) -> bool:
    """A route serves ``path`` when it is literally the same or a generic ``{…}`` template of it."""
    for m, template in routes:
        if m != method:
            continue
        pattern = "^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path):
            return True
    return False


def _statement(client: TestClient) -> dict[str, Any]:
    body: dict[str, Any] = client.get("/fhir/metadata").json()
    return body


def test_every_declared_interaction_has_a_route(client: TestClient) -> None:
    routes = _routes(client)
    rest = _statement(client)["rest"][0]
    for resource in rest.get("resource", []):
        for interaction in resource["interaction"]:
            method, template = INTERACTION_ROUTES[interaction["code"]]
            path = "/fhir" + template.replace("{type}", resource["type"]).replace("{id}", "x").replace(
                "{vid}", "1"
            )
            assert _matches(routes, method, path), (resource["type"], interaction["code"])
        for operation in resource.get("operation", []):
            name = operation["name"]
            assert any(f"${name}" in path for _m, path in routes), (resource["type"], name)
    for interaction in rest.get("interaction", []):
        method, template = SYSTEM_ROUTES[interaction["code"]]
        assert _matches(routes, method, "/fhir" + template), interaction["code"]
    for operation in rest.get("operation", []):
        assert any(f"${operation['name']}" in path for _m, path in routes), operation["name"]


def test_every_route_is_declared(client: TestClient) -> None:
    rest = _statement(client)["rest"][0]
    declared_ops = {o["name"] for o in rest.get("operation", [])}
    for resource in rest.get("resource", []):
        declared_ops |= {o["name"] for o in resource.get("operation", [])}
    interactions = {(r["type"], i["code"]) for r in rest.get("resource", []) for i in r["interaction"]}
    system = {i["code"] for i in rest.get("interaction", [])}
    types = {r["type"] for r in rest.get("resource", [])}
    for route_method, route_path in sorted(_routes(client)):
        method, path = route_method, route_path
        if not path.startswith("/fhir") or INFRASTRUCTURE.match(path):
            continue
        if "$" in path:
            name = path.split("$", 1)[1].split("/", 1)[0]
            assert name in declared_ops, f"{method} {path}: operation ${name} not in the CapabilityStatement"
            continue
        if path == "/fhir":
            assert system & {"transaction", "batch"}, f"{method} {path}"
            continue
        if path.endswith("/_search"):  # POST search is the search interaction (R4 §3.1.0.8)
            path = path.removesuffix("/_search")
            method = "GET"
        found = [
            code
            for code, (m, template) in INTERACTION_ROUTES.items()
            if m == method
            and re.fullmatch("/fhir" + re.sub(r"\{[^/]+\}", "[^/]+", template), path.replace("{type}", "T"))
        ]
        assert found, f"{method} {path} is not a known interaction"
        literal = path.split("/")[2]
        candidates = types if literal.startswith("{") else {literal}
        assert any((t, code) in interactions for t in candidates for code in found), f"{method} {path}"


@pytest.mark.node
def test_statement_passes_both_r4_validators(client: TestClient) -> None:
    reason = validators_available()
    if reason:
        pytest.skip(reason)
    (result,) = node_validate([_statement(client)])
    assert result.ok, result.describe()
