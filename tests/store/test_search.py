"""Search value parsing and the R4 prefix semantics of ``fhir_adapter.store.search``."""

from __future__ import annotations

import sqlite3
from datetime import date, datetime
from typing import Any

import pytest

from fhir_adapter.errors import UsageError
from fhir_adapter.fhir.dates import to_micros
from fhir_adapter.settings import DEFAULT_MEMBER_ID_SYSTEM
from fhir_adapter.store.search import (
    Bound,
    Query,
    SearchContext,
    Token,
    build_query,
    parse_day_bound,
    parse_instant_bound,
    parse_references,
    parse_token,
    range_condition,
    split_escaped,
    unescape,
)
from tests.conftest import TZ

CTX = SearchContext(TZ, DEFAULT_MEMBER_ID_SYSTEM)


def _day(text: str) -> int:
    return date.fromisoformat(text).toordinal()


@pytest.mark.parametrize(
    ("raw", "prefix", "first", "last"),
    [
        pytest.param("2025", "eq", "2025-01-01", "2025-12-31", id="year"),
        pytest.param("ge2025-02", "ge", "2025-02-01", "2025-02-28", id="month"),
        pytest.param("le2024-02", "le", "2024-02-01", "2024-02-29", id="leap-month"),
        pytest.param("lt2025-03-15", "lt", "2025-03-15", "2025-03-15", id="day"),
        pytest.param(
            "gt2026-01-01T07:30:00Z", "gt", "2025-12-31", "2025-12-31", id="utc-instant-is-local-day"
        ),
        pytest.param(
            "2025-06-01T00:30:00 07:00", "eq", "2025-05-31", "2025-05-31", id="plus-offset-as-space"
        ),
        pytest.param("sa2025-06-01T10:00", "sa", "2025-06-01", "2025-06-01", id="no-offset-is-local"),
    ],
)
def test_day_bounds(raw: str, prefix: str, first: str, last: str) -> None:
    assert parse_day_bound(raw, CTX, "date") == Bound(prefix, _day(first), _day(last))


def _us(text: str) -> int:
    return to_micros(datetime.fromisoformat(text))


@pytest.mark.parametrize(
    ("raw", "first", "last"),
    [
        pytest.param("2026-01-10", "2026-01-10T00:00:00-08:00", "2026-01-10T23:59:59.999999-08:00", id="local-day"),
        pytest.param("2026-03-08", "2026-03-08T00:00:00-08:00", "2026-03-08T23:59:59.999999-07:00", id="dst-day"),
        pytest.param("2026", "2026-01-01T00:00:00-08:00", "2026-12-31T23:59:59.999999-08:00", id="year"),
        pytest.param("2026-01-10T12:00Z", "2026-01-10T12:00:00+00:00", "2026-01-10T12:00:59.999999+00:00",
                     id="minute"),
        pytest.param("2026-01-10T12:00:05+01:00", "2026-01-10T11:00:05+00:00", "2026-01-10T11:00:05.999999+00:00",
                     id="second-offset"),
        pytest.param("2026-01-10T12:00:05.12Z", "2026-01-10T12:00:05.120000+00:00",
                     "2026-01-10T12:00:05.129999+00:00", id="fraction"),
        pytest.param("2026-01-10T12:00:05.1234567Z", "2026-01-10T12:00:05.123456+00:00",
                     "2026-01-10T12:00:05.123456+00:00", id="beyond-microseconds"),
    ],
)  # fmt: skip
def test_instant_bounds(raw: str, first: str, last: str) -> None:
    assert parse_instant_bound(raw, CTX, "_lastUpdated") == Bound("eq", _us(first), _us(last))


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("ap2025", id="approximately-unsupported"),
        pytest.param("xx2025", id="unknown-prefix"),
        pytest.param("2025-13", id="bad-month"),
        pytest.param("2025-02-30", id="bad-day"),
        pytest.param("", id="empty"),
        pytest.param("yesterday", id="word"),
    ],
)
def test_bad_dates(raw: str) -> None:
    with pytest.raises(UsageError):
        parse_day_bound(raw, CTX, "date")
    with pytest.raises(UsageError):
        parse_instant_bound(raw, CTX, "_lastUpdated")


#: (prefix, target range, search range) → match; days 10..20 is a period, 15..15 a single day.
PREFIX_CASES = [
    ("eq", (12, 14), (10, 20), True),
    ("eq", (10, 20), (10, 20), True),
    ("eq", (9, 20), (10, 20), False),
    ("eq", (15, 15), (15, 15), True),
    ("ne", (9, 20), (10, 20), True),
    ("ne", (10, 20), (10, 20), False),
    ("gt", (15, 21), (10, 20), True),
    ("gt", (15, 20), (10, 20), False),
    ("gt", (21, 21), (20, 20), True),
    ("gt", (20, 20), (20, 20), False),
    ("lt", (9, 15), (10, 20), True),
    ("lt", (10, 15), (10, 20), False),
    ("ge", (20, 20), (20, 20), True),
    ("ge", (1, 20), (20, 20), True),  # a period ending on the search day
    ("ge", (1, 19), (20, 20), False),
    ("le", (10, 10), (10, 10), True),
    ("le", (10, 30), (10, 10), True),  # a period starting on the search day
    ("le", (11, 30), (10, 10), False),
    ("sa", (21, 30), (10, 20), True),
    ("sa", (20, 30), (10, 20), False),
    ("eb", (1, 9), (10, 20), True),
    ("eb", (1, 10), (10, 20), False),
]


@pytest.mark.parametrize(
    ("prefix", "target", "search", "expected"),
    [
        pytest.param(*case, id=f"{case[0]}-{case[1][0]}..{case[1][1]}-in-{case[2][0]}..{case[2][1]}")
        for case in PREFIX_CASES
    ],
)
def test_prefix_semantics(
    prefix: str, target: tuple[int, int], search: tuple[int, int], expected: bool
) -> None:
    q = Query()
    condition = range_condition(q, ":t1", ":t2", Bound(prefix, *search))
    params: dict[str, Any] = {**q.params, "t1": target[0], "t2": target[1]}
    with sqlite3.connect(":memory:") as conn:
        (result,) = conn.execute(f"SELECT CASE WHEN {condition} THEN 1 ELSE 0 END", params).fetchone()
    assert bool(result) is expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("http://loinc.org|1234-5", Token("http://loinc.org", "1234-5"), id="system-code"),
        pytest.param("|X1", Token("", "X1"), id="no-system"),
        pytest.param("X1", Token(None, "X1"), id="any-system"),
        pytest.param("http://x.example|", Token("http://x.example", None), id="whole-system"),
        pytest.param(r"urn:a\|b|c", Token("urn:a|b", "c"), id="escaped-bar"),
    ],
)
def test_tokens(raw: str, expected: Token) -> None:
    assert parse_token(raw, "code") == expected


@pytest.mark.parametrize(
    "raw",
    [pytest.param("a|b|c", id="two-bars"), pytest.param("|", id="nothing"), pytest.param("", id="empty")],
)
def test_bad_tokens(raw: str) -> None:
    with pytest.raises(UsageError):
        parse_token(raw, "code")


@pytest.mark.parametrize(
    ("raw", "sep", "parts"),
    [
        pytest.param("a,b", ",", ["a", "b"], id="comma"),
        pytest.param(r"a\,b,c", ",", ["a,b", "c"], id="escaped-comma"),
        pytest.param(r"a\|b,c", ",", [r"a\|b", "c"], id="other-escape-kept"),
        pytest.param("a,", ",", ["a", ""], id="trailing"),
    ],
)
def test_split_escaped(raw: str, sep: str, parts: list[str]) -> None:
    assert split_escaped(raw, sep) == parts


def test_unescape() -> None:
    assert unescape(r"a\,b\|c\$d\\e") == r"a,b|c$d\e"


@pytest.mark.parametrize(
    ("raw", "targets", "expected"),
    [
        pytest.param("Patient/1", ("Patient",), ["Patient/1"], id="relative"),
        pytest.param("1", ("Patient", "Group"), ["Patient/1", "Group/1"], id="bare-id-every-type"),
        pytest.param(
            "https://ehr.example/fhir/Patient/1/_history/2", ("Patient",), ["Patient/1"], id="absolute"
        ),
        pytest.param("Group/1", ("Patient",), [], id="other-type"),
        pytest.param("urn:uuid:0f0e", ("Patient",), [], id="not-a-literal-reference"),
    ],
)
def test_references(raw: str, targets: tuple[str, ...], expected: list[str]) -> None:
    assert parse_references(raw, targets, "subject") == expected


def test_event_conditions_share_one_subquery() -> None:
    q = build_query("Encounter", [("patient", None, "p1"), ("date", None, "2025"), ("_id", None, "e1")], CTX)
    assert len(q.event) == 2
    assert q.by_id
    assert len(q.where) == 1 and q.where[0].startswith("r.rid IN (")


def test_patient_identifier_of_another_system_is_refused() -> None:
    with pytest.raises(UsageError, match="member id system"):
        build_query("Patient", [("identifier", None, "http://other.example|1")], CTX)
