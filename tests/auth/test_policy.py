"""The tenancy policy (fhir_adapter/auth/policy.py) at its boundaries, on both engines: which
Patient records (and so which resources) a CCO caller sees for a window of days, how payors are
matched, and the role rules that need no data."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import pytest
from sqlalchemy import text

from fhir_adapter.auth.policy import (
    EvaluationScope,
    Policy,
    Window,
    is_reserved_source,
    tenant_report_source,
)
from fhir_adapter.errors import ForbiddenError, NotFoundError, UsageError
from fhir_adapter.measure.spec import Mappings
from fhir_adapter.store.db import ParsedResource, Store
from tests import cohorts as c

TZ_NOW = datetime(2026, 2, 16, 20, tzinfo=UTC)  # 2026-02-16 in Oregon
WINDOW_2025 = Window(date(2025, 1, 1), date(2025, 12, 31))


@dataclass(frozen=True)
class Who:
    client_id: str
    source: str
    role: str
    ccos: tuple[str, ...] = ()


def _policy(mappings: Mappings, who: Who, *, lookback: int = 548, dialect: str = "sqlite") -> Policy:
    return Policy.for_caller(
        who,
        ccos=mappings.ccos,
        report_source="adapter-reports",
        lookback_days=lookback,
        tz=c_tz(),
        dialect=dialect,
    )


def c_tz() -> Any:
    from zoneinfo import ZoneInfo

    return ZoneInfo("America/Los_Angeles")


def _write(store: Store, source: str, *resources: dict[str, Any], at: int = 1) -> None:
    store.write_batch(source, [ParsedResource(r["resourceType"], r["id"], r) for r in resources], at)


def _visible(store: Store, policy: Policy, rtype: str, window: Window, as_of: int | None = None) -> set[str]:
    predicate = policy.resources(rtype, window, as_of=as_of)
    sql = (
        "SELECT r.source, r.rid FROM resources r WHERE r.rtype = :rt AND r.superseded_at IS NULL "
        f"AND r.deleted = 0{predicate.and_sql()}"
    )
    with store.read() as conn:
        return {f"{s}/{rid}" for s, rid in conn.execute(text(sql), {**predicate.params, "rt": rtype})}


ALLCARE = Who("cco-allcare", "cco-allcare", "cco", ("ALLCARE",))
IHN = Who("cco-ihn", "cco-ihn", "cco", ("IHN",))

#: (case, coverage start, coverage end, visible to ALLCARE over 2025?)
SPAN_CASES = [
    ("whole-year", "2025-01-01", "2025-12-31", True),
    ("ends-on-first-day", "2024-06-01", "2025-01-01", True),
    ("ends-the-day-before", "2024-06-01", "2024-12-31", False),
    ("starts-on-last-day", "2025-12-31", None, True),
    ("starts-the-day-after", "2026-01-01", None, False),
    ("open-both-ends", None, None, True),
]


@pytest.mark.parametrize(("start", "end", "seen"), [pytest.param(*x[1:], id=x[0]) for x in SPAN_CASES])
def test_a_span_must_overlap_the_window(
    store: Store, mappings: Mappings, start: str | None, end: str | None, seen: bool
) -> None:
    _write(store, "elig", c.patient("kid", "2021-01-01"), c.coverage("cov", "kid", start, end))
    _write(
        store,
        "ehr",
        c.patient("kid-ehr", "2021-01-01", member="M-kid"),
        c.encounter("enc", "kid-ehr", "2025-03-03"),
    )
    policy = _policy(mappings, ALLCARE, dialect=store.dialect)
    expected = {"elig/kid", "ehr/kid-ehr"} if seen else set()
    assert _visible(store, policy, "Patient", WINDOW_2025) == expected
    assert _visible(store, policy, "Encounter", WINDOW_2025) == ({"ehr/enc"} if seen else set())
    assert _visible(store, policy, "Coverage", WINDOW_2025) == ({"elig/cov"} if seen else set())
    assert _visible(store, _policy(mappings, IHN, dialect=store.dialect), "Patient", WINDOW_2025) == set()


#: (case, coverage fields, ALLCARE sees?, IHN sees?) — payors matched as the engine's t_span does
PAYOR_CASES = [
    ("payor-identifier", {"payor": [{"identifier": {"system": c.CCO_SYSTEM, "value": "ALLCARE"}}]}, True, False),
    ("payor-organization", {"payor": [{"reference": "Organization/org-ac"}]}, True, False),
    ("identifier-wins-over-organization",
     {"payor": [{"reference": "Organization/org-ac", "identifier": {"system": c.CCO_SYSTEM, "value": "IHN"}}]},
     False, True),
    ("other-system", {"payor": [{"identifier": {"system": "urn:other", "value": "ALLCARE"}}]}, False, False),
    ("not-active", {"status": "cancelled"}, False, False),
    ("two-payors", {"payor": [{"identifier": {"system": c.CCO_SYSTEM, "value": "ALLCARE"}},
                              {"identifier": {"system": c.CCO_SYSTEM, "value": "IHN"}}]}, True, True),
]  # fmt: skip


@pytest.mark.parametrize(("fields", "allcare", "ihn"), [pytest.param(*x[1:], id=x[0]) for x in PAYOR_CASES])
def test_payors_are_matched_like_the_engine(
    store: Store, mappings: Mappings, fields: dict[str, Any], allcare: bool, ihn: bool
) -> None:
    org = {"resourceType": "Organization", "id": "org-ac",
           "identifier": [{"system": c.CCO_SYSTEM, "value": "ALLCARE"}]}  # fmt: skip
    coverage = {**c.coverage("cov", "kid", "2025-01-01", None), **fields}
    _write(store, "elig", c.patient("kid", "2021-01-01"), coverage, org)
    for who, seen in ((ALLCARE, allcare), (IHN, ihn)):
        policy = _policy(mappings, who, dialect=store.dialect)
        assert _visible(store, policy, "Patient", WINDOW_2025) == ({"elig/kid"} if seen else set()), who.ccos


def test_records_are_linked_by_member_id_and_resolved_in_their_own_source(
    store: Store, mappings: Mappings
) -> None:
    """Two sources share Patient/p1 for two different children: each CCO sees its child's record
    and the resources that name Patient/p1 in that source only; an unlinked record is its own
    person."""
    _write(store, "elig", c.patient("ann", "2021-01-01", member="M-ANN"), c.full_year("ann", cco="ALLCARE"),
           c.patient("ben", "2021-01-01", member="M-BEN"), c.full_year("ben", cco="IHN"))  # fmt: skip
    _write(store, "ehr-a", c.patient("p1", "2021-01-01", member="M-ANN"), c.encounter("a-enc", "p1", "2025-02-02"),
           c.patient("u1", "2021-01-01", unlinked=True), c.encounter("u-enc", "u1", "2025-02-02"))  # fmt: skip
    _write(store, "ehr-b", c.patient("p1", "2021-01-01", member="M-BEN"), c.encounter("b-enc", "p1", "2025-02-02"),
           {"resourceType": "Practitioner", "id": "doc"}, {"resourceType": "Group", "id": "roster",
            "type": "person", "actual": True, "member": [{"entity": {"reference": "Patient/p1"}}]})  # fmt: skip
    allcare = _policy(mappings, ALLCARE, dialect=store.dialect)
    ihn = _policy(mappings, IHN, dialect=store.dialect)
    assert _visible(store, allcare, "Patient", WINDOW_2025) == {"elig/ann", "ehr-a/p1"}
    assert _visible(store, allcare, "Encounter", WINDOW_2025) == {"ehr-a/a-enc"}
    assert _visible(store, ihn, "Encounter", WINDOW_2025) == {"ehr-b/b-enc"}
    # directory: whole; stored rosters: never
    assert _visible(store, allcare, "Practitioner", WINDOW_2025) == {"ehr-b/doc"}
    assert _visible(store, ihn, "Group", WINDOW_2025) == set()
    # the unlinked child is attributed through its own record's Coverage only
    _write(store, "ehr-a", c.coverage("u-cov", "u1", "2025-01-01", None, cco="ALLCARE"), at=2)
    assert _visible(store, allcare, "Encounter", WINDOW_2025) == {"ehr-a/a-enc", "ehr-a/u-enc"}
    # subject resolution never crosses into the other child's record
    assert allcare.resolve_subject(store, "Patient/p1", None, WINDOW_2025, 10**18) == "ehr-a"
    assert ihn.resolve_subject(store, "Patient/p1", None, WINDOW_2025, 10**18) == "ehr-b"
    with pytest.raises(NotFoundError, match="no Patient/p1 from source 'ehr-b'"):
        allcare.resolve_subject(store, "Patient/p1", "ehr-b", WINDOW_2025, 10**18)
    with pytest.raises(NotFoundError):
        ihn.resolve_subject(store, "Patient/u1", None, WINDOW_2025, 10**18)


def test_measure_reports(store: Store, mappings: Mappings) -> None:
    """Reports about a child (same-source subject), the adapter's own reports when their subject id is
    unambiguous, and the CCO's own report source."""

    def report(rid: str, subject: str | None) -> dict[str, Any]:
        r: dict[str, Any] = {"resourceType": "MeasureReport", "id": rid, "status": "complete",
                             "type": "individual" if subject else "summary", "measure": "m",
                             "period": {"start": "2025-01-01", "end": "2025-12-31"}}  # fmt: skip
        if subject:
            r["subject"] = {"reference": subject}
        return r

    _write(store, "elig", c.patient("ann", "2021-01-01", member="M-ANN"), c.full_year("ann", cco="ALLCARE"),
           c.patient("ben", "2021-01-01", member="M-BEN"), c.full_year("ben", cco="IHN"))  # fmt: skip
    _write(store, "ehr-a", c.patient("p1", "2021-01-01", member="M-ANN"), report("dc-a", "Patient/p1"))
    _write(store, "ehr-b", c.patient("p1", "2021-01-01", member="M-BEN"), report("dc-b", "Patient/p1"))
    _write(store, "adapter-reports", report("ind-ann", "Patient/ann"), report("ind-p1", "Patient/p1"),
           report("summary", None))  # fmt: skip
    _write(store, tenant_report_source("adapter-reports", ["ALLCARE"]), report("own-summary", None))
    _write(store, tenant_report_source("adapter-reports", ["IHN"]), report("ihn-summary", None))
    allcare = _policy(mappings, ALLCARE, dialect=store.dialect)
    assert _visible(store, allcare, "MeasureReport", WINDOW_2025) == {
        "ehr-a/dc-a",
        "adapter-reports/ind-ann",
        "adapter-reports.ALLCARE/own-summary",
    }
    two = _policy(mappings, Who("cco-2", "cco-2", "cco", ("IHN", "ALLCARE")), dialect=store.dialect)
    seen = _visible(store, two, "MeasureReport", WINDOW_2025)
    # both children are its own, so Patient/p1 is unambiguous for it
    assert {
        "adapter-reports/ind-p1",
        "adapter-reports.IHN/ihn-summary",
        "adapter-reports.ALLCARE/own-summary",
    } <= seen
    assert "adapter-reports/summary" not in seen


def test_the_read_window_follows_the_lookback_setting(store: Store, mappings: Mappings) -> None:
    _write(
        store, "elig", c.patient("left", "2021-01-01"), c.coverage("cov", "left", "2024-01-01", "2025-05-31")
    )
    window = _policy(mappings, ALLCARE).read_window(TZ_NOW)
    assert window == Window(date(2024, 8, 17), date(2026, 2, 16))  # 548 days before today
    assert _visible(store, _policy(mappings, ALLCARE, dialect=store.dialect), "Patient", window) == {
        "elig/left"
    }
    short = _policy(mappings, ALLCARE, lookback=30, dialect=store.dialect)
    assert _visible(store, short, "Patient", short.read_window(TZ_NOW)) == set()


def test_as_of_decides_attribution(store: Store, mappings: Mappings) -> None:
    """Evaluations judge attribution on the store as it was at their data cut."""
    _write(
        store, "elig", c.patient("kid", "2021-01-01"), c.coverage("cov", "kid", "2025-01-01", None), at=100
    )
    _write(store, "elig", c.coverage("cov", "kid", "2025-01-01", None, cco="IHN"), at=200)
    policy = _policy(mappings, ALLCARE, dialect=store.dialect)
    assert _visible(store, policy, "Patient", WINDOW_2025, as_of=150) == {"elig/kid"}
    assert _visible(store, policy, "Patient", WINDOW_2025, as_of=250) == set()
    assert _visible(store, policy, "Patient", WINDOW_2025) == set()


#: (role, ccos, key, unrestricted, evaluates as)
ROLE_CASES = [
    ("oha", (), "all", True, None),
    ("admin", (), "all", True, None),
    ("dev", (), "all", True, None),
    ("cco", ("IHN", "ALLCARE"), "cco:ALLCARE+IHN", False, ("ALLCARE", "IHN")),
    ("ehr", (), "ehr:src", False, "forbidden"),
    ("anonymous", (), "none:anonymous", False, "forbidden"),
    ("metrics", (), "none:metrics", False, "forbidden"),
]


@pytest.mark.parametrize(
    ("role", "ccos", "key", "unrestricted", "scope"), [pytest.param(*x, id=x[0]) for x in ROLE_CASES]
)
def test_roles(
    mappings: Mappings, role: str, ccos: tuple[str, ...], key: str, unrestricted: bool, scope: Any
) -> None:
    policy = _policy(mappings, Who("client", "src", role, ccos))
    assert policy.key == key
    assert policy.unrestricted is unrestricted
    if unrestricted:
        assert policy.resources("Encounter", WINDOW_2025).unrestricted
    elif role == "ehr":
        assert policy.resources("Encounter", WINDOW_2025).params == {"tn_source": "src"}
    elif role != "cco":
        assert policy.resources("Organization", WINDOW_2025).sql == "1 = 0"
    if scope == "forbidden":
        with pytest.raises(ForbiddenError):
            policy.evaluation_scope()
    else:
        assert policy.evaluation_scope().ccos == scope


def test_jobs_metrics_and_organizations(mappings: Mappings) -> None:
    allcare = _policy(mappings, ALLCARE)
    allcare.check_job("j1", "cco-allcare")
    for owner in ("cco-ihn", None):
        with pytest.raises(NotFoundError, match="no job j1"):
            allcare.check_job("j1", owner)
    _policy(mappings, Who("state", "state", "oha")).check_job("j1", "cco-ihn")
    allcare.check_organization("ALLCARE")
    with pytest.raises(ForbiddenError):
        allcare.check_organization("IHN")
    with pytest.raises(ForbiddenError):
        allcare.check_metrics()
    _policy(mappings, Who("scraper", "x", "metrics")).check_metrics()


def test_evaluation_scope() -> None:
    scope = EvaluationScope(("IHN", "ALLCARE"))
    assert EvaluationScope.from_json(scope.to_json()) == EvaluationScope(("ALLCARE", "IHN"))
    assert EvaluationScope.from_json(None) == EvaluationScope(None)
    assert scope.report_source("adapter-reports") == "adapter-reports.ALLCARE+IHN"
    assert scope.tag == "cco=ALLCARE+IHN"
    assert EvaluationScope(None).report_source("adapter-reports") == "adapter-reports"
    with pytest.raises(UsageError):
        EvaluationScope.from_json("ALLCARE")


@pytest.mark.parametrize(
    ("name", "reserved"),
    [("adapter-reports", True), ("adapter-reports.IHN", True), ("adapter-reports2", False), ("ehr-a", False)],
)
def test_reserved_sources(name: str, reserved: bool) -> None:
    assert is_reserved_source(name, "adapter-reports") is reserved


def test_many_ccos_do_not_enumerate_every_subset(mappings: Mappings) -> None:
    ids = tuple(sorted(c.id for c in mappings.ccos))[:8]
    policy = _policy(mappings, Who("big", "big", "cco", ids))
    assert len(policy.tenant_report_sources()) == len(ids) + 1
    assert len(_policy(mappings, Who("two", "two", "cco", ids[:2])).tenant_report_sources()) == 3
