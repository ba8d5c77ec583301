"""Limits (issue #7 item 4), each in Settings and each exceeded here: the right status and an
OperationOutcome (or, for one NDJSON line, an issue naming that line while the others are kept)."""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import select

from fhir_adapter.api.app import create_app
from fhir_adapter.api.limits import TokenBuckets
from fhir_adapter.auth.clients import Registration, register
from fhir_adapter.cli import main
from fhir_adapter.ingest.runner import ingest_paths
from fhir_adapter.settings import Settings
from fhir_adapter.store.db import Store
from fhir_adapter.store.schema import audit_events
from tests import cohorts
from tests.api.test_bulk_import import FileServer, files, importer, manifest, run  # noqa: F401 (fixtures)
from tests.smart import assertion, jwks, key_pair, token_form

FHIR = {"Content-Type": "application/fhir+json"}
NDJSON = {"Content-Type": "application/fhir+ndjson"}
LINE_LIMIT = 1024


def _outcome(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    body: dict[str, Any] = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == code, body
    return body


@pytest.fixture
def limited(api_settings: Settings, store: Store) -> Iterator[Callable[..., TestClient]]:
    opened: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        client = TestClient(create_app(api_settings.model_copy(update=overrides), store=store),
                            raise_server_exceptions=False)  # fmt: skip
        client.__enter__()
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)


# --------------------------------------------------------------------------------------------------
# request body and Bundle size


@pytest.mark.parametrize(
    "declared", [pytest.param(True, id="content-length"), pytest.param(False, id="streamed")]
)
def test_body_over_max_body_bytes_is_413(limited: Callable[..., TestClient], declared: bool) -> None:
    client = limited(max_body_bytes=2048)
    body = orjson.dumps(cohorts.patient("big", "2020-01-01", text={"div": "x" * 4000}))
    content: Any = body if declared else iter([body[:1000], body[1000:]])
    body_outcome = _outcome(client.put("/fhir/Patient/big", content=content, headers=FHIR), 413, "too-costly")
    assert "2048" in body_outcome["issue"][0]["diagnostics"]
    assert client.get("/fhir/Patient/big").status_code == 404


def test_bundle_over_max_bundle_entries_is_413(limited: Callable[..., TestClient]) -> None:
    client = limited(max_bundle_entries=2)
    entries = [{"resource": cohorts.patient(f"b{i}", "2020-01-01"), "request": {"method": "PUT", "url": f"Patient/b{i}"}}
               for i in range(3)]  # fmt: skip
    for kind in ("transaction", "batch"):
        body = _outcome(client.post("/fhir", json={"resourceType": "Bundle", "type": kind, "entry": entries},
                                    headers=FHIR), 413, "too-costly")  # fmt: skip
        assert body["issue"][0]["expression"] == ["Bundle.entry"]
    ok = client.post(
        "/fhir", json={"resourceType": "Bundle", "type": "batch", "entry": entries[:2]}, headers=FHIR
    )
    assert ok.status_code == 200
    assert client.get("/fhir/Patient/b2").status_code == 404


# --------------------------------------------------------------------------------------------------
# NDJSON line size: $ingest, $import, the command line


def _long_patient() -> bytes:
    line = orjson.dumps(
        cohorts.patient("long", "2020-01-01", text={"status": "generated", "div": "y" * 2000})
    )
    assert len(line) > LINE_LIMIT
    return line


def _lines() -> bytes:
    return b"\n".join(
        [orjson.dumps(cohorts.patient("ok1", "2020-01-01")), _long_patient(), orjson.dumps(cohorts.patient("ok2", None))]
    ) + b"\n"  # fmt: skip


def _line_issue(outcome: dict[str, Any], line: str) -> dict[str, Any]:
    issue: dict[str, Any]
    (issue,) = [i for i in outcome["issue"] if "line too long" in i["diagnostics"]]
    assert issue["code"] == "too-costly" and issue["severity"] == "error"
    assert line in issue["diagnostics"] and f"the limit is {LINE_LIMIT}" in issue["diagnostics"]
    return issue


@pytest.mark.parametrize("asynchronous", [pytest.param(False, id="sync"), pytest.param(True, id="job")])
def test_ingest_rejects_a_long_line_and_keeps_the_others(
    limited: Callable[..., TestClient], asynchronous: bool
) -> None:
    client = limited(max_ndjson_line_bytes=LINE_LIMIT)
    headers = {**NDJSON, **({"Prefer": "respond-async"} if asynchronous else {})}
    response = client.post("/fhir/$ingest", content=_lines(), headers=headers)
    if asynchronous:
        assert response.status_code == 202
        from tests.api.test_app import _poll

        response = _poll(client, response.headers["Content-Location"])
    assert response.status_code == 200, response.text
    outcome = response.json()
    assert (
        "created 2" in outcome["issue"][0]["diagnostics"]
        and "rejected 1" in outcome["issue"][0]["diagnostics"]
    )
    assert _line_issue(outcome, "line 2")["expression"] == ["line 2"]
    assert client.get("/fhir/Patient/ok1").status_code == 200
    assert client.get("/fhir/Patient/ok2").status_code == 200
    assert client.get("/fhir/Patient/long").status_code == 404


def test_import_rejects_a_long_line_and_keeps_the_others(
    importer: Callable[..., TestClient],  # noqa: F811
    files: FileServer,  # noqa: F811
) -> None:
    client = importer(max_ndjson_line_bytes=LINE_LIMIT)
    files.routes["/Patient.ndjson"] = (200, {}, _lines())
    outcome = run(client, manifest(("Patient", f"{files.base}/Patient.ndjson")))
    assert "rejected 1" in outcome["issue"][0]["diagnostics"]
    issue = _line_issue(outcome, "line 2")
    assert "Patient.ndjson" in issue["diagnostics"]
    assert client.get("/fhir/Patient/ok2").status_code == 200
    assert client.get("/fhir/Patient/long").status_code == 404


@pytest.mark.parametrize("gzipped", [pytest.param(False, id="plain"), pytest.param(True, id="gzip")])
def test_cli_ingest_rejects_a_long_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gzipped: bool
) -> None:
    path = tmp_path / ("data.ndjson.gz" if gzipped else "data.ndjson")
    path.write_bytes(gzip.compress(_lines()) if gzipped else _lines())
    monkeypatch.setenv("FHIR_ADAPTER_MAX_NDJSON_LINE_BYTES", str(LINE_LIMIT))
    db = f"sqlite:///{tmp_path / 'store.db'}"
    result = CliRunner().invoke(
        main, ["ingest", str(path), "--database", db, "--quiet"], catch_exceptions=False
    )
    assert result.exit_code == 3
    assert f"{path}:2: line too long: " in result.stderr
    assert "2 created" in result.stderr and "1 rejected" in result.stderr


def test_parallel_file_ingest_honours_the_line_limit(tmp_path: Path, store: Store) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.ndjson").write_bytes(_lines())
    result = ingest_paths(store, [folder], "s", batch_size=10, workers=2, parallel_min_bytes=0,
                          max_line_bytes=LINE_LIMIT)  # fmt: skip
    assert result.stats.created == 2
    assert [(Path(e.location).name, e.message.split(":")[0]) for e in result.errors] == [
        ("a.ndjson:2", "line too long")
    ]


# --------------------------------------------------------------------------------------------------
# search page size


def test_count_is_capped_and_the_bundle_says_so(limited: Callable[..., TestClient]) -> None:
    client = limited(search_count_max=3, search_count_default=2)
    for i in range(5):
        assert (
            client.put(
                f"/fhir/Patient/s{i}", json=cohorts.patient(f"s{i}", "2020-01-01"), headers=FHIR
            ).status_code
            == 201
        )
    default = client.get("/fhir/Patient").json()
    assert len(default["entry"]) == 2 and "_count=2" in default["link"][0]["url"]
    capped = client.get("/fhir/Patient", params={"_count": "1000"}).json()
    assert capped["total"] == 5 and len(capped["entry"]) == 3
    assert "_count=3" in capped["link"][0]["url"]  # the page size applied, in the self link
    after = client.get(next(link["url"] for link in capped["link"] if link["relation"] == "next")).json()
    assert len(after["entry"]) == 2
    audit = client.get("/fhir/AuditEvent", params={"_count": "1000"}).json()
    matches = [e for e in audit["entry"] if e["search"]["mode"] == "match"]
    assert len(matches) == 3 and "_count=3" in audit["link"][0]["url"]
    (note,) = [e for e in audit["entry"] if e["search"]["mode"] == "outcome"]
    assert "1000" in note["resource"]["issue"][0]["diagnostics"]


# --------------------------------------------------------------------------------------------------
# rate limit


def test_token_bucket_refills() -> None:
    now = [1000.0]
    buckets = TokenBuckets(60, monotonic=lambda: now[0])  # one per second, bursts of 60
    assert all(buckets.take("a").allowed for _ in range(60))
    refused = buckets.take("a")
    assert not refused.allowed and refused.retry_after == 1 and refused.first_refusal
    assert not buckets.take("a").first_refusal  # the same burst
    assert buckets.take("b").allowed  # another client
    now[0] += 1.0
    assert buckets.take("a").allowed
    again = buckets.take("a")
    assert not again.allowed and again.first_refusal  # a new burst after an admitted request


def test_token_bucket_memory_is_bounded() -> None:
    now = [0.0]
    buckets = TokenBuckets(10, monotonic=lambda: now[0], max_keys=4)
    for key in "abcdefgh":
        buckets.take(key)
        now[0] += 0.01
    assert len(buckets._buckets) <= 4


def _audited_429s(store: Store) -> int:
    with store.read() as conn:
        return len(conn.execute(select(audit_events.c.id).where(audit_events.c.status == 429)).all())


def test_rate_limit_answers_429_with_retry_after(limited: Callable[..., TestClient], store: Store) -> None:
    client = limited(rate_limit_per_minute=3)
    assert [client.get("/fhir/Patient").status_code for _ in range(3)] == [200, 200, 200]
    refused = client.get("/fhir/Patient")
    body = _outcome(refused, 429, "throttled")
    assert int(refused.headers["Retry-After"]) >= 1
    assert "3 per minute" in body["issue"][0]["diagnostics"]
    assert client.post("/fhir/Patient", json=cohorts.patient("x", None), headers=FHIR).status_code == 429
    assert client.get("/healthz").status_code == 200  # probes are never limited
    assert client.get("/metrics").status_code == 200
    assert _audited_429s(store) == 1  # one audit row per burst, not per refused request


def test_rate_limit_off(limited: Callable[..., TestClient]) -> None:
    client = limited(rate_limit_per_minute=None)
    assert {client.get("/fhir/metadata").status_code for _ in range(30)} == {200}


def test_rate_limit_is_per_client_and_guards_the_token_endpoint(
    auth_settings: Settings, store: Store
) -> None:
    keys = {}
    for name in ("fast", "slow"):
        keys[name] = key_pair("ES384", f"limit-{name}")
        register(store, Registration(client_id=name, role="ehr", source=f"{name}-src", scopes=("system/*.rs",),
                                     jwks=jwks(keys[name])), known_ccos=set(), now=datetime.now(UTC))  # fmt: skip
    # tokens from a server without a limit, used on one with a limit of 4 per minute
    with TestClient(create_app(auth_settings, store=store)) as issuer:
        tokens = {n: issuer.post("/auth/token", data=token_form(assertion(k, n))).json()["access_token"]
                  for n, k in keys.items()}  # fmt: skip
    settings = auth_settings.model_copy(update={"rate_limit_per_minute": 4})
    with TestClient(create_app(settings, store=store), raise_server_exceptions=False) as client:
        fast = {"Authorization": f"Bearer {tokens['fast']}"}
        assert [client.get("/fhir/Patient", headers=fast).status_code for _ in range(5)] == [200] * 4 + [429]
        assert (
            client.get("/fhir/Patient", headers={"Authorization": f"Bearer {tokens['slow']}"}).status_code
            == 200
        )
        # without a valid token the caller's address is the key: a forged token is not another client
        forged = {"Authorization": "Bearer " + tokens["slow"][:-4] + "AAAA"}
        statuses = [client.get("/fhir/Patient", headers=forged).status_code for _ in range(5)]
        assert statuses == [401] * 4 + [429]
        # the token endpoint shares the address's bucket: brute force is throttled too
        token = client.post("/auth/token", data=token_form(assertion(keys["fast"], "fast")))
        _outcome(token, 429, "throttled")
        assert int(token.headers["Retry-After"]) >= 1
