"""Typed settings, read once at the edge (CLI or app factory) and injected, never global.

Environment variables use the ``FHIR_ADAPTER_`` prefix, e.g. ``FHIR_ADAPTER_DATABASE_URL``.
"""

from __future__ import annotations

import os
from pathlib import Path
from zoneinfo import ZoneInfo

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///./fhir-adapter.db"
#: Oregon Health Plan member ids. UNVERIFIED: OHA publishes no FHIR identifier system for OHP
#: member ids, so this is the project's own default; sites set theirs.
DEFAULT_MEMBER_ID_SYSTEM = "https://oregon.gov/oha/ohp/member-id"
DEFAULT_CANONICAL_BASE = "https://github.com/fhir-adapter/oregon-se/fhir"


def packaged_dir(name: str) -> Path:
    """Return the shipped ``mappings/`` or ``conformance/`` folder.

    A source checkout (or editable install) uses the folder at the repository root; a wheel
    carries a copy under ``fhir_adapter/_data/``.
    """
    here = Path(__file__).resolve().parent
    checkout = here.parent / name
    if checkout.is_dir() and (here.parent / "pyproject.toml").is_file():
        return checkout
    return here / "_data" / name


class Settings(BaseSettings):
    """Everything configurable about one adapter instance."""

    model_config = SettingsConfigDict(env_prefix="FHIR_ADAPTER_", extra="ignore")

    database_url: str = DEFAULT_DATABASE_URL
    mappings_dir: Path = Field(default_factory=lambda: packaged_dir("mappings"))
    conformance_dir: Path = Field(default_factory=lambda: packaged_dir("conformance"))
    member_id_system: str = DEFAULT_MEMBER_ID_SYSTEM
    canonical_base: str = DEFAULT_CANONICAL_BASE
    timezone: str = "America/Los_Angeles"
    #: ``MeasureReport.reporter`` (1..1 in every DEQM profile): a reference such as
    #: ``Organization/my-cco`` and/or a display name of the organisation that runs the adapter.
    reporter_reference: str | None = None
    reporter_display: str = "fhir-adapter"
    #: Resources handed to the store per write transaction during ingest.
    ingest_batch_size: int = Field(default=5000, ge=1, le=1_000_000)
    #: Processes for large file ingests: 2 lets one parse and extract while the other writes.
    ingest_workers: int = Field(default_factory=lambda: min(2, os.cpu_count() or 1), ge=1, le=2)

    # -- FHIR REST service ---------------------------------------------------------------
    #: Source name of pushes while authorisation is off (with SMART on: the client's own source).
    api_default_source: str = "rest"
    #: Base URL clients use to reach ``/fhir`` (paging links, Content-Location); default: taken
    #: from each request (set it behind a proxy that rewrites hosts).
    public_base_url: str | None = None
    #: Largest request body accepted (HTTP 413 beyond).
    max_body_bytes: int = Field(default=256 * 1024 * 1024, ge=1024)
    #: Most entries in one transaction or batch Bundle.
    max_bundle_entries: int = Field(default=10_000, ge=1)
    #: Search page size when ``_count`` is absent, and its cap.
    search_count_default: int = Field(default=50, ge=1)
    search_count_max: int = Field(default=1000, ge=1)
    #: Threads per server process that run asynchronous jobs.
    job_threads: int = Field(default=2, ge=1, le=32)
    #: ``POST /fhir/$ingest`` bodies larger than this run as an asynchronous job even without
    #: ``Prefer: respond-async`` (docs/what-to-send.md).
    ingest_async_bytes: int = Field(default=8 * 1024 * 1024, ge=0)
    #: Folder where asynchronous ``$ingest`` bodies wait for their job (default: the system
    #: temporary folder's ``fhir-adapter-spool``); a job reads its file in the process that
    #: accepted it, or after a restart on the same host.
    spool_dir: Path | None = None
    #: Source name under which the service stores the MeasureReports (and subject Lists) it
    #: produces, so they can be read and searched like any stored resource.
    report_source: str = "adapter-reports"
    #: Folder of Bulk Data ``$export`` output files, one subfolder per job (default: the system
    #: temporary folder's ``fhir-adapter-exports``); files live until the job is deleted.
    export_dir: Path | None = None
    #: Hosts ``POST /fhir/$import`` may fetch files from: exact ``host`` or ``host:port`` (https
    #: only), or ``http://host[:port]`` to allow plain http too. Empty: ``$import`` fetches nothing.
    import_allowed_hosts: list[str] = Field(default_factory=list)
    #: Longest NDJSON line (bytes, newline excluded) accepted by ``$ingest``, ``$import`` and
    #: ``fhir-adapter ingest``: a longer line is rejected with its line number, the others are kept.
    max_ndjson_line_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    #: Requests per minute per client id (per IP address without a valid token), also on
    #: ``/auth/token``; beyond it HTTP 429 with ``Retry-After``. A token bucket in each worker
    #: process, so the effective limit is this times the number of workers. ``None``: no limit.
    rate_limit_per_minute: int | None = Field(default=600, ge=1)
    #: Small-cell suppression of published summary MeasureReports (``fhir-adapter evaluate``,
    #: ``$evaluate-measure`` population reports): counts 1 … N−1 and their complements are masked
    #: (fhir_adapter/report/suppression.py; 11 follows CMS's 1–10 rule). ``None``: off.
    suppression_threshold: int | None = Field(default=None, ge=2)
    #: Folder of ``fhir-adapter reconcile --out-dir`` outputs (the folder or its subfolders); the
    #: dashboard shows the newest ``summary.json`` there. ``None``: no reconciliation panel data.
    reconciliation_dir: Path | None = None

    # -- SMART Backend Services (fhir_adapter/auth) -----------------------------------------
    #: Every request except discovery, ``/healthz``, ``/auth/token`` and the OpenAPI docs needs a
    #: bearer token. ``False`` is for development only: every caller is an anonymous client with
    #: all permissions (the app logs a warning).
    auth_required: bool = True
    #: HS256 key of the access tokens this server issues; unset: one is generated at first start
    #: and kept in the store (``store_meta``), so every worker on the store shares it.
    auth_token_secret: SecretStr | None = None
    #: Access-token lifetime (SMART App Launch 2.2 Backend Services: ``expires_in`` ≤ 300).
    auth_token_ttl_seconds: int = Field(default=300, ge=1, le=300)
    #: Clock skew tolerated on client-assertion and access-token times.
    auth_leeway_seconds: int = Field(default=30, ge=0, le=60)
    #: A CCO client reads (and exports) the children with a Coverage of its CCO overlapping the
    #: last this-many days (default: a measurement year plus its six-month validation and dispute
    #: time); evaluations use the measurement period instead (docs/security.md).
    tenant_lookback_days: int = Field(default=548, ge=0, le=3660)
    #: A static bearer token that may read ``/metrics`` only (for a Prometheus scraper); unset:
    #: ``/metrics`` needs an oha or admin client's access token.
    metrics_token: SecretStr | None = None

    # -- pull from FHIR servers (fhir-adapter pull; fhir_adapter/ingest/pull.py) ------------
    #: Search page size asked for with ``_count``.
    pull_page_size: int = Field(default=500, ge=1, le=10_000)
    #: Bulk Data output files downloaded at the same time.
    pull_max_parallel: int = Field(default=2, ge=1, le=16)
    #: Longest wait between Bulk Data status polls and before a retry, whatever ``Retry-After``
    #: asks for (Bulk Data 3.0 "Bulk Data Status Request": clients SHOULD use ``Retry-After``).
    pull_max_wait_seconds: float = Field(default=60.0, gt=0)
    #: Attempts per HTTP request on 429, 5xx and transport errors (exponential backoff).
    pull_attempts: int = Field(default=5, ge=1, le=50)
    #: HTTP timeout of one request (connect, read, write), seconds.
    pull_timeout_seconds: float = Field(default=60.0, gt=0)
    #: An access token is renewed this long before it expires.
    pull_token_margin_seconds: float = Field(default=60.0, ge=0)
    #: The next incremental search pull asks for ``_lastUpdated`` after the last run's start
    #: minus this much (clock skew between server and adapter; re-reading is harmless).
    pull_since_overlap_seconds: float = Field(default=60.0, ge=0)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        ZoneInfo(value)  # raises for an unknown zone
        return value

    @property
    def reporter(self) -> dict[str, object]:
        """The reporter Reference; without a configured reference the adapter instance is named
        by its canonical base URI as an identifier (DEQM requires a reference or identifier)."""
        reporter: dict[str, object] = {"display": self.reporter_display}
        if self.reporter_reference:
            reporter["reference"] = self.reporter_reference
        else:
            reporter["identifier"] = {"system": "urn:ietf:rfc:3986", "value": self.canonical_base}
        return reporter

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)
