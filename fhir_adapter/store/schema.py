"""The store's schema: one definition, two engines (SQLite and PostgreSQL).

DESIGN.md §1: raw resources are immutable and versioned per source, with ``ingested_at`` and
``superseded_at`` (microseconds since the epoch) so a report can be recomputed as of any time.
Facts are generic (every coding, diagnosis, date, provider id) and point at the resource
*version* (``rkey``) they were extracted from, so they share its visibility window. Nothing here
filters by a value set: a code-list change means re-evaluating, never re-ingesting.

Dates are stored twice where arithmetic needs it: as the proleptic Gregorian ordinal (``*_day``,
day differences) and as ``YYYYMMDD`` integers (``*_ymd``, whole-year ages); both are plain
integers, so the same SQL runs unchanged on both engines.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
)

#: Bump when the schema changes incompatibly; the store refuses to open a different one.
SCHEMA_VERSION = 5

metadata = MetaData()
#: On SQLite an ``INTEGER PRIMARY KEY`` is the rowid itself (no second index); BIGINT elsewhere.
_RKEY = BigInteger().with_variant(Integer, "sqlite")

store_meta = Table(
    "store_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

resources = Table(
    "resources",
    metadata,
    Column("rkey", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("source", String(128), nullable=False),
    Column("rtype", String(64), nullable=False),
    Column("rid", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("ingested_at", BigInteger, nullable=False),
    Column("superseded_at", BigInteger, nullable=True),
    Column("deleted", SmallInteger, nullable=False, default=0),
    Column("hash", String(32), nullable=False),
    Column("last_updated", Text, nullable=True),
    UniqueConstraint("source", "rtype", "rid", "version", name="uq_resource_version"),
)

#: The raw bytes of each version, apart from ``resources`` so that the as-of joins of an
#: evaluation read a compact table (bodies inline made them page through gigabytes).
resource_bodies = Table(
    "resource_bodies",
    metadata,
    Column("rkey", _RKEY, primary_key=True),
    Column("body", LargeBinary, nullable=False),
)
Index(
    "ix_resources_current", resources.c.source, resources.c.rtype, resources.c.rid, resources.c.superseded_at
)

#: Dictionary of (system, code) pairs as they arrived; f_code points here by ``cid``.
codes = Table(
    "codes",
    metadata,
    Column("cid", Integer, primary_key=True, autoincrement=True),
    Column("system", String(256), nullable=False),
    Column("code", String(128), nullable=False),
    UniqueConstraint("system", "code", name="uq_codes"),
)

f_patient = Table(
    "f_patient",
    metadata,
    Column("rkey", _RKEY, primary_key=True),
    Column("source", String(128), nullable=False),
    Column("pid", String(64), nullable=False),
    Column("member_id", Text, nullable=True),
    Column("birth_raw", Text, nullable=True),
    Column("birth_lo_day", Integer, nullable=True),
    Column("birth_lo_ymd", Integer, nullable=True),
    Column("birth_hi_ymd", Integer, nullable=True),
    Column("gender", Text, nullable=True),
    Column("birth_sex", Text, nullable=True),
    Column("deceased", SmallInteger, nullable=False, default=0),
    Column("deceased_day", Integer, nullable=True),
    Column("race", Text, nullable=True),
    Column("ethnicity", Text, nullable=True),
    Column("language", Text, nullable=True),
    Column("disability", Text, nullable=True),
    Column("county", Text, nullable=True),
    #: REALD (Oregon's race, ethnicity, language and disability standard) from eligibility
    #: extracts; preferred over the EHR-reported ``race``/``ethnicity``/``language`` above.
    Column("reald_race_ethnicity", Text, nullable=True),
    Column("reald_language", Text, nullable=True),
)
Index("ix_f_patient_member", f_patient.c.member_id)
Index("ix_f_patient_src", f_patient.c.source, f_patient.c.pid)

f_coverage = Table(
    "f_coverage",
    metadata,
    Column("rkey", BigInteger, nullable=False),
    Column("source", String(128), nullable=False),
    Column("pid", String(64), nullable=True),
    Column("status", Text, nullable=True),
    Column("payor_system", Text, nullable=True),
    Column("payor_value", Text, nullable=True),
    Column("payor_org", String(64), nullable=True),
    Column("start_day", Integer, nullable=True),
    Column("end_day", Integer, nullable=True),
)
Index("ix_f_coverage_pid", f_coverage.c.source, f_coverage.c.pid)
Index("ix_f_coverage_rkey", f_coverage.c.rkey)
Index("ix_f_coverage_pid_only", f_coverage.c.pid)

f_org_ident = Table(
    "f_org_ident",
    metadata,
    Column("rkey", BigInteger, nullable=False),
    Column("source", String(128), nullable=False),
    Column("oid", String(64), nullable=False),
    Column("system", Text, nullable=True),
    Column("value", Text, nullable=True),
)
Index("ix_f_org_ident", f_org_ident.c.source, f_org_ident.c.oid)

#: One row per clinical or claims resource that can be, support or date a service.
f_event = Table(
    "f_event",
    metadata,
    Column("rkey", _RKEY, primary_key=True),
    Column("source", String(128), nullable=False),
    Column("rtype", String(64), nullable=False),
    Column("rid", String(64), nullable=False),
    #: ``claims`` or ``clinical`` (spec §3 "Where the data comes from").
    Column("category", String(16), nullable=False),
    Column("pid", String(64), nullable=True),
    Column("status", Text, nullable=True),
    Column("use", Text, nullable=True),
    Column("outcome", Text, nullable=True),
    Column("denied", SmallInteger, nullable=False, default=0),
    #: Local date (ordinal) of the event: EOB/Claim first line from-date, Encounter period
    #: start (else end), Procedure performed, Condition recorded/onset, ServiceRequest authoredOn.
    Column("day", Integer, nullable=True),
    #: Last day a partial date can mean (``2025-03`` → March 31); equal to ``day`` when exact.
    Column("day_last", Integer, nullable=True),
    Column("encounter_rid", String(64), nullable=True),
    Column("claim_rid", String(64), nullable=True),
    Column("provider", Text, nullable=True),
    Column("verification", Text, nullable=True),
)
#: search by patient (``GET /fhir/Encounter?patient=…``); the engine's set-based plan scans
Index("ix_f_event_pid", f_event.c.pid)

#: Lines of a claim (``line`` ≥ 1), with the line's from-date and denial; line 0 is the header.
f_line = Table(
    "f_line",
    metadata,
    Column("rkey", BigInteger, nullable=False),
    Column("line", Integer, nullable=False),
    Column("day", Integer, nullable=True),
    Column("day_last", Integer, nullable=True),
    Column("denied", SmallInteger, nullable=False, default=0),
    Column("provider", Text, nullable=True),
)
Index("ix_f_line", f_line.c.rkey, f_line.c.line)

#: Every coding. ``role``: ``proc`` (procedure/service/type), ``dx`` (diagnosis or reason).
#: ``line`` 0 is the header; a diagnosis a claim line points at is repeated with that line.
#: ``seq`` is the diagnosis sequence/rank (1 = principal) where known.
f_code = Table(
    "f_code",
    metadata,
    Column("rkey", BigInteger, nullable=False),
    Column("line", Integer, nullable=False),
    Column("role", String(8), nullable=False),
    Column("seq", Integer, nullable=True),
    Column("cid", Integer, nullable=False),
)
#: The engine reaches codes from their resource and line (never by code: value sets are matched
#: against the small ``codes`` dictionary instead).
Index("ix_f_code_rkey", f_code.c.rkey, f_code.c.line, f_code.c.role)
#: search by code (``GET /fhir/Encounter?code=…``)
Index("ix_f_code_cid", f_code.c.cid)

#: Multi-valued references resolved at query time: ``field`` is ``diagnosis`` (Encounter →
#: Condition), ``reason`` (Procedure → Condition), ``replaces`` (EOB → the EOB it replaces),
#: ``replacedby`` (EOB → its replacement).
f_ref = Table(
    "f_ref",
    metadata,
    Column("rkey", BigInteger, nullable=False),
    Column("source", String(128), nullable=False),
    Column("field", String(16), nullable=False),
    Column("ttype", String(64), nullable=False),
    Column("tid", Text, nullable=False),
    Column("seq", Integer, nullable=True),
    #: the claim line a diagnosisReference is pointed at by (0: the whole claim)
    Column("line", Integer, nullable=False, default=0),
)
Index("ix_f_ref", f_ref.c.rkey)
Index("ix_f_ref_target", f_ref.c.source, f_ref.c.ttype, f_ref.c.tid)

#: Providers from a roster (CSV converted to FHIR) or FHIR Practitioner, PractitionerRole and
#: Organization: one row per resource version (a PractitionerRole links practitioner and
#: organisation).
f_provider = Table(
    "f_provider",
    metadata,
    Column("rkey", BigInteger, nullable=False),
    Column("source", String(128), nullable=False),
    Column("rtype", String(64), nullable=False),
    Column("rid", String(64), nullable=False),
    Column("npi", String(16), nullable=True),
    Column("taxonomy", String(16), nullable=True),
    Column("name", Text, nullable=True),
    #: PractitionerRole: the practitioner and organisation it links (resource ids, same source)
    Column("practitioner_rid", String(64), nullable=True),
    Column("org_rid", String(64), nullable=True),
    Column("clinic", Text, nullable=True),
    Column("county", Text, nullable=True),
    #: 1 in the CCO's network, 0 not, NULL unknown
    Column("in_network", SmallInteger, nullable=True),
    Column("cco", Text, nullable=True),
)
Index("ix_f_provider_npi", f_provider.c.npi)
Index("ix_f_provider_rkey", f_provider.c.rkey)

#: Members of a Group (Da Vinci ATR member attribution, or a CCO assignment file converted to
#: one): which clinic / PCP a child is assigned to, for which CCO, over which days.
f_group_member = Table(
    "f_group_member",
    metadata,
    Column("rkey", BigInteger, nullable=False),
    Column("source", String(128), nullable=False),
    Column("group_rid", String(64), nullable=False),
    #: Patient id (same source) when the member is a reference, else NULL
    Column("pid", String(64), nullable=True),
    #: Medicaid member id when the member is given by identifier (or known from the file)
    Column("member_id", Text, nullable=True),
    Column("cco", Text, nullable=True),
    Column("clinic", Text, nullable=True),
    Column("clinic_org_rid", String(64), nullable=True),
    Column("pcp_npi", String(16), nullable=True),
    Column("pcp_rid", String(64), nullable=True),
    Column("start_day", Integer, nullable=True),
    Column("end_day", Integer, nullable=True),
)
Index("ix_f_group_member_pid", f_group_member.c.source, f_group_member.c.pid)
Index("ix_f_group_member_mid", f_group_member.c.member_id)
Index("ix_f_group_member_rkey", f_group_member.c.rkey)
Index("ix_f_group_member_pid_only", f_group_member.c.pid)

#: Stored MeasureReports, searchable by ``measure``, ``period``, ``reporter``, ``subject``,
#: ``status`` (DESIGN.md §2 reads).
f_report = Table(
    "f_report",
    metadata,
    Column("rkey", _RKEY, primary_key=True),
    Column("source", String(128), nullable=False),
    Column("rid", String(64), nullable=False),
    Column("measure", Text, nullable=True),
    Column("type", String(32), nullable=True),
    Column("status", String(32), nullable=True),
    Column("period_start", Integer, nullable=True),
    Column("period_end", Integer, nullable=True),
    Column("reporter", Text, nullable=True),
    Column("subject", Text, nullable=True),
)
Index("ix_f_report_measure", f_report.c.measure)
Index("ix_f_report_subject", f_report.c.subject)

#: Per source: what kind of feed it is, the claims paid-through date (claims data after it may
#: still arrive: "data lag") and when it last delivered data.
source_status = Table(
    "source_status",
    metadata,
    Column("source", String(128), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("paid_through_day", Integer, nullable=True),
    Column("last_loaded_at", BigInteger, nullable=True),
    Column("last_data_day", Integer, nullable=True),
    Column("note", Text, nullable=True),
)

#: Asynchronous jobs (``Prefer: respond-async`` evaluations, large ingests, exports), persisted
#: so a restarted server still answers for them.
jobs = Table(
    "jobs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("kind", String(32), nullable=False),
    #: queued, running, completed, failed, cancelled
    Column("status", String(16), nullable=False),
    #: the request as JSON (operation, parameters, base URL), so a failed job can be re-run
    Column("request", Text, nullable=False),
    Column("owner", String(128), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("progress", Text, nullable=True),
    Column("result_type", String(64), nullable=True),
    Column("result", LargeBinary, nullable=True),
    Column("error", Text, nullable=True),
    #: worker that runs it (host:pid); a running job whose worker is gone is failed on start-up
    Column("worker", String(128), nullable=True),
)
Index("ix_jobs_status", jobs.c.status)

#: Observations the measure's reports read (OPIP health-complexity flags, screenings): one
#: row per coding of ``Observation.code`` with the value as text.
f_observation = Table(
    "f_observation",
    metadata,
    Column("rkey", BigInteger, nullable=False),
    Column("source", String(128), nullable=False),
    Column("pid", String(64), nullable=True),
    Column("status", Text, nullable=True),
    Column("system", Text, nullable=True),
    Column("code", Text, nullable=True),
    Column("value", Text, nullable=True),
    Column("day", Integer, nullable=True),
)
Index("ix_f_observation_pid", f_observation.c.source, f_observation.c.pid)
Index("ix_f_observation_rkey", f_observation.c.rkey)

#: Persisted evaluations (``--persist`` / the service): one row per run, its per-child results
#: in ``eval_results``; trends and the dashboard read these, BI tools read them through views.
eval_runs = Table(
    "eval_runs",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("measure", String(128), nullable=False),
    Column("measure_version", String(32), nullable=False),
    Column("period_start", Integer, nullable=False),
    Column("period_end", Integer, nullable=False),
    Column("sources", String(16), nullable=False),
    Column("as_of", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("mappings_hash", String(64), nullable=False),
    Column("engine_version", String(32), nullable=False),
)
Index("ix_eval_runs_measure", eval_runs.c.measure, eval_runs.c.period_end)

eval_results = Table(
    "eval_results",
    metadata,
    Column("run_id", String(64), nullable=False),
    Column("person", Text, nullable=False),
    Column("member_id", Text, nullable=True),
    Column("patient", Text, nullable=True),
    Column("patient_source", String(128), nullable=True),
    Column("cco", Text, nullable=True),
    Column("age", Integer, nullable=True),
    Column("sex", Text, nullable=True),
    Column("race_ethnicity", Text, nullable=True),
    Column("language", Text, nullable=True),
    Column("disability", Text, nullable=True),
    Column("county", Text, nullable=True),
    Column("group_id", String(64), nullable=False),
    Column("ip", SmallInteger, nullable=False),
    Column("den", SmallInteger, nullable=False),
    Column("denex", SmallInteger, nullable=False),
    Column("num", SmallInteger, nullable=False),
    Column("reason", String(64), nullable=True),
)
Index("ix_eval_results_run", eval_results.c.run_id, eval_results.c.group_id)

#: SMART Backend Services clients (SMART App Launch 2.2 §"Backend Services": registration):
#: role ``ehr`` (writes under ``source``; reads what it submitted), ``cco`` (reads its
#: attributed children, ``ccos``), ``oha`` (reads all), ``admin``. ``scopes`` are the scopes the
#: client may be granted (space-separated, SMART v1 or v2 syntax); keys by ``jwks`` (a JWK Set
#: as JSON) or ``jwks_url``.
auth_clients = Table(
    "auth_clients",
    metadata,
    Column("client_id", String(128), primary_key=True),
    Column("name", Text, nullable=True),
    Column("role", String(16), nullable=False),
    Column("source", String(128), nullable=True),
    Column("ccos", Text, nullable=True),
    Column("scopes", Text, nullable=False),
    Column("jwks", Text, nullable=True),
    Column("jwks_url", Text, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger, nullable=True),
)

#: Client-assertion ``jti`` values seen, kept until their ``exp`` so a replay is refused.
auth_jti = Table(
    "auth_jti",
    metadata,
    Column("client_id", String(128), primary_key=True),
    Column("jti", String(256), primary_key=True),
    Column("expires_at", BigInteger, nullable=False),
)
Index("ix_auth_jti_exp", auth_jti.c.expires_at)

#: Audit trail (served as FHIR AuditEvent): every read of PHI and every write. No PHI in
#: ``detail``: resource ids and query parameter names only.
audit_events = Table(
    "audit_events",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("at", BigInteger, nullable=False),
    Column("client_id", String(128), nullable=False),
    Column("role", String(16), nullable=True),
    #: R4 AuditEvent.action: C create, R read/vread, U update, D delete, E execute (operations and
    #: searches: R4 counts a query as E)
    Column("action", String(1), nullable=False),
    Column("interaction", String(32), nullable=False),
    Column("resource_type", String(64), nullable=True),
    Column("resource_id", String(64), nullable=True),
    Column("path", Text, nullable=True),
    Column("status", Integer, nullable=False),
    #: R4 AuditEvent.outcome: 0 success, 4 minor failure, 8 serious failure, 12 major failure
    Column("outcome", SmallInteger, nullable=False),
    Column("detail", Text, nullable=True),
)
Index("ix_audit_at", audit_events.c.at)
Index("ix_audit_client", audit_events.c.client_id)

#: What ``fhir-adapter pull`` remembers per source and server: the next ``_since`` and, while a
#: Bulk export is under way, its status URL and the files already downloaded (to resume).
pull_state = Table(
    "pull_state",
    metadata,
    Column("source", String(128), primary_key=True),
    Column("base_url", Text, nullable=False),
    Column("mode", String(16), nullable=False),
    #: transactionTime of the last completed export, or the start time of the last search run
    Column("since", Text, nullable=True),
    Column("status_url", Text, nullable=True),
    #: JSON: manifest and the output files already loaded
    Column("progress", Text, nullable=True),
    Column("updated_at", BigInteger, nullable=False),
)

#: Ingest problems kept for the data-quality report.
ingest_issues = Table(
    "ingest_issues",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("source", String(128), nullable=False),
    Column("at", BigInteger, nullable=False),
    Column("location", String(512), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("message", Text, nullable=False),
)

FACT_TABLES = (
    f_patient, f_coverage, f_org_ident, f_event, f_line, f_code, f_ref, f_provider, f_group_member, f_report,
    f_observation,
)  # fmt: skip
