"""Exports: flat tables for BI tools, and the pieces of a Bulk Data ``$export``.

**Flat exports** (spec §5: CCO data warehouses "pull flat exports (CSV/Parquet) into their BI
tools"): CSV that Excel opens correctly (UTF-8 with a byte-order mark, CRLF line ends, as
:func:`fhir_adapter.workflow.gaps_csv`) and Apache Parquet (pyarrow). Cells: ``None`` is empty
(CSV) or null (Parquet); booleans are ``true``/``false`` in CSV; dates ISO 8601. A Parquet column
has the declared type of its table (:data:`PARQUET_TYPES`), else one inferred from its values.
The three tables of ``$export-flat`` / ``fhir-adapter export-flat`` (:func:`flat_table`):

- ``results``: one row per evaluated child and measure group: identity, attribution, the stratum
  of each stratifier exactly as the summary MeasureReport counts it
  (:func:`fhir_adapter.report.measurereport.stratum_value`, ``missing`` as empty), the four
  population memberships and the reason code.
- ``gaps``: the gap list of every group (:func:`fhir_adapter.workflow.gap_rows`: denominator
  children, not excluded, without a qualifying service; columns
  :data:`fhir_adapter.workflow.GAP_COLUMNS`), with the assigned clinic and PCP.
- ``summary``: per CCO and group, and over all CCOs (``scope = all``), the population counts
  and the rate ``numerator / (denominator - exclusions)`` (DEQM ``measureScore``, proportion).

**Bulk Data** (Bulk Data Access IG 3.0.0, "Export"): :func:`bulk_manifest` (§ "Response -
Complete Status"), :func:`deleted_bundle` (its ``deleted`` files: "Each line ... SHALL contain a
FHIR Bundle with a type of transaction ... request.method ... SHALL be set to DELETE") and
:func:`issue_outcome` (its ``error`` files hold OperationOutcomes).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Literal

from fhir_adapter.errors import UsageError
from fhir_adapter.fhir.dates import from_micros

if TYPE_CHECKING:
    from fhir_adapter.ingest.runner import Clock
    from fhir_adapter.measure.spec import Mappings, SourceMode
    from fhir_adapter.settings import Settings
    from fhir_adapter.store.db import Store
    from fhir_adapter.store.evaluate import ChildResult, Evaluation
    from fhir_adapter.store.providers import Assignment

#: Column types of Parquet files (pyarrow): string, int32, int64, bool, float64, date, timestamp.
ColumnType = Literal["string", "int32", "int64", "bool", "float64", "date", "timestamp"]
FLAT_TABLES = ("results", "gaps", "summary")
FLAT_FORMATS = ("csv", "parquet")
CSV_MEDIA_TYPE = "text/csv; charset=utf-8"
#: IANA-registered media type of Apache Parquet files.
PARQUET_MEDIA_TYPE = "application/vnd.apache.parquet"
#: The stratifier columns of ``results``, in order (spec §2 stratifiers).
STRATA = ("age-band", "sex", "race-ethnicity", "language", "disability", "county")


# -- encoders -------------------------------------------------------------------------------------


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def rows_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> bytes:
    """``rows`` as CSV with exactly ``columns`` (in that order; other keys are left out)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    return buffer.getvalue().encode("utf-8-sig")


def rows_parquet(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    types: Mapping[str, ColumnType] | None = None,
) -> bytes:
    """``rows`` as one Parquet file with exactly ``columns``; a column in ``types`` gets that type
    (so an all-empty column still has its type), the others one inferred from the values."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrow = {
        "string": pa.string(),
        "int32": pa.int32(),
        "int64": pa.int64(),
        "bool": pa.bool_(),
        "float64": pa.float64(),
        "date": pa.date32(),
        "timestamp": pa.timestamp("us", tz="UTC"),
    }
    declared = types or {}
    arrays = {}
    for column in columns:
        values = [row.get(column) for row in rows]
        kind = declared.get(column)
        arrays[column] = pa.array(values, type=arrow[kind]) if kind else pa.array(values)
    table = pa.table(arrays)
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


# -- flat tables -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlatTable:
    """One exported table: its name, columns in order, Parquet types and rows."""

    name: str
    columns: tuple[str, ...]
    types: Mapping[str, ColumnType]
    rows: list[dict[str, Any]]

    def encode(self, fmt: str) -> bytes:
        if fmt == "csv":
            return rows_csv(self.rows, self.columns)
        if fmt == "parquet":
            return rows_parquet(self.rows, self.columns, self.types)
        raise UsageError(f"format {fmt!r}: csv or parquet", location="format")


def media_type(fmt: str) -> str:
    return CSV_MEDIA_TYPE if fmt == "csv" else PARQUET_MEDIA_TYPE


_HEAD: dict[str, ColumnType] = {"measure": "string", "period_start": "date", "period_end": "date"}
RESULT_TYPES: dict[str, ColumnType] = {
    **_HEAD,
    "member_id": "string", "patient": "string", "patient_source": "string", "cco": "string",
    "age": "int32",
    **{s.replace("-", "_"): "string" for s in STRATA},
    "group": "string", "initial_population": "bool", "denominator": "bool",
    "denominator_exclusion": "bool", "numerator": "bool", "reason": "string", "reason_text": "string",
}  # fmt: skip
RESULT_COLUMNS = tuple(RESULT_TYPES)
SUMMARY_TYPES: dict[str, ColumnType] = {
    **_HEAD,
    "sources": "string", "data_cut": "timestamp", "scope": "string", "cco": "string", "group": "string",
    "initial_population": "int64", "denominator": "int64", "denominator_exclusion": "int64",
    "numerator": "int64", "rate": "float64",
}  # fmt: skip
SUMMARY_COLUMNS = tuple(SUMMARY_TYPES)


def gap_types() -> dict[str, ColumnType]:
    from fhir_adapter.workflow import GAP_COLUMNS

    return {c: ("int32" if c == "age" else "string") for c in GAP_COLUMNS}


def _head(ev: Evaluation) -> dict[str, Any]:
    return {"measure": ev.spec.id, "period_start": ev.period_start, "period_end": ev.period_end}


def _stratum(ev: Evaluation, stratifier: str, child: ChildResult) -> str | None:
    from fhir_adapter.report.measurereport import MISSING, stratum_value

    value = stratum_value(ev.spec, stratifier, child).get("text")
    return None if value in (None, MISSING) else str(value)


def result_rows(ev: Evaluation, *, cco: str | None = None) -> list[dict[str, Any]]:
    """The ``results`` table (module docstring)."""
    from fhir_adapter.measure.engine import REASON_TEXT

    head = _head(ev)
    rows = []
    for child in ev.children:
        if cco is not None and child.cco != cco:
            continue
        base = {
            **head,
            "member_id": child.member_id,
            "patient": f"Patient/{child.subject_id}",
            "patient_source": child.subject_source,
            "cco": child.cco,
            "age": child.age,
            **{s.replace("-", "_"): _stratum(ev, s, child) for s in STRATA},
        }
        for group, result in zip(ev.spec.groups, child.groups, strict=True):
            rows.append(
                {
                    **base,
                    "group": group.id,
                    "initial_population": result.ip,
                    "denominator": result.den,
                    "denominator_exclusion": result.denex,
                    "numerator": result.num,
                    "reason": result.reason or None,
                    "reason_text": REASON_TEXT.get(result.reason) or None,
                }
            )
    return rows


def summary_rows(ev: Evaluation, *, cco: str | None = None) -> list[dict[str, Any]]:
    """The ``summary`` table: per CCO (children in the initial population, by their attributed
    CCO) and group, then over all CCOs unless ``cco`` narrows it to one."""
    head = {**_head(ev), "sources": ev.sources, "data_cut": from_micros(ev.as_of)}
    rows = []
    for index, group in enumerate(ev.spec.groups):
        in_ip = [c for c in ev.children if c.groups[index].ip]
        ccos = sorted({c.cco for c in in_ip if c.cco is not None})
        scopes: list[tuple[str, str | None, list[ChildResult]]] = [
            ("cco", name, [c for c in in_ip if c.cco == name]) for name in ccos if cco in (None, name)
        ]
        if cco is None:
            scopes.append(("all", None, in_ip))
        for scope, name, children in scopes:
            counts = {
                key: sum(c.groups[index].member_of(code) for c in children)
                for key, code in (
                    ("initial_population", "initial-population"),
                    ("denominator", "denominator"),
                    ("denominator_exclusion", "denominator-exclusion"),
                    ("numerator", "numerator"),
                )
            }
            base = counts["denominator"] - counts["denominator_exclusion"]
            rate = round(counts["numerator"] / base, 6) if base > 0 else None
            rows.append({**head, "scope": scope, "cco": name, "group": group.id, **counts, "rate": rate})
    return rows


def gap_table_rows(
    ev: Evaluation, *, cco: str | None = None, assignments: Mapping[str, Assignment] | None = None
) -> list[dict[str, Any]]:
    """The ``gaps`` table: :func:`fhir_adapter.workflow.gap_rows` of every group, in group order."""
    from fhir_adapter.workflow import gap_rows

    rows: list[dict[str, Any]] = []
    for group in ev.spec.groups:
        rows.extend(gap_rows(ev, cco=cco, group=group.id, assignments=assignments))
    return rows


def flat_table(
    ev: Evaluation,
    table: str,
    *,
    cco: str | None = None,
    assignments: Mapping[str, Assignment] | None = None,
) -> FlatTable:
    """Table ``table`` (one of :data:`FLAT_TABLES`) of an evaluation."""
    if table == "results":
        return FlatTable(table, RESULT_COLUMNS, RESULT_TYPES, result_rows(ev, cco=cco))
    if table == "summary":
        return FlatTable(table, SUMMARY_COLUMNS, SUMMARY_TYPES, summary_rows(ev, cco=cco))
    if table == "gaps":
        types = gap_types()
        return FlatTable(table, tuple(types), types, gap_table_rows(ev, cco=cco, assignments=assignments))
    raise UsageError(f"table {table!r}: one of {', '.join(FLAT_TABLES)}", location="table")


def check_flat_request(table: str, fmt: str, cco: str | None, mappings: Mappings) -> None:
    """Refuse an unknown table, format or CCO before any work."""
    if table not in FLAT_TABLES:
        raise UsageError(f"table {table!r}: one of {', '.join(FLAT_TABLES)}", location="table")
    if fmt not in FLAT_FORMATS:
        raise UsageError(f"format {fmt!r}: one of {', '.join(FLAT_FORMATS)}", location="format")
    if cco is not None and cco not in {c.id for c in mappings.ccos}:
        raise UsageError(f"cco {cco!r} is not in the CCO list (mappings/ccos.csv)", location="cco")


def run_flat_export(
    settings: Settings,
    store: Store,
    mappings: Mappings,
    measure: str,
    period_start: date,
    period_end: date,
    table: str,
    *,
    sources: SourceMode = "all",
    cco: str | None = None,
    ccos: Sequence[str] | None = None,
    clock: Clock | None = None,
) -> FlatTable:
    """Evaluate ``measure`` over the period as of now (``clock``) and build one flat table;
    ``ccos`` (a CCO caller's tenancy) keeps only the children the evaluation attributes to them."""
    from fhir_adapter import workflow
    from fhir_adapter.ingest.runner import utc_now
    from fhir_adapter.store.providers import assignments

    request = workflow.EvaluationRequest(measure, period_start, period_end, sources)
    ev = workflow.run_evaluation(
        settings, store, request, evidence=False, mappings=mappings, clock=clock or utc_now
    )
    if ccos is not None:
        allowed = set(ccos)
        ev.children = [c for c in ev.children if c.cco in allowed]
    assigned = assignments(store, ev.as_of, period_end, ccos=mappings.ccos) if table == "gaps" else None
    return flat_table(ev, table, cco=cco, assignments=assigned)


# -- Bulk Data ----------------------------------------------------------------------------------

FileItem = dict[str, Any]


def bulk_manifest(
    transaction_time: str,
    request_url: str,
    *,
    requires_access_token: bool,
    output: Sequence[FileItem],
    deleted: Sequence[FileItem] = (),
    error: Sequence[FileItem] = (),
) -> dict[str, Any]:
    """The Complete Status body (Bulk Data 3.0 § "Response - Complete Status"): ``output`` and
    ``error`` always present (empty arrays when there is nothing), ``deleted`` present when the
    export reports deletions (``_since`` given)."""
    body: dict[str, Any] = {
        "transactionTime": transaction_time,
        "request": request_url,
        "requiresAccessToken": requires_access_token,
        "output": list(output),
    }
    if deleted:
        body["deleted"] = list(deleted)
    body["error"] = list(error)
    return body


def deleted_bundle(rtype: str, rid: str, source: str, deleted_at: str, bundle_id: str) -> dict[str, Any]:
    """One line of a ``deleted`` file: a transaction Bundle with one ``DELETE Type/id`` entry;
    ``meta.lastUpdated`` is when the deletion was stored and ``meta.source`` the source whose
    resource was deleted (the same ``Type/id`` may live in another source, DESIGN.md §2)."""
    return {
        "resourceType": "Bundle",
        "id": bundle_id,
        "meta": {"lastUpdated": deleted_at, "source": source},
        "type": "transaction",
        "entry": [{"request": {"method": "DELETE", "url": f"{rtype}/{rid}"}}],
    }


def issue_outcome(
    severity: str, code: str, diagnostics: str, expression: str | None = None
) -> dict[str, Any]:
    """One line of an ``error`` file: an OperationOutcome with one issue."""
    issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if expression:
        issue["expression"] = [expression]
    return {"resourceType": "OperationOutcome", "issue": [issue]}


__all__ = [
    "FLAT_FORMATS",
    "FLAT_TABLES",
    "RESULT_COLUMNS",
    "STRATA",
    "SUMMARY_COLUMNS",
    "FlatTable",
    "bulk_manifest",
    "check_flat_request",
    "deleted_bundle",
    "flat_table",
    "gap_table_rows",
    "issue_outcome",
    "media_type",
    "result_rows",
    "rows_csv",
    "rows_parquet",
    "run_flat_export",
    "summary_rows",
]
