"""``fhir-adapter publish`` (fhir_adapter/report/publish.py, fhir_adapter/cli/publish.py).

Receivers, all real HTTP on a free port:
- a small recording FHIR server written here (versioned PUT with no-op detection, search, and
  scripted failures: 429 / 503 once, or a request that always fails) for retries, idempotency and
  the result table;
- an independent FHIR server (``@medplum/fhir-router`` in tests/fhirserver/server.mjs) for the
  idempotency of PUTs on a server we did not write;
- the adapter's own service (in-thread uvicorn) for ``$deqm-submit-data``, also behind SMART
  Backend Services with a registered client.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from click.testing import CliRunner
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import text

from fhir_adapter import workflow
from fhir_adapter.api.app import create_app
from fhir_adapter.auth.clients import Registration, register
from fhir_adapter.cli import main
from fhir_adapter.fhir.dates import to_micros
from fhir_adapter.measure.spec import Mappings
from fhir_adapter.report.checks import SUBMIT_DATA_UPDATE_TYPE_EXT, check_measure_report
from fhir_adapter.report.conformance import build_measure
from fhir_adapter.report.publish import (
    PublishRequest,
    RetryPolicy,
    data_cut,
    report_resources,
    retry_after,
    send,
    submit_data_requests,
    update_requests,
)
from fhir_adapter.settings import Settings
from fhir_adapter.store.db import ParsedResource, Store
from fhir_adapter.store.evaluate import Evaluation
from tests import cohorts as c
from tests.smart import jwks, key_pair

ROOT = Path(__file__).resolve().parents[2]
MEASURE = "oregon-se-issue-focused"
PERIOD = ("--period-start", "2025-01-01", "--period-end", "2025-12-31")
Json = dict[str, Any]


# --------------------------------------------------------------------------------------------------
# the sending store: three children


COHORT = [
    # numerator: a finished psychotherapy visit with an SE diagnosis
    c.patient("num", "2022-05-01"),
    c.full_year("num"),
    c.encounter("e-num", "num", "2025-03-10"),
    c.condition("c-num", "num", encounter_id="e-num", recorded="2025-03-10"),
    # denominator only (a care gap)
    c.patient("gap", "2021-02-01"),
    c.full_year("gap"),
    # outside the age band: in no initial population, so nothing is sent about it
    c.patient("old", "2015-01-01"),
    c.full_year("old"),
]


def _write(store: Store, resources: list[Json], at: datetime) -> None:
    items = [ParsedResource(r["resourceType"], r["id"], r) for r in resources]
    store.write_batch("clinic", items, to_micros(at))


@pytest.fixture
def sender(tmp_path: Path) -> Settings:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'sender.db'}", mappings_dir=ROOT / "mappings", ingest_workers=1
    )
    store = workflow.open_store(settings)
    try:
        _write(store, COHORT, datetime(2026, 1, 15, 10, 30, 0, 123456, tzinfo=UTC))  # µs matter
    finally:
        store.close()
    return settings


def _evaluate(settings: Settings, mappings: Mappings) -> tuple[Store, Evaluation]:
    store = workflow.open_store(settings)
    request = workflow.EvaluationRequest(
        MEASURE, date(2025, 1, 1), date(2025, 12, 31), as_of=data_cut(store, exclude_source="x")
    )
    return store, workflow.run_evaluation(settings, store, request, evidence=True, mappings=mappings)


def _publish(settings: Settings, to: str, *args: str) -> Any:
    runner = CliRunner()
    return runner.invoke(
        main,
        ["publish", "--to", to, "--measure", MEASURE, *PERIOD, "--database", settings.database_url, *args],
    )


# --------------------------------------------------------------------------------------------------
# HTTP servers in this process


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(app: FastAPI, port: int | None = None) -> Iterator[str]:
    """``app`` under uvicorn in a thread; yields ``http://127.0.0.1:<port>``."""
    port = port or _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@dataclass
class Receiver:
    """A recording FHIR server: PUT creates or updates (a new version only when the content
    changed), GET reads and searches by type, ``$deqm-submit-data`` is recorded and acknowledged.
    ``script[path]`` holds statuses to answer (once each) before the real work; ``broken[path]`` a
    status to answer always."""

    versions: dict[tuple[str, str], list[Json]] = field(default_factory=dict)
    submitted: list[Json] = field(default_factory=list)
    script: dict[str, deque[int]] = field(default_factory=dict)
    broken: dict[str, int] = field(default_factory=dict)
    log: list[tuple[str, str, int]] = field(default_factory=list)

    def app(self) -> FastAPI:
        app = FastAPI()

        def answer(method: str, path: str) -> Response | None:
            status = self.broken.get(path)
            if status is None and self.script.get(path):
                status = self.script[path].popleft()
            if status is None:
                return None
            self.log.append((method, path, status))
            headers = {"Retry-After": "0"} if status == 429 else {}
            outcome = {
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "error", "code": "invalid", "diagnostics": f"scripted {status}",
                           "expression": ["MeasureReport.group"]}],
            }  # fmt: skip
            return JSONResponse(outcome, status_code=status, headers=headers)

        @app.put("/fhir/{rtype}/{rid}")
        async def put(rtype: str, rid: str, request: Request) -> Response:
            path = f"{rtype}/{rid}"
            failed = answer("PUT", path)
            if failed is not None:
                return failed
            body = orjson.loads(await request.body())
            assert body["id"] == rid and body["resourceType"] == rtype
            history = self.versions.setdefault((rtype, rid), [])
            status = 200
            if not history or history[-1] != body:
                history.append(body)
                status = 201 if len(history) == 1 else 200
            self.log.append(("PUT", path, status))
            return Response(status_code=status, headers={"ETag": f'W/"{len(history)}"'})

        @app.get("/fhir/{rtype}/{rid}")
        async def read(rtype: str, rid: str) -> Response:
            history = self.versions.get((rtype, rid))
            if not history:
                return JSONResponse({"resourceType": "OperationOutcome"}, status_code=404)
            return JSONResponse(history[-1])

        @app.get("/fhir/{rtype}")
        async def search(rtype: str) -> Response:
            found = [h[-1] for (t, _i), h in sorted(self.versions.items()) if t == rtype]
            bundle = {"resourceType": "Bundle", "type": "searchset", "total": len(found),
                      "entry": [{"resource": r} for r in found]}  # fmt: skip
            return JSONResponse(bundle)

        @app.post("/fhir/Measure/$deqm-submit-data")
        async def submit(request: Request) -> Response:
            failed = answer("POST", "Measure/$deqm-submit-data")
            if failed is not None:
                return failed
            self.submitted.append(orjson.loads(await request.body()))
            self.log.append(("POST", "Measure/$deqm-submit-data", 200))
            info = {"severity": "information", "code": "informational", "diagnostics": "stored"}
            outcome = {"resourceType": "OperationOutcome", "issue": [info]}
            return JSONResponse(
                {"resourceType": "Parameters", "parameter": [{"name": "outcome", "resource": outcome}]}
            )

        return app


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    fake = Receiver()
    with serving(fake.app()) as url:
        yield fake, f"{url}/fhir"


# --------------------------------------------------------------------------------------------------
# retries without sockets (httpx.MockTransport)

OK_PUT = PublishRequest(
    "PUT", "MeasureReport/r1", "MeasureReport/r1", {"resourceType": "MeasureReport", "id": "r1"}
)
SUBMIT = PublishRequest(
    "POST", "Measure/$deqm-submit-data", "$deqm-submit-data Patient/p", {"resourceType": "Parameters"}
)
TRANSPORT = -1  # in a script: raise a connection error


@pytest.mark.parametrize(
    ("request_", "script", "outcome", "status", "attempts", "waits"),
    [
        pytest.param(OK_PUT, [201], "created", 201, 1, [], id="created"),
        pytest.param(OK_PUT, [200], "updated", 200, 1, [], id="updated"),
        pytest.param(OK_PUT, [429, 201], "created", 201, 2, [7.0], id="429-waits-retry-after"),
        pytest.param(OK_PUT, [503, 503, 200], "updated", 200, 3, [0.5, 1.0], id="503-exponential-backoff"),
        pytest.param(OK_PUT, [TRANSPORT, 201], "created", 201, 2, [0.5], id="connection-error-retried"),
        pytest.param(OK_PUT, [500, 502, 504], "failed", 504, 3, [0.5, 1.0], id="5xx-until-attempts-run-out"),
        pytest.param(OK_PUT, [TRANSPORT] * 3, "failed", None, 3, [0.5, 1.0], id="unreachable"),
        pytest.param(OK_PUT, [422], "failed", 422, 1, [], id="4xx-not-retried"),
        pytest.param(OK_PUT, [409], "failed", 409, 1, [], id="conflict-not-retried"),
        pytest.param(SUBMIT, [503, 200], "submitted", 200, 2, [0.5], id="submit-data-retried"),
    ],
)
def test_send_retries(
    request_: PublishRequest, script: list[int], outcome: str, status: int | None, attempts: int,
    waits: list[float],
) -> None:  # fmt: skip
    answers = deque(script)

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["content-type"] == "application/fhir+json"
        code = answers.popleft()
        if code == TRANSPORT:
            raise httpx.ConnectError("refused", request=request)
        headers = {"Retry-After": "7"} if code == 429 else {}
        if request.method == "PUT" and code < 300:
            headers["ETag"] = 'W/"4"'
        return httpx.Response(code, headers=headers, json={"resourceType": "OperationOutcome", "issue": []})

    slept: list[float] = []
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        [result] = send(client, "http://x/fhir", [request_], RetryPolicy(attempts=3), sleep=slept.append)
    assert (result.outcome, result.status, result.attempts) == (outcome, status, attempts)
    assert slept == waits
    assert not answers
    if outcome in ("created", "updated"):
        assert result.detail == "version 4"


def test_retry_after_is_capped() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": "3600"})

    slept: list[float] = []
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        [result] = send(client, "http://x", [OK_PUT], RetryPolicy(attempts=2, max_wait=9), sleep=slept.append)
    assert slept == [9]
    assert result.outcome == "failed" and result.status == 429


NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param(None, None, id="absent"),
        pytest.param("0", 0.0, id="zero"),
        pytest.param(" 12 ", 12.0, id="seconds"),
        pytest.param(
            format_datetime(datetime.fromtimestamp(NOW + 30, UTC), usegmt=True), 30.0, id="http-date"
        ),
        pytest.param(
            format_datetime(datetime.fromtimestamp(NOW - 30, UTC), usegmt=True), 0.0, id="date-in-the-past"
        ),
        pytest.param("soon", None, id="unreadable"),
        pytest.param("-3", None, id="negative"),
    ],
)
def test_retry_after(header: str | None, expected: float | None) -> None:
    response = httpx.Response(503, headers={"Retry-After": header} if header is not None else {})
    assert retry_after(response, now=lambda: NOW) == expected


# --------------------------------------------------------------------------------------------------
# what is sent


def test_subject_list_sends_referenced_resources_first(sender: Settings, mappings: Mappings) -> None:
    store, ev = _evaluate(sender, mappings)
    store.close()
    ctx = workflow.report_context(sender, ev.spec.hash)
    resources = report_resources(workflow.build_report(ev, ctx, "subject-list"))
    kinds = [(r["resourceType"], r.get("type")) for r in resources]
    assert kinds[-1] == ("MeasureReport", "subject-list")
    individuals = [r for r in resources if r.get("type") == "individual"]
    assert sorted(r["subject"]["reference"] for r in individuals) == ["Patient/gap", "Patient/num"]
    position = {f"{r['resourceType']}/{r['id']}": i for i, r in enumerate(resources)}
    for i, resource in enumerate(resources):
        if resource["resourceType"] == "List":
            for entry in resource.get("entry", []):
                assert position[entry["item"]["reference"]] < i
    report = resources[-1]
    assert "contained" not in report
    refs = [p["subjectResults"]["reference"] for g in report["group"] for p in g["population"]]
    assert refs and all(position[ref] < len(resources) - 1 for ref in refs)
    measure = build_measure(ev.spec, sender.canonical_base)
    for resource in resources:
        if resource["resourceType"] == "MeasureReport":
            assert check_measure_report(resource, measure) == []
    requests = update_requests(resources)
    assert [(r.method, r.path) for r in requests] == [
        ("PUT", f"{r['resourceType']}/{r['id']}") for r in resources
    ]


def test_submit_data_bundles(sender: Settings, mappings: Mappings) -> None:
    store, ev = _evaluate(sender, mappings)
    try:
        ctx = workflow.report_context(sender, ev.spec.hash)
        requests = submit_data_requests(store, ev, ctx)
    finally:
        store.close()
    measure = build_measure(ev.spec, sender.canonical_base)
    by_subject: dict[str, list[Json]] = {}
    for request in requests:
        assert (request.method, request.path) == ("POST", "Measure/$deqm-submit-data")
        [parameter] = request.body["parameter"]
        assert parameter["name"] == "bundle"
        bundle = parameter["resource"]
        assert bundle["type"] == "collection"
        resources = [e["resource"] for e in bundle["entry"]]
        report = resources[0]
        assert report["type"] == "data-collection"
        assert check_measure_report(report, measure) == []
        assert [e for e in report["extension"] if e["url"] == SUBMIT_DATA_UPDATE_TYPE_EXT] == [
            {"url": SUBMIT_DATA_UPDATE_TYPE_EXT, "valueCode": "snapshot"}
        ]
        assert "group" not in report
        keys = [f"{r['resourceType']}/{r['id']}" for r in resources]
        assert len(keys) == len(set(keys))
        named = {e["reference"] for e in report["evaluatedResource"]}
        assert named <= set(keys)  # every evaluated resource travels with the report
        by_subject[report["subject"]["reference"]] = resources
    assert sorted(by_subject) == ["Patient/gap", "Patient/num"]  # "old" is in no initial population
    num = {f"{r['resourceType']}/{r['id']}" for r in by_subject["Patient/num"]}
    assert {"Patient/num", "Coverage/cov-num-ALLCARE", "Encounter/e-num", "Condition/c-num"} <= num
    gap = {f"{r['resourceType']}/{r['id']}" for r in by_subject["Patient/gap"]}
    assert "Encounter/e-num" not in gap and "Patient/gap" in gap


def test_dry_run_ids_are_stable_until_the_data_changes(sender: Settings) -> None:
    def dry_run() -> list[Json]:
        result = _publish(sender, "http://receiver.example/fhir/", "--report-type", "subject-list",
                          "--submit-data", "--dry-run")  # fmt: skip
        assert result.exit_code == 0, result.output
        return [orjson.loads(line) for line in result.stdout.splitlines()]

    first, second = dry_run(), dry_run()
    assert [(r["method"], r["url"]) for r in first] == [(r["method"], r["url"]) for r in second]
    # the data cut printed can be given back: the same ids
    printed = _publish(sender, "http://receiver.example/fhir", "--dry-run")
    cut = next(line for line in printed.stderr.splitlines() if line.startswith("data cut: ")).split()[2]
    pinned = _publish(sender, "http://receiver.example/fhir", "--dry-run", "--as-of", cut)
    assert pinned.exit_code == 0, pinned.output
    urls = [[orjson.loads(line)["url"] for line in r.stdout.splitlines()] for r in (printed, pinned)]
    assert urls[0] == urls[1]
    assert all(r["url"].startswith("http://receiver.example/fhir/") for r in first)
    assert all("Authorization" not in r["headers"] for r in first)
    puts = [r for r in first if r["method"] == "PUT"]
    posts = [r for r in first if r["method"] == "POST"]
    assert len(posts) == 2
    assert all(r["url"].endswith("/" + r["body"]["resourceType"] + "/" + r["body"]["id"]) for r in puts)

    store = workflow.open_store(sender)
    try:  # new data: a new data cut, hence new reports
        _write(store, [c.encounter("e-gap", "gap", "2025-06-01")], datetime(2026, 2, 1, tzinfo=UTC))
    finally:
        store.close()
    third = dry_run()
    old_ids = {r["url"] for r in puts if "/MeasureReport/" in r["url"]}
    new_ids = {r["url"] for r in third if r["method"] == "PUT" and "/MeasureReport/" in r["url"]}
    assert old_ids and new_ids and not old_ids & new_ids


def test_empty_store_is_a_usage_error(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'empty.db'}")
    result = _publish(settings, "http://receiver.example/fhir", "--dry-run")
    assert result.exit_code == 2
    assert "store is empty" in result.stderr


@pytest.mark.parametrize(
    ("args", "words"),
    [
        pytest.param(["--to", "ftp://x/fhir"], "not an http(s) URL", id="not-http"),
        pytest.param(["--client-id", "c"], "both --client-id and --key", id="client-without-key"),
        pytest.param(
            ["--bearer", "t", "--client-id", "c", "--key", "k"], "either --bearer", id="bearer-and-smart"
        ),
        pytest.param(["--as-of", "yesterday"], "--as-of", id="bad-as-of"),
        pytest.param(["--scope", "system/*.cu"], "--kid and --scope go with", id="scope-without-client"),
        pytest.param(
            ["--client-id", "c", "--key", "/nonexistent.jwks"], "cannot read the key file", id="no-key-file"
        ),
    ],
)
def test_usage_errors(sender: Settings, args: list[str], words: str) -> None:
    to = [] if "--to" in args else ["--to", "http://receiver.example/fhir"]
    result = CliRunner().invoke(
        main, ["publish", *to, "--measure", MEASURE, *PERIOD, "--database", sender.database_url, *args]
    )
    assert result.exit_code == 2, result.output
    assert words in result.stderr


# --------------------------------------------------------------------------------------------------
# publishing to a recording server


def test_retries_show_in_the_table(sender: Settings, receiver: tuple[Receiver, str]) -> None:
    fake, to = receiver
    dry = _publish(sender, to, "--dry-run")
    [summary] = [orjson.loads(line) for line in dry.stdout.splitlines()]
    path = summary["url"].removeprefix(to + "/")
    fake.script[path] = deque([429, 503])
    fake.script["Measure/$deqm-submit-data"] = deque([503])

    result = _publish(sender, to, "--submit-data")
    assert result.exit_code == 0, result.stderr
    assert [entry for entry in fake.log if entry[1] == path] == [
        ("PUT", path, 429),
        ("PUT", path, 503),
        ("PUT", path, 201),
    ]
    row = next(line for line in result.stderr.splitlines() if path in line)
    assert "201" in row and "created" in row and " 3 " in row
    assert len(fake.submitted) == 2
    assert "3 requests: 1 created, 2 submitted" in result.stderr


def test_publishing_twice_updates_and_never_duplicates(
    sender: Settings, receiver: tuple[Receiver, str]
) -> None:
    fake, to = receiver
    first = _publish(sender, to, "--report-type", "subject-list")
    assert first.exit_code == 0, first.stderr
    stored = set(fake.versions)
    reports = httpx.get(f"{to}/MeasureReport").json()
    assert reports["total"] == 3  # the subject-list report and two individual reports
    lists = httpx.get(f"{to}/List").json()["total"]
    assert lists > 0

    second = _publish(sender, to, "--report-type", "subject-list")
    assert second.exit_code == 0, second.stderr
    assert set(fake.versions) == stored  # the same ids: nothing new
    assert httpx.get(f"{to}/MeasureReport").json()["total"] == 3
    assert httpx.get(f"{to}/List").json()["total"] == lists
    for (rtype, _rid), history in fake.versions.items():
        # a report's ``date`` says when it was generated, so reports get a second version; the
        # Lists are the same content, so the receiver keeps version 1
        assert len(history) == (2 if rtype == "MeasureReport" else 1)
    assert "created" in first.stderr and "created" not in second.stderr
    # every reference of the published subject-list report resolves on the receiver
    report = next(h[-1] for h in fake.versions.values() if h[-1].get("type") == "subject-list")
    for group in report["group"]:
        for population in group["population"]:
            listed = httpx.get(f"{to}/{population['subjectResults']['reference']}").json()
            for entry in listed.get("entry", []):
                assert httpx.get(f"{to}/{entry['item']['reference']}").status_code == 200


def test_failures_exit_1_with_the_table(sender: Settings, receiver: tuple[Receiver, str]) -> None:
    fake, to = receiver
    dry = _publish(sender, to, "--report-type", "individual", "--dry-run")
    paths = [orjson.loads(line)["url"].removeprefix(to + "/") for line in dry.stdout.splitlines()]
    assert len(paths) == 2
    fake.broken[paths[0]] = 422
    result = _publish(sender, to, "--report-type", "individual")
    assert result.exit_code == 1
    failed = next(line for line in result.stderr.splitlines() if paths[0] in line)
    assert "422" in failed and "failed" in failed and "MeasureReport.group: scripted 422" in failed
    ok = next(line for line in result.stderr.splitlines() if paths[1] in line)
    assert "201" in ok and "created" in ok
    assert ("MeasureReport", paths[1].split("/")[1]) in fake.versions  # the rest was still sent
    assert "2 requests: 1 created, 1 failed" in result.stderr


def test_unreachable_receiver_exits_1(sender: Settings) -> None:
    to = f"http://127.0.0.1:{_free_port()}/fhir"
    result = _publish(sender, to, "--retries", "1")
    assert result.exit_code == 1
    row = next(line for line in result.stderr.splitlines() if "MeasureReport/" in line)
    assert "ConnectError" in row and "failed" in row and " 2 " in row


def test_bearer_token_is_sent(sender: Settings) -> None:
    seen: list[str | None] = []

    app = FastAPI()

    @app.put("/fhir/{rtype}/{rid}")
    async def put(rtype: str, rid: str, request: Request) -> Response:
        seen.append(request.headers.get("authorization"))
        return Response(status_code=201)

    with serving(app) as url:
        result = _publish(sender, f"{url}/fhir", "--bearer", "s3cret")
    assert result.exit_code == 0, result.stderr
    assert seen == ["Bearer s3cret"]
    assert "s3cret" not in result.stderr


# --------------------------------------------------------------------------------------------------
# an independent FHIR server (medplum)

FHIRSERVER = ROOT / "tests" / "fhirserver"


@pytest.fixture
def medplum() -> Iterator[str]:
    node = shutil.which("node")
    if node is None or not (FHIRSERVER / "node_modules" / "@medplum" / "fhir-router").is_dir():
        pytest.skip(
            "Node.js or tests/fhirserver/node_modules is missing: the independent FHIR server cannot run"
        )
    port = _free_port()
    proc = subprocess.Popen(
        [node, "server.mjs", str(port)], cwd=FHIRSERVER, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        assert line.startswith("listening"), line + (proc.stderr.read().decode() if proc.stderr else "")
        yield f"http://127.0.0.1:{port}/fhir"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)


def _search(url: str) -> list[Json]:
    bundle = httpx.get(url, params={"_count": "1000"}, timeout=30).json()
    return [e["resource"] for e in bundle.get("entry", [])]


def test_independent_server_keeps_one_resource_per_id(sender: Settings, medplum: str) -> None:
    dry = _publish(sender, medplum, "--report-type", "subject-list", "--dry-run")
    planned = {tuple(orjson.loads(line)["url"].rsplit("/", 2)[1:]) for line in dry.stdout.splitlines()}
    for _ in range(2):
        result = _publish(sender, medplum, "--report-type", "subject-list")
        assert result.exit_code == 0, result.stderr
        found = {
            (r["resourceType"], r["id"]) for t in ("MeasureReport", "List") for r in _search(f"{medplum}/{t}")
        }
        assert found == planned
    report = next(r for r in _search(f"{medplum}/MeasureReport") if r["type"] == "subject-list")
    history = httpx.get(f"{medplum}/MeasureReport/{report['id']}/_history", timeout=30).json()
    assert len(history["entry"]) == 2  # updated in place, not duplicated


# --------------------------------------------------------------------------------------------------
# the adapter's own service as the receiver of $deqm-submit-data


def _receiver_settings(tmp_path: Path, **update: Any) -> Settings:
    return Settings(database_url=f"sqlite:///{tmp_path / 'receiver.db'}", mappings_dir=ROOT / "mappings",
                    **update)  # fmt: skip


def test_submit_data_to_the_adapter_twice(sender: Settings, mappings: Mappings, tmp_path: Path) -> None:
    settings = _receiver_settings(tmp_path, auth_required=False)
    store, ev = _evaluate(sender, mappings)
    try:
        requests = submit_data_requests(store, ev, workflow.report_context(sender, ev.spec.hash))
    finally:
        store.close()
    with serving(create_app(settings)) as url, httpx.Client(timeout=60) as client:
        base = f"{url}/fhir"
        first = send(client, base, requests)
        assert [r.outcome for r in first] == ["submitted", "submitted"], first
        assert all("created" in r.detail and "updated 0" in r.detail for r in first)
        second = send(client, base, requests)
        assert [r.outcome for r in second] == ["submitted", "submitted"]
        assert all("created 0, updated 0" in r.detail for r in second), second
        for subject in ("Patient/num", "Patient/gap"):
            found = client.get(f"{base}/MeasureReport", params={"subject": subject}).json()
            assert found["total"] == 1, found  # one data-collection report per child, never two
        encounter = client.get(f"{base}/Encounter/e-num").json()
        assert encounter["meta"]["versionId"] == "1"


def test_publish_with_smart_backend_services(sender: Settings, tmp_path: Path) -> None:
    key = key_pair("ES384", "publisher")
    key_file = tmp_path / "publisher.jwks"
    key_file.write_bytes(orjson.dumps({"keys": [key.private_jwk]}))
    port = _free_port()
    settings = _receiver_settings(tmp_path, auth_required=True, public_base_url=f"http://127.0.0.1:{port}")
    receiving = workflow.open_store(settings)
    register(
        receiving,
        Registration(client_id="clinic-publisher", role="ehr", source="clinic-a", jwks=jwks(key)),
        known_ccos=(),
        now=datetime.now(UTC),
    )
    try:
        with serving(create_app(settings, store=receiving), port) as url:
            _publish_with_smart(sender, f"{url}/fhir", key_file, receiving)
    finally:
        receiving.close()


def _publish_with_smart(sender: Settings, base: str, key_file: Path, receiving: Store) -> None:
    capability = httpx.get(f"{base}/metadata").json()
    report_put = any(
        r["type"] == "MeasureReport" and any(i["code"] == "update" for i in r.get("interaction", []))
        for r in capability["rest"][0]["resource"]
    )

    anonymous = _publish(sender, base, "--submit-data", "--retries", "0")
    assert anonymous.exit_code == 1
    assert anonymous.stderr.count(" 401 ") == 3

    result = _publish(sender, base, "--submit-data", "--client-id", "clinic-publisher",
                      "--key", str(key_file), "--retries", "0")  # fmt: skip
    rows = [line for line in result.stderr.splitlines() if "$deqm-submit-data Patient/" in line]
    assert len(rows) == 2 and all(" 200 " in row and "submitted" in row for row in rows), result.stderr
    put_row = next(
        line for line in result.stderr.splitlines() if "MeasureReport/" in line and "$" not in line
    )
    # the adapter stores its own reports; it takes pushed MeasureReports only if it says so
    assert (" 201 " in put_row or " 200 " in put_row) if report_put else " 404 " in put_row
    assert result.exit_code == (0 if report_put else 1)
    stored = httpx.get(f"{base}/Encounter/e-num")
    assert stored.status_code == 401  # reading needs a token too
    with receiving.read() as conn:
        sources = {s for (s,) in conn.execute(text("SELECT DISTINCT source FROM resources"))}
    assert "clinic-a" in sources  # stored under the client's own source
