"""No PHI in logs (issue #7 item 3; fhir_adapter/logsafe.py).

A realistic session (pushes of children with names, birth dates and member ids by transaction,
PUT and ``$ingest``; evaluations; searches by member id and birth date; failing requests that carry
PHI in the body, the query string and an exception message; a token request) runs with every
logger at DEBUG (root, uvicorn, fastapi, starlette, sqlalchemy, httpx, ours), and the captured log
text is searched for every synthetic name, birth date and member id: none may appear. The same
is checked on a real ``fhir-adapter serve`` process (uvicorn's own access and error logs)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import Request
from fastapi.testclient import TestClient

from fhir_adapter.api.app import create_app
from fhir_adapter.logsafe import (
    DropQueryString,
    DropSqlRows,
    SafeTracebacks,
    safe_traceback,
    uvicorn_log_config,
)
from fhir_adapter.settings import DEFAULT_MEMBER_ID_SYSTEM, Settings
from fhir_adapter.store.db import Store
from tests import cohorts
from tests.api.conftest import MintToken

FHIR = {"Content-Type": "application/fhir+json"}
MEASURE = "oregon-se-issue-focused"
LOGGERS = ("", "uvicorn", "uvicorn.access", "uvicorn.error", "fastapi", "starlette", "sqlalchemy",
           "sqlalchemy.engine", "sqlalchemy.pool", "httpx", "httpcore", "fhir_adapter", "asyncio")  # fmt: skip

#: (id, given, family, birth date, member id): invented, and unlike anything else in a log.
CHILDREN = [
    ("c1", "Zephyrine", "Quillfeather", "2021-07-13", "MBR58213ZQ"),
    ("c2", "Ottoline", "Brackenmoor", "2022-11-29", "MBR77402OB"),
    ("c3", "Thaddeus", "Wrenhollow", "2020-04-06", "MBR11935TW"),
    ("c4", "Isembard", "Fernwhistle", "2023-02-17", "MBR60021IF"),
]
#: Values that only ever travel in failing requests.
FAILING = ("Marigold", "Vexmoor", "2019-09-09", "MBR99999XX")


def _patient(pid: str, given: str, family: str, birth: str, member: str) -> dict[str, Any]:
    return cohorts.patient(pid, birth, member=member, name=[{"given": [given], "family": family}])


def _phi() -> list[str]:
    values = [v for child in CHILDREN for v in child[1:]] + list(FAILING)
    # dates also as they might be rendered: 2021-07-13 → 20210713
    return values + [v.replace("-", "") for v in values if v[:2] == "20" and "-" in v]


def _leaks(text: str) -> list[str]:
    return [value for value in _phi() if value in text]


@pytest.fixture
def everything_logged(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name or None)
    return caplog


def _captured(caplog: pytest.LogCaptureFixture) -> str:
    """Every captured record as a handler would write it, tracebacks included."""
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    return "\n".join(formatter.format(record) for record in caplog.records)


def _session(client: TestClient, ehr: dict[str, str], oha: dict[str, str]) -> None:
    """A day's traffic; every call must be answered (the checks are on the logs)."""
    (p1, p2, p3, p4) = [_patient(*child) for child in CHILDREN]
    transaction = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
            for r in (p1, cohorts.full_year("c1"), cohorts.eob("e1", "c1", "2025-03-01"),
                      p2, cohorts.full_year("c2", cco="IHN"))
        ],
    }  # fmt: skip
    assert client.post("/fhir", json=transaction, headers={**FHIR, **ehr}).status_code == 200
    assert client.put("/fhir/Patient/c3", json=p3, headers={**FHIR, **ehr}).status_code == 201
    bad_line = {
        "resourceType": "Patient",
        "id": "bad id!",
        "name": [{"family": "Vexmoor"}],
        "birthDate": "2019-09-09",
    }
    ndjson = (
        b"\n".join(orjson.dumps(r) for r in (p4, cohorts.full_year("c4"), bad_line))
        + b"\n{not json Marigold\n"
    )
    ingest = client.post(
        "/fhir/$ingest", content=ndjson, headers={"Content-Type": "application/fhir+ndjson", **ehr}
    )
    assert ingest.status_code == 200, ingest.text
    period = {"periodStart": "2025-01-01", "periodEnd": "2025-12-31"}
    for params in (period, {**period, "subject": "Patient/c1"}, {**period, "reportType": "subject-list"}):
        answer = client.get(f"/fhir/Measure/{MEASURE}/$evaluate-measure", params=params, headers=oha)
        assert answer.status_code == 200, answer.text
    searches = [
        ("Patient", {"identifier": f"{DEFAULT_MEMBER_ID_SYSTEM}|MBR58213ZQ"}),
        ("Patient", {"birthdate": "2022-11-29"}),
        ("Patient", {"identifier": "MBR99999XX", "name": "Marigold"}),
        ("Coverage", {"patient": "Patient/c2"}),
        ("ExplanationOfBenefit", {"patient": "Patient/c1", "_count": "1"}),
    ]
    for rtype, params in searches:
        assert client.get(f"/fhir/{rtype}", params=params, headers=oha).status_code == 200
    assert client.get("/fhir/Patient/c1", headers=oha).status_code == 200
    failing = [
        client.post("/fhir/Patient", content=b'{"resourceType": "Patient", "name": [{"family": "Vexmoor"}', headers={**FHIR, **ehr}),
        client.put("/fhir/Patient/c9", json=_patient("c8", "Marigold", "Vexmoor", "2019-09-09", "MBR99999XX"),
                   headers={**FHIR, **ehr}),
        client.get("/fhir/Patient", params={"identifier:oops": "x|MBR99999XX"}, headers=oha),
        client.get("/fhir/Patient", params={"_lastUpdated": "Marigold-2019-09-09"}, headers=oha),
        client.get(f"/fhir/Measure/{MEASURE}/$evaluate-measure",
                   params={**period, "subject": "Patient/Marigold", "reporter": "Vexmoor"}, headers=oha),
        client.post("/fhir/_test/explode", content=b"Marigold Vexmoor 2019-09-09 MBR99999XX", headers=ehr),
        client.get("/fhir/Patient", params={"identifier": "MBR99999XX"}),  # no token: 401
    ]  # fmt: skip
    assert [r.status_code >= 400 for r in failing] == [True] * len(failing), [r.status_code for r in failing]
    assert failing[-2].status_code == 500


def test_a_realistic_session_logs_no_phi(
    auth_settings: Settings, store: Store, mint_token: MintToken, everything_logged: pytest.LogCaptureFixture
) -> None:
    app = create_app(auth_settings, store=store)

    @app.post("/fhir/_test/explode")
    async def explode(request: Request) -> None:
        """An internal error whose message quotes the request (as a careless library might)."""
        raise RuntimeError(f"cannot handle {(await request.body()).decode()}")

    with TestClient(app, raise_server_exceptions=False) as client:
        ehr = {"Authorization": f"Bearer {mint_token('ehr', 'system/*.cruds')}"}
        oha = {"Authorization": f"Bearer {mint_token('oha', 'system/*.rs')}"}
        _session(client, ehr, oha)
    text = _captured(everything_logged)
    assert len(everything_logged.records) > 50  # the loggers really were on
    assert "SELECT" in text and "unexpected RuntimeError" in text  # SQL and the 500 were logged
    assert _leaks(text) == []


# --------------------------------------------------------------------------------------------------
# the filters one by one


def _record(name: str, msg: str, *args: Any, exc: BaseException | None = None) -> logging.LogRecord:
    info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord(name, logging.INFO, __file__, 1, msg, args, info)


def test_access_lines_lose_their_query_string() -> None:
    record = _record("uvicorn.access", '%s - "%s %s HTTP/%s" %d', "10.0.0.1", "GET",
                     "/fhir/Patient?identifier=x|MBR58213ZQ&birthdate=2021-07-13", "1.1", 200)  # fmt: skip
    assert DropQueryString().filter(record)
    assert record.getMessage() == '10.0.0.1 - "GET /fhir/Patient HTTP/1.1" 200'


def test_httpx_request_lines_lose_their_query_string() -> None:
    url = httpx.URL("http://testserver/fhir/Patient?identifier=MBR58213ZQ")
    record = _record("httpx", 'HTTP Request: %s %s "%s %d %s"', "GET", url, "HTTP/1.1", 200, "OK")
    DropQueryString().filter(record)
    assert record.getMessage() == 'HTTP Request: GET http://testserver/fhir/Patient "HTTP/1.1 200 OK"'


def test_tracebacks_lose_their_messages() -> None:
    _pid, given, family, birth, _member = CHILDREN[0]  # (frames show source lines: no literals there)
    try:
        try:
            raise KeyError(family)
        except KeyError as inner:
            raise ValueError(f"{given} born {birth}") from inner
    except ValueError as exc:
        record = _record("uvicorn.error", "Exception in ASGI application", exc=exc)
        text = safe_traceback(exc)
    SafeTracebacks().filter(record)
    formatted = logging.Formatter().format(record)
    for out in (text, formatted):
        assert "builtins.KeyError" in out and "builtins.ValueError" in out and "test_no_phi_in_logs.py" in out
        assert _leaks(out) == []


def test_sql_rows_are_dropped() -> None:
    assert not DropSqlRows().filter(logging.LogRecord("sqlalchemy.engine.Engine", logging.DEBUG, "", 1, "Row %r",
                                                      (("Quillfeather",),), None))  # fmt: skip
    assert DropSqlRows().filter(_record("sqlalchemy.engine.Engine", "SELECT 1"))


def test_serve_log_config_wires_the_filters() -> None:
    config = uvicorn_log_config("debug")
    assert config["loggers"]["uvicorn.access"]["filters"] == ["drop_query"]
    assert config["handlers"]["access"]["filters"] == ["drop_query"]
    assert config["loggers"]["uvicorn.error"]["filters"] == ["safe_tracebacks"]
    assert config["filters"]["drop_query"]["()"] is DropQueryString


# --------------------------------------------------------------------------------------------------
# a real server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_at_debug_logs_no_phi(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "FHIR_ADAPTER_DATABASE_URL": f"sqlite:///{tmp_path / 'serve.db'}",
           "FHIR_ADAPTER_AUTH_REQUIRED": "false"}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "fhir_adapter", "serve", "--port", str(port), "--log-level", "debug"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{base}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        child = _patient(*CHILDREN[0])
        assert httpx.put(f"{base}/fhir/Patient/c1", json=child, headers=FHIR, timeout=10).status_code == 201
        for params in ({"identifier": f"{DEFAULT_MEMBER_ID_SYSTEM}|MBR58213ZQ"}, {"birthdate": "2021-07-13"},
                       {"identifier:oops": "MBR99999XX", "name": "Marigold"}):  # fmt: skip
            assert httpx.get(f"{base}/fhir/Patient", params=params, timeout=10).status_code in (200, 400)
        bad = httpx.post(
            f"{base}/fhir/Patient", content=b'{"name": [{"family": "Vexmoor"}', headers=FHIR, timeout=10
        )
        assert bad.status_code == 400
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            out, errors = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, errors = proc.communicate()
    text = out.decode() + errors.decode()
    assert "GET /fhir/Patient HTTP/1.1" in text  # the access log is on, without the query
    assert _leaks(text) == []
