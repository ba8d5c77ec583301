"""``POST /fhir/$import``: always asynchronous, only from allowed hosts, each file acknowledged like
``$ingest`` (a real HTTP file server in a thread; SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from fhir_adapter.api.app import create_app
from fhir_adapter.settings import Settings
from fhir_adapter.store.db import Store
from tests import cohorts

Routes = dict[str, tuple[int, dict[str, str], bytes]]


class FileServer:
    """An HTTP server on 127.0.0.1 serving ``routes`` (path → status, headers, body)."""

    def __init__(self) -> None:
        self.routes: Routes = {}
        self.requests: list[str] = []
        routes, requests = self.routes, self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                requests.append(self.path)
                status, headers, body = routes.get(self.path, (404, {}, b"not here"))
                self.send_response(status)
                for key, value in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.base = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture
def files() -> Iterator[FileServer]:
    server = FileServer()
    yield server
    server.close()


@pytest.fixture
def importer(api_settings: Settings, store: Store, files: FileServer) -> Iterator[Callable[..., TestClient]]:
    opened: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        settings = api_settings.model_copy(
            update={
                "import_allowed_hosts": [f"http://127.0.0.1:{files.port}"],
                "max_body_bytes": 4096,
                **overrides,
            }
        )
        client = TestClient(create_app(settings, store=store), raise_server_exceptions=False)
        client.__enter__()
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)


def ndjson(*resources: dict[str, Any]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in resources)


def manifest(*inputs: tuple[str, str]) -> dict[str, Any]:
    return {
        "inputFormat": "application/fhir+ndjson",
        "inputSource": "https://ehr.example.org",
        "input": [{"type": t, "url": u} for t, u in inputs],
    }


def run(client: TestClient, body: Any, timeout: float = 30.0) -> dict[str, Any]:
    response = client.post("/fhir/$import", json=body)
    assert response.status_code == 202, response.text
    status = response.headers["Content-Location"]
    deadline = time.monotonic() + timeout
    while (done := client.get(status)).status_code == 202 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert done.status_code == 200, done.text
    outcome: dict[str, Any] = done.json()
    assert outcome["resourceType"] == "OperationOutcome"
    return outcome


def texts(outcome: dict[str, Any]) -> list[str]:
    return [str(i["diagnostics"]) for i in outcome["issue"]]


def test_import_stores_files_with_the_ingest_acknowledgement(
    importer: Callable[..., TestClient], files: FileServer
) -> None:
    client = importer()
    files.routes["/Patient.ndjson"] = (
        200,
        {"Content-Type": "application/fhir+ndjson"},
        ndjson(cohorts.patient("imp-1", "2015-01-01"), cohorts.patient("imp-2", None)) + b"{not json\n",
    )
    files.routes["/Coverage.ndjson"] = (200, {}, ndjson(cohorts.full_year("imp-1")))
    outcome = run(
        client,
        manifest(("Patient", f"{files.base}/Patient.ndjson"), ("Coverage", f"{files.base}/Coverage.ndjson")),
    )
    summary = outcome["issue"][0]
    assert summary["severity"] == "information"
    assert "2 files: 2 imported, 0 not imported" in summary["diagnostics"]
    assert "created 3" in summary["diagnostics"] and "rejected 1" in summary["diagnostics"]
    found = texts(outcome)
    assert any("Patient.ndjson" in t and "line 3" in t and "not JSON" in t for t in found)
    warning = next(i for i in outcome["issue"] if i.get("details", {}).get("coding", [{}])[0].get("code")
                   == "patient-no-birth-date")  # fmt: skip
    assert "Patient.ndjson" in warning["diagnostics"] and "imp-2" in warning["diagnostics"]
    read = client.get("/fhir/Patient/imp-1")
    assert read.status_code == 200 and read.json()["meta"]["source"] == "rest"
    assert client.get("/fhir/Coverage/cov-imp-1-ALLCARE").status_code == 200


def test_import_by_parameters(importer: Callable[..., TestClient], files: FileServer) -> None:
    client = importer()
    files.routes["/p.ndjson"] = (200, {}, ndjson(cohorts.patient("par-1", "2015-01-01")))
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "inputFormat", "valueCode": "application/fhir+ndjson"},
            {"name": "input", "part": [{"name": "type", "valueCode": "Patient"},
                                       {"name": "url", "valueUri": f"{files.base}/p.ndjson"}]},
        ],
    }  # fmt: skip
    assert "1 imported" in run(client, body)["issue"][0]["diagnostics"]
    assert client.get("/fhir/Patient/par-1").status_code == 200


@pytest.mark.parametrize(
    ("route", "message"),
    [
        pytest.param((302, {"Location": "http://localhost:{port}/good.ndjson"}, b""), "redirected to another host",
                     id="redirect-to-another-host"),
        pytest.param((200, {}, b"x" * 5000), "more than the limit", id="oversize"),
        pytest.param((500, {}, b"boom"), "HTTP 500", id="server-error"),
    ],
)  # fmt: skip
def test_a_failing_file_does_not_stop_the_others(
    importer: Callable[..., TestClient],
    files: FileServer,
    route: tuple[int, dict[str, str], bytes],
    message: str,
) -> None:
    client = importer()
    status, headers, body = route
    files.routes["/bad.ndjson"] = (status, {k: v.format(port=files.port) for k, v in headers.items()}, body)
    files.routes["/good.ndjson"] = (200, {}, ndjson(cohorts.patient("ok-1", "2015-01-01")))
    outcome = run(
        client, manifest(("Patient", f"{files.base}/bad.ndjson"), ("Patient", f"{files.base}/good.ndjson"))
    )
    summary = outcome["issue"][0]
    assert summary["severity"] == "warning" and "1 imported, 1 not imported" in summary["diagnostics"]
    failed = next(i for i in outcome["issue"] if "not imported:" in i["diagnostics"])
    assert failed["severity"] == "error" and message in failed["diagnostics"]
    assert files.requests.count("/good.ndjson") == 1  # the redirect target on 'localhost' was never fetched
    assert client.get("/fhir/Patient/ok-1").status_code == 200


def test_a_redirect_on_the_same_host_is_followed(
    importer: Callable[..., TestClient], files: FileServer
) -> None:
    client = importer()
    files.routes["/old.ndjson"] = (301, {"Location": "/new.ndjson"}, b"")
    files.routes["/new.ndjson"] = (200, {}, ndjson(cohorts.patient("moved-1", "2015-01-01")))
    outcome = run(client, manifest(("Patient", f"{files.base}/old.ndjson")))
    assert outcome["issue"][0]["severity"] == "information"
    assert files.requests == ["/old.ndjson", "/new.ndjson"]


@pytest.mark.parametrize(
    ("allowed", "url", "status", "where"),
    [
        pytest.param([], "http://127.0.0.1:{port}/a.ndjson", 400, None, id="nothing-allowed"),
        pytest.param(["127.0.0.1:{port}"], "http://127.0.0.1:{port}/a.ndjson", 400, "input[0].url",
                     id="http-not-allowed-for-an-https-entry"),
        pytest.param(["http://127.0.0.1:{port}"], "http://127.0.0.1:1/a.ndjson", 400, "input[0].url",
                     id="other-port"),
        pytest.param(["http://127.0.0.1:{port}"], "http://169.254.169.254/latest/meta-data/", 400,
                     "input[0].url", id="metadata-service"),
        pytest.param(["http://127.0.0.1:{port}"], "https://10.0.0.1/a.ndjson", 400, "input[0].url",
                     id="private-address"),
        pytest.param(["http://127.0.0.1:{port}"], "http://localhost:{port}/a.ndjson", 400, "input[0].url",
                     id="loopback-name-not-listed"),
    ],
)  # fmt: skip
def test_refused_before_anything_is_fetched(
    importer: Callable[..., TestClient],
    files: FileServer,
    allowed: list[str],
    url: str,
    status: int,
    where: str | None,
) -> None:
    client = importer(import_allowed_hosts=[a.format(port=files.port) for a in allowed])
    response = client.post("/fhir/$import", json=manifest(("Patient", url.format(port=files.port))))
    assert response.status_code == status, response.text
    issue = response.json()["issue"][0]
    assert issue.get("expression", [None]) == [where]
    assert files.requests == []


def test_a_listed_name_that_resolves_to_loopback_is_refused_at_fetch_time(
    importer: Callable[..., TestClient], files: FileServer
) -> None:
    client = importer(import_allowed_hosts=[f"http://localhost:{files.port}"])
    files.routes["/a.ndjson"] = (200, {}, ndjson(cohorts.patient("lo-1", "2015-01-01")))
    outcome = run(client, manifest(("Patient", f"http://localhost:{files.port}/a.ndjson")))
    assert outcome["issue"][0]["severity"] == "error"
    assert any("non-public address" in t for t in texts(outcome))
    assert files.requests == []


@pytest.mark.parametrize(
    ("content_type", "body", "status"),
    [
        pytest.param("text/plain", b"{}", 415, id="not-json"),
        pytest.param("application/json", b"{not json", 400, id="broken-json"),
        pytest.param("application/json", b'{"input": []}', 400, id="no-inputs"),
    ],
)
def test_bad_requests(
    importer: Callable[..., TestClient], content_type: str, body: bytes, status: int
) -> None:
    response = importer().post("/fhir/$import", content=body, headers={"Content-Type": content_type})
    assert response.status_code == status, response.text
    assert response.json()["resourceType"] == "OperationOutcome"


def test_import_needs_write_scopes(
    auth_settings: Settings, store: Store, files: FileServer, mint_token: Any, auth_client: TestClient
) -> None:
    settings = auth_settings.model_copy(update={"import_allowed_hosts": [f"http://127.0.0.1:{files.port}"]})
    with TestClient(create_app(settings, store=store), raise_server_exceptions=False) as client:
        reader = mint_token("ehr", "system/Patient.rs")
        response = client.post(
            "/fhir/$import",
            json=manifest(("Patient", f"{files.base}/a.ndjson")),
            headers={"Authorization": f"Bearer {reader}"},
        )
    assert response.status_code == 403
