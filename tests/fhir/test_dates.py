"""FHIR dates to local days (spec §3 "Measurement period"), partial dates kept as ranges."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from fhir_adapter.fhir.dates import parse_day_range, parse_instant
from tests.conftest import TZ

D = date.fromisoformat


@pytest.mark.parametrize(
    ("value", "first", "last", "precision"),
    [
        pytest.param("2025-03-04", D("2025-03-04"), D("2025-03-04"), "day", id="date"),
        pytest.param("2025", D("2025-01-01"), D("2025-12-31"), "year", id="year-only"),
        pytest.param("2024-02", D("2024-02-01"), D("2024-02-29"), "month", id="leap-february"),
        pytest.param("2025-12", D("2025-12-01"), D("2025-12-31"), "month", id="december"),
        pytest.param(
            "2026-01-01T07:30:00Z", D("2025-12-31"), D("2025-12-31"), "day", id="utc-crosses-year-end"
        ),
        pytest.param(
            "2026-01-01T08:00:00Z", D("2026-01-01"), D("2026-01-01"), "day", id="utc-local-midnight"
        ),
        pytest.param("2025-07-01T06:59:59Z", D("2025-06-30"), D("2025-06-30"), "day", id="utc-summer-time"),
        pytest.param("2025-12-31T23:30:00-08:00", D("2025-12-31"), D("2025-12-31"), "day", id="local-offset"),
        pytest.param(
            "2025-12-31T23:30:00+01:00", D("2025-12-31"), D("2025-12-31"), "day", id="europe-offset"
        ),
        pytest.param(
            "2025-06-01T10:00:00.123+00:00", D("2025-06-01"), D("2025-06-01"), "day", id="fractional"
        ),
        pytest.param("2025-06-01T10:00:00", D("2025-06-01"), D("2025-06-01"), "day", id="no-offset-is-local"),
    ],
)
def test_day_ranges(value: str, first: date, last: date, precision: str) -> None:
    parsed = parse_day_range(value, TZ)
    assert parsed is not None
    assert (parsed.first, parsed.last, parsed.precision) == (first, last, precision)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "2025-13-01",
        "2025-02-30",
        "25-01-01",
        "2025/01/01",
        "yesterday",
        "2025-01-01T25:00:00Z",
        None,
        20250101,
        "9999-12-31T23:59:59-12:00",
        "0001-01-01T00:00:00+14:00",
        "2025-01-01T00:00:00+25:00",
        "\u0662\u0660\u0662\u0665-\u0660\u0661-\u0660\u0661",
    ],
    ids=["empty", "month-13", "feb-30", "short-year", "slashes", "word", "hour-25", "none", "int",
         "offset-past-year-9999", "offset-before-year-1", "offset-25h", "arabic-indic-digits"],
)  # fmt: skip
def test_unusable_values_never_crash(value: object) -> None:
    assert parse_day_range(value, TZ) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "2026-01-05", datetime(2026, 1, 5, 23, 59, 59, 999999, tzinfo=UTC), id="date-means-end-of-day"
        ),
        pytest.param("2026-01-05T10:00:00Z", datetime(2026, 1, 5, 10, tzinfo=UTC), id="z"),
        pytest.param("2026-01-05T02:00:00-08:00", datetime(2026, 1, 5, 10, tzinfo=UTC), id="offset"),
    ],
)
def test_parse_instant(text: str, expected: datetime) -> None:
    assert parse_instant(text) == expected


def test_parse_instant_needs_an_offset() -> None:
    with pytest.raises(ValueError, match="offset"):
        parse_instant("2026-01-05T10:00:00")


def test_as_of_date_means_end_of_day_in_the_reporting_zone() -> None:
    assert parse_instant("2026-01-05", TZ) == datetime(2026, 1, 6, 7, 59, 59, 999999, tzinfo=UTC)


@pytest.mark.parametrize("text", ["9999-12-31", "9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00+14:00"])
def test_instants_off_the_calendar_are_value_errors(text: str) -> None:
    """Found by fuzzing: an offset that moves year 9999 (or year 1) off the calendar raised
    OverflowError, which callers expecting ValueError turned into HTTP 500."""
    with pytest.raises(ValueError, match="outside the calendar"):
        parse_instant(text, TZ)
