"""Store facts provider capacity reads: who delivered a service, and the provider records that say
what a reference or NPI is.

* :func:`event_providers`: the provider tokens of resource versions (``f_event.provider``: a
  claim's ``provider``, an Encounter's first ``participant.individual`` else ``serviceProvider``,
  a Procedure's ``performer.actor``; and ``f_line.provider`` of claim lines): an identifier value
  (an NPI) or a reference as sent (``Practitioner/<id>``), as the extractor kept them.
* :func:`provider_records`: Practitioner, PractitionerRole and Organization facts
  (``f_provider``) visible at a data cut, by ``(source, type, id)``, to resolve those references
  within their source (DESIGN.md §1 "References are resolved at query time").
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import text

from fhir_adapter.measure.engine import visible
from fhir_adapter.store.claims_facts import VersionKey
from fhir_adapter.store.db import Store

_CHUNK = 500
T = TypeVar("T")


def _chunks(items: Sequence[T], size: int = _CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def event_providers(store: Store, keys: Iterable[VersionKey]) -> dict[VersionKey, tuple[str, ...]]:
    """Per resource version ``(source, type, id, version)``: its distinct provider tokens
    (header first, then lines). Versions without any are absent."""
    by_type: dict[tuple[str, str], set[VersionKey]] = {}
    for key in set(keys):
        by_type.setdefault((key[0], key[1]), set()).add(key)
    out: dict[VersionKey, list[str]] = {}
    with store.read() as conn:
        for (source, rtype), wanted in sorted(by_type.items()):
            for chunk in _chunks(sorted({k[2] for k in wanted})):
                params: dict[str, object] = {f"r{i}": rid for i, rid in enumerate(chunk)}
                rids = ", ".join(f":r{i}" for i in range(len(chunk)))
                sql = f"""
                    SELECT r.rid, r.version, 0 AS line, e.provider FROM resources r JOIN f_event e ON e.rkey = r.rkey
                    WHERE r.source = :source AND r.rtype = :rtype AND r.rid IN ({rids}) AND e.provider IS NOT NULL
                    UNION ALL
                    SELECT r.rid, r.version, l.line, l.provider FROM resources r JOIN f_line l ON l.rkey = r.rkey
                    WHERE r.source = :source AND r.rtype = :rtype AND r.rid IN ({rids}) AND l.provider IS NOT NULL"""
                rows = conn.execute(text(sql), {**params, "source": source, "rtype": rtype}).tuples()
                ordered = sorted(rows, key=lambda r: (str(r[0]), int(r[1]), int(r[2]), str(r[3])))
                for rid, version, _line, provider in ordered:
                    key = (source, rtype, str(rid), int(version))
                    if key in wanted and provider not in out.setdefault(key, []):
                        out[key].append(str(provider))
    return {k: tuple(v) for k, v in out.items()}


@dataclass(frozen=True)
class ProviderRecord:
    """One Practitioner, PractitionerRole or Organization as its source describes it."""

    source: str
    rtype: str
    rid: str
    npi: str | None
    taxonomy: str | None
    name: str | None
    practitioner_rid: str | None
    org_rid: str | None
    county: str | None


def provider_records(store: Store, as_of: int) -> dict[tuple[str, str, str], ProviderRecord]:
    """Every provider record visible at ``as_of`` by ``(source, type, id)``."""
    sql = f"""
        SELECT p.source, p.rtype, p.rid, p.npi, p.taxonomy, p.name, p.practitioner_rid, p.org_rid, p.county
        FROM f_provider p JOIN resources r ON r.rkey = p.rkey WHERE {visible("r")}"""
    with store.read() as conn:
        return {
            (str(row[0]), str(row[1]), str(row[2])): ProviderRecord(*row)
            for row in conn.execute(text(sql), {"as_of": as_of}).tuples()
        }


__all__ = ["ProviderRecord", "event_providers", "provider_records"]
