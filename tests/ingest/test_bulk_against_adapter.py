"""The Bulk Data client (:mod:`fhir_adapter.ingest.bulk_client`, through ``pull``) against this
adapter's own ``$export``, served by ``fhir-adapter serve`` in a second process: the pulled store
evaluates exactly like the source store, first in full, then incrementally after an update and
deletions (``_since`` and the ``deleted`` files), on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import text

from fhir_adapter.fhir.dates import to_micros
from fhir_adapter.ingest.pull import PullRequest, pull
from fhir_adapter.ingest.runner import ingest_paths, utc_now
from fhir_adapter.measure.spec import Mappings
from fhir_adapter.report.export import flat_table
from fhir_adapter.settings import Settings
from fhir_adapter.store.db import ParsedResource, Store
from fhir_adapter.store.evaluate import evaluate
from fhir_adapter.synth import synthesize
from tests.conftest import StoreFactory

SOURCE = "synth"
MEASURES = (("oregon-se-issue-focused", date(2025, 1, 1)), ("oregon-se-reach", date(2025, 1, 1)))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def served(store: Store, tmp_path: Path) -> Iterator[str]:
    """``fhir-adapter serve`` on ``store`` (authorisation off); yields its FHIR base URL."""
    port = _free_port()
    env = {
        **os.environ,
        "FHIR_ADAPTER_DATABASE_URL": store.engine.url.render_as_string(hide_password=False),
        "FHIR_ADAPTER_AUTH_REQUIRED": "false",
        "FHIR_ADAPTER_EXPORT_DIR": str(tmp_path / "exports"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "fhir_adapter", "serve", "--port", str(port), "--workers", "1", "--log-level", "warning"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/fhir"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def outcomes(store: Store, mappings: Mappings) -> dict[str, list[tuple[Any, ...]]]:
    """Per measure: every child's results (without the source name, which differs) and the
    per-CCO summary counts."""
    now = to_micros(utc_now())
    out: dict[str, list[tuple[Any, ...]]] = {}
    for measure, start in MEASURES:
        end = date(start.year, 12, 31)
        spec = mappings.measure_for(measure, end)
        ev = evaluate(store, mappings, spec, start, end, now, "all")
        children = [
            tuple(v for k, v in row.items() if k != "patient_source")
            for row in flat_table(ev, "results").rows
        ]
        summary = [
            tuple(v for k, v in row.items() if k not in ("data_cut",))
            for row in flat_table(ev, "summary").rows
        ]
        out[measure] = sorted(children, key=repr) + summary
    return out


def _pull(settings: Settings, store: Store, base: str, work: Path) -> Any:
    return pull(settings, store, PullRequest(base_url=base, source="adapter", bulk=True), work_dir=work)


def test_pulled_store_evaluates_like_the_source(
    store: Store,
    store_factory: StoreFactory,
    served: str,
    mappings: Mappings,
    settings: Settings,
    tmp_path: Path,
) -> None:
    data = tmp_path / "synth"
    synthesize(data, 60, 11, first_year=2024, last_year=2025)
    paths = sorted(p for p in data.rglob("*.ndjson"))
    ingest_paths(store, paths, SOURCE, batch_size=1000)
    pulled = store_factory()
    client_settings = settings.model_copy(update={"pull_max_wait_seconds": 0.3})
    work = tmp_path / "work"
    work.mkdir()

    first = _pull(client_settings, pulled, served, work)
    assert first.mode == "bulk" and first.since_used is None and first.files > 0
    assert first.ingest.stats.created > 0 and not first.issues
    before = outcomes(store, mappings)
    assert sum(len(v) for v in before.values()) > 0
    assert outcomes(pulled, mappings) == before

    # change the source: one enrolled child loses its Coverage, another's birth date changes
    with store.read() as conn:
        rows = conn.execute(
            text(
                "SELECT p.member_id, r.rid FROM f_coverage c JOIN resources r ON r.rkey = c.rkey "
                "JOIN f_patient p ON p.source = c.source AND p.pid = c.pid JOIN resources rp ON rp.rkey = p.rkey "
                "WHERE r.superseded_at IS NULL AND r.deleted = 0 AND rp.superseded_at IS NULL AND rp.deleted = 0 "
                "AND p.member_id IS NOT NULL ORDER BY p.member_id, r.rid"
            )
        ).all()
        member = rows[0][0]
        coverages = [rid for m, rid in rows if m == member]
        patient_rid, body = conn.execute(
            text(
                "SELECT r.rid, b.body FROM resources r JOIN resource_bodies b ON b.rkey = r.rkey JOIN f_patient p "
                "ON p.rkey = r.rkey WHERE r.superseded_at IS NULL AND r.deleted = 0 AND p.member_id <> :m "
                "AND p.birth_raw IS NOT NULL ORDER BY r.rid LIMIT 1"
            ),
            {"m": member},
        ).one()
    patient = orjson.loads(body)
    patient["birthDate"] = "2010-01-01"  # out of every age band
    now = to_micros(utc_now())
    store.write_batch(
        SOURCE,
        [
            ParsedResource("Coverage", rid, {"resourceType": "Coverage", "id": rid}, deleted=True)
            for rid in coverages
        ]
        + [ParsedResource("Patient", str(patient_rid), patient)],
        now,
    )
    after = outcomes(store, mappings)
    assert after != before

    second = _pull(client_settings, pulled, served, work)
    assert second.since_used is not None  # incremental: _since = the first export's transactionTime
    assert second.ingest.stats.deleted == len(coverages)
    assert second.ingest.stats.updated == 1 and second.ingest.stats.created == 0
    assert outcomes(pulled, mappings) == after


class FaultProxy:
    """A reverse proxy in front of the served adapter that injects the faults a Bulk client
    meets in the field: 429 + Retry-After on the first kick-off, 503 on the first status poll,
    and every export file cut off midway the first time it is downloaded. It forwards the Host
    header, so the adapter's manifest points back at the proxy."""

    def __init__(self, upstream: str) -> None:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import Response, StreamingResponse
        from starlette.routing import Route

        self.upstream = upstream.rstrip("/")
        self.kickoffs = 0
        self.polls = 0
        self.cut: set[str] = set()
        self.faults: list[str] = []
        client = httpx.Client(timeout=30)

        async def forward(request: Request) -> Response:
            path = request.url.path
            query = request.url.query
            url = f"{self.upstream}{path}" + (f"?{query}" if query else "")
            headers = {k: v for k, v in request.headers.items() if k.lower() not in ("content-length",)}
            if path.endswith("/$export"):
                self.kickoffs += 1
                if self.kickoffs == 1:
                    self.faults.append("429 kick-off")
                    return Response(status_code=429, headers={"Retry-After": "1"})
            if "/_jobs/" in path and request.method == "GET":
                self.polls += 1
                if self.polls == 1:
                    self.faults.append("503 poll")
                    return Response(status_code=503)
            upstream = client.request(request.method, url, headers=headers, content=await request.body())
            passed = {
                k: v
                for k, v in upstream.headers.items()
                if k.lower() not in ("content-length", "transfer-encoding")
            }
            if "/_exports/" in path and path not in self.cut and len(upstream.content) > 10:
                self.cut.add(path)
                self.faults.append("cut download")
                body = upstream.content

                async def partial() -> Any:
                    yield body[: len(body) // 2]
                    raise ConnectionResetError("download killed")  # the client sees a broken body

                return StreamingResponse(partial(), status_code=upstream.status_code, headers=passed)
            return Response(upstream.content, status_code=upstream.status_code, headers=passed)

        self.app = Starlette(routes=[Route("/{path:path}", forward, methods=["GET", "POST", "DELETE"])])
        self._client = client

    def __enter__(self) -> str:
        import threading

        import uvicorn

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="critical", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "proxy did not start"
            time.sleep(0.01)
        return f"http://127.0.0.1:{port}/fhir"

    def __exit__(self, *_exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._client.close()


def test_client_survives_injected_faults_on_the_adapters_export(
    store: Store,
    store_factory: StoreFactory,
    served: str,
    mappings: Mappings,
    settings: Settings,
    tmp_path: Path,
) -> None:
    data = tmp_path / "synth"
    synthesize(data, 40, 5, first_year=2024, last_year=2025)
    ingest_paths(store, sorted(data.rglob("*.ndjson")), SOURCE, batch_size=1000)
    pulled = store_factory()
    client_settings = settings.model_copy(update={"pull_max_wait_seconds": 1.5})
    work = tmp_path / "work"
    work.mkdir()
    proxy = FaultProxy(served.removesuffix("/fhir"))
    with proxy as base:
        result = _pull(client_settings, pulled, base, work)
    assert {"429 kick-off", "503 poll", "cut download"} <= set(proxy.faults), proxy.faults
    assert proxy.kickoffs == 2  # the throttled kick-off, then the accepted one
    assert result.files > 0 and not result.issues
    assert outcomes(pulled, mappings) == outcomes(store, mappings)
