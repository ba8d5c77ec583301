"""Reading the dashboard's selection from its query: periods, defaults, the CCOs a caller may
choose, and errors naming the parameter."""

from __future__ import annotations

from datetime import date

import pytest

from fhir_adapter.api.dashboard.selection import Selection, options, parse
from fhir_adapter.errors import UsageError
from fhir_adapter.measure.spec import Mappings

TODAY = date(2026, 11, 23)
IF = "oregon-se-issue-focused"


@pytest.mark.parametrize(
    ("kind", "quarter", "start", "end"),
    [
        pytest.param("year", 2, date(2025, 1, 1), date(2025, 12, 31), id="year-ignores-quarter"),
        pytest.param("quarter", 1, date(2025, 1, 1), date(2025, 3, 31), id="q1"),
        pytest.param("quarter", 2, date(2025, 4, 1), date(2025, 6, 30), id="q2"),
        pytest.param("quarter", 4, date(2025, 10, 1), date(2025, 12, 31), id="q4"),
        pytest.param("rolling-12", 1, date(2024, 4, 1), date(2025, 3, 31), id="rolling-q1"),
        pytest.param("rolling-12", 4, date(2025, 1, 1), date(2025, 12, 31), id="rolling-q4-is-the-year"),
    ],
)
def test_periods(kind: str, quarter: int, start: date, end: date) -> None:
    selection = Selection(IF, kind, 2025, quarter, None, "all")  # type: ignore[arg-type]
    assert selection.period == (start, end)


def test_options_for_oha_and_for_a_cco(mappings: Mappings) -> None:
    every = options(mappings, None, TODAY)
    assert every.measures[0][0] == IF
    assert every.years["oregon-se-reach"] == (2022, 2023, 2024)
    assert (
        every.ccos[0] == ("statewide", "Statewide (every CCO)") and len(every.ccos) == len(mappings.ccos) + 1
    )
    mine = options(mappings, ("IHN",), TODAY)
    assert [v for v, _l in mine.ccos] == ["IHN"]
    assert options(mappings, None, date(2025, 6, 1)).years[IF] == (2025,)  # no future years


@pytest.mark.parametrize(
    ("query", "default_year", "expected"),
    [
        pytest.param({}, None, (IF, "year", 2025, None, "all"), id="defaults-last-full-year"),
        pytest.param({}, 2026, (IF, "year", 2026, None, "all"), id="default-from-persisted-runs"),
        pytest.param(
            {"measure": "oregon-se-reach"},
            None,
            ("oregon-se-reach", "year", 2024, None, "all"),
            id="reach-ends-2024",
        ),
        pytest.param(
            {"cco": "IHN", "sources": "claims", "period": "quarter", "quarter": "3", "year": "2025"},
            None,
            (IF, "quarter", 2025, "IHN", "claims"),
            id="everything-given",
        ),
        pytest.param({"cco": "statewide"}, None, (IF, "year", 2025, None, "all"), id="statewide"),
        pytest.param({"cco": " IHN "}, None, (IF, "year", 2025, "IHN", "all"), id="trimmed"),
    ],
)
def test_parse(
    mappings: Mappings, query: dict[str, str], default_year: int | None, expected: tuple[object, ...]
) -> None:
    s = parse(query, options(mappings, None, TODAY), default_year=default_year, today=TODAY)
    assert (s.measure, s.kind, s.year, s.cco, s.sources) == expected


def test_a_cco_client_defaults_to_its_cco_and_may_not_ask_for_another(mappings: Mappings) -> None:
    opts = options(mappings, ("IHN", "ALLCARE"), TODAY)
    assert parse({}, opts, default_year=None, today=TODAY).cco == "ALLCARE"
    for other in ("statewide", "HEALTH-SHARE"):
        with pytest.raises(UsageError) as caught:
            parse({"cco": other}, opts, default_year=None, today=TODAY)
        assert caught.value.location == "cco"


@pytest.mark.parametrize(
    ("query", "location"),
    [
        pytest.param({"measure": "x"}, "measure", id="measure"),
        pytest.param({"period": "week"}, "period", id="period"),
        pytest.param({"year": "20x5"}, "year", id="year"),
        pytest.param({"quarter": "0"}, "quarter", id="quarter"),
        pytest.param({"cco": "NOPE"}, "cco", id="cco"),
        pytest.param({"sources": "clinical"}, "sources", id="sources"),
    ],
)
def test_parse_errors_name_the_parameter(mappings: Mappings, query: dict[str, str], location: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse(query, options(mappings, None, TODAY), default_year=None, today=TODAY)
    assert caught.value.location == location


def test_a_year_of_another_measure_falls_back(mappings: Mappings) -> None:
    notices: list[str] = []
    s = parse({"measure": "oregon-se-reach", "year": "2025"}, options(mappings, None, TODAY), default_year=None,
              today=TODAY, notices=notices)  # fmt: skip
    assert s.year == 2024 and notices == ["oregon-se-reach has no measurement year 2025; showing 2024."]


def test_query_round_trips(mappings: Mappings) -> None:
    opts = options(mappings, None, TODAY)
    s = parse({"cco": "IHN", "period": "rolling-12", "quarter": "2", "clinic": "A & B"}, opts, default_year=None,
              today=TODAY)  # fmt: skip
    again = parse(s.params(), opts, default_year=None, today=TODAY)
    assert again == s
    assert "clinic" not in s.params(clinic=None)
