"""Reconciliation as a workflow: read OHA's file, evaluate in claims mode, gather store facts,
compare (:func:`fhir_adapter.report.reconcile.reconcile`), render the outputs.

The CLI (``fhir-adapter reconcile``) and, later, the REST service call these functions; the
comparison itself stays pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import date
from pathlib import Path

import orjson

from fhir_adapter import workflow
from fhir_adapter.errors import UsageError
from fhir_adapter.ingest.oha_file import OhaFile, cco_lookup, default_map_path, load_oha_map, read_oha_file
from fhir_adapter.ingest.runner import Clock, utc_now
from fhir_adapter.mappings import load_mappings
from fhir_adapter.measure.spec import Mappings, MeasureSpec
from fhir_adapter.report.reconcile import (
    ClaimsFacts,
    DataLag,
    Reconciliation,
    differences_csv,
    dispute_csv,
    needed,
    reconcile,
    summary_json,
    summary_markdown,
)
from fhir_adapter.settings import Settings
from fhir_adapter.store.claims_facts import ClaimLine, FeedStatus, claim_lines, claims_feed_status, event_days
from fhir_adapter.store.db import Store
from fhir_adapter.store.evaluate import evaluate
from fhir_adapter.terminology.codes import Terminology
from fhir_adapter.workflow import check_cco


def any_position_spec(spec: MeasureSpec) -> MeasureSpec | None:
    """A copy of ``spec`` whose numerators accept a qualifying diagnosis in any position
    (reason ``diagnosis-position``); ``None`` when every numerator already does."""
    if all(g.numerator.diagnosis_position == "any" for g in spec.groups):
        return None
    groups = tuple(replace(g, numerator=replace(g.numerator, diagnosis_position="any")) for g in spec.groups)
    return replace(spec, groups=groups)


def read_oha(
    settings: Settings,
    path: Path,
    measure: str,
    period_end: date,
    *,
    columns: Path | None = None,
    group: str | None = None,
    mappings: Mappings | None = None,
) -> OhaFile:
    """Read and check OHA's member file for ``measure`` (the version of ``period_end``'s year)
    through ``columns`` (default ``mappings/extracts/oha-member-file.toml``)."""
    mappings = mappings or load_mappings(settings.mappings_dir)
    spec = workflow.measure_spec(mappings, measure, period_end)
    group_ids = [g.id for g in spec.groups]
    if group is not None and group not in group_ids:
        raise UsageError(f"measure {measure} has no group {group!r} (groups: {', '.join(group_ids)})")
    cmap = load_oha_map(columns or default_map_path(settings.mappings_dir))
    ccos = cco_lookup([c.id for c in mappings.ccos], {c.id: c.name for c in mappings.ccos})
    return read_oha_file(
        path, cmap, measure=measure, default_group=group or group_ids[0], groups=group_ids, ccos=ccos
    )


def compared_groups(spec: MeasureSpec, oha: OhaFile, default_group: str | None = None) -> list[str]:
    """The groups OHA's file covers: those in its group column (in the measure's order), else
    the default group."""
    ids = [g.id for g in spec.groups]
    present = {r.group for r in oha.rows}
    if oha.has_group and present:
        return [g for g in ids if g in present]
    return [default_group or ids[0]]


def claims_facts(
    lines: Mapping[str, Sequence[ClaimLine]],
    spec: MeasureSpec,
    groups: Sequence[str],
    terminology: Terminology,
) -> dict[str, ClaimsFacts]:
    """Per member id: distinct claims, their procedure codes and, per group, those in the group's
    procedure value set on the line's date (the engine's matching: aliases, normalisation,
    ``match`` and validity dates)."""
    by_id = {g.id: g for g in spec.groups}
    out: dict[str, ClaimsFacts] = {}
    for member_id, items in lines.items():
        claims = {(x.source, x.rtype, x.rid) for x in items}
        coded = [x for x in items if x.system is not None and x.code is not None]
        codes = tuple(sorted({f"{x.system}|{x.code}" for x in coded}))
        listed: dict[str, tuple[str, ...]] = {}
        for group in groups:
            valueset = spec.valuesets[by_id[group].numerator.procedures]
            hits = set()
            for x in coded:
                assert x.system is not None and x.code is not None
                for row in terminology.match(x.system, x.code, valueset):
                    if (row.valid_from is None or row.valid_from <= x.day) and (
                        row.valid_to is None or x.day <= row.valid_to
                    ):
                        hits.add(f"{x.system}|{x.code}")
            listed[group] = tuple(sorted(hits))
        out[member_id] = ClaimsFacts(len(claims), codes, listed)
    return out


def our_paid_through(feeds: Sequence[FeedStatus]) -> date | None:
    """The freshest claims feed's paid-through date (else its last date of service): with
    several feeds the freshest one decides [A] (UNVERIFIED: a site with one feed per CCO may
    want the feed of the CCO reconciled)."""
    days = [f.paid_through or f.last_data_day for f in feeds]
    known = [d for d in days if d is not None]
    return max(known) if known else None


def run_reconciliation(
    settings: Settings,
    store: Store,
    oha: OhaFile,
    measure: str,
    period_start: date,
    period_end: date,
    *,
    cco: str | None = None,
    group: str | None = None,
    oha_claims_through: date | None = None,
    run_out_days: int | None = None,
    mappings: Mappings | None = None,
    clock: Clock = utc_now,
) -> Reconciliation:
    """Evaluate ``measure`` in ``claims`` mode (with evidence) as of now and compare it with
    ``oha``. ``oha_claims_through`` and ``run_out_days`` override the file's values."""
    mappings = mappings or load_mappings(settings.mappings_dir)
    if cco is not None:
        check_cco(mappings, cco)
    if run_out_days is not None and run_out_days < 0:
        raise UsageError("--run-out-days must be ≥ 0")
    request = workflow.EvaluationRequest(measure, period_start, period_end, "claims", as_of=clock())
    ev = workflow.run_evaluation(settings, store, request, evidence=True, mappings=mappings)
    spec_any = any_position_spec(ev.spec)
    any_ev = (
        evaluate(store, mappings, spec_any, period_start, period_end, ev.as_of, "claims")
        if spec_any is not None
        else None
    )
    groups = compared_groups(ev.spec, oha, group)
    want = needed(ev, oha.rows, groups, cco)
    lines = claim_lines(store, want.member_ids, period_start, period_end, ev.as_of)
    facts = claims_facts(lines, ev.spec, groups, Terminology(mappings))
    lag = DataLag(
        paid_through=our_paid_through(claims_feed_status(store)),
        oha_claims_through=oha_claims_through or oha.claims_through,
        run_out_days=oha.run_out_days if run_out_days is None else run_out_days,
    )
    return reconcile(
        ev,
        oha.rows,
        groups=groups,
        cco=cco,
        any_position=any_ev,
        claims=facts,
        lag=lag,
        days=event_days(store, want.evidence),
        oha_other_measure_rows=oha.other_measure_rows,
        oha_file=oha.path.name,
    )


def output_files(result: Reconciliation) -> dict[str, bytes]:
    """The files of ``--out-dir``, rendered (write them atomically)."""
    return {
        "differences.csv": differences_csv(result),
        "dispute-packet.csv": dispute_csv(result),
        "summary.json": orjson.dumps(summary_json(result), option=orjson.OPT_INDENT_2) + b"\n",
        "summary.md": summary_markdown(result).encode("utf-8"),
    }
