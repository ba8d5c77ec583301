"""Claims extracts → CARIN-BB-shaped ExplanationOfBenefit: conversion tables, the facts the
extractor reads from them, and loads into the store (CSV and EOB NDJSON)."""

from __future__ import annotations

import csv
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import text

from fhir_adapter.errors import InvalidDataError, UsageError
from fhir_adapter.ingest.claims import (
    CLAIM_ID_SYSTEM,
    CLAIMS_FIELDS,
    Claims,
    convert_claims,
    eob_id,
    icd10cm,
    load_claims,
    load_claims_ndjson,
    procedure_system,
    scan_eobs,
)
from fhir_adapter.ingest.columns import ColumnMap, Row, load_column_map
from fhir_adapter.settings import DEFAULT_MEMBER_ID_SYSTEM
from fhir_adapter.store.db import Store
from fhir_adapter.store.extract import PRIMARY, SECONDARY, extract
from fhir_adapter.store.sources import read_source_status, write_source_status
from fhir_adapter.terminology.codes import CPT_URI, HCPCS_URI
from tests import cohorts as c
from tests.conftest import ROOT, TZ

MAP = ROOT / "mappings" / "extracts" / "claims.toml"
HEADERS = load_column_map(MAP, required=CLAIMS_FIELDS).columns
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
T0 = datetime(2026, 1, 10, tzinfo=UTC)


@pytest.fixture(scope="module")
def cmap() -> ColumnMap:
    return load_column_map(MAP, required=CLAIMS_FIELDS)


def line(**fields: str) -> dict[str, str]:
    """One claim line (our field names): a paid psychotherapy visit with an SE diagnosis."""
    row = {name: "" for name in HEADERS}
    row.update(
        claim_id="C1", line_number="1", member_id="A1", from_date="2025-03-01", procedure_code="90834",
        dx1="F4322", dx2="Z6381", dx_pointers="1", rendering_npi="1234567893", billing_npi="1922334455",
        taxonomy="101YM0800X", place_of_service="11", status="P", paid_date="2025-03-20", cco="ALLCARE",
    )  # fmt: skip
    row.update(fields)
    return row


def convert(cmap: ColumnMap, *rows: dict[str, str]) -> Claims:
    rows_ = [Row(f"c.csv:{n}", dict(r)) for n, r in enumerate(rows, start=2)]
    return convert_claims(rows_, cmap, member_system=DEFAULT_MEMBER_ID_SYSTEM)


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(HEADERS.values())
        for r in rows:
            writer.writerow([r.get(name, "") for name in HEADERS])
    return path


# -- code shapes ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("code", "system"),
    [
        pytest.param("90834", CPT_URI, id="cpt"),
        pytest.param("3008F", CPT_URI, id="cpt-category-ii"),
        pytest.param("0042T", CPT_URI, id="cpt-category-iii"),
        pytest.param("0001U", CPT_URI, id="cpt-pla"),
        pytest.param("H0004", HCPCS_URI, id="hcpcs"),
        pytest.param("T1027", HCPCS_URI, id="hcpcs-t"),
        pytest.param("9083", None, id="four-digits"),
        pytest.param("H00041", None, id="too-long"),
        pytest.param("0100", None, id="revenue-code"),
    ],
)
def test_procedure_system(code: str, system: str | None) -> None:
    assert procedure_system(code) == system


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("F4322", "F43.22", id="undotted"),
        pytest.param("f43.22", "F43.22", id="dotted-lower"),
        pytest.param("Z63", "Z63", id="category"),
        pytest.param("T74.4XXA", "T74.4XXA", id="seven-characters"),
        pytest.param("43.22", None, id="no-letter"),
        pytest.param("F43.223456", None, id="too-long"),
    ],
)
def test_icd10cm(raw: str, expected: str | None) -> None:
    assert icd10cm(raw) == expected


def test_eob_id() -> None:
    assert eob_id("20250301-0001") == "20250301-0001"
    hashed = eob_id("CLM 0001/A")
    assert hashed.startswith("c-") and hashed == eob_id("CLM 0001/A")


# -- conversion -----------------------------------------------------------------------------------
def test_eob_shape(cmap: ColumnMap) -> None:
    out = convert(
        cmap,
        line(modifier1="ha", modifier2="95"),
        line(line_number="2", procedure_code="H0004", dx_pointers="2:1", to_date="2025-03-05", rendering_npi="A77",
             taxonomy="", status="D", denial_reason="96"),
    )  # fmt: skip
    assert not out.errors
    assert (len(out.eobs), out.lines, out.denied_lines) == (1, 2, 1)
    eob = out.eobs["C1"]
    assert eob["status"] == "active" and eob["use"] == "claim" and eob["outcome"] == "complete"
    assert eob["patient"] == {"reference": "Patient/A1"}
    assert eob["identifier"][0]["system"] == CLAIM_ID_SYSTEM and eob["identifier"][0]["value"] == "C1"
    assert eob["provider"] == {
        "identifier": {"system": "http://hl7.org/fhir/sid/us-npi", "value": "1922334455"}
    }
    assert eob["insurer"] == {"identifier": {"system": "https://oregon.gov/oha/cco-id", "value": "ALLCARE"}}
    assert eob["billablePeriod"] == {"start": "2025-03-01", "end": "2025-03-05"}
    assert eob["payment"] == {"date": "2025-03-20"} and eob["created"] == "2025-03-20"
    assert [(d["sequence"], d["diagnosisCodeableConcept"]["coding"][0]["code"], d["type"][0]["coding"][0]["code"])
            for d in eob["diagnosis"]] == [(1, "F43.22", "principal"), (2, "Z63.81", "secondary")]  # fmt: skip
    first, second = eob["item"]
    assert first["productOrService"] == {"coding": [{"system": CPT_URI, "code": "90834"}]}
    assert first["servicedDate"] == "2025-03-01"
    assert first["modifier"] == [
        {"coding": [{"system": HCPCS_URI, "code": "HA"}]},
        {"coding": [{"system": CPT_URI, "code": "95"}]},
    ]
    assert first["diagnosisSequence"] == [1]
    assert first["locationCodeableConcept"]["coding"][0]["code"] == "11"
    assert [a["category"]["coding"][0]["code"] for a in first["adjudication"]] == ["paid"]
    assert second["productOrService"]["coding"][0]["system"] == HCPCS_URI
    assert second["servicedPeriod"] == {"start": "2025-03-01", "end": "2025-03-05"}
    assert second["diagnosisSequence"] == [2, 1]
    assert [a["category"]["coding"][0]["code"] for a in second["adjudication"]] == ["denied", "denialreason"]
    assert second["adjudication"][1]["reason"]["coding"][0]["code"] == "96"
    assert eob["adjudication"][0]["category"]["coding"][0]["code"] == "partiallypaid"
    assert [
        (t["sequence"], t["provider"]["identifier"]["value"], "qualification" in t) for t in eob["careTeam"]
    ] == [
        (1, "1234567893", True),
        (2, "A77", False),
    ]
    assert eob["careTeam"][1]["provider"]["identifier"]["system"] == "https://oregon.gov/oha/provider-id"
    assert (first["careTeamSequence"], second["careTeamSequence"]) == ([1], [2])
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
        }
    }
    assert (out.paid_through, out.last_data) == (date(2025, 3, 20), date(2025, 3, 1))


@pytest.mark.parametrize(
    ("rows", "status", "related", "header"),
    [
        pytest.param([line()], "active", None, "paid", id="original"),
        pytest.param([line(claim_id="C2", frequency="7", adjusted_claim_id="C1")], "active", "C1", "paid",
                     id="replacement"),
        pytest.param([line(claim_id="C3", frequency="VOID", adjusted_claim_id="C1")], "cancelled", "C1", "paid",
                     id="void"),
        pytest.param([line(frequency="7", adjusted_claim_id="C1")], "active", None, "paid",
                     id="replacement-under-the-same-number"),
        pytest.param([line(status="denied"), line(line_number="2", status="D")], "active", None, "denied",
                     id="all-lines-denied"),
    ],
)  # fmt: skip
def test_status_and_links(
    cmap: ColumnMap, rows: list[dict[str, str]], status: str, related: str | None, header: str
) -> None:
    out = convert(cmap, *rows)
    assert not out.errors
    (eob,) = out.eobs.values()
    assert eob["status"] == status
    assert eob["adjudication"][0]["category"]["coding"][0]["code"] == header
    if related is None:
        assert "related" not in eob
    else:
        assert eob["related"] == [
            {
                "relationship": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/ex-relatedclaimrelationship",
                            "code": "prior",
                        }
                    ]
                },
                "reference": {"system": CLAIM_ID_SYSTEM, "value": related},
            }
        ]


def test_pending_lines_are_skipped(cmap: ColumnMap) -> None:
    out = convert(
        cmap,
        line(),
        line(line_number="2", status="PEND", paid_date="2025-06-01"),
        line(claim_id="C2", status="pending", paid_date="2025-07-01"),
    )
    assert out.skipped_lines == 2
    assert list(out.eobs) == ["C1"]
    assert [i["sequence"] for i in out.eobs["C1"]["item"]] == [1]
    assert out.paid_through == date(2025, 3, 20)  # pending lines were not paid


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        pytest.param([line(member_id="")], ["c.csv:2: missing member id"], id="missing-member-id"),
        pytest.param([line(from_date="2025-13-01")], ["c.csv:2: '2025-13-01' is not a date"], id="bad-date"),
        pytest.param([line(from_date="")], ["c.csv:2: missing date (column from_date)"], id="missing-from-date"),
        pytest.param([line(to_date="2025-02-01")], ["c.csv:2: the to-date 2025-02-01 is before"], id="to-before-from"),
        pytest.param([line(procedure_code="0100")], ["c.csv:2: procedure code '0100' is neither CPT nor HCPCS"],
                     id="revenue-code"),
        pytest.param([line(modifier1="H")], ["c.csv:2: modifier 'H' is not two letters"], id="bad-modifier"),
        pytest.param([line(dx2="4322")], ["c.csv:2: diagnosis '4322' is not an ICD-10-CM code"], id="bad-dx"),
        pytest.param([line(dx_pointers="1,x")], ["c.csv:2: diagnosis pointers must be numbers"], id="bad-pointer"),
        pytest.param([line(dx_pointers="3")],
                     ["c.csv:2: claim C1: line 1 points at diagnosis positions [3] that the claim does not have"],
                     id="pointer-to-missing-dx"),
        pytest.param([line(status="maybe")], ["c.csv:2: status 'maybe' is not one of"], id="bad-status"),
        pytest.param([line(frequency="5")], ["c.csv:2: claim frequency code '5' is not 1"], id="bad-frequency"),
        pytest.param([line(frequency="8")], ["c.csv:2: a replacement or void must name the claim it adjusts"],
                     id="void-without-original"),
        pytest.param([line(line_number="0")], ["c.csv:2: line number '0' is not a positive"], id="line-zero"),
        pytest.param([line(taxonomy="101")], ["c.csv:2: taxonomy '101' is not a NUCC code"], id="bad-taxonomy"),
        pytest.param([line(billing_npi="")], ["c.csv:2: missing billing provider id"], id="missing-billing"),
        pytest.param([line(), line(member_id="B2", line_number="2")],
                     ["c.csv:3: claim C1: member_id 'B2' differs from 'A1' at c.csv:2"], id="header-disagrees"),
        pytest.param([line(), line(dx1="F9381", line_number="2")],
                     ["c.csv:3: claim C1: dx1 'F93.81' differs from 'F43.22' at c.csv:2"], id="dx-disagrees"),
        pytest.param([line(), line()], ["c.csv:3: claim C1: line 1 of claim C1 is also at c.csv:2"],
                     id="duplicate-line"),
    ],
)  # fmt: skip
def test_bad_rows(cmap: ColumnMap, rows: list[dict[str, str]], expected: list[str]) -> None:
    errors = [str(e) for e in convert(cmap, *rows).errors]
    assert len(errors) == len(expected), errors
    for error, start in zip(errors, expected, strict=True):
        assert error.startswith(start), error


# -- the facts the engine reads -------------------------------------------------------------------
def test_extracted_facts(cmap: ColumnMap) -> None:
    out = convert(
        cmap,
        line(claim_id="C2", frequency="7", adjusted_claim_id="C1"),
        line(claim_id="C2", frequency="7", adjusted_claim_id="C1", line_number="2", procedure_code="90837",
             dx_pointers="2", status="D"),
    )  # fmt: skip
    assert not out.errors
    facts = extract(out.eobs["C2"], "claims", DEFAULT_MEMBER_ID_SYSTEM, TZ)
    assert facts is not None and facts.event is not None
    # patient, status, use, outcome, header denied
    assert facts.event[4:9] == ("A1", "active", "claim", "complete", 0)
    assert facts.event[13] == "1922334455"  # provider = billing NPI
    assert [(ln[0], ln[1], ln[3]) for ln in facts.lines] == [
        (1, date(2025, 3, 1).toordinal(), 0),
        (2, date(2025, 3, 1).toordinal(), 1),
    ]
    codes = set(facts.codes)
    assert (1, "proc", None, CPT_URI, "90834") in codes
    assert (0, "dx", PRIMARY, ICD, "F43.22") in codes
    assert (0, "dx", SECONDARY, ICD, "Z63.81") in codes
    assert (1, "dx", PRIMARY, ICD, "F43.22") in codes  # line pointers
    assert (2, "dx", SECONDARY, ICD, "Z63.81") in codes
    assert ("replaces", "identifier", f"{CLAIM_ID_SYSTEM}|C1", None, 0) in facts.refs
    assert ("ident", "identifier", f"{CLAIM_ID_SYSTEM}|C2", None, 0) in facts.refs


# -- the store ------------------------------------------------------------------------------------
def _rids(store: Store) -> list[tuple[str, str]]:
    with store.read() as conn:
        return [tuple(r) for r in conn.execute(text("SELECT rtype, rid FROM resources ORDER BY rtype, rid"))]


def test_load_and_paid_through(tmp_path: Path, store: Store, cmap: ColumnMap) -> None:
    rows = [line(), line(claim_id="C2", member_id="B2", paid_date="2025-04-02", from_date="2025-03-30")]
    path = write_csv(tmp_path / "claims.csv", rows)
    loaded = load_claims(store, path, cmap, "claims", clock=lambda: T0)
    assert loaded.paid_through == date(2025, 4, 2)
    assert _rids(store) == [("ExplanationOfBenefit", "C1"), ("ExplanationOfBenefit", "C2"), ("Patient", "A1"),
                            ("Patient", "B2")]  # fmt: skip
    status = read_source_status(store)["claims"]
    assert (status.kind, status.paid_through, status.last_data) == (
        "claims",
        date(2025, 4, 2),
        date(2025, 3, 30),
    )
    load_claims(store, path, cmap, "claims", paid_through=date(2025, 3, 31), clock=lambda: T0)
    assert read_source_status(store)["claims"].paid_through == date(2025, 3, 31)


def test_bad_file_writes_nothing(tmp_path: Path, store: Store, cmap: ColumnMap) -> None:
    path = write_csv(tmp_path / "claims.csv", [line(), line(claim_id="C2", procedure_code="BAD")])
    with pytest.raises(InvalidDataError, match="1 bad row in"):
        load_claims(store, path, cmap, "claims", clock=lambda: T0)
    assert _rids(store) == []


def test_claims_refuse_an_enrollment_source(tmp_path: Path, store: Store, cmap: ColumnMap) -> None:
    write_source_status(store, "oha", "enrollment", loaded_at=0)
    with pytest.raises(UsageError, match="holds enrollment data"):
        load_claims(store, write_csv(tmp_path / "c.csv", [line()]), cmap, "oha")


def _ndjson(path: Path, resources: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in resources))
    return path


def test_ndjson_goes_through_the_fhir_ingest(tmp_path: Path, store: Store) -> None:
    eob = c.eob("e1", "p", "2025-03-01")
    eob["payment"] = {"date": "2025-03-15"}
    later = c.eob("e2", "p", "2025-05-01")
    later["item"][0]["servicedPeriod"] = {"start": later["item"][0].pop("servicedDate")}
    path = _ndjson(tmp_path / "eob.ndjson", [c.patient("p", None), eob, later])
    assert scan_eobs(path) == (date(2025, 3, 15), date(2025, 5, 1))
    loaded = load_claims_ndjson(store, path, "carin", batch_size=100, clock=lambda: T0)
    assert loaded.result.stats.created == 3
    assert loaded.paid_through == date(2025, 3, 15)
    assert read_source_status(store)["carin"].last_data == date(2025, 5, 1)
    assert "3 resources read, 0 rejected" in loaded.summary()
