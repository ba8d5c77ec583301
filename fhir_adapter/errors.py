"""The one error tree. Each class knows its HTTP status, FHIR IssueType and CLI exit code.

Exit codes (DESIGN.md §2): 0 ok, 1 runtime failure, 2 usage, 3 invalid data or mappings.
IssueType codes: http://hl7.org/fhir/R4/valueset-issue-type.html
"""

from __future__ import annotations


class AdapterError(Exception):
    """Base of every error the adapter raises on purpose."""

    http_status: int = 500
    issue_type: str = "exception"
    exit_code: int = 1

    def __init__(self, message: str, *, location: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: ``file:line`` on the command line, a FHIRPath-style expression over HTTP.
        self.location = location

    def __str__(self) -> str:
        return f"{self.location}: {self.message}" if self.location else self.message


class UsageError(AdapterError):
    """The caller asked for something malformed (bad option, bad parameter)."""

    http_status = 400
    issue_type = "invalid"
    exit_code = 2


class InvalidDataError(AdapterError):
    """Input data (a resource, a line, an extract) cannot be used."""

    http_status = 422
    issue_type = "invalid"
    exit_code = 3


class MappingsError(InvalidDataError):
    """``mappings/`` is inconsistent or malformed; ``location`` is file:line."""

    issue_type = "invariant"


class NotFoundError(AdapterError):
    """A requested resource, measure or job does not exist."""

    http_status = 404
    issue_type = "not-found"
    exit_code = 3


class ConflictError(AdapterError):
    """A version conflict."""

    http_status = 409
    issue_type = "conflict"
    exit_code = 1


class PreconditionFailedError(ConflictError):
    """``If-Match`` names a version that is not current (HTTP 412)."""

    http_status = 412


class GoneError(NotFoundError):
    """The resource existed and was deleted (HTTP 410)."""

    http_status = 410
    issue_type = "deleted"


class PayloadTooLargeError(UsageError):
    """A request body, bundle or NDJSON line beyond the configured limits (HTTP 413)."""

    http_status = 413
    issue_type = "too-costly"


class UnsupportedMediaTypeError(UsageError):
    """A body in a media type the endpoint does not take (HTTP 415)."""

    http_status = 415
    issue_type = "not-supported"


class AuthenticationError(AdapterError):
    """Missing, invalid or expired credentials (HTTP 401). ``headers`` carries the
    ``WWW-Authenticate`` challenge (RFC 6750 §3)."""

    http_status = 401
    issue_type = "login"
    exit_code = 2

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.headers = headers or {}


class ForbiddenError(AdapterError):
    """Authenticated, but the granted scopes do not allow this interaction (HTTP 403)."""

    http_status = 403
    issue_type = "forbidden"
    exit_code = 2

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.headers = headers or {}


class OAuthError(AdapterError):
    """A token-endpoint error (RFC 6749 §5.2). ``error`` is the OAuth code (``invalid_request``,
    ``invalid_client``, ``invalid_grant``, ``unsupported_grant_type``, ``invalid_scope``); the token
    endpoint answers it as OAuth JSON, not as an OperationOutcome. HTTP 401 for
    ``invalid_client``, else 400."""

    issue_type = "security"
    exit_code = 2

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.http_status = 401 if error == "invalid_client" else 400


class RemoteError(AdapterError):
    """A remote FHIR, Bulk Data or authorisation server failed or refused a request the adapter
    made as a client (``pull``): an error status after the allowed retries, a malformed answer,
    or a token endpoint's OAuth error. ``status`` is the HTTP status when there was one."""

    http_status = 502
    issue_type = "exception"
    exit_code = 1

    def __init__(self, message: str, *, status: int | None = None, location: str | None = None) -> None:
        super().__init__(message, location=location)
        self.status = status


class StoreError(AdapterError):
    """The database failed or is in an unexpected state."""

    http_status = 500
    issue_type = "exception"
    exit_code = 1


__all__ = [
    "AdapterError",
    "AuthenticationError",
    "ConflictError",
    "ForbiddenError",
    "GoneError",
    "InvalidDataError",
    "MappingsError",
    "NotFoundError",
    "OAuthError",
    "PayloadTooLargeError",
    "PreconditionFailedError",
    "RemoteError",
    "StoreError",
    "UnsupportedMediaTypeError",
    "UsageError",
]
