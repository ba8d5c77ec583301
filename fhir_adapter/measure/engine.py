"""The measure engine: rule templates that become set-based SQL over the fact tables.

Pure: this module builds SQL text and parameters from a :class:`MeasureSpec`; ``store/``
executes it. The SQL is one portable dialect (CTEs, window functions, integer arithmetic on day
ordinals and ``YYYYMMDD`` integers), identical on SQLite and PostgreSQL, and every rule is a
parameter of a template chosen by ``measure.toml`` (spec §2 "Population structure", §3 rules):

* ``age``: whole years on the last day of the period from the birth-date *range*, so a
  partial birth date counts only when every day it can mean gives an age in the band
  (Edge rule 3); births after the period end are never age 0.
* ``enrollment``: spans of ``active`` Coverage (or extracts) whose payor is a listed CCO, clipped
  to [period start or birth, period end], merged when overlapping or adjacent (gaps and
  islands); anchor on the last day; gaps counted as uncovered stretches and days
  (HEDIS convention, spec §3 "Enrollment and attribution", Edge rules 1–2).
* ``exclusion``: death on or before the period end (``deceasedBoolean`` without a date counts,
  Edge rule 4).
* ``service``: a procedure in a value set on a counted claim line or clinical event dated in
  the period, with a qualifying diagnosis on the same claim/encounter at the configured
  position (spec §3 "Numerator", Edge rules 5–8).
* ``need``: a qualifying diagnosis on a counted service event dated in the period (Edge rule 9),
  so the numerator is always inside this denominator.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from fhir_adapter.fhir.dates import ymd
from fhir_adapter.measure.spec import Group, MeasureSpec, SourceMode

#: Stamped on every report; bump when results for the same data and mappings can change.
ENGINE_VERSION = "0.1.0"

#: Per-child reason codes (spec §2), in the order rules are applied.
REASONS = (
    "no-birth-date",
    "ambiguous-birth-date",
    "outside-age-band",
    "not-enrolled-on-anchor",
    "enrollment-gap",
    "no-identified-need",
    "deceased",
    "qualifying-service",
    "denied-claim-only",
    "service-without-qualifying-diagnosis",
    "unknown-code-system",
    "no-qualifying-service",
)

REASON_TEXT = {
    "no-birth-date": "No usable birth date; the child is not evaluated (data quality).",
    "ambiguous-birth-date": "A partial birth date leaves the age on the last day ambiguous (spec §3 Edge rule 3).",
    "outside-age-band": "Age on the last day of the period is outside the measure's band.",
    "not-enrolled-on-anchor": "Not enrolled in a CCO on the last day of the period.",
    "enrollment-gap": "Enrollment in the anchor CCO has more than the allowed gaps or gap days.",
    "no-identified-need": "No qualifying diagnosis dated in the period (identified-need group).",
    "deceased": "Died on or before the last day of the period (denominator exclusion).",
    "qualifying-service": "At least one qualifying service in the period.",
    "denied-claim-only": "Qualifying services were found only on denied claims or lines.",
    "service-without-qualifying-diagnosis": "A qualifying procedure without a qualifying diagnosis on the same claim/encounter.",
    "unknown-code-system": "Service codings in code systems the mappings do not know.",
    "no-qualifying-service": "No qualifying service in the period.",
}

VISIBLE = "{r}.ingested_at <= :as_of AND ({r}.superseded_at IS NULL OR {r}.superseded_at > :as_of) AND {r}.deleted = 0"


def visible(alias: str) -> str:
    """The as-of visibility of a resource version (DESIGN.md §1)."""
    return VISIBLE.format(r=alias)


def person_key(alias: str) -> str:
    """The person a Patient record belongs to: its Medicaid member id, else the record itself
    (spec §3 "Identity": unlinked, never guessed)."""
    return (
        f"CASE WHEN {alias}.member_id IS NOT NULL THEN 'm:' || {alias}.member_id "
        f"ELSE 'u:' || {alias}.source || '/' || {alias}.pid END"
    )


@dataclass(frozen=True)
class Statement:
    sql: str
    #: a temp table this statement creates
    creates: str | None = None
    #: a table whose statistics the executor refreshes after this statement
    analyze: str | None = None


@dataclass(frozen=True)
class EvaluationPlan:
    statements: tuple[Statement, ...]
    params: Mapping[str, Any]
    #: value sets whose matches the executor must load into ``t_cm``
    valuesets: tuple[str, ...]
    groups: tuple[Group, ...]


def _tmp(name: str, select: str) -> Statement:
    return Statement(f"CREATE TEMP TABLE {name} AS {select}", creates=name)


def _index(name: str, table: str, columns: str) -> Statement:
    """An index on a temp table, then fresh statistics for it (so the planner uses it)."""
    return Statement(f"CREATE INDEX {name} ON {table} ({columns})", analyze=table)


def plan(
    spec: MeasureSpec,
    period_start: date,
    period_end: date,
    as_of: int,
    sources: SourceMode,
    dialect: str = "sqlite",
) -> EvaluationPlan:
    """SQL statements that leave ``t_result`` (one row per person and group) and ``t_hit``
    (the evidence) behind; see :mod:`fhir_adapter.store.evaluate` for the tables it reads.
    ``dialect`` only chooses the collation of text comparisons."""
    params: dict[str, Any] = {
        "as_of": as_of,
        "p_start": period_start.toordinal(),
        "p_end": period_end.toordinal(),
        "end_ymd": ymd(period_end),
        "age_min": spec.age.min_age,
        "age_max": spec.age.max_age,
        "max_gaps": spec.enrollment.max_gaps,
        "max_gap_days": spec.enrollment.max_gap_days,
    }
    death = spec.exclusion("death")
    death_on = 1 if death is not None and death.enabled else 0
    categories = "('claims')" if sources == "claims" else "('claims', 'clinical')"
    any_cco = spec.enrollment.scope == "any-cco"
    # Text comparisons (MIN/MAX and ORDER BY tie-breaks) must order bytes the same way on both
    # engines: SQLite's BINARY collation, and "C" on PostgreSQL whatever the database's locale.
    c = ' COLLATE "C"' if dialect == "postgresql" else ""
    s: list[Statement] = []

    # -- people --------------------------------------------------------------------------
    s.append(
        _tmp(
            "t_pat",
            f"""
        SELECT p.rkey, p.source, p.pid, r.version, p.member_id, p.birth_lo_day, p.birth_lo_ymd, p.birth_hi_ymd,
               p.gender, p.birth_sex, p.deceased, p.deceased_day, p.race, p.ethnicity, p.language,
               p.disability, p.county, p.reald_race_ethnicity, p.reald_language,
               {person_key("p")} AS person
        FROM f_patient p JOIN resources r ON r.rkey = p.rkey
        WHERE {visible("r")}""",
        )
    )
    s.append(_index("ix_t_pat", "t_pat", "source, pid"))
    s.append(
        _tmp(
            "t_person0",
            f"""
        SELECT person, COUNT(*) AS records, COUNT(birth_lo_ymd) AS births,
               MAX(birth_lo_ymd) AS b_lo, MIN(birth_hi_ymd) AS b_hi, MAX(birth_lo_day) AS b_lo_day,
               MIN(birth_lo_ymd) AS b_lo_any, MAX(birth_hi_ymd) AS b_hi_any, MIN(birth_lo_day) AS b_lo_day_any,
               MAX(deceased) AS deceased, MIN(deceased_day) AS deceased_day,
               MAX(CASE WHEN deceased = 1 AND deceased_day IS NULL THEN 1 ELSE 0 END) AS deceased_undated,
               MAX(birth_sex{c}) AS birth_sex, MAX(gender{c}) AS gender, MAX(race{c}) AS race, MAX(ethnicity{c}) AS ethnicity,
               MAX(language{c}) AS language, MAX(disability{c}) AS disability, MAX(county{c}) AS county,
               MAX(reald_race_ethnicity{c}) AS reald_race_ethnicity, MAX(reald_language{c}) AS reald_language,
               MIN((source || '|' || pid){c}) AS subject, MAX(member_id{c}) AS member_id
        FROM t_pat GROUP BY person""",
        )
    )
    # Records that disagree on the birth date keep the widest range (then ambiguous).
    s.append(
        _tmp(
            "t_person",
            """
        SELECT p.*,
               CASE WHEN b_lo <= b_hi THEN b_lo ELSE b_lo_any END AS birth_lo,
               CASE WHEN b_lo <= b_hi THEN b_hi ELSE b_hi_any END AS birth_hi,
               CASE WHEN b_lo <= b_hi THEN b_lo_day ELSE b_lo_day_any END AS birth_day,
               CASE WHEN b_lo > b_hi THEN 1 ELSE 0 END AS birth_conflict
        FROM t_person0 p""",
        )
    )
    s.append(_index("ix_t_person", "t_person", "person"))
    s.append(
        _tmp(
            "t_age",
            """
        SELECT person, births, birth_lo, birth_hi,
               CASE WHEN births = 0 THEN NULL WHEN birth_lo > :end_ymd THEN -1
                    ELSE (:end_ymd - birth_lo) / 10000 END AS age_old,
               CASE WHEN births = 0 THEN NULL WHEN birth_hi > :end_ymd THEN -1
                    ELSE (:end_ymd - birth_hi) / 10000 END AS age_young,
               CASE WHEN birth_day IS NOT NULL AND birth_day > :p_start THEN birth_day ELSE :p_start END AS win_start
        FROM t_person""",
        )
    )
    s.append(_index("ix_t_age", "t_age", "person"))

    # -- enrollment --------------------------------------------------------------------------
    s.append(
        _tmp(
            "t_span",
            f"""
        SELECT pm.person, COALESCE(ci.cco, co.cco) AS cco, c.start_day, c.end_day, c.rkey, c.source
        FROM f_coverage c
        JOIN resources r ON r.rkey = c.rkey
        JOIN t_pat pm ON pm.source = c.source AND pm.pid = c.pid
        LEFT JOIN t_cco ci ON ci.system = c.payor_system AND ci.value = c.payor_value
        LEFT JOIN (
            SELECT o.source, o.oid, MIN(t.cco{c}) AS cco
            FROM f_org_ident o JOIN resources r2 ON r2.rkey = o.rkey
            JOIN t_cco t ON t.system = o.system AND t.value = o.value
            WHERE {visible("r2")}
            GROUP BY o.source, o.oid
        ) co ON co.source = c.source AND co.oid = c.payor_org
        WHERE {visible("r")} AND c.status = 'active' AND (ci.cco IS NOT NULL OR co.cco IS NOT NULL)""",
        )
    )
    scoped = "SELECT person, cco, start_day, end_day FROM t_span"
    if any_cco:
        scoped += " UNION ALL SELECT person, '*', start_day, end_day FROM t_span"
    # ``s0`` keeps the span's real start (before clipping) to tell which anchor span started
    # later (Edge rule 1); an open start counts as the earliest.
    s.append(
        _tmp(
            "t_clip",
            f"""
        SELECT sp.person, sp.cco, COALESCE(sp.start_day, 0) AS s0,
               CASE WHEN sp.start_day IS NULL OR sp.start_day < a.win_start THEN a.win_start ELSE sp.start_day END AS a,
               CASE WHEN sp.end_day IS NULL OR sp.end_day > :p_end THEN :p_end ELSE sp.end_day END AS b
        FROM ({scoped}) sp JOIN t_age a ON a.person = sp.person
        WHERE (sp.start_day IS NULL OR sp.start_day <= :p_end) AND (sp.end_day IS NULL OR sp.end_day >= a.win_start)""",
        )
    )
    s.append(
        _tmp(
            "t_island",
            """
        SELECT person, cco, MIN(a) AS a, MAX(b) AS b, MAX(CASE WHEN b = :p_end THEN s0 ELSE NULL END) AS s0 FROM (
            SELECT person, cco, a, b, s0,
                   SUM(new_island) OVER (PARTITION BY person, cco ORDER BY a, b ROWS UNBOUNDED PRECEDING) AS island
            FROM (
                SELECT person, cco, a, b, s0,
                       CASE WHEN prev_b IS NULL OR a > prev_b + 1 THEN 1 ELSE 0 END AS new_island
                FROM (
                    SELECT person, cco, a, b, s0,
                           MAX(b) OVER (PARTITION BY person, cco ORDER BY a, b
                                        ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev_b
                    FROM t_clip
                ) o
            ) f
        ) g GROUP BY person, cco, island""",
        )
    )
    s.append(
        _tmp(
            "t_enr",
            """
        SELECT i.person, i.cco, COUNT(*) AS islands, SUM(i.b - i.a + 1) AS covered, MIN(i.a) AS first_a,
               MAX(CASE WHEN i.b = :p_end THEN 1 ELSE 0 END) AS on_anchor,
               MAX(CASE WHEN i.b = :p_end THEN i.s0 ELSE NULL END) AS anchor_start,
               MIN(a.win_start) AS win_start
        FROM t_island i JOIN t_age a ON a.person = i.person
        GROUP BY i.person, i.cco""",
        )
    )
    s.append(
        _tmp(
            "t_enr2",
            """
        SELECT e.*, (:p_end - e.win_start + 1) - e.covered AS gap_days,
               e.islands - 1 + CASE WHEN e.first_a > e.win_start THEN 1 ELSE 0 END AS gaps,
               CASE WHEN e.on_anchor = 1
                     AND e.islands - 1 + CASE WHEN e.first_a > e.win_start THEN 1 ELSE 0 END <= :max_gaps
                     AND (:p_end - e.win_start + 1) - e.covered <= :max_gap_days THEN 1 ELSE 0 END AS continuous
        FROM t_enr e""",
        )
    )
    if any_cco:
        attributed = f"""
        SELECT x.person, x.cco, x.anchor_ccos, COALESCE(st.continuous, 0) AS continuous,
               COALESCE(st.gaps, 0) AS gaps, COALESCE(st.gap_days, 0) AS gap_days FROM (
            SELECT person, cco, anchor_start,
                   ROW_NUMBER() OVER (PARTITION BY person ORDER BY continuous DESC, anchor_start DESC, cco{c}) AS rn,
                   COUNT(*) OVER (PARTITION BY person) AS anchor_ccos
            FROM t_enr2 WHERE on_anchor = 1 AND cco <> '*'
        ) x LEFT JOIN t_enr2 st ON st.person = x.person AND st.cco = '*'
        WHERE x.rn = 1"""
    else:
        attributed = f"""
        SELECT person, cco, anchor_ccos, continuous, gaps, gap_days FROM (
            SELECT person, cco, continuous, gaps, gap_days,
                   ROW_NUMBER() OVER (PARTITION BY person ORDER BY continuous DESC, anchor_start DESC, cco{c}) AS rn,
                   COUNT(*) OVER (PARTITION BY person) AS anchor_ccos
            FROM t_enr2 WHERE on_anchor = 1
        ) x WHERE rn = 1"""
    s.append(_tmp("t_attr", attributed))
    s.append(_index("ix_t_attr", "t_attr", "person"))

    # -- initial population, exclusion ----------------------------------------------------------
    s.append(
        _tmp(
            "t_base",
            f"""
        SELECT p.person, p.subject, a.age_old, a.age_young, t.cco, t.gaps, t.gap_days,
               COALESCE(t.anchor_ccos, 0) AS anchor_ccos, p.birth_conflict,
               CASE WHEN a.births = 0 THEN 'no-birth-date'
                    WHEN a.age_old < :age_min OR a.age_young > :age_max THEN 'outside-age-band'
                    WHEN a.age_young < :age_min OR a.age_old > :age_max THEN 'ambiguous-birth-date'
                    WHEN t.person IS NULL THEN 'not-enrolled-on-anchor'
                    WHEN t.continuous = 0 THEN 'enrollment-gap'
                    ELSE NULL END AS ip_reason,
               CASE WHEN {death_on} = 1 AND p.deceased = 1
                         AND (p.deceased_undated = 1 OR p.deceased_day <= :p_end) THEN 1 ELSE 0 END AS denex
        FROM t_person p JOIN t_age a ON a.person = p.person LEFT JOIN t_attr t ON t.person = p.person""",
        )
    )
    s.append(_index("ix_t_base", "t_base", "person"))

    # -- events --------------------------------------------------------------------------------
    s.append(
        _tmp(
            "t_ev",
            f"""
        SELECT e.rkey, e.source, e.rtype, e.rid, r.version, e.status, e.use, e.outcome, e.denied, e.day, e.day_last,
               e.encounter_rid, e.claim_rid, e.verification, e.category, pm.person
        FROM f_event e JOIN resources r ON r.rkey = e.rkey
        JOIN t_pat pm ON pm.source = e.source AND pm.pid = e.pid
        JOIN t_base b ON b.person = pm.person AND b.ip_reason IS NULL
        WHERE {visible("r")} AND e.category IN {categories}
          AND e.rtype IN ('ExplanationOfBenefit', 'Claim', 'Encounter', 'Procedure')""",
        )
    )
    s.append(_index("ix_t_ev_rkey", "t_ev", "rkey"))
    s.append(_index("ix_t_ev_rid", "t_ev", "source, rtype, rid"))
    # EOBs replaced through explicit links only (Edge rule 6); equality joins only (one branch
    # per link form), so both engines use the indexes. A ``cancelled`` EOB naming a prior claim is
    # a void (claim frequency 8): the prior stops counting too; an ``entered-in-error`` one links
    # nothing.
    s.append(_index("ix_t_ev_claim", "t_ev", "source, claim_rid"))
    # CROSS JOIN fixes SQLite's join order (f_ref first, then lookups by key); PostgreSQL plans
    # it like an inner join.
    replacing = """
        SELECT e.rkey FROM f_ref f CROSS JOIN t_ev x CROSS JOIN t_ev e
        WHERE f.field = 'replaces' AND f.ttype = '{ttype}' AND x.rkey = f.rkey AND x.rtype = 'ExplanationOfBenefit'
          AND e.source = x.source AND e.{column} = f.tid AND e.rtype = 'ExplanationOfBenefit' AND e.rkey <> x.rkey
          AND e.person = x.person AND (x.status IS NULL OR x.status <> 'entered-in-error')"""
    s.append(
        _tmp(
            "t_replaced",
            f"""
        SELECT e.rkey FROM t_ev e JOIN f_ref f ON f.rkey = e.rkey
        WHERE e.rtype = 'ExplanationOfBenefit' AND f.field = 'replacedby'
        UNION {replacing.format(ttype="ExplanationOfBenefit", column="rid")}
        UNION {replacing.format(ttype="Claim", column="claim_rid")}
        UNION
        SELECT e.rkey FROM f_ref f CROSS JOIN t_ev x CROSS JOIN f_ref i CROSS JOIN t_ev e
        WHERE f.field = 'replaces' AND f.ttype = 'identifier' AND x.rkey = f.rkey AND x.rtype = 'ExplanationOfBenefit'
          AND i.source = x.source AND i.ttype = 'identifier' AND i.tid = f.tid AND i.field = 'ident'
          AND e.rkey = i.rkey AND e.rtype = 'ExplanationOfBenefit' AND e.rkey <> x.rkey
          AND e.person = x.person AND (x.status IS NULL OR x.status <> 'entered-in-error')""",
        )
    )
    s.append(_index("ix_t_replaced", "t_replaced", "rkey"))
    # Service events that count (before denial), spec §3 "Numerator" sources.
    s.append(
        _tmp(
            "t_svc0",
            """
        SELECT e.* FROM t_ev e
        WHERE (e.rtype = 'ExplanationOfBenefit' AND e.use = 'claim'
               AND (e.status IS NULL OR e.status NOT IN ('cancelled', 'entered-in-error'))
               AND e.outcome IN ('complete', 'partial')
               AND NOT EXISTS (SELECT 1 FROM t_replaced x WHERE x.rkey = e.rkey))
           OR (e.rtype = 'Claim' AND e.use = 'claim'
               AND (e.status IS NULL OR e.status NOT IN ('cancelled', 'draft', 'entered-in-error'))
               AND NOT EXISTS (SELECT 1 FROM t_ev x WHERE x.source = e.source
                               AND x.rtype = 'ExplanationOfBenefit' AND x.claim_rid = e.rid
                               AND (x.status IS NULL OR x.status NOT IN ('cancelled', 'entered-in-error'))))
           OR (e.rtype = 'Encounter' AND e.status = 'finished')
           OR (e.rtype = 'Procedure' AND e.status = 'completed')""",
        )
    )
    s.append(_index("ix_t_svc0", "t_svc0", "rkey"))
    # Lines in the period: claims by line from-date, clinical events by their date (line 0).
    s.append(
        _tmp(
            "t_line",
            """
        SELECT s.rkey, l.line, l.day, CASE WHEN s.denied = 1 OR l.denied = 1 THEN 1 ELSE 0 END AS denied
        FROM t_svc0 s JOIN f_line l ON l.rkey = s.rkey
        WHERE s.category = 'claims' AND l.day >= :p_start AND l.day_last <= :p_end
        UNION ALL
        SELECT s.rkey, 0, s.day, 0 FROM t_svc0 s
        WHERE s.category = 'clinical' AND s.day >= :p_start AND s.day_last <= :p_end""",
        )
    )
    s.append(_index("ix_t_line", "t_line", "rkey, line"))
    # Diagnoses available to each service event: its own codes, linked Conditions, and for a
    # Procedure its Encounter's (Edge rule 8).
    s.append(
        _tmp(
            "t_cond",
            f"""
        SELECT e.rkey, e.source, e.rid, e.encounter_rid, e.day, e.day_last FROM f_event e
        JOIN resources r ON r.rkey = e.rkey
        WHERE e.rtype = 'Condition' AND {visible("r")}
          AND (e.verification IS NULL OR e.verification NOT IN ('refuted', 'entered-in-error'))""",
        )
    )
    s.append(_index("ix_t_cond_rid", "t_cond", "source, rid"))
    s.append(_index("ix_t_cond_enc", "t_cond", "source, encounter_rid"))
    s.append(
        _tmp(
            "t_enc_ok",
            f"""
        SELECT e.rkey, e.source, e.rid FROM f_event e JOIN resources r ON r.rkey = e.rkey
        WHERE e.rtype = 'Encounter' AND {visible("r")}
          AND (e.status IS NULL OR e.status NOT IN ('cancelled', 'entered-in-error'))""",
        )
    )
    s.append(_index("ix_t_enc_ok", "t_enc_ok", "source, rid"))
    s.append(
        _tmp(
            "t_link",
            """
        SELECT s.rkey AS svc, c.rkey AS dx_rkey, 0 AS line,
               CASE WHEN COUNT(*) OVER (PARTITION BY s.rkey) = 1 THEN 1 ELSE 2 END AS seq
        FROM t_svc0 s JOIN t_cond c ON c.source = s.source AND c.encounter_rid = s.rid WHERE s.rtype = 'Encounter'
        UNION ALL
        SELECT s.rkey, c.rkey, f.line, f.seq FROM t_svc0 s
        JOIN f_ref f ON f.rkey = s.rkey AND f.field IN ('diagnosis', 'reason')
        JOIN t_cond c ON c.source = s.source AND c.rid = f.tid
        UNION ALL
        SELECT s.rkey, en.rkey, 0, NULL FROM t_svc0 s JOIN t_enc_ok en ON en.source = s.source AND en.rid = s.encounter_rid
        WHERE s.rtype = 'Procedure'
        UNION ALL
        SELECT s.rkey, c.rkey, 0, 2 FROM t_svc0 s JOIN t_enc_ok en ON en.source = s.source AND en.rid = s.encounter_rid
        JOIN t_cond c ON c.source = en.source AND c.encounter_rid = en.rid WHERE s.rtype = 'Procedure'
        UNION ALL
        SELECT s.rkey, c.rkey, 0, f.seq FROM t_svc0 s JOIN t_enc_ok en ON en.source = s.source AND en.rid = s.encounter_rid
        JOIN f_ref f ON f.rkey = en.rkey AND f.field = 'diagnosis' AND f.line = 0
        JOIN t_cond c ON c.source = en.source AND c.rid = f.tid WHERE s.rtype = 'Procedure'""",
        )
    )
    s.append(
        _tmp(
            "t_dx",
            """
        SELECT s.rkey AS svc, fc.line, fc.seq, fc.cid FROM t_svc0 s
        JOIN f_code fc ON fc.rkey = s.rkey AND fc.role = 'dx'
        WHERE EXISTS (SELECT 1 FROM t_cm m WHERE m.cid = fc.cid)
        UNION ALL
        SELECT l.svc, l.line, COALESCE(l.seq, fc.seq), fc.cid FROM t_link l
        JOIN f_code fc ON fc.rkey = l.dx_rkey AND fc.role = 'dx' AND fc.line = 0
        WHERE EXISTS (SELECT 1 FROM t_cm m WHERE m.cid = fc.cid)""",
        )
    )
    s.append(_index("ix_t_dx", "t_dx", "svc, line"))
    s.append(
        _tmp(
            "t_proc",
            """
        SELECT l.rkey, l.line, l.day, l.denied, m.vs FROM t_line l
        JOIN f_code pc ON pc.rkey = l.rkey AND pc.line = l.line AND pc.role = 'proc'
        JOIN t_cm m ON m.cid = pc.cid
          AND (m.vfrom IS NULL OR l.day >= m.vfrom) AND (m.vto IS NULL OR l.day <= m.vto)""",
        )
    )
    s.append(_index("ix_t_proc", "t_proc", "vs, rkey, line"))

    # -- per group ------------------------------------------------------------------------------
    s.append(
        Statement("CREATE TEMP TABLE t_hit (person TEXT, grp TEXT, kind TEXT, rkey BIGINT)", creates="t_hit")
    )
    for index, group in enumerate(spec.groups):
        g = f"g{index}"
        params[f"{g}_id"] = group.id
        params[f"{g}_proc"] = group.numerator.procedures
        crit = group.numerator
        dx_clause = ""
        if crit.diagnoses is not None:
            params[f"{g}_dx"] = crit.diagnoses
            line_match = "d.line = p.line" if crit.diagnosis_position == "line" else "d.line = 0"
            primary = " AND d.seq = 1" if crit.diagnosis_position == "primary" else ""
            dx_clause = f"""EXISTS (SELECT 1 FROM t_dx d JOIN t_cm m ON m.cid = d.cid AND m.vs = :{g}_dx
                              AND (m.vfrom IS NULL OR p.day >= m.vfrom) AND (m.vto IS NULL OR p.day <= m.vto)
                            WHERE d.svc = p.rkey AND {line_match}{primary})"""
        with_dx = f"AND {dx_clause}" if dx_clause else ""
        without_dx = f"AND NOT {dx_clause}" if dx_clause else "AND 1 = 0"
        for kind, cond in (
            ("num", f"p.denied = 0 {with_dx}"),
            ("denied", f"p.denied = 1 {with_dx}"),
            ("nodx", f"p.denied = 0 {without_dx}"),
        ):
            s.append(
                Statement(f"""
                INSERT INTO t_hit (person, grp, kind, rkey)
                SELECT DISTINCT e.person, :{g}_id, '{kind}', p.rkey FROM t_proc p JOIN t_svc0 e ON e.rkey = p.rkey
                WHERE p.vs = :{g}_proc AND {cond}""")
            )
        if crit.diagnoses is not None:
            # Evidence: the linked Condition (or Encounter) that supplied a qualifying diagnosis.
            s.append(
                Statement(f"""
                INSERT INTO t_hit (person, grp, kind, rkey)
                SELECT DISTINCT h.person, h.grp, 'numdx', l.dx_rkey FROM t_hit h
                JOIN t_link l ON l.svc = h.rkey
                JOIN f_code fc ON fc.rkey = l.dx_rkey AND fc.role = 'dx' AND fc.line = 0
                JOIN t_cm m ON m.cid = fc.cid AND m.vs = :{g}_dx
                WHERE h.kind = 'num' AND h.grp = :{g}_id""")
            )
        if group.need_diagnoses is not None:
            params[f"{g}_need"] = group.need_diagnoses
            s.append(
                Statement(f"""
                INSERT INTO t_hit (person, grp, kind, rkey)
                SELECT DISTINCT e.person, :{g}_id, 'need', e.rkey FROM t_dx d
                JOIN t_line l ON l.rkey = d.svc AND l.denied = 0
                JOIN t_cm m ON m.cid = d.cid AND m.vs = :{g}_need
                  AND (m.vfrom IS NULL OR l.day >= m.vfrom) AND (m.vto IS NULL OR l.day <= m.vto)
                JOIN t_svc0 e ON e.rkey = d.svc
                WHERE d.line = 0""")
            )
            # An undated finished Encounter: its linked Condition is dated by recordedDate/onset
            # (Edge rule 9).
            s.append(
                Statement(f"""
                INSERT INTO t_hit (person, grp, kind, rkey)
                SELECT DISTINCT e.person, :{g}_id, 'need', c.rkey FROM t_svc0 e
                JOIN t_cond c ON c.source = e.source AND c.encounter_rid = e.rid
                JOIN f_code fc ON fc.rkey = c.rkey AND fc.role = 'dx' AND fc.line = 0
                JOIN t_cm m ON m.cid = fc.cid AND m.vs = :{g}_need
                  AND (m.vfrom IS NULL OR c.day >= m.vfrom) AND (m.vto IS NULL OR c.day <= m.vto)
                WHERE e.rtype = 'Encounter' AND e.day IS NULL AND c.day >= :p_start AND c.day_last <= :p_end""")
            )
    # Partial dates that straddle the period boundary: not counted, reported (spec §3).
    s.append(
        Statement("""
        INSERT INTO t_hit (person, grp, kind, rkey)
        SELECT DISTINCT e.person, '*', 'ambiguous-date', e.rkey FROM t_svc0 e
        WHERE e.category = 'clinical' AND e.day <= :p_end AND e.day_last >= :p_start
          AND (e.day < :p_start OR e.day_last > :p_end)
        UNION
        SELECT DISTINCT e.person, '*', 'ambiguous-date', e.rkey FROM t_svc0 e JOIN f_line l ON l.rkey = e.rkey
        WHERE e.category = 'claims' AND l.day <= :p_end AND l.day_last >= :p_start
          AND (l.day < :p_start OR l.day_last > :p_end)""")
    )
    # Claim lines without a from-date are not services (Edge rule 7): reported.
    s.append(
        Statement("""
        INSERT INTO t_hit (person, grp, kind, rkey)
        SELECT DISTINCT e.person, '*', 'undated-line', e.rkey FROM t_svc0 e JOIN f_line l ON l.rkey = e.rkey
        WHERE e.category = 'claims' AND l.day IS NULL""")
    )
    # Unknown code systems among service codings in the period.
    s.append(
        Statement("""
        INSERT INTO t_hit (person, grp, kind, rkey)
        SELECT DISTINCT e.person, '*', 'unknown', l.rkey FROM t_line l JOIN t_svc0 e ON e.rkey = l.rkey
        JOIN f_code fc ON fc.rkey = l.rkey AND fc.line = l.line AND fc.role = 'proc'
        JOIN t_unknown u ON u.cid = fc.cid""")
    )
    s.append(_index("ix_t_hit", "t_hit", "person, grp, kind"))

    # -- results ---------------------------------------------------------------------------------
    unions = []
    for index, group in enumerate(spec.groups):
        g = f"g{index}"
        need = (
            f"EXISTS (SELECT 1 FROM t_hit h WHERE h.person = b.person AND h.grp = :{g}_id AND h.kind = 'need')"
            if group.need_diagnoses is not None
            else "1 = 1"
        )

        def has(kind: str, g: str = g) -> str:
            return f"EXISTS (SELECT 1 FROM t_hit h WHERE h.person = b.person AND h.grp = :{g}_id AND h.kind = '{kind}')"

        unknown = (
            "EXISTS (SELECT 1 FROM t_hit h WHERE h.person = b.person AND h.grp = '*' AND h.kind = 'unknown')"
        )
        unions.append(f"""
        SELECT b.person, :{g}_id AS grp, {index} AS grp_index,
               CASE WHEN b.ip_reason IS NULL THEN 1 ELSE 0 END AS ip,
               CASE WHEN b.ip_reason IS NULL AND {need} THEN 1 ELSE 0 END AS den,
               CASE WHEN b.ip_reason IS NULL AND {need} AND b.denex = 1 THEN 1 ELSE 0 END AS denex,
               CASE WHEN b.ip_reason IS NULL AND {need} AND b.denex = 0 AND {has("num")} THEN 1 ELSE 0 END AS num,
               CASE WHEN b.ip_reason IS NOT NULL THEN b.ip_reason
                    WHEN NOT ({need}) THEN 'no-identified-need'
                    WHEN b.denex = 1 THEN 'deceased'
                    WHEN {has("num")} THEN 'qualifying-service'
                    WHEN {has("denied")} THEN 'denied-claim-only'
                    WHEN {has("nodx")} THEN 'service-without-qualifying-diagnosis'
                    WHEN {unknown} THEN 'unknown-code-system'
                    ELSE 'no-qualifying-service' END AS reason
        FROM t_base b""")
    s.append(_tmp("t_result", " UNION ALL ".join(unions)))
    valuesets = sorted(
        {g.numerator.procedures for g in spec.groups}
        | {g.numerator.diagnoses for g in spec.groups if g.numerator.diagnoses}
        | {g.need_diagnoses for g in spec.groups if g.need_diagnoses}
    )
    return EvaluationPlan(tuple(s), params, tuple(valuesets), spec.groups)


#: Tables the executor drops before a new evaluation on the same connection.
TEMP_TABLES = (
    "t_pat", "t_person0", "t_person", "t_age", "t_span", "t_clip", "t_island", "t_enr", "t_enr2", "t_attr",
    "t_base", "t_ev", "t_replaced", "t_svc0", "t_line", "t_cond", "t_enc_ok", "t_link", "t_dx", "t_proc",
    "t_hit", "t_result", "t_cm", "t_cco", "t_unknown",
)  # fmt: skip
