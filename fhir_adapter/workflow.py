"""Library entry points the CLI (and later the REST service) call: open the store, ingest,
evaluate, build reports and gap lists. Settings are passed in, never read from globals."""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal

from fhir_adapter.errors import NotFoundError, UsageError
from fhir_adapter.fhir.dates import to_micros
from fhir_adapter.ingest.runner import Clock, IngestResult, ingest_paths, utc_now
from fhir_adapter.mappings import load_mappings
from fhir_adapter.measure.engine import REASON_TEXT, person_key, visible
from fhir_adapter.measure.spec import Mappings, MeasureSpec, SourceMode
from fhir_adapter.report.measurereport import (
    ReportContext,
    individual_report,
    subject_list_bundle,
    summary_report,
)
from fhir_adapter.settings import Settings
from fhir_adapter.store.db import Store
from fhir_adapter.store.evaluate import ChildResult, Evaluation, evaluate
from fhir_adapter.store.providers import Assignment

ReportType = Literal["summary", "subject-list", "individual"]


def open_store(settings: Settings) -> Store:
    return Store.open(settings.database_url, tz=settings.tz, member_system=settings.member_id_system)


def ingest(settings: Settings, store: Store, paths: list[Path], source: str, **kwargs: Any) -> IngestResult:
    kwargs.setdefault("max_line_bytes", settings.max_ndjson_line_bytes)
    return ingest_paths(
        store, paths, source, batch_size=settings.ingest_batch_size, workers=settings.ingest_workers, **kwargs
    )


@dataclass(frozen=True)
class EvaluationRequest:
    measure: str
    period_start: date
    period_end: date
    sources: SourceMode = "all"
    as_of: datetime | None = None
    subject: str | None = None
    subject_source: str | None = None


def measure_spec(mappings: Mappings, measure_id: str, period_end: date) -> MeasureSpec:
    try:
        return mappings.measure_for(measure_id, period_end)
    except KeyError:
        known = sorted({m for m, _ in mappings.measures})
        raise NotFoundError(
            f"no mappings for measure {measure_id!r} in or before {period_end.year} (known: {', '.join(known)})"
        ) from None


def report_mappings(
    settings: Settings,
    period_start: date,
    period_end: date,
    *,
    mappings: Mappings | None = None,
    cco: str | None = None,
) -> Mappings:
    """The checks every operational report makes before any work (an ordered period, a known
    ``--cco``), and the mappings it reads (loaded unless given)."""
    if period_start > period_end:
        raise UsageError("--period-start is after --period-end")
    mappings = mappings or load_mappings(settings.mappings_dir)
    if cco is not None:
        check_cco(mappings, cco)
    return mappings


def check_cco(mappings: Mappings, cco: str) -> None:
    """A ``--cco`` must be one of the CCO ids in ``mappings/ccos.csv``."""
    known = sorted(c.id for c in mappings.ccos)
    if cco not in known:
        raise UsageError(f"unknown CCO {cco!r}; known: {', '.join(known)}")


def run_evaluation(
    settings: Settings,
    store: Store,
    request: EvaluationRequest,
    *,
    evidence: bool,
    mappings: Mappings | None = None,
    clock: Clock = utc_now,
) -> Evaluation:
    """Evaluate one measure over one period as of a data cut (default: now)."""
    if request.period_start > request.period_end:
        raise UsageError("--period-start is after --period-end")
    mappings = mappings or load_mappings(settings.mappings_dir)
    spec = measure_spec(mappings, request.measure, request.period_end)
    as_of = to_micros(request.as_of or clock())
    subject_person = subject_source = None
    if request.subject is not None:
        subject_person, subject_source = find_subject(store, request.subject, request.subject_source, as_of)
    ev = evaluate(
        store, mappings, spec, request.period_start, request.period_end, as_of, request.sources,
        evidence_for=[subject_person] if subject_person else None, all_evidence=evidence and subject_person is None,
    )  # fmt: skip
    if subject_person is not None and subject_source is not None:
        # The report names the child as asked (the record the caller knows), not whichever
        # linked record of the same person sorts first.
        pid = request.subject.partition("/")[2] if request.subject else ""
        ev.children = [
            dataclasses.replace(c, subject_id=pid, subject_source=subject_source)
            for c in ev.children
            if c.person == subject_person
        ]
    return ev


def find_person(store: Store, subject: str, source: str | None, as_of: int) -> str:
    """The person key of ``Patient/<id>`` (ids as the sources sent them, DESIGN.md §2)."""
    return find_subject(store, subject, source, as_of)[0]


def find_subject(store: Store, subject: str, source: str | None, as_of: int) -> tuple[str, str]:
    """The person key of ``Patient/<id>`` and the source whose record it names (the given one,
    else the first of the sources holding that id for this person)."""
    from sqlalchemy import text

    rtype, _, pid = subject.partition("/")
    if rtype != "Patient" or not pid:
        raise UsageError(f"--subject must look like Patient/<id>, not {subject!r}")
    sql = (
        f"SELECT p.source, {person_key('p')} FROM f_patient p JOIN resources r ON r.rkey = p.rkey "
        f"WHERE p.pid = :pid AND {visible('r')}"
    )
    with store.read() as conn:
        rows = [(s, person) for s, person in conn.execute(text(sql), {"pid": pid, "as_of": as_of})]
    if source is not None:
        rows = [r for r in rows if r[0] == source]
    persons = sorted({person for _s, person in rows})
    if not persons:
        where = f" from source {source!r}" if source else ""
        raise NotFoundError(f"no Patient/{pid}{where} in the store")
    if len(persons) > 1:
        sources = ", ".join(sorted({s for s, _p in rows}))
        raise UsageError(f"Patient/{pid} exists in several sources ({sources}); name one with --source")
    return str(persons[0]), min(s for s, _p in rows)


def report_context(settings: Settings, mappings_hash: str, clock: Clock = utc_now) -> ReportContext:
    return ReportContext(
        canonical_base=settings.canonical_base,
        mappings_hash=mappings_hash,
        generated=clock(),
        member_system=settings.member_id_system,
        reporter=settings.reporter,
    )


def build_report(ev: Evaluation, ctx: ReportContext, report_type: ReportType) -> dict[str, Any]:
    """The requested DEQM report; ``individual`` over many children is a collection Bundle."""
    if report_type == "summary":
        return summary_report(ev, ctx)
    if report_type == "subject-list":
        return subject_list_bundle(ev, ctx)
    reports = [
        individual_report(ev, ctx, c)
        for c in ev.children
        if any(g.ip for g in c.groups) or len(ev.children) == 1
    ]
    if len(ev.children) == 1:
        return individual_report(ev, ctx, ev.children[0])
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"fullUrl": f"MeasureReport/{r['id']}", "resource": r} for r in reports],
    }


GAP_COLUMNS = (
    "member_id", "patient", "patient_source", "cco", "age", "group", "reason", "reason_text",
    "clinic", "clinic_npi", "pcp_npi", "pcp_name",
)  # fmt: skip


def gaps_csv(rows: list[dict[str, Any]]) -> bytes:
    """Gap rows as CSV that Excel opens correctly (UTF-8 with a BOM, CRLF line ends)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(GAP_COLUMNS), lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8-sig")


def gap_rows(
    ev: Evaluation,
    *,
    cco: str | None = None,
    group: str | None = None,
    assignments: Mapping[str, Assignment] | None = None,
) -> list[dict[str, Any]]:
    """Denominator children (not excluded) without a qualifying service: care gaps are only
    ever reported for children in the denominator (DESIGN.md §5). ``assignments`` (by person
    key, :func:`fhir_adapter.store.providers.assignments`) fill the assigned clinic and PCP
    (spec §4 "Gap list"); unknown ones stay empty."""
    group_id = group or ev.spec.groups[0].id
    try:
        index = [g.id for g in ev.spec.groups].index(group_id)
    except ValueError:
        raise UsageError(f"measure {ev.spec.id} has no group {group_id!r}") from None
    rows = []
    for child in ev.children:
        result = child.groups[index]
        if not result.den or result.denex or result.num:
            continue
        if cco is not None and child.cco != cco:
            continue
        rows.append(_gap_row(child, group_id, result.reason, (assignments or {}).get(child.person)))
    return rows


def _gap_row(child: ChildResult, group_id: str, reason: str, assigned: Assignment | None) -> dict[str, Any]:
    return {
        "member_id": child.member_id,
        "patient": f"Patient/{child.subject_id}",
        "patient_source": child.subject_source,
        "cco": child.cco,
        "age": child.age,
        "group": group_id,
        "reason": reason,
        "reason_text": REASON_TEXT.get(reason, ""),
        "clinic": assigned.clinic if assigned else None,
        "clinic_npi": assigned.clinic_npi if assigned else None,
        "pcp_npi": assigned.pcp_npi if assigned else None,
        "pcp_name": assigned.pcp_name if assigned else None,
    }
