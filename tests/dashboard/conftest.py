"""Fixtures of the dashboard tests: a store seeded the way ``fhir-adapter demo`` seeds it (300
synthetic children) plus member assignments, a child with hostile strings, persisted runs and a
reconciliation; the service on it under uvicorn (authorisation off, and on for tenancy); and
Debian's Chromium for Playwright, installed with apt-get when it is missing.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from rich.console import Console

from fhir_adapter import workflow
from fhir_adapter.api.app import create_app
from fhir_adapter.auth.clients import Registration, register
from fhir_adapter.demo import run_demo
from fhir_adapter.ingest.roster import assignment_map, load_assignments
from fhir_adapter.mappings import load_mappings
from fhir_adapter.report import reconcile_run as rr
from fhir_adapter.settings import Settings
from fhir_adapter.store.runs import persist_run
from tests.conftest import ROOT
from tests.smart import KeyPair, assertion, jwks, key_pair, token_form

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
IF = "oregon-se-issue-focused"
YEAR = 2025
PATIENTS = 300
#: Strings a page must show as text, never run.
HOSTILE_CCO_NAME = '<script>alert("cco")</script> Yamhill'
HOSTILE_MEMBER = '<script>alert("member")</script>'
HOSTILE_COUNTY = "<img src=x onerror=alert(1)>"
CLINICS = ("Clinic North", "Clinic <South> & Co")
CCO_CLIENT = "dash-cco-ihn"
EHR_CLIENT = "dash-ehr"
MEMBER_SYSTEM = "https://oregon.gov/oha/ohp/member-id"
CCO_SYSTEM = "https://oregon.gov/oha/cco-id"


# -- Chromium -------------------------------------------------------------------------------------


def _apt(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(
        ["apt-get", *args], env=env, capture_output=True, text=True, timeout=900, check=False
    )


def install_chromium() -> str | None:
    """Install Debian's ``chromium`` unless present; ``None`` when it is there, else why not."""
    if os.path.exists(CHROMIUM):
        return None
    if os.geteuid() != 0:
        return f"{CHROMIUM} is missing and installing it needs root (run: apt-get install -y chromium)"
    if shutil.which("apt-get") is None:
        return f"{CHROMIUM} is missing and there is no apt-get to install it"
    lock_path = Path("/tmp/fhir-adapter-chromium-install.lock")
    with lock_path.open("w") as lock:  # xdist workers install one at a time; the others wait
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if os.path.exists(CHROMIUM):
                return None
            done = _apt("install", "-y", "--no-install-recommends", "chromium")
            if done.returncode != 0:  # a missing or stale package index: refresh it once
                _apt("update")
                done = _apt("install", "-y", "--no-install-recommends", "chromium")
            if done.returncode != 0 or not os.path.exists(CHROMIUM):
                tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
                return f"apt-get install chromium failed (no network?): {' / '.join(tail)}"
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return None


@pytest.fixture(scope="session")
def chromium() -> str:
    reason = install_chromium()
    if reason is not None:
        print(f"\nSKIPPING browser tests: {reason}")
        pytest.skip(reason)
    return CHROMIUM


# -- the seeded store -----------------------------------------------------------------------------


@dataclass
class DashEnv:
    settings: Settings
    tmp: Path
    #: member id -> CCO of the denominator children of issue-focused 2025 (all sources)
    members: dict[str, str]
    assigned: dict[str, str]
    #: what `fhir-adapter demo` printed
    demo_output: str


def _hostile_child(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    patient = {
        "resourceType": "Patient",
        "id": "hostile-1",
        "identifier": [{"system": MEMBER_SYSTEM, "value": HOSTILE_MEMBER}],
        "birthDate": "2022-03-01",
        "gender": "female",
        "address": [{"district": HOSTILE_COUNTY, "state": "OR"}],
    }
    coverage = {
        "resourceType": "Coverage",
        "id": "hostile-cov-1",
        "status": "active",
        "beneficiary": {"reference": "Patient/hostile-1"},
        "period": {"start": "2024-01-01", "end": "2025-12-31"},
        "payor": [{"identifier": {"system": CCO_SYSTEM, "value": "IHN"}}],
    }
    (folder / "Patient.ndjson").write_bytes(orjson.dumps(patient) + b"\n")
    (folder / "Coverage.ndjson").write_bytes(orjson.dumps(coverage) + b"\n")


def seed(tmp: Path) -> DashEnv:
    mappings_dir = tmp / "mappings"
    shutil.copytree(ROOT / "mappings", mappings_dir)
    ccos = mappings_dir / "ccos.csv"
    ccos.write_text(ccos.read_text().replace("Yamhill Community Care", HOSTILE_CCO_NAME))
    settings = Settings(
        database_url=f"sqlite:///{tmp / 'dashboard.db'}",
        mappings_dir=mappings_dir,
        auth_required=False,
        reconciliation_dir=tmp / "reconciliations",
        rate_limit_per_minute=None,
    )
    quiet = Console(file=io.StringIO(), record=True, width=200)
    run_demo(
        settings,
        tmp / "demo",
        patients=PATIENTS,
        seed=11,
        console=quiet,
        progress=quiet,
        today=date(2026, 6, 30),
    )
    mappings = load_mappings(mappings_dir)
    store = workflow.open_store(settings)
    try:
        _hostile_child(tmp / "hostile")
        workflow.ingest(settings, store, [tmp / "hostile"], "ehr-hostile")
        request = workflow.EvaluationRequest(IF, date(YEAR, 1, 1), date(YEAR, 12, 31), "all")
        ev = workflow.run_evaluation(settings, store, request, evidence=False, mappings=mappings)
        members = {
            c.member_id: c.cco
            for c in ev.children
            if c.member_id and c.cco and c.groups[0].den and c.member_id != HOSTILE_MEMBER
        }
        assigned = {}
        rows = []
        for n, (member, cco) in enumerate(sorted(members.items())):
            if n % 3 == 2:
                continue
            clinic = CLINICS[n % 3]
            assigned[member] = clinic
            rows.append({"MEMBER_ID": member, "CCO": cco, "CLINIC": clinic, "PCP_NPI": "", "START_DATE": "2024-01-01",
                         "END_DATE": ""})  # fmt: skip
        path = tmp / "assignments.csv"
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        load_assignments(
            store, path, "member-assignments",
            cmap=assignment_map(mappings_dir / "extracts" / "assignments.toml"), ccos=mappings.ccos,
        )  # fmt: skip
        # the annual results persisted after the last load, as `evaluate --persist` does
        for mode in ("all", "claims"):
            request = workflow.EvaluationRequest(IF, date(YEAR, 1, 1), date(YEAR, 12, 31), mode)
            done = workflow.run_evaluation(settings, store, request, evidence=False, mappings=mappings)
            persist_run(store, done, now_us=done.as_of)
        _reconcile(settings, store, mappings, tmp)
    finally:
        store.close()
    return DashEnv(settings, tmp, members, assigned, quiet.export_text())


def _reconcile(settings: Settings, store: Any, mappings: Any, tmp: Path) -> None:
    """OHA's member file for IHN (one numerator flipped), reconciled as `fhir-adapter reconcile
    --cco IHN --out-dir <reconciliation_dir>/ihn-2025` does."""
    request = workflow.EvaluationRequest(IF, date(YEAR, 1, 1), date(YEAR, 12, 31), "claims")
    ev = workflow.run_evaluation(settings, store, request, evidence=False, mappings=mappings)
    rows = [c for c in ev.children if c.cco == "IHN" and c.groups[0].den and c.member_id]
    path = tmp / "oha-ihn.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["MEMBER_ID", "NUMERATOR", "DENOMINATOR", "CCO"])
        for n, child in enumerate(rows):
            num = child.groups[0].num != (n == 0)
            writer.writerow([child.member_id, "Y" if num else "N", "Y", "IHN"])
    oha = rr.read_oha(settings, path, IF, date(YEAR, 12, 31), mappings=mappings)
    result = rr.run_reconciliation(settings, store, oha, IF, date(YEAR, 1, 1), date(YEAR, 12, 31), cco="IHN",
                                   mappings=mappings)  # fmt: skip
    out = tmp / "reconciliations" / "ihn-2025"
    out.mkdir(parents=True)
    for name, body in rr.output_files(result).items():
        (out / name).write_bytes(body)


@pytest.fixture(scope="session")
def dash_env(tmp_path_factory: pytest.TempPathFactory) -> DashEnv:
    return seed(tmp_path_factory.mktemp("dashboard"))


# -- servers ----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serve(settings: Settings, port: int) -> Iterator[str]:
    """The service under uvicorn in a thread (its own store, as `fhir-adapter serve`)."""
    app = create_app(settings)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


@pytest.fixture(scope="session")
def live_url(dash_env: DashEnv) -> Iterator[str]:
    """Authorisation off (as the demo and the sandbox serve)."""
    with serve(dash_env.settings, free_port()) as url:
        yield url


@dataclass
class AuthServer:
    url: str
    key: KeyPair
    #: the clients' private JWK Set (what `fhir-adapter clients token --key` reads)
    key_file: Path

    def token(self, client_id: str, scope: str = "system/*.rs") -> str:
        form = token_form(assertion(self.key, client_id, aud=f"{self.url}/auth/token"), scope)
        answer = httpx.post(f"{self.url}/auth/token", data=form, timeout=30)
        assert answer.status_code == 200, answer.text
        token: str = answer.json()["access_token"]
        return token


@pytest.fixture(scope="session")
def auth_server(dash_env: DashEnv) -> Iterator[AuthServer]:
    """Authorisation on, over the same store, with a CCO client (IHN) and an EHR client."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = dash_env.settings.model_copy(update={"auth_required": True, "public_base_url": url})
    key = key_pair("ES384", "dashboard")
    store = workflow.open_store(settings)
    try:
        now = datetime.now(UTC)
        known = {c.id for c in load_mappings(settings.mappings_dir).ccos}
        register(store, Registration(CCO_CLIENT, "cco", ccos=("IHN",), scopes=["system/*.rs"], jwks=jwks(key)),
                 known_ccos=known, now=now)  # fmt: skip
        register(store, Registration(EHR_CLIENT, "ehr", source="dash-ehr-src", scopes=["system/*.rs"],
                                     jwks=jwks(key)), known_ccos=known, now=now)  # fmt: skip
    finally:
        store.close()
    key_file = dash_env.tmp / "client-private.jwks.json"
    key_file.write_bytes(orjson.dumps({"keys": [key.private_jwk]}))
    with serve(settings, port) as served:
        yield AuthServer(served, key, key_file)
