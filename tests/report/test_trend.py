"""Trend and targets: quarter and rolling-year periods at their boundaries, rates with an empty
denominator, the improvement-target formula and its edge cases (pure); end to end on SQLite and
PostgreSQL: a service on a quarter's last day, rolling windows, targets met by benchmark, by
improvement target or not at all, and periods read from persisted runs."""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from fhir_adapter.errors import MappingsError
from fhir_adapter.fhir.dates import to_micros
from fhir_adapter.ingest.runner import ingest_items
from fhir_adapter.measure.spec import Mappings, Provenance
from fhir_adapter.report import trend as tr
from fhir_adapter.report.targets import Improvement, Target, assess, load_targets
from fhir_adapter.settings import Settings
from fhir_adapter.store.db import ParsedResource, Store
from fhir_adapter.store.evaluate import evaluate
from fhir_adapter.store.runs import persist_run
from tests import cohorts as c
from tests.conftest import ROOT

MEASURE = "oregon-se-issue-focused"
P = Provenance("assumption", "test")


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        pytest.param(date(2025, 1, 1), date(2025, 12, 31), ["2025-03-31", "2025-06-30", "2025-09-30", "2025-12-31"],
                     id="calendar-year"),
        pytest.param(date(2025, 3, 31), date(2025, 3, 31), ["2025-03-31"], id="one-day-on-quarter-end"),
        pytest.param(date(2025, 4, 1), date(2025, 6, 29), [], id="range-ends-day-before-quarter-end"),
        pytest.param(date(2024, 10, 1), date(2025, 3, 31), ["2024-12-31", "2025-03-31"], id="across-years"),
    ],
)  # fmt: skip
def test_quarter_ends(start: date, end: date, expected: list[str]) -> None:
    assert [q.isoformat() for q in tr.quarter_ends(start, end)] == expected


@pytest.mark.parametrize(
    ("end", "quarter", "rolling"),
    [
        pytest.param(date(2025, 3, 31), ("2025-01-01", "2025-03-31"), ("2024-04-01", "2025-03-31"), id="q1"),
        pytest.param(date(2025, 6, 30), ("2025-04-01", "2025-06-30"), ("2024-07-01", "2025-06-30"), id="q2"),
        pytest.param(date(2024, 12, 31), ("2024-10-01", "2024-12-31"), ("2024-01-01", "2024-12-31"), id="q4-is-year"),
    ],
)  # fmt: skip
def test_trend_periods(end: date, quarter: tuple[str, str], rolling: tuple[str, str]) -> None:
    periods = tr.trend_periods(end, end)
    assert [(p.kind, p.start.isoformat(), p.end.isoformat()) for p in periods] == [
        ("quarter", *quarter), ("rolling-12", *rolling),
    ]  # fmt: skip
    assert periods[0].label == f"{end.year}Q{(end.month + 2) // 3}"


def test_rates_with_empty_denominator() -> None:
    outcomes = [
        tr.Outcome("ALLCARE", "g", True, True, False),  # excluded: the base is 0
        tr.Outcome("IHN", "g", True, False, True),
        tr.Outcome("IHN", "g", False, False, False),  # not in the denominator
        tr.Outcome(None, "g", True, False, False),
    ]
    got = {
        (r.group, r.cco): (r.denominator, r.exclusions, r.numerator, r.rate)
        for r in tr.rates(outcomes, ["g", "h"])
    }
    assert got == {
        ("g", "ALLCARE"): (1, 1, 0, None),
        ("g", "IHN"): (1, 0, 1, 1.0),
        ("g", "unknown"): (1, 0, 0, 0.0),
        ("g", "all"): (3, 1, 1, 0.5),
        ("h", "all"): (0, 0, 0, None),
    }


def _target(benchmark: float | None, gap: float = 0.1, floor: float = 0.01) -> Target:
    return Target(MEASURE, 2025, "all-enrolled", benchmark, P, Improvement("gap-closure", gap, floor, P))


@pytest.mark.parametrize(
    ("target", "baseline", "expected"),
    [
        pytest.param(_target(0.6), 0.0, 0.06, id="gap-closure-above-floor"),
        pytest.param(_target(0.6), 0.5, 0.51, id="floor-above-gap-closure"),
        pytest.param(_target(0.6), 0.595, None, id="target-would-reach-benchmark"),
        pytest.param(_target(0.6), 0.6, None, id="baseline-at-benchmark"),
        pytest.param(_target(0.6), 0.7, None, id="baseline-above-benchmark"),
        pytest.param(_target(0.6), None, None, id="no-baseline"),
        pytest.param(_target(None), 0.2, 0.21, id="no-benchmark-floor-only"),
        pytest.param(Target(MEASURE, 2025, "g", 0.6, P, None), 0.2, None, id="no-improvement-rule"),
    ],
)
def test_improvement_target(target: Target, baseline: float | None, expected: float | None) -> None:
    assert target.improvement_target(baseline) == expected


@pytest.mark.parametrize(
    ("rate", "baseline", "expected"),
    [
        pytest.param(0.6, 0.5, (True, True, True), id="benchmark-exactly"),
        pytest.param(0.51, 0.5, (False, True, True), id="improvement-target-exactly"),
        pytest.param(0.509999, 0.5, (False, False, False), id="just-below-both"),
        pytest.param(0.7, None, (True, None, True), id="benchmark-without-baseline"),
        pytest.param(None, 0.5, (None, None, None), id="no-rate-denominator-0"),
    ],
)
def test_assess(rate: float | None, baseline: float | None, expected: tuple[Any, ...]) -> None:
    a = assess(_target(0.6), rate, baseline)
    assert (a.meets_benchmark, a.meets_target, a.met) == expected


# -- end to end -------------------------------------------------------------------------------

LOADED = datetime(2026, 1, 2, tzinfo=UTC)
NOW = datetime(2026, 1, 15, tzinfo=UTC)
#: child -> (CCO, service days)
CHILDREN: dict[str, tuple[str, tuple[str, ...]]] = {
    "a1": ("ALLCARE", ("2024-06-30", "2025-03-31")),
    "a2": ("ALLCARE", ("2025-04-01",)),
    "i1": ("IHN", ()),
    "i2": ("IHN", ()),
    "h1": ("HEALTH-SHARE", ("2024-05-05",)),
    "h2": ("HEALTH-SHARE", ("2025-02-02",)),
    "h3": ("HEALTH-SHARE", ("2025-05-05",)),
    "h4": ("HEALTH-SHARE", ()),
}
TARGETS = """
[[target]]
year = 2025
group = "all-enrolled"
benchmark = 0.6
status = "candidate"
source = "test"

[target.improvement]
method = "gap-closure"
gap_closure = 0.1
min_improvement = 0.01
status = "assumption"
source = "test"
"""


def _load(store: Store) -> None:
    resources: list[dict[str, Any]] = []
    for pid, (cco, days) in CHILDREN.items():
        resources += [
            c.patient(pid, "2021-06-01"),
            c.coverage(f"cov-{pid}", pid, "2023-01-01", None, cco=cco),
        ]
        resources += [c.eob(f"e-{pid}-{day}", pid, day) for day in days]
    ingest_items(store, [ParsedResource(r["resourceType"], r["id"], r) for r in resources], "s1", batch_size=100,
                 clock=lambda: LOADED)  # fmt: skip


@pytest.fixture
def site(tmp_path: Path) -> Settings:
    folder = tmp_path / "mappings"
    shutil.copytree(ROOT / "mappings", folder)
    (folder / MEASURE / "targets.toml").write_text(TARGETS)
    return Settings(database_url="sqlite://", mappings_dir=folder)


def _trend(store: Store, settings: Settings, **kw: Any) -> tr.Trend:
    return tr.run_trend(
        settings, store, MEASURE, date(2025, 1, 1), date(2025, 6, 30), clock=lambda: NOW, **kw
    )


def test_trend_rates_at_quarter_boundaries(store: Store, site: Settings) -> None:
    _load(store)
    got = {(r["period"], r["cco"]): (r["denominator"], r["numerator"], r["rate"])
           for r in _trend(store, site).rows() if r["group"] == "all-enrolled"}  # fmt: skip
    assert {k: v for k, v in got.items() if k[1] == "ALLCARE"} == {
        ("2025Q1", "ALLCARE"): (2, 1, 0.5),  # a1 on the quarter's last day
        ("2025Q2", "ALLCARE"): (2, 1, 0.5),  # a2 on the next quarter's first day
        ("12m-2025-03-31", "ALLCARE"): (2, 1, 0.5),
        ("12m-2025-06-30", "ALLCARE"): (2, 2, 1.0),
    }
    assert got[("12m-2025-03-31", "HEALTH-SHARE")] == (4, 2, 0.5)  # h1 (2024-05-05) and h2
    assert got[("12m-2025-06-30", "HEALTH-SHARE")] == (4, 2, 0.5)  # h1 has left the window, h3 joined
    assert got[("2025Q1", "IHN")] == (2, 0, 0.0)
    assert got[("2025Q2", "all")] == (8, 2, 0.25)


def test_targets_met_and_not_met(store: Store, site: Settings) -> None:
    _load(store)
    trend = _trend(store, site)
    got = {r["cco"]: (r["rate"], r["baseline"], r["improvement_target"], r["meets_benchmark"],
                      r["meets_improvement_target"], r["met"]) for r in trend.targets}  # fmt: skip
    assert got == {
        "ALLCARE": (1.0, 0.5, 0.51, True, True, True),
        "HEALTH-SHARE": (0.5, 0.25, 0.285, False, True, True),
        "IHN": (0.0, 0.0, 0.06, False, False, False),
        "all": (0.5, 0.25, 0.285, False, True, True),
    }
    row = trend.targets[0]
    assert (row["rate_period"], row["baseline_period"], row["benchmark"], row["benchmark_status"]) == (
        "12m-2025-06-30", "2024-01-01/2024-12-31", 0.6, "candidate",
    )  # fmt: skip


def test_cco_filter(store: Store, site: Settings) -> None:
    _load(store)
    trend = _trend(store, site, cco="IHN")
    assert {r["cco"] for r in trend.rows()} == {"IHN"} and [r["cco"] for r in trend.targets] == ["IHN"]


def test_periods_read_from_persisted_runs(store: Store, site: Settings, mappings: Mappings) -> None:
    _load(store)
    spec = mappings.measure_for(MEASURE, date(2025, 3, 31))
    earlier = to_micros(datetime(2026, 1, 10, tzinfo=UTC))
    ev = evaluate(store, mappings, spec, date(2025, 1, 1), date(2025, 3, 31), earlier, "all")
    run_id = persist_run(store, ev, now_us=earlier)

    def origins(trend: tr.Trend) -> dict[str, tuple[str, str | None]]:
        return {r["period"]: (r["origin"], r["run_id"]) for r in trend.rows() if r["cco"] == "all"}

    latest = _trend(store, site, persisted="latest")
    assert origins(latest)["2025Q1"] == ("persisted", run_id)
    assert origins(latest)["2025Q2"] == ("computed", None)
    assert origins(_trend(store, site, persisted="exact"))["2025Q1"] == ("computed", None)
    stored = _trend(store, site, persisted="never", persist=True)
    assert all(run is not None for _o, run in origins(stored).values())
    assert [r for r in latest.rows() if r["period"] == "2025Q1"] != []
    assert {(r["cco"], r["rate"]) for r in latest.rows() if r["period"] == "2025Q1"} == {
        (r["cco"], r["rate"]) for r in stored.rows() if r["period"] == "2025Q1"
    }


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        pytest.param(TARGETS.replace("benchmark = 0.6", "benchmark = 60"), "between 0.0 and 1.0", 5,
                     id="benchmark-as-percent"),
        pytest.param(TARGETS.replace('group = "all-enrolled"', 'group = "everyone"'), "has no group 'everyone'", 4,
                     id="unknown-group"),
        pytest.param(TARGETS.replace('method = "gap-closure"', 'method = "other"'), "'other' is not one of", 10,
                     id="unknown-method"),
        pytest.param(TARGETS + TARGETS.split("[target.improvement]", maxsplit=1)[0], "a second target for 2025", 17, id="duplicate-year"),
        pytest.param(TARGETS.replace("year = 2025", "year = 2019"), "no mappings for", 3, id="year-before-measure"),
    ],
)  # fmt: skip
def test_target_file_errors(tmp_path: Path, mappings: Mappings, text: str, message: str, line: int) -> None:
    folder = tmp_path / MEASURE
    folder.mkdir()
    (folder / "targets.toml").write_text(text)
    with pytest.raises(MappingsError, match=message) as info:
        load_targets(tmp_path, MEASURE, mappings)
    assert info.value.location == f"{folder / 'targets.toml'}:{line}"


def test_shipped_targets_load(mappings: Mappings) -> None:
    targets = load_targets(ROOT / "mappings", MEASURE, mappings)
    assert {t.year for t in targets} >= {2025} and all(t.provenance.status == "candidate" for t in targets)
