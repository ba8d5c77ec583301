"""Trend: quarterly and rolling-year rates per CCO and group, and progress against the benchmark
and improvement target (spec §4 "Trend"; OHA sends CCOs quarterly dashboards during the year [V]).

Periods (all days included; the measure version is the one of the year each period ends in,
spec §2): for every calendar quarter end within the requested range,

- ``quarter``: that calendar quarter (e.g. 2025-04-01 … 2025-06-30);
- ``rolling-12``: the 12 months ending on it (2024-07-01 … 2025-06-30).

Each period is evaluated like any other period (age on its last day, continuous enrollment
within it), or read from a persisted run of exactly that measure version, period, source mode
and mappings hash (:mod:`fhir_adapter.store.runs`): ``persisted="exact"`` uses a run of the same
data cut only, ``"latest"`` the latest data cut persisted, ``"never"`` always evaluates. Every
row says where it came from.

Rates are CQF Measures proportions: numerator / (denominator − exclusions), absent when that base
is 0 (deqm-6); per CCO and over all CCOs (``all``).

Targets (:mod:`fhir_adapter.report.targets`): for each measurement year of the range with a
target, the **current** rate is the rolling 12 months ending at the year's last quarter end in
the range (the full calendar year once Q4 is in), the **baseline** the previous calendar year's
rate evaluated with the target year's measure version (OHA sets targets from the previous
year's rates) or read from a persisted run of it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Literal

from fhir_adapter import workflow
from fhir_adapter.fhir.dates import from_micros, to_micros
from fhir_adapter.ingest.runner import Clock, utc_now
from fhir_adapter.measure.spec import Mappings, MeasureSpec, SourceMode
from fhir_adapter.report.targets import Target, assess, load_targets
from fhir_adapter.settings import Settings
from fhir_adapter.store.db import Store
from fhir_adapter.store.evaluate import Evaluation, evaluate
from fhir_adapter.store.runs import ResultRow, find_run, persist_run, run_results

PeriodKind = Literal["quarter", "rolling-12"]
Persisted = Literal["exact", "latest", "never"]
KINDS: tuple[PeriodKind, ...] = ("quarter", "rolling-12")
ALL = "all"
UNKNOWN_CCO = "unknown"


@dataclass(frozen=True)
class TrendPeriod:
    kind: PeriodKind
    start: date
    end: date

    @property
    def label(self) -> str:
        if self.kind == "quarter":
            return f"{self.end.year}Q{(self.end.month - 1) // 3 + 1}"
        return f"12m-{self.end.isoformat()}"


def _quarter_end(year: int, quarter: int) -> date:
    month = quarter * 3
    return (date(year + 1, 1, 1) if month == 12 else date(year, month + 1, 1)) - timedelta(days=1)


def quarter_ends(start: date, end: date) -> list[date]:
    """Calendar quarter ends ``q`` with ``start <= q <= end``."""
    out = []
    for year in range(start.year, end.year + 1):
        for quarter in (1, 2, 3, 4):
            q = _quarter_end(year, quarter)
            if start <= q <= end:
                out.append(q)
    return out


def trend_periods(start: date, end: date, kinds: Sequence[PeriodKind] = KINDS) -> list[TrendPeriod]:
    """The periods of a trend over ``[start, end]`` (module docstring), by end then kind."""
    out = []
    for q in quarter_ends(start, end):
        for kind in kinds:
            if kind == "quarter":
                out.append(TrendPeriod(kind, date(q.year, q.month - 2, 1), q))
            else:
                out.append(rolling_year(q))
    return out


def rolling_year(end: date) -> TrendPeriod:
    """The 12 calendar months ending on ``end`` (a month end)."""
    first = end + timedelta(days=1)
    return TrendPeriod("rolling-12", date(first.year - 1, first.month, 1), end)


@dataclass(frozen=True)
class Outcome:
    """One child's membership in one group's populations (from an evaluation or a persisted run)."""

    cco: str | None
    group: str
    den: bool
    denex: bool
    num: bool


def outcomes_of_evaluation(ev: Evaluation) -> list[Outcome]:
    return [Outcome(c.cco, g.group, g.den, g.denex, g.num) for c in ev.children for g in c.groups]


def outcomes_of_run(rows: Iterable[ResultRow]) -> list[Outcome]:
    return [Outcome(r.cco, r.group, r.den, r.denex, r.num) for r in rows]


@dataclass(frozen=True)
class RateRow:
    group: str
    #: a CCO id, ``all`` or ``unknown``
    cco: str
    denominator: int
    exclusions: int
    numerator: int

    @property
    def base(self) -> int:
        return self.denominator - self.exclusions

    @property
    def rate(self) -> float | None:
        return round(self.numerator / self.base, 6) if self.base > 0 else None


def rates(outcomes: Iterable[Outcome], groups: Sequence[str]) -> list[RateRow]:
    """Per group (in ``groups`` order): one row per CCO with denominator children (sorted), then
    ``all``."""
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for o in outcomes:
        if not o.den:
            continue
        for cco in (o.cco or UNKNOWN_CCO, ALL):
            bucket = counts[(o.group, cco)]
            bucket[0] += 1
            bucket[1] += int(o.denex)
            bucket[2] += int(o.num and not o.denex)
    out = []
    for group in groups:
        ccos = sorted(c for g, c in counts if g == group and c != ALL)
        for cco in [*ccos, ALL]:
            den, denex, num = counts.get((group, cco), [0, 0, 0])
            out.append(RateRow(group, cco, den, denex, num))
    return out


@dataclass(frozen=True)
class PeriodRates:
    period: TrendPeriod
    measure_version: str
    #: ``computed`` or ``persisted``
    origin: str
    run_id: str | None
    as_of: int
    rows: list[RateRow]


TREND_COLUMNS = (
    "kind", "period", "period_start", "period_end", "group", "cco", "denominator", "exclusions", "numerator",
    "rate", "measure_version", "origin", "run_id", "data_cut",
)  # fmt: skip
TARGET_COLUMNS = (
    "year", "group", "cco", "rate", "rate_period", "baseline", "baseline_period", "benchmark",
    "improvement_target", "meets_benchmark", "meets_improvement_target", "met", "benchmark_status",
    "benchmark_source", "improvement_status", "improvement_source", "rate_origin", "baseline_origin",
)  # fmt: skip


def trend_rows(periods: Iterable[PeriodRates], cco: str | None = None) -> list[dict[str, Any]]:
    out = []
    for p in periods:
        for r in p.rows:
            if cco is not None and r.cco != cco:
                continue
            out.append(
                {
                    "kind": p.period.kind, "period": p.period.label, "period_start": p.period.start.isoformat(),
                    "period_end": p.period.end.isoformat(), "group": r.group, "cco": r.cco,
                    "denominator": r.denominator, "exclusions": r.exclusions, "numerator": r.numerator,
                    "rate": r.rate, "measure_version": p.measure_version, "origin": p.origin, "run_id": p.run_id,
                    "data_cut": from_micros(p.as_of).isoformat(),
                }
            )  # fmt: skip
    return out


def target_rows(
    target: Target, current: PeriodRates | None, baseline: PeriodRates | None, cco: str | None = None
) -> list[dict[str, Any]]:
    """One row per CCO (and ``all``) of the target's group: its rate, baseline and assessment."""
    now = {r.cco: r for r in current.rows if r.group == target.group} if current else {}
    before = {r.cco: r for r in baseline.rows if r.group == target.group} if baseline else {}
    names = sorted((set(now) | set(before)) - {ALL})
    out = []
    for name in [*names, ALL]:
        if cco is not None and name != cco:
            continue
        rate = now[name].rate if name in now else None
        base = before[name].rate if name in before else None
        a = assess(target, rate, base)
        imp = target.improvement
        out.append(
            {
                "year": target.year, "group": target.group, "cco": name, "rate": rate,
                "rate_period": current.period.label if current else None, "baseline": base,
                "baseline_period": f"{baseline.period.start.isoformat()}/{baseline.period.end.isoformat()}"
                if baseline else None,
                "benchmark": target.benchmark, "improvement_target": a.improvement_target,
                "meets_benchmark": a.meets_benchmark, "meets_improvement_target": a.meets_target, "met": a.met,
                "benchmark_status": target.provenance.status, "benchmark_source": target.provenance.source,
                "improvement_status": imp.provenance.status if imp else None,
                "improvement_source": imp.provenance.source if imp else None,
                "rate_origin": current.origin if current else None,
                "baseline_origin": baseline.origin if baseline else None,
            }
        )  # fmt: skip
    return out


@dataclass
class Trend:
    measure: str
    sources: str
    as_of: int
    periods: list[PeriodRates]
    targets: list[dict[str, Any]] = field(default_factory=list)
    cco: str | None = None

    def rows(self) -> list[dict[str, Any]]:
        return trend_rows(self.periods, self.cco)


class _Periods:
    """Evaluates periods, or reads them from persisted runs, once each."""

    def __init__(
        self, store: Store, mappings: Mappings, measure: str, sources: SourceMode,
        as_of: int, persisted: Persisted, persist: bool, now_us: int,
    ) -> None:  # fmt: skip
        self.store, self.mappings = store, mappings
        self.measure, self.sources, self.as_of = measure, sources, as_of
        self.persisted, self.persist, self.now_us = persisted, persist, now_us
        self.done: dict[tuple[str, date, date, str], PeriodRates] = {}

    def get(self, period: TrendPeriod, spec: MeasureSpec | None = None) -> PeriodRates:
        spec = spec or workflow.measure_spec(self.mappings, self.measure, period.end)
        key = (period.kind, period.start, period.end, spec.version)
        if key in self.done:
            return self.done[key]
        groups = [g.id for g in spec.groups]
        run = None
        if self.persisted != "never":
            run = find_run(
                self.store, spec.id, period.start, period.end, self.sources,
                as_of=self.as_of if self.persisted == "exact" else None,
                measure_version=spec.version, mappings_hash=spec.hash,
            )  # fmt: skip
        if run is not None:
            result = PeriodRates(
                period, spec.version, "persisted", run.run_id, run.as_of,
                rates(outcomes_of_run(run_results(self.store, run.run_id)), groups),
            )  # fmt: skip
        else:
            ev = evaluate(self.store, self.mappings, spec, period.start, period.end, self.as_of, self.sources)
            run_id = persist_run(self.store, ev, now_us=self.now_us) if self.persist else None
            result = PeriodRates(
                period,
                spec.version,
                "computed",
                run_id,
                self.as_of,
                rates(outcomes_of_evaluation(ev), groups),
            )
        self.done[key] = result
        return result


def run_trend(
    settings: Settings,
    store: Store,
    measure: str,
    period_start: date,
    period_end: date,
    *,
    sources: SourceMode = "all",
    kinds: Sequence[PeriodKind] = KINDS,
    persisted: Persisted = "exact",
    persist: bool = False,
    cco: str | None = None,
    mappings: Mappings | None = None,
    clock: Clock = utc_now,
) -> Trend:
    """Rates for every trend period of ``[period_start, period_end]`` and the target assessment
    of each measurement year in it that has a target (module docstring). ``persist`` stores the
    periods it evaluates as runs."""
    mappings = workflow.report_mappings(settings, period_start, period_end, mappings=mappings, cco=cco)
    workflow.measure_spec(mappings, measure, period_end)  # NotFoundError for an unknown measure
    now = clock()
    as_of = to_micros(now)
    periods = _Periods(store, mappings, measure, sources, as_of, persisted, persist, as_of)
    computed = [periods.get(p) for p in trend_periods(period_start, period_end, kinds)]
    trend = Trend(measure, sources, as_of, computed, cco=cco)
    targets = load_targets(settings.mappings_dir, measure, mappings)
    for year in range(period_start.year, period_end.year + 1):
        ends = [q for q in quarter_ends(period_start, period_end) if q.year == year]
        for target in (t for t in targets if t.year == year):
            if not ends:
                continue
            spec = workflow.measure_spec(mappings, measure, date(year, 12, 31))
            current = periods.get(rolling_year(ends[-1]), spec)
            baseline = periods.get(rolling_year(date(year - 1, 12, 31)), spec)
            trend.targets.extend(target_rows(target, current, baseline, cco))
    return trend


__all__ = [
    "KINDS",
    "TARGET_COLUMNS",
    "TREND_COLUMNS",
    "Outcome",
    "PeriodRates",
    "RateRow",
    "Trend",
    "TrendPeriod",
    "outcomes_of_evaluation",
    "outcomes_of_run",
    "quarter_ends",
    "rates",
    "rolling_year",
    "run_trend",
    "target_rows",
    "trend_periods",
    "trend_rows",
]
