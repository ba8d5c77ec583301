"""The boundary table (issue #3 §9): named cases where peers get dates, enrollment, claims and
diagnosis links wrong. Every case runs on SQLite and on PostgreSQL.

Each case gives the resources per source and the expected result of the child ``c`` in the
``all-enrolled`` group as (initial population, denominator, exclusion, numerator, reason),
and optionally in ``identified-need``.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from fhir_adapter.fhir.dates import to_micros
from fhir_adapter.ingest.runner import ingest_items
from fhir_adapter.measure.spec import Mappings, MeasureSpec
from fhir_adapter.store.db import ParsedResource, Store
from fhir_adapter.store.evaluate import ChildResult, evaluate
from tests import cohorts as c

Resources = list[dict[str, Any]]
Expect = tuple[int, int, int, int, str]
P = "c"  # the child under test
T0 = datetime(2026, 2, 1, tzinfo=UTC)
FAR = to_micros(datetime(2100, 1, 1, tzinfo=UTC))


def load(store: Store, resources: Resources, source: str = "s1", at: datetime = T0) -> None:
    items = [ParsedResource(r["resourceType"], r["id"], r) for r in resources]
    ingest_items(store, items, source, batch_size=100, clock=lambda: at)


def child(
    store: Store,
    mappings: Mappings,
    spec: MeasureSpec | None = None,
    *,
    measure: str = "oregon-se-issue-focused",
    start: date = date(2025, 1, 1),
    end: date = date(2025, 12, 31),
    sources: str = "all",
    as_of: int = FAR,
    pid: str = P,
) -> ChildResult:
    spec = spec or mappings.measure_for(measure, end)
    ev = evaluate(store, mappings, spec, start, end, as_of, sources)  # type: ignore[arg-type]
    found = [ch for ch in ev.children if ch.subject_id == pid]
    assert len(found) == 1, [ch.subject_id for ch in ev.children]
    return found[0]


def result(ch: ChildResult, index: int = 0) -> Expect:
    g = ch.groups[index]
    return (int(g.ip), int(g.den), int(g.denex), int(g.num), g.reason)


BASE = [c.patient(P, "2022-06-15"), c.full_year(P)]


def ok(reason: str = "qualifying-service") -> Expect:
    return (1, 1, 0, 1 if reason == "qualifying-service" else 0, reason)


IP_FAIL = {
    r: (0, 0, 0, 0, r)
    for r in (
        "outside-age-band",
        "not-enrolled-on-anchor",
        "enrollment-gap",
        "no-birth-date",
        "ambiguous-birth-date",
    )
}

CASES: list[Any] = [
    # -- age on the last day ----------------------------------------------------------------
    pytest.param(
        [c.patient(P, "2024-12-31"), c.full_year(P), c.eob("e", P, "2025-06-01")],
        ok(),
        id="born-dec-31-turns-1",
    ),
    pytest.param(
        [c.patient(P, "2025-01-01"), c.full_year(P)], IP_FAIL["outside-age-band"], id="born-jan-1-age-0"
    ),
    pytest.param(
        [c.patient(P, "2020-01-01"), c.full_year(P)], ok("no-qualifying-service"), id="age-5-on-last-day"
    ),
    pytest.param(
        [c.patient(P, "2019-12-31"), c.full_year(P)], IP_FAIL["outside-age-band"], id="turns-6-on-last-day"
    ),
    pytest.param(
        [c.patient(P, "2026-03-01"), c.full_year(P)], IP_FAIL["outside-age-band"], id="born-after-period"
    ),
    pytest.param(
        [c.patient(P, "2021"), c.full_year(P)], ok("no-qualifying-service"), id="year-only-birth-date"
    ),
    pytest.param(
        [c.patient(P, "2021-03"), c.full_year(P)], ok("no-qualifying-service"), id="year-month-birth-date"
    ),
    pytest.param([c.patient(P, None), c.full_year(P)], IP_FAIL["no-birth-date"], id="no-birth-date"),
    # -- service dates ------------------------------------------------------------------------
    pytest.param([*BASE, c.eob("e", P, "2025-01-01")], ok(), id="service-first-day"),
    pytest.param([*BASE, c.eob("e", P, "2025-12-31")], ok(), id="service-last-day"),
    pytest.param([*BASE, c.eob("e", P, "2024-12-31")], ok("no-qualifying-service"), id="service-day-before"),
    pytest.param([*BASE, c.eob("e", P, "2026-01-01")], ok("no-qualifying-service"), id="service-day-after"),
    pytest.param(
        [*BASE, c.encounter("v", P, "2026-01-01T07:30:00Z", reason="F43.22")],
        ok(),
        id="2330-local-dec-31-in-utc",
    ),
    pytest.param(
        [*BASE, c.encounter("v", P, "2025-01-01T07:30:00Z", reason="F43.22")],
        ok("no-qualifying-service"),
        id="2330-local-dec-31-prior-year-in-utc",
    ),
    pytest.param(
        [*BASE, c.encounter("v", P, "2025-12-31T23:30:00-08:00", reason="F43.22")],
        ok(),
        id="2330-local-with-offset",
    ),
    # -- enrollment -----------------------------------------------------------------------------
    pytest.param(
        [
            c.patient(P, "2022-06-15"),
            c.coverage("a", P, "2024-01-01", "2025-03-01"),
            c.coverage("b", P, "2025-04-16", None),
        ],
        ok("no-qualifying-service"),
        id="gap-45-days",
    ),
    pytest.param(
        [
            c.patient(P, "2022-06-15"),
            c.coverage("a", P, "2024-01-01", "2025-03-01"),
            c.coverage("b", P, "2025-04-17", None),
        ],
        IP_FAIL["enrollment-gap"],
        id="gap-46-days",
    ),
    pytest.param(
        [
            c.patient(P, "2022-06-15"),
            c.coverage("a", P, "2024-01-01", "2025-03-01"),
            c.coverage("b", P, "2025-03-05", "2025-06-01"),
            c.coverage("d", P, "2025-06-05", None),
        ],
        IP_FAIL["enrollment-gap"],
        id="two-short-gaps",
    ),
    pytest.param(
        [c.patient(P, "2022-06-15"), c.coverage("a", P, "2025-01-15", None)],
        ok("no-qualifying-service"),
        id="late-start-14-day-gap",
    ),
    pytest.param(
        [c.patient(P, "2022-06-15"), c.coverage("a", P, "2024-01-01", "2025-12-30")],
        IP_FAIL["not-enrolled-on-anchor"],
        id="not-enrolled-on-last-day",
    ),
    pytest.param(
        [
            c.patient(P, "2022-06-15"),
            c.coverage("a", P, "2024-01-01", "2025-05-01", cco="ALLCARE"),
            c.coverage("b", P, "2025-05-02", None, cco="IHN"),
        ],
        IP_FAIL["enrollment-gap"],
        id="cco-switch-121-days-elsewhere",
    ),
    pytest.param(
        [
            c.patient(P, "2022-06-15"),
            c.coverage("a", P, "2024-01-01", "2025-01-31", cco="ALLCARE"),
            c.coverage("b", P, "2025-02-01", None, cco="IHN"),
        ],
        ok("no-qualifying-service"),
        id="cco-switch-31-days-elsewhere",
    ),
    pytest.param(
        [c.patient(P, "2022-06-15"), c.coverage("a", P, "2024-01-01", None, status="cancelled")],
        IP_FAIL["not-enrolled-on-anchor"],
        id="coverage-not-active",
    ),
    pytest.param(
        [
            c.patient(P, "2022-06-15"),
            c.coverage("a", P, "2024-01-01", None, payor=[{"reference": "Organization/o1"}]),
            {
                "resourceType": "Organization",
                "id": "o1",
                "identifier": [{"system": c.CCO_SYSTEM, "value": "IHN"}],
            },
        ],
        ok("no-qualifying-service"),
        id="payor-by-organization-reference",
    ),
    pytest.param(
        [c.patient(P, "2022-06-15"), c.coverage("a", P, "2024-01-01", None, payor=[{"display": "Somebody"}])],
        IP_FAIL["not-enrolled-on-anchor"],
        id="payor-not-a-cco",
    ),
    pytest.param(
        [
            c.patient(P, "2022-06-15"),
            c.coverage("a", P, "2024-01-01T00:00:00-08:00", "2025-12-31T23:59:59-08:00"),
        ],
        ok("no-qualifying-service"),
        id="coverage-period-with-times",
    ),
    # -- death ----------------------------------------------------------------------------------
    pytest.param(
        [
            c.patient(P, "2022-06-15", deceasedDateTime="2025-12-31"),
            c.full_year(P),
            c.eob("e", P, "2025-02-01"),
        ],
        (1, 1, 1, 0, "deceased"),
        id="died-on-last-day",
    ),
    pytest.param(
        [c.patient(P, "2022-06-15", deceasedBoolean=True), c.full_year(P)],
        (1, 1, 1, 0, "deceased"),
        id="deceased-boolean",
    ),
    pytest.param(
        [
            c.patient(P, "2022-06-15", deceasedDateTime="2026-01-02"),
            c.full_year(P),
            c.eob("e", P, "2025-02-01"),
        ],
        ok(),
        id="died-after-period",
    ),
    # -- claims adjudication -------------------------------------------------------------------------
    pytest.param(
        [*BASE, c.eob("e", P, "2025-03-01", denied=True)], ok("denied-claim-only"), id="denied-claim"
    ),
    pytest.param(
        [*BASE, c.eob("e", P, "2025-03-01", line_denied=True)], ok("denied-claim-only"), id="denied-line"
    ),
    pytest.param(
        [*BASE, c.eob("e", P, "2025-03-01", outcome="queued")], ok("no-qualifying-service"), id="eob-queued"
    ),
    pytest.param(
        [*BASE, c.eob("e", P, "2025-03-01", status="entered-in-error")],
        ok("no-qualifying-service"),
        id="eob-entered-in-error",
    ),
    pytest.param(
        [
            *BASE,
            c.eob("e1", P, "2025-03-01"),
            c.eob("e2", P, "2025-03-01", "99392", related=[c.replaces("ExplanationOfBenefit", "e1")]),
        ],
        ok("no-qualifying-service"),
        id="replaced-by-non-qualifying",
    ),
    pytest.param(
        [
            *BASE,
            c.eob("e1", P, "2025-03-01", "99392"),
            c.eob("e2", P, "2025-03-01", related=[c.replaces("ExplanationOfBenefit", "e1")]),
        ],
        ok(),
        id="replacement-qualifies",
    ),
    pytest.param(
        [
            *BASE,
            c.eob("e1", P, "2025-03-01", related=[c.replaces("ExplanationOfBenefit", "e9", "replacedby")]),
        ],
        ok("no-qualifying-service"),
        id="marked-replacedby",
    ),
    pytest.param(
        [*BASE, c.claim("k", P, "2025-03-01", use="preauthorization")],
        ok("no-qualifying-service"),
        id="prior-authorisation",
    ),
    pytest.param([*BASE, c.claim("k", P, "2025-03-01")], ok(), id="encounter-record-claim"),
    pytest.param(
        [*BASE, c.claim("k", P, "2025-03-01", status="draft")], ok("no-qualifying-service"), id="claim-draft"
    ),
    pytest.param(
        [*BASE, c.claim("k", P, "2025-03-01"), c.eob("e", P, "2025-03-01", denied=True, claim="k")],
        ok("denied-claim-only"),
        id="claim-judged-by-its-denied-eob",
    ),
    # -- diagnoses -----------------------------------------------------------------------------------
    pytest.param(
        [
            *BASE,
            c.eob("e1", P, "2025-03-01", dx=("Z00.129",)),
            c.eob("e2", P, "2025-03-02", "99392", dx=("F43.22",)),
        ],
        ok("service-without-qualifying-diagnosis"),
        id="diagnosis-on-another-claim",
    ),
    pytest.param([*BASE, c.eob("e", P, "2025-03-01", dx=("F4322",))], ok(), id="undotted-icd"),
    pytest.param(
        [
            *BASE,
            c.eob(
                "e",
                P,
                "2025-03-01",
                dx=("F43.22",),
                dx_system="urn:oid:2.16.840.1.113883.6.90",
                system="urn:oid:2.16.840.1.113883.6.12",
            ),
        ],
        ok(),
        id="oid-systems",
    ),
    pytest.param(
        [
            *BASE,
            c.eob(
                "e", P, "2025-03-01", "H2027", system="https://bluebutton.cms.gov/resources/codesystem/hcpcs"
            ),
        ],
        ok(),
        id="bluebutton-hcpcs",
    ),
    pytest.param(
        [*BASE, c.eob("e", P, "2025-03-01", dx=("F84.0",))],
        ok("service-without-qualifying-diagnosis"),
        id="autism-not-counted",
    ),
    pytest.param(
        [*BASE, c.eob("e", P, "2025-03-01", "96127")],
        ok("no-qualifying-service"),
        id="screening-only",
    ),
    pytest.param(
        [*BASE, c.eob("e", P, "2025-03-01", system="http://example.org/unknown-system")],
        ok("unknown-code-system"),
        id="unknown-code-system",
    ),
    # -- clinical data ----------------------------------------------------------------------------------
    pytest.param(
        [*BASE, c.encounter("v", P, "2025-05-01"), c.condition("d", P, encounter_id="v")],
        ok(),
        id="condition-encounter-link",
    ),
    pytest.param(
        [
            *BASE,
            c.encounter("v", P, "2025-05-01"),
            c.condition("d", P, encounter_id="v", verification="refuted"),
        ],
        ok("service-without-qualifying-diagnosis"),
        id="refuted-condition",
    ),
    pytest.param(
        [*BASE, c.condition("d", P, encounter_id="v"), c.encounter("v", P, "2025-05-01")],
        ok(),
        id="arrival-order",
    ),
    pytest.param(
        [*BASE, c.encounter("v", P, "2025-05-01", status="in-progress", reason="F43.22")],
        ok("no-qualifying-service"),
        id="encounter-not-finished",
    ),
    pytest.param(
        [
            *BASE,
            c.encounter(
                "v",
                P,
                "2025-05-01",
                "BH-PSYTX-45",
                system="https://ehr.example.org/fhir/CodeSystem/visit-type",
                reason="F93.0",
            ),
        ],
        ok(),
        id="local-visit-type",
    ),
    pytest.param([*BASE, c.procedure("pr", P, "2025-05-01", reason="F91.3")], ok(), id="procedure-reason"),
    pytest.param(
        [
            *BASE,
            c.procedure("pr", P, "2025-05-01", encounter_id="v"),
            c.encounter("v", P, "2025-05-01", "99213"),
            c.condition("d", P, encounter_id="v"),
        ],
        ok(),
        id="procedure-via-encounter-diagnosis",
    ),
    pytest.param(
        [
            *BASE,
            c.procedure("pr", P, "2025-05-01", encounter_id="v"),
            c.encounter("v", P, "2025-05-01", "99213", status="entered-in-error"),
            c.condition("d", P, encounter_id="v"),
        ],
        ok("service-without-qualifying-diagnosis"),
        id="procedure-encounter-entered-in-error",
    ),
    pytest.param(
        [*BASE, c.procedure("pr", P, "2025-05-01", status="not-done", reason="F43.22")],
        ok("no-qualifying-service"),
        id="procedure-not-done",
    ),
    pytest.param(
        [*BASE, c.condition("d", P, recorded="2025-05-01")], ok("no-qualifying-service"), id="condition-alone"
    ),
]


@pytest.mark.parametrize(("resources", "expected"), CASES)
def test_boundary(store: Store, mappings: Mappings, resources: Resources, expected: Expect) -> None:
    load(store, resources)
    assert result(child(store, mappings)) == expected


# -- cases that need more than one source, a changed rule or two data cuts ------------------------
def test_same_child_in_two_sources_links_by_member_id(store: Store, mappings: Mappings) -> None:
    load(store, [c.patient(P, "2022-06-15", member="M1"), c.full_year(P)], source="claims")
    load(
        store,
        [
            c.patient("ehr-9", "2022-06-15", member="M1"),
            c.encounter("v", "ehr-9", "2025-05-01", reason="F43.22"),
        ],
        source="ehr",
    )
    ch = child(store, mappings)
    assert result(ch) == ok()
    assert child(store, mappings, sources="claims").groups[0].reason == "no-qualifying-service"


def test_same_service_in_encounter_and_claim_counts_once(store: Store, mappings: Mappings) -> None:
    load(store, [*BASE, c.eob("e", P, "2025-05-01"), c.encounter("v", P, "2025-05-01", reason="F43.22")])
    ch = child(store, mappings)
    assert result(ch) == ok()


def test_ids_collide_across_sources(store: Store, mappings: Mappings) -> None:
    load(store, [c.patient(P, "2022-06-15", member="M1"), c.full_year(P)], source="a")
    load(
        store,
        [c.patient(P, "2023-06-15", member="M2"), c.full_year(P), c.eob("e", P, "2025-02-02")],
        source="b",
    )
    spec = mappings.measure_for("oregon-se-issue-focused", date(2025, 12, 31))
    ev = evaluate(store, mappings, spec, date(2025, 1, 1), date(2025, 12, 31), FAR, "all")
    by_member = {ch.member_id: result(ch) for ch in ev.children}
    assert by_member == {"M1": ok("no-qualifying-service"), "M2": ok()}


def _with_position(spec: MeasureSpec, position: str) -> MeasureSpec:
    g0 = spec.groups[0]
    numerator = dataclasses.replace(g0.numerator, diagnosis_position=position)  # type: ignore[arg-type]
    return dataclasses.replace(spec, groups=(dataclasses.replace(g0, numerator=numerator), *spec.groups[1:]))


@pytest.mark.parametrize(
    ("position", "dx", "pointers", "reason"),
    [
        pytest.param("any", ("Z00.129", "F43.22"), (1,), "qualifying-service", id="any-secondary-unpointed"),
        pytest.param(
            "primary",
            ("Z00.129", "F43.22"),
            (1, 2),
            "service-without-qualifying-diagnosis",
            id="primary-secondary",
        ),
        pytest.param("primary", ("F43.22", "Z00.129"), (1, 2), "qualifying-service", id="primary-first"),
        pytest.param(
            "line", ("Z00.129", "F43.22"), (1,), "service-without-qualifying-diagnosis", id="line-not-pointed"
        ),
        pytest.param("line", ("Z00.129", "F43.22"), (2,), "qualifying-service", id="line-pointed"),
    ],
)
def test_diagnosis_position(
    store: Store,
    mappings: Mappings,
    position: str,
    dx: tuple[str, ...],
    pointers: tuple[int, ...],
    reason: str,
) -> None:
    load(store, [*BASE, c.eob("e", P, "2025-03-01", dx=dx, pointers=pointers)])
    spec = _with_position(mappings.measure_for("oregon-se-issue-focused", date(2025, 12, 31)), position)
    assert child(store, mappings, spec).groups[0].reason == reason


@pytest.mark.parametrize(
    ("day", "reason"),
    [
        pytest.param("2025-06-30", "no-qualifying-service", id="before-valid-from"),
        pytest.param("2025-07-01", "qualifying-service", id="on-valid-from"),
    ],
)
def test_code_valid_only_part_of_year(store: Store, mappings: Mappings, day: str, reason: str) -> None:
    spec = mappings.measure_for("oregon-se-issue-focused", date(2025, 12, 31))
    vs = spec.valuesets["se-intervention-procedures"]
    rows = tuple(
        dataclasses.replace(r, valid_from=date(2025, 7, 1)) if r.code == "90834" else r for r in vs.rows
    )
    spec = dataclasses.replace(
        spec, valuesets={**spec.valuesets, "se-intervention-procedures": dataclasses.replace(vs, rows=rows)}
    )
    load(store, [*BASE, c.eob("e", P, day)])
    assert child(store, mappings, spec).groups[0].reason == reason


def test_as_of_before_a_retro_enrollment_change(store: Store, mappings: Mappings) -> None:
    t1 = T0
    t2 = T0 + timedelta(days=30)
    load(
        store,
        [
            c.patient(P, "2022-06-15"),
            c.coverage("a", P, "2024-01-01", "2025-06-30"),
            c.eob("e", P, "2025-03-01"),
        ],
        at=t1,
    )
    # Retroactive: the span is extended back over the rest of the year, learnt a month later.
    load(store, [c.coverage("a", P, "2024-01-01", None)], at=t2)
    before = child(store, mappings, as_of=to_micros(t1 + timedelta(days=1)))
    after = child(store, mappings, as_of=to_micros(t2 + timedelta(days=1)))
    assert result(before) == IP_FAIL["not-enrolled-on-anchor"]
    assert result(after) == ok()
    spec = mappings.measure_for("oregon-se-issue-focused", date(2025, 12, 31))
    early = evaluate(
        store,
        mappings,
        spec,
        date(2025, 1, 1),
        date(2025, 12, 31),
        to_micros(t1 - timedelta(seconds=1)),
        "all",
    )
    assert early.children == []


def test_identified_need_contains_numerator(store: Store, mappings: Mappings) -> None:
    load(store, [*BASE, c.eob("e", P, "2025-03-01")])
    ch = child(store, mappings)
    assert result(ch, 1) == ok()
    # A diagnosis without a qualifying procedure: in the identified-need denominator, not the numerator.
    load(store, [c.eob("e", P, "2025-03-01", "99392")], at=T0 + timedelta(days=1))
    ch = child(store, mappings)
    assert result(ch, 0) == ok("no-qualifying-service")
    assert result(ch, 1)[:4] == (1, 1, 0, 0)


def test_no_identified_need(store: Store, mappings: Mappings) -> None:
    load(store, BASE)
    assert result(child(store, mappings), 1) == (1, 0, 0, 0, "no-identified-need")


@pytest.mark.parametrize(
    ("birth", "coverage_start", "expected"),
    [
        pytest.param(
            "2024-03-10",
            "2024-03-10",
            (1, 1, 0, 0, "no-qualifying-service"),
            id="born-in-year-enrolled-at-birth",
        ),
        pytest.param(
            "2024-03-10", "2024-05-10", IP_FAIL["enrollment-gap"], id="born-in-year-enrolled-61-days-later"
        ),
        pytest.param("2018-12-31", "2023-01-01", IP_FAIL["outside-age-band"], id="reach-turns-6"),
    ],
)
def test_reach_age_zero_and_since_birth(
    store: Store, mappings: Mappings, birth: str, coverage_start: str, expected: Expect
) -> None:
    load(store, [c.patient(P, birth), c.coverage("a", P, coverage_start, None)])
    ch = child(store, mappings, measure="oregon-se-reach", start=date(2024, 1, 1), end=date(2024, 12, 31))
    assert result(ch) == expected


def test_partial_birth_date_mid_year_period_is_ambiguous(store: Store, mappings: Mappings) -> None:
    load(store, [c.patient(P, "2024"), c.full_year(P)])
    ch = child(store, mappings, start=date(2024, 7, 1), end=date(2025, 6, 30))
    assert result(ch) == IP_FAIL["ambiguous-birth-date"]


@pytest.mark.parametrize(
    ("performed", "start", "end", "reason", "ambiguous"),
    [
        pytest.param(
            "2025-03", date(2025, 1, 1), date(2025, 12, 31), "qualifying-service", 0, id="month-inside"
        ),
        pytest.param(
            "2025", date(2025, 1, 1), date(2025, 12, 31), "qualifying-service", 0, id="year-is-the-period"
        ),
        pytest.param(
            "2025", date(2025, 7, 1), date(2026, 6, 30), "no-qualifying-service", 1, id="year-straddles"
        ),
        pytest.param(
            "2025-06", date(2025, 6, 15), date(2026, 6, 14), "no-qualifying-service", 1, id="month-straddles"
        ),
    ],
)
def test_partial_service_dates(
    store: Store, mappings: Mappings, performed: str, start: date, end: date, reason: str, ambiguous: int
) -> None:
    load(
        store,
        [
            c.patient(P, "2022-06-15"),
            c.coverage("a", P, "2020-01-01", None),
            c.procedure("pr", P, performed, reason="F43.22"),
        ],
    )
    spec = mappings.measure_for("oregon-se-issue-focused", date(2025, 12, 31))
    ev = evaluate(store, mappings, spec, start, end, FAR, "all")
    assert ev.children[0].groups[0].reason == reason
    assert ev.ambiguous_service_dates == ambiguous


def test_two_ccos_on_anchor_attributes_the_later_span(store: Store, mappings: Mappings) -> None:
    load(
        store,
        [
            c.patient(P, "2022-06-15"),
            c.coverage("a", P, "2024-01-01", None, cco="ALLCARE"),
            c.coverage("b", P, "2025-03-01", None, cco="IHN"),
        ],
    )
    ch = child(store, mappings)
    assert ch.cco == "ALLCARE"  # IHN is not continuous (59 days before it started)
    assert ch.anchor_ccos == 2


def test_any_cco_scope_counts_switches_as_continuous(store: Store, mappings: Mappings) -> None:
    load(
        store,
        [
            c.patient(P, "2022-06-15"),
            c.coverage("a", P, "2024-01-01", "2025-05-01", cco="ALLCARE"),
            c.coverage("b", P, "2025-05-02", None, cco="IHN"),
        ],
    )
    spec = mappings.measure_for("oregon-se-issue-focused", date(2025, 12, 31))
    statewide = dataclasses.replace(spec, enrollment=dataclasses.replace(spec.enrollment, scope="any-cco"))
    ch = child(store, mappings, statewide)
    assert result(ch) == ok("no-qualifying-service")
    assert ch.cco == "IHN"


# -- cases found in review ------------------------------------------------------------------------
def test_two_ccos_both_started_before_the_period_attributes_the_later_span(
    store: Store, mappings: Mappings
) -> None:
    load(
        store,
        [
            c.patient(P, "2022-06-15"),
            c.coverage("a", P, "2020-01-01", None, cco="ALLCARE"),
            c.coverage("b", P, "2024-07-01", None, cco="IHN"),
        ],
    )
    assert child(store, mappings).cco == "IHN"


def test_any_cco_attributes_the_cco_the_child_is_continuous_with(store: Store, mappings: Mappings) -> None:
    load(
        store,
        [
            c.patient(P, "2022-06-15"),
            c.coverage("a", P, "2024-01-01", None, cco="ALLCARE"),
            c.coverage("b", P, "2025-03-01", None, cco="IHN"),
        ],
    )
    spec = mappings.measure_for("oregon-se-issue-focused", date(2025, 12, 31))
    statewide = dataclasses.replace(spec, enrollment=dataclasses.replace(spec.enrollment, scope="any-cco"))
    assert child(store, mappings, statewide).cco == "ALLCARE"


def test_undated_encounter_condition_dated_by_recorded_date(store: Store, mappings: Mappings) -> None:
    encounter = c.encounter("v", P, "2025-05-01")
    del encounter["period"]
    load(store, [*BASE, encounter, c.condition("d", P, encounter_id="v", recorded="2025-05-01")])
    assert result(child(store, mappings), 1)[:2] == (1, 1)


@pytest.mark.parametrize(
    ("served", "start", "reason", "ambiguous"),
    [
        pytest.param("2025-03", date(2025, 1, 1), "qualifying-service", 0, id="month-inside"),
        pytest.param("2024", date(2025, 1, 1), "no-qualifying-service", 0, id="year-before"),
        pytest.param("2025-03", date(2025, 3, 15), "no-qualifying-service", 1, id="month-straddles"),
    ],
)
def test_claim_line_partial_dates(
    store: Store, mappings: Mappings, served: str, start: date, reason: str, ambiguous: int
) -> None:
    load(store, [c.patient(P, "2022-06-15"), c.coverage("a", P, "2020-01-01", None), c.eob("e", P, served)])
    spec = mappings.measure_for("oregon-se-issue-focused", date(2025, 12, 31))
    end = date(start.year + 1, start.month, start.day) - timedelta(days=1)
    ev = evaluate(store, mappings, spec, start, end, FAR, "all")
    assert ev.children[0].groups[0].reason == reason
    assert ev.ambiguous_service_dates == ambiguous


def test_undated_claim_line_is_reported(store: Store, mappings: Mappings) -> None:
    claim = c.eob("e", P, "2025-03-01")
    del claim["item"][0]["servicedDate"]
    load(store, [*BASE, claim])
    spec = mappings.measure_for("oregon-se-issue-focused", date(2025, 12, 31))
    ev = evaluate(store, mappings, spec, date(2025, 1, 1), date(2025, 12, 31), FAR, "all")
    assert ev.children[0].groups[0].reason == "no-qualifying-service"
    assert ev.undated_claim_lines == 1


def test_replacement_by_identifier_needs_the_same_system_and_child(store: Store, mappings: Mappings) -> None:
    original = c.eob("e1", P, "2025-03-01")
    original["identifier"] = [{"system": "http://payer/line-ctl", "value": "100"}]
    other = c.eob("e2", "d", "2025-03-01", "99392")
    other["related"] = [
        {
            "reference": {"system": "http://payer/claim-no", "value": "100"},
            "relationship": c.replaces("Claim", "x")["relationship"],
        }
    ]
    load(store, [*BASE, c.patient("d", "2022-01-01"), c.full_year("d"), original, other])
    assert child(store, mappings).groups[0].reason == "qualifying-service"


def test_replacement_by_identifier(store: Store, mappings: Mappings) -> None:
    original = c.eob("e1", P, "2025-03-01")
    original["identifier"] = [{"system": "http://payer/claim-no", "value": "100"}]
    replacement = c.eob("e2", P, "2025-03-01", "99392")
    replacement["related"] = [
        {
            "reference": {"system": "http://payer/claim-no", "value": "100"},
            "relationship": c.replaces("Claim", "x")["relationship"],
        }
    ]
    load(store, [*BASE, original, replacement])
    assert child(store, mappings).groups[0].reason == "no-qualifying-service"


def test_entered_in_error_eob_replaces_nothing(store: Store, mappings: Mappings) -> None:
    load(
        store,
        [
            *BASE,
            c.eob("e1", P, "2025-03-01"),
            c.eob(
                "e2",
                P,
                "2025-03-01",
                "99392",
                status="entered-in-error",
                related=[c.replaces("ExplanationOfBenefit", "e1")],
            ),
        ],
    )
    assert child(store, mappings).groups[0].reason == "qualifying-service"


def test_line_mode_follows_diagnosis_references(store: Store, mappings: Mappings) -> None:
    claim = c.eob("e", P, "2025-03-01", dx=("Z00.129",), pointers=(2,))
    claim["diagnosis"].append({"sequence": 2, "diagnosisReference": {"reference": "Condition/d"}})
    load(store, [*BASE, claim, c.condition("d", P, "F43.22")])
    spec = _with_position(mappings.measure_for("oregon-se-issue-focused", date(2025, 12, 31)), "line")
    assert child(store, mappings, spec).groups[0].reason == "qualifying-service"


@pytest.mark.parametrize(
    "resources",
    [
        pytest.param([c.procedure("pr", P, "2025-05-01", reason="F43.22")], id="procedure-reason"),
        pytest.param(
            [c.encounter("v", P, "2025-05-01"), c.condition("d", P, encounter_id="v")], id="sole-condition"
        ),
    ],
)
def test_primary_mode_counts_clinical_data(store: Store, mappings: Mappings, resources: Resources) -> None:
    load(store, [*BASE, *resources])
    spec = _with_position(mappings.measure_for("oregon-se-issue-focused", date(2025, 12, 31)), "primary")
    assert child(store, mappings, spec).groups[0].reason == "qualifying-service"


def test_coverage_with_state_and_cco_payors(store: Store, mappings: Mappings) -> None:
    coverage = c.full_year(P)
    coverage["payor"].insert(0, {"reference": "Organization/state"})
    load(store, [c.patient(P, "2022-06-15"), coverage])
    assert child(store, mappings).cco == "ALLCARE"


def test_null_death_date_is_not_a_death(store: Store, mappings: Mappings) -> None:
    load(store, [c.patient(P, "2022-06-15", deceasedDateTime=None), c.full_year(P)])
    assert result(child(store, mappings)) == ok("no-qualifying-service")


def test_a_failed_batch_leaves_the_store_usable(store: Store, mappings: Mappings) -> None:
    load(store, [c.patient(P, "2022-06-15", gender="x" * 5000), c.full_year(P)])
    load(store, [c.eob("e", P, "2025-03-01")], at=T0 + timedelta(hours=1))
    assert child(store, mappings).groups[0].reason == "qualifying-service"


def test_any_undated_death_record_is_a_death_before_the_period_end(store: Store, mappings: Mappings) -> None:
    """Edge rule 4, even when another record of the same child dates the death later."""
    load(store, [c.patient(P, "2022-06-15", member="M1", deceasedBoolean=True), c.full_year(P)], source="a")
    load(store, [c.patient("b1", "2022-06-15", member="M1", deceasedDateTime="2026-03-01")], source="b")
    assert result(child(store, mappings)) == (1, 1, 1, 0, "deceased")
