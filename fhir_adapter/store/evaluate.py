"""Run an evaluation plan (from :mod:`fhir_adapter.measure.engine`) on one connection.

The executor loads the three small lookup tables the plan reads (``t_cco`` CCO identifiers,
``t_cm`` code → value-set matches for every distinct code in the store, ``t_unknown`` codes in
unknown systems), executes the statements, and reads back one row per person and group plus,
when asked, the evidence behind each population decision.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import Connection, text

from fhir_adapter.measure.engine import TEMP_TABLES, EvaluationPlan, plan
from fhir_adapter.measure.spec import Mappings, MeasureSpec, SourceMode
from fhir_adapter.store.db import Store
from fhir_adapter.terminology.codes import Terminology


@dataclass(frozen=True)
class GroupResult:
    group: str
    ip: bool
    den: bool
    denex: bool
    num: bool
    reason: str

    def member_of(self, population: str) -> bool:
        """Whether the child is in the population with this measure-population code."""
        return {
            "initial-population": self.ip,
            "denominator": self.den,
            "denominator-exclusion": self.denex,
            "numerator": self.num,
        }[population]


@dataclass(frozen=True)
class ChildResult:
    """One child's evaluation: identity, attribution, demographics and per-group results."""

    person: str
    #: (source, Patient id) of the record that names the child in reports
    subject_source: str
    subject_id: str
    member_id: str | None
    cco: str | None
    #: the age on the last day when the birth date fixes it, else ``None``
    age: int | None
    #: (youngest, oldest) possible age on the last day; differs from ``age`` for partial birth dates
    age_range: tuple[int, int] | None
    sex: str | None
    sex_is_birth_sex: bool
    race: str | None
    ethnicity: str | None
    language: str | None
    disability: str | None
    county: str | None
    gaps: int | None
    gap_days: int | None
    anchor_ccos: int
    birth_conflict: bool
    groups: tuple[GroupResult, ...]
    #: REALD race/ethnicity and preferred language from eligibility extracts (preferred over
    #: the EHR-reported ``race``/``ethnicity``/``language`` in strata, spec §4 "Stratifiers")
    reald_race_ethnicity: str | None = None
    reald_language: str | None = None

    @property
    def ip_reason(self) -> str | None:
        first = self.groups[0]
        return None if first.ip else first.reason


@dataclass(frozen=True)
class Evidence:
    """A resource version that supported a population decision for a child."""

    person: str
    group: str
    #: population code: initial-population | denominator | denominator-exclusion | numerator
    population: str
    source: str
    rtype: str
    rid: str
    version: int


@dataclass
class Evaluation:
    spec: MeasureSpec
    period_start: date
    period_end: date
    as_of: int
    sources: SourceMode
    children: list[ChildResult]
    evidence: dict[str, list[Evidence]] = field(default_factory=dict)
    #: codes seen in unknown systems (data quality)
    unknown_systems: list[tuple[str, int]] = field(default_factory=list)
    #: services whose partial date straddles the period boundary (not counted)
    ambiguous_service_dates: int = 0
    #: counted claims with a line that has no from-date (that line is not a service)
    undated_claim_lines: int = 0


def _load_lookups(conn: Connection, mappings: Mappings, spec: MeasureSpec, ev_plan: EvaluationPlan) -> None:
    conn.execute(text("CREATE TEMP TABLE t_cco (system TEXT, value TEXT, cco TEXT)"))
    rows = [{"s": s, "v": v, "c": cco.id} for cco in mappings.ccos for (s, v) in cco.identifiers]
    if rows:
        conn.execute(text("INSERT INTO t_cco (system, value, cco) VALUES (:s, :v, :c)"), rows)
    conn.execute(text("CREATE TEMP TABLE t_cm (cid INTEGER, vs TEXT, vfrom INTEGER, vto INTEGER)"))
    conn.execute(text("CREATE TEMP TABLE t_unknown (cid INTEGER)"))
    terminology = Terminology(mappings)
    codes = conn.execute(text("SELECT cid, system, code FROM codes")).all()
    by_pair = {(system, code): cid for cid, system, code in codes}
    wanted = {name: spec.valuesets[name] for name in ev_plan.valuesets}
    matches = terminology.expand(by_pair.keys(), wanted)
    cm_rows = sorted(
        {
            (
                by_pair[(m.raw_system, m.raw_code)],
                m.valueset,
                m.valid_from.toordinal() if m.valid_from else None,
                m.valid_to.toordinal() if m.valid_to else None,
            )
            for m in matches
        },
        key=lambda r: (r[0], r[1], r[2] or 0, r[3] or 0),
    )
    if cm_rows:
        conn.execute(
            text("INSERT INTO t_cm (cid, vs, vfrom, vto) VALUES (:c, :v, :f, :t)"),
            [{"c": c, "v": v, "f": f, "t": t} for c, v, f, t in cm_rows],
        )
    unknown = [cid for (system, _code), cid in by_pair.items() if not terminology.known(system)]
    if unknown:
        conn.execute(text("INSERT INTO t_unknown (cid) VALUES (:c)"), [{"c": c} for c in unknown])
    conn.execute(text("CREATE INDEX ix_t_cm ON t_cm (cid, vs)"))
    conn.execute(text("CREATE INDEX ix_t_cco ON t_cco (system, value)"))
    conn.execute(text("CREATE INDEX ix_t_unknown ON t_unknown (cid)"))


def _drop_temps(conn: Connection) -> None:
    for name in TEMP_TABLES:
        conn.execute(text(f"DROP TABLE IF EXISTS {name}"))


def _age_band(spec: MeasureSpec, age: int | None) -> str | None:
    if age is None:
        return None
    return next((b.code for b in spec.age_bands if b.min_age <= age <= b.max_age), None)


def evaluate(
    store: Store,
    mappings: Mappings,
    spec: MeasureSpec,
    period_start: date,
    period_end: date,
    as_of: int,
    sources: SourceMode,
    *,
    evidence_for: Sequence[str] | None = None,
    all_evidence: bool = False,
) -> Evaluation:
    """Evaluate ``spec`` over the store as it was at ``as_of`` (µs since the epoch)."""
    ev_plan = plan(spec, period_start, period_end, as_of, sources, store.dialect)
    with store.engine.connect() as conn, conn.begin():
        _drop_temps(conn)
        _load_lookups(conn, mappings, spec, ev_plan)
        for statement in ev_plan.statements:
            conn.execute(text(statement.sql), _used(statement.sql, ev_plan.params))
            if statement.analyze:
                # Temp tables have no statistics; without them both planners pick nested
                # loops over the largest tables.
                conn.execute(text(f"ANALYZE {statement.analyze}"))
        children = _read_results(conn)
        evaluation = Evaluation(spec, period_start, period_end, as_of, sources, children)
        if all_evidence or evidence_for:
            evaluation.evidence = _read_evidence(
                conn, spec, None if all_evidence else list(evidence_for or ()), ev_plan
            )
        evaluation.unknown_systems = sorted(
            (str(system), int(n))
            for system, n in conn.execute(
                text(
                    "SELECT c.system, COUNT(DISTINCT h.rkey) FROM t_hit h JOIN f_code fc ON fc.rkey = h.rkey "
                    "JOIN t_unknown u ON u.cid = fc.cid JOIN codes c ON c.cid = fc.cid "
                    "WHERE h.kind = 'unknown' GROUP BY c.system ORDER BY c.system"
                )
            )
        )
        counts: dict[str, int] = {
            str(kind): int(n)
            for kind, n in conn.execute(
                text(
                    "SELECT kind, COUNT(DISTINCT rkey) FROM t_hit WHERE kind IN ('ambiguous-date', 'undated-line') "
                    "GROUP BY kind"
                )
            )
        }
        evaluation.ambiguous_service_dates = int(counts.get("ambiguous-date", 0))
        evaluation.undated_claim_lines = int(counts.get("undated-line", 0))
        _drop_temps(conn)
    return evaluation


def _used(sql: str, params: Any) -> dict[str, Any]:
    return {k: v for k, v in params.items() if f":{k}" in sql}


def _read_results(conn: Connection) -> list[ChildResult]:
    """One ChildResult per person: group results and attributes read as plain tuples (this runs
    over every child, so no per-row attribute lookups)."""
    groups: dict[str, list[GroupResult]] = {}
    for person, grp, ip, den, denex, num, reason in conn.execute(
        text("SELECT person, grp, ip, den, denex, num, reason FROM t_result ORDER BY person, grp_index")
    ).tuples():
        groups.setdefault(person, []).append(
            GroupResult(grp, bool(ip), bool(den), bool(denex), bool(num), reason)
        )
    children: list[ChildResult] = []
    rows = conn.execute(
        text("""
        SELECT b.person, b.subject, b.cco, b.age_old, b.age_young, b.gaps, b.gap_days, b.anchor_ccos,
               b.birth_conflict, p.member_id, p.birth_sex, p.gender, p.race, p.ethnicity, p.language,
               p.disability, p.county, p.reald_race_ethnicity, p.reald_language
        FROM t_base b JOIN t_person p ON p.person = b.person""")
    ).tuples()
    for (person, subject, cco, age_old, age_young, gaps, gap_days, anchor_ccos, birth_conflict, member_id,
         birth_sex, gender, race, ethnicity, language, disability, county, reald_race_ethnicity,
         reald_language) in rows:  # fmt: skip
        source, _, pid = str(subject).partition("|")
        age_certain = age_old is not None and age_old == age_young
        children.append(
            ChildResult(
                person=person,
                subject_source=source,
                subject_id=pid,
                member_id=member_id,
                cco=cco,
                age=age_old if age_certain else None,
                age_range=None if age_old is None else (int(age_young), int(age_old)),
                sex=birth_sex or gender,
                sex_is_birth_sex=birth_sex is not None,
                race=race,
                ethnicity=ethnicity,
                language=language,
                disability=disability,
                county=county,
                reald_race_ethnicity=reald_race_ethnicity,
                reald_language=reald_language,
                gaps=gaps,
                gap_days=gap_days,
                anchor_ccos=int(anchor_ccos or 0),
                birth_conflict=bool(birth_conflict),
                groups=tuple(groups[person]),
            )
        )
    children.sort(key=lambda ch: ch.person)  # code-point order, whatever the database's collation
    return children


def _read_evidence(
    conn: Connection, spec: MeasureSpec, persons: list[str] | None, ev_plan: EvaluationPlan
) -> dict[str, list[Evidence]]:
    if persons is not None:
        conn.execute(text("CREATE TEMP TABLE t_want (person TEXT)"))
        if persons:
            conn.execute(text("INSERT INTO t_want (person) VALUES (:p)"), [{"p": p} for p in persons])
        want = "AND x.person IN (SELECT person FROM t_want)"
    else:
        want = ""
    sql = f"""
        SELECT x.person, x.grp, x.population, x.source, x.rtype, x.rid, x.version FROM (
            SELECT p.person, '*' AS grp, 'initial-population' AS population, p.source, 'Patient' AS rtype,
                   p.pid AS rid, p.version
            FROM t_pat p JOIN t_base b ON b.person = p.person WHERE b.ip_reason IS NULL
            UNION ALL
            SELECT s.person, '*', 'initial-population', s.source, 'Coverage', r.rid, r.version
            FROM t_span s JOIN resources r ON r.rkey = s.rkey JOIN t_base b ON b.person = s.person
            WHERE b.ip_reason IS NULL AND (b.cco = s.cco OR :any_cco = 1)
              AND (s.start_day IS NULL OR s.start_day <= :p_end) AND (s.end_day IS NULL OR s.end_day >= :p_start)
            UNION ALL
            SELECT h.person, h.grp, CASE WHEN h.kind IN ('num', 'numdx') THEN 'numerator' ELSE 'denominator' END,
                   e.source, e.rtype, e.rid, e.version
            FROM t_hit h JOIN resources e ON e.rkey = h.rkey
            JOIN t_result res ON res.person = h.person AND res.grp = h.grp
            WHERE (h.kind IN ('num', 'numdx') AND res.num = 1) OR (h.kind = 'need' AND res.den = 1)
            UNION ALL
            SELECT p.person, '*', 'denominator-exclusion', p.source, 'Patient', p.pid, p.version
            FROM t_pat p JOIN t_base b ON b.person = p.person
            WHERE b.ip_reason IS NULL AND b.denex = 1 AND p.deceased = 1
        ) x WHERE 1 = 1 {want}
        ORDER BY x.person, x.grp, x.population, x.rtype, x.source, x.rid"""
    out: dict[str, list[Evidence]] = {}
    window = {
        "p_start": ev_plan.params["p_start"],
        "p_end": ev_plan.params["p_end"],
        "any_cco": 1 if spec.enrollment.scope == "any-cco" else 0,
    }
    for row in conn.execute(text(sql), window):
        out.setdefault(row.person, []).append(
            Evidence(row.person, row.grp, row.population, row.source, row.rtype, row.rid, int(row.version))
        )
    for items in out.values():
        items.sort(key=lambda e: (e.group, e.population, e.rtype, e.source, e.rid))
    if persons is not None:
        conn.execute(text("DROP TABLE t_want"))
    return out
