"""X12 834 enrollment files → the rows and resources of the CSV route, errors at ``file:segment N``,
and ``load-enrollment`` of an 834 end to end (the dependent child is in the right CCO's denominator)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhir_adapter.errors import InvalidDataError, MappingsError
from fhir_adapter.ingest.enrollment import Enrollment, convert_enrollment
from fhir_adapter.ingest.x834 import X834Map, is_834_file, load_834_map, read_834
from fhir_adapter.measure.spec import Mappings
from fhir_adapter.settings import DEFAULT_MEMBER_ID_SYSTEM
from fhir_adapter.store.db import Store
from tests.cli.test_extracts import evaluate, results, run, url_of
from tests.conftest import ROOT

MAP = ROOT / "mappings" / "extracts" / "enrollment-834.toml"
ISA = "ISA*00*          *00*          *ZZ*OHA            *ZZ*CCO            *250101*1200*^*00501*000000001*0*P*:"

SUBSCRIBER = [
    "INS*Y*18*021*28*A***AC",
    "REF*0F*AC1",
    "NM1*IL*1*DOE*JANE****MI*AC1",
    "N3*1 MAIN ST",
    "N4*EUGENE*OR*97401**CY*Lane",
    "DMG*D8*20210505*F",
    "LUI*LE*spa*Spanish*7",
    "HD*021**HLT*BMH*IND",
    "DTP*348*D8*20240101",
    "REF*1L*PLAN-AC",
]
CHILD = [
    "INS*N*19*021*28*A***AC",
    "REF*0F*AC1",
    "NM1*IL*1*DOE*KID****MI*KID1",
    "DMG*D8*20200303*M",
    "HD*021**HLT*BMH*IND",
    "DTP*348*D8*20240101",
    "REF*1L*PLAN-IHN",
]
TERMINATED = [
    "INS*Y*18*024*07*A***TE",
    "REF*0F*TERM1",
    "NM1*IL*1*ROE*SAM****MI*TERM1",
    "DMG*D8*20210101*U",
    "HD*024**HLT*BMH*IND",
    "DTP*348*D8*20240101",
    "DTP*349*D8*20250531",
    "REF*1L*PLAN-AC",
]


def segments(*members: list[str], st01: str = "834", se_count: int | None = None) -> list[str]:
    body = [
        "BGN*00*1*20250101*1200****2",
        "N1*P5*OREGON HEALTH AUTHORITY*FI*930000000",
        "N1*IN*OHA*FI*930000000",
    ]
    for member in members:
        body += member
    st = [f"ST*{st01}*0001*005010X220A1", *body]
    se = f"SE*{se_count if se_count is not None else len(st) + 1}*0001"
    assert len(ISA) == 105
    return [ISA, "GS*BE*OHA*CCO*20250101*1200*1*X*005010X220A1", *st, se, "GE*1*1", "IEA*1*000000001"]


def write_834(path: Path, segs: list[str]) -> Path:
    path.write_text("~\n".join(segs) + "~\n", encoding="ascii")
    return path


def position(segs: list[str], seg: str) -> int:
    """1-based position of the last such segment in the file (ISA = 1), as the errors name it."""
    return len(segs) - segs[::-1].index(seg)


def with_plans(tmp_path: Path) -> Path:
    """The shipped map with plan ids translated to CCO ids."""
    text = MAP.read_text(encoding="utf-8").replace(
        "[values.cco]\n", '[values.cco]\n"PLAN-AC" = "ALLCARE"\n"PLAN-IHN" = "IHN"\n'
    )
    out = tmp_path / "enrollment-834.toml"
    out.write_text(text, encoding="utf-8")
    return out


def convert(x834: X834Map, path: Path) -> tuple[Enrollment, list[InvalidDataError]]:
    errors: list[InvalidDataError] = []
    rows = list(read_834(path, x834.cmap, errors, x834=x834))
    return convert_enrollment(rows, x834.cmap, member_system=DEFAULT_MEMBER_ID_SYSTEM), errors


def test_three_members_become_patients_and_coverage(tmp_path: Path) -> None:
    x834 = load_834_map(with_plans(tmp_path))
    path = write_834(tmp_path / "in.834", segments(SUBSCRIBER, CHILD, TERMINATED))
    out, errors = convert(x834, path)
    assert errors == [] and out.errors == []
    assert set(out.patients) == {"AC1", "KID1", "TERM1"}
    jane = out.patients["AC1"]
    assert (jane["birthDate"], jane["gender"], jane["address"]) == (
        "2021-05-05",
        "female",
        [{"use": "home", "district": "Lane"}],
    )
    assert [e["valueString"] for e in jane["extension"]] == ["Spanish"]  # LUI03; no REALD race in an 834
    assert (out.patients["KID1"]["gender"], out.patients["TERM1"]["gender"]) == ("male", "unknown")
    spans = {
        r["beneficiary"]["reference"]: (
            r["payor"][0]["identifier"]["value"],
            r["period"],
            r["class"][0]["value"],
        )
        for r in out.coverages.values()
    }
    assert spans == {
        "Patient/AC1": ("ALLCARE", {"start": "2024-01-01"}, "BMH"),
        "Patient/KID1": ("IHN", {"start": "2024-01-01"}, "BMH"),  # the child is its own member
        "Patient/TERM1": ("ALLCARE", {"start": "2024-01-01", "end": "2025-05-31"}, "BMH"),  # 024 closes
    }


def test_change_makes_a_new_version_of_the_same_span(tmp_path: Path) -> None:
    x834 = load_834_map(with_plans(tmp_path))
    added, _ = convert(x834, write_834(tmp_path / "a.834", segments(SUBSCRIBER)))
    change = [s.replace("*021*", "*001*") for s in SUBSCRIBER] + ["DTP*349*D8*20250630"]
    changed, errors = convert(x834, write_834(tmp_path / "b.834", segments(change)))
    assert errors == [] and set(added.coverages) == set(changed.coverages)
    assert next(iter(changed.coverages.values()))["period"]["end"] == "2025-06-30"


def test_termination_falls_back_to_the_eligibility_end(tmp_path: Path) -> None:
    x834 = load_834_map(with_plans(tmp_path))
    member = [s for s in TERMINATED if not s.startswith("DTP*349")]
    member.insert(2, "DTP*357*D8*20250430")
    out, errors = convert(x834, write_834(tmp_path / "t.834", segments(member)))
    assert errors == []
    assert next(iter(out.coverages.values()))["period"] == {"start": "2024-01-01", "end": "2025-04-30"}


def _swap(member: list[str], old: str, new: str | None) -> list[str]:
    assert old in member
    return [s for s in (new if s == old else s for s in member) if s is not None]


@pytest.mark.parametrize(
    ("member", "bad", "message"),
    [
        pytest.param(_swap(SUBSCRIBER, "DMG*D8*20210505*F", "DMG*D8**F"), "DMG*D8**F", "missing date (DMG02)",
                     id="missing-birth-date"),
        pytest.param(_swap(SUBSCRIBER, "DMG*D8*20210505*F", "DMG*D8*20211399*F"), "DMG*D8*20211399*F",
                     "'20211399' is not a date (CCYYMMDD) (DMG02)", id="bad-birth-date"),
        pytest.param(_swap(SUBSCRIBER, "DMG*D8*20210505*F", "DMG*D8*20210505*X"), "DMG*D8*20210505*X",
                     "sex 'X' is not M, F or U (DMG03)", id="bad-sex"),
        pytest.param(_swap(SUBSCRIBER, "DMG*D8*20210505*F", None), "NM1*IL*1*DOE*JANE****MI*AC1",
                     "no DMG segment in loop 2100A: missing birth date (DMG02)", id="no-dmg"),
        pytest.param(_swap(SUBSCRIBER, "DTP*348*D8*20240101", None), "HD*021**HLT*BMH*IND",
                     "missing benefit begin date (DTP*348) (DTP03)", id="no-begin"),
        pytest.param(_swap(SUBSCRIBER, "REF*1L*PLAN-AC", "REF*CE*PLAN-AC"), "HD*021**HLT*BMH*IND",
                     "missing CCO: no REF*1L in loop 2300 or 2000 (REF02)", id="no-cco-ref"),
        pytest.param(_swap(CHILD, "NM1*IL*1*DOE*KID****MI*KID1", "NM1*IL*1*DOE*KID"), "NM1*IL*1*DOE*KID",
                     "missing member id: no NM1*IL with NM108 in ['MI', 'ZZ'] (NM109)", id="child-without-id"),
        pytest.param(_swap(TERMINATED, "DTP*349*D8*20250531", None), "HD*024**HLT*BMH*IND",
                     "termination (024) without an end date (DTP*349 or DTP*357) (DTP03)", id="term-no-end"),
        pytest.param(_swap(SUBSCRIBER, "INS*Y*18*021*28*A***AC", "INS*Y*18*999*28*A***AC"),
                     "INS*Y*18*999*28*A***AC", "maintenance type '999' is not one of", id="bad-ins03"),
    ],
)  # fmt: skip
def test_errors_name_the_segment_and_element(
    tmp_path: Path, member: list[str], bad: str, message: str
) -> None:
    x834 = load_834_map(with_plans(tmp_path))
    good = [s.replace("JANE", "JOE").replace("AC1", "AC2") for s in SUBSCRIBER]
    segs = segments(good, member)
    path = write_834(tmp_path / "bad.834", segs)
    out, errors = convert(x834, path)
    assert [str(e) for e in errors if message in str(e)] != [], [str(e) for e in errors]
    located = next(e for e in errors if message in str(e))
    assert located.location == f"{path}:segment {position(segs, bad)}"
    assert set(out.patients) == {"AC2"}  # the bad member's rows are left out; the load fails


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        pytest.param({"se_count": 3}, "SE count of 3", id="se-count"),
        pytest.param({"st01": "270"}, "transaction set '270' is not an 834 (ST01)", id="not-834"),
    ],
)
def test_envelope_faults(tmp_path: Path, kw: dict[str, object], message: str) -> None:
    x834 = load_834_map(with_plans(tmp_path))
    _, errors = convert(x834, write_834(tmp_path / "e.834", segments(SUBSCRIBER, **kw)))  # type: ignore[arg-type]
    assert any(message in str(e) for e in errors), [str(e) for e in errors]


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        pytest.param("a.834", "x", True, id="suffix-834"),
        pytest.param("a.EDI", "x", True, id="suffix-edi"),
        pytest.param("a.txt", ISA + "~", True, id="isa-content"),
        pytest.param("a.csv", "MEMBER_ID,CCO_ID\n", False, id="csv"),
    ],
)
def test_detection(tmp_path: Path, name: str, text: str, expected: bool) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    assert is_834_file(path) is expected


def test_map_is_strict(tmp_path: Path) -> None:
    bad = tmp_path / "m.toml"
    bad.write_text('[options]\ncco_ref_qualfier = "CE"\n', encoding="utf-8")
    with pytest.raises(MappingsError, match="cco_ref_qualfier"):
        load_834_map(bad)
    assert load_834_map(MAP).cco_ref_qualifier == "1L"


def test_load_enrollment_834_then_evaluate(tmp_path: Path, store: Store, mappings: Mappings) -> None:
    db = url_of(store)
    cmap = str(with_plans(tmp_path))
    segs = segments(_swap(SUBSCRIBER, "DMG*D8*20210505*F", "DMG*D8**F"), CHILD)
    bad = write_834(tmp_path / "bad.834", segs)
    failed = run("load-enrollment", str(bad), "--columns", cmap, "--database", db)
    assert failed.exit_code == 3
    assert position(segs, "DMG*D8**F") == 12
    assert f"{bad}:segment 12: missing date (DMG02)" in failed.stderr
    assert "nothing was written" in failed.stderr
    assert results(evaluate(store, mappings)) == {}

    good = write_834(tmp_path / "good.edi", segments(SUBSCRIBER, CHILD, TERMINATED))
    loaded = run("load-enrollment", str(good), "--columns", cmap, "--database", db)
    assert loaded.exit_code == 0, loaded.stderr
    assert "3 rows, 3 members, 3 spans" in loaded.stderr
    assert results(evaluate(store, mappings)) == {
        "AC1": (1, 0, "no-qualifying-service", "ALLCARE"),
        "KID1": (1, 0, "no-qualifying-service", "IHN"),
        "TERM1": (0, 0, "not-enrolled-on-anchor", None),
    }
