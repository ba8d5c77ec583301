"""``GET /fhir/$export-flat``: per-child results, gaps and summaries for BI tools, as CSV or
Parquet, synchronous or as a job; SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import time
from typing import Any

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from fhir_adapter.store.db import Store
from tests import cohorts as c
from tests.measure.test_boundaries import load

BASE = "/fhir/$export-flat?measure=oregon-se-issue-focused&periodStart=2025-01-01&periodEnd=2025-12-31"
COHORT = [
    c.patient("a", "2022-02-02"), c.full_year("a"), c.eob("e1", "a", "2025-03-10"),
    c.patient("b", "2021-01-01"), c.full_year("b", cco="IHN"),
]  # fmt: skip


def _csv(data: bytes) -> list[dict[str, str]]:
    assert data.startswith(b"\xef\xbb\xbf")
    return list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline="")))


def test_results_as_csv(client: TestClient, store: Store) -> None:
    load(store, COHORT)
    response = client.get(BASE)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert (
        'filename="oregon-se-issue-focused-2025-12-31-results.csv"' in response.headers["content-disposition"]
    )
    rows = _csv(response.content)
    assert {(r["patient"], r["group"], r["numerator"]) for r in rows} == {
        ("Patient/a", "all-enrolled", "true"), ("Patient/a", "identified-need", "true"),
        ("Patient/b", "all-enrolled", "false"), ("Patient/b", "identified-need", "false"),
    }  # fmt: skip


def test_summary_as_parquet_for_one_cco(client: TestClient, store: Store) -> None:
    load(store, COHORT)
    response = client.get(BASE + "&table=summary&format=parquet&cco=IHN")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/vnd.apache.parquet"
    table = pq.read_table(io.BytesIO(response.content))
    assert set(table.column("cco").to_pylist()) == {"IHN"}
    assert table.column("denominator").to_pylist() == [1, 0]


def test_gaps_as_a_job(client: TestClient, store: Store) -> None:
    load(store, COHORT)
    kicked = client.get(BASE + "&table=gaps", headers={"Prefer": "respond-async"})
    assert kicked.status_code == 202
    status = kicked.headers["Content-Location"]
    deadline = time.monotonic() + 30
    while (done := client.get(status)).status_code == 202 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert done.status_code == 200 and done.headers["content-type"].startswith("text/csv")
    assert [r["patient"] for r in _csv(done.content)] == ["Patient/b"]


@pytest.mark.parametrize(
    ("query", "where"),
    [
        pytest.param("/fhir/$export-flat?periodStart=2025-01-01&periodEnd=2025-12-31", "measure", id="no-measure"),
        pytest.param(BASE.replace("2025-01-01", "2025-02-30"), "periodStart", id="bad-date"),
        pytest.param(BASE.replace("periodStart=2025-01-01", "periodStart=2026-01-01"), "periodStart",
                     id="start-after-end"),
        pytest.param(BASE + "&table=everything", "table", id="table"),
        pytest.param(BASE + "&format=xlsx", "format", id="format"),
        pytest.param(BASE + "&sources=ehr", "sources", id="sources"),
        pytest.param(BASE + "&cco=NOPE", "cco", id="cco"),
    ],
)  # fmt: skip
def test_bad_parameters(client: TestClient, query: str, where: str) -> None:
    response = client.get(query)
    assert response.status_code == 400, response.text
    assert response.json()["issue"][0]["expression"] == [where]


def test_unknown_measure_is_404(client: TestClient) -> None:
    assert client.get(BASE.replace("issue-focused", "nothing")).status_code == 404


@pytest.mark.parametrize(
    ("query", "status", "ccos"),
    [
        pytest.param("", 200, {"IHN"}, id="defaults-to-own-cco"),
        pytest.param("&cco=IHN", 200, {"IHN"}, id="own-cco"),
        pytest.param("&cco=ALLCARE", 403, None, id="other-cco"),
    ],
)
def test_a_cco_client_gets_only_its_cco(
    auth_client: TestClient, mint_token: Any, store: Store, query: str, status: int, ccos: set[str] | None
) -> None:
    load(store, COHORT)
    token = mint_token("cco", "system/*.rs", ccos=("IHN",))
    response = auth_client.get(BASE + "&table=summary" + query, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == status, response.text
    if ccos is not None:
        rows = _csv(response.content)
        assert {r["cco"] for r in rows if r["scope"] == "cco"} == ccos
        assert {r["denominator"] for r in rows if r["group"] == "all-enrolled"} == {
            "1"
        }  # only b, IHN's child


def test_an_ehr_client_gets_no_flat_export(auth_client: TestClient, mint_token: Any) -> None:
    token = mint_token("ehr", "system/*.rs", source="clinic")
    response = auth_client.get(BASE, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403
