"""Asynchronous jobs: the FHIR asynchronous request pattern (R4 §3.1.6 "Asynchronous Request
Patterns", as used by Bulk Data 3.0 "Status Request").

``Prefer: respond-async`` on a long request → ``202 Accepted`` + ``Content-Location`` of a status
URL; polling it gives ``202`` with ``X-Progress`` and ``Retry-After`` until the job is done, then
the result (``200``) or an OperationOutcome; ``DELETE`` cancels. Jobs live in the ``jobs`` table,
so any worker process answers for any job and a restarted server still knows them: a job that
was running in a process that is gone is marked failed, and ``POST [status URL]/$rerun`` runs its
stored request again; a queued job is picked up again.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import text

from fhir_adapter.errors import AdapterError, NotFoundError, UsageError
from fhir_adapter.fhir.dates import to_micros
from fhir_adapter.ingest.runner import Clock
from fhir_adapter.logsafe import log_exception
from fhir_adapter.store.db import DRIVER_ERRORS, Store

log = logging.getLogger("fhir_adapter.jobs")

STATUS_PATH = "/fhir/_jobs"
ACTIVE = ("queued", "running")


class JobCancelledError(Exception):
    """Raised inside a job when its status was set to ``cancelled``."""


@dataclass(frozen=True)
class JobResult:
    """What a finished job returns: the body and its media type, plus the HTTP status."""

    body: bytes
    media_type: str = "application/fhir+json"


@dataclass(frozen=True)
class Job:
    id: str
    kind: str
    status: str
    request: dict[str, Any]
    owner: str | None
    created_at: int
    updated_at: int
    progress: str | None
    result_type: str | None
    result: bytes | None
    error: str | None
    worker: str | None


class JobContext:
    """Handed to a running job: report progress and stop early when cancelled."""

    def __init__(self, manager: JobManager, job_id: str) -> None:
        self._manager = manager
        self.job_id = job_id

    def progress(self, message: str) -> None:
        """Record progress (shown as ``X-Progress``); raises :class:`JobCancelledError` when the
        job has been cancelled meanwhile."""
        if not self._manager._touch(self.job_id, message):
            raise JobCancelledError(self.job_id)


JobFunc = Callable[[JobContext, dict[str, Any]], JobResult]


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(worker: str | None) -> bool:
    """Whether the process named by ``worker`` (host:pid) may still run; other hosts' workers are
    assumed alive (their own start-up recovers their jobs)."""
    if not worker:
        return False
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    if int(pid) == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class JobManager:
    """Runs registered job kinds on a small thread pool; state is in the database."""

    def __init__(self, store: Store, clock: Clock, threads: int = 2) -> None:
        self.store = store
        self.clock = clock
        self.kinds: dict[str, JobFunc] = {}
        #: per kind, called with the job after it was cancelled (e.g. to delete its files)
        self.cancel_hooks: dict[str, Callable[[Job], None]] = {}
        self.worker = worker_id()
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="fhir-adapter-job")
        self._lock = threading.Lock()

    def register(self, kind: str, func: JobFunc) -> None:
        self.kinds[kind] = func

    def _now(self) -> int:
        return to_micros(self.clock())

    # -- lifecycle ----------------------------------------------------------------------------
    def submit(self, kind: str, request: dict[str, Any], owner: str | None = None) -> str:
        if kind not in self.kinds:
            raise UsageError(f"unknown job kind {kind!r}")
        job_id = uuid.uuid4().hex
        now = self._now()
        with self.store.write() as conn:
            conn.execute(
                text(
                    "INSERT INTO jobs (id, kind, status, request, owner, created_at, updated_at, worker) "
                    "VALUES (:id, :kind, 'queued', :request, :owner, :now, :now, :worker)"
                ),
                {
                    "id": job_id,
                    "kind": kind,
                    "request": orjson.dumps(request).decode(),
                    "owner": owner,
                    "now": now,
                    "worker": self.worker,
                },
            )
        self._pool.submit(self._run, job_id)
        return job_id

    def _run(self, job_id: str) -> None:
        with self.store.write() as conn:
            row = conn.execute(
                text(
                    "UPDATE jobs SET status = 'running', updated_at = :now, worker = :w "
                    "WHERE id = :id AND status = 'queued'"
                ),
                {"id": job_id, "now": self._now(), "w": self.worker},
            )
            if row.rowcount != 1:
                return  # cancelled before it started
        job = self.get(job_id)
        func = self.kinds.get(job.kind)
        try:
            if func is None:
                raise UsageError(f"this server cannot run jobs of kind {job.kind!r}")
            result = func(JobContext(self, job_id), job.request)
        except JobCancelledError:
            return
        except AdapterError as exc:
            self._finish(job_id, "failed", error=str(exc))
            return
        except Exception as exc:  # a job must never die silently (its message may hold PHI: not logged)
            log_exception(log, "job %s (%s) failed", job_id, job.kind, exc=exc)
            self._finish(job_id, "failed", error=f"internal error ({exc.__class__.__name__})")
            return
        self._finish(job_id, "completed", result=result)

    def _finish(
        self, job_id: str, status: str, *, result: JobResult | None = None, error: str | None = None
    ) -> None:
        try:
            with self.store.write() as conn:
                conn.execute(
                    text(
                        "UPDATE jobs SET status = :status, updated_at = :now, result = :result, "
                        "result_type = :rtype, error = :error WHERE id = :id AND status = 'running'"
                    ),
                    {
                        "id": job_id,
                        "status": status,
                        "now": self._now(),
                        "result": result.body if result else None,
                        "rtype": result.media_type if result else None,
                        "error": error,
                    },
                )
        except DRIVER_ERRORS as exc:
            log_exception(log, "cannot record the end of job %s", job_id, exc=exc)

    def _touch(self, job_id: str, progress: str) -> bool:
        with self.store.write() as conn:
            done = conn.execute(
                text(
                    "UPDATE jobs SET progress = :p, updated_at = :now WHERE id = :id AND status = 'running'"
                ),
                {"id": job_id, "p": progress[:500], "now": self._now()},
            )
            return done.rowcount == 1

    def get(self, job_id: str) -> Job:
        with self.store.read() as conn:
            row = conn.execute(
                text(
                    "SELECT id, kind, status, request, owner, created_at, updated_at, progress, result_type, "
                    "result, error, worker FROM jobs WHERE id = :id"
                ),
                {"id": job_id},
            ).first()
        if row is None:
            raise NotFoundError(f"no job {job_id}")
        return Job(
            row[0], row[1], row[2], orjson.loads(row[3]), row[4], row[5], row[6], row[7], row[8],
            bytes(row[9]) if row[9] is not None else None, row[10], row[11],
        )  # fmt: skip

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued or running job (a running one stops at its next progress report and
        its result is discarded); a finished job's stored result is deleted."""
        job = self.get(job_id)
        with self.store.write() as conn:
            conn.execute(
                text(
                    "UPDATE jobs SET status = 'cancelled', updated_at = :now, result = NULL WHERE id = :id "
                    "AND status <> 'cancelled'"
                ),
                {"id": job_id, "now": self._now()},
            )
        hook = self.cancel_hooks.get(job.kind)
        if hook is not None:
            hook(job)
        return job

    def rerun(self, job_id: str) -> str:
        job = self.get(job_id)
        if job.status in ACTIVE:
            raise UsageError(f"job {job_id} is still {job.status}")
        return self.submit(job.kind, job.request, job.owner)

    def recover(self) -> tuple[int, int]:
        """At start-up: fail running jobs whose process is gone, and take over queued ones
        whose process is gone (if this process knows their kind). Returns (failed, requeued)."""
        sql = "SELECT id, status, worker, kind FROM jobs WHERE status IN ('queued', 'running')"
        with self.store.read() as conn:
            rows = list(conn.execute(text(sql)))
        failed = requeued = 0
        for job_id, status, worker, kind in rows:
            if _alive(worker) or (status == "queued" and kind not in self.kinds):
                continue
            with self.store.write() as conn:
                if status == "running":
                    done = conn.execute(
                        text(
                            "UPDATE jobs SET status = 'failed', updated_at = :now, error = :error "
                            "WHERE id = :id AND status = 'running' AND worker = :w"
                        ),
                        {
                            "id": job_id,
                            "now": self._now(),
                            "w": worker,
                            "error": "interrupted: the server process running it stopped; re-run it with "
                            f"POST {STATUS_PATH}/{job_id}/$rerun",
                        },
                    )
                    failed += done.rowcount
                    continue
                done = conn.execute(
                    text("UPDATE jobs SET worker = :me WHERE id = :id AND status = 'queued' AND worker = :w"),
                    {"id": job_id, "me": self.worker, "w": worker},
                )
            if done.rowcount == 1:
                requeued += 1
                self._pool.submit(self._run, job_id)
        return failed, requeued

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
