"""The queries behind Bulk Data ``$export`` (Bulk Data Access IG 3.0.0, "Export"): which resource
versions an export holds, and which deletions it reports.

- **Data cut** (§ "Response - Complete Status", ``transactionTime``: "SHOULD NOT include any
  resources modified after this instant, and SHALL include any matching resources modified up to
  and including this instant"): every query reads the versions *visible as of* the cut
  (:func:`fhir_adapter.measure.engine.visible`, DESIGN.md §1), in one read transaction
  (:func:`snapshot`), so writes after the kick-off never leak in, whenever the job runs.
- **_since** (§ "Query Parameters"): a version is exported when it was stored after ``_since``
  (``meta.lastUpdated`` of served resources is the store's ``ingested_at``). Deletions after
  ``_since`` are the tombstone versions visible at the cut (:func:`iter_tombstones`).
- **Levels** (§ "Bulk Data Kick-off Request"): system level exports every version of the types
  asked for. Patient level (``Patient/$export``, "all patients") exports the Patient compartment:
  Patients, and resources that name a patient (Coverage beneficiary; Encounter, Condition,
  Procedure, ServiceRequest, Claim, ExplanationOfBenefit patient/subject; Task ``for``;
  Observation subject; Group member; MeasureReport subject). Group level exports the same for the
  group's members only: every Patient record of each member child (records are linked by the
  Medicaid member id, spec §3 "Identity"). Organization, Practitioner and PractitionerRole lie
  outside the compartment and are exported whole at every level (§ "Bulk Data Kick-off Request":
  other resources "helpful in interpreting the patient data (such as Organization and
  Practitioner) MAY also be returned").
- **Groups**: each CCO of ``mappings/ccos.csv`` is a virtual Group ``cco-<CCO id>`` whose members
  are the children with an active Coverage of that CCO (payor identifier, or payor Organization
  identifier, as the evaluation reads it) whose period overlaps the *export window*: the day of
  ``_since`` through the day of the cut, or the cut's day alone without ``_since`` (current
  enrollment). A stored Group (Da Vinci ATR member attribution) has the members its version
  visible at the cut lists (``f_group_member``: active members, whatever their ``period``, so a
  past year's attribution list still exports its children). A stored Group whose id is
  also a CCO's virtual id is shadowed by the virtual one. The group's membership is taken at the
  cut; resources modified before ``_since`` of a child who joined the group later are *not*
  re-sent (§ "Query Parameters" ``_since`` leaves this to the server: documented here).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Connection, text

from fhir_adapter.errors import NotFoundError, UsageError
from fhir_adapter.measure.engine import person_key, visible
from fhir_adapter.measure.spec import Cco
from fhir_adapter.store.db import Store
from fhir_adapter.store.extract import CLAIMS_TYPES, CLINICAL_TYPES, PROVIDER_TYPES

Level = Literal["system", "patient", "group"]

#: What ``$export`` can return: the types sources send, and the MeasureReports the service stores.
EXPORT_TYPES: tuple[str, ...] = (
    "Patient", "Coverage", "Encounter", "Condition", "Procedure", "ServiceRequest", "Claim",
    "ExplanationOfBenefit", "Organization", "Practitioner", "PractitionerRole", "Group", "Task",
    "Observation", "MeasureReport",
)  # fmt: skip
#: Exported whole at patient and group level (not in the Patient compartment).
NON_COMPARTMENT = frozenset(PROVIDER_TYPES)
#: Types whose patient is ``f_event.pid``.
_EVENT_TYPES = CLAIMS_TYPES | CLINICAL_TYPES | {"Task"}
#: Prefix of the virtual per-CCO Group ids.
CCO_GROUP_PREFIX = "cco-"
PAGE = 2000
#: ``tenant(rtype, alias)``: the caller's row condition on the ``resources`` row ``alias`` of
#: type ``rtype`` and its bind parameters, or ``None`` when it restricts nothing (built from
#: :meth:`fhir_adapter.auth.policy.Policy.resources` by the service).
Tenant = Callable[[str, str], tuple[str, Mapping[str, Any]] | None]
_TEMPS = ("t_exp_pat", "t_exp_person")


@dataclass(frozen=True)
class GroupRef:
    """The Group of a group-level export: a CCO's virtual Group, or a stored Group (its source)."""

    rid: str
    cco: Cco | None = None
    source: str | None = None


@dataclass(frozen=True)
class Cut:
    """When: ``as_of`` (µs, the data cut), ``since`` (µs or ``None``) and the export window
    (first and last day, proleptic ordinals) that decides group membership."""

    as_of: int
    since: int | None
    window: tuple[int, int]


@dataclass(frozen=True)
class ExportRow:
    rkey: int
    source: str
    rtype: str
    rid: str
    version: int
    ingested_at: int
    body: bytes


@dataclass(frozen=True)
class Tombstone:
    rkey: int
    source: str
    rtype: str
    rid: str
    version: int
    deleted_at: int


def cco_group_id(cco_id: str) -> str:
    return CCO_GROUP_PREFIX + cco_id


def find_group(
    store: Store, ccos: Sequence[Cco], rid: str, as_of: int, source: str | None = None
) -> GroupRef:
    """The Group ``rid`` names: a CCO's virtual Group, else the stored Group visible at ``as_of``
    (in ``source`` when given). :class:`NotFoundError` when there is none; :class:`UsageError`
    naming the sources when several sources hold that id (DESIGN.md §2)."""
    for cco in ccos:
        if cco_group_id(cco.id) == rid:
            return GroupRef(rid, cco=cco)
    sql = f"SELECT DISTINCT r.source FROM resources r WHERE r.rtype = 'Group' AND r.rid = :rid AND {visible('r')}"
    params: dict[str, Any] = {"rid": rid, "as_of": as_of}
    if source is not None:
        sql += " AND r.source = :source"
        params["source"] = source
    with store.read() as conn:
        sources = sorted(str(s) for (s,) in conn.execute(text(sql), params))
    if not sources:
        where = f" in source {source}" if source else ""
        known = ", ".join(cco_group_id(c.id) for c in ccos[:3])
        raise NotFoundError(
            f"Group/{rid} is not known{where} (a CCO's Group is cco-<CCO id>, e.g. {known})", location="id"
        )
    if len(sources) > 1:
        raise UsageError(
            f"Group/{rid} exists in several sources ({', '.join(sources)}): add _source=<name> to choose one",
            location="_source",
        )
    return GroupRef(rid, source=sources[0])


@contextmanager
def snapshot(store: Store) -> Iterator[Connection]:
    """One read transaction that sees one state of the store. On SQLite, writers that began
    before are waited for first (an immediate write transaction queues behind them), and a WAL
    read transaction is a snapshot; on PostgreSQL the transaction is ``REPEATABLE READ``.

    Known limit (Bulk Data 3.0 ``transactionTime``: a server "might need to wait for any pending
    transactions"): on PostgreSQL, a write stamped before the kick-off whose transaction commits
    after this snapshot is taken is in neither this export nor the next ``_since`` one."""
    if store.dialect == "sqlite":
        with store.write():
            pass
    with store.engine.connect() as plain:
        conn = (
            plain.execution_options(isolation_level="REPEATABLE READ") if store.dialect != "sqlite" else plain
        )
        with conn.begin():
            yield conn
            _drop_temps(conn)  # after a failure the rollback removes them (DDL is transactional)


def _drop_temps(conn: Connection) -> None:
    for name in _TEMPS:
        conn.execute(text(f"DROP TABLE IF EXISTS {name}"))


def _payor_condition(cco: Cco, params: dict[str, Any]) -> str:
    """Coverage ``c`` names ``cco``: by payor identifier, or by a payor Organization (same
    source) with one of the CCO's identifiers (as the evaluation's enrollment spans do)."""
    pairs = []
    for n, (system, value) in enumerate(cco.identifiers):
        params[f"cs{n}"], params[f"cv{n}"] = system, value
        pairs.append(n)
    if not pairs:
        return "1 = 0"
    direct = " OR ".join(f"(c.payor_system = :cs{n} AND c.payor_value = :cv{n})" for n in pairs)
    by_org = " OR ".join(f"(o.system = :cs{n} AND o.value = :cv{n})" for n in pairs)
    return (
        f"(({direct}) OR EXISTS (SELECT 1 FROM f_org_ident o JOIN resources ro ON ro.rkey = o.rkey "
        f"WHERE {visible('ro')} AND o.source = c.source AND o.oid = c.payor_org AND ({by_org})))"
    )


def prepare_scope(conn: Connection, level: Level, group: GroupRef | None, cut: Cut) -> int:
    """For a group-level export, fill the temporary tables ``t_exp_person`` (member children) and
    ``t_exp_pat`` (their visible Patient records); returns the number of member children (0 for
    the other levels, which need no tables)."""
    if level != "group":
        return 0
    assert group is not None
    _drop_temps(conn)
    conn.execute(text("CREATE TEMP TABLE t_exp_person (person TEXT)"))
    conn.execute(text("CREATE TEMP TABLE t_exp_pat (source TEXT, pid TEXT)"))
    params: dict[str, Any] = {"as_of": cut.as_of, "lo": cut.window[0], "hi": cut.window[1]}
    if group.cco is not None:
        members = f"""
            SELECT DISTINCT {person_key("p")} AS person FROM f_coverage c
            JOIN resources r ON r.rkey = c.rkey
            JOIN f_patient p ON p.source = c.source AND p.pid = c.pid
            JOIN resources rp ON rp.rkey = p.rkey
            WHERE {visible("r")} AND {visible("rp")} AND c.status = 'active'
              AND (c.start_day IS NULL OR c.start_day <= :hi) AND (c.end_day IS NULL OR c.end_day >= :lo)
              AND {_payor_condition(group.cco, params)}"""
    else:
        params.update({"gid": group.rid, "gsource": group.source})
        listed = f"""
            SELECT g.source, g.pid, g.member_id FROM f_group_member g JOIN resources r ON r.rkey = g.rkey
            WHERE r.rtype = 'Group' AND r.rid = :gid AND r.source = :gsource AND {visible("r")}"""
        members = f"""
            SELECT {person_key("p")} AS person FROM ({listed}) m
            JOIN f_patient p ON p.source = m.source AND p.pid = m.pid
            JOIN resources rp ON rp.rkey = p.rkey WHERE {visible("rp")}
            UNION SELECT 'm:' || m.member_id AS person FROM ({listed}) m WHERE m.member_id IS NOT NULL"""
    conn.execute(text(f"INSERT INTO t_exp_person (person) SELECT DISTINCT person FROM ({members}) x"), params)
    conn.execute(
        text(
            f"INSERT INTO t_exp_pat (source, pid) SELECT p.source, p.pid FROM f_patient p "
            f"JOIN resources rp ON rp.rkey = p.rkey WHERE {visible('rp')} "
            f"AND {person_key('p')} IN (SELECT person FROM t_exp_person)"
        ),
        {"as_of": cut.as_of},
    )
    return int(conn.execute(text("SELECT COUNT(*) FROM t_exp_person")).scalar_one())


def _patient(level: Level, source: str, pid: str) -> str:
    if level == "patient":
        return f"{pid} IS NOT NULL"
    return f"EXISTS (SELECT 1 FROM t_exp_pat t WHERE t.source = {source} AND t.pid = {pid})"


def scope_condition(rtype: str, level: Level, rkey: str) -> str | None:
    """SQL that keeps the versions (``rkey`` column expression) of ``rtype`` in the export's
    scope (module docstring), or ``None`` when every version is in scope."""
    if level == "system" or rtype in NON_COMPARTMENT:
        return None
    if rtype == "Patient":
        if level == "patient":
            return None
        return f"{rkey} IN (SELECT p.rkey FROM f_patient p WHERE {_patient(level, 'p.source', 'p.pid')})"
    if rtype == "Coverage":
        return f"{rkey} IN (SELECT c.rkey FROM f_coverage c WHERE {_patient(level, 'c.source', 'c.pid')})"
    if rtype in _EVENT_TYPES:
        return f"{rkey} IN (SELECT e.rkey FROM f_event e WHERE {_patient(level, 'e.source', 'e.pid')})"
    if rtype == "Observation":
        return f"{rkey} IN (SELECT o.rkey FROM f_observation o WHERE {_patient(level, 'o.source', 'o.pid')})"
    if rtype == "Group":
        if level == "patient":
            member = "g.pid IS NOT NULL OR g.member_id IS NOT NULL"
        else:
            member = (
                f"{_patient(level, 'g.source', 'g.pid')} OR EXISTS (SELECT 1 FROM t_exp_person x "
                "WHERE x.person = 'm:' || g.member_id)"
            )
        return f"{rkey} IN (SELECT g.rkey FROM f_group_member g WHERE {member})"
    if rtype == "MeasureReport":
        if level == "patient":
            return f"{rkey} IN (SELECT m.rkey FROM f_report m WHERE m.subject LIKE 'Patient/%')"
        return (
            f"{rkey} IN (SELECT m.rkey FROM f_report m WHERE EXISTS (SELECT 1 FROM t_exp_pat t "
            "WHERE m.subject = 'Patient/' || t.pid))"
        )
    raise ValueError(f"{rtype} is not an export type")


def _tenant(tenant: Tenant | None, rtype: str, alias: str, where: list[str], params: dict[str, Any]) -> None:
    found = tenant(rtype, alias) if tenant is not None else None
    if found is not None:
        where.append(f"({found[0]})")
        params.update(found[1])


def iter_resources(
    conn: Connection, rtype: str, level: Level, cut: Cut, page: int = PAGE, *, tenant: Tenant | None = None
) -> Iterator[ExportRow]:
    """The versions of ``rtype`` the export holds (and ``tenant`` shows the caller), in storage
    order, read a page at a time."""
    where = [f"r.rtype = :rtype AND {visible('r')}"]
    params: dict[str, Any] = {"rtype": rtype, "as_of": cut.as_of, "limit": page, "after": 0}
    if cut.since is not None:
        where.append("r.ingested_at > :since")
        params["since"] = cut.since
    scope = scope_condition(rtype, level, "r.rkey")
    if scope is not None:
        where.append(scope)
    _tenant(tenant, rtype, "r", where, params)
    sql = (
        "SELECT r.rkey, r.source, r.rid, r.version, r.ingested_at, b.body FROM resources r "
        f"JOIN resource_bodies b ON b.rkey = r.rkey WHERE {' AND '.join(where)} AND r.rkey > :after "
        "ORDER BY r.rkey LIMIT :limit"
    )
    while True:
        rows = conn.execute(text(sql), params).all()
        for row in rows:
            yield ExportRow(
                int(row[0]), str(row[1]), rtype, str(row[2]), int(row[3]), int(row[4]), bytes(row[5])
            )
        if len(rows) < page:
            return
        params["after"] = int(rows[-1][0])


def iter_tombstones(
    conn: Connection, rtype: str, level: Level, cut: Cut, *, tenant: Tenant | None = None
) -> Iterator[Tombstone]:
    """Deletions of ``rtype`` stored after ``cut.since`` and still in force at the cut (a
    resource created again since is exported, not listed as deleted: § "Response - Complete
    Status" ``deleted``: "SHALL NOT appear in the 'output' section"). The deleted resource's
    previous version decides whether it was in the export's scope and is shown to the caller."""
    if cut.since is None:
        return
    where = [
        "r.rtype = :rtype AND r.deleted = 1 AND r.ingested_at > :since AND r.ingested_at <= :as_of "
        "AND (r.superseded_at IS NULL OR r.superseded_at > :as_of)"
    ]
    params: dict[str, Any] = {"rtype": rtype, "since": cut.since, "as_of": cut.as_of}
    previous: list[str] = []
    scope = scope_condition(rtype, level, "pv.rkey")
    if scope is not None:
        previous.append(scope)
    _tenant(tenant, rtype, "pv", previous, params)
    if previous:
        where.append(
            "EXISTS (SELECT 1 FROM resources pv WHERE pv.source = r.source AND pv.rtype = r.rtype "
            f"AND pv.rid = r.rid AND pv.version = r.version - 1 AND {' AND '.join(previous)})"
        )
    sql = (
        "SELECT r.rkey, r.source, r.rid, r.version, r.ingested_at FROM resources r "
        f"WHERE {' AND '.join(where)} ORDER BY r.rkey"
    )
    for row in conn.execute(text(sql), params):
        yield Tombstone(int(row[0]), str(row[1]), rtype, str(row[2]), int(row[3]), int(row[4]))


__all__ = [
    "CCO_GROUP_PREFIX",
    "EXPORT_TYPES",
    "NON_COMPARTMENT",
    "Cut",
    "ExportRow",
    "GroupRef",
    "Level",
    "Tenant",
    "Tombstone",
    "cco_group_id",
    "find_group",
    "iter_resources",
    "iter_tombstones",
    "prepare_scope",
    "scope_condition",
    "snapshot",
]
