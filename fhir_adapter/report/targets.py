"""Benchmarks and improvement targets (spec §4 "Trend": progress against a benchmark and an
improvement target; parameters in ``mappings/``, the formula is [A]).

OHA's CCO incentive program [V, OHA "CCO Metrics Benchmark Selection Tool" page]: a CCO meets a
measure by reaching either (1) the benchmark, the same for every CCO, or (2) its own improvement
target, set from its baseline (its most recent rate, normally the previous year's); CCOs close
to the benchmark get no improvement target.

The improvement-target formula here is the "Minnesota method" style [A, UNVERIFIED for this
measure]: close ``gap_closure`` of the gap between baseline and benchmark, and improve by at least
``min_improvement`` (a floor, in rate units: ``0.01`` = one percentage point)::

    target = baseline + max(gap_closure × (benchmark − baseline), min_improvement)

There is no improvement target when the baseline is unknown, when the baseline already reaches
the benchmark, or when the target would reach the benchmark (the benchmark then applies alone).
Without a benchmark (not yet set) the target is ``baseline + min_improvement``.

``mappings/<measure-id>/targets.toml``::

    [[target]]
    year = 2025                  # measurement year
    group = "all-enrolled"       # the measure group the rates are of
    benchmark = 0.05             # optional: omitted while OHA has not set one
    status = "candidate"         # candidate | assumption | verified | official
    source = "..."

    [target.improvement]         # optional
    method = "gap-closure"
    gap_closure = 0.10
    min_improvement = 0.01
    status = "assumption"
    source = "..."
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

from fhir_adapter.measure.spec import Mappings, Provenance
from fhir_adapter.report.params import number, provenance, read_toml

TARGETS_FILE = "targets.toml"
METHODS = ("gap-closure",)
#: Comparisons of rates tolerate floating-point noise below this.
EPSILON = 1e-9


@dataclass(frozen=True)
class Improvement:
    method: str
    gap_closure: float
    min_improvement: float
    provenance: Provenance


@dataclass(frozen=True)
class Target:
    measure: str
    year: int
    group: str
    benchmark: float | None
    provenance: Provenance
    improvement: Improvement | None
    location: str = ""

    def improvement_target(self, baseline: float | None) -> float | None:
        """The CCO-specific improvement target for ``baseline`` (module docstring), or ``None``."""
        if baseline is None or self.improvement is None:
            return None
        if self.benchmark is not None and baseline >= self.benchmark - EPSILON:
            return None
        gap = (self.benchmark - baseline) if self.benchmark is not None else 0.0
        target = baseline + max(self.improvement.gap_closure * gap, self.improvement.min_improvement)
        if self.benchmark is not None and target >= self.benchmark - EPSILON:
            return None
        return min(round(target, 6), 1.0)


@dataclass(frozen=True)
class Assessment:
    """Whether a rate meets the benchmark or the improvement target (``None``: cannot tell)."""

    rate: float | None
    baseline: float | None
    benchmark: float | None
    improvement_target: float | None
    meets_benchmark: bool | None
    meets_target: bool | None

    @property
    def met(self) -> bool | None:
        """Benchmark or improvement target reached; ``None`` without a rate or anything to reach."""
        flags = [f for f in (self.meets_benchmark, self.meets_target) if f is not None]
        if self.rate is None or not flags:
            return None
        return any(flags)


def assess(target: Target, rate: float | None, baseline: float | None) -> Assessment:
    improvement = target.improvement_target(baseline)
    meets_benchmark = None if rate is None or target.benchmark is None else rate >= target.benchmark - EPSILON
    meets_target = None if rate is None or improvement is None else rate >= improvement - EPSILON
    return Assessment(rate, baseline, target.benchmark, improvement, meets_benchmark, meets_target)


def load_targets(root: Path, measure_id: str, mappings: Mappings | None = None) -> list[Target]:
    """``<root>/<measure_id>/targets.toml`` strictly (errors at ``file:line``); an absent file
    means no targets. With ``mappings``, each group must exist in the measure-year's spec."""
    path = root / measure_id / TARGETS_FILE
    if not path.is_file():
        return []
    top = read_toml(path)
    top.keys((), ("target",))
    out: list[Target] = []
    seen: dict[tuple[int, str], int] = {}
    for t in top.tables("target"):
        t.keys(("year", "group", "status", "source"), ("benchmark", "improvement"))
        year = t.get_int("year", 1900)
        group = t.slug("group")
        if mappings is not None:
            try:
                spec = mappings.measure_for(measure_id, date(year, 12, 31))
            except KeyError:
                raise t.error("year", f"no mappings for {measure_id} in or before {year}") from None
            if group not in [g.id for g in spec.groups]:
                raise t.error("group", f"{measure_id} {spec.year} has no group {group!r}")
        if (year, group) in seen:
            raise t.error(
                "year", f"a second target for {year} {group} (first is target {seen[(year, group)]})"
            )
        seen[(year, group)] = len(out) + 1
        improvement = None
        if "improvement" in t.data:
            i = t.table("improvement")
            i.keys(("method", "gap_closure", "min_improvement", "status", "source"))
            improvement = Improvement(
                method=i.choice("method", METHODS),
                gap_closure=number(i, "gap_closure", minimum=0.0, maximum=1.0),
                min_improvement=number(i, "min_improvement", minimum=0.0, maximum=1.0),
                provenance=provenance(i),
            )
        out.append(
            Target(
                measure=measure_id,
                year=year,
                group=group,
                benchmark=number(t, "benchmark", minimum=0.0, maximum=1.0) if "benchmark" in t.data else None,
                provenance=provenance(t),
                improvement=improvement,
                location=str(path),
            )
        )
    return out


def target_for(targets: list[Target], year: int, group: str) -> Target | None:
    return next((t for t in targets if t.year == year and t.group == group), None)


__all__ = [
    "EPSILON",
    "TARGETS_FILE",
    "Assessment",
    "Improvement",
    "Target",
    "assess",
    "load_targets",
    "target_for",
]
