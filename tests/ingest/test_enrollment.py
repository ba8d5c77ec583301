"""Eligibility extracts → Patient and Coverage: conversion tables, then snapshots in the store."""

from __future__ import annotations

import csv
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from fhir_adapter.errors import InvalidDataError, MappingsError, UsageError
from fhir_adapter.fhir.dates import to_micros
from fhir_adapter.fhir.resources import ID_RE
from fhir_adapter.ingest.columns import ColumnMap, Row, load_column_map
from fhir_adapter.ingest.enrollment import (
    ENROLLMENT_FIELDS,
    Enrollment,
    EnrollmentOptions,
    convert_enrollment,
    load_enrollment,
    patient_id,
)
from fhir_adapter.settings import DEFAULT_MEMBER_ID_SYSTEM
from fhir_adapter.store.db import Store
from fhir_adapter.store.extract import REALD
from fhir_adapter.store.sources import read_source_status, write_source_status
from tests.conftest import ROOT

MAP = ROOT / "mappings" / "extracts" / "enrollment.toml"
FIXED_MAP = ROOT / "mappings" / "extracts" / "enrollment-fixed.toml"
HEADERS = load_column_map(MAP, required=ENROLLMENT_FIELDS).columns
T0 = datetime(2026, 1, 10, tzinfo=UTC)


@pytest.fixture(scope="module")
def cmap() -> ColumnMap:
    return load_column_map(MAP, required=ENROLLMENT_FIELDS)


def span(**fields: str) -> dict[str, str]:
    """One eligibility row (our field names); a child enrolled in ALLCARE since 2024."""
    row = {
        "member_id": "A1", "cco": "ALLCARE", "span_start": "2024-01-01", "span_end": "", "birth_date": "2021-05-05",
        "sex": "F", "county": "Lane", "benefit_package": "BMH", "span_id": "", "death_date": "",
        "reald_race_ethnicity": "", "reald_language": "", "reald_disability": "",
    }  # fmt: skip
    row.update(fields)
    return row


def _rows(*rows: dict[str, str]) -> list[Row]:
    return [Row(f"e.csv:{n}", dict(r)) for n, r in enumerate(rows, start=2)]


def convert(cmap: ColumnMap, *rows: dict[str, str], known: set[str] | None = None) -> Enrollment:
    return convert_enrollment(_rows(*rows), cmap, member_system=DEFAULT_MEMBER_ID_SYSTEM, known_ccos=known)


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(HEADERS.values())
        for r in rows:
            writer.writerow([r[name] for name in HEADERS])
    return path


# -- identity -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("member", "same"),
    [
        pytest.param("A1234567", True, id="plain"),
        pytest.param("00.12-AB", True, id="dots-and-dashes"),
        pytest.param("A 1234", False, id="space"),
        pytest.param("A/1234", False, id="slash"),
        pytest.param("x" * 65, False, id="too-long"),
    ],
)
def test_patient_id_is_the_member_id_or_its_hash(member: str, same: bool) -> None:
    pid = patient_id(member)
    assert ID_RE.match(pid)
    assert (pid == member) is same
    assert patient_id(member) == pid  # deterministic


# -- conversion -----------------------------------------------------------------------------------
def test_patient_and_coverage_shape(cmap: ColumnMap) -> None:
    out = convert(
        cmap,
        span(reald_race_ethnicity="Latino/a/x", reald_language="Spanish", reald_disability="None reported"),
        span(cco="IHN", span_start="2023-01-01", span_end="2023-12-31", benefit_package=""),
    )
    assert not out.errors
    assert out.patients == {
        "A1": {
            "resourceType": "Patient",
            "id": "A1",
            "identifier": [
                {
                    "type": {
                        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MB"}]
                    },
                    "system": DEFAULT_MEMBER_ID_SYSTEM,
                    "value": "A1",
                }
            ],
            "extension": [
                {"url": REALD + "race-ethnicity", "valueString": "Latino/a/x"},
                {"url": REALD + "language", "valueString": "Spanish"},
                {"url": REALD + "disability", "valueString": "None reported"},
            ],
            "gender": "female",
            "birthDate": "2021-05-05",
            "address": [{"use": "home", "district": "Lane"}],
        }
    }
    assert len(out.coverages) == 2
    open_span = next(c for c in out.coverages.values() if c["payor"][0]["identifier"]["value"] == "ALLCARE")
    assert open_span["status"] == "active"
    assert open_span["beneficiary"] == {"reference": "Patient/A1"}
    assert open_span["payor"] == [
        {"identifier": {"system": "https://oregon.gov/oha/cco-id", "value": "ALLCARE"}}
    ]
    assert open_span["period"] == {"start": "2024-01-01"}
    assert open_span["class"][0]["type"]["coding"][0]["code"] == "plan"
    assert open_span["class"][0]["value"] == "BMH"
    assert all(ID_RE.match(cid) for cid in out.coverages)
    closed = next(c for c in out.coverages.values() if c["payor"][0]["identifier"]["value"] == "IHN")
    assert closed["period"] == {"start": "2023-01-01", "end": "2023-12-31"}
    assert "class" not in closed
    assert out.last_data == date(2024, 1, 1)


@pytest.mark.parametrize(
    ("changed", "same_id"),
    [
        pytest.param({"span_end": "2025-06-30"}, True, id="end-date-changes-version"),
        pytest.param({"benefit_package": "BMD"}, True, id="package-changes-version"),
        pytest.param({"span_start": "2024-02-01"}, False, id="start-date-is-another-span"),
        pytest.param({"cco": "IHN"}, False, id="cco-is-another-span"),
    ],
)
def test_span_identity(cmap: ColumnMap, changed: dict[str, str], same_id: bool) -> None:
    before = convert(cmap, span())
    after = convert(cmap, span(**changed))
    assert (set(before.coverages) == set(after.coverages)) is same_id


def test_span_id_column_names_the_span(cmap: ColumnMap) -> None:
    before = convert(cmap, span(span_id="S-9"))
    after = convert(cmap, span(span_id="S-9", span_start="2024-03-01", cco="IHN"))
    assert set(before.coverages) == set(after.coverages)


def test_demographics_come_from_the_latest_span(cmap: ColumnMap) -> None:
    out = convert(
        cmap,
        span(span_start="2025-01-01", county="Benton", reald_language="Somali"),
        span(span_start="2024-01-01", span_end="2024-12-31", county="Lane", reald_language="English"),
    )
    patient = out.patients["A1"]
    assert patient["address"] == [{"use": "home", "district": "Benton"}]
    assert patient["extension"] == [{"url": REALD + "language", "valueString": "Somali"}]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param({"span_end": "9999-12-31"}, {"start": "2024-01-01"}, id="sentinel-end-is-open"),
        pytest.param({"span_end": "2199-12-31"}, {"start": "2024-01-01", "end": "2199-12-31"}, id="far-but-real"),
        pytest.param({"span_start": "01/15/2024", "span_end": "20240630"}, {"start": "2024-01-15", "end": "2024-06-30"},
                     id="date-formats"),
    ],
)  # fmt: skip
def test_span_periods(cmap: ColumnMap, fields: dict[str, str], expected: dict[str, str]) -> None:
    (coverage,) = convert(cmap, span(**fields)).coverages.values()
    assert coverage["period"] == expected


def test_excluded_benefit_packages_are_skipped_and_counted(cmap: ColumnMap) -> None:
    out = convert(
        cmap, span(benefit_package="cwm"), span(member_id="B2", benefit_package="CWM"), span(member_id="C3")
    )
    assert out.skipped == {"cwm": 1, "CWM": 1}
    assert set(out.patients) == {"A1", "B2", "C3"}  # members are kept, their spans are not
    assert [c["beneficiary"]["reference"] for c in out.coverages.values()] == ["Patient/C3"]


def test_unknown_ccos_are_counted(cmap: ColumnMap) -> None:
    out = convert(cmap, span(), span(member_id="B2", cco="NOPE"), known={"ALLCARE"})
    assert out.unknown_ccos == {"NOPE": 1}
    assert len(out.coverages) == 2


def test_death_and_sex_values(cmap: ColumnMap) -> None:
    out = convert(cmap, span(death_date="2025-04-01", sex="u"), span(member_id="B2", sex=""))
    assert out.patients["A1"]["deceasedDateTime"] == "2025-04-01"
    assert out.patients["A1"]["gender"] == "unknown"
    assert "gender" not in out.patients["B2"]


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        pytest.param([span(member_id="")], ["e.csv:2: missing member id (column member_id)"], id="missing-member-id"),
        pytest.param([span(cco="")], ["e.csv:2: missing CCO id (column cco)"], id="missing-cco"),
        pytest.param([span(span_start="")], ["e.csv:2: missing date (column span_start)"], id="missing-start"),
        pytest.param([span(birth_date="2021-02-30")],
                     ["e.csv:2: '2021-02-30' is not a date in %Y-%m-%d, %m/%d/%Y, %Y%m%d (column birth_date)"],
                     id="bad-date"),
        pytest.param([span(span_end="2023-12-31")],
                     ["e.csv:2: the span ends (2023-12-31) before it starts (2024-01-01) (column span_end)"],
                     id="end-before-start"),
        pytest.param([span(sex="Q")],
                     ["e.csv:2: sex 'q' is not one of ['female', 'male', 'other', 'unknown'] "
                      "(translate it in [values.sex]) (column sex)"], id="unknown-sex"),
        pytest.param([span(), span(span_end="2025-01-01")],
                     ["e.csv:3: duplicate span: same member, CCO ALLCARE and start date 2024-01-01 as e.csv:2"],
                     id="duplicate-span"),
        pytest.param([span(), span(cco="IHN", birth_date="2021-05-06")],
                     ["e.csv:3: birth date 2021-05-06 differs from 2021-05-05 at e.csv:2 (column birth_date)"],
                     id="birth-date-conflict"),
        pytest.param([span(member_id="", span_start="x")],
                     ["e.csv:2: missing member id (column member_id)",
                      "e.csv:2: 'x' is not a date in %Y-%m-%d, %m/%d/%Y, %Y%m%d (column span_start)"],
                     id="every-problem-of-a-row"),
    ],
)  # fmt: skip
def test_bad_rows(cmap: ColumnMap, rows: list[dict[str, str]], expected: list[str]) -> None:
    assert [str(e) for e in convert(cmap, *rows).errors] == expected


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({"excluded_benefit_packages": [1]}, "must list texts", id="package-not-text"),
        pytest.param({"open_end_from": "someday"}, "open_end_from must be a date", id="bad-open-end"),
        pytest.param({"exclude": []}, "unknown [options]", id="unknown-option"),
    ],
)
def test_bad_options(tmp_path: Path, options: dict[str, Any], message: str) -> None:
    cmap = ColumnMap(tmp_path / "m.toml", "csv", {}, {}, {}, options=options)
    with pytest.raises(MappingsError, match=message.replace("[", r"\[")):
        EnrollmentOptions.from_map(cmap)


def test_shipped_maps_parse() -> None:
    for path in (MAP, FIXED_MAP):
        options = EnrollmentOptions.from_map(load_column_map(path, required=ENROLLMENT_FIELDS))
        assert options.excluded_packages == {"CWM", "CWX"}
        assert options.open_end_from == date(2200, 1, 1)


# -- the store ------------------------------------------------------------------------------------
def _current(store: Store, rtype: str, as_of: datetime | None = None) -> dict[str, tuple[int, int]]:
    """rid → (version, deleted) of the versions visible at ``as_of`` (default: current)."""
    sql = "SELECT rid, version, deleted FROM resources WHERE source = 'eligibility' AND rtype = :t AND "
    if as_of is None:
        sql += "superseded_at IS NULL"
        params: dict[str, Any] = {"t": rtype}
    else:
        sql += "ingested_at <= :a AND (superseded_at IS NULL OR superseded_at > :a)"
        params = {"t": rtype, "a": to_micros(as_of)}
    with store.read() as conn:
        return {rid: (version, deleted) for rid, version, deleted in conn.execute(text(sql), params)}


def _load(store: Store, path: Path, cmap: ColumnMap, at: datetime, *, full: bool = False) -> Any:
    return load_enrollment(store, path, cmap, "eligibility", full=full, clock=lambda: at)


def test_snapshot_per_member(tmp_path: Path, store: Store, cmap: ColumnMap) -> None:
    first = [
        span(),
        span(cco="IHN", span_start="2023-01-01", span_end="2023-12-31"),
        span(member_id="B2"),
    ]
    loaded = _load(store, write_csv(tmp_path / "1.csv", first), cmap, T0)
    assert (loaded.stats.created, loaded.stats.deleted) == (5, 0)
    covs = _current(store, "Coverage")
    assert len(covs) == 3
    # A1's 2023 span disappears and its open span ends; B2 is absent from the file: kept.
    second = [span(span_end="2025-05-31")]
    t1 = T0 + timedelta(days=1)
    loaded = _load(store, write_csv(tmp_path / "2.csv", second), cmap, t1)
    assert len(loaded.removed.coverages) == 1 and loaded.removed.patients == ()
    assert (loaded.stats.updated, loaded.stats.deleted, loaded.stats.unchanged) == (1, 1, 1)
    now = _current(store, "Coverage")
    assert sorted(v for v in now.values()) == [(1, 0), (2, 0), (2, 1)]
    assert _current(store, "Coverage", T0) == covs  # as of the first load: as it was
    # Re-loading the same file changes nothing.
    again = _load(store, tmp_path / "2.csv", cmap, t1 + timedelta(days=1))
    assert (again.stats.created, again.stats.updated, again.stats.deleted) == (0, 0, 0)


def test_full_snapshot_removes_absent_members(tmp_path: Path, store: Store, cmap: ColumnMap) -> None:
    _load(store, write_csv(tmp_path / "1.csv", [span(), span(member_id="B2")]), cmap, T0)
    loaded = _load(store, write_csv(tmp_path / "2.csv", [span()]), cmap, T0 + timedelta(hours=1), full=True)
    assert loaded.removed.patients == ("B2",)
    assert len(loaded.removed.coverages) == 1
    assert _current(store, "Patient") == {"A1": (1, 0), "B2": (2, 1)}


def test_bad_file_writes_nothing(tmp_path: Path, store: Store, cmap: ColumnMap) -> None:
    path = write_csv(
        tmp_path / "bad.csv", [span(), span(member_id=""), span(member_id="C3", span_start="13/45/2024")]
    )
    with pytest.raises(InvalidDataError) as info:
        _load(store, path, cmap, T0)
    lines = info.value.message.splitlines()
    assert lines[0] == f"2 bad rows in {path}; nothing was written:"
    assert lines[1].startswith(f"{path}:3: missing member id")
    assert lines[2].startswith(f"{path}:4: '13/45/2024' is not a date")
    assert _current(store, "Patient") == {}
    assert read_source_status(store) == {}


def test_source_status_is_recorded(tmp_path: Path, store: Store, cmap: ColumnMap) -> None:
    rows = [span(), span(member_id="B2", span_start="2025-02-01")]
    _load(store, write_csv(tmp_path / "1.csv", rows), cmap, T0)
    status = read_source_status(store)["eligibility"]
    assert (status.kind, status.paid_through, status.last_data) == ("enrollment", None, date(2025, 2, 1))
    assert status.last_loaded_at == T0
    assert status.note == "1.csv: 2 members, 2 spans"


def test_fixed_width_file(tmp_path: Path, store: Store) -> None:
    cmap = load_column_map(FIXED_MAP, required=ENROLLMENT_FIELDS)
    line = (
        "A1".ljust(12) + "ALLCARE".ljust(16) + "20240101" + " " * 8 + "20210505" + "F" + "Lane".ljust(20)
        + "BMH ".ljust(4) + "Latino/a/x".ljust(40) + "Spanish".ljust(20) + "No"
    )  # fmt: skip
    path = tmp_path / "elig.txt"
    path.write_text(line + "\n")
    loaded = _load(store, path, cmap, T0)
    patient = loaded.enrollment.patients["A1"]
    assert patient["birthDate"] == "2021-05-05"
    assert patient["extension"][0] == {"url": REALD + "race-ethnicity", "valueString": "Latino/a/x"}
    (coverage,) = loaded.enrollment.coverages.values()
    assert coverage["period"] == {"start": "2024-01-01"}


def test_enrollment_refuses_a_claims_source(tmp_path: Path, store: Store, cmap: ColumnMap) -> None:
    write_source_status(store, "eligibility", "claims", loaded_at=0)
    with pytest.raises(UsageError, match="holds claims data"):
        _load(store, write_csv(tmp_path / "1.csv", [span()]), cmap, T0)
    assert _current(store, "Patient") == {}
