"""``fhir-adapter demo``: synthesise, ingest, evaluate both measures, write reports, print a table."""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from fhir_adapter import workflow
from fhir_adapter.mappings import load_mappings
from fhir_adapter.report.dataquality import data_quality, source_quality
from fhir_adapter.settings import Settings
from fhir_adapter.store.evaluate import Evaluation
from fhir_adapter.store.runs import persist_run


def _write(path: Path, data: Any) -> None:
    path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")


def _rate(num: int, den: int) -> str:
    return f"{num / den:6.1%}" if den else "   n/a"


def _per_cco(ev: Evaluation, group: int) -> dict[str, tuple[int, int]]:
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for child in ev.children:
        g = child.groups[group]
        if g.den and not g.denex:
            out[child.cco or "missing"][1] += 1
            out[child.cco or "missing"][0] += int(g.num)
    return {k: (v[0], v[1]) for k, v in out.items()}


def run_demo(
    settings: Settings, out: Path, *, patients: int, seed: int, console: Console, progress: Console,
    today: date | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Run the whole flow on synthetic data; returns the paths written and the timings."""
    from fhir_adapter.synth import synthesize

    today = today or datetime.now(UTC).date()
    year = today.year - 1  # the last full calendar year
    reach_year = min(year, 2024)  # the reach measure ended in 2024
    out.mkdir(parents=True, exist_ok=True)
    data_dir = out / "data"
    timings: dict[str, float] = {}

    started = time.perf_counter()
    summary = synthesize(data_dir, patients, seed, first_year=min(reach_year, year - 1), last_year=year)
    timings["synthesize"] = time.perf_counter() - started
    progress.print(f"synthesised {patients} children into {data_dir}", highlight=False)

    mappings = load_mappings(settings.mappings_dir)
    store = workflow.open_store(settings)
    try:
        started = time.perf_counter()
        for folder in sorted(p for p in data_dir.iterdir() if p.is_dir()):
            result = workflow.ingest(settings, store, [folder], folder.name)
            progress.print(
                f"ingested {result.read} resources from {folder.name} "
                f"({result.stats.created} new, {result.stats.unchanged} unchanged, {len(result.errors)} rejected)",
                highlight=False,
            )
        timings["ingest"] = time.perf_counter() - started

        started = time.perf_counter()
        issue = {
            mode: workflow.run_evaluation(
                settings, store,
                workflow.EvaluationRequest("oregon-se-issue-focused", date(year, 1, 1), date(year, 12, 31), mode),
                evidence=mode == "all", mappings=mappings,
            )
            for mode in ("all", "claims")
        }  # fmt: skip
        reach = workflow.run_evaluation(
            settings, store,
            workflow.EvaluationRequest("oregon-se-reach", date(reach_year, 1, 1), date(reach_year, 12, 31), "all"),
            evidence=False, mappings=mappings,
        )  # fmt: skip
        timings["evaluate"] = time.perf_counter() - started
        # Persisted, so the dashboard and the SQL views (v_child_results) have results to show.
        runs = [persist_run(store, ev, now_us=ev.as_of) for ev in (issue["all"], issue["claims"], reach)]
        sources = source_quality(store, issue["all"].as_of, mappings)
    finally:
        store.close()

    started = time.perf_counter()
    written: list[Path] = []
    for name, ev, kind in (
        (f"issue-focused-{year}-summary.json", issue["all"], "summary"),
        (f"issue-focused-{year}-claims-only-summary.json", issue["claims"], "summary"),
        (f"issue-focused-{year}-subject-list.json", issue["all"], "subject-list"),
        (f"reach-{reach_year}-summary.json", reach, "summary"),
    ):
        ctx = workflow.report_context(settings, ev.spec.hash)
        _write(out / name, workflow.build_report(ev, ctx, kind))  # type: ignore[arg-type]
        written.append(out / name)
    (out / f"issue-focused-{year}-gaps.csv").write_bytes(workflow.gaps_csv(workflow.gap_rows(issue["all"])))
    written.append(out / f"issue-focused-{year}-gaps.csv")
    quality = data_quality({"issue-focused-all": issue["all"], "reach": reach}, sources)
    _write(out / "data-quality.json", quality)
    written.append(out / "data-quality.json")
    timings["reports"] = time.perf_counter() - started

    table = Table(title=f"Oregon SE issue-focused measure {year} (synthetic data) and reach {reach_year}")
    for column in ("CCO", "children", "served", "rate", "claims-only rate", "identified need", "need rate",
                   f"reach {reach_year}"):  # fmt: skip
        table.add_column(column, justify="left" if column == "CCO" else "right")
    all_enrolled = _per_cco(issue["all"], 0)
    claims_only = _per_cco(issue["claims"], 0)
    need = _per_cco(issue["all"], 1)
    reach_any = _per_cco(reach, 0)
    totals = [0] * 8
    for cco in sorted(set(all_enrolled) | set(reach_any)):
        n, d = all_enrolled.get(cco, (0, 0))
        cn, cd = claims_only.get(cco, (0, 0))
        nn, nd = need.get(cco, (0, 0))
        rn, rd = reach_any.get(cco, (0, 0))
        for i, v in enumerate((n, d, cn, cd, nn, nd, rn, rd)):
            totals[i] += v
        table.add_row(cco, str(d), str(n), _rate(n, d), _rate(cn, cd), str(nd), _rate(nn, nd), _rate(rn, rd))
    n, d, cn, cd, nn, nd, rn, rd = totals
    table.add_row("all CCOs", str(d), str(n), _rate(n, d), _rate(cn, cd), str(nd), _rate(nn, nd), _rate(rn, rd),
                  style="bold")  # fmt: skip
    console.print(table)
    console.print(
        f"Reports in {out}/ ({', '.join(p.name for p in written)}). Timings: "
        + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()),
        highlight=False,
    )
    console.print(
        "Rates use the project's candidate code lists and default rules (spec status 'assumption'), "
        "not OHA's official specification.",
        highlight=False,
    )
    # The dashboard (fhir_adapter/api/routes_dashboard.py) shows these persisted runs.
    console.print(
        "Dashboard: run `FHIR_ADAPTER_AUTH_REQUIRED=false fhir-adapter serve --database "
        f"{settings.database_url}` (authorisation off: synthetic data only), then open "
        "http://127.0.0.1:8080/dashboard",
        highlight=False,
        soft_wrap=True,
    )
    return {"written": [str(p) for p in written], "timings": timings, "synth": summary, "runs": runs}
