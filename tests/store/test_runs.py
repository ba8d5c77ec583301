"""Persisted evaluations on SQLite and PostgreSQL: a run and its per-child rows read back equal to
the evaluation, the run id is the evaluation's identity (idempotent, distinct per data cut,
source mode and mappings hash), lookups by measure, source mode and exact period, and nothing
half-written when the write fails."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime

import pytest
from sqlalchemy import func, select

from fhir_adapter.errors import NotFoundError, StoreError
from fhir_adapter.fhir.dates import to_micros
from fhir_adapter.measure.engine import ENGINE_VERSION
from fhir_adapter.measure.spec import Mappings
from fhir_adapter.store import runs
from fhir_adapter.store.db import Store
from fhir_adapter.store.evaluate import Evaluation, evaluate
from fhir_adapter.store.schema import eval_results, eval_runs
from tests import cohorts as c
from tests.measure.test_boundaries import FAR, load

MEASURE = "oregon-se-issue-focused"
START, END = date(2025, 1, 1), date(2025, 12, 31)
NOW = to_micros(datetime(2026, 3, 1, tzinfo=UTC))
COHORT = [
    c.patient("served", "2022-06-15"), c.full_year("served"), c.eob("e1", "served", "2025-03-01"),
    c.patient("gap", "2021-04-01", extension=[{
        "url": "https://github.com/fhir-adapter/oregon-se/fhir/StructureDefinition/reald-race-ethnicity",
        "valueString": "Latino/a/x"}]), c.full_year("gap", cco="IHN"),
    c.patient("old", "2015-01-01"), c.full_year("old"),
    c.patient("unlinked", "2022-01-01", unlinked=True),
]  # fmt: skip


def _evaluate(store: Store, mappings: Mappings, *, sources: str = "all", as_of: int = FAR) -> Evaluation:
    spec = mappings.measure_for(MEASURE, END)
    return evaluate(store, mappings, spec, START, END, as_of, sources)  # type: ignore[arg-type]


@pytest.fixture
def ev(store: Store, mappings: Mappings) -> Evaluation:
    load(store, COHORT)
    return _evaluate(store, mappings)


def test_run_reads_back_as_evaluated(store: Store, ev: Evaluation) -> None:
    run_id = runs.persist_run(store, ev, now_us=NOW)
    info = runs.run_info(store, run_id)
    assert info == runs.RunInfo(
        run_id, MEASURE, ev.spec.version, START, END, "all", FAR, NOW, ev.spec.hash, ENGINE_VERSION
    )
    rows = runs.run_results(store, run_id)
    assert rows == sorted(runs.result_rows(ev), key=lambda r: (r.person, r.group))
    by_key = {(r.person, r.group): r for r in rows}
    served = by_key[("m:M-served", "all-enrolled")]
    assert (served.ip, served.den, served.denex, served.num, served.reason) == (
        True, True, False, True, "qualifying-service",
    )  # fmt: skip
    assert (served.patient, served.patient_source, served.cco, served.age) == (
        "Patient/served",
        "s1",
        "ALLCARE",
        3,
    )
    gap = by_key[("m:M-gap", "identified-need")]
    assert (gap.cco, gap.race_ethnicity, gap.language, gap.reason) == (
        "IHN", "Latino/a/x", None, "no-identified-need",
    )  # fmt: skip
    assert by_key[("m:M-old", "all-enrolled")].reason == "outside-age-band"
    assert by_key[("u:s1/unlinked", "all-enrolled")].member_id is None
    assert len(rows) == 2 * len(ev.children)


@pytest.mark.parametrize(
    ("change", "same"),
    [
        pytest.param({}, True, id="same-evaluation-same-run"),
        pytest.param({"as_of": FAR - 1}, False, id="other-data-cut"),
        pytest.param({"sources": "claims"}, False, id="other-source-mode"),
        pytest.param({"period_start": date(2025, 1, 2)}, False, id="other-period"),
    ],
)
def test_run_id_is_the_evaluation_identity(
    store: Store, ev: Evaluation, change: dict[str, object], same: bool
) -> None:
    first = runs.persist_run(store, ev, now_us=NOW)
    other = replace(ev, **change)  # type: ignore[arg-type]
    second = runs.persist_run(store, other, now_us=NOW + 1)
    assert (first == second) is same
    with store.read() as conn:
        assert conn.execute(select(func.count()).select_from(eval_runs)).scalar_one() == (1 if same else 2)
        count = conn.execute(select(func.count()).select_from(eval_results)).scalar_one()
    assert count == (1 if same else 2) * 2 * len(ev.children)


def test_mappings_hash_is_part_of_the_identity(store: Store, ev: Evaluation) -> None:
    assert runs.persist_run(store, ev, now_us=NOW) != runs.persist_run(
        store, ev, now_us=NOW, mappings_hash="other"
    )


def test_list_and_find(store: Store, ev: Evaluation, mappings: Mappings) -> None:
    older = runs.persist_run(store, replace(ev, as_of=FAR - 10), now_us=NOW)
    newer = runs.persist_run(store, ev, now_us=NOW)
    claims = runs.persist_run(store, _evaluate(store, mappings, sources="claims"), now_us=NOW)
    reach = runs.persist_run(
        store, replace(ev, spec=mappings.measure_for("oregon-se-reach", END)), now_us=NOW
    )
    assert [r.run_id for r in runs.list_runs(store, MEASURE, "all")] == [newer, older]
    assert {r.run_id for r in runs.list_runs(store)} == {older, newer, claims, reach}
    assert [r.run_id for r in runs.list_runs(store, "oregon-se-reach")] == [reach]
    assert runs.list_runs(store, MEASURE, period_start=date(2024, 1, 1)) == []
    found = runs.find_run(store, MEASURE, START, END, "all")
    assert found is not None and found.run_id == newer
    exact = runs.find_run(store, MEASURE, START, END, "all", as_of=FAR - 10)
    assert exact is not None and exact.run_id == older
    assert runs.find_run(store, MEASURE, START, END, "all", as_of=FAR - 5) is None
    assert runs.find_run(store, MEASURE, START, date(2025, 12, 30), "all") is None
    assert runs.find_run(store, MEASURE, START, END, "all", mappings_hash="nope") is None


def test_unknown_run(store: Store) -> None:
    with pytest.raises(NotFoundError):
        runs.run_results(store, "run-none")


def test_failed_write_leaves_nothing(store: Store, ev: Evaluation) -> None:
    """A child row that violates a constraint (a NULL group id, written last) rolls back the run
    row and the rows already inserted."""
    bad_group = replace(ev.children[0].groups[0], group=None)  # type: ignore[arg-type]
    bad_child = replace(ev.children[0], groups=(bad_group, *ev.children[0].groups[1:]))
    broken = replace(ev, children=[*ev.children[1:], bad_child])
    with pytest.raises(StoreError):
        runs.persist_run(store, broken, now_us=NOW)
    with store.read() as conn:
        assert conn.execute(select(func.count()).select_from(eval_runs)).scalar_one() == 0
        assert conn.execute(select(func.count()).select_from(eval_results)).scalar_one() == 0
