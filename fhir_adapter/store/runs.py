"""Persisted evaluations: one ``eval_runs`` row per evaluation and one ``eval_results`` row per
child and group, so trends, the dashboard and BI tools (through the views of
:mod:`fhir_adapter.store.views`) read results without evaluating again.

A run is identified by what determines its results: measure and version, period, source mode,
data cut (``as_of``), mappings hash and engine version (spec §4: every report is stamped with
these). The same evaluation persisted twice is one run (the second call writes nothing and
returns the same id). A run and its results are written in one transaction.

Stratifier values are stored as the summary report states them
(:func:`fhir_adapter.report.measurereport.stratum_value`: REALD values first, EHR-reported
values labelled), ``NULL`` where the report says ``missing``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import Connection, insert, select

from fhir_adapter.errors import NotFoundError, StoreError
from fhir_adapter.measure.engine import ENGINE_VERSION
from fhir_adapter.measure.spec import SourceMode
from fhir_adapter.report.measurereport import MISSING, stratum_value
from fhir_adapter.store.db import DRIVER_ERRORS, Store
from fhir_adapter.store.evaluate import ChildResult, Evaluation
from fhir_adapter.store.schema import eval_results, eval_runs

_CHUNK = 5000


@dataclass(frozen=True)
class RunInfo:
    """One persisted evaluation (``eval_runs``); times in µs since the epoch."""

    run_id: str
    measure: str
    measure_version: str
    period_start: date
    period_end: date
    sources: str
    as_of: int
    created_at: int
    mappings_hash: str
    engine_version: str


@dataclass(frozen=True)
class ResultRow:
    """One child's result in one group of a persisted run (``eval_results``)."""

    person: str
    member_id: str | None
    #: ``Patient/<id>`` of the record that names the child, and its source
    patient: str | None
    patient_source: str | None
    cco: str | None
    age: int | None
    sex: str | None
    race_ethnicity: str | None
    language: str | None
    disability: str | None
    county: str | None
    group: str
    ip: bool
    den: bool
    denex: bool
    num: bool
    reason: str | None


def run_id_for(ev: Evaluation, mappings_hash: str) -> str:
    """The id of ``ev``'s run: the same inputs give the same id (≤ 64 characters)."""
    key = "|".join(
        (ev.spec.id, ev.spec.version, ev.period_start.isoformat(), ev.period_end.isoformat(), ev.sources,
         str(ev.as_of), mappings_hash, ENGINE_VERSION)
    )  # fmt: skip
    return "run-" + hashlib.sha256(key.encode()).hexdigest()[:40]


def _stratum(ev: Evaluation, stratifier: str, child: ChildResult) -> str | None:
    text = stratum_value(ev.spec, stratifier, child).get("text")
    return None if text in (None, MISSING) else str(text)


def result_rows(ev: Evaluation) -> Iterator[ResultRow]:
    """The rows a run of ``ev`` stores, one per child and group, in person then group order."""
    for child in ev.children:
        shared = (
            child.person,
            child.member_id,
            f"Patient/{child.subject_id}",
            child.subject_source,
            child.cco,
            child.age,
            _stratum(ev, "sex", child),
            _stratum(ev, "race-ethnicity", child),
            _stratum(ev, "language", child),
            child.disability,
            child.county,
        )
        for g in child.groups:
            yield ResultRow(*shared, g.group, g.ip, g.den, g.denex, g.num, g.reason)


def persist_run(store: Store, ev: Evaluation, *, now_us: int, mappings_hash: str | None = None) -> str:
    """Write ``ev`` as a run (``mappings_hash`` defaults to its measure-year hash, the one its
    reports are stamped with) and return the run id; nothing is written when the run exists."""
    digest = mappings_hash if mappings_hash is not None else ev.spec.hash
    run_id = run_id_for(ev, digest)
    try:
        with store.write() as conn:
            if conn.execute(select(eval_runs.c.run_id).where(eval_runs.c.run_id == run_id)).first():
                return run_id
            conn.execute(
                insert(eval_runs).values(
                    run_id=run_id,
                    measure=ev.spec.id,
                    measure_version=ev.spec.version,
                    period_start=ev.period_start.toordinal(),
                    period_end=ev.period_end.toordinal(),
                    sources=ev.sources,
                    as_of=ev.as_of,
                    created_at=now_us,
                    mappings_hash=digest,
                    engine_version=ENGINE_VERSION,
                )
            )
            _insert_results(conn, run_id, result_rows(ev))
    except DRIVER_ERRORS as exc:
        raise StoreError(f"cannot persist the evaluation run: {exc.__class__.__name__}: {exc}") from exc
    return run_id


def _insert_results(conn: Connection, run_id: str, rows: Iterator[ResultRow]) -> None:
    batch: list[dict[str, Any]] = []
    for r in rows:
        batch.append(
            {
                "run_id": run_id, "person": r.person, "member_id": r.member_id, "patient": r.patient,
                "patient_source": r.patient_source, "cco": r.cco, "age": r.age, "sex": r.sex,
                "race_ethnicity": r.race_ethnicity, "language": r.language, "disability": r.disability,
                "county": r.county, "group_id": r.group, "ip": int(r.ip), "den": int(r.den),
                "denex": int(r.denex), "num": int(r.num), "reason": r.reason,
            }
        )  # fmt: skip
        if len(batch) >= _CHUNK:
            conn.execute(insert(eval_results), batch)
            batch = []
    if batch:
        conn.execute(insert(eval_results), batch)


def _info(row: Any) -> RunInfo:
    return RunInfo(
        run_id=str(row.run_id),
        measure=str(row.measure),
        measure_version=str(row.measure_version),
        period_start=date.fromordinal(int(row.period_start)),
        period_end=date.fromordinal(int(row.period_end)),
        sources=str(row.sources),
        as_of=int(row.as_of),
        created_at=int(row.created_at),
        mappings_hash=str(row.mappings_hash),
        engine_version=str(row.engine_version),
    )


def list_runs(
    store: Store,
    measure: str | None = None,
    sources: SourceMode | None = None,
    *,
    period_start: date | None = None,
    period_end: date | None = None,
) -> list[RunInfo]:
    """Persisted runs, optionally of one measure, source mode and exact period; newest data cut
    first (then newest written, then id)."""
    query = select(eval_runs)
    if measure is not None:
        query = query.where(eval_runs.c.measure == measure)
    if sources is not None:
        query = query.where(eval_runs.c.sources == sources)
    if period_start is not None:
        query = query.where(eval_runs.c.period_start == period_start.toordinal())
    if period_end is not None:
        query = query.where(eval_runs.c.period_end == period_end.toordinal())
    with store.read() as conn:
        runs = [_info(row) for row in conn.execute(query)]
    runs.sort(key=lambda r: (-r.as_of, -r.created_at, r.run_id))
    return runs


def find_run(
    store: Store,
    measure: str,
    period_start: date,
    period_end: date,
    sources: SourceMode,
    *,
    as_of: int | None = None,
    measure_version: str | None = None,
    mappings_hash: str | None = None,
) -> RunInfo | None:
    """The persisted run of exactly this measure, period and source mode (and, when given, this
    data cut, measure version and mappings hash) with the latest data cut, else ``None``.
    Runs of another engine version are never returned (their results may differ)."""
    for run in list_runs(store, measure, sources, period_start=period_start, period_end=period_end):
        if run.engine_version != ENGINE_VERSION:
            continue
        if as_of is not None and run.as_of != as_of:
            continue
        if measure_version is not None and run.measure_version != measure_version:
            continue
        if mappings_hash is not None and run.mappings_hash != mappings_hash:
            continue
        return run
    return None


def _result(r: Any) -> ResultRow:
    return ResultRow(
        person=str(r.person), member_id=r.member_id, patient=r.patient, patient_source=r.patient_source,
        cco=r.cco, age=None if r.age is None else int(r.age), sex=r.sex, race_ethnicity=r.race_ethnicity,
        language=r.language, disability=r.disability, county=r.county, group=str(r.group_id),
        ip=bool(r.ip), den=bool(r.den), denex=bool(r.denex), num=bool(r.num), reason=r.reason,
    )  # fmt: skip


def run_info(store: Store, run_id: str) -> RunInfo:
    """One run's description; :class:`NotFoundError` when there is no such run."""
    with store.read() as conn:
        row = conn.execute(select(eval_runs).where(eval_runs.c.run_id == run_id)).first()
    if row is None:
        raise NotFoundError(f"no evaluation run {run_id!r}")
    return _info(row)


def run_results(store: Store, run_id: str) -> list[ResultRow]:
    """The rows of one run ordered by person, then group id (code-point order, whatever the
    database's collation); :class:`NotFoundError` when there is no such run."""
    run_info(store, run_id)
    query = select(eval_results).where(eval_results.c.run_id == run_id)
    with store.read() as conn:
        rows = list(conn.execute(query))
    out = [_result(r) for r in rows]
    out.sort(key=lambda r: (r.person, r.group))
    return out


__all__ = [
    "ResultRow",
    "RunInfo",
    "find_run",
    "list_runs",
    "persist_run",
    "result_rows",
    "run_id_for",
    "run_info",
    "run_results",
]
