"""Flat exports of report tables (spec §5: CCO data warehouses "pull flat exports (CSV/Parquet)
into their BI tools"): CSV that Excel opens correctly (UTF-8 with a byte-order mark, CRLF line
ends, as :func:`fhir_adapter.workflow.gaps_csv`) and Apache Parquet (pyarrow).

Cells: ``None`` is empty (CSV) or null (Parquet); booleans are ``true``/``false`` in CSV; a
Parquet column's type is inferred from its values (all empty: the null type).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from typing import Any


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def rows_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> bytes:
    """``rows`` as CSV with exactly ``columns`` (in that order; other keys are left out)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    return buffer.getvalue().encode("utf-8-sig")


def rows_parquet(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> bytes:
    """``rows`` as one Parquet file with exactly ``columns``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({c: pa.array([row.get(c) for row in rows]) for c in columns})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


__all__ = ["rows_csv", "rows_parquet"]
