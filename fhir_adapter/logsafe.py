"""No PHI in logs (issue #7 item 3): what the service's logs may say, and the filters that make
third-party loggers say no more.

PHI reaches a log line in four ways, each closed here or at its source:

1. **Exception messages.** An exception may quote its input (a name in a ``ValueError``, a row in
   a database error). Unexpected errors are logged with :func:`log_exception`: the exception
   classes and the stack frames (file, line, function, source line), never the messages.
   SQLAlchemy engines are created with ``hide_parameters=True`` (:meth:`Store.open`), so its
   error messages and its SQL log omit bound values. uvicorn logs an exception that escapes the
   app with its traceback: :class:`SafeTracebacks` on ``uvicorn.error`` rewrites it the same way.
2. **URLs.** A search's query string holds the values searched for (``identifier=…|<member id>``,
   ``birthdate=…``). uvicorn's access log is configured without query strings
   (:func:`uvicorn_log_config`, used by ``fhir-adapter serve``; :class:`DropQueryString`), and
   httpx's request log (the adapter's own outgoing requests, and test clients) too.
3. **Database rows.** SQLAlchemy at DEBUG logs every fetched row: :class:`DropSqlRows` drops
   those records from the engine logger (the SQL text and timing at INFO stay useful).
4. **Our own log calls** log identifiers (client ids, job ids, resource types), counts and
   classes, never resource content or request values; the test
   ``tests/api/test_no_phi_in_logs.py`` runs a realistic session with every logger at DEBUG and
   greps for the synthetic names, birth dates and member ids.

:func:`install` puts the filters on their loggers (idempotent); the app factory calls it.
"""

from __future__ import annotations

import copy
import logging
import traceback
from typing import Any

#: SQLAlchemy's engine logger (SQL at INFO, rows at DEBUG).
SQL_ENGINE_LOGGER = "sqlalchemy.engine.Engine"


def safe_traceback(exc: BaseException) -> str:
    """The exception chain's classes and stack frames, without any exception message."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    chain: list[BaseException] = []
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    for index, item in enumerate(reversed(chain)):
        if index:
            parts.append("which led to:")
        parts.append("Traceback (most recent call last):")
        parts.extend(line.rstrip("\n") for line in traceback.format_tb(item.__traceback__))
        parts.append(f"{type(item).__module__}.{type(item).__qualname__} (message withheld: it may hold PHI)")
    return "\n".join(parts)


def log_exception(logger: logging.Logger, message: str, *args: object, exc: BaseException) -> None:
    """``logger.error`` with :func:`safe_traceback` instead of ``exc_info``."""
    logger.error(message + "\n%s", *args, safe_traceback(exc))


class SafeTracebacks(logging.Filter):
    """Rewrites a record's ``exc_info`` into :func:`safe_traceback` text."""

    def filter(self, record: logging.LogRecord) -> bool:
        info = record.exc_info
        if info and info[1] is not None:
            record.msg = f"{record.getMessage()}\n{safe_traceback(info[1])}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


def _without_query(value: Any) -> Any:
    if hasattr(value, "copy_with") and hasattr(value, "query"):  # httpx.URL
        return value.copy_with(query=None, fragment=None)
    if isinstance(value, str) and "?" in value:
        return value.split("?", 1)[0]
    return value


class DropQueryString(logging.Filter):
    """Removes query strings from request lines: uvicorn's access log (``args`` = client, method,
    path with query, HTTP version, status) and httpx's ``HTTP Request: METHOD URL …``."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and args:
            index = 2 if record.name.startswith("uvicorn") else 1
            if len(args) > index:
                copied = list(args)
                copied[index] = _without_query(copied[index])
                record.args = tuple(copied)
        return True


class DropSqlRows(logging.Filter):
    """Drops SQLAlchemy's DEBUG records (``Row (…)``, ``Col (…)``): result rows are PHI."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.DEBUG


_FILTERS: dict[str, type[logging.Filter]] = {
    SQL_ENGINE_LOGGER: DropSqlRows,
    "httpx": DropQueryString,
    "uvicorn.access": DropQueryString,
    "uvicorn.error": SafeTracebacks,
}


def install() -> None:
    """Put each filter on its logger once."""
    for name, kind in _FILTERS.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, kind) for f in logger.filters):
            logger.addFilter(kind())


def uvicorn_log_config(level: str = "info") -> dict[str, Any]:
    """uvicorn's default logging configuration with access lines cut at ``?`` and tracebacks
    without messages (for ``uvicorn.run(log_config=…)``); everything else, ours included, goes
    to stderr through the same handler."""
    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {
        "drop_query": {"()": DropQueryString},
        "safe_tracebacks": {"()": SafeTracebacks},
        "drop_sql_rows": {"()": DropSqlRows},
    }
    config["handlers"]["default"]["filters"] = ["safe_tracebacks"]
    config["handlers"]["access"]["filters"] = ["drop_query"]
    config["loggers"]["uvicorn.access"]["filters"] = ["drop_query"]
    config["loggers"]["uvicorn.error"]["filters"] = ["safe_tracebacks"]
    config["loggers"]["fhir_adapter"] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    config["loggers"][SQL_ENGINE_LOGGER] = {"filters": ["drop_sql_rows"]}
    return config


__all__ = [
    "DropQueryString",
    "DropSqlRows",
    "SafeTracebacks",
    "install",
    "log_exception",
    "safe_traceback",
    "uvicorn_log_config",
]
