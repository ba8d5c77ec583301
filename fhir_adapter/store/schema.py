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
SCHEMA_VERSION = 4

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

FACT_TABLES = (f_patient, f_coverage, f_org_ident, f_event, f_line, f_code, f_ref)
