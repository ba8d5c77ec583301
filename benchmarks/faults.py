"""Crash and connection faults (issue #7 item 6): kill -9 the server and the ingest command, drop
PostgreSQL connections under a load, and check what survives.

``python -m benchmarks.faults --engine sqlite|postgresql|both --trials 20 --seed 7 --work DIR``

Three scenarios, each trial with delays drawn from ``random.Random(seed)`` (so a run repeats):

``server`` — ``fhir-adapter serve`` runs as a subprocess; an asynchronous ``$ingest`` job is
    started and seen running, and client threads push resources (``PUT`` and transaction Bundles),
    recording every write acknowledged with a 2xx; after a random delay the server's process group
    gets SIGKILL. The server is started again and must give: every acknowledged write, at its
    acknowledged version, with exactly the content sent; no resource row without its body or with
    facts other than those re-extracted from its body; the killed job reported failed (an
    OperationOutcome naming ``$rerun``, unless it had finished before the kill), and
    ``POST /fhir/_jobs/{id}/$rerun`` completing it with every line stored.
``ingest`` — ``fhir-adapter ingest`` of a synthetic cohort (three source folders, batches of
    ``--batch-size``) gets SIGKILL (its process group: the command and its parsing worker) after a
    random delay within the load; the store must be whole (as above), then the ingest is run again
    and the store must equal a clean single-run store: the same current versions (version 1
    each) with the same content hashes.
``dropped`` — PostgreSQL only: while ``ingest_paths`` loads the cohort in this process, a second
    connection terminates the store's backends (``pg_terminate_backend`` on the connections with
    the store's ``application_name``) at random moments; the load must complete (the store retries
    a batch whose connection dropped) and equal the clean store. The PostgreSQL server itself is
    never restarted: other sessions use it.

Each trial prints one JSON line; the run ends with a summary line (trials and outcomes per
scenario and engine) and appends everything to ``benchmarks/faults-results.jsonl``. The results
table is in ``benchmarks/README.md``. ``tests/test_faults.py`` runs three small trials of each.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import orjson
from sqlalchemy import create_engine, text

from fhir_adapter.ingest.runner import ingest_paths
from fhir_adapter.settings import DEFAULT_MEMBER_ID_SYSTEM
from fhir_adapter.store.db import Store
from fhir_adapter.store.extract import extract
from fhir_adapter.store.schema import FACT_TABLES
from fhir_adapter.synth import SOURCES, synthesize

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "faults-results.jsonl"
PG_BASE_URL = os.environ.get("FHIR_ADAPTER_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
TZ = ZoneInfo("America/Los_Angeles")
Json = dict[str, Any]


# --------------------------------------------------------------------------------------------------
# databases


@dataclass
class Database:
    """A store location: a SQLite file, or a PostgreSQL schema whose connections carry their own
    ``application_name`` (so the faults can find exactly them in ``pg_stat_activity``)."""

    engine: str
    url: str
    schema: str | None = None
    app_name: str | None = None

    def open(self) -> Store:
        return Store.open(self.url, tz=TZ, member_system=DEFAULT_MEMBER_ID_SYSTEM)

    def drop(self) -> None:
        if self.schema is None:
            Path(self.url.removeprefix("sqlite:///")).unlink(missing_ok=True)
            return
        engine = create_engine(PG_BASE_URL)
        try:
            with engine.begin() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE'))
        finally:
            engine.dispose()


def new_database(engine: str, work: Path, name: str) -> Database:
    if engine == "sqlite":
        path = work / f"{name}.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return Database("sqlite", f"sqlite:///{path}")
    schema = f"faults_{name}_{uuid.uuid4().hex[:8]}".replace("-", "_")
    app = f"fa-{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_BASE_URL)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    finally:
        admin.dispose()
    url = f"{PG_BASE_URL}?options=-csearch_path%3D{schema}&application_name={app}"
    return Database("postgresql", url, schema, app)


# --------------------------------------------------------------------------------------------------
# what a whole store looks like


def signature(db: Database) -> list[tuple[Any, ...]]:
    """The current versions: (source, type, id, version, deleted, content hash), sorted."""
    store = db.open()
    try:
        with store.read() as conn:
            rows = conn.execute(
                text(
                    "SELECT source, rtype, rid, version, deleted, hash FROM resources WHERE superseded_at IS NULL "
                    "ORDER BY source, rtype, rid"
                )
            ).all()
    finally:
        store.close()
    return [tuple(row) for row in rows]


def integrity(db: Database, sample: int | None = 400, seed: int = 0) -> Json:
    """Nothing half-written: resource rows without a body and bodies without a row, keys with two
    current versions, and resources (a sample of ``sample``, all when ``None``) whose stored facts
    differ from the facts re-extracted from their stored body by the writer's own code."""
    store = db.open()
    try:
        with store.read() as conn:
            bodiless = conn.execute(text(
                "SELECT COUNT(*) FROM resources r WHERE NOT EXISTS (SELECT 1 FROM resource_bodies b WHERE b.rkey = r.rkey)"
            )).scalar_one()  # fmt: skip
            orphans = conn.execute(text(
                "SELECT COUNT(*) FROM resource_bodies b WHERE NOT EXISTS (SELECT 1 FROM resources r WHERE r.rkey = b.rkey)"
            )).scalar_one()  # fmt: skip
            doubled = conn.execute(text(
                "SELECT COUNT(*) FROM (SELECT source, rtype, rid FROM resources WHERE superseded_at IS NULL "
                "GROUP BY source, rtype, rid HAVING COUNT(*) > 1) d"
            )).scalar_one()  # fmt: skip
            rkeys = [int(r[0]) for r in conn.execute(text("SELECT rkey FROM resources WHERE deleted = 0"))]
            resources = len(rkeys)
        if sample is not None and len(rkeys) > sample:
            rkeys = random.Random(seed).sample(rkeys, sample)
        mismatches = facts_mismatches(store, rkeys)
    finally:
        store.close()
    return {
        "resources": resources,
        "bodiless": int(bodiless),
        "orphan_bodies": int(orphans),
        "double_current": int(doubled),
        "facts_checked": len(rkeys),
        "facts_mismatches": mismatches[:10],
        "ok": not (bodiless or orphans or doubled or mismatches),
    }


def facts_mismatches(store: Store, rkeys: list[int]) -> list[str]:
    """Fact tables whose rows for ``rkeys`` differ from what the writer (``Store._write_facts``)
    makes of the stored bodies now. Runs the writer in a transaction that is rolled back, with its
    bulk insert capturing the rows instead; ``store`` must be used for nothing else (its code-id
    cache sees the rolled-back codes)."""
    if not rkeys:
        return []
    captured: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    keys = ", ".join(str(k) for k in rkeys)
    with store.engine.connect() as conn:
        transaction = conn.begin()
        try:
            rows = conn.execute(
                text(
                    "SELECT r.rkey, r.source, b.body FROM resources r JOIN resource_bodies b ON b.rkey = r.rkey "
                    f"WHERE r.rkey IN ({keys}) AND r.deleted = 0"
                )
            ).all()
            facts = [
                (int(rkey), extract(orjson.loads(bytes(body)), source, store.member_system, store.tz))
                for rkey, source, body in rows
            ]

            def capture(_conn: Any, table: str, _columns: Any, table_rows: Any) -> None:
                captured[table].extend(tuple(row) for row in table_rows)

            store._bulk = capture  # type: ignore[method-assign,assignment]
            store._write_facts(conn, facts)
            stored = {
                table.name: [
                    tuple(row)
                    for row in conn.execute(
                        text(
                            f"SELECT {', '.join(c.name for c in table.columns)} FROM {table.name} "
                            f"WHERE rkey IN ({keys})"
                        )
                    )
                ]
                for table in FACT_TABLES
            }
        finally:
            transaction.rollback()
            del store._bulk
    return [
        f"{name}: stored {len(stored[name])} rows, re-extracted {len(captured.get(name, []))}"
        for name in sorted(stored)
        if sorted(map(repr, stored[name])) != sorted(map(repr, captured.get(name, [])))
    ]


# --------------------------------------------------------------------------------------------------
# processes


def _env(db: Database, work: Path, batch_size: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        FHIR_ADAPTER_DATABASE_URL=db.url,
        FHIR_ADAPTER_AUTH_REQUIRED="false",
        FHIR_ADAPTER_SPOOL_DIR=str(work / "spool"),
        FHIR_ADAPTER_INGEST_BATCH_SIZE=str(batch_size),
        FHIR_ADAPTER_JOB_THREADS="1",
    )
    return env


def _start(cmd: list[str], env: dict[str, str], code: Path, log: Path) -> subprocess.Popen[bytes]:
    """A process in its own session, so SIGKILL to its group takes its children too."""
    with log.open("ab") as out:
        return subprocess.Popen(cmd, env=env, cwd=code, stdout=out, stderr=out, start_new_session=True)


def _kill9(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "fhir_adapter", *args]


def cohort(work: Path, patients: int, seed: int) -> Path:
    """Synthetic NDJSON (three source folders), made once per (patients, seed)."""
    data = work / f"cohort-{patients}-{seed}"
    if not (data / "manifest.json").is_file():
        synthesize(data, patients, seed)
    return data


def ingest_all(db: Database, data: Path, env: dict[str, str], code: Path, log: Path) -> None:
    for source in SOURCES:
        run = subprocess.run(
            _cli("ingest", str(data / source), "--source", source, "--quiet", "--database", db.url),
            env=env, cwd=code, capture_output=True, timeout=900, check=False,
        )  # fmt: skip
        with log.open("ab") as out:
            out.write(run.stderr)
        if run.returncode != 0:
            raise RuntimeError(f"ingest of {source} failed ({run.returncode}): {run.stderr[-2000:]!r}")


@dataclass
class Reference:
    """The clean single-run store of a cohort, and how long its ingest took."""

    signature: list[tuple[Any, ...]]
    seconds: float


def reference(engine: str, work: Path, data: Path, batch_size: int, code: Path) -> Reference:
    db = new_database(engine, work, "reference")
    try:
        started = time.monotonic()
        ingest_all(db, data, _env(db, work, batch_size), code, work / "reference.log")
        seconds = time.monotonic() - started
        return Reference(signature(db), seconds)
    finally:
        db.drop()


# --------------------------------------------------------------------------------------------------
# scenario: kill -9 the ingest command


def ingest_kill_trial(
    engine: str,
    work: Path,
    data: Path,
    ref: Reference,
    rng: random.Random,
    *,
    batch_size: int,
    code: Path = ROOT,
) -> Json:
    db = new_database(engine, work, "ingest")
    env = _env(db, work, batch_size)
    log = work / "ingest-trial.log"
    delay = rng.uniform(0.05, 0.9) * ref.seconds
    started = time.monotonic()
    killed_in: str | None = None
    try:
        for source in SOURCES:
            process = _start(
                _cli("ingest", str(data / source), "--source", source, "--quiet", "--database", db.url),
                env,
                code,
                log,
            )
            left = delay - (time.monotonic() - started)
            try:
                process.wait(timeout=max(left, 0.001))
            except subprocess.TimeoutExpired:
                _kill9(process)
                killed_in = source
                break
            if process.returncode != 0:
                raise RuntimeError(f"ingest of {source} failed before the kill ({process.returncode})")
        after_kill = integrity(db, sample=None if engine == "sqlite" else 400, seed=rng.randrange(1 << 30))
        rows_at_kill = after_kill["resources"]
        ingest_all(db, data, env, code, log)  # the re-run, to completion
        rerun = signature(db)
        whole = integrity(db, sample=400, seed=rng.randrange(1 << 30))
    finally:
        db.drop()
    equal = rerun == ref.signature
    return {
        "scenario": "ingest",
        "engine": engine,
        "delay_s": round(delay, 3),
        "killed_in": killed_in,
        "resources_at_kill": rows_at_kill,
        "resources_total": len(ref.signature),
        "integrity_after_kill": after_kill,
        "integrity_after_rerun": whole,
        "rerun_equals_clean_store": equal,
        "ok": bool(after_kill["ok"] and whole["ok"] and equal),
    }


# --------------------------------------------------------------------------------------------------
# scenario: kill -9 the server while clients push


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    db: Database
    work: Path
    code: Path
    port: int = field(default_factory=_free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> None:
        cmd = _cli("serve", "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning")
        self.process = _start(cmd, _env(self.db, self.work, 500), self.code, self.work / "server.log")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the server exited ({self.process.returncode}); see {self.work / 'server.log'}"
                )
            try:
                if httpx.get(f"{self.base}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the server did not answer /healthz in time")

    def kill9(self) -> None:
        assert self.process is not None
        _kill9(self.process)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill9()


@dataclass(frozen=True)
class Ack:
    rtype: str
    rid: str
    version: int
    content: Json


def _patient(rid: str, n: int) -> Json:
    return {
        "resourceType": "Patient", "id": rid, "gender": "female", "birthDate": "2021-03-04",
        "identifier": [{"system": DEFAULT_MEMBER_ID_SYSTEM, "value": f"M-{rid}"}],
        "name": [{"family": "Fault", "given": [f"write-{n}"]}],
    }  # fmt: skip


def _client(base: str, k: int, stop: threading.Event, acks: list[Ack], errors: Counter[str]) -> None:
    """Push until the server goes away: PUTs of the client's own Patients, every fifth request a
    transaction of two; each write acknowledged with a 2xx is recorded with its version."""
    n = 0
    with httpx.Client(base_url=base, timeout=10) as http:
        while not stop.is_set():
            n += 1
            rid = f"c{k}-{n % 7}"
            try:
                if n % 5:
                    content = _patient(rid, n)
                    answer = http.put(f"/fhir/Patient/{rid}", content=orjson.dumps(content),
                                      headers={"Content-Type": "application/fhir+json"})  # fmt: skip
                    if answer.status_code in (200, 201):
                        acks.append(Ack("Patient", rid, int(answer.headers["ETag"][3:-1]), content))
                    else:
                        errors[f"PUT {answer.status_code}"] += 1
                else:
                    first, second = _patient(f"t{k}-{n}-a", n), _patient(f"t{k}-{n}-b", n)
                    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
                        {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": r,
                         "request": {"method": "PUT", "url": f"Patient/{r['id']}"}} for r in (first, second)]}  # fmt: skip
                    answer = http.post("/fhir", content=orjson.dumps(bundle),
                                       headers={"Content-Type": "application/fhir+json"})  # fmt: skip
                    if answer.status_code == 200:
                        for entry, sent in zip(answer.json()["entry"], (first, second), strict=True):
                            version = int(entry["response"]["etag"][3:-1])
                            acks.append(Ack("Patient", sent["id"], version, sent))
                    else:
                        errors[f"transaction {answer.status_code}"] += 1
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                errors[exc.__class__.__name__] += 1
                if isinstance(exc, httpx.ConnectError):
                    return  # the server is gone


def _job_body(lines: int) -> bytes:
    return b"\n".join(orjson.dumps(_patient(f"job-{n}", n)) for n in range(lines)) + b"\n"


def _poll(http: httpx.Client, url: str, timeout: float = 300.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = http.get(url)
        if answer.status_code != 202:
            return answer
        time.sleep(0.2)
    raise RuntimeError(f"job {url} still running after {timeout} s")


def server_kill_trial(
    engine: str,
    work: Path,
    rng: random.Random,
    *,
    clients: int = 4,
    job_lines: int = 20_000,
    delay_range: tuple[float, float] = (0.3, 2.0),
    code: Path = ROOT,
) -> Json:
    db = new_database(engine, work, "server")
    server = Server(db, work, code)
    acks: list[Ack] = []
    errors: Counter[str] = Counter()
    delay = rng.uniform(*delay_range)
    try:
        server.start()
        with httpx.Client(base_url=server.base, timeout=60) as http:
            answer = http.post("/fhir/$ingest", content=_job_body(job_lines),
                               headers={"Content-Type": "application/fhir+ndjson", "Prefer": "respond-async"})  # fmt: skip
            assert answer.status_code == 202, answer.text
            job_url = answer.headers["Content-Location"]
            while (status := http.get(job_url)).status_code == 202 and status.headers.get(
                "X-Progress"
            ) == "queued":
                time.sleep(0.02)
        stop = threading.Event()
        threads = [
            threading.Thread(target=_client, args=(server.base, k, stop, acks, errors))
            for k in range(clients)
        ]
        for thread in threads:
            thread.start()
        time.sleep(delay)
        server.kill9()
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        server.port = _free_port()
        server.start()
        with httpx.Client(base_url=server.base, timeout=60) as http:
            missing, wrong = 0, 0
            for ack in acks:
                got = http.get(f"/fhir/{ack.rtype}/{ack.rid}/_history/{ack.version}")
                if got.status_code != 200:
                    missing += 1
                elif {k: v for k, v in got.json().items() if k != "meta"} != ack.content:
                    wrong += 1
            job_id = job_url.rsplit("/", 1)[1]
            after = http.get(f"/fhir/_jobs/{job_id}")
            job: Json = {"status_after_restart": after.status_code}
            if after.status_code == 500:
                job["reported"] = after.json()["issue"][0]["diagnostics"]
                rerun = http.post(f"/fhir/_jobs/{job_id}/$rerun")
                job["rerun_status"] = rerun.status_code
                done = _poll(http, rerun.headers["Content-Location"])
                job["rerun_result"] = done.status_code
                job["rerun_summary"] = done.json()["issue"][0]["diagnostics"]
                sample = range(0, job_lines, max(1, job_lines // 50))
                job["sampled_lines_stored"] = sum(
                    1 for n in sample if http.get(f"/fhir/Patient/job-{n}").status_code == 200
                )
                job["ok"] = (
                    "interrupted" in job["reported"] and "$rerun" in job["reported"] and done.status_code == 200
                    and job["sampled_lines_stored"] == len(sample)
                )  # fmt: skip
            else:
                job["ok"] = after.status_code == 200  # it had finished before the kill
        server.stop()
        whole = integrity(db, sample=400, seed=rng.randrange(1 << 30))
    finally:
        server.stop()
        db.drop()
    return {
        "scenario": "server",
        "engine": engine,
        "delay_s": round(delay, 3),
        "acknowledged": len(acks),
        "missing": missing,
        "wrong_content": wrong,
        "client_errors": dict(errors),
        "job": job,
        "integrity": whole,
        # acks may be none when the kill comes before any push finished (SQLite writers queue
        # behind the job's batches): then the job and the store's integrity are what is checked
        "ok": missing == 0 and wrong == 0 and bool(job["ok"]) and bool(whole["ok"]),
    }


# --------------------------------------------------------------------------------------------------
# scenario: PostgreSQL drops the store's connections during a load


class _Retries(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "connection dropped" in record.getMessage():
            self.count += 1


def dropped_connections_trial(
    work: Path,
    data: Path,
    ref: Reference,
    rng: random.Random,
    *,
    batch_size: int,
    kills: int = 8,
    delay_range: tuple[float, float] = (0.05, 0.6),
) -> Json:
    db = new_database("postgresql", work, "dropped")
    assert db.app_name is not None
    store = db.open()
    retries = _Retries()
    store_log = logging.getLogger("fhir_adapter.store")
    level = store_log.level
    store_log.setLevel(logging.WARNING)
    store_log.addHandler(retries)
    done = threading.Event()
    terminated: list[int] = []
    delays = [rng.uniform(*delay_range) for _ in range(kills)]

    def killer() -> None:
        admin = create_engine(PG_BASE_URL)
        try:
            for wait in delays:
                if done.wait(wait):
                    return
                with admin.begin() as conn:  # busy ones (a retry) and idle pooled ones (pre-ping)
                    pids = conn.execute(
                        text(
                            "SELECT state <> 'idle', pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE application_name = :app AND pid <> pg_backend_pid()"
                        ),
                        {"app": db.app_name},
                    ).all()
                terminated.extend(1 if busy else 0 for busy, ok in pids if ok)
        finally:
            admin.dispose()

    thread = threading.Thread(target=killer)
    failure = None
    try:
        thread.start()
        for source in SOURCES:
            ingest_paths(store, [data / source], source, batch_size=batch_size)
    except Exception as exc:  # reported in the result: the load did not survive
        failure = f"{exc.__class__.__name__}: {exc}"[:500]
    finally:
        done.set()
        thread.join()
        store_log.removeHandler(retries)
        store_log.setLevel(level)
        store.close()
    try:
        equal = failure is None and signature(db) == ref.signature
        whole = integrity(db, sample=400, seed=rng.randrange(1 << 30))
    finally:
        db.drop()
    return {
        "scenario": "dropped",
        "engine": "postgresql",
        "backends_terminated": len(terminated),
        "terminated_mid_transaction": sum(terminated),
        "retries_logged": retries.count,
        "failure": failure,
        "equals_clean_store": equal,
        "integrity": whole,
        "ok": bool(equal and whole["ok"]),
    }


# --------------------------------------------------------------------------------------------------
# the script


def machine() -> Json:
    memory = 0.0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = round(int(line.split()[1]) / 1024 / 1024, 1)
    return {"nproc": os.cpu_count(), "memory_gb": memory, "python": platform.python_version()}


def _code_copy(work: Path) -> Path:
    """A copy of the code every process of the run imports (the tree changes while it runs; see
    benchmarks/statewide.py)."""
    from benchmarks.statewide import snapshot_code

    target = work / "code"
    snapshot_code(target)
    return target


@contextlib.contextmanager
def _quiet_store_log() -> Iterator[None]:
    logger = logging.getLogger("fhir_adapter.store")
    level = logger.level
    logger.setLevel(logging.ERROR if level == logging.NOTSET else level)
    try:
        yield
    finally:
        logger.setLevel(level)


def run(args: argparse.Namespace) -> list[Json]:
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    code = ROOT if args.live_code else _code_copy(work)
    rng = random.Random(args.seed)
    engines = ["sqlite", "postgresql"] if args.engine == "both" else [args.engine]
    data = cohort(work, args.patients, args.seed)
    results: list[Json] = []

    def record(result: Json) -> None:
        result["trial"] = sum(1 for r in results if r["scenario"] == result["scenario"]
                              and r["engine"] == result["engine"]) + 1  # fmt: skip
        results.append(result)
        print(orjson.dumps(result).decode(), flush=True)

    for engine in engines:
        ref = reference(engine, work, data, args.batch_size, code)
        for _ in range(args.trials if "ingest" in args.scenarios else 0):
            record(ingest_kill_trial(engine, work, data, ref, rng, batch_size=args.batch_size, code=code))
        for _ in range(args.trials if "server" in args.scenarios else 0):
            record(server_kill_trial(engine, work, rng, job_lines=args.job_lines, code=code))
        if engine == "postgresql" and "dropped" in args.scenarios:
            for _ in range(args.trials):
                record(dropped_connections_trial(work, data, ref, rng, batch_size=args.batch_size))
    summary: Json = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "seed": args.seed,
        "patients": args.patients,
        "outcomes": {
            f"{scenario}/{engine}": {"trials": len(rs), "ok": sum(1 for r in rs if r["ok"])}
            for (scenario, engine), rs in _grouped(results).items()
        },
        "code_sha256": _code_digest(code),
    }
    print(orjson.dumps({"summary": summary}).decode(), flush=True)
    if not args.no_record:
        with RESULTS.open("ab") as out:
            for result in results:
                out.write(orjson.dumps({"run": summary["date"], **result}) + b"\n")
            out.write(orjson.dumps({"summary": summary}) + b"\n")
    if not args.keep:
        shutil.rmtree(work / "spool", ignore_errors=True)
    return results


def _grouped(results: list[Json]) -> dict[tuple[str, str], list[Json]]:
    groups: dict[tuple[str, str], list[Json]] = defaultdict(list)
    for result in results:
        groups[(result["scenario"], result["engine"])].append(result)
    return groups


def _code_digest(code: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted((code / "fhir_adapter").rglob("*.py")):
        digest.update(str(path.relative_to(code)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--trials", type=int, default=20, help="trials per scenario and engine")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--patients", type=int, default=200, help="children in the synthetic cohort")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--job-lines", type=int, default=20_000, help="lines of the asynchronous $ingest job")
    parser.add_argument("--scenarios", default="ingest,server,dropped")
    parser.add_argument("--work", type=Path, default=Path("/tmp/fhir-adapter-faults"))
    parser.add_argument("--live-code", action="store_true", help="import the working tree, not a copy of it")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--no-record", action="store_true", help=f"do not append to {RESULTS.name}")
    args = parser.parse_args(argv)
    # SIGTERM ends the run through the finally blocks (servers stopped, schemas dropped)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with _quiet_store_log():
        results = run(args)
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
