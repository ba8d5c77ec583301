"""Precomputed date and time strings for the synthetic window, in one reporting time zone.

Days are proleptic Gregorian ordinals (``date.toordinal()``) so plans do integer arithmetic;
strings are looked up, not formatted, on the hot path. FHIR ``date``/``dateTime``/``instant``
formats: http://hl7.org/fhir/R4/datatypes.html#dateTime (offset required when a time is given).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo


def _offset_text(minutes: int) -> str:
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


@dataclass(frozen=True, slots=True)
class Calendar:
    """Dates from ``first`` to ``last`` ordinal (inclusive) with their local UTC offsets."""

    first: int
    last: int
    zone: str
    iso: tuple[str, ...]
    #: UTC offset in minutes at local noon (valid for any local time from 03:00 to 24:00).
    noon_offset: tuple[int, ...]
    noon_offset_text: tuple[str, ...]
    #: ``YYYY-MM-DDT`` per day and ``HH:MM:00`` per minute of day: instants are concatenations.
    day_t: tuple[str, ...]
    clock: tuple[str, ...]

    @classmethod
    def build(cls, first_year: int, last_year: int, zone: str) -> Calendar:
        tz = ZoneInfo(zone)
        first = date(first_year, 1, 1).toordinal()
        last = date(last_year, 12, 31).toordinal()
        iso: list[str] = []
        offsets: list[int] = []
        for ordinal in range(first, last + 1):
            day = date.fromordinal(ordinal)
            iso.append(day.isoformat())
            noon = datetime(day.year, day.month, day.day, 12, tzinfo=tz)
            delta = noon.utcoffset() or timedelta(0)
            offsets.append(int(delta.total_seconds()) // 60)
        return cls(
            first=first,
            last=last,
            zone=zone,
            iso=tuple(iso),
            noon_offset=tuple(offsets),
            noon_offset_text=tuple(_offset_text(m) for m in offsets),
            day_t=tuple(d + "T" for d in iso),
            clock=tuple(f"{m // 60:02d}:{m % 60:02d}:00" for m in range(1440)),
        )

    def day(self, ordinal: int) -> str:
        """``YYYY-MM-DD``."""
        return self.iso[ordinal - self.first]

    def local(self, ordinal: int, minute: int) -> str:
        """Local wall time ``minute`` (03:00 ≤ t < 24:00) on ``ordinal`` with its offset."""
        i = ordinal - self.first
        return self.day_t[i] + self.clock[minute] + self.noon_offset_text[i]

    def utc(self, ordinal: int, minute: int) -> str:
        """The same instant as :meth:`local`, written in UTC (``Z``); may fall on the next day.

        ``minute`` may pass midnight (a late visit's end): it carries into the next day.
        """
        utc_minute = minute - self.noon_offset[ordinal - self.first]
        ordinal += utc_minute // 1440
        return self.day_t[ordinal - self.first] + self.clock[utc_minute % 1440] + "Z"

    def exact(self, ordinal: int, hour: int, minute: int, second: int, *, in_utc: bool) -> str:
        """Any local wall time (including midnight on a DST change day) via zoneinfo."""
        day = date.fromordinal(ordinal)
        moment = datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=ZoneInfo(self.zone))
        if in_utc:
            return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return moment.isoformat()

    def year_of(self, ordinal: int) -> int:
        return int(self.iso[ordinal - self.first][:4])
