"""Pinned npm packages for the Node.js test helpers (tests/validators, tests/fhirserver).

Each folder holds a ``package.json`` and ``package-lock.json``; :func:`node_ready` installs them
with ``npm ci`` on first use, under an ``fcntl`` file lock so parallel pytest workers (xdist) do
not install at the same time, and a marker holding the lock file's hash skips the install when
``node_modules`` is current.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: @medplum/* 4.5.x declare engines ``^20.19.0 || >=22.12.0``.
MIN_NODE = (20, 19)
INSTALL_TIMEOUT_S = 600
_MARKER = ".fhir-adapter-lock-sha256"


@contextmanager
def _install_lock(folder: Path) -> Iterator[None]:
    with (folder / ".install.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def node_version(node: str) -> tuple[int, ...] | None:
    try:
        done = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.match(r"v(\d+)\.(\d+)", done.stdout.strip())
    return (int(match.group(1)), int(match.group(2))) if match else None


def ensure_installed(folder: Path, purpose: str) -> str | None:
    """``npm ci`` in ``folder`` unless ``node_modules`` matches the lock file; ``None`` when ready,
    else why not."""
    npm = shutil.which("npm")
    if npm is None:
        return f"npm is not installed (needed for {purpose})"
    with _install_lock(folder):
        marker = folder / "node_modules" / _MARKER
        digest = hashlib.sha256((folder / "package-lock.json").read_bytes()).hexdigest()
        if marker.is_file() and marker.read_text().strip() == digest:
            return None
        try:
            done = subprocess.run(
                [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
                cwd=folder,
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return f"npm ci in {folder} failed: {exc}"
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
            return f"npm ci in {folder} failed (exit {done.returncode}): " + " | ".join(tail)
        marker.write_text(digest + "\n")
    return None


@functools.cache
def node_ready(folder: Path, purpose: str) -> str | None:
    """``None`` when ``folder``'s Node helper can run, else why not (for ``pytest.skip``): node or
    npm missing, node too old for the pinned packages, or the install failed."""
    node = shutil.which("node")
    if node is None:
        return f"node is not installed (needed for {purpose})"
    version = node_version(node)
    if version is None or version < MIN_NODE:
        return f"node {version} is older than {MIN_NODE} required by the pinned @medplum packages"
    return ensure_installed(folder, purpose)
