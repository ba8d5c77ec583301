"""Discovery and operations endpoints: ``/fhir/metadata`` (R4 §3.1.0.15 capabilities
interaction), ``/healthz`` and ``/metrics`` (Prometheus text exposition format 0.0.4).

``/metrics`` is for operators: an oha or admin client's access token, or the static scrape token
``Settings.metrics_token`` (docs/security.md)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.responses import Response

from fhir_adapter.api.capabilities import Contribution
from fhir_adapter.api.deps import PolicyDep, StateDep
from fhir_adapter.api.responses import FhirResponse
from fhir_adapter.errors import StoreError
from fhir_adapter.store.db import DRIVER_ERRORS

router = APIRouter()
CAPABILITIES = Contribution()


@router.get("/fhir/metadata", tags=["discovery"], summary="CapabilityStatement (R4 capabilities interaction)")
def metadata(request: Request) -> FhirResponse:
    statement = request.app.state.capability_statement
    return FhirResponse(statement)


@router.get("/healthz", tags=["operations"], summary="Liveness and store reachability")
def healthz(state: StateDep) -> Response:
    try:
        with state.store.read() as conn:
            conn.execute(text("SELECT 1"))
    except DRIVER_ERRORS as exc:
        raise StoreError(f"store unreachable: {exc.__class__.__name__}") from exc
    return Response(b'{"status":"ok"}', media_type="application/json")


@router.get("/metrics", tags=["operations"], summary="Prometheus metrics")
def metrics(request: Request, policy: PolicyDep) -> Response:
    policy.check_metrics()
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
