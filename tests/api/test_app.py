"""The service skeleton: discovery, health, metrics, errors as OperationOutcome, async jobs."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import orjson
import pytest
from fastapi import Request
from fastapi.testclient import TestClient
from sqlalchemy import text
from starlette.responses import Response

from fhir_adapter.api.app import create_app
from fhir_adapter.api.jobs import JobContext, JobResult
from fhir_adapter.settings import Settings
from fhir_adapter.store.db import Store


def _outcome(response: Any) -> dict[str, Any]:
    assert response.headers["content-type"].startswith("application/fhir+json")
    body: dict[str, Any] = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"]
    return body


def test_metadata_is_a_capability_statement(client: TestClient) -> None:
    response = client.get("/fhir/metadata")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/fhir+json; charset=utf-8"
    body = response.json()
    assert body["resourceType"] == "CapabilityStatement"
    assert body["fhirVersion"] == "4.0.1"
    assert body["kind"] == "capability"
    assert body["rest"][0]["mode"] == "server"


def test_healthz_and_metrics(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    client.get("/fhir/metadata")
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert (
        'fhir_adapter_http_requests_total{method="GET",route="/fhir/metadata",status="200"}' in metrics.text
    )


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        pytest.param("GET", "/fhir/no/such/thing/here", 404, "not-found", id="unknown-route"),
        pytest.param("PATCH", "/fhir/metadata", 405, "not-supported", id="wrong-method"),
        pytest.param("GET", "/fhir/_jobs/does-not-exist", 404, "not-found", id="unknown-job"),
    ],
)
def test_errors_are_operation_outcomes(
    client: TestClient, method: str, path: str, status: int, code: str
) -> None:
    response = client.request(method, path)
    assert response.status_code == status
    assert _outcome(response)["issue"][0]["code"] == code


def test_body_over_the_limit_is_413_before_parsing(settings: Settings, store: Store) -> None:
    small = settings.model_copy(update={"max_body_bytes": 2048})
    app = create_app(small, store=store)

    @app.post("/echo")
    async def echo(request: Request) -> Response:
        return Response(await request.body())

    with TestClient(app, raise_server_exceptions=False) as client:
        declared = client.post("/fhir/metadata", content=b"x" * 4096)
        assert declared.status_code == 413
        assert _outcome(declared)["issue"][0]["code"] == "too-costly"

        def chunks() -> Any:
            for _ in range(4):
                yield b"y" * 1024

        streamed = client.post("/echo", content=chunks())
        assert streamed.status_code == 413
        assert client.post("/echo", content=b"z" * 100).content == b"z" * 100


def test_unexpected_errors_hide_the_trace(client: TestClient) -> None:
    app = client.app

    @app.get("/boom")  # type: ignore[attr-defined]
    def boom() -> None:
        raise RuntimeError("secret patient name Zoe")

    response = client.get("/boom")
    assert response.status_code == 500
    body = _outcome(response)
    assert "Zoe" not in response.text and "Traceback" not in response.text
    assert body["issue"][0]["severity"] == "fatal"


def _poll(client: TestClient, url: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(url)
        if response.status_code != 202 or time.monotonic() > deadline:
            return response
        assert response.headers["Retry-After"] == "2"
        time.sleep(0.05)


def test_job_lifecycle_progress_result_cancel_rerun(client: TestClient) -> None:
    jobs = client.app.state.jobs  # type: ignore[attr-defined]
    gate = threading.Event()

    def slow(ctx: JobContext, request: dict[str, Any]) -> JobResult:
        ctx.progress("halfway")
        gate.wait(10)
        ctx.progress("finishing")
        return JobResult(orjson.dumps({"resourceType": "Parameters", "id": request["name"]}))

    jobs.register("test-slow", slow)
    job_id = jobs.submit("test-slow", {"name": "one"})
    url = f"/fhir/_jobs/{job_id}"
    deadline = time.monotonic() + 10
    while (running := client.get(url)).headers.get("X-Progress") != "halfway":
        assert time.monotonic() < deadline, running.headers
        time.sleep(0.02)
    assert running.status_code == 202
    gate.set()
    done = _poll(client, url)
    assert done.status_code == 200
    assert done.json() == {"resourceType": "Parameters", "id": "one"}

    rerun = client.post(url + "/$rerun")
    assert rerun.status_code == 202
    second = rerun.headers["Content-Location"]
    assert second.endswith("/fhir/_jobs/" + second.rsplit("/", 1)[1]) and second != url
    assert _poll(client, second.replace("http://testserver", "")).status_code == 200

    assert client.delete(url).status_code == 202
    assert client.get(url).status_code == 404


def test_cancel_stops_a_running_job_and_discards_its_result(client: TestClient) -> None:
    jobs = client.app.state.jobs  # type: ignore[attr-defined]
    started, release = threading.Event(), threading.Event()

    def waits(ctx: JobContext, _request: dict[str, Any]) -> JobResult:
        ctx.progress("started")
        started.set()
        release.wait(10)
        ctx.progress("after cancel")  # raises: cancelled
        return JobResult(b"{}")

    jobs.register("test-wait", waits)
    job_id = jobs.submit("test-wait", {})
    assert started.wait(10)
    assert client.delete(f"/fhir/_jobs/{job_id}").status_code == 202
    release.set()
    time.sleep(0.2)
    assert jobs.get(job_id).status == "cancelled"
    assert client.get(f"/fhir/_jobs/{job_id}").status_code == 404


def test_failed_job_is_an_outcome_and_rerunnable(client: TestClient) -> None:
    jobs = client.app.state.jobs  # type: ignore[attr-defined]
    calls: list[int] = []

    def flaky(_ctx: JobContext, _request: dict[str, Any]) -> JobResult:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("disk on fire")
        return JobResult(b'{"resourceType":"Bundle","type":"collection"}')

    jobs.register("test-flaky", flaky)
    url = f"/fhir/_jobs/{jobs.submit('test-flaky', {})}"
    failed = _poll(client, url)
    assert failed.status_code == 500
    message = _outcome(failed)["issue"][0]["diagnostics"]
    assert "$rerun" in message and "disk on fire" not in message
    rerun = client.post(url + "/$rerun")
    assert _poll(client, rerun.headers["Content-Location"]).status_code == 200


def test_restart_fails_orphaned_running_jobs_and_resumes_queued_ones(
    settings: Settings, store: Store
) -> None:
    dead = f"{socket.gethostname()}:999999999"  # no such pid
    with store.write() as conn:
        for job_id, status in (("orphan-running", "running"), ("orphan-queued", "queued")):
            conn.execute(
                text(
                    "INSERT INTO jobs (id, kind, status, request, created_at, updated_at, worker) "
                    "VALUES (:id, 'test-echo', :status, '{\"x\": 1}', 1, 1, :w)"
                ),
                {"id": job_id, "status": status, "w": dead},
            )
    app = create_app(settings, store=store)

    with TestClient(app, raise_server_exceptions=False) as client:
        app.state.jobs.register("test-echo", lambda _ctx, req: JobResult(orjson.dumps(req)))
        app.state.jobs.recover()  # the kind registered after start-up: recover again to pick it up
        failed = client.get("/fhir/_jobs/orphan-running")
        assert failed.status_code == 500
        assert "interrupted" in _outcome(failed)["issue"][0]["diagnostics"]
        resumed = _poll(client, "/fhir/_jobs/orphan-queued")
        assert resumed.status_code == 200, resumed.text
        assert resumed.json() == {"x": 1}
