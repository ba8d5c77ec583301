"""Flat exports for BI tools (CSV that Excel opens, Parquet with typed columns) and the pieces of a
Bulk Data manifest."""

from __future__ import annotations

import csv
import io
from collections import Counter
from datetime import UTC, date, datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fhir_adapter import workflow
from fhir_adapter.errors import UsageError
from fhir_adapter.measure.spec import Mappings
from fhir_adapter.report.export import (
    RESULT_COLUMNS,
    SUMMARY_COLUMNS,
    bulk_manifest,
    check_flat_request,
    deleted_bundle,
    flat_table,
    rows_csv,
    rows_parquet,
)
from fhir_adapter.report.measurereport import summary_report
from fhir_adapter.store.db import Store
from fhir_adapter.store.evaluate import Evaluation, evaluate
from tests import cohorts as c
from tests.measure.test_boundaries import FAR, load
from tests.report.test_caregaps import CTX

COHORT = [
    c.patient("served", "2022-06-15"), c.full_year("served"), c.eob("e1", "served", "2025-03-01"),
    c.patient("gap", "2021-01-15"), c.full_year("gap", cco="IHN"),
    c.patient("gap2", "2020-01-15"), c.full_year("gap2", cco="IHN"),
    c.patient("need", "2023-02-01"), c.full_year("need"), c.eob("e2", "need", "2025-04-01", "99392"),
    c.patient("dead", "2022-06-15", deceasedDateTime="2025-05-05"), c.full_year("dead"),
    c.patient("old", "2018-01-01"), c.full_year("old"),
    c.patient("nocover", "2022-01-01"),
]  # fmt: skip


@pytest.fixture
def evaluation(store: Store, mappings: Mappings) -> Evaluation:
    load(store, COHORT)
    spec = mappings.measure_for("oregon-se-issue-focused", date(2025, 12, 31))
    return evaluate(store, mappings, spec, date(2025, 1, 1), date(2025, 12, 31), FAR, "all")


# -- encoders -----------------------------------------------------------------------------------------

ROWS: list[dict[str, Any]] = [
    {"name": "Zoë, \"quoted\"", "n": 3, "ok": True, "day": date(2025, 1, 31), "x": 0.5},
    {"name": None, "n": None, "ok": False, "day": None, "x": None},
]  # fmt: skip


def test_csv_is_excel_friendly() -> None:
    data = rows_csv(ROWS, ["name", "n", "ok", "day", "x"])
    assert data.startswith(b"\xef\xbb\xbf")  # UTF-8 byte-order mark
    lines = data[3:].split(b"\r\n")
    assert lines[-1] == b"" and all(b"\n" not in line for line in lines)  # CRLF only
    parsed = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    assert parsed == [
        ["name", "n", "ok", "day", "x"],
        ['Zoë, "quoted"', "3", "true", "2025-01-31", "0.5"],
        ["", "", "false", "", ""],
    ]


def test_parquet_keeps_declared_types_even_when_empty() -> None:
    types = {"name": "string", "n": "int32", "ok": "bool", "day": "date", "x": "float64"}
    for rows in (ROWS, []):
        table = pq.read_table(io.BytesIO(rows_parquet(rows, list(types), types)))  # type: ignore[arg-type]
        assert table.schema.types == [pa.string(), pa.int32(), pa.bool_(), pa.date32(), pa.float64()]
        assert table.to_pylist() == [{k: r.get(k) for k in types} for r in rows]


# -- the flat tables ----------------------------------------------------------------------------------


def _parquet(ev: Evaluation, table: str, **kwargs: Any) -> pa.Table:
    return pq.read_table(io.BytesIO(flat_table(ev, table, **kwargs).encode("parquet")))


def test_results_has_one_row_per_child_and_group(evaluation: Evaluation) -> None:
    result = flat_table(evaluation, "results")
    assert result.columns == RESULT_COLUMNS
    assert len(result.rows) == 2 * len(evaluation.children)
    by_key = {(r["patient"], r["group"]): r for r in result.rows}
    served = by_key[("Patient/served", "all-enrolled")]
    assert (served["initial_population"], served["denominator"], served["numerator"]) == (True, True, True)
    assert served["cco"] == "ALLCARE" and served["member_id"] == "M-served" and served["age"] == 3
    assert served["age_band"] and served["measure"] == "oregon-se-issue-focused"
    gap = by_key[("Patient/gap", "all-enrolled")]
    assert (gap["denominator"], gap["numerator"], gap["reason"]) == (True, False, "no-qualifying-service")
    assert gap["reason_text"].startswith("No qualifying service")
    assert by_key[("Patient/nocover", "all-enrolled")]["initial_population"] is False


def test_results_strata_count_like_the_summary_report(evaluation: Evaluation) -> None:
    rows = flat_table(evaluation, "results").rows
    report = summary_report(evaluation, CTX)
    for group in report["group"]:
        for stratifier in group["stratifier"]:
            column = stratifier["id"].replace("-", "_")
            if column not in RESULT_COLUMNS or column in ("cco", "age"):
                continue
            counted = Counter(
                r[column] or "missing" for r in rows if r["group"] == group["id"] and r["initial_population"]
            )
            expected = {s["value"]["text"]: s["population"][0]["count"] for s in stratifier["stratum"]}
            assert dict(counted) == expected, column


def test_results_parquet_types(evaluation: Evaluation) -> None:
    table = _parquet(evaluation, "results")
    types = dict(zip(table.schema.names, table.schema.types, strict=True))
    assert types["age"] == pa.int32()
    assert types["period_start"] == pa.date32()
    assert types["numerator"] == pa.bool_()
    assert types["disability"] == pa.string()  # all empty here, still a string column
    assert table.num_rows == 2 * len(evaluation.children)


def test_summary_per_cco_adds_up_to_all(evaluation: Evaluation) -> None:
    rows = flat_table(evaluation, "summary").rows
    for group in ("all-enrolled", "identified-need"):
        per_cco = [r for r in rows if r["group"] == group and r["scope"] == "cco"]
        (total,) = [r for r in rows if r["group"] == group and r["scope"] == "all"]
        for key in ("initial_population", "denominator", "denominator_exclusion", "numerator"):
            assert sum(r[key] for r in per_cco) == total[key]
    allcare = next(r for r in rows if r["group"] == "all-enrolled" and r["cco"] == "ALLCARE")
    ihn = next(r for r in rows if r["group"] == "all-enrolled" and r["cco"] == "IHN")
    assert ihn["numerator"] == 0 and ihn["rate"] == 0.0
    base = allcare["denominator"] - allcare["denominator_exclusion"]
    assert allcare["rate"] == round(allcare["numerator"] / base, 6)
    narrowed = flat_table(evaluation, "summary", cco="IHN").rows
    assert {(r["scope"], r["cco"]) for r in narrowed} == {("cco", "IHN")}


def test_summary_parquet_types(evaluation: Evaluation) -> None:
    table = _parquet(evaluation, "summary")
    assert table.schema.names == list(SUMMARY_COLUMNS)
    types = dict(zip(table.schema.names, table.schema.types, strict=True))
    assert types["numerator"] == pa.int64() and types["rate"] == pa.float64()
    assert types["data_cut"] == pa.timestamp("us", tz="UTC")
    assert table.column("data_cut")[0].as_py() == datetime(2100, 1, 1, tzinfo=UTC)


def test_gaps_are_the_gap_list_of_every_group(evaluation: Evaluation) -> None:
    result = flat_table(evaluation, "gaps")
    assert result.columns == workflow.GAP_COLUMNS
    expected = [row for g in evaluation.spec.groups for row in workflow.gap_rows(evaluation, group=g.id)]
    assert result.rows == expected
    gaps = {r["patient"] for r in result.rows if r["group"] == "all-enrolled"}
    assert gaps == {"Patient/gap", "Patient/gap2", "Patient/need"}  # 99392 is no SE service
    assert {r["patient"] for r in flat_table(evaluation, "gaps", cco="ALLCARE").rows} == {"Patient/need"}
    csv_rows = list(csv.DictReader(io.StringIO(result.encode("csv").decode("utf-8-sig"))))
    assert [r["patient"] for r in csv_rows] == [r["patient"] for r in result.rows]
    assert _parquet(evaluation, "gaps").schema.field("age").type == pa.int32()


@pytest.mark.parametrize(
    ("table", "fmt", "cco", "where"),
    [
        pytest.param("nonsense", "csv", None, "table", id="table"),
        pytest.param("results", "xlsx", None, "format", id="format"),
        pytest.param("results", "csv", "NOPE", "cco", id="cco"),
    ],
)
def test_bad_flat_requests(mappings: Mappings, table: str, fmt: str, cco: str | None, where: str) -> None:
    with pytest.raises(UsageError) as caught:
        check_flat_request(table, fmt, cco, mappings)
    assert caught.value.location == where


# -- Bulk Data pieces ---------------------------------------------------------------------------------


def test_manifest_has_the_required_fields() -> None:
    output = [{"type": "Patient", "url": "https://x/fhir/_exports/j/Patient-1.ndjson", "count": 2}]
    body = bulk_manifest("2026-01-01T00:00:00.000000Z", "https://x/fhir/$export", requires_access_token=True,
                         output=output)  # fmt: skip
    assert body == {
        "transactionTime": "2026-01-01T00:00:00.000000Z",
        "request": "https://x/fhir/$export",
        "requiresAccessToken": True,
        "output": output,
        "error": [],
    }
    deleted = [{"type": "Bundle", "url": "u", "count": 1}]
    assert (
        bulk_manifest("t", "r", requires_access_token=False, output=[], deleted=deleted)["deleted"] == deleted
    )


def test_deleted_line_is_a_transaction_bundle_with_one_delete() -> None:
    line = deleted_bundle("Patient", "123", "ehr", "2026-01-01T00:00:00.000001Z", "deleted-7")
    assert line["resourceType"] == "Bundle" and line["type"] == "transaction"
    assert line["entry"] == [{"request": {"method": "DELETE", "url": "Patient/123"}}]
    assert line["meta"] == {"lastUpdated": "2026-01-01T00:00:00.000001Z", "source": "ehr"}
