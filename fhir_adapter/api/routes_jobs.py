"""Status URLs of asynchronous jobs (FHIR R4 §3.1.6; Bulk Data 3.0 "Status Request").

Only the client that started a job (its owner), or an oha or admin client, may poll, cancel or
re-run it (:meth:`fhir_adapter.auth.policy.Policy.check_job`); anyone else gets the 404 of an
unknown job, so a job id reveals nothing to another tenant.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from fhir_adapter.api.capabilities import Contribution
from fhir_adapter.api.deps import PolicyDep
from fhir_adapter.api.errors import outcome_response
from fhir_adapter.api.jobs import STATUS_PATH, Job, JobManager
from fhir_adapter.api.responses import FHIR_JSON
from fhir_adapter.auth.policy import Policy
from fhir_adapter.fhir.outcome import Issue

router = APIRouter(tags=["jobs"])
CAPABILITIES = Contribution()
#: Seconds a client should wait between polls.
RETRY_AFTER = "2"


def get_jobs(request: Request) -> JobManager:
    manager: JobManager = request.app.state.jobs
    return manager


JobsDep = Annotated[JobManager, Depends(get_jobs)]


def wants_async(request: Request) -> bool:
    """``Prefer: respond-async`` (RFC 7240) was sent."""
    prefer = request.headers.get("prefer", "")
    return any(part.strip().lower() == "respond-async" for part in prefer.split(","))


def base_url(request: Request) -> str:
    """The service's public base (without ``/fhir``): ``public_base_url`` when configured."""
    configured = request.app.state.adapter.settings.public_base_url
    if configured:
        return str(configured).rstrip("/").removesuffix("/fhir")
    return str(request.base_url).rstrip("/")


def accepted(request: Request, job_id: str) -> Response:
    """``202 Accepted`` with the status URL in ``Content-Location`` and an OperationOutcome."""
    url = f"{base_url(request)}{STATUS_PATH}/{job_id}"
    return outcome_response(
        202,
        [Issue("information", "informational", f"accepted; poll {url} for the result")],
        {"Content-Location": url},
    )


def _owned(jobs: JobManager, job_id: str, policy: Policy) -> Job:
    job = jobs.get(job_id)
    policy.check_job(job_id, job.owner)
    return job


@router.get(STATUS_PATH + "/{job_id}", summary="Poll an asynchronous job")
def job_status(job_id: str, jobs: JobsDep, policy: PolicyDep) -> Response:
    job = _owned(jobs, job_id, policy)
    if job.status in ("queued", "running"):
        progress = job.progress or job.status
        return Response(status_code=202, headers={"X-Progress": progress[:200], "Retry-After": RETRY_AFTER})
    if job.status == "completed":
        return Response(job.result or b"", media_type=job.result_type or FHIR_JSON)
    if job.status == "cancelled":
        return outcome_response(404, [Issue("error", "not-found", f"job {job_id} was cancelled")])
    message = job.error or "failed"
    if "$rerun" not in message:
        message += f"; re-run it with POST {STATUS_PATH}/{job_id}/$rerun"
    return outcome_response(500, [Issue("error", "exception", message)])


@router.delete(STATUS_PATH + "/{job_id}", summary="Cancel a job (and delete its result)")
def job_cancel(job_id: str, jobs: JobsDep, policy: PolicyDep) -> Response:
    _owned(jobs, job_id, policy)
    jobs.cancel(job_id)
    return outcome_response(202, [Issue("information", "informational", f"job {job_id} cancelled")])


@router.post(STATUS_PATH + "/{job_id}/$rerun", summary="Run a finished or failed job's request again")
def job_rerun(job_id: str, request: Request, jobs: JobsDep, policy: PolicyDep) -> Response:
    _owned(jobs, job_id, policy)
    return accepted(request, jobs.rerun(job_id))
