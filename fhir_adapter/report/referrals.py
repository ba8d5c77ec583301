"""The SE referral loop (spec §4 "Referral loop"): is each social-emotional referral followed by a
qualifying service within a window?

**Which ServiceRequests are SE referrals** (project rule [A], ``mappings/referral-loop.toml``): a
ServiceRequest whose ``code`` or ``category`` is in ``mappings/se-referral-codes.csv`` (SNOMED CT
referral procedures, status ``candidate``) or in one of the measure's procedure value sets named
in the loop file (interventions, assessments), or whose ``reasonCode`` is in one of its diagnosis
value sets (the qualifying SE diagnoses). Codes are matched as the engine matches them (aliases,
normalisation, ``match`` and validity dates, :class:`~fhir_adapter.terminology.codes.Terminology`).
Requests in an ignored status (``draft``, ``entered-in-error``) or intent (``proposal``,
``option``) are not referrals.

**Status** of a referral dated *d* (its ``authoredOn`` local day; the first day a partial date can
mean), as of *today*, with a window of *w* days:

- ``closed``: the same child (person key, so any source: a claim closes an EHR referral) had a
  service meeting the measure's closing group's numerator criterion (``all-enrolled`` for the
  issue-focused measure: procedure **and** qualifying diagnosis; ``any`` for reach: any SE
  service) on a day in ``[d, d + w]``, whatever the child's age or enrollment
  (:func:`fhir_adapter.store.referrals.qualifying_service_days`);
- otherwise ``cancelled``: the request's status is a cancelled one (``revoked``) or the latest
  Task tracking it (FHIR R4 Task ``focus``/``basedOn``; latest by ``authoredOn``/``lastModified``,
  then by arrival) is ``cancelled``, ``rejected`` or ``failed``;
- otherwise ``overdue`` when *today* > *d + w*, else ``open``;
- ``undated``: no usable ``authoredOn`` (not placed in any period; listed for data quality).

A service closes a referral even when the request was revoked (the outcome that matters
happened). A ``completed`` request without a service stays open or overdue: the loop is closed
by a service we can see, not by the sender's status (both statuses are listed).

Counts per CCO and clinic: the CCO is the child's attribution on the period's last day (the
evaluation's), else the CCO of its member assignment; the clinic is the child's assigned clinic
on that day (:func:`fhir_adapter.store.providers.assignments`), ``unassigned`` without one.
``closed_share`` = closed / (closed + open + overdue), absent when that is 0.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from fhir_adapter import workflow
from fhir_adapter.errors import MappingsError
from fhir_adapter.fhir.dates import from_micros, to_micros
from fhir_adapter.ingest.runner import Clock, utc_now
from fhir_adapter.measure.spec import (
    CODE_STATUSES,
    CodeRow,
    Mappings,
    MeasureSpec,
    Provenance,
    SourceMode,
    ValueSet,
)
from fhir_adapter.report.params import provenance, read_csv, read_toml, text_list
from fhir_adapter.settings import Settings
from fhir_adapter.store.db import Store
from fhir_adapter.store.providers import Assignment, assignments
from fhir_adapter.store.referrals import (
    RequestFact,
    ServiceDay,
    TaskFact,
    qualifying_service_days,
    service_requests,
)
from fhir_adapter.terminology.codes import Terminology

LOOP_FILE = "referral-loop.toml"
REFERRAL_CODES_FILE = "se-referral-codes.csv"
REFERRAL_CODES = "se-referral-codes"
STATUSES = ("closed", "open", "overdue", "cancelled", "undated")
UNASSIGNED = "unassigned"
UNKNOWN_CCO = "unknown"
ALL = "all"
#: FHIR R4 value sets ``request-status``, ``request-intent`` and ``task-status``.
REQUEST_STATUSES = ("draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown")
REQUEST_INTENTS = (
    "proposal", "plan", "directive", "order", "original-order", "reflex-order", "filler-order",
    "instance-order", "option",
)  # fmt: skip
TASK_STATUSES = (
    "draft", "requested", "received", "accepted", "rejected", "ready", "cancelled", "in-progress", "on-hold",
    "failed", "completed", "entered-in-error",
)  # fmt: skip


# -- parameters ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoopConfig:
    """``mappings/referral-loop.toml``."""

    window_days: int
    window_provenance: Provenance
    procedure_valuesets: tuple[str, ...]
    diagnosis_valuesets: tuple[str, ...]
    ignored_request_statuses: tuple[str, ...]
    ignored_intents: tuple[str, ...]
    cancelled_request_statuses: tuple[str, ...]
    referral_provenance: Provenance
    cancelled_task_statuses: tuple[str, ...]
    ignored_task_statuses: tuple[str, ...]
    task_provenance: Provenance
    #: measure id -> the group whose numerator criterion closes a loop (default: the first group)
    closing_groups: Mapping[str, str] = field(default_factory=dict)
    closing_provenance: Provenance | None = None

    def closing_group(self, spec: MeasureSpec) -> str:
        group = self.closing_groups.get(spec.id, spec.groups[0].id)
        if group not in [g.id for g in spec.groups]:
            raise MappingsError(f"{LOOP_FILE}: measure {spec.id} {spec.year} has no group {group!r}")
        return group


def load_loop_config(root: Path) -> LoopConfig:
    """Read ``<root>/referral-loop.toml`` strictly (errors at ``file:line``)."""
    top = read_toml(root / LOOP_FILE)
    top.keys(("loop", "referrals", "tasks"), ("closing",))
    loop = top.table("loop")
    loop.keys(("window_days", "status", "source"))
    ref = top.table("referrals")
    ref.keys(
        ("procedure_valuesets", "diagnosis_valuesets", "cancelled_statuses", "status", "source"),
        ("ignored_statuses", "ignored_intents"),
    )
    task = top.table("tasks")
    task.keys(("cancelled_statuses", "status", "source"), ("ignored_statuses",))
    closing_groups: dict[str, str] = {}
    closing_provenance = None
    if "closing" in top.data:
        closing = top.table("closing")
        closing.keys(("status", "source"), ("groups",))
        closing_provenance = provenance(closing)
        if "groups" in closing.data:
            groups = closing.table("groups")
            for measure_id in groups.data:
                closing_groups[measure_id] = groups.slug(measure_id)
    return LoopConfig(
        window_days=loop.get_int("window_days", 0),
        window_provenance=provenance(loop),
        procedure_valuesets=text_list(ref, "procedure_valuesets"),
        diagnosis_valuesets=text_list(ref, "diagnosis_valuesets"),
        ignored_request_statuses=text_list(ref, "ignored_statuses", allowed=REQUEST_STATUSES),
        ignored_intents=text_list(ref, "ignored_intents", allowed=REQUEST_INTENTS),
        cancelled_request_statuses=text_list(ref, "cancelled_statuses", allowed=REQUEST_STATUSES),
        referral_provenance=provenance(ref),
        cancelled_task_statuses=text_list(task, "cancelled_statuses", allowed=TASK_STATUSES),
        ignored_task_statuses=text_list(task, "ignored_statuses", allowed=TASK_STATUSES),
        task_provenance=provenance(task),
        closing_groups=closing_groups,
        closing_provenance=closing_provenance,
    )


def load_referral_codes(root: Path, mappings: Mappings) -> ValueSet:
    """``<root>/se-referral-codes.csv`` (``system,code,display,status,source``) as a value set of
    exact codes; systems must be known to ``mappings`` (``code-systems.csv`` or an alias)."""
    path = root / REFERRAL_CODES_FILE
    term = Terminology(mappings)
    rows: list[CodeRow] = []
    seen: dict[tuple[str, str], int] = {}
    for row in read_csv(path, ("system", "code", "display", "status", "source")):
        raw = row.required("system")
        system = term.canonical_system(raw)
        if system is None:
            raise row.error(f"unknown code system {raw!r} (not in code-systems.csv or system-aliases.csv)")
        code = term.normalise_code(system, row.required("code"))
        if (system, code) in seen:
            raise row.error(f"duplicate code {code!r} (first on line {seen[(system, code)]})")
        seen[(system, code)] = row.line
        rows.append(
            CodeRow(
                system, code, "exact", None, None, row["display"], row.provenance(CODE_STATUSES), row.location
            )
        )
    return ValueSet(REFERRAL_CODES, "SE referral procedures (candidate)", tuple(rows), str(path))


# -- which requests are SE referrals ------------------------------------------------------------


class ReferralMatcher:
    """Tells SE referrals from other ServiceRequests (see the module docstring)."""

    def __init__(
        self, spec: MeasureSpec, config: LoopConfig, codes: ValueSet, terminology: Terminology
    ) -> None:
        self.config = config
        self.terminology = terminology
        self.proc_sets = {REFERRAL_CODES, *(n for n in config.procedure_valuesets if n in spec.valuesets)}
        self.dx_sets = {n for n in config.diagnosis_valuesets if n in spec.valuesets}
        self.valuesets = {
            n: spec.valuesets[n] for n in (self.proc_sets | self.dx_sets) if n != REFERRAL_CODES
        }
        self.valuesets[REFERRAL_CODES] = codes

    def reasons(self, requests: Sequence[RequestFact]) -> dict[tuple[str, str], str]:
        """``(source, id)`` -> why it is an SE referral (``referral-code``, ``procedure`` or
        ``diagnosis``) for the SE referrals among ``requests`` (ignored statuses and intents
        excluded)."""
        pairs = {(system, code) for r in requests for _role, system, code in r.codes}
        matches: dict[tuple[str, str], list[tuple[str, date | None, date | None]]] = defaultdict(list)
        for m in self.terminology.expand(sorted(pairs), self.valuesets):
            matches[(m.raw_system, m.raw_code)].append((m.valueset, m.valid_from, m.valid_to))
        out: dict[tuple[str, str], str] = {}
        for r in requests:
            if r.status in self.config.ignored_request_statuses or r.intent in self.config.ignored_intents:
                continue
            found = self._reason(r, matches)
            if found is not None:
                out[(r.source, r.rid)] = found
        return out

    def _reason(
        self, r: RequestFact, matches: Mapping[tuple[str, str], list[tuple[str, date | None, date | None]]]
    ) -> str | None:
        found: set[str] = set()
        for role, system, code in r.codes:
            for valueset, valid_from, valid_to in matches.get((system, code), ()):
                if r.day is not None and (
                    (valid_from is not None and r.day < valid_from)
                    or (valid_to is not None and r.day > valid_to)
                ):
                    continue
                if role == "proc" and valueset == REFERRAL_CODES:
                    found.add("referral-code")
                elif role == "proc" and valueset in self.proc_sets:
                    found.add("procedure")
                elif role == "dx" and valueset in self.dx_sets:
                    found.add("diagnosis")
        return next(
            (reason for reason in ("referral-code", "procedure", "diagnosis") if reason in found), None
        )


# -- the loop ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoopStatus:
    status: str
    window_end: date | None
    closing: ServiceDay | None
    task: TaskFact | None


def latest_task(tasks: Iterable[TaskFact], ignored: Iterable[str]) -> TaskFact | None:
    """The Task that speaks for a request now: the latest by day (undated first), then arrival."""
    skip = set(ignored)
    ordered = sorted(
        (t for t in tasks if t.status not in skip), key=lambda t: (t.day or date.min, t.ingested_at, t.rid)
    )
    return ordered[-1] if ordered else None


def loop_status(
    request: RequestFact, services: Sequence[ServiceDay], config: LoopConfig, today: date
) -> LoopStatus:
    """The status of one SE referral (module docstring); ``services`` are the child's, sorted."""
    task = latest_task(request.tasks, config.ignored_task_statuses)
    if request.day is None:
        return LoopStatus("undated", None, None, task)
    window_end = request.day + timedelta(days=config.window_days)
    closing = next((s for s in services if request.day <= s.day <= window_end), None)
    if closing is not None:
        return LoopStatus("closed", window_end, closing, task)
    if request.status in config.cancelled_request_statuses or (
        task is not None and task.status in config.cancelled_task_statuses
    ):
        return LoopStatus("cancelled", window_end, None, task)
    return LoopStatus("overdue" if today > window_end else "open", window_end, None, task)


LIST_COLUMNS = (
    "member_id", "patient", "patient_source", "cco", "clinic", "referral", "referral_source", "referral_date",
    "status", "window_end", "days_since_referral", "closing_service", "closing_source", "closing_date",
    "days_to_service", "request_status", "task", "task_status", "identified_by",
)  # fmt: skip
COUNT_COLUMNS = ("cco", "clinic", "referrals", *STATUSES, "closed_share")


def person_of(request: RequestFact) -> str:
    """The request's child as the engine keys it (``u:<source>/<id>`` when the Patient is absent)."""
    return request.person or f"u:{request.source}/{request.pid}"


def loop_rows(
    requests: Sequence[RequestFact],
    reasons: Mapping[tuple[str, str], str],
    services: Mapping[str, Sequence[ServiceDay]],
    *,
    config: LoopConfig,
    today: date,
    cco_of: Callable[[str], str | None],
    clinic_of: Callable[[str], str | None],
) -> list[dict[str, Any]]:
    """One row per SE referral (``reasons`` names them), sorted by CCO, clinic, date and id."""
    rows: list[dict[str, Any]] = []
    for r in requests:
        reason = reasons.get((r.source, r.rid))
        if reason is None:
            continue
        person = person_of(r)
        st = loop_status(r, services.get(person, ()), config, today)
        rows.append(
            {
                "member_id": r.member_id,
                "patient": f"Patient/{r.pid}" if r.pid else None,
                "patient_source": r.source,
                "cco": cco_of(person) or UNKNOWN_CCO,
                "clinic": clinic_of(person) or UNASSIGNED,
                "referral": f"ServiceRequest/{r.rid}",
                "referral_source": r.source,
                "referral_date": r.day.isoformat() if r.day else None,
                "status": st.status,
                "window_end": st.window_end.isoformat() if st.window_end else None,
                "days_since_referral": (today - r.day).days if r.day else None,
                "closing_service": f"{st.closing.rtype}/{st.closing.rid}" if st.closing else None,
                "closing_source": st.closing.source if st.closing else None,
                "closing_date": st.closing.day.isoformat() if st.closing else None,
                "days_to_service": (st.closing.day - r.day).days if st.closing and r.day else None,
                "request_status": r.status,
                "task": f"Task/{st.task.rid}" if st.task else None,
                "task_status": st.task.status if st.task else None,
                "identified_by": reason,
            }
        )
    rows.sort(
        key=lambda x: (x["cco"], x["clinic"], x["referral_date"] or "", x["referral_source"], x["referral"])
    )
    return rows


def loop_counts(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Counts per (CCO, clinic), per CCO (clinic ``all``) and over all (``all``, ``all``)."""
    buckets: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: dict.fromkeys(STATUSES, 0))
    for row in rows:
        for key in ((row["cco"], row["clinic"]), (row["cco"], ALL), (ALL, ALL)):
            buckets[key][row["status"]] += 1
    out = []
    for (cco, clinic), counts in sorted(buckets.items(), key=lambda kv: (kv[0][0] == ALL, kv[0][0],
                                                                          kv[0][1] == ALL, kv[0][1])):  # fmt: skip
        base = counts["closed"] + counts["open"] + counts["overdue"]
        out.append(
            {
                "cco": cco,
                "clinic": clinic,
                "referrals": sum(counts.values()),
                **counts,
                "closed_share": round(counts["closed"] / base, 6) if base else None,
            }
        )
    return out


@dataclass(frozen=True)
class ReferralLoop:
    """The referral loop of one measure and period, as of a data cut."""

    measure: str
    period_start: date
    period_end: date
    sources: str
    as_of: int
    today: date
    closing_group: str
    config: LoopConfig
    rows: list[dict[str, Any]]
    counts: list[dict[str, Any]]

    def meta(self) -> dict[str, Any]:
        return {
            "measure": self.measure,
            "period_start": self.period_start.isoformat(),
            "period_end": self.period_end.isoformat(),
            "sources": self.sources,
            "data_cut": from_micros(self.as_of).isoformat(),
            "today": self.today.isoformat(),
            "closing_group": self.closing_group,
            "window_days": self.config.window_days,
            "window_status": self.config.window_provenance.status,
            "window_source": self.config.window_provenance.source,
        }


def run_referral_loop(
    settings: Settings,
    store: Store,
    measure: str,
    period_start: date,
    period_end: date,
    *,
    sources: SourceMode = "all",
    cco: str | None = None,
    today: date | None = None,
    mappings: Mappings | None = None,
    clock: Clock = utc_now,
) -> ReferralLoop:
    """SE referrals authored in the period and their loop status as of now (``clock``); ``today``
    (default: the data cut's local date) decides open versus overdue."""
    mappings = workflow.report_mappings(settings, period_start, period_end, mappings=mappings, cco=cco)
    config = load_loop_config(settings.mappings_dir)
    codes = load_referral_codes(settings.mappings_dir, mappings)
    now = clock()
    as_of = to_micros(now)
    today = today or now.astimezone(settings.tz).date()
    ev = workflow.run_evaluation(
        settings, store, workflow.EvaluationRequest(measure, period_start, period_end, sources, as_of=now),
        evidence=False, mappings=mappings,
    )  # fmt: skip
    group = config.closing_group(ev.spec)
    requests = service_requests(store, as_of, period_start, period_end)
    reasons = ReferralMatcher(ev.spec, config, codes, Terminology(mappings)).reasons(requests)
    referred = [r for r in requests if (r.source, r.rid) in reasons]
    dated = [r.day for r in referred if r.day is not None]
    services: dict[str, list[ServiceDay]] = {}
    if dated:
        services = qualifying_service_days(
            store, mappings, ev.spec, group, {person_of(r) for r in referred}, min(dated),
            max(dated) + timedelta(days=config.window_days), as_of, sources,
        )  # fmt: skip
    attributed = {c.person: c.cco for c in ev.children if c.cco}
    assigned: Mapping[str, Assignment] = assignments(store, as_of, period_end, ccos=mappings.ccos)

    def cco_of(person: str) -> str | None:
        found = assigned.get(person)
        return attributed.get(person) or (found.cco if found else None)

    def clinic_of(person: str) -> str | None:
        found = assigned.get(person)
        return found.clinic if found else None

    rows = loop_rows(
        referred, reasons, services, config=config, today=today, cco_of=cco_of, clinic_of=clinic_of
    )
    if cco is not None:
        rows = [r for r in rows if r["cco"] == cco]
    return ReferralLoop(
        measure, period_start, period_end, sources, as_of, today, group, config, rows, loop_counts(rows)
    )


__all__ = [
    "COUNT_COLUMNS",
    "LIST_COLUMNS",
    "LOOP_FILE",
    "REFERRAL_CODES_FILE",
    "STATUSES",
    "LoopConfig",
    "LoopStatus",
    "ReferralLoop",
    "ReferralMatcher",
    "latest_task",
    "load_loop_config",
    "load_referral_codes",
    "loop_counts",
    "loop_rows",
    "loop_status",
    "run_referral_loop",
]
