"""What the dashboard shows: the measure, period, CCO, source mode and gap-list filters, read from
the query string of ``GET /dashboard`` (plain GET forms, so the page works without JavaScript).

Periods (spec §3 "Measurement period": any period can be asked for; quarterly and rolling
12-month dashboards [V]): ``year`` is the calendar year, ``quarter`` a calendar quarter of it,
``rolling-12`` the 12 months ending on that quarter's last day
(:func:`fhir_adapter.report.trend.rolling_year`). The measure version is the one of the year the
period ends in (spec §2).

CCOs: a caller that sees every CCO (OHA, administrators, authorisation off) chooses one or
``statewide`` (every child); a CCO client chooses among its own CCOs only
(:class:`fhir_adapter.auth.policy.EvaluationScope`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Literal
from urllib.parse import urlencode

from fhir_adapter.errors import UsageError
from fhir_adapter.measure.spec import Mappings, SourceMode
from fhir_adapter.report.trend import rolling_year

PeriodKind = Literal["year", "quarter", "rolling-12"]
KINDS: tuple[PeriodKind, ...] = ("year", "quarter", "rolling-12")
KIND_LABELS = {"year": "Calendar year", "quarter": "Quarter", "rolling-12": "Rolling 12 months"}
SOURCE_MODES: tuple[SourceMode, ...] = ("all", "claims")
SOURCE_LABELS = {"all": "All sources (claims + EHR)", "claims": "Claims and enrollment only (as OHA)"}
STATEWIDE = "statewide"
DEFAULT_MEASURE = "oregon-se-issue-focused"
#: Query parameters the page reads (anything else is ignored).
PARAMS = ("measure", "period", "year", "quarter", "cco", "sources", "clinic", "group")


@dataclass(frozen=True)
class Selection:
    measure: str
    kind: PeriodKind
    year: int
    quarter: int
    #: a CCO id, or ``None`` for statewide
    cco: str | None
    sources: SourceMode
    #: gap-list filters: a clinic name (``unassigned`` for none) and a group id
    clinic: str | None = None
    group: str | None = None

    @property
    def period(self) -> tuple[date, date]:
        if self.kind == "year":
            return date(self.year, 1, 1), date(self.year, 12, 31)
        end = quarter_end(self.year, self.quarter)
        if self.kind == "quarter":
            return date(self.year, 3 * self.quarter - 2, 1), end
        rolling = rolling_year(end)
        return rolling.start, rolling.end

    @property
    def period_label(self) -> str:
        start, end = self.period
        if self.kind == "year":
            return str(self.year)
        if self.kind == "quarter":
            return f"{self.year} Q{self.quarter} ({start.isoformat()} to {end.isoformat()})"
        return f"12 months {start.isoformat()} to {end.isoformat()}"

    @property
    def scope_label(self) -> str:
        return self.cco if self.cco is not None else "statewide (every CCO)"

    def params(self, **changes: object) -> dict[str, str]:
        """The query parameters that select this (with ``changes``); filters only when set."""
        chosen = replace(self, **changes)  # type: ignore[arg-type]
        out = {
            "measure": chosen.measure,
            "period": chosen.kind,
            "year": str(chosen.year),
            "quarter": str(chosen.quarter),
            "cco": chosen.cco or STATEWIDE,
            "sources": chosen.sources,
        }
        if chosen.clinic is not None:
            out["clinic"] = chosen.clinic
        if chosen.group is not None:
            out["group"] = chosen.group
        return out

    def query(self, **changes: object) -> str:
        return urlencode(self.params(**changes))


def quarter_end(year: int, quarter: int) -> date:
    first_of_next = date(year + 1, 1, 1) if quarter == 4 else date(year, 3 * quarter + 1, 1)
    return first_of_next - timedelta(days=1)


@dataclass(frozen=True)
class Options:
    """The choices the selectors offer this caller."""

    measures: tuple[tuple[str, str], ...]
    years: Mapping[str, tuple[int, ...]]
    #: (value, label): ``statewide`` first for callers who see every CCO
    ccos: tuple[tuple[str, str], ...]


def options(mappings: Mappings, allowed_ccos: Sequence[str] | None, today: date) -> Options:
    """Measures and years from ``mappings`` (each measure's mapping years, up to this year), CCOs
    the caller may see (``allowed_ccos`` ``None``: every CCO and statewide)."""
    years: dict[str, list[int]] = {}
    titles: dict[str, str] = {}
    for (measure, year), spec in sorted(mappings.measures.items()):
        titles[measure] = spec.title  # the latest year's title
        if year <= today.year:
            years.setdefault(measure, []).append(year)
    measures = tuple(sorted(((m, titles[m]) for m in years), key=lambda x: (x[0] != DEFAULT_MEASURE, x[0])))
    names = {c.id: c.name for c in mappings.ccos}
    if allowed_ccos is None:
        ccos = [(STATEWIDE, "Statewide (every CCO)")] + [(c.id, f"{c.id}: {c.name}") for c in mappings.ccos]
    else:
        ccos = [(c, f"{c}: {names.get(c, c)}") for c in sorted(allowed_ccos)]
    return Options(measures, {m: tuple(y) for m, y in years.items()}, tuple(ccos))


def _one(params: Mapping[str, str], name: str) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def parse(
    params: Mapping[str, str],
    opts: Options,
    *,
    default_year: int | None,
    today: date,
    notices: list[str] | None = None,
) -> Selection:
    """The selection the query asks for, with defaults for what it leaves out; :class:`UsageError`
    (HTTP 400, ``location`` = the parameter) for a value the selectors do not offer. A year the
    measure does not have falls back to its nearest earlier one, with a note in ``notices``."""
    notices = notices if notices is not None else []
    measure_ids = [m for m, _t in opts.measures]
    if not measure_ids:
        raise UsageError("the mappings define no measure to show")
    measure = _one(params, "measure") or measure_ids[0]
    if measure not in measure_ids:
        raise UsageError(
            f"unknown measure {measure!r}; choose one of {', '.join(measure_ids)}", location="measure"
        )
    kind = _one(params, "period") or "year"
    if kind not in KINDS:
        raise UsageError(f"period must be one of {', '.join(KINDS)}, not {kind!r}", location="period")
    years = opts.years[measure]
    fallback = default_year if default_year is not None else today.year - 1
    nearest = max((y for y in years if y <= fallback), default=years[0])
    raw_year = _one(params, "year")
    if raw_year is None:
        year = nearest
    elif not raw_year.isdigit():
        raise UsageError(f"year must be a number, not {raw_year!r}", location="year")
    elif int(raw_year) not in years:
        # the selectors offer every measure's years: a year of another measure falls back
        year = max((y for y in years if y <= int(raw_year)), default=years[0])
        notices.append(f"{measure} has no measurement year {int(raw_year)}; showing {year}.")
    else:
        year = int(raw_year)
    raw_quarter = _one(params, "quarter") or "4"
    if raw_quarter not in ("1", "2", "3", "4"):
        raise UsageError(f"quarter must be 1, 2, 3 or 4, not {raw_quarter!r}", location="quarter")
    allowed = [value for value, _label in opts.ccos]
    raw_cco = (_one(params, "cco") or allowed[0]) if allowed else None
    if raw_cco is None or raw_cco not in allowed:
        raise UsageError(f"CCO {raw_cco!r} is not one you may see ({', '.join(allowed)})", location="cco")
    sources = _one(params, "sources") or "all"
    if sources not in SOURCE_MODES:
        raise UsageError(f"sources must be 'all' or 'claims', not {sources!r}", location="sources")
    return Selection(
        measure=measure,
        kind=kind,
        year=year,
        quarter=int(raw_quarter),
        cco=None if raw_cco == STATEWIDE else raw_cco,
        sources=sources,
        clinic=_one(params, "clinic"),
        group=_one(params, "group"),
    )


__all__ = [
    "DEFAULT_MEASURE",
    "KINDS",
    "KIND_LABELS",
    "PARAMS",
    "SOURCE_LABELS",
    "SOURCE_MODES",
    "STATEWIDE",
    "Options",
    "PeriodKind",
    "Selection",
    "options",
    "parse",
    "quarter_end",
]
