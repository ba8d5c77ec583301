"""Run an independent FHIR R4 server (DESIGN.md §6) for the pull tests.

``server.mjs`` beside this file wraps ``@medplum/fhir-router`` and its in-memory
``MemoryRepository`` in a Node HTTP server (create, read, update, search, transaction). The npm
packages are pinned in ``package.json`` / ``package-lock.json`` (the same ``@medplum/core`` line as
tests/validators) and installed with ``npm ci`` on first use, under an ``fcntl`` file lock so
parallel pytest workers do not install at the same time; a marker holding the lock file's hash
skips the install when ``node_modules`` is current.

Use::

    reason = server_available()
    if reason:
        pytest.skip(reason)
    with fhir_server() as base:       # "http://127.0.0.1:<port>/fhir"
        seed(base, resources)
"""

from __future__ import annotations

import queue
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import httpx

from tests.npm import node_ready

HERE = Path(__file__).resolve().parent
START_TIMEOUT_S = 60
#: Entries per seeding transaction: the router refuses transactions with more than 50 updates.
SEED_CHUNK = 50


def server_available() -> str | None:
    """``None`` when the server can run, else why not (for ``pytest.skip``)."""
    return node_ready(HERE, "the Node.js FHIR server in tests/fhirserver")


def _first_line(stream: IO[str], out: queue.Queue[str]) -> None:
    out.put(stream.readline())


@contextmanager
def fhir_server(*, paging: bool = True) -> Iterator[str]:
    """Start ``server.mjs`` on a free port; yield its FHIR base URL; stop it. ``paging=False``
    serves medplum's bare searches (one page, no links). Raises ``RuntimeError`` when it cannot
    run (call :func:`server_available` first for a skip)."""
    reason = server_available()
    if reason is not None:
        raise RuntimeError(reason)
    node = shutil.which("node")
    assert node is not None
    args = [node, str(HERE / "server.mjs"), "0"] + ([] if paging else ["--no-paging"])
    proc = subprocess.Popen(args, cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=_first_line, args=(proc.stdout, lines), daemon=True).start()
        try:
            line = lines.get(timeout=START_TIMEOUT_S)
        except queue.Empty:
            raise RuntimeError(f"server.mjs did not start within {START_TIMEOUT_S} s") from None
        match = re.match(r"listening (\d+)", line)
        if match is None:
            err = proc.stderr.read() if proc.stderr and proc.poll() is not None else ""
            raise RuntimeError(f"server.mjs failed to start: {line.strip()!r} {err.strip()[-2000:]}")
        base = f"http://127.0.0.1:{match.group(1)}/fhir"
        response = httpx.get(base.removesuffix("/fhir") + "/healthz", timeout=10)
        if response.status_code != 200:
            raise RuntimeError(f"server.mjs is not healthy: HTTP {response.status_code}")
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def seed(base: str, resources: Sequence[dict[str, Any]], *, chunk: int = SEED_CHUNK) -> None:
    """Store ``resources`` with their own ids: transaction Bundles POSTed to the base, one PUT
    entry per resource (FHIR R4 §3.1.0.11). Raises ``RuntimeError`` naming a refused entry."""
    with httpx.Client(timeout=60) as client:
        for start in range(0, len(resources), chunk):
            part = resources[start : start + chunk]
            bundle = {
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [
                    {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
                    for r in part
                ],
            }
            response = client.post(base, json=bundle, headers={"Content-Type": "application/fhir+json"})
            if response.status_code != 200:
                raise RuntimeError(
                    f"seeding transaction refused: HTTP {response.status_code} {response.text[:500]}"
                )
            for entry, sent in zip(response.json().get("entry", []), part, strict=True):
                status = str(entry.get("response", {}).get("status", ""))
                if not status.startswith(("200", "201")):
                    raise RuntimeError(f"seeding {sent['resourceType']}/{sent['id']} failed: {entry}")


def update(base: str, resource: dict[str, Any]) -> dict[str, Any]:
    """PUT one resource (create or update); the stored version."""
    response = httpx.put(
        f"{base}/{resource['resourceType']}/{resource['id']}",
        json=resource,
        headers={"Content-Type": "application/fhir+json"},
        timeout=30,
    )
    if response.status_code not in (200, 201):
        raise RuntimeError(
            f"PUT {resource['resourceType']}/{resource['id']}: HTTP {response.status_code} {response.text[:500]}"
        )
    result: dict[str, Any] = response.json()
    return result


__all__ = ["fhir_server", "seed", "server_available", "update"]
