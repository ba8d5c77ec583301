"""Store facts that reconciliation and dual rates need beyond an evaluation's results.

* :func:`claim_lines`: a child's claims-category lines dated in the period, with their
  procedure codes (reasons ``no-claim``, ``code-not-in-list`` and ``claim-not-counted``).
* :func:`event_days`: the local dates of evidence resources (evidence is listed with its date).
* :func:`claims_feed_status`: the claims feeds' paid-through dates from ``source_status``
  (reason ``data-lag``), read with plain SQL.

Visibility as of a data cut and the person key are those of the engine
(:func:`fhir_adapter.measure.engine.visible`, :func:`~fhir_adapter.measure.engine.person_key`),
so these facts describe the same store state the evaluation saw.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TypeVar

from sqlalchemy import text

from fhir_adapter.measure.engine import person_key, visible
from fhir_adapter.store.db import Store

_CHUNK = 500
T = TypeVar("T")


def _chunks(items: Sequence[T], size: int = _CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _in_list(name: str, values: Sequence[object]) -> tuple[str, dict[str, object]]:
    """``(:name0, :name1, …)`` and its parameters (portable on both engines)."""
    params = {f"{name}{i}": v for i, v in enumerate(values)}
    return "(" + ", ".join(f":{k}" for k in params) + ")", params


@dataclass(frozen=True)
class ClaimLine:
    """One procedure coding on a claims line dated in the period (``system``/``code`` ``None``
    for a line without a procedure coding)."""

    person: str
    member_id: str
    source: str
    rtype: str
    rid: str
    line: int
    day: date
    system: str | None
    code: str | None


def claim_lines(
    store: Store, member_ids: Collection[str], period_start: date, period_end: date, as_of: int
) -> dict[str, list[ClaimLine]]:
    """Claims-category lines (ExplanationOfBenefit, Claim: spec §3 "Where the data comes from")
    of the children with these member ids whose from-date falls in the period (as the engine
    places a line, Edge rule 7), whatever their status, outcome or denial; keyed by member id.
    Children with no such line are absent."""
    out: dict[str, list[ClaimLine]] = {}
    wanted = sorted(set(member_ids))
    window = {"as_of": as_of, "p_start": period_start.toordinal(), "p_end": period_end.toordinal()}
    with store.read() as conn:
        for chunk in _chunks(wanted):
            members, params = _in_list("m", chunk)
            sql = f"""
                SELECT DISTINCT {person_key("p")} AS person, p.member_id, e.source, e.rtype, e.rid, l.line, l.day,
                       c.system, c.code
                FROM f_patient p
                JOIN resources rp ON rp.rkey = p.rkey
                JOIN f_event e ON e.source = p.source AND e.pid = p.pid
                JOIN resources r ON r.rkey = e.rkey
                JOIN f_line l ON l.rkey = e.rkey
                LEFT JOIN f_code fc ON fc.rkey = e.rkey AND fc.line = l.line AND fc.role = 'proc'
                LEFT JOIN codes c ON c.cid = fc.cid
                WHERE p.member_id IN {members} AND {visible("rp")} AND {visible("r")}
                  AND e.category = 'claims' AND l.day >= :p_start AND l.day_last <= :p_end"""
            for person, member_id, source, rtype, rid, line, day, system, code in conn.execute(
                text(sql), {**params, **window}
            ).tuples():
                out.setdefault(str(member_id), []).append(
                    ClaimLine(
                        str(person), str(member_id), str(source), str(rtype), str(rid), int(line),
                        date.fromordinal(int(day)), system, code,
                    )
                )  # fmt: skip
    for lines in out.values():
        lines.sort(key=lambda x: (x.day, x.source, x.rtype, x.rid, x.line, x.system or "", x.code or ""))
    return out


#: (source, resource type, id, version) of a stored resource version
VersionKey = tuple[str, str, str, int]


def event_days(store: Store, keys: Iterable[VersionKey]) -> dict[VersionKey, tuple[date, date]]:
    """First and last local day each resource version's event date can mean (``f_event.day``,
    ``day_last``: a claim's first line from-date, an Encounter's start, a Procedure's performed
    date, a Condition's recorded/onset date). Versions without a date are absent."""
    by_type: dict[tuple[str, str], set[VersionKey]] = {}
    for key in set(keys):
        by_type.setdefault((key[0], key[1]), set()).add(key)
    out: dict[VersionKey, tuple[date, date]] = {}
    with store.read() as conn:
        for (source, rtype), wanted in sorted(by_type.items()):
            for chunk in _chunks(sorted({k[2] for k in wanted})):
                rids, params = _in_list("r", chunk)
                # (source, rtype, rid) leads the resources index
                sql = f"""
                    SELECT r.rid, r.version, e.day, e.day_last
                    FROM resources r JOIN f_event e ON e.rkey = r.rkey
                    WHERE r.source = :source AND r.rtype = :rtype AND r.rid IN {rids} AND e.day IS NOT NULL"""
                rows = conn.execute(text(sql), {**params, "source": source, "rtype": rtype}).tuples()
                for rid, version, day, day_last in rows:
                    key = (source, rtype, str(rid), int(version))
                    if key in wanted:
                        last = day_last if day_last is not None else day
                        out[key] = (date.fromordinal(int(day)), date.fromordinal(int(last)))
    return out


@dataclass(frozen=True)
class FeedStatus:
    """One claims feed as ``source_status`` describes it."""

    source: str
    paid_through: date | None
    #: µs since the epoch
    last_loaded_at: int | None
    last_data_day: date | None


def claims_feed_status(store: Store) -> list[FeedStatus]:
    """Every ``source_status`` row of kind ``claims`` (the claims extract loaders keep them)."""
    sql = (
        "SELECT source, paid_through_day, last_loaded_at, last_data_day FROM source_status "
        "WHERE kind = 'claims' ORDER BY source"
    )
    with store.read() as conn:
        return [
            FeedStatus(
                str(source),
                date.fromordinal(int(paid)) if paid is not None else None,
                int(loaded) if loaded is not None else None,
                date.fromordinal(int(last)) if last is not None else None,
            )
            for source, paid, loaded, last in conn.execute(text(sql)).tuples()
        ]
