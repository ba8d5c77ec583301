"""One evaluation phase of the statewide benchmark, run as its own process so that its peak RSS
can be read by the parent (``os.wait4``).

``python -m benchmarks.evaluate_phase --database URL --measure ID --period-start D --period-end D
--report-type summary|subject-list --out FILE --result FILE`` evaluates one measure over the whole
store through the library the CLI calls (:mod:`fhir_adapter.workflow`), writes the MeasureReport
JSON to ``--out`` exactly as ``fhir-adapter evaluate --out`` does (indented orjson), and writes
its own timings as one JSON object to ``--result``:

- ``evaluate_s``: :func:`fhir_adapter.workflow.run_evaluation` (SQL plan, results, evidence for a
  subject-list report);
- ``report_s``: :func:`fhir_adapter.workflow.build_report` plus serialising and writing the file;
- ``setup_s``: loading mappings and opening the store;
- ``children``: children the evaluation returned (``len(Evaluation.children)``).

The CLI's ``evaluate`` does the same steps in one call; this worker only splits the clock.
"""

from __future__ import annotations

import argparse
import time
from datetime import date
from pathlib import Path
from typing import Any, Literal, cast

import orjson

from fhir_adapter import workflow
from fhir_adapter.mappings import load_mappings
from fhir_adapter.settings import Settings

ReportType = Literal["summary", "subject-list"]


def run_phase(
    database: str, measure: str, period_start: date, period_end: date, report_type: ReportType, out: Path
) -> dict[str, Any]:
    """Evaluate ``measure`` on all sources, write the report to ``out``; return the timings."""
    started = time.perf_counter()
    settings = Settings(database_url=database)
    mappings = load_mappings(settings.mappings_dir)
    store = workflow.open_store(settings)
    opened = time.perf_counter()
    try:
        request = workflow.EvaluationRequest(measure, period_start, period_end, "all")
        ev = workflow.run_evaluation(
            settings, store, request, evidence=report_type != "summary", mappings=mappings
        )
    finally:
        store.close()
    evaluated = time.perf_counter()
    ctx = workflow.report_context(settings, ev.spec.hash)
    payload = orjson.dumps(workflow.build_report(ev, ctx, report_type), option=orjson.OPT_INDENT_2) + b"\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(payload)
    written = time.perf_counter()
    return {
        "setup_s": round(opened - started, 3),
        "evaluate_s": round(evaluated - opened, 3),
        "report_s": round(written - evaluated, 3),
        "children": len(ev.children),
        "report_bytes": len(payload),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--database", required=True)
    parser.add_argument("--measure", required=True)
    parser.add_argument("--period-start", required=True, type=date.fromisoformat)
    parser.add_argument("--period-end", required=True, type=date.fromisoformat)
    parser.add_argument("--report-type", choices=["summary", "subject-list"], default="summary")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--result", required=True, type=Path)
    args = parser.parse_args(argv)
    timings = run_phase(
        str(args.database),
        str(args.measure),
        cast(date, args.period_start),
        cast(date, args.period_end),
        cast(ReportType, args.report_type),
        cast(Path, args.out),
    )
    cast(Path, args.result).write_bytes(orjson.dumps(timings))


if __name__ == "__main__":
    main()
