"""Property tests (hypothesis) over random small cohorts, on SQLite:

* numerator ⊆ denominator − exclusion ⊆ initial population, in every group;
* the issue-focused numerator is inside the identified-need denominator;
* results do not depend on arrival order or batch boundaries;
* re-ingesting the same data changes nothing.
"""

from __future__ import annotations

import random
import tempfile
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_adapter.ingest.runner import ingest_items
from fhir_adapter.measure.engine import REASON_TEXT, REASONS
from fhir_adapter.measure.spec import Mappings
from fhir_adapter.settings import DEFAULT_MEMBER_ID_SYSTEM
from fhir_adapter.store.db import ParsedResource, Store
from fhir_adapter.store.evaluate import evaluate
from tests import cohorts as c
from tests.conftest import TZ
from tests.measure.test_boundaries import FAR

PROCS = ["90834", "90837", "H2027", "96127", "99392", "97153"]
DXS = ["F43.22", "F93.0", "Z62.820", "F84.0", "Z00.129", "F90.2"]
CCOS = ["ALLCARE", "IHN", "UHA"]
DAY0 = date(2024, 11, 1).toordinal()
DAYS = date(2026, 2, 1).toordinal() - DAY0

day = st.integers(0, DAYS).map(lambda n: date.fromordinal(DAY0 + n).isoformat())


@st.composite
def child(draw: st.DrawFn, index: int) -> list[dict[str, Any]]:
    pid = f"p{index}"
    birth = draw(st.one_of(st.none(), st.dates(date(2018, 6, 1), date(2026, 1, 31)).map(date.isoformat),
                           st.sampled_from(["2021", "2023-04"])))  # fmt: skip
    out: list[dict[str, Any]] = [
        c.patient(pid, birth, deceasedBoolean=draw(st.booleans()) and draw(st.booleans()))
    ]
    for n in range(draw(st.integers(0, 3))):
        start, end = sorted([draw(day), draw(day)])
        out.append(
            c.coverage(
                f"{pid}-cov{n}",
                pid,
                start,
                draw(st.sampled_from([end, None])),
                cco=draw(st.sampled_from(CCOS)),
            )
        )
    for n in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["eob", "encounter", "procedure"]))
        when = draw(day)
        proc = draw(st.sampled_from(PROCS))
        dx = draw(st.sampled_from(DXS))
        if kind == "eob":
            out.append(c.eob(f"{pid}-e{n}", pid, when, proc, (dx,), denied=draw(st.booleans()),
                             outcome=draw(st.sampled_from(["complete", "partial", "queued"]))))  # fmt: skip
        elif kind == "encounter":
            out.append(
                c.encounter(
                    f"{pid}-v{n}", pid, when, proc, status=draw(st.sampled_from(["finished", "cancelled"]))
                )
            )
            out.append(c.condition(f"{pid}-d{n}", pid, dx, encounter_id=f"{pid}-v{n}"))
        else:
            out.append(c.procedure(f"{pid}-pr{n}", pid, when, proc, reason=dx))
    return out


cohort = st.integers(1, 6).flatmap(lambda n: st.tuples(*(child(i) for i in range(n))))


def _results(resources: list[dict[str, Any]], mappings: Mappings, batches: int = 1, repeat: int = 1) -> Any:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(f"sqlite:///{Path(tmp) / 's.db'}", tz=TZ, member_system=DEFAULT_MEMBER_ID_SYSTEM)
        try:
            stats = []
            for _ in range(repeat):
                items = [ParsedResource(r["resourceType"], r["id"], r) for r in resources]
                size = max(1, len(items) // batches)
                stats.append(
                    ingest_items(
                        store, items, "s", batch_size=size, clock=lambda: datetime(2026, 2, 1, tzinfo=UTC)
                    ).stats
                )
            spec = mappings.measure_for("oregon-se-issue-focused", date(2025, 12, 31))
            ev = evaluate(store, mappings, spec, date(2025, 1, 1), date(2025, 12, 31), FAR, "all")
            return {ch.person: ch.groups for ch in ev.children}, stats
        finally:
            store.close()


SETTINGS = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SETTINGS
@given(cohort)
def test_population_nesting(mappings: Mappings, children: tuple[list[dict[str, Any]], ...]) -> None:
    results, _ = _results([r for ch in children for r in ch], mappings)
    for groups in results.values():
        for g in groups:
            assert not g.den or g.ip
            assert not g.denex or g.den
            assert not g.num or (g.den and not g.denex)
            assert (g.reason == "qualifying-service") == g.num or g.denex
            assert g.reason in REASONS
        all_enrolled, identified_need = groups
        assert not all_enrolled.num or identified_need.num


@SETTINGS
@given(cohort, st.randoms(use_true_random=False), st.integers(1, 4))
def test_order_and_batch_independence(mappings: Mappings, children: tuple[list[dict[str, Any]], ...],
                                      rnd: random.Random, batches: int) -> None:  # fmt: skip
    resources = [r for ch in children for r in ch]
    shuffled = list(resources)
    rnd.shuffle(shuffled)
    assert _results(resources, mappings)[0] == _results(shuffled, mappings, batches=batches)[0]


@SETTINGS
@given(cohort)
def test_reingest_is_idempotent(mappings: Mappings, children: tuple[list[dict[str, Any]], ...]) -> None:
    resources = [r for ch in children for r in ch]
    once, _ = _results(resources, mappings)
    twice, stats = _results(resources, mappings, repeat=2)
    assert once == twice
    assert stats[1].created == stats[1].updated == 0
    assert stats[1].unchanged == len(resources)


def test_every_reason_is_documented() -> None:
    assert sorted(REASON_TEXT) == sorted(REASONS)
