"""The results table of benchmarks/README.md, rendered from benchmarks/results.jsonl.

``python -m benchmarks.table [--results FILE] [--last N]`` prints Markdown rows, oldest first.
Column meanings are in the README; every number comes from one JSON line written by
:mod:`benchmarks.statewide`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, cast

import orjson

from benchmarks.statewide import RESULTS

COLUMNS = (
    "date", "machine", "engine", "children", "resources", "ingest s", "resources/s",
    "eval issue-focused s", "eval reach s", "eval subject-list s", "reports s", "total s",
    "children/s", "peak RSS MB", "ingest tree PSS MB", "commit",
)  # fmt: skip


def row(record: dict[str, Any]) -> list[str]:
    """One table row; ``reports s`` is building and writing the three reports, ``total s`` the
    wall clock of every ingest and evaluation process, start-up included."""
    ev = record["evaluations"]
    machine = record["machine"]
    return [
        record["date"][:10],
        f"{machine['nproc']}× {machine['cpu']}, {machine['memory_gb']:.0f} GB",
        record["engine"] + (f" {machine['postgresql']}" if machine.get("postgresql") else ""),
        f"{record['patients']:,}",
        f"{record['resources']:,}",
        f"{record['ingest']['seconds']:.1f}",
        f"{record['ingest']['resources_per_s']:,}",
        f"{ev['issue_focused_summary']['evaluate_s']:.2f}",
        f"{ev['reach_summary']['evaluate_s']:.2f}",
        f"{ev['issue_focused_subject_list']['evaluate_s']:.2f}",
        f"{sum(e['report_s'] for e in ev.values()):.2f}",
        f"{record['total_s']:.1f}",
        f"{ev['issue_focused_summary']['children_per_s']:,}",
        f"{record['peak_rss_mb']:.0f}",
        f"{record['ingest'].get('tree_pss_mb', 0):.0f}",
        record["git"]["commit"],
    ]


def markdown(records: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row(r)) + " |" for r in records]
    return "\n".join(lines)


def load(path: Path) -> list[dict[str, Any]]:
    return [
        cast(dict[str, Any], orjson.loads(line))
        for line in path.read_text("utf-8").splitlines()
        if line.strip()
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Markdown table of benchmark results.")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--last", type=int, default=0, help="Only the last N runs.")
    args = parser.parse_args(argv)
    records = load(cast(Path, args.results))
    if args.last:
        records = records[-int(args.last) :]
    print(markdown(records))


if __name__ == "__main__":
    main()
