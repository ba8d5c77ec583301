"""The statewide end-to-end benchmark of issue #3 §10: synthesise N children, ingest them through
the CLI, evaluate both measures, write the reports, and record the timings.

``python -m benchmarks.statewide --patients N --engine sqlite|postgresql --work DIR [--keep]``

Phases (each a separate process, so its peak RSS is its own and is read with ``os.wait4``):

1. synthesise: ``fhir_adapter.synth.synthesize`` in this process, timed but not part of the
   target (synthetic data stands in for files that already exist); reused when ``DIR/data``
   already holds the same cohort (same patients, seed and years in ``manifest.json``);
2. ingest: ``fhir-adapter ingest DIR/data/<source> --source <source> --quiet`` once per source
   folder (``oha-claims``, ``ehr-clinic-a``, ``ehr-clinic-b``);
3. ``oregon-se-issue-focused`` 2025 summary report, ``oregon-se-reach`` 2024 summary report and an
   ``oregon-se-issue-focused`` 2025 subject-list report, each by :mod:`benchmarks.evaluate_phase`
   (the library calls ``fhir-adapter evaluate`` makes, with the evaluation and the report timed
   apart), reports written to files.

Every process of a run imports a copy of the working tree taken when the run starts
(``DIR/<engine>/code``, see :func:`snapshot_code`), because the tree changes while benchmarks run.

The target total is phases 2 and 3, wall clock, process start-up included. One JSON line per run
is printed and appended to ``benchmarks/results.jsonl`` (fields in :func:`run_benchmark`). On
PostgreSQL each run gets its own schema (``?options=-csearch_path%3D<schema>``), created first and
dropped after; peak RSS there is the adapter process only, not the database server.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast

import orjson
from sqlalchemy import create_engine, text

from fhir_adapter.settings import Settings
from fhir_adapter.synth import SOURCES, synthesize

Engine = Literal["sqlite", "postgresql"]

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results.jsonl"
PG_BASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
FIRST_YEAR = 2024
LAST_YEAR = 2025
#: (phase name, measure id, year, report type): issue #3 §10's "evaluate both measures".
EVALUATIONS: tuple[tuple[str, str, int, Literal["summary", "subject-list"]], ...] = (
    ("issue_focused_summary", "oregon-se-issue-focused", 2025, "summary"),
    ("reach_summary", "oregon-se-reach", 2024, "summary"),
    ("issue_focused_subject_list", "oregon-se-issue-focused", 2025, "subject-list"),
)
_CLI_LINE = re.compile(r"(\d+) resources read in ([\d.]+)s: (\d+) created.*?(\d+) rejected", re.DOTALL)


@dataclass(frozen=True)
class ProcessRun:
    """One timed child process: wall seconds, peak resident set (MB) of its largest process,
    peak summed over its process tree (RSS and PSS, sampled), exit code, stderr text."""

    seconds: float
    peak_rss_mb: float
    tree_rss_mb: float
    tree_pss_mb: float
    returncode: int
    stderr: str


def _proc_children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # field 4; the name may hold spaces
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def tree_memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in KiB summed over ``pid`` and its descendants (``/proc/*/smaps_rollup``).
    PSS shares pages between processes (a forked worker's copy-on-write pages count once)."""
    children = _proc_children()
    todo, rss, pss = [pid], 0, 0
    while todo:
        current = todo.pop()
        todo.extend(children.get(current, []))
        try:
            rollup = Path(f"/proc/{current}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in rollup.splitlines():
            if line.startswith("Rss:"):
                rss += int(line.split()[1])
            elif line.startswith("Pss:"):
                pss += int(line.split()[1])
    return rss, pss


class _TreeSampler(threading.Thread):
    """Samples :func:`tree_memory_kb` of one process until :meth:`stop`; keeps the peaks."""

    def __init__(self, pid: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_rss = self.peak_pss = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            rss, pss = tree_memory_kb(self.pid)
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def run_timed(
    argv: Sequence[str], log_dir: Path, name: str, code: Path = ROOT, sample_every: float = 0.25
) -> ProcessRun:
    """Run ``argv`` with ``code`` (a copy of the tree, see :func:`snapshot_code`) first on the
    Python path and as the working directory. Peak RSS comes from ``os.wait4`` (Linux
    ``ru_maxrss``, KiB): the largest single process of the tree, since a waited-for worker's peak
    is folded into its parent's. The tree's summed RSS/PSS is sampled every ``sample_every``
    seconds (a peak shorter than that can be missed)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(code) + os.pathsep + env.get("PYTHONPATH", "")
    env["COLUMNS"] = "200"  # rich wraps the CLI summary line at 80 columns otherwise
    err_path = log_dir / f"{name}.stderr"
    with (log_dir / f"{name}.stdout").open("wb") as out, err_path.open("wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(list(argv), stdout=out, stderr=err, cwd=code, env=env)
        sampler = _TreeSampler(proc.pid, sample_every)
        sampler.start()
        try:
            _pid, status, usage = os.wait4(proc.pid, 0)
        finally:
            sampler.stop()
        seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return ProcessRun(
        seconds=round(seconds, 3),
        peak_rss_mb=round(usage.ru_maxrss / 1024, 1),
        tree_rss_mb=round(sampler.peak_rss / 1024, 1),
        tree_pss_mb=round(sampler.peak_pss / 1024, 1),
        returncode=proc.returncode,
        stderr=err_path.read_text("utf-8"),
    )


def cli_command() -> list[str]:
    """The ``fhir-adapter`` console script of this interpreter's environment."""
    script = Path(sys.executable).parent / "fhir-adapter"
    return [str(script)] if script.exists() else [sys.executable, "-m", "fhir_adapter"]


# -- the machine and the code ---------------------------------------------------------------
def machine_info(cpuinfo: str | None = None, meminfo: str | None = None) -> dict[str, Any]:
    """CPUs usable by this process, the CPU model from /proc/cpuinfo and the memory total."""
    if cpuinfo is None:
        cpuinfo = _read("/proc/cpuinfo")
    if meminfo is None:
        meminfo = _read("/proc/meminfo")
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
        platform.processor() or "unknown",
    )
    mem_kb = next((int(line.split()[1]) for line in meminfo.splitlines() if line.startswith("MemTotal:")), 0)
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": model,
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
    }


def _read(path: str) -> str:
    try:
        return Path(path).read_text("utf-8")
    except OSError:
        return ""


def git_revision(root: Path = ROOT) -> dict[str, str | None]:
    """``git rev-parse --short HEAD`` plus ``+dirty`` when the tree has changes; for a dirty tree
    also a short SHA-256 of ``git diff HEAD`` over the code the benchmark runs (fhir_adapter/,
    mappings/), so two runs on different uncommitted code can be told apart (None: that code is
    as committed, the changes are elsewhere)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, check=False)
        return done.stdout.decode("utf-8", "replace") if done.returncode == 0 else ""

    head = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    dirty = bool(git("status", "--porcelain").strip())
    diff_sha = None
    if dirty:
        diff = git("diff", "HEAD", "--", "fhir_adapter", "mappings")
        untracked = git("ls-files", "--others", "--exclude-standard", "--", "fhir_adapter", "mappings")
        if diff or untracked.strip():
            digest = hashlib.sha256(diff.encode())
            for name in sorted(untracked.split()):
                digest.update(name.encode() + b"\0" + (root / name).read_bytes())
            diff_sha = digest.hexdigest()[:12]
    return {"commit": head + ("+dirty" if dirty else ""), "code_diff_sha256": diff_sha}


#: What a run needs of the tree: the package, its data folders, and this package (the workers).
SNAPSHOT = ("fhir_adapter", "mappings", "conformance", "benchmarks")
#: settings.packaged_dir() takes the checkout's mappings/ only next to a pyproject.toml.
SNAPSHOT_FILES = ("pyproject.toml",)


def snapshot_code(target: Path, root: Path = ROOT) -> str:
    """Copy the working tree's code to ``target`` and return a short SHA-256 of the copied
    fhir_adapter/ and mappings/ files. Other engineers edit the tree while benchmarks run; every
    process of one run imports this copy, so a run never mixes two versions of the code (a store
    written by one schema and read by another)."""
    shutil.rmtree(target, ignore_errors=True)
    for name in SNAPSHOT:
        shutil.copytree(root / name, target / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in SNAPSHOT_FILES:
        shutil.copy2(root / name, target / name)
    digest = hashlib.sha256()
    for name in ("fhir_adapter", "mappings"):
        for path in sorted((target / name).rglob("*")):
            if path.is_file():
                digest.update(str(path.relative_to(target)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def imported_from(code: Path, log_dir: Path) -> Path:
    """Where the run's processes import ``fhir_adapter`` from (must be inside ``code``)."""
    run = run_timed(
        [sys.executable, "-c", "import fhir_adapter; print(fhir_adapter.__file__)"],
        log_dir,
        "import-check",
        code,
    )
    if run.returncode != 0:
        raise RuntimeError(f"cannot import fhir_adapter from {code}:\n{run.stderr[-4000:]}")
    return Path((log_dir / "import-check.stdout").read_text().strip())


# -- stores -----------------------------------------------------------------------------------
@contextmanager
def store_url(engine: Engine, folder: Path, patients: int, keep: bool) -> Iterator[tuple[str, str | None]]:
    """An empty store for one run: (URL, PostgreSQL schema or None); removed after unless ``keep``."""
    if engine == "sqlite":
        folder.mkdir(parents=True, exist_ok=True)
        db = folder / "store.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        try:
            yield f"sqlite:///{db}", None
        finally:
            if not keep:
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{db}{suffix}").unlink(missing_ok=True)
        return
    schema = f"bench_{patients}_{os.getpid()}_{int(time.time())}"
    admin = create_engine(PG_BASE_URL)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        yield f"{PG_BASE_URL}?options=-csearch_path%3D{schema}", schema
    finally:
        if not keep:
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def database_mb(engine: Engine, url: str, schema: str | None) -> tuple[float, str | None]:
    """Size of the store after the run (tables, indexes and TOAST; SQLite file plus WAL) and the
    PostgreSQL server version."""
    if engine == "sqlite":
        path = Path(url.removeprefix("sqlite:///"))
        size = sum(Path(f"{path}{s}").stat().st_size for s in ("", "-wal") if Path(f"{path}{s}").exists())
        return round(size / 1e6, 1), None
    admin = create_engine(PG_BASE_URL)
    try:
        with admin.connect() as conn:
            size = conn.execute(
                text(
                    "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = :s AND c.relkind = 'r'"
                ),
                {"s": schema},
            ).scalar_one()
            version = conn.execute(text("SHOW server_version")).scalar_one()
    finally:
        admin.dispose()
    return round(int(size) / 1e6, 1), str(version).split()[0]


# -- synthetic data ---------------------------------------------------------------------------
def cohort(data: Path, patients: int, seed: int) -> tuple[dict[str, Any], float | None]:
    """The manifest of the synthetic cohort in ``data`` and the seconds spent synthesising it
    (None when an identical cohort was already there)."""
    manifest_path = data / "manifest.json"
    if manifest_path.exists():
        manifest = cast(dict[str, Any], orjson.loads(manifest_path.read_bytes()))
        wanted = {"patients": patients, "seed": seed, "first_year": FIRST_YEAR, "last_year": LAST_YEAR}
        if all(manifest.get(k) == v for k, v in wanted.items()):
            return manifest, None
    started = time.perf_counter()
    synthesize(data, patients, seed, first_year=FIRST_YEAR, last_year=LAST_YEAR)
    seconds = time.perf_counter() - started
    return cast(dict[str, Any], orjson.loads(manifest_path.read_bytes())), round(seconds, 3)


# -- the run ----------------------------------------------------------------------------------
def ingest_phase(
    url: str, data: Path, logs: Path, counts: dict[str, dict[str, int]], code: Path
) -> dict[str, Any]:
    per_source: dict[str, Any] = {}
    for source in SOURCES:
        run = run_timed(
            [*cli_command(), "ingest", str(data / source), "--source", source, "--database", url, "--quiet"],
            logs,
            f"ingest-{source}",
            code,
        )
        match = _CLI_LINE.search(run.stderr)
        if run.returncode not in (0, 3) or match is None:
            raise RuntimeError(f"ingest of {source} failed (exit {run.returncode}):\n{run.stderr[-4000:]}")
        per_source[source] = {
            "seconds": run.seconds,
            "cli_seconds": float(match.group(2)),
            "resources": int(match.group(1)),
            "created": int(match.group(3)),
            "rejected": int(match.group(4)),
            "expected": sum(counts.get(source, {}).values()),
            "peak_rss_mb": run.peak_rss_mb,
            "tree_rss_mb": run.tree_rss_mb,
            "tree_pss_mb": run.tree_pss_mb,
        }
    seconds = sum(p["seconds"] for p in per_source.values())
    resources = sum(p["resources"] for p in per_source.values())
    return {
        "seconds": round(seconds, 3),
        "resources": resources,
        "resources_per_s": round(resources / seconds) if seconds else None,
        "peak_rss_mb": max(p["peak_rss_mb"] for p in per_source.values()),
        "tree_pss_mb": max(p["tree_pss_mb"] for p in per_source.values()),
        "per_source": per_source,
    }


def evaluation_phase(
    name: str, measure: str, year: int, report_type: str, url: str, reports: Path, logs: Path, code: Path
) -> dict[str, Any]:
    result_file = logs / f"{name}.json"
    run = run_timed(
        [
            sys.executable, "-m", "benchmarks.evaluate_phase", "--database", url, "--measure", measure,
            "--period-start", f"{year}-01-01", "--period-end", f"{year}-12-31", "--report-type", report_type,
            "--out", str(reports / f"{name}-{year}.json"), "--result", str(result_file),
        ],
        logs,
        name,
        code,
    )  # fmt: skip
    if run.returncode != 0:
        raise RuntimeError(f"{name} failed (exit {run.returncode}):\n{run.stderr[-4000:]}")
    timings = cast(dict[str, Any], orjson.loads(result_file.read_bytes()))
    evaluate_s = float(timings["evaluate_s"])
    return {
        "measure": measure,
        "year": year,
        "report_type": report_type,
        "seconds": run.seconds,
        **timings,
        "children_per_s": round(timings["children"] / evaluate_s) if evaluate_s else None,
        "peak_rss_mb": run.peak_rss_mb,
        "tree_pss_mb": run.tree_pss_mb,
    }


def run_benchmark(
    patients: int,
    engine: Engine,
    work: Path,
    *,
    seed: int = 1,
    keep: bool = False,
    keep_data: bool = False,
    results: Path | None = RESULTS,
) -> dict[str, Any]:
    """Run every phase once and return (and append to ``results``) the record:

    ``date``, ``machine``, ``git``, ``engine``, ``patients``, ``resources``, ``synthesize_s``,
    ``phases`` (seconds per phase: ingest and the three evaluations, each wall clock of its
    processes), ``total_s`` (their sum), ``ingest`` (resources/s, peak RSS, per source),
    ``evaluations`` (per phase: evaluate_s, report_s, children, children_per_s, peak RSS),
    ``peak_rss_mb`` (the largest single process of all phases), ``tree_pss_mb`` (the largest
    sampled PSS of a phase's process tree), ``database_mb``, ``ingest_batch_size``,
    ``ingest_workers``, ``loadavg_start``/``loadavg_end`` (other work on the machine skews the
    timings) and ``code_sha256`` (the code every process of the run imported).
    """
    work = work.resolve()
    data = work / "data"
    had_data = (data / "manifest.json").exists()
    run_dir = work / engine
    logs, reports, code = run_dir / "logs", run_dir / "reports", run_dir / "code"
    record: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "git": git_revision(),
        "engine": engine,
        "patients": patients,
        "seed": seed,
        "ingest_batch_size": Settings().ingest_batch_size,
        "ingest_workers": getattr(Settings(), "ingest_workers", 1),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        record["code_sha256"] = snapshot_code(code)
        if not imported_from(code, logs).is_relative_to(code):
            raise RuntimeError(f"the run's processes do not import fhir_adapter from {code}")
        manifest, synth_s = cohort(data, patients, seed)
        record["resources"] = int(manifest["total"])
        record["synthesize_s"] = synth_s
        record["data_mb"] = round(sum(p.stat().st_size for p in data.rglob("*.ndjson")) / 1e6, 1)
        with store_url(engine, run_dir, patients, keep) as (url, schema):
            ingest = ingest_phase(url, data, logs, manifest["counts"], code)
            evaluations = {
                name: evaluation_phase(name, measure, year, kind, url, reports, logs, code)
                for name, measure, year, kind in EVALUATIONS
            }
            record["database_mb"], pg_version = database_mb(engine, url, schema)
            if pg_version:
                record["machine"]["postgresql"] = pg_version
    finally:
        if not keep:
            shutil.rmtree(reports, ignore_errors=True)
            shutil.rmtree(code, ignore_errors=True)
        if not (keep or keep_data or had_data):
            shutil.rmtree(data, ignore_errors=True)
    record["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    phases = {"ingest": ingest["seconds"]} | {name: e["seconds"] for name, e in evaluations.items()}
    record["phases"] = phases
    record["total_s"] = round(sum(phases.values()), 3)
    record["ingest"] = ingest
    record["evaluations"] = evaluations
    record["peak_rss_mb"] = max([ingest["peak_rss_mb"], *(e["peak_rss_mb"] for e in evaluations.values())])
    record["tree_pss_mb"] = max([ingest["tree_pss_mb"], *(e["tree_pss_mb"] for e in evaluations.values())])
    line = orjson.dumps(record).decode()
    if results is not None:
        with results.open("a", encoding="utf-8") as out:
            out.write(line + "\n")
    return record


def summary_lines(record: dict[str, Any]) -> list[str]:
    """A short human summary of one record."""
    ingest = record["ingest"]
    lines = [
        f"{record['engine']} {record['patients']:,} children, {record['resources']:,} resources "
        f"(synthesised in {record['synthesize_s']}s) at {record['git']['commit']}",
        f"  ingest {ingest['seconds']:.1f}s = {ingest['resources_per_s']:,} resources/s, "
        f"peak RSS {ingest['peak_rss_mb']:.0f} MB (process tree PSS {ingest['tree_pss_mb']:.0f} MB)",
    ]
    for name, e in record["evaluations"].items():
        lines.append(
            f"  {name}: {e['seconds']:.1f}s (evaluate {e['evaluate_s']:.1f}s = {e['children_per_s']:,} "
            f"children/s, report {e['report_s']:.1f}s), peak RSS {e['peak_rss_mb']:.0f} MB"
        )
    lines.append(f"  total {record['total_s']:.1f}s, database {record['database_mb']} MB")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Statewide end-to-end benchmark (issue #3 §10).")
    parser.add_argument("--patients", type=int, required=True)
    parser.add_argument("--engine", choices=["sqlite", "postgresql"], required=True)
    parser.add_argument("--work", type=Path, required=True, help="Folder for data, store, reports, logs.")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="Keep data, store and reports.")
    parser.add_argument("--keep-data", action="store_true", help="Keep the synthetic data for another run.")
    parser.add_argument("--results", type=Path, default=RESULTS, help=f"JSON lines file (default {RESULTS}).")
    parser.add_argument("--no-record", action="store_true", help="Do not append to the results file.")
    args = parser.parse_args(argv)
    record = run_benchmark(
        int(args.patients),
        cast(Engine, args.engine),
        cast(Path, args.work),
        seed=int(args.seed),
        keep=bool(args.keep),
        keep_data=bool(args.keep_data),
        results=None if args.no_record else cast(Path, args.results),
    )
    for line in summary_lines(record):
        print(line, file=sys.stderr)
    print(orjson.dumps(record).decode())


if __name__ == "__main__":
    main()
