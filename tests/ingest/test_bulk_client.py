"""Bulk Data ``$export`` client against a fake Bulk Data server (tests/ingest/fake_fhir.py) on a
real socket: throttled kick-off, slow and failing polls, a dropped download, deleted and error
files, access tokens, bounded parallel downloads, and resuming after ``kill -9``."""

from __future__ import annotations

import gzip
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from sqlalchemy import text

from fhir_adapter.cli import main
from fhir_adapter.errors import RemoteError, UsageError
from fhir_adapter.ingest.bulk_client import QuietReporter, parse_retry_after
from fhir_adapter.ingest.pull import (
    PullRequest,
    PullResult,
    SmartCredentials,
    pull,
    read_pull_state,
    write_pull_state,
)
from fhir_adapter.ingest.runner import ingest_items
from fhir_adapter.settings import DEFAULT_MEMBER_ID_SYSTEM, Settings
from fhir_adapter.store.db import ParsedResource, Store
from tests import cohorts as c
from tests.conftest import ROOT, TZ
from tests.ingest.fake_fhir import AuthConfig, BulkFile, FakeConfig, FakeFhirServer, deleted_bundle, ndjson

SOURCE = "ehr"
TX_TIME = "2025-06-01T12:00:00.000Z"


def _patients(prefix: str, n: int) -> list[dict[str, Any]]:
    return [c.patient(f"{prefix}{i}", "2021-05-05") for i in range(n)]


def _files() -> list[BulkFile]:
    return [
        BulkFile("patients.ndjson", "output", "Patient", ndjson(_patients("p", 30))),
        BulkFile("coverage.ndjson", "output", "Coverage", ndjson([c.full_year(f"p{i}") for i in range(30)])),
    ]


def _open(db: Path) -> Store:
    return Store.open(f"sqlite:///{db}", tz=TZ, member_system=DEFAULT_MEMBER_ID_SYSTEM)


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    store = _open(tmp_path / "bulk.db")
    yield store
    store.close()


@pytest.fixture
def fake() -> Iterator[FakeFhirServer]:
    server = FakeFhirServer(FakeConfig(files=_files(), transaction_time=TX_TIME)).start()
    yield server
    server.stop()


class Sleeps(list[float]):
    """Records waits instead of sleeping (the fake server counts requests, not time)."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def _settings(settings: Settings, **kw: Any) -> Settings:
    return settings.model_copy(update={"pull_max_wait_seconds": 5.0, "pull_attempts": 4, **kw})


def _pull(
    settings: Settings, store: Store, fake: FakeFhirServer, *, sleeps: Sleeps | None = None, **kw: Any
) -> tuple[PullResult, QuietReporter]:
    reporter = QuietReporter()
    credentials = kw.pop("credentials", None)
    request = PullRequest(base_url=fake.base, source=SOURCE, bulk=True, **kw)
    result = pull(
        settings, store, request, credentials=credentials, sleep=sleeps if sleeps is not None else Sleeps(),
        reporter=reporter, base_wait=0.5,
    )  # fmt: skip
    return result, reporter


def _current(store: Store, source: str = SOURCE) -> dict[tuple[str, str], int]:
    with store.read() as conn:
        rows = conn.execute(
            text("SELECT rtype, rid, deleted FROM resources WHERE source = :s AND superseded_at IS NULL"),
            {"s": source},
        )
        return {(r[0], r[1]): int(r[2]) for r in rows}


def _live(store: Store) -> set[tuple[str, str]]:
    return {k for k, deleted in _current(store).items() if not deleted}


ALL = {("Patient", f"p{i}") for i in range(30)} | {("Coverage", f"cov-p{i}-ALLCARE") for i in range(30)}


# -- the happy path, on both engines ---------------------------------------------------------


def test_export_is_ingested_and_remembered(settings: Settings, store: Store, fake: FakeFhirServer) -> None:
    result, _ = _pull(_settings(settings), store, fake)
    assert _live(store) == ALL
    assert (result.files, result.ingest.read, result.ingest.stats.created) == (2, 60, 60)
    assert fake.kickoff_requests == [
        {
            "path": "/fhir/$export",
            "params": {
                "_outputFormat": "application/fhir+ndjson",
                "_type": ",".join(PullRequest(base_url="x").types),
            },
            "accept": "application/fhir+json",
            "prefer": "respond-async",
        }
    ]
    assert fake.deletes == ["job1"], "the status URL is deleted once the files are in"
    state = read_pull_state(store, SOURCE)
    assert state is not None
    assert (state.mode, state.since, state.status_url, state.progress) == ("bulk", TX_TIME, None, None)
    assert result.next_since == TX_TIME
    # The next run is incremental: _since is the manifest's transactionTime; nothing changes.
    again, _ = _pull(_settings(settings), store, fake)
    assert fake.kickoff_requests[1]["params"]["_since"] == TX_TIME
    assert again.since_used == TX_TIME
    assert (again.ingest.stats.created, again.ingest.stats.unchanged) == (0, 60)


@pytest.mark.parametrize(
    ("kw", "path"),
    [
        pytest.param({}, "/fhir/$export", id="system"),
        pytest.param({"level": "patient"}, "/fhir/Patient/$export", id="patient"),
        pytest.param({"level": "group", "group": "cco-IHN"}, "/fhir/Group/cco-IHN/$export", id="group"),
    ],
)
def test_kickoff_endpoints(
    settings: Settings, sqlite_store: Store, fake: FakeFhirServer, kw: dict[str, Any], path: str
) -> None:
    _pull(
        _settings(settings),
        sqlite_store,
        fake,
        types=("Patient", "Coverage"),
        since=datetime(2025, 1, 2, tzinfo=UTC),
        **kw,
    )
    assert fake.kickoff_requests[0]["path"] == path
    assert fake.kickoff_requests[0]["params"] == {
        "_outputFormat": "application/fhir+ndjson",
        "_type": "Patient,Coverage",
        "_since": "2025-01-02T00:00:00.000Z",
    }


# -- waiting: Retry-After, X-Progress, backoff ---------------------------------------------


def test_throttled_kickoff_honours_retry_after_with_a_cap(
    settings: Settings, sqlite_store: Store, fake: FakeFhirServer
) -> None:
    fake.config.kickoff_429 = 2
    fake.config.kickoff_retry_after = "120"
    sleeps = Sleeps()
    _pull(_settings(settings, pull_max_wait_seconds=3.0), sqlite_store, fake, sleeps=sleeps)
    assert (fake.kickoffs, fake.accepted_kickoffs) == (3, 1)
    assert sleeps[:2] == [3.0, 3.0], "Retry-After 120 s capped at the configured 3 s"
    assert _live(sqlite_store) == ALL


def test_slow_export_reports_progress_and_follows_retry_after(
    settings: Settings, sqlite_store: Store, fake: FakeFhirServer
) -> None:
    fake.config.polls_in_progress = 3
    fake.config.poll_retry_after = "2"
    sleeps = Sleeps()
    _, reporter = _pull(_settings(settings), sqlite_store, fake, sleeps=sleeps)
    assert fake.polls["job1"] == 4
    assert reporter.statuses == [f"export in progress: {p}% done" for p in (25, 50, 75)]
    assert sleeps == [2.0, 2.0, 2.0]


def test_polls_back_off_exponentially_without_retry_after(
    settings: Settings, sqlite_store: Store, fake: FakeFhirServer
) -> None:
    fake.config.polls_in_progress = 5
    fake.config.poll_retry_after = None
    sleeps = Sleeps()
    _pull(_settings(settings, pull_max_wait_seconds=3.0), sqlite_store, fake, sleeps=sleeps)
    assert sleeps == [0.5, 1.0, 2.0, 3.0, 3.0], "doubling from 0.5 s, capped at 3 s"


def test_http_date_retry_after(settings: Settings, sqlite_store: Store, fake: FakeFhirServer) -> None:
    fake.config.kickoff_429 = 1
    fake.config.kickoff_retry_after = "Wed, 21 Oct 2015 07:28:00 GMT"  # in the past: no wait
    sleeps = Sleeps()
    _pull(_settings(settings), sqlite_store, fake, sleeps=sleeps)
    assert sleeps == [0.0]


NOW = datetime(2025, 10, 21, 7, 28, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        pytest.param("120", 120.0, id="delay-seconds"),
        pytest.param("0", 0.0, id="zero"),
        pytest.param("1.5", 1.5, id="fraction"),
        pytest.param("Tue, 21 Oct 2025 07:28:30 GMT", 30.0, id="http-date-ahead"),
        pytest.param("Tue, 21 Oct 2025 07:27:00 GMT", 0.0, id="http-date-past"),
        pytest.param("-5", 0.0, id="negative"),
        pytest.param("soon", None, id="garbage"),
        pytest.param("", None, id="empty"),
        pytest.param(None, None, id="absent"),
    ],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, NOW) == seconds


# -- failures and retries ----------------------------------------------------------------------


def test_a_failing_poll_is_retried(settings: Settings, sqlite_store: Store, fake: FakeFhirServer) -> None:
    fake.config.polls_in_progress = 3  # 202, 503, 202, then the manifest
    fake.config.poll_5xx = frozenset({2})
    sleeps = Sleeps()
    _pull(_settings(settings), sqlite_store, fake, sleeps=sleeps)
    assert fake.polls["job1"] == 4
    assert sleeps == [0.0, 0.5, 0.0], "Retry-After 0, backoff after the 503, Retry-After 0"
    assert _live(sqlite_store) == ALL


def test_retries_are_limited(settings: Settings, sqlite_store: Store, fake: FakeFhirServer) -> None:
    fake.config.poll_5xx = frozenset(range(1, 100))
    with pytest.raises(
        RemoteError,
        match=r"HTTP 503 \(error: try again\) \(gave up after 4 attempts\)\. .* run the same command again",
    ):
        _pull(_settings(settings, pull_attempts=4), sqlite_store, fake)
    assert fake.polls["job1"] == 4
    state = read_pull_state(sqlite_store, SOURCE)
    assert state is not None and state.status_url == f"{fake.base}/bulkstatus/job1", "kept for a resume"


def test_dropped_download_is_fetched_again(
    settings: Settings, sqlite_store: Store, fake: FakeFhirServer
) -> None:
    fake.config.drop_first_download = frozenset({"coverage.ndjson"})
    result, _ = _pull(_settings(settings), sqlite_store, fake)
    assert fake.downloads == {"patients.ndjson": 1, "coverage.ndjson": 2}
    assert _live(sqlite_store) == ALL
    assert result.ingest.errors == [], "no half line from the dropped attempt"


def test_gzip_file_without_content_encoding(
    settings: Settings, sqlite_store: Store, fake: FakeFhirServer
) -> None:
    fake.config.files = [
        BulkFile("patients.ndjson.gz", "output", "Patient", gzip.compress(ndjson(_patients("p", 30)))),
        _files()[1],
    ]
    result, _ = _pull(_settings(settings), sqlite_store, fake)
    assert _live(sqlite_store) == ALL
    assert result.ingest.errors == []


def test_downloads_run_in_parallel_but_bounded(
    settings: Settings, sqlite_store: Store, fake: FakeFhirServer
) -> None:
    fake.config.files = [
        BulkFile(f"part{i}.ndjson", "output", "Patient", ndjson(_patients(f"x{i}-", 5))) for i in range(6)
    ]
    fake.config.download_delay = 0.15
    _pull(_settings(settings, pull_max_parallel=2), sqlite_store, fake)
    assert fake.max_active_downloads == 2
    assert len(_live(sqlite_store)) == 30


# -- deleted and error files -------------------------------------------------------------------


def test_deleted_file_becomes_tombstones(settings: Settings, store: Store, fake: FakeFhirServer) -> None:
    ingest_items(
        store, [ParsedResource("Patient", "gone", c.patient("gone", "2020-01-01"))], SOURCE, batch_size=10
    )
    fake.config.files = [
        *_files(),
        BulkFile(
            "deleted.ndjson",
            "deleted",
            "Bundle",
            ndjson([deleted_bundle("Patient/gone", "Coverage/never-seen")]),
        ),
    ]
    result, _ = _pull(_settings(settings), store, fake)
    assert _current(store)[("Patient", "gone")] == 1, "the stored Patient is now deleted"
    assert ("Coverage", "never-seen") not in _current(store)
    assert result.ingest.stats.deleted == 1
    assert _live(store) == ALL


def test_bad_deleted_lines_are_reported(
    settings: Settings, sqlite_store: Store, fake: FakeFhirServer
) -> None:
    fake.config.files = [
        BulkFile(
            "deleted.ndjson",
            "deleted",
            "Bundle",
            ndjson([{"resourceType": "Patient", "id": "x"}, deleted_bundle("Nonsense/1")]) + b"{oops\n",
        )
    ]
    result, _ = _pull(_settings(settings), sqlite_store, fake)
    messages = [(e.location.rsplit("/", 1)[-1], e.message) for e in result.ingest.errors]
    assert messages == [
        ("deleted.ndjson:1", "a deleted-file line must be a Bundle"),
        ("deleted.ndjson:2 (Bundle.entry[0])", "cannot delete 'Nonsense/1'"),
        ("deleted.ndjson:3", messages[2][1]),
    ]
    assert messages[2][1].startswith("not JSON")


def test_error_file_is_reported_and_kept(
    settings: Settings, sqlite_store: Store, fake: FakeFhirServer
) -> None:
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [
            {"severity": "error", "code": "processing", "diagnostics": "Encounter/77 could not be exported"},
            {"severity": "warning", "code": "too-costly", "details": {"text": "Observation skipped"}},
        ],
    }
    fake.config.files = [*_files(), BulkFile("errors.ndjson", "error", "OperationOutcome", ndjson([outcome]))]
    result, _ = _pull(_settings(settings), sqlite_store, fake)
    assert [(i.severity, i.code, i.text) for i in result.issues] == [
        ("error", "processing", "Encounter/77 could not be exported"),
        ("warning", "too-costly", "Observation skipped"),
    ]
    assert result.issues[0].location == f"{fake.origin}/files/errors.ndjson:1"
    with sqlite_store.read() as conn:
        kept = [
            r[0]
            for r in conn.execute(text("SELECT message FROM ingest_issues WHERE source = :s"), {"s": SOURCE})
        ]
    assert kept == [
        "server reported error processing: Encounter/77 could not be exported",
        "server reported warning too-costly: Observation skipped",
    ]
    assert _live(sqlite_store) == ALL, "a partial success still stores the output"


# -- access tokens ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def _credentials(tmp_path: Path, key: ec.EllipticCurvePrivateKey) -> SmartCredentials:
    jwk = json.loads(ECAlgorithm.to_jwk(key))
    path = tmp_path / "client.jwks"
    path.write_text(json.dumps({"keys": [{**jwk, "kid": "bulk-key"}]}))
    return SmartCredentials(client_id="adapter", key_path=path, scope="system/*.read")


@pytest.mark.parametrize("requires_token", [True, False], ids=["requires-token", "capability-urls"])
def test_access_token_on_exactly_the_requests_that_need_it(
    settings: Settings, sqlite_store: Store, fake: FakeFhirServer, tmp_path: Path, ec_key: ec.EllipticCurvePrivateKey,
    requires_token: bool,
) -> None:  # fmt: skip
    fake.config.auth = AuthConfig(client_id="adapter", public_key=ec_key.public_key(), alg="ES384")
    fake.config.requires_access_token = requires_token
    result, _ = _pull(_settings(settings), sqlite_store, fake, credentials=_credentials(tmp_path, ec_key))
    assert _live(sqlite_store) == ALL
    assert len(fake.tokens) == 1, "one token reused for kick-off, polls, downloads and delete"
    assert fake.assertions[0]["header"]["kid"] == "bulk-key"
    assert fake.assertions[0]["scope"] == "system/*.rs", "v1 scope converted: the server shows only v2"
    assert fake.violations == []
    assert result.files == 2


def test_missing_credentials_for_protected_files(
    settings: Settings, sqlite_store: Store, fake: FakeFhirServer, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    fake.config.requires_access_token = True
    fake.config.auth = AuthConfig(client_id="adapter", public_key=ec_key.public_key(), alg="ES384")
    with pytest.raises(RemoteError, match=r"HTTP 401"):
        _pull(_settings(settings), sqlite_store, fake)


def test_expired_token_is_replaced(
    settings: Settings,
    sqlite_store: Store,
    fake: FakeFhirServer,
    tmp_path: Path,
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    fake.config.auth = AuthConfig(
        client_id="adapter", public_key=ec_key.public_key(), alg="ES384", revoke_first_token_at_use=2
    )
    fake.config.requires_access_token = True
    _pull(_settings(settings), sqlite_store, fake, credentials=_credentials(tmp_path, ec_key))
    assert list(fake.tokens) == ["tok-1", "tok-2"]
    assert _live(sqlite_store) == ALL


# -- resuming --------------------------------------------------------------------------------


def test_job_gone_on_resume_starts_a_new_export(
    settings: Settings, sqlite_store: Store, fake: FakeFhirServer
) -> None:
    fake.config.poll_5xx = frozenset(range(1, 100))
    with pytest.raises(RemoteError):
        _pull(_settings(settings, pull_attempts=1), sqlite_store, fake)
    fake.config.poll_5xx = frozenset()
    # The server forgot job1 (e.g. it restarted): its status URL now answers 404.
    state = read_pull_state(sqlite_store, SOURCE)
    assert state is not None and state.progress is not None
    state.progress["status_url"] = state.status_url = f"{fake.base}/forgotten/job1"
    write_pull_state(sqlite_store, state)
    result, _ = _pull(_settings(settings), sqlite_store, fake)
    assert fake.accepted_kickoffs == 2
    assert any("no longer has this export; starting a new export" in n for n in result.notes)
    assert not result.resumed
    assert _live(sqlite_store) == ALL


def test_resume_with_other_options_is_refused_until_restart(
    settings: Settings, sqlite_store: Store, fake: FakeFhirServer
) -> None:
    fake.config.poll_5xx = frozenset(range(1, 100))
    with pytest.raises(RemoteError):
        _pull(_settings(settings, pull_attempts=1), sqlite_store, fake)
    fake.config.poll_5xx = frozenset()
    with pytest.raises(
        UsageError, match=r"interrupted export .*job1.* Re-run with the same options .* --restart"
    ):
        _pull(_settings(settings), sqlite_store, fake, types=("Patient",))
    result, _ = _pull(_settings(settings), sqlite_store, fake, types=("Patient", "Coverage"), restart=True)
    assert "job1" in fake.deletes, "--restart cancels the old export"
    assert fake.accepted_kickoffs == 2
    assert any("--restart" in n for n in result.notes)
    assert _live(sqlite_store) == ALL


# -- kill -9 and resume ----------------------------------------------------------------------


def _state_row(db: Path) -> tuple[str | None, dict[str, Any] | None]:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            row = conn.execute(
                "SELECT status_url, progress FROM pull_state WHERE source = ?", (SOURCE,)
            ).fetchone()
    except sqlite3.OperationalError:
        return None, None
    if row is None:
        return None, None
    return row[0], json.loads(row[1]) if row[1] else None


def _start_pull(base: str, db: Path) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable, "-m", "fhir_adapter", "pull", "--bulk", "--base", base, "--source", SOURCE,
        "--database", f"sqlite:///{db}", "--max-wait", "0.05", "--quiet",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for(condition: Any, proc: subprocess.Popen[bytes], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            _out, err = proc.communicate()
            pytest.fail(f"pull exited ({proc.returncode}) before {what}: {err.decode()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.03)


def _resume(db: Path, base: str) -> str:
    runner = CliRunner()
    result = runner.invoke(
        main,
        [
            "pull",
            "--bulk",
            "--base",
            base,
            "--source",
            SOURCE,
            "--database",
            f"sqlite:///{db}",
            "--max-wait",
            "0.05",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.stderr
    return result.stderr


def test_killed_during_download_resumes_without_a_new_export(tmp_path: Path) -> None:
    release = threading.Event()
    config = FakeConfig(files=_files(), transaction_time=TX_TIME, block={"coverage.ndjson": release})
    fake = FakeFhirServer(config).start()
    db = tmp_path / "kill.db"
    try:
        proc = _start_pull(fake.base, db)
        _wait_for(
            lambda: (
                len((_state_row(db)[1] or {}).get("done", [])) == 1 and fake.downloads["coverage.ndjson"] == 1
            ),
            proc,
            "the first file to be ingested while the second is downloading",
        )
        status_url, progress = _state_row(db)
        assert progress is not None and progress["done"] == [f"{fake.origin}/files/patients.ndjson"]
        proc.kill()
        proc.wait(timeout=10)
        assert fake.accepted_kickoffs == 1
        del config.block["coverage.ndjson"]  # the server answers again
        release.set()
        output = _resume(db, fake.base)
    finally:
        fake.stop()
    assert "bulk pull (resumed)" in output
    assert status_url == f"{fake.base}/bulkstatus/job1"
    assert fake.accepted_kickoffs == 1, "the interrupted export was resumed, not started again"
    assert set(fake.polls) == {"job1"}
    assert fake.downloads == {"patients.ndjson": 1, "coverage.ndjson": 2}, (
        "the ingested file is not fetched again"
    )
    assert fake.deletes == ["job1"]
    store = _open(db)
    try:
        assert _live(store) == ALL
        state = read_pull_state(store, SOURCE)
        assert state is not None and (state.since, state.status_url, state.progress) == (TX_TIME, None, None)
        with store.read() as conn:
            versions = conn.execute(text("SELECT max(version) FROM resources")).scalar()
        assert versions == 1, "nothing was ingested twice as a new version"
    finally:
        store.close()


def test_killed_while_polling_resumes_polling_the_same_export(tmp_path: Path) -> None:
    config = FakeConfig(
        files=_files(), transaction_time=TX_TIME, polls_in_progress=1_000_000, poll_retry_after="0"
    )
    fake = FakeFhirServer(config).start()
    db = tmp_path / "kill.db"
    try:
        proc = _start_pull(fake.base, db)
        _wait_for(lambda: _state_row(db)[0] is not None and fake.polls["job1"] >= 2, proc, "polling to start")
        proc.kill()
        proc.wait(timeout=10)
        polls_before = fake.polls["job1"]
        config.polls_in_progress = 0
        output = _resume(db, fake.base)
    finally:
        fake.stop()
    assert "bulk pull (resumed)" in output
    assert fake.accepted_kickoffs == 1
    assert fake.polls["job1"] == polls_before + 1
    store = _open(db)
    try:
        assert _live(store) == ALL
    finally:
        store.close()


def test_cli_prints_server_issues_and_summary(fake: FakeFhirServer, tmp_path: Path) -> None:
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "processing", "diagnostics": "X"}],
    }
    fake.config.files = [*_files(), BulkFile("e.ndjson", "error", "OperationOutcome", ndjson([outcome]))]
    db = tmp_path / "cli.db"
    result = CliRunner().invoke(
        main,
        [
            "pull",
            "--bulk",
            "--base",
            fake.base,
            "--database",
            f"sqlite:///{db}",
            "--quiet",
            "--max-wait",
            "0.05",
        ],
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "", "logs go to stderr"
    assert "server error file: " in result.stderr and "error processing: X" in result.stderr
    assert f"bulk pull from {fake.base} as source '127.0.0.1-{fake.port}'" in result.stderr
    assert "3 files, 60 resources read" in result.stderr
    assert f"next incremental pull: since {TX_TIME}" in result.stderr
