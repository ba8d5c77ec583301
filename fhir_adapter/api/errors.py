"""One place where every failure becomes an OperationOutcome with the right HTTP status.

R4 §3.1.0.4 (RESTful API, "Handling Errors"): errors are returned as OperationOutcome. Nothing
else reaches a client: no stack trace, no framework error page.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from fhir_adapter.api.responses import FhirResponse
from fhir_adapter.errors import AdapterError
from fhir_adapter.fhir.outcome import Issue, operation_outcome
from fhir_adapter.logsafe import log_exception

log = logging.getLogger("fhir_adapter.api")

_HTTP_ISSUE = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    406: "not-supported",
    409: "conflict",
    410: "deleted",
    412: "conflict",
    413: "too-costly",
    415: "not-supported",
    422: "invalid",
    429: "throttled",
}


def outcome_response(status: int, issues: list[Issue], headers: dict[str, str] | None = None) -> Response:
    return FhirResponse(operation_outcome(issues), status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AdapterError)
    async def _adapter_error(_request: Request, exc: AdapterError) -> Response:
        if exc.http_status >= 500:
            log.error("request failed: %s", exc.__class__.__name__)
        return outcome_response(
            exc.http_status,
            [Issue("error", exc.issue_type, exc.message, exc.location)],
            getattr(exc, "headers", None),
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> Response:
        issues = []
        for error in exc.errors()[:50]:
            where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
            issues.append(Issue("error", "invalid", f"{where}: {error.get('msg', 'invalid')}", where or None))
        return outcome_response(400, issues or [Issue("error", "invalid", "invalid request")])

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> Response:
        code = _HTTP_ISSUE.get(exc.status_code, "processing")
        message = str(exc.detail) if exc.detail else "error"
        if exc.status_code == 404 and message == "Not Found":
            message = "no such endpoint"
        if exc.status_code == 405:
            message = "this interaction is not supported here"
        return outcome_response(exc.status_code, [Issue("error", code, message)], dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> Response:
        # Logged by class and stack only: a message may hold PHI from the request.
        log_exception(log, "unexpected %s", exc.__class__.__name__, exc=exc)
        return outcome_response(
            500, [Issue("fatal", "exception", "internal error; the server log has the details")]
        )
