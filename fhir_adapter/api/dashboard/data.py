"""The dashboard's panels as data: tables (shown, and downloadable as CSV and Parquet), charts and
headline figures, computed from real evaluation results by the report library.

**Where results come from.** The *data cut* is the time of the store's latest change (newest
resource version, ingest issue or extract load, :func:`data_cut`): every result is computed as of
it, so it is the same until new data arrives, and it is part of every cache key. A period's
per-child results come from a persisted run (:mod:`fhir_adapter.store.runs`, e.g. written by
``fhir-adapter demo`` or ``evaluate --persist``) of the same measure version and mappings whose
data cut is not older than the store's, else from an evaluation, once per (measure version,
mappings, period, source mode, data cut) per process (:class:`~fhir_adapter.api.dashboard.work.Work`).
The selected period in the selected source mode is evaluated with evidence (provider capacity needs
it); referral loop, capacity and data quality reuse that one evaluation.

**Adapters** (the report functions evaluate by themselves; these take the dashboard's evaluation
instead, with the same steps): :func:`referral_loop` is
:func:`fhir_adapter.report.referrals.run_referral_loop`, :func:`capacity_inputs` +
:func:`~fhir_adapter.report.capacity.capacity_tables` is
:func:`~fhir_adapter.report.capacity.run_capacity`, :func:`trend_plan` + :func:`compose_trend` is
:func:`~fhir_adapter.report.trend.run_trend` (sharing the period cache, so the selected year's own
results serve its rolling-12 point). The tests compare each with the library function.

**Tenancy** (:mod:`fhir_adapter.auth.policy`): the selection's CCO is one the caller may see
(:mod:`~fhir_adapter.api.dashboard.selection`); every table keeps only that CCO's rows, and only a
caller who sees every CCO gets statewide rows, the per-source data-quality table (it names every
feed) and statewide reconciliations.

**Small cells** (panel "Rates by group of children"): the strata are those of the DEQM summary
MeasureReport (:func:`fhir_adapter.report.measurereport.summary_report`) of the selected children,
masked by :func:`fhir_adapter.report.suppression.suppress_report` (threshold
``Settings.suppression_threshold``, else 11) with complementary suppression. The other panels are
working lists of the caller's own members (gap list, referrals) and are not suppressed.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Literal

import orjson
from sqlalchemy import text

from fhir_adapter import workflow
from fhir_adapter.api.dashboard.selection import SOURCE_MODES, Selection
from fhir_adapter.api.dashboard.work import Work, wait_until
from fhir_adapter.auth.policy import EvaluationScope
from fhir_adapter.errors import AdapterError, ForbiddenError, UsageError
from fhir_adapter.fhir.dates import from_micros, iso_instant
from fhir_adapter.measure.spec import Mappings, MeasureSpec, SourceMode
from fhir_adapter.report import capacity as cap
from fhir_adapter.report import dataquality as dq
from fhir_adapter.report import referrals as ref
from fhir_adapter.report import svg
from fhir_adapter.report import trend as tr
from fhir_adapter.report.dual import excel_csv
from fhir_adapter.report.measurereport import summary_report
from fhir_adapter.report.suppression import DEFAULT_THRESHOLD, extension_url, is_masked, suppress_report
from fhir_adapter.report.targets import Target, load_targets
from fhir_adapter.settings import Settings
from fhir_adapter.store.capacity import event_providers, provider_records
from fhir_adapter.store.db import Store
from fhir_adapter.store.evaluate import ChildResult, Evaluation, evaluate
from fhir_adapter.store.providers import Assignment, assignments, provider_directory
from fhir_adapter.store.referrals import ServiceDay, qualifying_service_days, service_requests
from fhir_adapter.store.runs import find_run, run_results
from fhir_adapter.terminology.codes import Terminology

log = logging.getLogger("fhir_adapter.dashboard")

#: ``longtext`` wraps on the page; the others keep a cell on one line
ColumnKind = Literal["text", "longtext", "int", "rate", "number", "bool"]
#: Rows of a long table shown on the page (the download has them all).
SHOWN_ROWS = 50
STATEWIDE_LABEL = "statewide"
#: Data-quality checks computed over every child and service of the evaluation, not per CCO.
STOREWIDE_CHECKS = frozenset(
    {"unknown-code-system", "services-with-ambiguous-partial-dates", "claims-with-undated-lines"}
)
RECONCILIATION_FILE = "summary.json"
#: Trend periods wait behind the other panels' computations.
TREND_PRIORITY = 10


# -- tables ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    kind: ColumnKind = "text"
    #: drawn on the page (downloads have every column)
    page: bool = True


_WORDS = {"cco": "CCO", "fips": "FIPS", "npi": "NPI", "pcp": "PCP", "id": "id"}


def label(key: str) -> str:
    """``children_in_denominator`` -> ``Children in denominator``, ``cco`` -> ``CCO``."""
    words = [_WORDS.get(w, w) for w in key.split("_")]
    first = words[0] if words[0] in _WORDS.values() else words[0].capitalize()
    return " ".join([first, *words[1:]])


@dataclass
class TableData:
    """One table: ``name`` is its download name (``/dashboard/table/<name>.csv``)."""

    name: str
    caption: str
    columns: tuple[Column, ...]
    rows: list[dict[str, Any]]
    #: the column whose cells head their row (``<th scope="row">``)
    row_header: str | None = None
    #: at most this many rows on the page
    shown: int | None = None
    #: only downloadable, not drawn as a table (e.g. the long form of the strata tables)
    download_only: bool = False
    #: a two-level header: (label, number of columns) for consecutive columns from the first; a
    #: ``None`` label leaves its columns with a one-level header
    column_groups: tuple[tuple[str | None, int], ...] = ()
    #: drawn folded (``<details>``): secondary lists the page need not show at once
    collapsed: bool = False


def csv_bytes(table: TableData) -> bytes:
    """CSV that Excel opens correctly (UTF-8 with a BOM, CRLF), as ``workflow.gaps_csv``."""
    keys = [c.key for c in table.columns]
    return excel_csv(keys, ({k: _csv_value(row.get(k)) for k in keys} for row in table.rows))


def _csv_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6f}".rstrip("0").rstrip(".")
    return value


def parquet_bytes(table: TableData) -> bytes:
    """The table as Parquet, one typed column per table column (nulls where a value is absent)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {
        "text": pa.string(),
        "longtext": pa.string(),
        "int": pa.int64(),
        "rate": pa.float64(),
        "number": pa.float64(),
        "bool": pa.bool_(),
    }
    schema = pa.schema([pa.field(c.key, types[c.kind]) for c in table.columns])
    data = {c.key: [_typed(row.get(c.key), c.kind) for row in table.rows] for c in table.columns}
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pydict(data, schema=schema), buffer)
    return buffer.getvalue()


def _typed(value: Any, kind: ColumnKind) -> Any:
    if value is None or value == "":
        return None
    if kind in ("text", "longtext"):
        return str(value)
    if kind == "int":
        return int(value)
    if kind in ("rate", "number"):
        return float(value)
    return bool(value)


# -- panels ---------------------------------------------------------------------------------------


@dataclass
class Panel:
    id: str
    title: str
    #: ready | pending | error
    status: str = "ready"
    message: str = ""
    intro: str = ""
    #: (term, value) headline figures
    facts: list[tuple[str, str]] = field(default_factory=list)
    tables: list[TableData] = field(default_factory=list)
    #: SVG markup from :mod:`fhir_adapter.report.svg`, placed before the table of the same index
    charts: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: gap-list filter choices: clinics, groups (id, title)
    clinics: list[str] = field(default_factory=list)
    groups: list[tuple[str, str]] = field(default_factory=list)


PANELS: tuple[tuple[str, str], ...] = (
    ("rates", "Rates"),
    ("strata", "Rates by group of children"),
    ("trend", "Trend, benchmark and improvement target"),
    ("gaps", "Gap list"),
    ("referrals", "Referral loop"),
    ("capacity", "Provider capacity"),
    ("reconciliation", "Reconciliation with OHA"),
    ("quality", "Data quality"),
)
PANEL_TITLES = dict(PANELS)


# -- store --------------------------------------------------------------------------------------


def data_cut(store: Store) -> int:
    """The time (µs) of the store's latest change that results depend on: the newest resource
    version (new, changed or deleted), ingest issue or extract load; 0 for an empty store."""
    sql = (
        "SELECT (SELECT MAX(ingested_at) FROM resources), (SELECT MAX(at) FROM ingest_issues), "
        "(SELECT MAX(last_loaded_at) FROM source_status)"
    )
    with store.read() as conn:
        row = conn.execute(text(sql)).one()
    return max((int(v) for v in row if v is not None), default=0)


@dataclass(frozen=True)
class PeriodResult:
    """Per-child outcomes of one measure version, period and source mode."""

    spec: MeasureSpec
    start: date
    end: date
    sources: SourceMode
    #: ``persisted`` (read from a run) or ``computed``
    origin: str
    run_id: str | None
    as_of: int
    outcomes: list[tr.Outcome]

    def rates(self) -> list[tr.RateRow]:
        return tr.rates(self.outcomes, [g.id for g in self.spec.groups])


# -- adapters (the report workflows, on the dashboard's evaluation) ---------------------------------


def referral_loop(
    settings: Settings, store: Store, mappings: Mappings, ev: Evaluation, today: date
) -> ref.ReferralLoop:
    """:func:`fhir_adapter.report.referrals.run_referral_loop` on an existing evaluation."""
    config = ref.load_loop_config(settings.mappings_dir)
    codes = ref.load_referral_codes(settings.mappings_dir, mappings)
    group = config.closing_group(ev.spec)
    requests = service_requests(store, ev.as_of, ev.period_start, ev.period_end)
    reasons = ref.ReferralMatcher(ev.spec, config, codes, Terminology(mappings)).reasons(requests)
    referred = [r for r in requests if (r.source, r.rid) in reasons]
    dated = [r.day for r in referred if r.day is not None]
    services: dict[str, list[ServiceDay]] = {}
    if dated:
        services = qualifying_service_days(
            store, mappings, ev.spec, group, {ref.person_of(r) for r in referred}, min(dated),
            max(dated) + timedelta(days=config.window_days), ev.as_of, ev.sources,
        )  # fmt: skip
    attributed = {c.person: c.cco for c in ev.children if c.cco}
    assigned: Mapping[str, Assignment] = assignments(store, ev.as_of, ev.period_end, ccos=mappings.ccos)

    def cco_of(person: str) -> str | None:
        found = assigned.get(person)
        return attributed.get(person) or (found.cco if found else None)

    def clinic_of(person: str) -> str | None:
        found = assigned.get(person)
        return found.clinic if found else None

    rows = ref.loop_rows(
        referred, reasons, services, config=config, today=today, cco_of=cco_of, clinic_of=clinic_of
    )
    return ref.ReferralLoop(
        ev.spec.id, ev.period_start, ev.period_end, ev.sources, ev.as_of, today, group, config, rows,
        ref.loop_counts(rows),
    )  # fmt: skip


@dataclass(frozen=True)
class CapacityInputs:
    ev: Evaluation
    group: str
    tokens: Mapping[tuple[str, str, str, int], Sequence[str]]
    resolver: cap.Resolver
    counties: cap.Counties

    def tables(
        self, cco: str | None
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
        return cap.capacity_tables(self.ev, self.group, self.tokens, self.resolver, self.counties, cco=cco)


def capacity_inputs(settings: Settings, store: Store, mappings: Mappings, ev: Evaluation) -> CapacityInputs:
    """What :func:`fhir_adapter.report.capacity.run_capacity` gathers, for an evaluation with evidence."""
    counties = cap.load_counties(settings.mappings_dir)
    group = ev.spec.groups[0].id
    keys = {
        (e.source, e.rtype, e.rid, e.version)
        for items in ev.evidence.values()
        for e in items
        if e.group == group and e.population == "numerator" and e.rtype in cap.SERVICE_TYPES
    }
    resolver = cap.Resolver(
        provider_records(store, ev.as_of), provider_directory(store, ev.as_of, ccos=mappings.ccos)
    )
    return CapacityInputs(ev, group, event_providers(store, keys), resolver, counties)


@dataclass(frozen=True)
class TrendPlan:
    """The periods of a year's trend and, per target of that year, its current and baseline period
    (both with the target year's measure version), as :func:`fhir_adapter.report.trend.run_trend`."""

    periods: tuple[tuple[tr.TrendPeriod, MeasureSpec], ...]
    targets: tuple[tuple[Target, tr.TrendPeriod, tr.TrendPeriod, MeasureSpec], ...]


def trend_plan(settings: Settings, mappings: Mappings, measure: str, year: int) -> TrendPlan:
    first, last = date(year, 1, 1), date(year, 12, 31)
    periods = tuple(
        (p, workflow.measure_spec(mappings, measure, p.end)) for p in tr.trend_periods(first, last)
    )
    ends = tr.quarter_ends(first, last)
    targets = []
    for target in (t for t in load_targets(settings.mappings_dir, measure, mappings) if t.year == year):
        if not ends:
            continue
        spec = workflow.measure_spec(mappings, measure, last)
        targets.append((target, tr.rolling_year(ends[-1]), tr.rolling_year(date(year - 1, 12, 31)), spec))
    return TrendPlan(periods, tuple(targets))


def period_rates(result: PeriodResult, period: tr.TrendPeriod) -> tr.PeriodRates:
    return tr.PeriodRates(
        period, result.spec.version, result.origin, result.run_id, result.as_of, result.rates()
    )


@dataclass(frozen=True)
class TrendResult:
    periods: list[tr.PeriodRates]
    targets: list[dict[str, Any]]


def compose_trend(plan: TrendPlan, period_results: Sequence[PeriodResult], target_results: Sequence[
    tuple[PeriodResult, PeriodResult]
]) -> TrendResult:  # fmt: skip
    """The trend's period rates and target rows (every CCO and ``all``) from the plan's results."""
    periods = [period_rates(r, p) for (p, _spec), r in zip(plan.periods, period_results, strict=True)]
    targets: list[dict[str, Any]] = []
    for (target, current, baseline, _spec), (now, before) in zip(plan.targets, target_results, strict=True):
        targets.extend(tr.target_rows(target, period_rates(now, current), period_rates(before, baseline)))
    return TrendResult(periods, targets)


def latest_reconciliation(
    folder: Path | None, measure: str, allowed: Sequence[str] | None, cco: str | None
) -> tuple[Path, dict[str, Any]] | None:
    """The newest ``summary.json`` of ``fhir-adapter reconcile --out-dir`` under ``folder`` (the
    folder itself or a subfolder) for ``measure`` that the caller may see (``allowed`` ``None``:
    every one; else only those of its CCOs) and that matches the selected CCO (``None``: any)."""
    if folder is None or not folder.is_dir():
        return None
    found: list[tuple[float, Path, dict[str, Any]]] = []
    for path in [folder / RECONCILIATION_FILE, *sorted(folder.glob(f"*/{RECONCILIATION_FILE}"))]:
        if not path.is_file():
            continue
        try:
            data = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            log.warning("dashboard: %s is not a reconciliation summary (unreadable JSON)", path)
            continue
        if not isinstance(data, dict) or not {"measure", "populations", "ohaFile"} <= data.keys():
            continue
        if data.get("measure") != measure:
            continue
        owner = data.get("cco")
        if allowed is not None and owner not in allowed:
            continue
        if cco is not None and owner not in (cco, None):
            continue
        found.append((path.stat().st_mtime, path, data))
    if not found:
        return None
    _mtime, path, data = max(found, key=lambda x: (x[0], str(x[1])))
    return path, data


# -- the service ----------------------------------------------------------------------------------


@dataclass
class Context:
    """One request's selection and the futures of everything its panels need."""

    selection: Selection
    scope: EvaluationScope
    unrestricted: bool
    today: date
    cut: int
    spec: MeasureSpec
    evaluation: Future[Evaluation]
    results: dict[str, Future[PeriodResult]]
    assignments: Future[dict[str, Assignment]]
    trend_plan: TrendPlan | None
    trend: Future[TrendResult]
    referrals: Future[ref.ReferralLoop]
    capacity: Future[CapacityInputs]
    sources: Future[list[dq.SourceQuality]]
    strata: Future[dict[str, Any]]


def _failed(exc: BaseException) -> Future[Any]:
    future: Future[Any] = Future()
    future.set_exception(exc)
    return future


class Dashboard:
    """Starts and caches the computations of the dashboard's panels for one app."""

    def __init__(self, settings: Settings, store: Store, mappings: Callable[[], Mappings], *, work: Work,
                 wait_seconds: float = 5.0) -> None:  # fmt: skip
        self.settings = settings
        self.store = store
        self._mappings = mappings
        self.work = work
        self.wait_seconds = wait_seconds
        self._last_cut: int | None = None

    @property
    def mappings(self) -> Mappings:
        return self._mappings()

    # -- cached pieces -----------------------------------------------------------------------------
    def _ev_key(
        self, spec: MeasureSpec, start: date, end: date, sources: str, cut: int, evidence: bool
    ) -> tuple[Any, ...]:
        return ("ev", spec.id, spec.version, self.mappings.hash, start, end, sources, cut, evidence)

    def evaluation(
        self, spec: MeasureSpec, start: date, end: date, sources: SourceMode, cut: int, *, evidence: bool,
        priority: int = 0,
    ) -> Future[Evaluation]:  # fmt: skip
        mappings = self.mappings

        def run() -> Evaluation:
            started = time.perf_counter()
            ev = evaluate(self.store, mappings, spec, start, end, cut, sources, all_evidence=evidence)
            log.info(
                "dashboard evaluated %s %s..%s %s%s in %.1fs", spec.id, start, end, sources,
                " with evidence" if evidence else "", time.perf_counter() - started,
            )  # fmt: skip
            return ev

        return self.work.get(self._ev_key(spec, start, end, sources, cut, evidence), run, priority=priority)

    def period(
        self, spec: MeasureSpec, start: date, end: date, sources: SourceMode, cut: int, *, priority: int = 0
    ) -> Future[PeriodResult]:
        """A period's results: from a persisted run not older than the data cut, else from the
        evaluation with evidence when one is cached or running, else from an evaluation."""
        key = ("period", spec.id, spec.version, self.mappings.hash, start, end, sources, cut)
        found: Future[PeriodResult] | None = self.work.peek(key)
        if found is not None:
            return found
        run = find_run(
            self.store, spec.id, start, end, sources, measure_version=spec.version, mappings_hash=spec.hash
        )
        if run is not None and run.as_of >= cut:
            run_id, run_as_of = run.run_id, run.as_of

            def from_run() -> PeriodResult:
                rows = run_results(self.store, run_id)
                return PeriodResult(
                    spec, start, end, sources, "persisted", run_id, run_as_of, tr.outcomes_of_run(rows)
                )

            return self.work.get(key, from_run, priority=priority)
        ev = self.work.peek(self._ev_key(spec, start, end, sources, cut, True)) or self.evaluation(
            spec, start, end, sources, cut, evidence=False, priority=priority
        )

        def from_evaluation(done: Evaluation) -> PeriodResult:
            return PeriodResult(
                spec, start, end, sources, "computed", None, done.as_of, tr.outcomes_of_evaluation(done)
            )

        return self.work.get(key, from_evaluation, ev, priority=priority)

    # -- one request -----------------------------------------------------------------------------
    def start(
        self, selection: Selection, scope: EvaluationScope, *, unrestricted: bool, today: date
    ) -> Context:
        """Start (or find) every computation the selection's panels need."""
        if scope.restricted and selection.cco not in (scope.ccos or ()):
            # parse() offers a restricted caller only its own CCOs; never show it anything else
            raise ForbiddenError(f"a CCO client sees only its own CCOs ({', '.join(scope.ccos or ())})")
        mappings = self.mappings
        first, last = selection.period
        spec = workflow.measure_spec(mappings, selection.measure, last)
        cut = data_cut(self.store)
        if cut != self._last_cut:  # new data: results of older data cuts are of no more use
            self._last_cut = cut
            self.work.clear()
        key = (spec.id, spec.version, mappings.hash, first, last, selection.sources, cut)
        evaluation = self.evaluation(spec, first, last, selection.sources, cut, evidence=True)
        results: dict[str, Future[PeriodResult]] = {
            mode: self.period(spec, first, last, mode, cut) for mode in SOURCE_MODES
        }
        assigned = self.work.get(
            ("assignments", cut, last, mappings.hash),
            lambda: assignments(self.store, cut, last, ccos=mappings.ccos),
        )
        plan: TrendPlan | None
        try:
            plan = trend_plan(self.settings, mappings, selection.measure, selection.year)
        except AdapterError as exc:
            plan, trend = None, _failed(exc)
        else:
            chosen = plan
            parts = [
                self.period(s, p.start, p.end, selection.sources, cut, priority=TREND_PRIORITY)
                for p, s in plan.periods
            ]
            target_parts = [
                (self.period(s, now.start, now.end, selection.sources, cut, priority=TREND_PRIORITY),
                 self.period(s, before.start, before.end, selection.sources, cut, priority=TREND_PRIORITY))
                for _t, now, before, s in plan.targets
            ]  # fmt: skip
            flat = [f for pair in target_parts for f in pair]
            n = len(parts)
            trend = self.work.get(
                ("trend", spec.id, selection.year, mappings.hash, selection.sources, cut),
                lambda *done: compose_trend(
                    chosen,
                    done[:n],
                    [(done[n + 2 * i], done[n + 2 * i + 1]) for i in range(len(target_parts))],
                ),
                *parts,
                *flat,
            )
        referrals = self.work.get(
            ("referrals", *key, today),
            lambda ev: referral_loop(self.settings, self.store, mappings, ev, today),
            evaluation,
        )
        capacity = self.work.get(
            ("capacity", *key),
            lambda ev: capacity_inputs(self.settings, self.store, mappings, ev),
            evaluation,
        )
        strata = self.work.get(
            ("strata", *key, selection.cco, scope.ccos, self.settings.suppression_threshold),
            lambda ev: masked_summary(self.settings, ev, _select(ev, scope, selection.cco)),
            evaluation,
        )
        sources = self.work.get(
            ("sources", cut, mappings.hash), lambda: dq.source_quality(self.store, cut, mappings)
        )
        return Context(
            selection, scope, unrestricted, today, cut, spec, evaluation, results, assigned, plan, trend, referrals,
            capacity, sources, strata,
        )  # fmt: skip

    def needs(self, ctx: Context, panel: str) -> list[Future[Any]]:
        needs: dict[str, list[Future[Any]]] = {
            "rates": list(ctx.results.values()),
            "strata": [ctx.strata],
            "trend": [ctx.trend],
            "gaps": [ctx.evaluation, ctx.assignments],
            "referrals": [ctx.referrals],
            "capacity": [ctx.capacity],
            "reconciliation": [],
            "quality": [ctx.evaluation, ctx.sources],
        }
        return needs[panel]

    def panels(self, ctx: Context, wait_seconds: float | None = None) -> list[Panel]:
        """Every panel: built when its computations are done within the wait, else pending."""
        deadline = time.monotonic() + (self.wait_seconds if wait_seconds is None else wait_seconds)
        wait_until([f for pid, _t in PANELS for f in self.needs(ctx, pid)], deadline)
        return [self.panel(ctx, pid) for pid, _t in PANELS]

    def panel(self, ctx: Context, panel_id: str, wait_seconds: float = 0.0) -> Panel:
        needs = self.needs(ctx, panel_id)
        if wait_seconds:
            wait_until(needs, time.monotonic() + wait_seconds)
        title = PANEL_TITLES[panel_id]
        pending = [f for f in needs if not f.done()]
        if pending:
            done = len(needs) - len(pending)
            extra = f" ({done} of {len(needs)} parts ready)" if len(needs) > 1 else ""
            return Panel(
                panel_id, title, "pending", f"Still computing{extra}. Reload the page in a few seconds."
            )
        try:
            return BUILDERS[panel_id](self, ctx)
        except AdapterError as exc:
            return Panel(panel_id, title, "error", f"Cannot show this panel: {exc.message}")
        except Exception:
            log.exception("dashboard panel %s failed", panel_id)
            return Panel(
                panel_id, title, "error", "Cannot show this panel: internal error (see the server log)."
            )

    def table(self, ctx: Context, name: str, wait_seconds: float = 600.0) -> TableData:
        """One table by download name, waiting for its computations."""
        panel_id = TABLE_PANELS.get(name) or ("strata" if name.startswith("strata-") else None)
        if panel_id is None:
            known = ", ".join(sorted(TABLE_PANELS))
            raise UsageError(
                f"no dashboard table {name!r}; tables: {known}, strata-<stratifier>", location="name"
            )
        for future in self.needs(ctx, panel_id):
            if not future.done():
                wait_until([future], time.monotonic() + wait_seconds)
            future.result(timeout=0)  # raises the computation's error
        built = BUILDERS[panel_id](self, ctx)
        for table in built.tables:
            if table.name == name:
                return table
        raise UsageError(f"no table {name!r} for this selection", location="name")


# -- panel builders -------------------------------------------------------------------------------


def _pct(rate: float | None) -> str:
    return "no denominator" if rate is None else svg.percent(rate)


def _in_scope(ctx: Context, cco: str | None) -> bool:
    """A row of ``cco`` (``all``/``statewide``/``unknown`` included) may be shown for the selection."""
    chosen = ctx.selection.cco
    return chosen is None or cco == chosen


def _select(ev: Evaluation, scope: EvaluationScope, cco: str | None) -> list[ChildResult]:
    """The children the caller may see (``scope``) of the selected CCO (``None``: every one)."""
    return [c for c in scope.children(ev.children) if cco is None or c.cco == cco]


def _children(ctx: Context, ev: Evaluation) -> list[ChildResult]:
    return _select(ev, ctx.scope, ctx.selection.cco)


RATE_COLUMNS = (
    Column("group", "Group"), Column("cco", "CCO"),
    Column("claims_denominator", "Denominator", "int"), Column("claims_exclusions", "Exclusions", "int"),
    Column("claims_numerator", "Numerator", "int"), Column("claims_rate", "Rate", "rate"),
    Column("all_denominator", "Denominator", "int"), Column("all_exclusions", "Exclusions", "int"),
    Column("all_numerator", "Numerator", "int"), Column("all_rate", "Rate", "rate"),
    Column("difference", "All − claims", "rate"),
)  # fmt: skip
RATE_GROUPS: tuple[tuple[str | None, int], ...] = (
    (None, 2),
    ("Claims and enrollment only", 4),
    ("All sources", 4),
    ("Difference", 1),
)


def build_rates(dash: Dashboard, ctx: Context) -> Panel:
    claims = ctx.results["claims"].result()
    everything = ctx.results["all"].result()
    spec = everything.spec
    by_mode = {
        mode: {(r.group, r.cco): r for r in res.rates()}
        for mode, res in (("claims", claims), ("all", everything))
    }
    ccos = sorted({c for rows in by_mode.values() for (_g, c) in rows if c != tr.ALL})
    slices = [ctx.selection.cco] if ctx.selection.cco is not None else [*ccos, tr.ALL]
    rows = []
    for group in spec.groups:
        for cco in slices:
            c = by_mode["claims"].get((group.id, cco)) or tr.RateRow(group.id, cco, 0, 0, 0)
            a = by_mode["all"].get((group.id, cco)) or tr.RateRow(group.id, cco, 0, 0, 0)
            diff = None if a.rate is None or c.rate is None else round(a.rate - c.rate, 6)
            rows.append(
                {
                    "group": group.id, "cco": STATEWIDE_LABEL if cco == tr.ALL else cco,
                    "claims_denominator": c.denominator, "claims_exclusions": c.exclusions,
                    "claims_numerator": c.numerator, "claims_rate": c.rate,
                    "all_denominator": a.denominator, "all_exclusions": a.exclusions, "all_numerator": a.numerator,
                    "all_rate": a.rate, "difference": diff,
                }
            )  # fmt: skip
    headline = ctx.selection.cco or tr.ALL
    facts = []
    for group in spec.groups:
        for mode, label in (("all", "all sources"), ("claims", "claims only")):
            r = by_mode[mode].get((group.id, headline)) or tr.RateRow(group.id, headline, 0, 0, 0)
            facts.append((f"{group.title} ({label})", f"{_pct(r.rate)}: {r.numerator} of {r.base} children"))
    origins = {mode: res for mode, res in (("claims", claims), ("all", everything))}
    notes = [
        f"{mode} mode: "
        + (f"persisted run {res.run_id}" if res.origin == "persisted" else "evaluated for this page")
        + f", data cut {iso_instant(from_micros(res.as_of))}"
        for mode, res in origins.items()
    ]
    caption = f"Rates per group, claims only and all sources, {ctx.selection.scope_label}, {ctx.selection.period_label}"
    return Panel(
        "rates", PANEL_TITLES["rates"],
        intro=(
            "Rate = numerator ÷ (denominator − exclusions) (CQF Measures proportion). Claims only is "
            "comparable with OHA's scoring; all sources adds EHR data (the early signal)."
        ),
        facts=facts,
        tables=[TableData("rates", caption, RATE_COLUMNS, rows, row_header="cco", column_groups=RATE_GROUPS)],
        notes=notes,
    )  # fmt: skip


STRATA_COLUMNS = (
    Column("stratifier", "Stratifier"), Column("stratum", "Stratum"), Column("group", "Group"),
    Column("initial_population", "Initial population", "int"), Column("denominator", "Denominator", "int"),
    Column("exclusions", "Exclusions", "int"), Column("numerator", "Numerator", "int"), Column("rate", "Rate", "rate"),
    Column("suppressed", "Suppressed counts"),
)  # fmt: skip
_POP_KEYS = {
    "initial-population": "initial_population",
    "denominator": "denominator",
    "denominator-exclusion": "exclusions",
    "numerator": "numerator",
}
STRATIFIER_LABELS = {
    "cco": "CCO", "age": "Age in years", "age-band": "Age band", "sex": "Sex",
    "race-ethnicity": "Race and ethnicity (REALD)", "language": "Preferred language (REALD)",
    "disability": "Disability (REALD)", "county": "County",
}  # fmt: skip


def _unit(element: Mapping[str, Any]) -> dict[str, Any]:
    """Counts (``None`` when masked), the rate (``None`` when absent) and the masked codes."""
    out: dict[str, Any] = {}
    masked = []
    for population in element.get("population", []):
        code = population["code"]["coding"][0]["code"]
        key = _POP_KEYS.get(code)
        if key is None:
            continue
        if is_masked(population):
            out[key] = None
            masked.append(key)
        else:
            out[key] = population.get("count")
    score = element.get("measureScore")
    out["rate"] = score.get("value") if isinstance(score, Mapping) else None
    out["suppressed"] = ", ".join(masked) or None
    return out


def masked_summary(settings: Settings, ev: Evaluation, children: list[ChildResult]) -> dict[str, Any]:
    """The summary MeasureReport of ``children`` with small cells suppressed (module docstring)."""
    report = summary_report(ev, workflow.report_context(settings, ev.spec.hash), children=children)
    threshold = settings.suppression_threshold or DEFAULT_THRESHOLD
    return suppress_report(report, threshold, extension_url=extension_url(settings.canonical_base))


def build_strata(dash: Dashboard, ctx: Context) -> Panel:
    ev = ctx.evaluation.result()
    threshold = dash.settings.suppression_threshold or DEFAULT_THRESHOLD
    masked = ctx.strata.result()
    groups = ev.spec.groups
    long_rows: list[dict[str, Any]] = []
    per_stratifier: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    totals: dict[str, dict[str, Any]] = {}
    for group, element in zip(groups, masked["group"], strict=True):
        totals[group.id] = _unit(element)
        long_rows.append(
            {"stratifier": "all", "stratum": "all children", "group": group.id, **totals[group.id]}
        )
        for stratifier in element.get("stratifier", []):
            sid = stratifier["id"]
            if sid == "cco" and ctx.selection.cco is not None:
                continue
            for stratum in stratifier.get("stratum", []):
                label = str(stratum["value"].get("text"))
                unit = _unit(stratum)
                per_stratifier.setdefault(sid, {}).setdefault(label, {})[group.id] = unit
                long_rows.append({"stratifier": sid, "stratum": label, "group": group.id, **unit})
    tables = [
        TableData(
            "strata", f"Every stratum, long form, {ctx.selection.scope_label}", STRATA_COLUMNS, long_rows,
            download_only=True,
        )
    ]  # fmt: skip
    charts: dict[str, list[str]] = {}
    headline = groups[0]
    for sid in [s for s in ev.spec.stratifiers if s in per_stratifier]:
        strata = per_stratifier[sid]
        columns = [Column("stratum", STRATIFIER_LABELS.get(sid, sid))]
        spans: list[tuple[str | None, int]] = [(None, 1)]
        for group in groups:
            columns += [
                Column(f"{group.id}_denominator", "Denominator", "int"),
                Column(f"{group.id}_numerator", "Numerator", "int"),
                Column(f"{group.id}_rate", "Rate", "rate"),
            ]
            spans.append((group.title, 3))
        rows = []
        for label in [*sorted(strata), "all children"]:
            row: dict[str, Any] = {"stratum": label}
            for group in groups:
                unit = totals[group.id] if label == "all children" else strata[label].get(group.id, {})
                row[f"{group.id}_denominator"] = unit.get("denominator")
                row[f"{group.id}_numerator"] = unit.get("numerator")
                row[f"{group.id}_rate"] = unit.get("rate")
                hidden = {k.strip() for k in (unit.get("suppressed") or "").split(",") if k.strip()}
                marks = row.setdefault("_suppressed", set())
                marks.update(f"{group.id}_{k}" for k in hidden)
                if hidden & {"denominator", "exclusions", "numerator"}:
                    marks.add(f"{group.id}_rate")
            rows.append(row)
        name = f"strata-{sid}"
        caption = f"{STRATIFIER_LABELS.get(sid, sid)}: rates by stratum, {ctx.selection.scope_label}"
        tables.append(
            TableData(name, caption, tuple(columns), rows, row_header="stratum", column_groups=tuple(spans))
        )
        bars = []
        for label in sorted(strata):
            unit = strata[label].get(headline.id, {})
            if unit.get("rate") is not None:
                bars.append(svg.Bar(label, float(unit["rate"])))
            elif unit.get("suppressed"):
                bars.append(svg.Bar(label, None, "suppressed"))
            else:
                bars.append(svg.Bar(label, None, "no denominator"))
        charts[name] = [
            svg.bar_chart(
                bars, chart_id=f"chart-{name}", title=f"{headline.title} rate by {STRATIFIER_LABELS.get(sid, sid).lower()}",
                description=f"Bar chart of the {headline.title} rate per stratum ({ctx.selection.scope_label}).",
            )
        ]  # fmt: skip
    return Panel(
        "strata", PANEL_TITLES["strata"],
        intro=(
            f"Strata of the summary MeasureReport ({ctx.selection.sources} sources). Small cells: counts from 1 to "
            f"{threshold - 1} and the counts that would reveal them are suppressed (complementary suppression), "
            "and a rate is shown only when its denominator, exclusions and numerator are all shown (exclusions, deaths, "
            "are usually small, so many rates are suppressed here; the Rates panel has them). REALD values come "
            "from eligibility data; values marked EHR-reported come from the clinics' records."
        ),
        tables=tables, charts=charts,
    )  # fmt: skip


TREND_COLUMNS = (
    Column("kind", "Kind"), Column("period", "Period"), Column("period_start", "Start"), Column("period_end", "End"),
    Column("group", "Group"), Column("cco", "CCO"), Column("denominator", "Denominator", "int"),
    Column("exclusions", "Exclusions", "int"), Column("numerator", "Numerator", "int"), Column("rate", "Rate", "rate"),
    Column("measure_version", "Measure version"), Column("origin", "Origin"), Column("run_id", "Run"),
    Column("data_cut", "Data cut"),
)  # fmt: skip
TARGET_COLUMNS = (
    Column("year", "Year", "int"), Column("group", "Group"), Column("cco", "CCO"), Column("rate", "Rate", "rate"),
    Column("rate_period", "Rate period"), Column("baseline", "Baseline", "rate"), Column("baseline_period", "Baseline period"),
    Column("benchmark", "Benchmark", "rate"), Column("improvement_target", "Improvement target", "rate"),
    Column("meets_benchmark", "Meets benchmark", "bool"), Column("meets_improvement_target", "Meets target", "bool"),
    Column("met", "Met", "bool"), Column("benchmark_status", "Benchmark status"), Column("benchmark_source", "Benchmark source", "longtext", page=False),
    Column("improvement_status", "Target status"), Column("improvement_source", "Target source", "longtext", page=False),
    Column("rate_origin", "Rate origin", page=False), Column("baseline_origin", "Baseline origin", page=False),
)  # fmt: skip


def _display_cco(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "cco": STATEWIDE_LABEL if row.get("cco") == tr.ALL else row.get("cco")}


def build_trend(dash: Dashboard, ctx: Context) -> Panel:
    result = ctx.trend.result()
    chosen = ctx.selection.cco or tr.ALL
    all_rows = tr.trend_rows(result.periods)
    rows = [_display_cco(r) for r in all_rows if ctx.selection.cco is None or r["cco"] == chosen]
    targets = [_display_cco(r) for r in result.targets if ctx.selection.cco is None or r["cco"] == chosen]
    spec = ctx.spec
    target_groups = {r["group"] for r in result.targets}
    chart_groups = [g for g in spec.groups if g.id in target_groups] or [spec.groups[0]]
    charts: list[str] = []
    quarter_labels = sorted({p.period.end for p in result.periods})
    x_labels = [f"{d.year} Q{(d.month - 1) // 3 + 1}" for d in quarter_labels]
    for group in chart_groups:
        series = []
        for kind, name in (("quarter", "Quarter"), ("rolling-12", "Rolling 12 months")):
            values: list[float | None] = []
            for end in quarter_labels:
                found = next(
                    (r for r in all_rows if r["kind"] == kind and r["period_end"] == end.isoformat()
                     and r["group"] == group.id and r["cco"] == chosen), None,
                )  # fmt: skip
                values.append(found["rate"] if found else None)
            series.append(svg.Series(f"{name} rate", values))
        references = []
        target = next((r for r in result.targets if r["group"] == group.id and r["cco"] == chosen), None)
        if target is not None and target["benchmark"] is not None:
            references.append(
                svg.Reference(f"Benchmark ({target['benchmark_status']})", float(target["benchmark"]))
            )
        if target is not None and target["improvement_target"] is not None:
            references.append(svg.Reference("Improvement target", float(target["improvement_target"])))
        who = STATEWIDE_LABEL if chosen == tr.ALL else chosen
        charts.append(
            svg.line_chart(
                x_labels, series, references=references, chart_id=f"chart-trend-{group.id}",
                title=f"{group.title} rate by quarter, {who}, {ctx.selection.year}",
                description=f"Line chart of quarterly and rolling 12-month {group.title} rates ({ctx.selection.sources} sources).",
            )
        )  # fmt: skip
    notes = []
    shown = None
    if ctx.selection.cco is None:  # statewide rows first; the page shows only those
        rows = [r for r in rows if r["cco"] == STATEWIDE_LABEL] + [
            r for r in rows if r["cco"] != STATEWIDE_LABEL
        ]
        shown = sum(1 for r in rows if r["cco"] == STATEWIDE_LABEL)
        notes.append("The table shows the statewide rows; the download has every CCO's.")
    tables = [
        TableData(
            "trend", f"Quarterly and rolling 12-month rates, {ctx.selection.year}, {ctx.selection.scope_label}",
            TREND_COLUMNS, rows, row_header="period", shown=shown, collapsed=True,
        )
    ]  # fmt: skip
    tables.append(
        TableData(
            "targets", f"Benchmark and improvement target, {ctx.selection.year}", TARGET_COLUMNS, targets,
            row_header="cco",
        )
    )  # fmt: skip
    if not result.targets:
        notes.append(
            f"No benchmark or improvement target is configured for {ctx.selection.year} (targets.toml)."
        )
    seen: set[tuple[Any, ...]] = set()
    for r in result.targets:
        said = (
            r["group"],
            r["benchmark_status"],
            r["benchmark_source"],
            r["improvement_status"],
            r["improvement_source"],
        )
        if said in seen:
            continue
        seen.add(said)
        notes.append(
            f"{r['group']} {r['year']}: benchmark ({r['benchmark_status']}): {r['benchmark_source']}"
            + (
                f"; improvement target ({r['improvement_status']}): {r['improvement_source']}"
                if r["improvement_status"]
                else ""
            )
        )
    return Panel(
        "trend", PANEL_TITLES["trend"],
        intro=(
            "Each quarter end of the selected year: the quarter's rate and the rate of the 12 months ending there. "
            "The improvement target closes part of the gap between last year's rate and the benchmark "
            "(mappings targets.toml; benchmark values there are placeholders until OHA sets them)."
        ),
        tables=tables, charts={"trend": charts}, notes=notes,
    )  # fmt: skip


GAP_COLUMNS = tuple(
    Column(key, label, "int" if key == "age" else "longtext" if key == "reason_text" else "text")
    for key, label in (
        ("member_id", "Member id"), ("patient", "Patient"), ("patient_source", "Source"), ("cco", "CCO"),
        ("age", "Age"), ("group", "Group"), ("reason", "Reason"), ("reason_text", "Why"), ("clinic", "Clinic"),
        ("clinic_npi", "Clinic NPI"), ("pcp_npi", "PCP NPI"), ("pcp_name", "PCP"),
    )
)  # fmt: skip
UNASSIGNED = "unassigned"


def build_gaps(dash: Dashboard, ctx: Context) -> Panel:
    ev = ctx.evaluation.result()
    groups = [(g.id, g.title) for g in ev.spec.groups]
    group = ctx.selection.group or groups[0][0]
    if group not in [g for g, _t in groups]:
        raise UsageError(f"measure {ev.spec.id} has no group {group!r}", location="group")
    # the selection's CCO is one the caller may see; statewide (None) only for callers who see every CCO
    rows = workflow.gap_rows(ev, cco=ctx.selection.cco, group=group, assignments=ctx.assignments.result())
    clinics = sorted({r["clinic"] for r in rows if r["clinic"]})
    if any(not r["clinic"] for r in rows):
        clinics.append(UNASSIGNED)
    clinic = ctx.selection.clinic
    if clinic is not None:
        rows = [r for r in rows if (r["clinic"] or UNASSIGNED) == clinic]
    title = dict(groups)[group]
    where = f", clinic {clinic}" if clinic else ""
    caption = f"Children without a qualifying service ({title}), {ctx.selection.scope_label}{where}"
    return Panel(
        "gaps", PANEL_TITLES["gaps"],
        intro=(
            "Every child in the denominator (not excluded) without a qualifying service in the period, with the clinic "
            "and primary care provider the child is assigned to on the period's last day (member assignment files)."
        ),
        facts=[("Children with a gap", str(len(rows)))],
        tables=[TableData("gaps", caption, GAP_COLUMNS, rows, row_header="member_id", shown=SHOWN_ROWS)],
        clinics=clinics, groups=groups,
    )  # fmt: skip


REFERRAL_COUNT_COLUMNS = tuple(
    Column(
        key,
        label(key),
        "text" if key in ("cco", "clinic") else "rate" if key == "closed_share" else "int",
    )
    for key in ref.COUNT_COLUMNS
)
REFERRAL_LIST_COLUMNS = tuple(
    Column(key, label(key), "int" if key.startswith("days_") else "text") for key in ref.LIST_COLUMNS
)


def build_referrals(dash: Dashboard, ctx: Context) -> Panel:
    loop = ctx.referrals.result()
    rows = [r for r in loop.rows if _in_scope(ctx, r["cco"])]
    counts = ref.loop_counts(rows)
    scope_row = next((r for r in counts if r["cco"] == ref.ALL and r["clinic"] == ref.ALL), None)
    bars = [svg.Bar(status, float(scope_row[status]) if scope_row else 0.0) for status in ref.STATUSES]
    chart = svg.bar_chart(
        bars, chart_id="chart-referrals", fmt=lambda v: str(round(v)),
        title=f"SE referrals by loop status, {ctx.selection.scope_label}",
        description=f"Bar chart of the number of SE referrals authored in the period per status (window {loop.config.window_days} days).",
    )  # fmt: skip
    meta = loop.meta()
    return Panel(
        "referrals", PANEL_TITLES["referrals"],
        intro=(
            f"SE referrals (ServiceRequests) authored in the period, closed when the child had a qualifying service "
            f"within {meta['window_days']} days ({meta['window_status']}), as of {meta['today']}."
        ),
        facts=[("Referrals", str(len(rows))), ("Closed share", _pct(scope_row["closed_share"]) if scope_row else "none")],
        tables=[
            TableData("referral-counts", f"Referral loop per CCO and clinic, {ctx.selection.scope_label}",
                      REFERRAL_COUNT_COLUMNS, counts, row_header="cco"),
            TableData("referrals", f"SE referrals, {ctx.selection.scope_label}", REFERRAL_LIST_COLUMNS, rows,
                      row_header="referral", shown=SHOWN_ROWS, collapsed=True),
        ],
        charts={"referral-counts": [chart]},
    )  # fmt: skip


CAPACITY_SUMMARY_COLUMNS = tuple(
    Column(k, label(k), "text" if k in ("cco", "county", "fips") else "int") for k in cap.SUMMARY_COLUMNS
)
CAPACITY_PROVIDER_COLUMNS = tuple(
    Column(k, label(k), "int" if k in ("children", "service_records") else "text")
    for k in cap.PROVIDER_COLUMNS
)
COUNTIES_WITHOUT_COLUMNS = tuple(
    Column(k, label(k), "int" if k == "children_in_denominator" else "text") for k in cap.NONE_COLUMNS
)


def build_capacity(dash: Dashboard, ctx: Context) -> Panel:
    inputs = ctx.capacity.result()
    providers, summary, without = inputs.tables(ctx.selection.cco)
    if ctx.selection.cco is not None:
        providers = [r for r in providers if r["cco"] == ctx.selection.cco]
        summary = [r for r in summary if r["cco"] == ctx.selection.cco]
        without = [r for r in without if r["cco"] == ctx.selection.cco]
    providers = [_display_cco(r) for r in providers]
    summary = [_display_cco(r) for r in summary]
    without = [_display_cco(r) for r in without]
    scope = ctx.selection.scope_label
    return Panel(
        "capacity", PANEL_TITLES["capacity"],
        intro=(
            f"Practitioners and organisations that delivered the services counting for {inputs.group} in the period, "
            "per CCO and county (the provider's county, else the child's), and counties without any."
        ),
        tables=[
            TableData("capacity", f"Providers and children served per county, {scope}", CAPACITY_SUMMARY_COLUMNS,
                      summary, row_header="county", shown=SHOWN_ROWS),
            TableData("counties-without", f"Counties without a provider of these services, {scope}",
                      COUNTIES_WITHOUT_COLUMNS, without, row_header="county", collapsed=True),
            TableData("capacity-providers", f"Providers, {scope}", CAPACITY_PROVIDER_COLUMNS, providers,
                      row_header="provider", shown=SHOWN_ROWS, collapsed=True),
        ],
    )  # fmt: skip


RECONCILIATION_COLUMNS = (
    Column("group", "Group"), Column("population", "Population"), Column("both", "In both", "int"),
    Column("only_oha", "Only OHA", "int"), Column("only_us", "Only us", "int"), Column("union", "Union", "int"),
    Column("cco_differs", "CCO differs", "int"), Column("agreement_rate", "Agreement", "rate"),
    Column("reasons", "Reasons for differences", "longtext"),
)  # fmt: skip


def build_reconciliation(dash: Dashboard, ctx: Context) -> Panel:
    folder = dash.settings.reconciliation_dir
    found = latest_reconciliation(
        folder,
        ctx.selection.measure,
        None if ctx.unrestricted else list(ctx.scope.ccos or ()),
        ctx.selection.cco,
    )
    panel = Panel("reconciliation", PANEL_TITLES["reconciliation"])
    if found is None:
        where = f"under {folder}" if folder else "(FHIR_ADAPTER_RECONCILIATION_DIR is not set)"
        panel.message = f"No reconciliation loaded for {ctx.selection.measure} {where}."
        panel.notes.append(
            "To show one: set FHIR_ADAPTER_RECONCILIATION_DIR for the server and run "
            "`fhir-adapter reconcile --oha-file FILE --measure ID --period-start D --period-end D [--cco ID] "
            "--out-dir $FHIR_ADAPTER_RECONCILIATION_DIR/<name>`; the newest summary.json there is shown."
        )
        return panel
    path, data = found
    rows = [
        {
            "group": p.get("group"), "population": p.get("population"), "both": p.get("both"),
            "only_oha": p.get("onlyOha"), "only_us": p.get("onlyUs"), "union": p.get("union"),
            "cco_differs": p.get("ccoDiffers"), "agreement_rate": p.get("agreementRate"),
            "reasons": "; ".join(f"{k}: {v}" for k, v in sorted((p.get("reasons") or {}).items())) or None,
        }
        for p in data.get("populations", [])
        if isinstance(p, dict)
    ]  # fmt: skip
    period = data.get("period") or {}
    lag = data.get("dataLag") or {}
    panel.facts = [
        ("Summary", f"{path.parent.name}/{path.name}"),
        ("Period", f"{period.get('start')} to {period.get('end')}"),
        ("CCO", str(data.get("cco") or "every CCO")),
        ("OHA file", f"{data.get('ohaFile')} ({data.get('ohaRows')} rows)"),
        ("Data cut", str(data.get("dataCut"))),
        ("Differences", f"{data.get('differences')} ({data.get('disputeRows')} dispute rows)"),
        (
            "Claims paid through",
            f"ours {lag.get('ourClaimsPaidThrough') or 'not known'}, "
            f"OHA's {lag.get('ohaClaimsThrough') or 'not known'}",
        ),
    ]
    panel.tables = [
        TableData("reconciliation", f"Children in OHA's file and ours, {data.get('cco') or 'every CCO'}",
                  RECONCILIATION_COLUMNS, rows, row_header="population")
    ]  # fmt: skip
    texts = data.get("reasonText") or {}
    panel.notes = [f"{code}: {texts[code]}" for code in sorted(texts)]
    return panel


QUALITY_COLUMNS = (
    Column("check", "Check"),
    Column("group", "Group"),
    Column("detail", "Detail"),
    Column("count", "Count", "int"),
)
SOURCE_COLUMNS = tuple(
    Column(k, label(k),
           "int" if k in ("resources_total", "rejected", "patients", "unlinked_patients",
                          "patients_without_birth_date", "unknown_code_systems") else "text")
    for k in dq.SOURCE_COLUMNS
)  # fmt: skip


def build_quality(dash: Dashboard, ctx: Context) -> Panel:
    ev = ctx.evaluation.result()
    restricted = ctx.selection.cco is not None or not ctx.unrestricted
    mine = dataclasses.replace(ev, children=_children(ctx, ev))
    checks = dq.evaluation_rows(dq.evaluation_quality(mine))
    notes = []
    if restricted:
        checks = [r for r in checks if r["check"] not in STOREWIDE_CHECKS]
        notes.append(
            "Checks of services over every child (unknown code systems, partial dates) are shown statewide only."
        )
    tables = [
        TableData("data-quality", f"Evaluation checks, {ctx.selection.scope_label}", QUALITY_COLUMNS, checks,
                  row_header="check"),
    ]  # fmt: skip
    if ctx.unrestricted:
        tables.append(
            TableData("data-quality-sources", "Sources: resources, rejected lines, unlinked patients, freshness",
                      SOURCE_COLUMNS, dq.source_rows(ctx.sources.result()), row_header="source")
        )  # fmt: skip
    else:
        notes.append("The per-source table names every feed and is shown to OHA only.")
    return Panel(
        "quality", PANEL_TITLES["quality"],
        intro="Children not evaluated and why, reasons per group, unlinked children and feed freshness.",
        tables=tables, notes=notes,
    )  # fmt: skip


BUILDERS: dict[str, Callable[[Dashboard, Context], Panel]] = {
    "rates": build_rates,
    "strata": build_strata,
    "trend": build_trend,
    "gaps": build_gaps,
    "referrals": build_referrals,
    "capacity": build_capacity,
    "reconciliation": build_reconciliation,
    "quality": build_quality,
}
#: Download name -> panel.
TABLE_PANELS = {
    "rates": "rates",
    "strata": "strata",
    "trend": "trend",
    "targets": "trend",
    "gaps": "gaps",
    "referral-counts": "referrals",
    "referrals": "referrals",
    "capacity": "capacity",
    "counties-without": "capacity",
    "capacity-providers": "capacity",
    "reconciliation": "reconciliation",
    "data-quality": "quality",
    "data-quality-sources": "quality",
}


def iter_tables(panels: Iterable[Panel]) -> Iterable[TableData]:
    for panel in panels:
        yield from panel.tables


__all__ = [
    "BUILDERS",
    "PANELS",
    "TABLE_PANELS",
    "CapacityInputs",
    "Column",
    "Context",
    "Dashboard",
    "Panel",
    "PeriodResult",
    "TableData",
    "TrendPlan",
    "TrendResult",
    "capacity_inputs",
    "compose_trend",
    "csv_bytes",
    "data_cut",
    "latest_reconciliation",
    "parquet_bytes",
    "referral_loop",
    "trend_plan",
]
