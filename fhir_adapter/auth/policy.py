"""Authorisation and per-CCO tenancy: the one policy every route asks (issue #7 item 2).

Authentication (:mod:`fhir_adapter.auth.tokens`, ``get_caller``) says *who* calls; SMART scopes
(:func:`fhir_adapter.api.deps.require`) say which *interactions* on which *types* the token allows
(SMART App Launch 2.2 "Scopes and Launch Context"). This module says *which rows*: a caller sees
only its tenant's data, whatever its scopes. docs/security.md is the user-facing statement of the
same rules; the rules (project decisions, UNVERIFIED against any OHA contract) are:

- ``ehr``: what it submitted, nothing else: stored resources whose ``source`` is its own (DESIGN.md
  §2: resources are kept per source). It runs no evaluation (an evaluation combines every
  source's data about a child, which is not "what it submitted"): 403.
- ``cco``: the children *attributed* to one of its CCOs, all their records in every source, the
  MeasureReports about them, the reports its own evaluations produced, and the provider directory
  (Organization, Practitioner, PractitionerRole: not patient data, exported whole by Bulk Data
  too). A child is attributed to a CCO for a window of days when, in the store as known at the
  data cut, an ``active`` Coverage of one of the child's Patient records names the CCO (payor
  identifier, else payor Organization identifier, matched to ``mappings/ccos.csv`` exactly as the
  measure engine's enrollment spans are, :func:`fhir_adapter.measure.engine.plan` ``t_span``) and
  its period overlaps the window. Records of one child are linked by the Medicaid member id
  (:func:`fhir_adapter.measure.engine.person_key`, spec §3 "Identity"); an unlinked record is its
  own person. The window follows enrollment over time: for reads, searches and exports it is the
  last ``Settings.tenant_lookback_days`` days up to today (default 548: a measurement year plus
  the six months in which OHA validates and CCOs dispute it), so a child who left the CCO stays
  visible that long and a child who joined is visible from the first day of its span; for
  evaluations it is the measurement period. Population and subject-list reports of a CCO caller
  count only the children the evaluation itself attributes to its CCOs (``ChildResult.cco``: the
  anchor-day CCO, spec §3 "Enrollment and attribution"), and are stored under the CCO's own
  report source (``<report_source>.<CCO ids>``), which only that CCO (and OHA) reads.
- ``oha``, ``admin`` and ``dev`` (authorisation off): everything.
- Anyone else (the anonymous caller of public paths, the metrics scraper): no rows.

A resource belongs to a child through the patient reference its facts keep, resolved in the
resource's own source: ``f_event.pid`` (Encounter, Condition, Procedure, ServiceRequest, Claim,
ExplanationOfBenefit, Task), ``f_coverage.pid``, ``f_observation.pid``, the Patient itself, and
``MeasureReport.subject`` (``f_report.subject``). A MeasureReport the adapter produced for OHA (in
``report_source``) names its subject by id only; it is shown to a CCO only when every current
Patient record with that id belongs to one of the CCO's children (an id two sources share with
another child hides it: fail closed). Stored Groups (attribution rosters) may list members of
several CCOs and their facts omit inactive members, so CCOs read none (their Group is the virtual
``cco-<id>`` of Bulk Data export). Resource types with no patient link are not shown to CCOs.

Everything here builds SQL conditions on ``resources`` (alias ``r``) with bind parameters named
``tn_*``, one text for SQLite and PostgreSQL, or raises errors from :mod:`fhir_adapter.errors`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from itertools import combinations
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy import text

from fhir_adapter.errors import ForbiddenError, NotFoundError, UsageError
from fhir_adapter.measure.engine import person_key
from fhir_adapter.measure.spec import Cco
from fhir_adapter.store.db import Store
from fhir_adapter.store.evaluate import ChildResult
from fhir_adapter.store.extract import PROVIDER_TYPES

#: Roles that see every row.
UNRESTRICTED_ROLES = frozenset({"oha", "admin", "dev"})
#: Roles that may run evaluations (``$evaluate-measure``, ``$evaluate``, ``$care-gaps``, flat exports).
EVALUATING_ROLES = frozenset({"cco", "oha", "admin", "dev"})
#: Roles that may poll, cancel and re-run any client's jobs (the owner always may).
JOB_ROLES = frozenset({"oha", "admin", "dev"})
#: Roles that may read ``/metrics`` (``metrics`` is the static scrape token's caller).
METRICS_ROLES = frozenset({"oha", "admin", "dev", "metrics"})
#: Provider directory types shown to CCO callers whole (outside the Patient compartment; Bulk
#: Data 3.0 "Kick-off Request": resources "helpful in interpreting the patient data").
DIRECTORY_TYPES = frozenset(PROVIDER_TYPES)
#: What the service stores under a CCO's own report source (its evaluations' reports and Lists).
REPORT_TYPES = frozenset({"MeasureReport", "List"})
#: A CCO caller with more CCOs than this sees its per-CCO reports and those of all its CCOs
#: together, not of every subset (2^n sources).
MAX_SUBSET_CCOS = 6
ALL = "1 = 1"
NOTHING = "1 = 0"


class Principal(Protocol):
    """What the policy needs of a caller (:class:`fhir_adapter.api.deps.Caller`)."""

    @property
    def client_id(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def role(self) -> str: ...
    @property
    def ccos(self) -> tuple[str, ...]: ...


@dataclass(frozen=True)
class Predicate:
    """A condition on ``resources`` (alias ``r``) and its bind parameters."""

    sql: str
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def unrestricted(self) -> bool:
        return self.sql == ALL

    def and_sql(self) -> str:
        """`` AND (<condition>)``, or nothing when it restricts nothing."""
        return "" if self.unrestricted else f" AND ({self.sql})"


@dataclass(frozen=True)
class Window:
    """Inclusive local days a Coverage period must overlap."""

    first: date
    last: date


def tenant_report_source(report_source: str, ccos: Iterable[str]) -> str:
    """Source name of the reports produced for a CCO caller: ``<report_source>.<ids joined by +>``."""
    return f"{report_source}.{'+'.join(sorted(set(ccos)))}"


def is_reserved_source(name: str, report_source: str) -> bool:
    """The service's own report sources (``report_source`` and its per-CCO sources): no client may
    be registered with, or write under, one of them."""
    return name == report_source or name.startswith(report_source + ".")


# --------------------------------------------------------------------------------------------------
# evaluations


@dataclass(frozen=True)
class EvaluationScope:
    """Which children an evaluation's output may show: every child (``ccos`` ``None``) or those the
    evaluation attributes to one of ``ccos`` (``ChildResult.cco``). Travels in job requests."""

    ccos: tuple[str, ...] | None = None

    @property
    def restricted(self) -> bool:
        return self.ccos is not None

    def children(self, children: Sequence[ChildResult]) -> list[ChildResult]:
        if self.ccos is None:
            return list(children)
        allowed = set(self.ccos)
        return [c for c in children if c.cco in allowed]

    def report_source(self, report_source: str) -> str:
        """Where this scope's MeasureReports (and subject Lists) are stored."""
        return report_source if self.ccos is None else tenant_report_source(report_source, self.ccos)

    @property
    def tag(self) -> str | None:
        """A report-id part that keeps a CCO's reports apart from OHA's of the same inputs."""
        return None if self.ccos is None else "cco=" + "+".join(sorted(self.ccos))

    def to_json(self) -> list[str] | None:
        return None if self.ccos is None else sorted(self.ccos)

    @classmethod
    def from_json(cls, value: Any) -> EvaluationScope:
        if value is None:
            return cls(None)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise UsageError("a job's tenant scope must be a list of CCO ids")
        return cls(tuple(value))


# --------------------------------------------------------------------------------------------------
# the policy


@dataclass(frozen=True)
class Policy:
    """The rules for one caller (module docstring)."""

    role: str
    client_id: str
    source: str
    ccos: tuple[str, ...]
    #: every CCO of ``mappings/ccos.csv`` (identifier matching, as the engine's ``t_cco``)
    all_ccos: tuple[Cco, ...]
    report_source: str
    lookback_days: int
    tz: ZoneInfo
    dialect: str = "sqlite"

    @classmethod
    def for_caller(
        cls,
        caller: Principal,
        *,
        ccos: Sequence[Cco],
        report_source: str,
        lookback_days: int,
        tz: ZoneInfo,
        dialect: str,
    ) -> Policy:
        return cls(
            role=caller.role,
            client_id=caller.client_id,
            source=caller.source,
            ccos=tuple(sorted(set(caller.ccos))),
            all_ccos=tuple(ccos),
            report_source=report_source,
            lookback_days=lookback_days,
            tz=tz,
            dialect=dialect,
        )

    # -- who ----------------------------------------------------------------------------------
    @property
    def unrestricted(self) -> bool:
        return self.role in UNRESTRICTED_ROLES

    @property
    def key(self) -> str:
        """Callers with the same key see the same rows (paging tokens carry it)."""
        if self.unrestricted:
            return "all"
        if self.role == "ehr":
            return f"ehr:{self.source}"
        if self.role == "cco":
            return "cco:" + "+".join(self.ccos)
        return f"none:{self.role}"

    def read_window(self, now: datetime) -> Window:
        """The last ``lookback_days`` days up to today (local), for reads, searches and exports."""
        today = now.astimezone(self.tz).date()
        return Window(today - timedelta(days=self.lookback_days), today)

    def tenant_report_sources(self) -> list[str]:
        """Report sources a CCO caller reads: one per non-empty subset of its CCOs."""
        if self.role != "cco" or not self.ccos:
            return []
        if len(self.ccos) > MAX_SUBSET_CCOS:
            subsets: list[tuple[str, ...]] = [(c,) for c in self.ccos] + [self.ccos]
        else:
            subsets = [s for n in range(1, len(self.ccos) + 1) for s in combinations(self.ccos, n)]
        return sorted({tenant_report_source(self.report_source, s) for s in subsets})

    # -- rows ---------------------------------------------------------------------------------
    def resources(
        self, rtype: str, window: Window, *, as_of: int | None = None, alias: str = "r"
    ) -> Predicate:
        """The condition a row of ``resources`` (``alias``) of type ``rtype`` must meet to be shown
        to this caller: the current store (``as_of`` ``None``) or as visible at ``as_of`` (µs)
        decides attribution."""
        if self.unrestricted:
            return Predicate(ALL)
        if self.role == "ehr":
            return Predicate(f"{alias}.source = :tn_source", {"tn_source": self.source})
        if self.role != "cco" or not self.ccos:
            return Predicate(NOTHING)
        params: dict[str, Any] = {}
        allowed = self._allowed_patients(window, as_of, params)
        link = self._link(rtype, alias, allowed, as_of, params)
        parts = [link] if link != NOTHING else []
        tenant = self.tenant_report_sources() if rtype in REPORT_TYPES else []
        if tenant:
            names = []
            for n, name in enumerate(tenant):
                params[f"tn_rs{n}"] = name
                names.append(f":tn_rs{n}")
            parts.append(f"{alias}.source IN ({', '.join(names)})")
        if not parts:
            return Predicate(NOTHING)
        return Predicate(" OR ".join(f"({p})" for p in parts), params)

    def _visible(self, alias: str, as_of: int | None) -> str:
        if as_of is None:
            return f"{alias}.superseded_at IS NULL AND {alias}.deleted = 0"
        return (
            f"{alias}.ingested_at <= :tn_as_of AND ({alias}.superseded_at IS NULL OR "
            f"{alias}.superseded_at > :tn_as_of) AND {alias}.deleted = 0"
        )

    def _cco_table(self, params: dict[str, Any]) -> str:
        """Every CCO identifier of the mappings as rows (system, value, cco): the engine's ``t_cco``."""
        rows: list[str] = []
        for cco in self.all_ccos:
            for system, value in cco.identifiers:
                n = len(rows)
                params[f"tn_is{n}"], params[f"tn_iv{n}"], params[f"tn_ic{n}"] = system, value, cco.id
                rows.append(
                    f"SELECT CAST(:tn_is{n} AS TEXT) AS system, CAST(:tn_iv{n} AS TEXT) AS value, "
                    f"CAST(:tn_ic{n} AS TEXT) AS cco"
                )
        if not rows:
            return (
                "SELECT CAST(NULL AS TEXT) AS system, CAST(NULL AS TEXT) AS value, "
                "CAST(NULL AS TEXT) AS cco WHERE 1 = 0"
            )
        return " UNION ALL ".join(rows)

    def _allowed_patients(self, window: Window, as_of: int | None, params: dict[str, Any]) -> str:
        """SELECT (source, pid) of the visible Patient records of children attributed to the
        caller's CCOs in ``window`` (module docstring)."""
        collate = ' COLLATE "C"' if self.dialect == "postgresql" else ""
        params["tn_lo"] = window.first.toordinal()
        params["tn_hi"] = window.last.toordinal()
        if as_of is not None:
            params["tn_as_of"] = as_of
        mine = []
        for n, cco in enumerate(self.ccos):
            params[f"tn_my{n}"] = cco
            mine.append(f":tn_my{n}")
        table = self._cco_table(params)
        spans = f"""
            SELECT c.source, c.pid FROM f_coverage c
            JOIN resources rc ON rc.rkey = c.rkey
            LEFT JOIN ({table}) ci ON ci.system = c.payor_system AND ci.value = c.payor_value
            LEFT JOIN (
                SELECT o.source, o.oid, MIN(t.cco{collate}) AS cco
                FROM f_org_ident o JOIN resources ro ON ro.rkey = o.rkey
                JOIN ({table}) t ON t.system = o.system AND t.value = o.value
                WHERE {self._visible("ro", as_of)}
                GROUP BY o.source, o.oid
            ) co ON co.source = c.source AND co.oid = c.payor_org
            WHERE {self._visible("rc", as_of)} AND c.status = 'active' AND c.pid IS NOT NULL
              AND (c.start_day IS NULL OR c.start_day <= :tn_hi) AND (c.end_day IS NULL OR c.end_day >= :tn_lo)
              AND COALESCE(ci.cco, co.cco) IN ({", ".join(mine)})"""
        persons = f"""
            SELECT {person_key("p2")} FROM f_patient p2 JOIN resources rp2 ON rp2.rkey = p2.rkey
            WHERE {self._visible("rp2", as_of)} AND (p2.source, p2.pid) IN ({spans})"""
        return f"""
            SELECT p.source, p.pid FROM f_patient p JOIN resources rp ON rp.rkey = p.rkey
            WHERE {self._visible("rp", as_of)} AND {person_key("p")} IN ({persons})"""

    def _link(self, rtype: str, alias: str, allowed: str, as_of: int | None, params: dict[str, Any]) -> str:
        """The resource belongs to an allowed Patient record (module docstring)."""
        if rtype in DIRECTORY_TYPES:
            return ALL
        if rtype == "Patient":
            return f"({alias}.source, {alias}.rid) IN ({allowed})"
        if rtype == "Group":
            return NOTHING
        if rtype == "Coverage":
            return f"EXISTS (SELECT 1 FROM f_coverage x WHERE x.rkey = {alias}.rkey AND (x.source, x.pid) IN ({allowed}))"
        if rtype == "Observation":
            return (
                f"EXISTS (SELECT 1 FROM f_observation x WHERE x.rkey = {alias}.rkey "
                f"AND (x.source, x.pid) IN ({allowed}))"
            )
        if rtype == "MeasureReport":
            params["tn_report_source"] = self.report_source
            subject_pid = "substr(f.subject, 9)"
            is_patient = "substr(f.subject, 1, 8) = 'Patient/'"
            foreign = f"""
                SELECT 1 FROM f_patient q JOIN resources rq ON rq.rkey = q.rkey
                WHERE q.pid = {subject_pid} AND {self._visible("rq", as_of)}
                  AND (q.source, q.pid) NOT IN ({allowed})"""
            return f"""EXISTS (SELECT 1 FROM f_report f WHERE f.rkey = {alias}.rkey AND {is_patient} AND (
                (f.source, {subject_pid}) IN ({allowed})
                OR (f.source = :tn_report_source AND {subject_pid} IN (SELECT a.pid FROM ({allowed}) a)
                    AND NOT EXISTS ({foreign}))))"""
        return f"EXISTS (SELECT 1 FROM f_event x WHERE x.rkey = {alias}.rkey AND (x.source, x.pid) IN ({allowed}))"

    # -- evaluations ----------------------------------------------------------------------------
    def evaluation_scope(self) -> EvaluationScope:
        """The scope of an evaluation this caller asks for; 403 for roles that run none."""
        if self.role not in EVALUATING_ROLES:
            raise ForbiddenError(
                f"a client with role {self.role!r} runs no measure evaluations: evaluations combine every "
                "source's data about a child; EHRs get per-submission acknowledgements instead (docs/security.md)"
            )
        if self.role == "cco":
            return EvaluationScope(self.ccos)
        return EvaluationScope(None)

    def check_organization(self, cco: str) -> None:
        """``$care-gaps`` ``organization`` (and a flat export's ``cco``) must be one of a CCO caller's."""
        if self.role == "cco" and cco not in self.ccos:
            raise ForbiddenError(
                f"a CCO client asks only for its own CCO: organization {' or '.join(self.ccos)}, not {cco}"
            )

    def resolve_subject(
        self, store: Store, subject: str, source: str | None, window: Window, as_of: int
    ) -> str | None:
        """The source that names ``subject`` (``Patient/<id>``) for an evaluation over ``window``:
        unchanged for unrestricted callers; for a CCO caller one of the visible records' sources
        (so another tenant's record with the same id never enters), 404 when it sees none (as for
        an unknown id) and 400 naming the sources it sees when they are different children."""
        if self.unrestricted:
            return source
        _rtype, _, pid = subject.partition("/")
        params: dict[str, Any] = {"tn_pid": pid}
        predicate = self.resources("Patient", window, as_of=as_of, alias="r")
        params.update(predicate.params)
        params.setdefault("tn_as_of", as_of)
        sql = (
            f"SELECT r.source, {person_key('p')} FROM f_patient p JOIN resources r ON r.rkey = p.rkey "
            f"WHERE p.pid = :tn_pid AND {self._visible('r', as_of)}{predicate.and_sql()}"
        )
        with store.read() as conn:
            rows: list[tuple[str, str]] = sorted(
                {(str(s), str(person)) for s, person in conn.execute(text(sql), params)}
            )
        if source is not None:
            rows = [row for row in rows if row[0] == source]
        if not rows:
            where = f" from source {source!r}" if source else ""
            raise NotFoundError(f"no {subject}{where} in the store")
        if len({person for _s, person in rows}) > 1:
            sources = ", ".join(sorted({s for s, _p in rows}))
            raise UsageError(
                f"{subject} exists in several sources ({sources}); name one with the source parameter",
                location="source",
            )
        return rows[0][0]

    # -- jobs and operations ----------------------------------------------------------------------
    def check_job(self, job_id: str, owner: str | None) -> None:
        """Only the client that started a job (or OHA, an administrator, or anyone with
        authorisation off) may poll, cancel or re-run it; others get the 404 of an unknown job."""
        if self.role in JOB_ROLES or (owner is not None and owner == self.client_id):
            return
        raise NotFoundError(f"no job {job_id}")

    def check_metrics(self) -> None:
        if self.role not in METRICS_ROLES:
            raise ForbiddenError(
                "/metrics is for the operators: an oha or admin client, or the scrape token "
                "(FHIR_ADAPTER_METRICS_TOKEN)"
            )


__all__ = [
    "ALL",
    "DIRECTORY_TYPES",
    "EVALUATING_ROLES",
    "JOB_ROLES",
    "METRICS_ROLES",
    "NOTHING",
    "REPORT_TYPES",
    "UNRESTRICTED_ROLES",
    "EvaluationScope",
    "Policy",
    "Predicate",
    "Principal",
    "Window",
    "is_reserved_source",
    "tenant_report_source",
]
