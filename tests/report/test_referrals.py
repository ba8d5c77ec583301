"""The SE referral loop: the status rule at its boundaries (pure), and end to end on SQLite and
PostgreSQL: which ServiceRequests are SE referrals, closing by a service from another source,
cancellation by request status or the latest Task, open versus overdue, counts per CCO and
clinic, and strict parameter files."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fhir_adapter.errors import MappingsError
from fhir_adapter.ingest import roster
from fhir_adapter.ingest.runner import ingest_items
from fhir_adapter.measure.spec import Mappings
from fhir_adapter.report import referrals as rf
from fhir_adapter.settings import Settings
from fhir_adapter.store.db import ParsedResource, Store
from fhir_adapter.store.referrals import RequestFact, ServiceDay, TaskFact
from tests import cohorts as c
from tests.conftest import ROOT

SNOMED = "http://snomed.info/sct"
CONFIG = rf.load_loop_config(ROOT / "mappings")
REF_DAY = date(2025, 3, 1)
WINDOW_END = REF_DAY + timedelta(days=90)  # 2025-05-30


def _request(**changes: Any) -> RequestFact:
    base = RequestFact("ehr", "sr1", "p1", "m:M-1", "M-1", "active", "order", REF_DAY, REF_DAY, ())
    return replace(base, **changes)


def _svc(day: date) -> ServiceDay:
    return ServiceDay(day, "claims", "ExplanationOfBenefit", f"e-{day.isoformat()}")


def _task(status: str, day: date | None, at: int = 1, rid: str = "t1") -> TaskFact:
    return TaskFact(rid, status, day, at)


@pytest.mark.parametrize(
    ("request_", "services", "today", "expected"),
    [
        pytest.param(_request(), [_svc(REF_DAY)], WINDOW_END, "closed", id="service-on-referral-day"),
        pytest.param(_request(), [_svc(WINDOW_END)], WINDOW_END + timedelta(1), "closed", id="service-on-window-last-day"),
        pytest.param(_request(), [_svc(WINDOW_END + timedelta(1))], WINDOW_END + timedelta(1), "overdue",
                     id="service-day-after-window-is-overdue"),
        pytest.param(_request(), [_svc(REF_DAY - timedelta(1))], WINDOW_END, "open", id="service-before-referral-open"),
        pytest.param(_request(), [], WINDOW_END, "open", id="no-service-window-last-day-open"),
        pytest.param(_request(), [], WINDOW_END + timedelta(1), "overdue", id="no-service-day-after-overdue"),
        pytest.param(_request(status="revoked"), [], WINDOW_END, "cancelled", id="revoked-request"),
        pytest.param(_request(status="revoked"), [_svc(REF_DAY)], WINDOW_END, "closed", id="service-closes-revoked"),
        pytest.param(_request(status="completed"), [], WINDOW_END + timedelta(1), "overdue",
                     id="completed-request-without-service-overdue"),
        pytest.param(_request(tasks=(_task("cancelled", REF_DAY),)), [], WINDOW_END, "cancelled", id="task-cancelled"),
        pytest.param(_request(tasks=(_task("rejected", REF_DAY),)), [], WINDOW_END, "cancelled", id="task-rejected"),
        pytest.param(_request(tasks=(_task("cancelled", REF_DAY), _task("accepted", REF_DAY + timedelta(3), rid="t2"))),
                     [], WINDOW_END, "open", id="later-task-accepted-wins"),
        pytest.param(_request(tasks=(_task("accepted", REF_DAY, at=1), _task("failed", REF_DAY, at=2, rid="t2"))),
                     [], WINDOW_END, "cancelled", id="same-day-later-arrival-wins"),
        pytest.param(_request(tasks=(_task("cancelled", REF_DAY), _task("entered-in-error", REF_DAY + timedelta(1),
                                                                          rid="t2"))),
                     [], WINDOW_END, "cancelled", id="entered-in-error-task-ignored"),
        pytest.param(_request(day=None, day_last=None), [_svc(REF_DAY)], WINDOW_END, "undated", id="undated"),
    ],
)  # fmt: skip
def test_loop_status(request_: RequestFact, services: list[ServiceDay], today: date, expected: str) -> None:
    assert rf.loop_status(request_, services, CONFIG, today).status == expected


def test_closing_service_is_the_first_in_the_window() -> None:
    st = rf.loop_status(_request(), [_svc(REF_DAY - timedelta(1)), _svc(REF_DAY + timedelta(5)),
                                     _svc(REF_DAY + timedelta(9))], CONFIG, WINDOW_END)  # fmt: skip
    assert st.closing == _svc(REF_DAY + timedelta(5)) and st.window_end == WINDOW_END


# -- end to end -------------------------------------------------------------------------------

LOADED = datetime(2026, 1, 2, tzinfo=UTC)
NOW = datetime(2026, 1, 15, tzinfo=UTC)
START, END = date(2025, 1, 1), date(2025, 12, 31)
NORTH, SOUTH = "North Clinic", "South Clinic"


def _sr(rid: str, pid: str, day: str | None, *, code: str = "306226009", status: str = "active",
        intent: str = "order", reason: str | None = None, category: str | None = None) -> dict[str, Any]:  # fmt: skip
    r: dict[str, Any] = {
        "resourceType": "ServiceRequest", "id": rid, "status": status, "intent": intent,
        "code": {"coding": [{"system": SNOMED, "code": code}]}, "subject": {"reference": f"Patient/{pid}"},
    }  # fmt: skip
    if day:
        r["authoredOn"] = day
    if reason:
        r["reasonCode"] = [{"coding": [{"system": c.ICD, "code": reason}]}]
    if category:
        r["category"] = [{"coding": [{"system": SNOMED, "code": category}]}]
    return r


def _task_resource(rid: str, request: str, status: str, authored: str) -> dict[str, Any]:
    return {
        "resourceType": "Task", "id": rid, "status": status, "intent": "order",
        "focus": {"reference": f"ServiceRequest/{request}"}, "for": {"reference": "Patient/x"},
        "authoredOn": authored,
    }  # fmt: skip


#: child id -> (CCO, clinic, expected status or None when not an SE referral)
EXPECTED: dict[str, tuple[str, str, str | None]] = {
    "closed": ("ALLCARE", NORTH, "closed"),
    "lastday": ("ALLCARE", NORTH, "closed"),
    "dayafter": ("ALLCARE", NORTH, "overdue"),
    "nodx": ("ALLCARE", SOUTH, "overdue"),
    "open": ("ALLCARE", SOUTH, "open"),
    "task": ("IHN", "unassigned", "cancelled"),
    "byreason": ("IHN", "unassigned", "closed"),
    "speech": ("IHN", "unassigned", None),
    "draft": ("IHN", "unassigned", None),
    "old": ("ALLCARE", NORTH, "closed"),
}
CLAIMS = [r for pid, (cco, _clinic, _s) in EXPECTED.items()
          for r in (c.patient(pid, "2015-01-01" if pid == "old" else "2022-05-05"), c.full_year(pid, cco=cco))]  # fmt: skip
CLAIMS += [
    # a claim in another source closes the EHR's referral (same member id)
    c.eob("e-closed", "closed", "2025-04-10"),
    c.eob("e-lastday", "lastday", "2025-05-30"),
    c.eob("e-dayafter", "dayafter", "2025-05-31"),
    c.eob("e-nodx", "nodx", "2025-03-10", dx=("Z00.129",)),
    # an 8-year-old (outside the measure's ages) still closes a referral
    c.eob("e-old", "old", "2025-03-02"),
]
EHR = [c.patient(pid, "2022-05-05") for pid in EXPECTED if pid != "old"] + [c.patient("old", "2015-01-01")]
EHR += [
    _sr("sr-closed", "closed", "2025-03-01"),
    _sr("sr-lastday", "lastday", "2025-03-01T10:00:00-08:00"),
    _sr("sr-dayafter", "dayafter", "2025-03-01"),
    _sr("sr-nodx", "nodx", "2025-03-01"),
    _sr("sr-open", "open", "2025-12-01"),
    _sr("sr-task", "task", "2025-06-01"),
    _task_resource("t-1", "sr-task", "cancelled", "2025-06-05"),
    # generic "Patient referral" category with an SE diagnosis as reason, closed by an Encounter
    _sr("sr-byreason", "byreason", "2025-07-01", code="3457005", reason="F43.22"),
    c.encounter("v-byreason", "byreason", "2025-08-01", reason="F43.22"),
    _sr("sr-speech", "speech", "2025-07-01", code="1234567000"),
    _sr("sr-draft", "draft", "2025-07-01", status="draft"),
    _sr("sr-old", "old", "2025-03-01"),
    _sr("sr-lastyear", "closed", "2024-12-31"),
]
ASSIGN = [
    "MEMBER_ID,CCO,CLINIC,PCP_NPI,START_DATE,END_DATE",
    "M-closed,ALLCARE,North Clinic,,2025-01-01,",
    "M-lastday,ALLCARE,North Clinic,,2025-01-01,",
    "M-dayafter,ALLCARE,North Clinic,,2025-01-01,",
    "M-old,ALLCARE,North Clinic,,2025-01-01,",
    "M-nodx,ALLCARE,South Clinic,,2025-01-01,",
    "M-open,ALLCARE,South Clinic,,2025-01-01,",
]


def _load(store: Store, mappings: Mappings, tmp_path: Path) -> None:
    for source, resources in (("claims", CLAIMS), ("ehr", EHR)):
        items = [ParsedResource(r["resourceType"], r["id"], r) for r in resources]
        ingest_items(store, items, source, batch_size=100, clock=lambda: LOADED)
    path = tmp_path / "assign.csv"
    path.write_text("\n".join(ASSIGN) + "\n")
    cmap = roster.assignment_map(ROOT / "mappings" / "extracts" / roster.ASSIGNMENT_MAP)
    roster.load_assignments(store, path, "cco-file", cmap=cmap, ccos=mappings.ccos, clock=lambda: LOADED)


@pytest.fixture
def loop(store: Store, mappings: Mappings, settings: Settings, tmp_path: Path) -> rf.ReferralLoop:
    _load(store, mappings, tmp_path)
    return rf.run_referral_loop(
        settings, store, "oregon-se-issue-focused", START, END, mappings=mappings, clock=lambda: NOW
    )


def test_referral_statuses_end_to_end(loop: rf.ReferralLoop) -> None:
    got = {
        row["patient"].removeprefix("Patient/"): (row["cco"], row["clinic"], row["status"])
        for row in loop.rows
    }
    expected = {pid: v for pid, v in EXPECTED.items() if v[2] is not None}
    assert got == expected
    assert len(loop.rows) == len(expected)  # the 2024 referral is outside the period
    by_child = {row["patient"]: row for row in loop.rows}
    closed = by_child["Patient/closed"]
    assert (closed["closing_service"], closed["closing_source"], closed["closing_date"], closed["days_to_service"],
            closed["identified_by"], closed["member_id"]) == (
        "ExplanationOfBenefit/e-closed", "claims", "2025-04-10", 40, "referral-code", "M-closed",
    )  # fmt: skip
    assert by_child["Patient/lastday"]["window_end"] == "2025-05-30"
    assert by_child["Patient/byreason"]["identified_by"] == "diagnosis"
    assert by_child["Patient/byreason"]["closing_service"] == "Encounter/v-byreason"
    assert (by_child["Patient/task"]["task"], by_child["Patient/task"]["task_status"]) == (
        "Task/t-1",
        "cancelled",
    )
    assert by_child["Patient/open"]["days_since_referral"] == (date(2026, 1, 14) - date(2025, 12, 1)).days
    assert loop.today == date(2026, 1, 14)  # the data cut's local date in Oregon


def test_counts_per_cco_and_clinic(loop: rf.ReferralLoop) -> None:
    counts = {(r["cco"], r["clinic"]): (r["referrals"], r["closed"], r["open"], r["overdue"], r["cancelled"],
                                        r["closed_share"]) for r in loop.counts}  # fmt: skip
    assert counts == {
        ("ALLCARE", NORTH): (4, 3, 0, 1, 0, 0.75),
        ("ALLCARE", SOUTH): (2, 0, 1, 1, 0, 0.0),
        ("ALLCARE", "all"): (6, 3, 1, 2, 0, 0.5),
        ("IHN", "unassigned"): (2, 1, 0, 0, 1, 1.0),
        ("IHN", "all"): (2, 1, 0, 0, 1, 1.0),
        ("all", "all"): (8, 4, 1, 2, 1, round(4 / 7, 6)),
    }


def test_cco_filter(store: Store, mappings: Mappings, settings: Settings, tmp_path: Path) -> None:
    _load(store, mappings, tmp_path)
    loop = rf.run_referral_loop(settings, store, "oregon-se-issue-focused", START, END, cco="IHN",
                                mappings=mappings, clock=lambda: NOW)  # fmt: skip
    assert {r["cco"] for r in loop.rows} == {"IHN"} and len(loop.rows) == 2


def _write(tmp_path: Path, name: str, text: str) -> Path:
    folder = tmp_path / "m"
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(text)
    return folder


LOOP_TOML = (ROOT / "mappings" / rf.LOOP_FILE).read_text()


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        pytest.param(LOOP_TOML.replace("window_days = 90", "window_days = 90\nwindow = 3"), "unknown key 'window'", 10,
                     id="unknown-key"),
        pytest.param(LOOP_TOML.replace("window_days = 90", "window_days = -1"), "must be >= 0", 9,
                     id="negative-window"),
        pytest.param(LOOP_TOML.replace('cancelled_statuses = ["revoked"]', 'cancelled_statuses = ["gone"]'),
                     "'gone' is not one of", 22, id="not-a-request-status"),
        pytest.param(LOOP_TOML.replace('status = "assumption"', 'status = "maybe"', 1), "'maybe' is not one of", 10,
                     id="bad-status"),
    ],
)  # fmt: skip
def test_loop_file_errors_name_the_line(tmp_path: Path, text: str, message: str, line: int) -> None:
    folder = _write(tmp_path, rf.LOOP_FILE, text)
    with pytest.raises(MappingsError, match=message) as info:
        rf.load_loop_config(folder)
    assert info.value.location == f"{folder / rf.LOOP_FILE}:{line}"


@pytest.mark.parametrize(
    ("row", "message"),
    [
        pytest.param("https://example.org/unknown,1,x,candidate,s", "unknown code system"),
        pytest.param(f"{SNOMED},183524004,again,candidate,s", "duplicate code"),
        pytest.param(f"{SNOMED},999,x,guess,s", "status 'guess'"),
    ],
    ids=["unknown-system", "duplicate", "bad-status"],
)
def test_referral_code_errors(tmp_path: Path, mappings: Mappings, row: str, message: str) -> None:
    head = (
        "system,code,display,status,source\n"
        + f"{SNOMED},183524004,Referral to psychiatry service,candidate,s\n"
    )
    folder = _write(tmp_path, rf.REFERRAL_CODES_FILE, head + row + "\n")
    with pytest.raises(MappingsError, match=message) as info:
        rf.load_referral_codes(folder, mappings)
    assert info.value.location == f"{folder / rf.REFERRAL_CODES_FILE}:3"


def test_mappings_check_loads_the_report_parameters(tmp_path: Path) -> None:
    import shutil

    from fhir_adapter.mappings import check_mappings

    folder = tmp_path / "mappings"
    shutil.copytree(ROOT / "mappings", folder)
    lines = check_mappings(folder)
    assert "referral-loop.toml: window 90 days (assumption)" in lines
    assert "oregon-counties.csv: 36 counties" in lines
    (folder / rf.LOOP_FILE).write_text(LOOP_TOML.replace("[tasks]", "[task]"))
    with pytest.raises(MappingsError, match="unknown key 'task'") as info:
        check_mappings(folder)
    assert info.value.location is not None and info.value.location.startswith(str(folder / rf.LOOP_FILE))
