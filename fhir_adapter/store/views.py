"""SQL views for BI tools (CCO data warehouses, DESIGN.md §5 "CCO data warehouses … pull flat
exports into their BI tools"): readable columns over the store's fact tables, documented in
``docs/sql-views.md``.

* ``v_child_results``: persisted evaluations (``eval_runs`` ⨝ ``eval_results``), one row per run,
  child and group.
* ``v_services``: current claims lines and clinical events, one row per line and procedure
  coding (a line without one has a single row with empty codes).
* ``v_service_diagnoses``: the diagnosis codings of the same events (line 0: the claim header
  or the event; line n: a claim line's diagnosis pointers).
* ``v_enrollment_spans``: current Coverage facts with the CCO identifier and ISO dates.
* ``v_patients``: current Patient facts with the person key the engine links records by.

"Current" is the latest version of each resource, not deleted (DESIGN.md §1); history stays in
the base tables. Days are stored as proleptic Gregorian ordinals; the views show them as ISO
text (``YYYY-MM-DD``) computed with integer arithmetic only (H. Hinnant's ``civil_from_days``),
and instants (µs since the epoch) as ``YYYY-MM-DDTHH:MM:SSZ``, so one SQL text runs unchanged on
SQLite and PostgreSQL (tests compare both with Python's calendar).

The views are created by :func:`create_views` when the store is opened, again only when
:data:`VIEWS_VERSION` changes or one is missing.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, inspect, text

from fhir_adapter.measure.engine import person_key
from fhir_adapter.store.extract import NPI_SYSTEM

#: Bump whenever a view's definition changes (the views are then dropped and created again).
VIEWS_VERSION = 1
_META_KEY = "views_version"


def iso_date_sql(ordinal: str) -> str:
    """SQL text of the ISO date (``YYYY-MM-DD``) of a day ordinal expression (1 = 0001-01-01,
    Python's ``date.toordinal``); ``NULL`` stays ``NULL``. Integer arithmetic only (both
    engines divide integers by truncation; every operand here is positive)."""
    a = f"({ordinal} + 305)"
    era = f"({a} / 146097)"
    doe = f"({a} - {era} * 146097)"
    yoe = f"(({doe} - {doe} / 1460 + {doe} / 36524 - {doe} / 146096) / 365)"
    doy = f"({doe} - (365 * {yoe} + {yoe} / 4 - {yoe} / 100))"
    mp = f"((5 * {doy} + 2) / 153)"
    day = f"({doy} - (153 * {mp} + 2) / 5 + 1)"
    year = f"({yoe} + {era} * 400 + CASE WHEN {mp} >= 10 THEN 1 ELSE 0 END)"
    month = (
        f"CASE WHEN {mp} < 7 THEN '0' || CAST({mp} + 3 AS TEXT) WHEN {mp} < 10 THEN CAST({mp} + 3 AS TEXT) "
        f"ELSE '0' || CAST({mp} - 9 AS TEXT) END"
    )
    day_text = f"CASE WHEN {day} < 10 THEN '0' || CAST({day} AS TEXT) ELSE CAST({day} AS TEXT) END"
    return (
        f"CASE WHEN {ordinal} IS NULL THEN NULL ELSE "
        f"({_year_text(year)}) || '-' || ({month}) || '-' || ({day_text}) END"
    )


def _year_text(expr: str) -> str:
    """Four digits (years 1-9999)."""
    return (
        f"CASE WHEN {expr} < 10 THEN '000' WHEN {expr} < 100 THEN '00' WHEN {expr} < 1000 THEN '0' ELSE '' END"
        f" || CAST({expr} AS TEXT)"
    )


def _two(expr: str) -> str:
    return f"CASE WHEN {expr} < 10 THEN '0' || CAST({expr} AS TEXT) ELSE CAST({expr} AS TEXT) END"


def iso_ymd_sql(ymd: str) -> str:
    """SQL text of the ISO date of a ``YYYYMMDD`` integer expression."""
    return (
        f"CASE WHEN {ymd} IS NULL THEN NULL ELSE ({_year_text(f'({ymd} / 10000)')}) || '-' || "
        f"({_two(f'(({ymd} / 100) - ({ymd} / 10000) * 100)')}) || '-' || ({_two(f'({ymd} - ({ymd} / 100) * 100)')}) END"
    )


#: The ordinal of 1970-01-01 (``date(1970, 1, 1).toordinal()``).
_EPOCH_ORDINAL = 719163
_DAY_US = 86_400_000_000


def iso_instant_sql(micros: str) -> str:
    """SQL text of the UTC instant (``YYYY-MM-DDTHH:MM:SSZ``, seconds truncated) of a µs-since-the
    epoch expression at or after 1970-01-01."""
    seconds = f"(({micros} - ({micros} / {_DAY_US}) * {_DAY_US}) / 1000000)"
    hours = f"({seconds} / 3600)"
    minutes = f"(({seconds} - {hours} * 3600) / 60)"
    secs = f"({seconds} - ({seconds} / 60) * 60)"
    return (
        f"CASE WHEN {micros} IS NULL THEN NULL ELSE "
        f"({iso_date_sql(f'({micros} / {_DAY_US} + {_EPOCH_ORDINAL})')}) || 'T' || ({_two(hours)}) || ':' || "
        f"({_two(minutes)}) || ':' || ({_two(secs)}) || 'Z' END"
    )


def _current(alias: str) -> str:
    return f"{alias}.superseded_at IS NULL AND {alias}.deleted = 0"


_PATIENTS = f"""
    SELECT fp.source, fp.pid, fp.member_id, {person_key("fp")} AS person
    FROM f_patient fp JOIN resources rp ON rp.rkey = fp.rkey
    WHERE {_current("rp")}"""


@dataclass(frozen=True)
class View:
    name: str
    sql: str


V_CHILD_RESULTS = View(
    "v_child_results",
    f"""
SELECT r.run_id, r.measure, r.measure_version,
       {iso_date_sql("r.period_start")} AS period_start,
       {iso_date_sql("r.period_end")} AS period_end,
       r.sources, {iso_instant_sql("r.as_of")} AS data_cut, r.as_of AS data_cut_us,
       {iso_instant_sql("r.created_at")} AS created_at, r.mappings_hash, r.engine_version,
       x.group_id, x.person, x.member_id, x.patient, x.patient_source, x.cco, x.age, x.sex,
       x.race_ethnicity, x.language, x.disability, x.county,
       x.ip AS initial_population, x.den AS denominator, x.denex AS denominator_exclusion,
       x.num AS numerator, x.reason
FROM eval_runs r JOIN eval_results x ON x.run_id = r.run_id""",
)

_EVENT_HEAD = """e.source, e.rtype AS resource_type, e.rid AS resource_id, r.version, e.category,
       e.pid AS patient_id, p.member_id, p.person, e.status, e.use, e.outcome"""

V_SERVICES = View(
    "v_services",
    f"""
SELECT {_EVENT_HEAD}, l.line,
       CASE WHEN e.denied = 1 OR l.denied = 1 THEN 1 ELSE 0 END AS denied,
       {iso_date_sql("l.day")} AS service_date, {iso_date_sql("l.day_last")} AS service_date_last,
       COALESCE(l.provider, e.provider) AS provider, e.encounter_rid AS encounter_id, e.claim_rid AS claim_id,
       c.system AS procedure_system, c.code AS procedure_code
FROM f_event e
JOIN resources r ON r.rkey = e.rkey
JOIN f_line l ON l.rkey = e.rkey
LEFT JOIN f_code fc ON fc.rkey = e.rkey AND fc.line = l.line AND fc.role = 'proc'
LEFT JOIN codes c ON c.cid = fc.cid
LEFT JOIN ({_PATIENTS}) p ON p.source = e.source AND p.pid = e.pid
WHERE {_current("r")} AND e.category = 'claims'
UNION ALL
SELECT {_EVENT_HEAD}, 0 AS line, e.denied,
       {iso_date_sql("e.day")} AS service_date, {iso_date_sql("e.day_last")} AS service_date_last,
       e.provider, e.encounter_rid AS encounter_id, e.claim_rid AS claim_id,
       c.system AS procedure_system, c.code AS procedure_code
FROM f_event e
JOIN resources r ON r.rkey = e.rkey
LEFT JOIN f_code fc ON fc.rkey = e.rkey AND fc.line = 0 AND fc.role = 'proc'
LEFT JOIN codes c ON c.cid = fc.cid
LEFT JOIN ({_PATIENTS}) p ON p.source = e.source AND p.pid = e.pid
WHERE {_current("r")} AND e.category <> 'claims'""",
)

V_SERVICE_DIAGNOSES = View(
    "v_service_diagnoses",
    f"""
SELECT {_EVENT_HEAD}, fc.line, fc.seq AS rank,
       {iso_date_sql("e.day")} AS event_date, c.system AS diagnosis_system, c.code AS diagnosis_code
FROM f_event e
JOIN resources r ON r.rkey = e.rkey
JOIN f_code fc ON fc.rkey = e.rkey AND fc.role = 'dx'
JOIN codes c ON c.cid = fc.cid
LEFT JOIN ({_PATIENTS}) p ON p.source = e.source AND p.pid = e.pid
WHERE {_current("r")}""",
)

_ORG_CCO = f"""
    SELECT oi.source, oi.oid, oi.system, MIN(oi.value) AS value
    FROM f_org_ident oi JOIN resources ro ON ro.rkey = oi.rkey
    WHERE {_current("ro")} AND oi.system <> '{NPI_SYSTEM}'
      AND oi.system = (
          SELECT MIN(o2.system) FROM f_org_ident o2 JOIN resources r2 ON r2.rkey = o2.rkey
          WHERE {_current("r2")} AND o2.source = oi.source AND o2.oid = oi.oid AND o2.system <> '{NPI_SYSTEM}')
    GROUP BY oi.source, oi.oid, oi.system"""

V_ENROLLMENT_SPANS = View(
    "v_enrollment_spans",
    f"""
SELECT cv.source, r.rid AS coverage_id, r.version, cv.pid AS patient_id, p.member_id, p.person, cv.status,
       cv.payor_system, cv.payor_value, cv.payor_org,
       CASE WHEN cv.payor_value IS NOT NULL THEN cv.payor_system ELSE o.system END AS cco_system,
       COALESCE(cv.payor_value, o.value) AS cco_value,
       {iso_date_sql("cv.start_day")} AS start_date, {iso_date_sql("cv.end_day")} AS end_date
FROM f_coverage cv
JOIN resources r ON r.rkey = cv.rkey
LEFT JOIN ({_PATIENTS}) p ON p.source = cv.source AND p.pid = cv.pid
LEFT JOIN ({_ORG_CCO}) o ON o.source = cv.source AND o.oid = cv.payor_org
WHERE {_current("r")}""",
)

V_PATIENTS = View(
    "v_patients",
    f"""
SELECT fp.source, fp.pid AS patient_id, r.version, fp.member_id, {person_key("fp")} AS person,
       fp.birth_raw AS birth_date, {iso_ymd_sql("fp.birth_lo_ymd")} AS birth_date_first,
       {iso_ymd_sql("fp.birth_hi_ymd")} AS birth_date_last, fp.gender, fp.birth_sex, fp.deceased,
       {iso_date_sql("fp.deceased_day")} AS deceased_date, fp.race, fp.ethnicity, fp.language, fp.disability,
       fp.county, fp.reald_race_ethnicity, fp.reald_language
FROM f_patient fp JOIN resources r ON r.rkey = fp.rkey
WHERE {_current("r")}""",
)

VIEWS: tuple[View, ...] = (
    V_CHILD_RESULTS,
    V_SERVICES,
    V_SERVICE_DIAGNOSES,
    V_ENROLLMENT_SPANS,
    V_PATIENTS,
)


def create_views(conn: Connection) -> bool:
    """Create the views on ``conn`` (inside the caller's transaction) unless they exist at
    :data:`VIEWS_VERSION`; returns whether anything was (re)created. Needs the tables of
    :mod:`fhir_adapter.store.schema` and ``store_meta``."""
    version = conn.execute(text("SELECT value FROM store_meta WHERE key = :k"), {"k": _META_KEY}).scalar()
    existing = set(inspect(conn).get_view_names())
    if version == str(VIEWS_VERSION) and all(v.name in existing for v in VIEWS):
        return False
    for view in VIEWS:
        conn.execute(text(f"DROP VIEW IF EXISTS {view.name}"))
        conn.execute(text(f"CREATE VIEW {view.name} AS {view.sql}"))
    conn.execute(text("DELETE FROM store_meta WHERE key = :k"), {"k": _META_KEY})
    conn.execute(
        text("INSERT INTO store_meta (key, value) VALUES (:k, :v)"), {"k": _META_KEY, "v": str(VIEWS_VERSION)}
    )
    return True


__all__ = ["VIEWS", "VIEWS_VERSION", "View", "create_views", "iso_date_sql", "iso_instant_sql", "iso_ymd_sql"]
