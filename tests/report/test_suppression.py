"""fhir_adapter.report.suppression: small cells and their complements are masked, and nothing
hidden can be recovered from the published numbers (checked by an independent, global exact
linear-algebra audit over every count of the report, and by a property test)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_adapter.measure.spec import Mappings
from fhir_adapter.report.checks import check_measure_report
from fhir_adapter.report.suppression import (
    CODES,
    DATA_ABSENT_REASON,
    Plan,
    Table,
    extension_url,
    is_masked,
    plan_suppression,
    suppress_report,
)
from fhir_adapter.settings import DEFAULT_CANONICAL_BASE, Settings
from fhir_adapter.store.db import Store
from tests.report.test_measurereport import CTX, _evaluate, _measure

IP, DEN, DENEX, NUM = CODES
Counts = dict[str, int]


def u(ip: int, den: int | None = None, denex: int = 0, num: int = 0) -> Counts:
    """One unit's counts; ``den`` defaults to ``ip`` (the all-enrolled group: DEN = IP)."""
    return {IP: ip, DEN: ip if den is None else den, DENEX: denex, NUM: num}


def total(strata: Sequence[Counts]) -> Counts:
    return {code: sum(s[code] for s in strata) for code in CODES}


def table(*stratifiers: Sequence[Counts]) -> Table:
    """A group whose counts are the sum of the (first) stratifier's strata."""
    return Table(total(stratifiers[0]), [list(s) for s in stratifiers])


# --------------------------------------------------------------------------------------------------
# the independent audit: every count of the group as variables, solved globally


ATOM_ROWS = {IP: (1, 1, 1, 1), DEN: (0, 1, 1, 1), DENEX: (0, 1, 0, 0), NUM: (0, 0, 1, 0)}


def _atoms(c: Counts) -> tuple[int, int, int, int]:
    return (c[IP] - c[DEN], c[DENEX], c[NUM], c[DEN] - c[DENEX] - c[NUM])


class Audit:
    """What a reader can determine from a suppressed table: each unit's four atoms are unknowns
    (4 per unit); the equations are the published counts, for every stratifier and atom "the
    strata add up to the group", and the atoms that are zero in the group are zero everywhere.
    A linear functional is determined when it lies in the row space (exact rational Gaussian
    elimination over all units at once, unlike the module's per-stratifier reduction)."""

    def __init__(self, t: Table, plan: Plan) -> None:
        self.units: list[tuple[Counts, set[str]]] = [(t.group, plan.group)]
        self.index: dict[tuple[int, int] | None, int] = {None: 0}
        for k, strata in enumerate(t.stratifiers):
            for s, counts in enumerate(strata):
                self.index[(k, s)] = len(self.units)
                self.units.append((counts, plan.strata[k][s]))
        n = 4 * len(self.units)
        rows: list[list[Fraction]] = []

        def row(unit: int, vector: Sequence[int]) -> list[Fraction]:
            r = [Fraction(0)] * n
            for a, x in enumerate(vector):
                r[4 * unit + a] = Fraction(x)
            return r

        for i, (_counts, hidden) in enumerate(self.units):
            rows += [row(i, ATOM_ROWS[c]) for c in CODES if c not in hidden]
        for k, strata in enumerate(t.stratifiers):
            for a in range(4):
                r = [Fraction(0)] * n
                r[a] = Fraction(-1)
                for s in range(len(strata)):
                    r[4 * self.index[(k, s)] + a] = Fraction(1)
                rows.append(r)
        for a, value in enumerate(_atoms(t.group)):
            if value == 0:
                rows += [row(i, [int(b == a) for b in range(4)]) for i in range(len(self.units))]
        self.basis = _echelon(rows)
        self.n = n
        self.row = row

    def determined(self, unit: int, vector: Sequence[int]) -> bool:
        return _in_span(self.basis, self.row(unit, vector))


def _echelon(rows: list[list[Fraction]]) -> list[tuple[int, list[Fraction]]]:
    basis: list[tuple[int, list[Fraction]]] = []
    for raw in rows:
        r = _reduce(basis, raw)
        pivot = next((i for i, x in enumerate(r) if x != 0), None)
        if pivot is not None:
            basis.append((pivot, [x / r[pivot] for x in r]))
    return basis


def _reduce(basis: list[tuple[int, list[Fraction]]], r: list[Fraction]) -> list[Fraction]:
    r = list(r)
    for pivot, b in basis:
        if r[pivot] != 0:
            factor = r[pivot]
            r = [x - factor * y for x, y in zip(r, b, strict=True)]
    return r


def _in_span(basis: list[tuple[int, list[Fraction]]], r: list[Fraction]) -> bool:
    return not any(_reduce(basis, r))


COMBOS = [c for c in itertools.product((0, 1), repeat=4) if any(c)]


def leaks(t: Table, plan: Plan, threshold: int) -> list[str]:
    """Everything the plan fails to protect, in words (empty: safe)."""
    audit = Audit(t, plan)
    out = []
    for i, (counts, hidden) in enumerate(audit.units):
        for code in CODES:
            value = counts[code]
            if code not in hidden and 1 <= value < threshold:
                out.append(f"unit {i}: {code} {value} is small and published")
            if code in hidden and audit.determined(i, ATOM_ROWS[code]):
                out.append(f"unit {i}: hidden {code} {value} is determined")
        values = _atoms(counts)
        for combo in COMBOS:
            value = sum(a * b for a, b in zip(combo, values, strict=True))
            if 1 <= value < threshold and audit.determined(i, combo):
                out.append(f"unit {i}: atoms {combo} = {value} are determined")
    return out


# --------------------------------------------------------------------------------------------------
# tables of cases


def _hidden(plan: Plan) -> tuple[list[str], list[list[list[str]]]]:
    return sorted(plan.group), [[sorted(h) for h in strata] for strata in plan.strata]


CASES = [
    pytest.param(
        table([u(50, num=30), u(45, num=20), u(40, num=15)]), 11,
        ([], [[[], [], []]]),
        id="nothing-small",
    ),
    pytest.param(
        table([u(50, num=30), u(45, num=27), u(5, num=3)]), 11,
        ([], [[[], [DEN, IP, NUM], [DEN, IP, NUM]]]),
        id="one-small-stratum-and-the-next-smallest",
    ),
    pytest.param(
        table([u(50, num=30), u(45, num=27), u(7, num=4), u(6, num=3)]), 11,
        ([], [[[], [NUM], [DEN, IP, NUM], [DEN, IP, NUM]]]),
        id="two-small-strata-hide-each-other-and-a-numerator-for-their-small-total",
    ),
    pytest.param(
        table([u(50, num=30), u(45, num=27), u(3, num=1), u(4, num=2)]), 11,
        ([], [[[], [DEN, IP, NUM], [DEN, IP, NUM], [DEN, IP, NUM]]]),
        id="small-hidden-total-takes-a-third",
    ),
    pytest.param(
        table([u(50, num=47), u(45, num=20), u(40, num=15)]), 11,
        ([], [[[NUM], [], [NUM]]]),
        id="few-children-not-met-hides-the-numerator",
    ),
    pytest.param(
        table([u(50, denex=2, num=30), u(45, num=20), u(40, num=15)]), 11,
        ([DENEX], [[[DENEX], [], []]]),
        id="few-exclusions",
    ),
    pytest.param(
        table([u(50, num=0), u(45, num=20), u(40, num=15)]), 11,
        ([], [[[], [], []]]),
        id="zero-is-published",
    ),
    pytest.param(
        table([u(5, num=3)]), 11,
        ([DEN, IP, NUM], [[[DEN, IP, NUM]]]),
        id="small-group-one-stratum",
    ),
    pytest.param(
        table([u(50, num=30), u(45, num=27), u(5, num=5)]), 5,
        ([], [[[], [], []]]),
        id="threshold-5-keeps-5",
    ),
    pytest.param(
        table([u(50, num=30), u(45, num=27), u(5, num=3)]), 5,
        ([], [[[], [NUM], [NUM]]]),
        id="threshold-5-two-not-met",
    ),
    pytest.param(
        table([u(50, num=30), u(45, num=27), u(4, num=3)]), 5,
        ([], [[[], [DEN, IP, NUM], [DEN, IP, NUM]]]),
        id="threshold-5-hides-4",
    ),
    pytest.param(
        table([u(200, den=60, num=30), u(150, den=45, num=20), u(100, den=5, num=2)]), 11,
        ([], [[[], [DEN, NUM], [DEN, NUM]]]),
        id="identified-need-small-denominator-keeps-the-initial-population",
    ),
    pytest.param(
        table([u(50, num=30), u(45, num=27), u(5, num=3)], [u(60, num=35), u(40, num=25)]), 11,
        ([], [[[], [DEN, IP, NUM], [DEN, IP, NUM]], [[], []]]),
        id="second-stratifier-untouched",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("t", "threshold", "expected"), CASES)
def test_plans(t: Table, threshold: int, expected: Any) -> None:
    plan = plan_suppression(t, threshold)
    assert _hidden(plan) == expected
    assert leaks(t, plan, threshold) == []


@pytest.mark.parametrize(
    ("t", "message"),
    [
        pytest.param(Table(u(5, num=6), []), "not nested", id="numerator-over-denominator"),
        pytest.param(Table(u(5, den=7), []), "not nested", id="denominator-over-ip"),
    ],
)
def test_inconsistent_counts_are_refused(t: Table, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan_suppression(t, 11)


def test_threshold_below_two_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        plan_suppression(table([u(5)]), 1)


def test_the_audit_catches_a_lone_hidden_cell() -> None:
    """The test's own audit is not vacuous: primary suppression alone leaks."""
    t = table([u(50, num=30), u(45, num=27), u(5, num=3)])
    naive = Plan(set(), [[set(), set(), {IP, DEN, NUM}]])
    assert any("determined" in leak for leak in leaks(t, naive, 11))


# --------------------------------------------------------------------------------------------------
# property: random groups with several stratifiers over the same children


@st.composite
def groups(draw: st.DrawFn) -> Table:
    """Children with random populations, split by 1–3 stratifiers into 1–5 strata each (so the
    strata of every stratifier add up to the group, as in a real report)."""
    n = draw(st.integers(1, 60))
    children = []
    for _ in range(n):
        den = draw(st.booleans())
        denex = den and draw(st.integers(0, 9)) == 0
        num = den and not denex and draw(st.booleans())
        children.append((True, den, denex, num))
    stratifiers = []
    for _ in range(draw(st.integers(1, 3))):
        k = draw(st.integers(1, 5))
        labels = [draw(st.integers(0, k - 1)) for _ in range(n)]
        strata = []
        for value in sorted(set(labels)):
            members = [c for c, label in zip(children, labels, strict=True) if label == value]
            strata.append({code: sum(m[i] for m in members) for i, code in enumerate(CODES)})
        stratifiers.append(strata)
    group = {code: sum(c[i] for c in children) for i, code in enumerate(CODES)}
    return Table(group, stratifiers)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(t=groups(), threshold=st.sampled_from([3, 5, 11]))
def test_nothing_hidden_is_recoverable(t: Table, threshold: int) -> None:
    plan = plan_suppression(t, threshold)
    assert leaks(t, plan, threshold) == []


# --------------------------------------------------------------------------------------------------
# reports


def _masked(pop: dict[str, Any]) -> bool:
    return "count" not in pop and pop.get("_count") == {
        "extension": [{"url": DATA_ABSENT_REASON, "valueCode": "masked"}]
    }


@pytest.mark.parametrize("threshold", [3, 11])
def test_suppressed_report_passes_the_deqm_checks(store: Store, mappings: Mappings, threshold: int) -> None:
    ev = _evaluate(store, mappings)
    from fhir_adapter.report.measurereport import summary_report

    report = summary_report(ev, CTX)
    url = extension_url(DEFAULT_CANONICAL_BASE)
    suppressed = suppress_report(report, threshold, extension_url=url)
    assert report != suppressed and "_count" not in str(report)  # the input is not changed
    assert {"url": url, "valueInteger": threshold} in suppressed["extension"]
    assert check_measure_report(suppressed, _measure(ev, mappings), suppressed=True) == []
    units = [suppressed["group"][0]] + [
        stratum for stratifier in suppressed["group"][0]["stratifier"] for stratum in stratifier["stratum"]
    ]
    masked = 0
    for unit in units:
        for pop in unit["population"]:
            assert is_masked(pop) == _masked(pop)
            if _masked(pop):
                masked += 1
            else:
                assert pop["count"] == 0 or pop["count"] >= threshold, pop
        if any(_masked(p) for p in unit["population"] if p["code"]["coding"][0]["code"] != IP):
            assert "measureScore" not in unit
    assert masked > 0


def test_non_summary_reports_are_refused() -> None:
    with pytest.raises(ValueError, match="summary"):
        suppress_report({"resourceType": "MeasureReport", "type": "individual"}, 11, extension_url="x")


def test_checker_refuses_a_score_next_to_a_masked_count(store: Store, mappings: Mappings) -> None:
    from fhir_adapter.report.measurereport import summary_report

    ev = _evaluate(store, mappings)
    suppressed = suppress_report(summary_report(ev, CTX), 11, extension_url="x")
    suppressed["group"][0]["measureScore"] = {"value": 0.5}
    problems = check_measure_report(suppressed, _measure(ev, mappings), suppressed=True)
    assert any(p.startswith("suppression: MeasureReport.group[0].measureScore") for p in problems), problems


# --------------------------------------------------------------------------------------------------
# where it is applied: $evaluate-measure and the command line

EVALUATE = "/fhir/Measure/oregon-se-issue-focused/$evaluate-measure"
PERIOD = {"periodStart": "2025-01-01", "periodEnd": "2025-12-31"}
THRESHOLD_URL = extension_url(DEFAULT_CANONICAL_BASE)


def _threshold(report: dict[str, Any]) -> int | None:
    found = [e["valueInteger"] for e in report.get("extension", []) if e["url"] == THRESHOLD_URL]
    return found[0] if found else None


def _any_masked(report: dict[str, Any]) -> bool:
    return "_count" in orjson.dumps(report).decode()


@pytest.mark.parametrize(
    ("setting", "params", "status", "threshold"),
    [
        pytest.param(None, {}, 200, None, id="off"),
        pytest.param(None, {"suppress": "true"}, 200, 11, id="true-is-11"),
        pytest.param(None, {"suppress": "3"}, 200, 3, id="three"),
        pytest.param(11, {}, 200, 11, id="site-setting"),
        pytest.param(11, {"suppress": "3"}, 200, 11, id="setting-is-a-floor"),
        pytest.param(None, {"suppress": "1"}, 400, None, id="below-two"),
        pytest.param(None, {"suppress": "lots"}, 400, None, id="not-a-number"),
        pytest.param(None, {"suppress": "11", "reportType": "subject-list"}, 400, None, id="not-a-summary"),
    ],
)
def test_evaluate_measure_suppress_parameter(
    settings: Settings,
    store: Store,
    mappings: Mappings,
    setting: int | None,
    params: dict[str, str],
    status: int,
    threshold: int | None,
) -> None:
    from fastapi.testclient import TestClient

    from fhir_adapter.api.app import create_app
    from tests.measure.test_boundaries import load
    from tests.report.test_measurereport import COHORT

    load(store, COHORT)
    overrides = {"suppression_threshold": setting, "auth_required": False}
    app = create_app(settings.model_copy(update=overrides), store=store)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get(EVALUATE, params={**PERIOD, **params})
    assert response.status_code == status, response.text
    if status == 200:
        report = response.json()
        assert _threshold(report) == threshold
        assert _any_masked(report) == (threshold is not None)
    else:
        assert response.json()["issue"][0]["expression"] == ["suppress"]


def test_cli_evaluate_suppress(tmp_path: Any) -> None:
    from click.testing import CliRunner

    from fhir_adapter.cli import main
    from tests.report.test_measurereport import COHORT

    db = f"sqlite:///{tmp_path / 'store.db'}"
    data = tmp_path / "cohort.ndjson"
    data.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in COHORT))
    runner = CliRunner()
    assert runner.invoke(main, ["ingest", str(data), "--database", db, "--quiet"]).exit_code == 0
    base = ["evaluate", "--measure", "oregon-se-issue-focused", "--period-start", "2025-01-01",
            "--period-end", "2025-12-31", "--database", db]  # fmt: skip
    plain = orjson.loads(runner.invoke(main, base, catch_exceptions=False).stdout)
    assert _threshold(plain) is None and not _any_masked(plain)
    default = orjson.loads(runner.invoke(main, [*base, "--suppress"], catch_exceptions=False).stdout)
    assert _threshold(default) == 11 and _any_masked(default)
    three = orjson.loads(runner.invoke(main, [*base, "--suppress", "3"], catch_exceptions=False).stdout)
    assert _threshold(three) == 3
    refused = runner.invoke(main, [*base, "--suppress", "--report-type", "subject-list"])
    assert refused.exit_code == 2 and "summary" in refused.stderr
