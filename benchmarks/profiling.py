"""Profiles that explain where the statewide benchmark's time goes, as small text files.

``python -m benchmarks.profiling ingest --patients N --engine sqlite|postgresql --work DIR --out FILE``
  cProfile of ``fhir_adapter.ingest.runner.ingest_paths`` over every source folder of a synthetic
  cohort (synthesised into ``DIR/data`` unless already there), into an empty store, in one process
  (``ingest_workers=1``, so the parsing worker's work is visible too): the top 30 functions by own
  time and by cumulative time, and the own time inside the database driver.

``python -m benchmarks.profiling evaluate --database URL --measure ID --year Y --out FILE``
  the same for ``fhir_adapter.workflow.run_evaluation`` on an existing store, plus the 30 slowest
  SQL statements (set-based evaluation spends its time in the database, which cProfile shows only
  as one ``execute`` line).

cProfile slows pure-Python code (roughly 1.5-2x here), so the profiled seconds are longer than the
benchmark's; the shares are what matter.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

from sqlalchemy import event
from sqlalchemy.engine import Engine as SAEngine

from benchmarks.statewide import Engine, cohort, git_revision, machine_info, store_url
from fhir_adapter import workflow
from fhir_adapter.mappings import load_mappings
from fhir_adapter.settings import Settings
from fhir_adapter.synth import SOURCES

T = TypeVar("T")
TOP = 30
_SPACES = re.compile(r"\s+")


@dataclass
class SqlTimer:
    """Seconds per SQL statement text (whitespace collapsed) measured around the DBAPI call."""

    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    _started: list[float] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(self.seconds.values())

    def attach(self, engine: SAEngine) -> None:
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, *_args: Any) -> None:
        self._started.append(time.perf_counter())

    def _after(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        key = _SPACES.sub(" ", statement).strip()
        self.seconds[key] += time.perf_counter() - self._started.pop()
        self.calls[key] += 1


def _short(path: str) -> str:
    for marker in ("/site-packages/", "/work/main/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def top_functions(stats: pstats.Stats, key: int, top: int = TOP) -> list[str]:
    """The ``top`` functions sorted by ``key`` (2: own time, 3: cumulative time) as text rows."""
    raw = cast(dict[tuple[str, int, str], tuple[int, int, float, float, Any]], stats.stats)  # type: ignore[attr-defined]
    mine = str(Path(__file__).parent)  # the profiler's own wrappers are not interesting
    rows = sorted(
        ((k, v) for k, v in raw.items() if not k[0].startswith(mine)), key=lambda kv: kv[1][key], reverse=True
    )[:top]
    lines = [f"{'ncalls':>10} {'tottime':>9} {'cumtime':>9}  function"]
    for (file, line, name), (_cc, nc, tt, ct, _callers) in rows:
        where = f"{_short(file)}:{line}({name})" if line else name
        lines.append(f"{nc:>10} {tt:>9.3f} {ct:>9.3f}  {where}")
    return lines


_DRIVER = re.compile(r"<method '(execute|executemany|executescript|commit)' of 'sqlite3\.|psycopg")


def driver_seconds(stats: pstats.Stats) -> float:
    """Own time spent in the database driver: sqlite3's C methods, or any psycopg function."""
    raw = cast(dict[tuple[str, int, str], tuple[int, int, float, float, Any]], stats.stats)  # type: ignore[attr-defined]
    return sum(v[2] for (file, _line, name), v in raw.items() if _DRIVER.search(file + name))


def top_statements(timer: SqlTimer, top: int = TOP, width: int = 200) -> list[str]:
    rows = sorted(timer.seconds.items(), key=lambda kv: kv[1], reverse=True)[:top]
    lines = [f"{'seconds':>9} {'calls':>7}  statement (first {width} characters)"]
    lines += [f"{s:>9.3f} {timer.calls[sql]:>7}  {sql[:width]}" for sql, s in rows]
    return lines


@contextmanager
def profiled() -> Iterator[cProfile.Profile]:
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        yield profiler
    finally:
        profiler.disable()


def _header(title: str, lines: list[str]) -> list[str]:
    git = git_revision()
    machine = machine_info()
    return [
        title,
        f"date {datetime.now(UTC).isoformat(timespec='seconds')}, commit {git['commit']}"
        f" (code diff {git['code_diff_sha256']}), {machine['nproc']} x {machine['cpu']}, "
        f"{machine['memory_gb']} GB, Python {machine['python']}, SQLite {machine['sqlite']}",
        *lines,
        "",
    ]


def _timed(func: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    value = func()
    return value, time.perf_counter() - started


def profile_ingest(patients: int, engine: Engine, work: Path, seed: int = 1) -> list[str]:
    """Profile ingest of a synthetic cohort into an empty store; returns the report lines."""
    work = work.resolve()
    manifest, _synth = cohort(work / "data", patients, seed)
    timer = SqlTimer()
    with store_url(engine, work / f"profile-{engine}", patients, keep=False) as (url, _schema):
        # One process: a parsing worker (ingest_workers=2) would be invisible to cProfile.
        one = {"ingest_workers": 1} if "ingest_workers" in Settings.model_fields else {}
        settings: Settings = cast(Any, Settings)(database_url=url, **one)
        store = workflow.open_store(settings)
        timer.attach(store.engine)
        try:
            with profiled() as profiler:
                results, seconds = _timed(
                    lambda: [
                        workflow.ingest(settings, store, [work / "data" / source], source)
                        for source in SOURCES
                    ]
                )
        finally:
            store.close()
    read = sum(r.read for r in results)
    stats = pstats.Stats(profiler)
    driver = driver_seconds(stats)
    return [
        *_header(
            f"cProfile: ingest of {patients:,} synthetic children ({read:,} resources) into {engine}",
            [
                f"{seconds:.1f} s under the profiler = {read / seconds:,.0f} resources/s "
                f"(batch size {settings.ingest_batch_size}); {manifest['total']:,} resources in the cohort",
                "one process (ingest_workers=1), so parsing, extraction and writing are all visible",
                f"own time inside the database driver (sqlite3/psycopg execute, executemany, commit, copy): "
                f"{driver:.1f} s = {driver / seconds:.0%}; SQL issued through SQLAlchemy: {timer.total:.1f} s",
            ],
        ),
        f"top {TOP} by own time (tottime)",
        *top_functions(stats, 2),
        "",
        f"top {TOP} by cumulative time",
        *top_functions(stats, 3),
    ]


def profile_evaluate(database: str, measure: str, year: int, report_type: str) -> list[str]:
    """Profile one evaluation on an existing store; returns the report lines."""
    settings = Settings(database_url=database)
    mappings = load_mappings(settings.mappings_dir)
    store = workflow.open_store(settings)
    timer = SqlTimer()
    timer.attach(store.engine)
    request = workflow.EvaluationRequest(measure, date(year, 1, 1), date(year, 12, 31), "all")
    try:
        with profiled() as profiler:
            ev, seconds = _timed(
                lambda: workflow.run_evaluation(
                    settings, store, request, evidence=report_type != "summary", mappings=mappings
                )
            )
    finally:
        store.close()
    stats = pstats.Stats(profiler)
    return [
        *_header(
            f"cProfile: {measure} {year} ({report_type}) over {len(ev.children):,} children, {store.dialect}",
            [
                f"{seconds:.1f} s under the profiler; SQL (cursor execute) {timer.total:.1f} s "
                f"= {timer.total / seconds:.0%} of the time"
            ],
        ),
        f"top {TOP} SQL statements by time",
        *top_statements(timer),
        "",
        f"top {TOP} by cumulative time",
        *top_functions(stats, 3),
        "",
        f"top {TOP} by own time (tottime)",
        *top_functions(stats, 2),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Profiles of the statewide benchmark's phases.")
    sub = parser.add_subparsers(dest="what", required=True)
    ing = sub.add_parser("ingest")
    ing.add_argument("--patients", type=int, required=True)
    ing.add_argument("--engine", choices=["sqlite", "postgresql"], default="sqlite")
    ing.add_argument("--work", type=Path, required=True)
    ing.add_argument("--seed", type=int, default=1)
    ing.add_argument("--out", type=Path, required=True)
    ev = sub.add_parser("evaluate")
    ev.add_argument("--database", required=True)
    ev.add_argument("--measure", required=True)
    ev.add_argument("--year", type=int, required=True)
    ev.add_argument("--report-type", choices=["summary", "subject-list"], default="summary")
    ev.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.what == "ingest":
        lines = profile_ingest(
            int(args.patients), cast(Engine, args.engine), cast(Path, args.work), int(args.seed)
        )
    else:
        lines = profile_evaluate(str(args.database), str(args.measure), int(args.year), str(args.report_type))
    out = cast(Path, args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines[:6]))


if __name__ == "__main__":
    main()
