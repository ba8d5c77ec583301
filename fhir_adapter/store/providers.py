"""Providers and member assignment as known at a time (DESIGN.md §1 "as of"): the provider
directory by NPI, and which clinic and primary care provider (PCP) each child is assigned to.

Both read the facts of Practitioner, PractitionerRole, Organization and Group resources (FHIR
files, or the CSV roster and assignment files converted to them by
:mod:`fhir_adapter.ingest.roster`). References are resolved here, at query time, within the
source that sent them (DESIGN.md §1 "References are resolved at query time"); across sources
the NPI is the join key.

Group members follow the Da Vinci Member Attribution (ATR) List STU2 (2.1.0): ``member.entity``
is the child, ``member.period`` the assignment period, the ``ext-attributedProvider`` extension
the clinic (Organization), the PCP (Practitioner) or both (PractitionerRole), and
``managingEntity`` the CCO. Which assignment holds on a day (the one whose period covers it;
of several, the latest start) is the project's rule (UNVERIFIED: OHA publishes no assignment
rule for this metric).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, NamedTuple

from sqlalchemy import Connection, text

from fhir_adapter.measure.engine import person_key, visible
from fhir_adapter.measure.spec import Cco
from fhir_adapter.store.db import Store

_ROLE = "PractitionerRole/"
_ORG = "Organization/"


@dataclass(frozen=True)
class Assignment:
    """A child's assignment on one day; every field ``None`` when unknown."""

    cco: str | None
    clinic: str | None
    clinic_npi: str | None
    pcp_npi: str | None
    pcp_name: str | None


@dataclass(frozen=True)
class Provider:
    """One NPI (an individual or an organisation) in the provider directory.

    ``in_network`` is true when any of its roles is in a CCO's network, false when every role
    that says so is out of network, ``None`` when no role says; ``ccos`` are the CCOs of its
    roles not marked out of network.
    """

    npi: str
    taxonomy: str | None
    name: str | None
    org: str | None
    clinic: str | None
    county: str | None
    in_network: bool | None
    ccos: tuple[str, ...]


class _Row(NamedTuple):
    source: str
    rtype: str
    rid: str
    npi: str | None
    taxonomy: str | None
    name: str | None
    practitioner_rid: str | None
    org_rid: str | None
    clinic: str | None
    county: str | None
    in_network: int | None
    cco: str | None
    ingested_at: int


class _Member(NamedTuple):
    source: str
    group_rid: str
    pid: str | None
    member_id: str | None
    cco: str | None
    clinic: str | None
    clinic_org_rid: str | None
    pcp_npi: str | None
    pcp_rid: str | None
    start_day: int | None
    end_day: int | None
    ingested_at: int
    person: str | None


_PROVIDER_SQL = f"""
SELECT p.source, p.rtype, p.rid, p.npi, p.taxonomy, p.name, p.practitioner_rid, p.org_rid, p.clinic,
       p.county, p.in_network, p.cco, r.ingested_at
FROM f_provider p JOIN resources r ON r.rkey = p.rkey
WHERE {visible("r")}"""

_MEMBER_SQL = f"""
SELECT g.source, g.group_rid, g.pid, g.member_id, g.cco, g.clinic, g.clinic_org_rid, g.pcp_npi, g.pcp_rid,
       g.start_day, g.end_day, r.ingested_at, pp.person
FROM f_group_member g JOIN resources r ON r.rkey = g.rkey
LEFT JOIN (
    SELECT p.source, p.pid, {person_key("p")} AS person
    FROM f_patient p JOIN resources rp ON rp.rkey = p.rkey
    WHERE {visible("rp")}
) pp ON pp.source = g.source AND pp.pid = g.pid
WHERE {visible("r")}
  AND (g.start_day IS NULL OR g.start_day <= :day) AND (g.end_day IS NULL OR g.end_day >= :day)"""

_ORG_IDENT_SQL = f"""
SELECT o.source, o.oid, o.system, o.value
FROM f_org_ident o JOIN resources r ON r.rkey = o.rkey
WHERE {visible("r")}"""


class _Ccos:
    """Turns the CCO a source named (an identifier value, or ``Organization/<id>``) into the
    CCO id of ``mappings/ccos.csv`` (spec §3 Edge rule 2: same identifier, same CCO)."""

    def __init__(self, ccos: Sequence[Cco], org_idents: dict[tuple[str, str], list[tuple[str, str]]]) -> None:
        self.by_pair = {pair: c.id for c in ccos for pair in c.identifiers}
        self.by_value: dict[str, str] = {c.id: c.id for c in ccos}
        for c in ccos:
            for _system, value in c.identifiers:
                self.by_value.setdefault(value, c.id)
        self.org_idents = org_idents

    def resolve(self, source: str, token: str | None) -> str | None:
        if token is None:
            return None
        if token.startswith(_ORG):
            for pair in sorted(self.org_idents.get((source, token[len(_ORG) :]), ())):
                if pair in self.by_pair:
                    return self.by_pair[pair]
            return None
        return self.by_value.get(token, token)


def _provider_rows(conn: Connection, as_of_us: int) -> list[_Row]:
    rows = [_Row(*row) for row in conn.execute(text(_PROVIDER_SQL), {"as_of": as_of_us})]
    # Latest knowledge first, then a stable order (the same on both engines).
    rows.sort(key=lambda r: (-r.ingested_at, r.source, r.rtype, r.rid))
    return rows


def _org_idents(conn: Connection, as_of_us: int) -> dict[tuple[str, str], list[tuple[str, str]]]:
    found: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for source, oid, system, value in conn.execute(text(_ORG_IDENT_SQL), {"as_of": as_of_us}):
        found.setdefault((source, oid), []).append((system or "", value or ""))
    return found


def _first(values: Iterable[str | None]) -> str | None:
    return next((v for v in values if v), None)


def _directory(rows: Sequence[_Row], ccos: _Ccos) -> dict[str, Provider]:
    by_key = {(r.source, r.rtype, r.rid): r for r in rows}
    entities: dict[str, list[_Row]] = {}
    roles: dict[str, list[tuple[_Row, _Row | None, _Row | None]]] = {}
    for r in rows:
        if r.rtype == "PractitionerRole":
            prac = by_key.get((r.source, "Practitioner", r.practitioner_rid or ""))
            org = by_key.get((r.source, "Organization", r.org_rid or ""))
            npi = r.npi or (prac.npi if prac else None)
            if npi:
                roles.setdefault(npi, []).append((r, prac, org))
        elif r.npi:
            entities.setdefault(r.npi, []).append(r)
    directory: dict[str, Provider] = {}
    for npi in sorted(set(entities) | set(roles)):
        own = entities.get(npi, [])
        linked = roles.get(npi, [])
        flags = {role.in_network for role, _p, _o in linked if role.in_network is not None}
        in_network = True if 1 in flags else False if flags else None
        directory[npi] = Provider(
            npi=npi,
            taxonomy=_first([*(e.taxonomy for e in own), *(role.taxonomy for role, _p, _o in linked)]),
            name=_first([*(e.name for e in own), *(p.name if p else role.name for role, p, _o in linked)]),
            org=_first(
                [
                    *(o.name if o else role.clinic for role, _p, o in linked),
                    *(e.name for e in own if e.rtype == "Organization"),
                ]
            ),
            clinic=_first(
                [
                    *(role.clinic or (o.clinic or o.name if o else None) for role, _p, o in linked),
                    *(e.clinic for e in own),
                ]
            ),
            county=_first(
                [
                    *(role.county or (o.county if o else None) for role, _p, o in linked),
                    *(e.county for e in own),
                ]
            ),
            in_network=in_network,
            ccos=tuple(
                sorted(
                    {
                        cco
                        for role, _p, _o in linked
                        if role.in_network != 0 and (cco := ccos.resolve(role.source, role.cco))
                    }
                )
            ),
        )
    return directory


def provider_directory(store: Store, as_of_us: int, *, ccos: Sequence[Cco] = ()) -> dict[str, Provider]:
    """Every NPI known as of ``as_of_us`` (µs since the epoch), from every source.

    Per field, a provider's own record (Practitioner or Organization) comes before what its roles
    say, and newer knowledge before older; ``ccos`` (from ``mappings/``) turn CCO identifiers into
    CCO ids.
    """
    with store.read() as conn:
        rows = _provider_rows(conn, as_of_us)
    return _directory(rows, _Ccos(ccos, {}))


def assignments(
    store: Store, as_of_us: int, on_day: date, *, ccos: Sequence[Cco] = ()
) -> dict[str, Assignment]:
    """Each child's assignment on ``on_day`` as known at ``as_of_us``, keyed by the engine's
    person key (:func:`fhir_adapter.measure.engine.person_key`): a member given by Patient
    reference takes that Patient's key (same source; ``u:<source>/<id>`` until the Patient is
    known), a member given only by the Medicaid member id takes ``m:<member id>``.

    Of the assignments whose period covers the day (ends included, open ends open), the latest
    start wins; ties go to the most recently loaded, then to source and Group id. The clinic and
    PCP come from the attributed provider's resources in the same source, then from the
    provider directory by NPI.
    """
    day = on_day.toordinal()
    with store.read() as conn:
        members = [_Member(*row) for row in conn.execute(text(_MEMBER_SQL), {"as_of": as_of_us, "day": day})]
        if not members:
            return {}
        rows = _provider_rows(conn, as_of_us)
        need_orgs = any(m.cco and m.cco.startswith(_ORG) for m in members)
        org_idents = _org_idents(conn, as_of_us) if need_orgs else {}
    resolver = _Ccos(ccos, org_idents)
    by_key = {(r.source, r.rtype, r.rid): r for r in rows}
    directory = _directory(rows, resolver)
    chosen: dict[str, tuple[tuple[Any, ...], _Member]] = {}
    for m in members:
        if m.person is not None:
            person = m.person
        elif m.member_id is not None:
            person = f"m:{m.member_id}"
        else:
            person = f"u:{m.source}/{m.pid}"
        rank = (
            m.start_day if m.start_day is not None else 0, m.ingested_at, m.source, m.group_rid,
            m.end_day if m.end_day is not None else 10**7, m.clinic_org_rid or "", m.pcp_rid or "",
            m.pcp_npi or "", m.clinic or "", m.cco or "",
        )  # fmt: skip
        if person not in chosen or rank > chosen[person][0]:
            chosen[person] = (rank, m)
    return {person: _resolve(m, by_key, directory, resolver) for person, (_rank, m) in chosen.items()}


def _resolve(
    m: _Member, by_key: dict[tuple[str, str, str], _Row], directory: dict[str, Provider], ccos: _Ccos
) -> Assignment:
    role = prac = None
    if m.pcp_rid and m.pcp_rid.startswith(_ROLE):
        role = by_key.get((m.source, "PractitionerRole", m.pcp_rid[len(_ROLE) :]))
        if role is not None and role.practitioner_rid:
            prac = by_key.get((m.source, "Practitioner", role.practitioner_rid))
    elif m.pcp_rid:
        prac = by_key.get((m.source, "Practitioner", m.pcp_rid))
    org_rid = m.clinic_org_rid or (role.org_rid if role else None)
    org = by_key.get((m.source, "Organization", org_rid)) if org_rid else None
    pcp_npi = _first([m.pcp_npi, prac.npi if prac else None, role.npi if role else None])
    clinic_npi = org.npi if org else None
    pcp = directory.get(pcp_npi) if pcp_npi else None
    clinic_dir = directory.get(clinic_npi) if clinic_npi else None
    return Assignment(
        cco=ccos.resolve(m.source, m.cco),
        clinic=_first(
            [
                m.clinic,
                role.clinic if role else None,
                org.clinic if org else None,
                org.name if org else None,
                clinic_dir.clinic if clinic_dir else None,
                clinic_dir.name if clinic_dir else None,
            ]
        ),
        clinic_npi=clinic_npi,
        pcp_npi=pcp_npi,
        pcp_name=_first(
            [prac.name if prac else None, role.name if role else None, pcp.name if pcp else None]
        ),
    )


__all__ = ["Assignment", "Provider", "assignments", "provider_directory"]
