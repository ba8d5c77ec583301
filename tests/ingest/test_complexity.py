"""OPIP health complexity: the CSV becomes a Patient and one Observation per level (strict, all or
nothing), FHIR Observations arriving by NDJSON are read the same way, the latest level on the
period's last day wins, and rates and gap lists split by level (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from fhir_adapter.errors import InvalidDataError, MappingsError
from fhir_adapter.fhir.dates import to_micros
from fhir_adapter.ingest import complexity as cx
from fhir_adapter.ingest.runner import ingest_items
from fhir_adapter.measure.spec import Mappings
from fhir_adapter.report.complexity import run_complexity
from fhir_adapter.settings import DEFAULT_MEMBER_ID_SYSTEM, Settings
from fhir_adapter.store.db import ParsedResource, Store
from fhir_adapter.store.observations import latest_values
from fhir_adapter.store.schema import resources
from tests import cohorts as c
from tests.conftest import ROOT

MAP = cx.complexity_map(ROOT / "mappings" / "extracts" / cx.COMPLEXITY_MAP)
HEAD = "MEMBER_ID,MEDICAL_COMPLEXITY,SOCIAL_COMPLEXITY"


def _csv(tmp_path: Path, lines: list[str], name: str = "cx.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def _dated_map(tmp_path: Path) -> Path:
    text = (ROOT / "mappings" / "extracts" / cx.COMPLEXITY_MAP).read_text()
    path = tmp_path / "dated.toml"
    path.write_text(text.replace('# effective = "AS_OF_DATE"', 'effective = "AS_OF_DATE"'))
    return path


def test_rows_become_a_patient_and_observations(tmp_path: Path) -> None:
    out = cx.convert_complexity(
        _csv(tmp_path, [HEAD, "M-1,complex chronic,2+ risks", "M 2/x,,0 risks"]), MAP,
        member_system=DEFAULT_MEMBER_ID_SYSTEM,
    )  # fmt: skip
    kinds = [(r["resourceType"], r["id"]) for r in out]
    assert kinds[:2] == [("Patient", "mbr-M-1"), ("Patient", cx.patient_id("M 2/x"))]
    assert cx.patient_id("M 2/x").startswith("mbr-") and " " not in cx.patient_id("M 2/x")
    obs = {(r["subject"]["reference"], r["code"]["coding"][0]["code"]): r["valueString"] for r in out[2:]}
    assert obs == {
        ("Patient/mbr-M-1", cx.MEDICAL): "complex chronic",
        ("Patient/mbr-M-1", cx.SOCIAL): "2+ risks",
        (f"Patient/{cx.patient_id('M 2/x')}", cx.SOCIAL): "0 risks",
    }
    assert out[0]["identifier"] == [{"system": DEFAULT_MEMBER_ID_SYSTEM, "value": "M-1"}]
    assert all(r["status"] == "final" and "effectiveDateTime" not in r for r in out[2:])


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        pytest.param([HEAD, "M-1,high,low", ",high,low"], "cx.csv:3: missing member id", id="missing-member-id"),
        pytest.param([HEAD, "M-1,,"], "cx.csv:2: no complexity level", id="no-level"),
        pytest.param([HEAD, "M-1,high,low", "M-1,low,low"], "cx.csv:3: medical-complexity 'low' differs", id="conflict"),
        pytest.param([HEAD, "M-1,high"], "cx.csv:2: expected 3 fields", id="short-row"),
        pytest.param(["MEMBER_ID,MEDICAL_COMPLEXITY", "M-1,high"], "header lacks columns social", id="missing-column"),
    ],
)  # fmt: skip
def test_bad_rows_are_all_reported(tmp_path: Path, lines: list[str], message: str) -> None:
    with pytest.raises(InvalidDataError, match=message):
        cx.convert_complexity(_csv(tmp_path, lines), MAP, member_system=DEFAULT_MEMBER_ID_SYSTEM)


def test_dated_rows(tmp_path: Path) -> None:
    cmap = cx.complexity_map(_dated_map(tmp_path))
    out = cx.convert_complexity(
        _csv(tmp_path, [f"{HEAD},AS_OF_DATE", "M-1,high,,06/30/2025", "M-1,low,,2025-12-31"]), cmap,
        member_system=DEFAULT_MEMBER_ID_SYSTEM,
    )  # fmt: skip
    assert sorted(r["effectiveDateTime"] for r in out if r["resourceType"] == "Observation") == [
        "2025-06-30", "2025-12-31",
    ]  # fmt: skip
    with pytest.raises(InvalidDataError, match=r"cx2\.csv:2: 'soon' is not a date"):
        cx.convert_complexity(_csv(tmp_path, [f"{HEAD},AS_OF_DATE", "M-1,high,,soon"], "cx2.csv"), cmap,
                              member_system=DEFAULT_MEMBER_ID_SYSTEM)  # fmt: skip


def test_map_must_name_a_level(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('format = "csv"\n[columns]\nmember_id = "M"\n')
    with pytest.raises(MappingsError, match="neither 'medical' nor 'social'"):
        cx.complexity_map(path)


LOADED = datetime(2026, 1, 2, tzinfo=UTC)
LATER = datetime(2026, 1, 5, tzinfo=UTC)
NOW = datetime(2026, 1, 15, tzinfo=UTC)


def test_load_is_all_or_nothing_and_idempotent(store: Store, tmp_path: Path) -> None:
    bad = _csv(tmp_path, [HEAD, "M-1,high,low", "M-2,,"], "bad.csv")
    with pytest.raises(InvalidDataError):
        cx.load_complexity(store, bad, cmap=MAP, clock=lambda: LOADED)
    with store.read() as conn:
        assert conn.execute(select(func.count()).select_from(resources)).scalar_one() == 0
    good = _csv(tmp_path, [HEAD, "M-1,high,low"], "good.csv")
    count, stats = cx.load_complexity(store, good, cmap=MAP, clock=lambda: LOADED)
    assert (count, stats.created) == (3, 3)
    assert cx.load_complexity(store, good, cmap=MAP, clock=lambda: LATER)[1].unchanged == 3


def _fhir_obs(
    oid: str, pid: str, code: str, value: dict[str, Any], day: str | None, status: str = "final"
) -> dict[str, Any]:
    r = {"resourceType": "Observation", "id": oid, "status": status, "subject": {"reference": f"Patient/{pid}"},
         "code": {"coding": [{"system": cx.COMPLEXITY_SYSTEM, "code": code}]}, **value}  # fmt: skip
    if day:
        r["effectiveDateTime"] = day
    return r


def test_latest_level_from_csv_and_fhir(store: Store, tmp_path: Path) -> None:
    cx.load_complexity(
        store, _csv(tmp_path, [HEAD, "M-1,medium,low", "M-2,low,"]), cmap=MAP, clock=lambda: LOADED
    )
    ehr = [
        c.patient("p1", "2022-01-01", member="M-1"),
        _fhir_obs("o1", "p1", cx.MEDICAL, {"valueCodeableConcept": {"text": "high"}}, "2025-06-30"),
        _fhir_obs("o2", "p1", cx.MEDICAL, {"valueString": "after the period"}, "2026-01-01"),
        _fhir_obs("o3", "p1", cx.SOCIAL, {"valueString": "cancelled one"}, "2025-07-01", status="cancelled"),
    ]
    ingest_items(store, [ParsedResource(r["resourceType"], r["id"], r) for r in ehr], "ehr", batch_size=10,
                 clock=lambda: LATER)  # fmt: skip
    got = latest_values(
        store, to_micros(NOW), cx.COMPLEXITY_SYSTEM, [cx.MEDICAL, cx.SOCIAL], date(2025, 12, 31)
    )
    assert got == {
        "m:M-1": {cx.MEDICAL: "high", cx.SOCIAL: "low"},  # dated beats undated; later and cancelled left out
        "m:M-2": {cx.MEDICAL: "low"},
    }
    before = latest_values(store, to_micros(LOADED), cx.COMPLEXITY_SYSTEM, [cx.MEDICAL], date(2025, 12, 31))
    assert before["m:M-1"] == {cx.MEDICAL: "medium"}  # as of the first load


def test_rates_and_gaps_split_by_level(
    store: Store, mappings: Mappings, settings: Settings, tmp_path: Path
) -> None:
    cohort = [
        c.patient("a", "2022-01-01"), c.full_year("a"), c.eob("e-a", "a", "2025-03-03"),
        c.patient("b", "2022-01-01"), c.full_year("b"),
        c.patient("d", "2022-01-01"), c.full_year("d", cco="IHN"),
    ]  # fmt: skip
    ingest_items(store, [ParsedResource(r["resourceType"], r["id"], r) for r in cohort], "claims", batch_size=10,
                 clock=lambda: LOADED)  # fmt: skip
    cx.load_complexity(
        store, _csv(tmp_path, [HEAD, "M-a,high,2+", "M-b,high,0"]), cmap=MAP, clock=lambda: LOADED
    )
    report = run_complexity(settings, store, "oregon-se-issue-focused", date(2025, 1, 1), date(2025, 12, 31),
                            mappings=mappings, clock=lambda: NOW)  # fmt: skip
    rates = {(r["dimension"], r["level"], r["cco"]): (r["denominator"], r["numerator"], r["rate"])
             for r in report.rates if r["group"] == "all-enrolled"}  # fmt: skip
    assert rates == {
        (cx.MEDICAL, "high", "ALLCARE"): (2, 1, 0.5),
        (cx.MEDICAL, "high", "all"): (2, 1, 0.5),
        (cx.MEDICAL, "missing", "IHN"): (1, 0, 0.0),
        (cx.MEDICAL, "missing", "all"): (1, 0, 0.0),
        (cx.SOCIAL, "0", "ALLCARE"): (1, 0, 0.0),
        (cx.SOCIAL, "0", "all"): (1, 0, 0.0),
        (cx.SOCIAL, "2+", "ALLCARE"): (1, 1, 1.0),
        (cx.SOCIAL, "2+", "all"): (1, 1, 1.0),
        (cx.SOCIAL, "missing", "IHN"): (1, 0, 0.0),
        (cx.SOCIAL, "missing", "all"): (1, 0, 0.0),
    }
    gaps = {r["patient"]: (r["medical_complexity"], r["social_complexity"]) for r in report.gaps}
    assert gaps == {"Patient/b": ("high", "0"), "Patient/d": ("missing", "missing")}
    assert report.children_with_levels == 2
