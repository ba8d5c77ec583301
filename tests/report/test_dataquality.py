"""The data-quality report on SQLite and PostgreSQL: per source (resources by type, rejected lines
grouped by reason, staleness, unlinked Patients, unknown code systems), per evaluation (children
not evaluated and why), the data cut, and the demo's data-quality.json shape."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import orjson
import pytest

from fhir_adapter.fhir.dates import to_micros
from fhir_adapter.ingest.runner import ingest_paths
from fhir_adapter.measure.spec import Mappings
from fhir_adapter.report import dataquality as dq
from fhir_adapter.settings import Settings
from fhir_adapter.store.db import Store
from fhir_adapter.store.sources import write_source_status
from tests import cohorts as c

T1 = datetime(2026, 1, 2, tzinfo=UTC)
T2 = datetime(2026, 1, 9, tzinfo=UTC)
NOW = datetime(2026, 1, 15, tzinfo=UTC)
UNKNOWN = "https://codes.example.org/visit"


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        pytest.param("not JSON: unexpected character: line 1 column 5 (char 4)",
                     "not JSON: unexpected character: line N column N (char N)", id="numbers"),
        pytest.param("id 'a b' is not a valid FHIR id", "id '…' is not a valid FHIR id", id="quoted"),
    ],
)  # fmt: skip
def test_rejection_reason(message: str, reason: str) -> None:
    assert dq.rejection_reason(message) == reason


def _ndjson(path: Path, lines: list[bytes | dict[str, object]]) -> Path:
    path.write_bytes(b"\n".join(x if isinstance(x, bytes) else orjson.dumps(x) for x in lines) + b"\n")
    return path


@pytest.fixture
def loaded(store: Store, tmp_path: Path) -> Store:
    claims = _ndjson(tmp_path / "claims.ndjson", [
        c.patient("a", "2022-01-01"), c.full_year("a"), c.eob("e1", "a", "2025-03-03"),
        c.eob("e2", "a", "2025-04-04", code="V-1", system=UNKNOWN),
        b"{not json", b"{still not json",
    ])  # fmt: skip
    ehr = _ndjson(tmp_path / "ehr.ndjson", [
        c.patient("b", None), c.patient("u", "2022-01-01", unlinked=True), c.full_year("b"),
        {"resourceType": "Patient", "id": "bad id"},
    ])  # fmt: skip
    ingest_paths(store, [claims], "claims", batch_size=100, clock=lambda: T1)
    ingest_paths(store, [ehr], "ehr", batch_size=100, clock=lambda: T2)
    write_source_status(store, "claims", "claims", loaded_at=to_micros(T1), paid_through=date(2025, 11, 30),
                        last_data=date(2025, 4, 4))  # fmt: skip
    return store


def test_per_source(loaded: Store, mappings: Mappings) -> None:
    got = {s.source: s for s in dq.source_quality(loaded, to_micros(NOW), mappings)}
    claims, ehr = got["claims"], got["ehr"]
    assert claims.resources == {"Coverage": 1, "ExplanationOfBenefit": 2, "Patient": 1}
    assert claims.rejected == 2 and [(r, n) for r, n, _e, _w in claims.rejections] == [
        (dq.rejection_reason(claims.rejections[0][2]), 2),
    ]  # two "not JSON" lines, one reason
    assert claims.rejections[0][3].endswith("claims.ndjson:5")
    assert (claims.kind, claims.paid_through, claims.last_data_day) == (
        "claims",
        date(2025, 11, 30),
        date(2025, 4, 4),
    )
    assert claims.last_ingested_at == to_micros(T1) and claims.unknown_systems == {UNKNOWN: 1}
    assert (ehr.patients, ehr.unlinked_patients, ehr.patients_without_birth_date) == (2, 1, 1)
    assert ehr.rejected == 1 and ehr.kind is None and ehr.resources == {"Coverage": 1, "Patient": 2}
    row = next(r for r in dq.source_rows(list(got.values())) if r["source"] == "claims")
    assert (row["resources_total"], row["rejected"], row["unknown_code_systems"], row["paid_through"]) == (
        4, 2, 1, "2025-11-30",
    )  # fmt: skip


def test_data_cut_hides_later_loads(loaded: Store, mappings: Mappings) -> None:
    got = {s.source: s for s in dq.source_quality(loaded, to_micros(T1), mappings)}
    assert "ehr" not in got  # nothing of it existed yet
    assert got["claims"].rejected == 2


def test_evaluation_part_and_tables(loaded: Store, mappings: Mappings, settings: Settings) -> None:
    report = dq.run_data_quality(settings, loaded, "oregon-se-issue-focused", date(2025, 1, 1), date(2025, 12, 31),
                                 mappings=mappings, clock=lambda: NOW)  # fmt: skip
    ev = report.evaluation
    assert ev["children"] == 3
    assert ev["not-evaluated"] == {"no-birth-date": 1, "ambiguous-birth-date": 0}
    assert ev["outside-initial-population"] == {"no-birth-date": 1, "not-enrolled-on-anchor": 1}
    assert ev["unlinked-children"] == 1
    assert ev["reasons"]["all-enrolled"]["qualifying-service"] == 1
    rows = {(r["check"], r["group"], r["detail"]): r["count"] for r in dq.evaluation_rows(ev)}
    assert rows[("outside-initial-population", None, "no-birth-date")] == 1
    assert rows[("reason", "all-enrolled", "qualifying-service")] == 1
    assert {r["source"] for r in dq.resource_rows(report.sources)} == {"claims", "ehr"}
    assert len(dq.rejection_rows(report.sources)) == 2
    assert set(report.as_json()) == {"evaluation", "sources"}


def test_demo_shape(loaded: Store, mappings: Mappings, settings: Settings) -> None:
    report = dq.run_data_quality(settings, loaded, "oregon-se-issue-focused", date(2025, 1, 1), date(2025, 12, 31),
                                 mappings=mappings, clock=lambda: NOW)  # fmt: skip
    from fhir_adapter.store.evaluate import evaluate

    spec = mappings.measure_for("oregon-se-issue-focused", date(2025, 12, 31))
    evaluation = evaluate(loaded, mappings, spec, date(2025, 1, 1), date(2025, 12, 31), to_micros(NOW), "all")
    out = dq.data_quality({"issue-focused-all": evaluation}, report.sources)
    assert out["issue-focused-all"] == report.evaluation
    assert [s["source"] for s in out["sources"]] == ["claims", "ehr"]
    assert dq.data_quality({"x": evaluation}).keys() == {"x"}
