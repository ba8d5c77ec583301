"""FHIR date, dateTime and instant values as local calendar days.

FHIR R4 §2.24.0.1 (primitive types): ``date`` is ``YYYY``, ``YYYY-MM`` or ``YYYY-MM-DD``;
``dateTime``/``instant`` add a time that SHALL carry a time-zone offset when present.
The measure counts *local* dates in the reporting time zone (spec §3 "Measurement period"):
a value with an offset is converted to the local date; a date-only value is taken as it is.
A partial date is kept as the range of days it can mean, never guessed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

# re.ASCII: FHIR digits are [0-9] (R4 §2.24.0.1 regexes); \d alone would take other scripts' digits.
_DATE_RE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$", re.ASCII)
_DATETIME_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?(Z|[+-]\d{2}:\d{2})?$", re.ASCII
)


@dataclass(frozen=True)
class DayRange:
    """The local days a FHIR value can mean: ``first`` ≤ day ≤ ``last``.

    ``precision`` is ``year``, ``month`` or ``day``; a full date or a dateTime has
    ``first == last``.
    """

    first: date
    last: date
    precision: str

    @property
    def exact(self) -> bool:
        return self.first == self.last


def _month_end(year: int, month: int) -> date:
    if month == 12:
        return date(year, 12, 31)
    return date(year, month + 1, 1) - timedelta(days=1)


def parse_day_range(value: object, tz: ZoneInfo) -> DayRange | None:
    """Parse a FHIR date/dateTime/instant to the local days it covers; ``None`` if unusable.

    >>> from zoneinfo import ZoneInfo
    >>> parse_day_range("2026-01-01T07:30:00Z", ZoneInfo("America/Los_Angeles")).first
    datetime.date(2025, 12, 31)
    """
    if not isinstance(value, str):
        return None
    text = value.strip()
    m = _DATE_RE.match(text)
    try:
        if m:
            year = int(m.group(1))
            if m.group(2) is None:
                return DayRange(date(year, 1, 1), date(year, 12, 31), "year")
            month = int(m.group(2))
            if m.group(3) is None:
                return DayRange(date(year, month, 1), _month_end(year, month), "month")
            day = date(year, month, int(m.group(3)))
            return DayRange(day, day, "day")
        m = _DATETIME_RE.match(text)
        if not m:
            return None
        y, mo, d, hh, mi = (int(m.group(i)) for i in range(1, 6))
        ss = int(m.group(6) or 0)
        offset = m.group(7)
        if hh == 24 and mi == 0 and ss == 0:  # 24:00 is the end of the day
            hh = 23
            mi = 59
            ss = 59
        naive = datetime(y, mo, d, hh, mi, ss)
        if offset is None:
            # FHIR requires an offset with a time; without one, take the wall clock as local.
            local_day = naive.date()
        else:
            if offset == "Z":
                tzinfo = UTC
            else:
                sign = 1 if offset[0] == "+" else -1
                tzinfo = timezone(sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6])))
            local_day = naive.replace(tzinfo=tzinfo).astimezone(tz).date()
        return DayRange(local_day, local_day, "day")
    except (ValueError, OverflowError):  # OverflowError: an offset moves year 1 or 9999 off the calendar
        return None


def parse_instant(value: str, tz: ZoneInfo | None = None) -> datetime:
    """Parse an ISO 8601 date or dateTime given on the command line (``--as-of``) to an aware
    UTC datetime. A date alone means the end of that day in ``tz`` (the reporting time zone;
    UTC when not given). Raises ``ValueError``."""
    text = value.strip()
    try:
        if _DATE_RE.match(text) and len(text) == 10:
            day = date.fromisoformat(text)
            end = datetime(day.year, day.month, day.day, 23, 59, 59, 999999, tzinfo=tz or UTC)
            return end.astimezone(UTC)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            raise ValueError(f"{value!r} has no time-zone offset")
        return parsed.astimezone(UTC)
    except OverflowError:  # year 1 or 9999 moved off the calendar by the offset
        raise ValueError(f"{value!r} is outside the calendar in UTC") from None


def to_micros(moment: datetime) -> int:
    """Microseconds since the Unix epoch (the store's clock unit)."""
    delta = moment.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)


def ymd(day: date) -> int:
    """``20250131`` for 2025-01-31: integer dates make whole-year ages simple integer arithmetic
    (``(end_ymd - birth_ymd) // 10000``) on every SQL engine."""
    return day.year * 10000 + day.month * 100 + day.day


def iso_instant(moment: datetime) -> str:
    """FHIR instant text with a ``Z`` offset and millisecond precision."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{moment.astimezone(UTC).microsecond // 1000:03d}Z"
    )
