"""Store facts the referral loop reads (spec §4 "Referral loop"): ServiceRequests with their
codings and the Tasks that track them, and the dates of each child's qualifying services.

* :func:`service_requests`: ServiceRequest events (``f_event``, rtype ``ServiceRequest``)
  visible at a data cut, dated in a window (undated ones too), with their ``code`` and
  ``category`` codings (role ``proc``), ``reasonCode`` codings (role ``dx``), the child's person
  key, and the Tasks whose ``focus``/``basedOn`` names them in the same source (``f_ref`` field
  ``basedon``; references are resolved within their source, DESIGN.md §1).
* :func:`qualifying_service_days`: the days on which given children had a service that meets
  one group's numerator criterion (procedure value set, diagnosis on the same claim or encounter
  at the configured position, counted claims and finished encounters, spec §3 "Numerator"),
  whatever their age or enrollment. It runs the measure engine's own statements
  (:func:`fhir_adapter.measure.engine.plan`) with the population step replaced by the listed
  children, so a referral is closed by exactly what the measure counts. Caveat: with
  ``diagnosis_position = "line"`` every qualifying procedure line of a qualifying claim gives a
  day, not only the line the diagnosis points at.

Visibility and person keys are the engine's (:func:`~fhir_adapter.measure.engine.visible`,
:func:`~fhir_adapter.measure.engine.person_key`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TypeVar

from sqlalchemy import text

from fhir_adapter.errors import StoreError
from fhir_adapter.measure.engine import person_key, plan, visible
from fhir_adapter.measure.spec import Mappings, MeasureSpec, SourceMode
from fhir_adapter.store.db import Store
from fhir_adapter.store.evaluate import _drop_temps, _load_lookups, _used

_CHUNK = 500
T = TypeVar("T")
#: Engine steps that decide the population: replaced by "the listed children".
_POPULATION_TABLES = frozenset(
    {
        "t_person0",
        "t_person",
        "t_age",
        "t_span",
        "t_clip",
        "t_island",
        "t_enr",
        "t_enr2",
        "t_attr",
        "t_result",
    }
)


def _chunks(items: Sequence[T], size: int = _CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass(frozen=True)
class TaskFact:
    """A Task that tracks a ServiceRequest (FHIR R4 Task ``focus``/``basedOn``)."""

    rid: str
    status: str | None
    #: ``authoredOn``, else ``lastModified`` (local day)
    day: date | None
    #: when this version was stored (µs), to order Tasks of the same day
    ingested_at: int


@dataclass(frozen=True)
class RequestFact:
    """One ServiceRequest as stored (current at the data cut)."""

    source: str
    rid: str
    pid: str | None
    #: the engine's person key, ``None`` when the subject Patient is not in the store
    person: str | None
    member_id: str | None
    status: str | None
    intent: str | None
    #: ``authoredOn`` as local days (first and last a partial date can mean)
    day: date | None
    day_last: date | None
    #: (role, system, code): role ``proc`` for ``code``/``category``, ``dx`` for ``reasonCode``
    codes: tuple[tuple[str, str, str], ...]
    tasks: tuple[TaskFact, ...] = ()


def service_requests(store: Store, as_of: int, first_day: date, last_day: date) -> list[RequestFact]:
    """ServiceRequests visible at ``as_of`` whose ``authoredOn`` (first possible day) falls in
    ``[first_day, last_day]``, and those without a usable ``authoredOn``; ordered by source and id."""
    params = {"as_of": as_of, "first": first_day.toordinal(), "last": last_day.toordinal()}
    sql = f"""
        SELECT e.rkey, e.source, e.rid, e.pid, pp.person, pp.member_id, e.status, e.use, e.day, e.day_last
        FROM f_event e JOIN resources r ON r.rkey = e.rkey
        LEFT JOIN (
            SELECT p.source, p.pid, p.member_id, {person_key("p")} AS person
            FROM f_patient p JOIN resources rp ON rp.rkey = p.rkey WHERE {visible("rp")}
        ) pp ON pp.source = e.source AND pp.pid = e.pid
        WHERE e.rtype = 'ServiceRequest' AND {visible("r")}
          AND (e.day IS NULL OR (e.day >= :first AND e.day <= :last))"""
    task_sql = f"""
        SELECT e.source, f.tid, e.rid, e.status, e.day, r.ingested_at
        FROM f_ref f JOIN f_event e ON e.rkey = f.rkey JOIN resources r ON r.rkey = e.rkey
        WHERE e.rtype = 'Task' AND f.field = 'basedon' AND f.ttype = 'ServiceRequest' AND {visible("r")}"""
    with store.read() as conn:
        rows = list(conn.execute(text(sql), params).tuples())
        codes: dict[int, list[tuple[str, str, str]]] = {}
        for chunk in _chunks([int(r[0]) for r in rows]):
            marks = ", ".join(str(k) for k in chunk)
            for rkey, role, system, code in conn.execute(
                text(
                    "SELECT fc.rkey, fc.role, c.system, c.code FROM f_code fc JOIN codes c ON c.cid = fc.cid "
                    f"WHERE fc.rkey IN ({marks})"
                )
            ).tuples():
                codes.setdefault(int(rkey), []).append((str(role), str(system), str(code)))
        wanted = {(str(r[1]), str(r[2])) for r in rows}
        tasks: dict[tuple[str, str], list[TaskFact]] = {}
        for source, request, rid, status, day, ingested_at in conn.execute(
            text(task_sql), {"as_of": as_of}
        ).tuples():
            key = (str(source), str(request))
            if key in wanted:
                tasks.setdefault(key, []).append(TaskFact(str(rid), status, _day(day), int(ingested_at)))
    out = []
    for rkey, source, rid, pid, person, member_id, status, intent, day, day_last in rows:
        key = (str(source), str(rid))
        out.append(
            RequestFact(
                source=key[0], rid=key[1], pid=pid, person=person, member_id=member_id, status=status,
                intent=intent, day=_day(day), day_last=_day(day_last),
                codes=tuple(sorted(set(codes.get(int(rkey), ())))),
                tasks=tuple(sorted(tasks.get(key, ()), key=lambda t: (t.day or date.min, t.ingested_at, t.rid))),
            )
        )  # fmt: skip
    out.sort(key=lambda r: (r.source, r.rid))
    return out


def _day(ordinal: int | None) -> date | None:
    return date.fromordinal(int(ordinal)) if ordinal is not None else None


@dataclass(frozen=True)
class ServiceDay:
    """A qualifying service of a child: its day and the resource that carries it."""

    day: date
    source: str
    rtype: str
    rid: str


def qualifying_service_days(
    store: Store,
    mappings: Mappings,
    spec: MeasureSpec,
    group_id: str,
    persons: Collection[str],
    first_day: date,
    last_day: date,
    as_of: int,
    sources: SourceMode,
) -> dict[str, list[ServiceDay]]:
    """Per person key: the days in ``[first_day, last_day]`` with a service meeting the
    numerator criterion of ``spec``'s group ``group_id`` (see the module docstring), sorted."""
    index = [g.id for g in spec.groups].index(group_id)
    wanted = sorted(set(persons))
    if not wanted or first_day > last_day:
        return {}
    ev_plan = plan(spec, first_day, last_day, as_of, sources, store.dialect)
    group_param = f"g{index}"
    out: dict[str, set[ServiceDay]] = {}
    with store.engine.connect() as conn, conn.begin():
        _drop_temps(conn)
        conn.execute(text("DROP TABLE IF EXISTS t_refp"))
        _load_lookups(conn, mappings, spec, ev_plan)
        conn.execute(text("CREATE TEMP TABLE t_refp (person TEXT)"))
        for chunk in _chunks(wanted, 5000):
            conn.execute(text("INSERT INTO t_refp (person) VALUES (:p)"), [{"p": p} for p in chunk])
        replaced = False
        for statement in ev_plan.statements:
            target = statement.creates or statement.analyze
            if target in _POPULATION_TABLES:
                continue
            if statement.creates == "t_base":
                # Every listed child is "in the population": no age or enrollment rule applies.
                conn.execute(
                    text(
                        "CREATE TEMP TABLE t_base AS SELECT DISTINCT p.person, CAST(NULL AS TEXT) AS ip_reason, "
                        "0 AS denex FROM t_pat p JOIN t_refp w ON w.person = p.person"
                    )
                )
                replaced = True
                continue
            conn.execute(text(statement.sql), _used(statement.sql, ev_plan.params))
            if statement.analyze:
                conn.execute(text(f"ANALYZE {statement.analyze}"))
        if not replaced:
            raise StoreError("the measure engine's plan has no t_base step to replace")
        rows = conn.execute(
            text(
                "SELECT DISTINCT h.person, p.day, e.source, e.rtype, e.rid FROM t_hit h "
                "JOIN t_proc p ON p.rkey = h.rkey AND p.vs = :proc AND p.denied = 0 "
                "JOIN t_svc0 e ON e.rkey = h.rkey "
                "WHERE h.kind = 'num' AND h.grp = :grp"
            ),
            {"proc": ev_plan.params[f"{group_param}_proc"], "grp": group_id},
        ).tuples()
        for person, day, source, rtype, rid in rows:
            out.setdefault(str(person), set()).add(
                ServiceDay(date.fromordinal(int(day)), str(source), str(rtype), str(rid))
            )
        _drop_temps(conn)
        conn.execute(text("DROP TABLE IF EXISTS t_refp"))
    return {p: sorted(days, key=lambda s: (s.day, s.source, s.rtype, s.rid)) for p, days in out.items()}


__all__ = ["RequestFact", "ServiceDay", "TaskFact", "qualifying_service_days", "service_requests"]
