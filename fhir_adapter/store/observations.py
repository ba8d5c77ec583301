"""Observation facts (``f_observation``) per child: the latest value of given codes as known at a
data cut, for example OPIP health-complexity levels (spec §4 "Health complexity").

"Latest" for a child (the engine's person key, so every source counts): among the current,
non-cancelled Observations (R4 ``status`` other than ``cancelled`` and ``entered-in-error``)
of the code dated on or before the day asked for (undated ones included), the one with the latest
date, then the latest stored, then source and resource order (deterministic on both engines).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from sqlalchemy import text

from fhir_adapter.measure.engine import person_key, visible
from fhir_adapter.store.db import Store

_IGNORED = ("cancelled", "entered-in-error")


def latest_values(
    store: Store, as_of: int, system: str, codes: Sequence[str], on_day: date
) -> dict[str, dict[str, str]]:
    """Per person key: code -> the latest value (module docstring); people without any are absent."""
    if not codes:
        return {}
    params: dict[str, object] = {"as_of": as_of, "system": system, "day": on_day.toordinal()}
    params.update({f"c{i}": code for i, code in enumerate(codes)})
    marks = ", ".join(f":c{i}" for i in range(len(codes)))
    sql = f"""
        SELECT {person_key("p")} AS person, o.code, o.value, o.day, r.ingested_at, o.source, r.rid
        FROM f_observation o
        JOIN resources r ON r.rkey = o.rkey
        JOIN f_patient p ON p.source = o.source AND p.pid = o.pid
        JOIN resources rp ON rp.rkey = p.rkey
        WHERE {visible("r")} AND {visible("rp")} AND o.system = :system AND o.code IN ({marks})
          AND o.value IS NOT NULL AND (o.status IS NULL OR o.status NOT IN ('{_IGNORED[0]}', '{_IGNORED[1]}'))
          AND (o.day IS NULL OR o.day <= :day)"""
    best: dict[tuple[str, str], tuple[tuple[int, int, str, str], str]] = {}
    with store.read() as conn:
        for person, code, value, day, ingested_at, source, rid in conn.execute(text(sql), params).tuples():
            rank = (int(day) if day is not None else 0, int(ingested_at), str(source), str(rid))
            key = (str(person), str(code))
            if key not in best or rank > best[key][0]:
                best[key] = (rank, str(value))
    out: dict[str, dict[str, str]] = {}
    for (person, code), (_rank, value) in sorted(best.items()):
        out.setdefault(person, {})[code] = value
    return out


__all__ = ["latest_values"]
