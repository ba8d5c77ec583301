"""A few trials of each fault of ``benchmarks/faults.py`` (issue #7 item 6), small and seeded.

kill -9 of ``fhir-adapter ingest`` mid-load and of ``fhir-adapter serve`` while clients push (both
engines, three trials each), and PostgreSQL connections terminated during a load. The full runs
(20 trials and more) and their results: ``benchmarks/README.md``. Each trial's own checks are
in the script; here every trial must come out whole, and the faults must really have happened
(the kill landed mid-load, writes were acknowledged before it, connections were dropped).
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from benchmarks import faults
from tests.conftest import _pg_reason

PATIENTS = 30
TRIALS = 3
BATCH = 200


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="module")
def data(work: Path) -> Path:
    return faults.cohort(work, PATIENTS, seed=3)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest) -> str:
    if request.param == "postgresql" and (reason := _pg_reason()):
        pytest.skip(reason)
    return str(request.param)


@pytest.fixture(scope="module")
def reference(engine: str, work: Path, data: Path) -> faults.Reference:
    return faults.reference(engine, work, data, BATCH, faults.ROOT)


def _explain(result: dict[str, object]) -> str:
    return str({k: v for k, v in result.items() if k != "ok"})


def test_killing_the_ingest_command_mid_load(
    engine: str, work: Path, data: Path, reference: faults.Reference
) -> None:
    rng = random.Random(11)
    mid_load = 0
    for _ in range(TRIALS):
        result = faults.ingest_kill_trial(engine, work, data, reference, rng, batch_size=BATCH)
        assert result["ok"], _explain(result)
        total = result["resources_total"]
        assert isinstance(total, int) and total == len(reference.signature)
        at_kill = result["resources_at_kill"]
        assert isinstance(at_kill, int)
        mid_load += int(result["killed_in"] is not None and 0 <= at_kill < total)
    assert mid_load >= 2, "the kills should land during the load"


def test_killing_the_server_while_clients_push(engine: str, work: Path) -> None:
    rng = random.Random(5)
    interrupted_jobs = acknowledged = 0
    for _ in range(TRIALS):
        result = faults.server_kill_trial(
            engine, work, rng, clients=3, job_lines=8000, delay_range=(0.1, 0.6)
        )
        assert result["ok"], _explain(result)
        assert isinstance(result["acknowledged"], int)
        acknowledged += result["acknowledged"]
        job = result["job"]
        assert isinstance(job, dict)
        interrupted_jobs += int(job["status_after_restart"] == 500)
    assert acknowledged > 0, "clients should have had writes acknowledged before the kills"
    assert interrupted_jobs >= 1, "at least one trial should kill the job while it runs"


def test_dropped_postgresql_connections_during_a_load(
    engine: str, work: Path, data: Path, reference: faults.Reference
) -> None:
    if engine != "postgresql":
        pytest.skip("PostgreSQL connections only")
    result = faults.dropped_connections_trial(
        work, data, reference, random.Random(2), batch_size=50, kills=12, delay_range=(0.02, 0.15)
    )
    assert result["ok"], _explain(result)
    busy, retried = result["terminated_mid_transaction"], result["retries_logged"]
    assert isinstance(busy, int) and isinstance(retried, int)
    assert busy >= 1 and retried >= 1, _explain(result)
