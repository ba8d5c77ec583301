"""Provider rosters and member-assignment files (CSV or fixed-width) converted to FHIR R4, so
the CSV and FHIR routes share one path: stored per source, versioned, as of a time, read back
by :mod:`fhir_adapter.store.providers`.

* A **provider roster** row (NPI, NUCC taxonomy, name, organisation NPI and/or name, clinic,
  county, CCO, network flag) becomes a ``Practitioner`` (US Core: NPI identifier, name,
  ``qualification.code`` with the NUCC taxonomy), an ``Organization`` (NPI, name, type ``prov``,
  ``address.district`` = county) and a ``PractitionerRole`` linking them (``specialty`` = the
  taxonomy; the project's own ``in-network``, ``cco`` and ``county`` extensions, UNVERIFIED).
* A **member-assignment** file (member id, CCO, clinic NPI or name, PCP NPI, start, end)
  becomes one ``Group`` per CCO shaped as a Da Vinci Member Attribution (ATR) List (STU2 2.1.0,
  ``atr-group``): ``managingEntity`` = the CCO's Organization, one ``member`` per row with
  ``entity`` = the child by member-id identifier, ``period`` = the assignment dates and the
  ``ext-attributedProvider`` extension = the PCP's PractitionerRole at the clinic (or the
  Practitioner, or the clinic's Organization, when only one is known). The referenced
  Practitioner, Organization and PractitionerRole resources are written too, unless the source
  already holds them (a roster loaded under the same source name keeps its richer versions).

Ids are deterministic (re-loading a file changes nothing; a changed row makes new versions).
Loads are all-or-nothing per file: every bad row is reported at ``file:line`` and nothing is
written. A load adds or replaces resources; it never infers deletions from absent rows.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, text

from fhir_adapter.errors import InvalidDataError, MappingsError
from fhir_adapter.fhir.resources import ID_RE
from fhir_adapter.ingest.columns import ColumnMap, Row, load_column_map, read_rows, value
from fhir_adapter.ingest.files import LineError
from fhir_adapter.ingest.runner import Clock, IngestResult, check_source, ingest_items, utc_now
from fhir_adapter.measure.spec import Cco
from fhir_adapter.store.db import ParsedResource, Store, WriteStats
from fhir_adapter.store.extract import (
    ATR_ATTRIBUTED_PROVIDER,
    EXT_CCO,
    EXT_COUNTY,
    EXT_IN_NETWORK,
    NPI_SYSTEM,
    NUCC_SYSTEM,
)

#: Fields of a provider roster (``True``: the column map must name it).
ROSTER_FIELDS: Mapping[str, bool] = {
    "npi": True,
    "taxonomy": False,
    "name": False,
    "org_npi": False,
    "org_name": False,
    "clinic": False,
    "county": False,
    "cco": False,
    "in_network": False,
}
#: Fields of a member-assignment file.
ASSIGNMENT_FIELDS: Mapping[str, bool] = {
    "member_id": True,
    "cco": True,
    "clinic": False,
    "pcp_npi": False,
    "start": True,
    "end": False,
}
#: The column maps shipped in ``mappings/extracts/``.
ROSTER_MAP = "providers.toml"
ASSIGNMENT_MAP = "assignments.toml"
#: CCO identifier system when ``mappings/ccos.csv`` gives none (docs: helpers-common §7).
DEFAULT_CCO_SYSTEM = "https://oregon.gov/oha/cco-id"
ORG_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/organization-type"

_TAXONOMY_RE = re.compile(r"^[0-9A-Z]{9}X$")
_TRUE = frozenset({"true", "t", "y", "yes", "1", "in", "in-network"})
_FALSE = frozenset({"false", "f", "n", "no", "0", "out", "out-of-network"})

Resource = dict[str, Any]


def npi_valid(npi: str) -> bool:
    """Ten digits whose last is the Luhn check digit of the first nine prefixed with ``80840``
    (CMS, "Requirements for the NPI check digit")."""
    if len(npi) != 10 or not npi.isdigit():
        return False
    total = 0
    for position, char in enumerate(reversed("80840" + npi)):
        digit = int(char)
        if position % 2 == 1:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def _hash(text_: str, size: int = 6) -> str:
    return hashlib.blake2b(text_.encode("utf-8"), digest_size=size).hexdigest()


def _slug(text_: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text_.casefold()).strip("-")[:40]


def practitioner_id(npi: str) -> str:
    return f"npi-{npi}"


def organization_id(npi: str | None, name: str | None) -> str:
    """``npi-<NPI>``, else ``org-<slug of the name>-<hash of the name>`` (names that differ
    only in case and spacing are one organisation)."""
    if npi:
        return f"npi-{npi}"
    assert name
    key = _norm(name)
    slug = _slug(key)
    return f"org-{slug}-{_hash(key)}" if slug else f"org-{_hash(key)}"


def role_id(npi: str | None, org_id: str | None, cco: str | None) -> str:
    digest = _hash(f"{npi or ''}|{org_id or ''}|{cco or ''}")
    return f"role-{npi}-{digest}" if npi else f"role-{digest}"


def cco_org_id(cco: str) -> str:
    slug = _slug(cco)
    return f"cco-{slug}" if slug == cco.casefold() and slug else f"cco-{slug}-{_hash(cco)}".replace("--", "-")


def group_id(cco: str) -> str:
    """The member-assignment Group of one CCO: ``atr-<cco>``."""
    slug = _slug(cco)
    return f"atr-{slug}" if slug == cco.casefold() and slug else f"atr-{slug}-{_hash(cco)}".replace("--", "-")


def _norm(name: str) -> str:
    return " ".join(name.casefold().split())


@dataclass
class Converted:
    """The resources a file converts to, the data rows read and every problem found."""

    resources: list[Resource] = field(default_factory=list)
    rows: int = 0
    errors: list[LineError] = field(default_factory=list)


class _CcoTable:
    """CCO ids from ``mappings/ccos.csv``: a file may name a CCO by its id, an identifier value
    or its name (any case). Without a table every non-empty value is taken as given."""

    def __init__(self, ccos: Sequence[Cco]) -> None:
        self.ccos = {c.id: c for c in ccos}
        self.names: dict[str, str] = {}
        for c in ccos:
            for key in (c.id, c.name, *(v for _s, v in c.identifiers)):
                self.names.setdefault(key.casefold(), c.id)

    def lookup(self, raw: str) -> str | None:
        if not self.ccos:
            return raw
        return self.names.get(raw.casefold())

    def known(self) -> str:
        return ", ".join(sorted(self.ccos))

    def identifier(self, cco: str) -> tuple[str, str]:
        found = self.ccos.get(cco)
        if found is not None and found.identifiers:
            return found.identifiers[0]
        return DEFAULT_CCO_SYSTEM, cco

    def name(self, cco: str) -> str:
        found = self.ccos.get(cco)
        return found.name if found is not None else cco


class _Fields:
    """One row's fields, recording every problem at ``file:line (column …)``."""

    def __init__(self, row: Row, cmap: ColumnMap, errors: list[LineError]) -> None:
        self.row = row
        self.cmap = cmap
        self.errors = errors
        self.bad = False

    def fail(self, message: str, name: str | None = None) -> None:
        where = f" (column {self.cmap.columns.get(name, name)})" if name else ""
        self.errors.append(LineError(self.row.location, f"{message}{where}"))
        self.bad = True

    def text(self, name: str) -> str:
        return value(self.row, self.cmap, name) if name in self.cmap.fields else ""

    def npi(self, name: str) -> str:
        npi = self.text(name)
        if npi and not npi_valid(npi):
            self.fail(f"{npi!r} is not a valid NPI (10 digits with a check digit)", name)
            return ""
        return npi

    def cco(self, name: str, table: _CcoTable, *, required: bool) -> str:
        raw = self.text(name)
        if not raw:
            if required:
                self.fail("missing CCO", name)
            return ""
        cco = table.lookup(raw)
        if cco is None:
            self.fail(f"unknown CCO {raw!r} (known: {table.known()})", name)
            return ""
        return cco

    def date(self, name: str, *, required: bool) -> date | None:
        """A date in one of the map's ``date_formats``."""
        raw = self.text(name)
        if not raw:
            if required:
                self.fail("missing date", name)
            return None
        for fmt in self.cmap.date_formats:
            try:
                return datetime.strptime(raw, fmt).date()
            except ValueError:
                continue
        self.fail(f"{raw!r} is not a date in {', '.join(self.cmap.date_formats)}", name)
        return None


def _rows(path: Path, cmap: ColumnMap, out: Converted) -> Iterable[Row]:
    """The rows of ``path``; structural problems become errors of ``out`` (reading stops at a
    fatal one, such as a missing header column)."""
    problems: list[InvalidDataError] = []
    try:
        for row in read_rows(path, cmap, problems):
            out.rows += 1
            yield row
    except InvalidDataError as exc:
        problems.append(exc)
    out.errors.extend(LineError(p.location or str(path), p.message) for p in problems)


def _conflict(fields: _Fields, what: str, first: tuple[str, str], name: str | None = None) -> None:
    """``first`` = (the earlier value, its location)."""
    fields.fail(f"{what} differs from {first[0]!r} given at {first[1]}", name)


def _ref(rtype: str, rid: str, *, npi: str | None = None, display: str | None = None) -> Resource:
    ref: Resource = {"reference": f"{rtype}/{rid}", "type": rtype}
    if npi:
        ref["identifier"] = {"system": NPI_SYSTEM, "value": npi}
    if display:
        ref["display"] = display
    return ref


def _org_type(code: str, display: str) -> list[Resource]:
    return [{"coding": [{"system": ORG_TYPE_SYSTEM, "code": code, "display": display}]}]


# -- provider roster ----------------------------------------------------------------------------


@dataclass
class _Org:
    id: str
    npi: str | None
    name: str | None
    where: str
    counties: list[str] = field(default_factory=list)

    def resource(self) -> Resource:
        r: Resource = {"resourceType": "Organization", "id": self.id, "active": True}
        if self.npi:
            r["identifier"] = [{"system": NPI_SYSTEM, "value": self.npi}]
        r["type"] = _org_type("prov", "Healthcare Provider")
        if self.name:
            r["name"] = self.name
        if self.counties:
            r["address"] = [{"district": c} for c in self.counties]
        return r


@dataclass(frozen=True)
class _RosterRow:
    where: str
    npi: str
    taxonomy: str
    name: str
    org_npi: str
    #: the organisation's name, else the clinic's
    org_name: str
    clinic: str
    county: str
    cco: str
    in_network: bool | None


def _roster_row(f: _Fields, table: _CcoTable) -> _RosterRow | None:
    npi = f.npi("npi")
    taxonomy = f.text("taxonomy").upper()
    if taxonomy and not _TAXONOMY_RE.match(taxonomy):
        f.fail(f"{taxonomy!r} is not a NUCC taxonomy code (9 letters or digits, then X)", "taxonomy")
    org_npi = f.npi("org_npi")
    org_name = f.text("org_name")
    clinic = f.text("clinic")
    flag = f.text("in_network").casefold()
    in_network: bool | None = None
    if flag in _TRUE:
        in_network = True
    elif flag in _FALSE:
        in_network = False
    elif flag:
        f.fail(f"{flag!r} is not a network flag (map it in [values.in_network])", "in_network")
    cco = f.cco("cco", table, required=False)
    if not f.bad and not (npi or org_npi or org_name or clinic):
        f.fail("a row needs an NPI or an organisation (NPI, name or clinic)", "npi")
    if f.bad:
        return None
    return _RosterRow(
        f.row.location, npi, taxonomy, f.text("name"), org_npi, org_name or clinic, clinic, f.text("county"),
        cco, in_network,
    )  # fmt: skip


def convert_roster(path: Path, cmap: ColumnMap, *, ccos: Sequence[Cco] = ()) -> Converted:
    """A provider roster as Practitioner, Organization and PractitionerRole resources.

    An organisation is one per NPI (a row naming it by name only joins the organisation of that
    name with an NPI) or per name; an NPI named differently on two rows is an error. A role is
    one per (practitioner, organisation, CCO); two rows describing it differently are an error.
    """
    out = Converted()
    table = _CcoTable(ccos)
    rows: list[tuple[_Fields, _RosterRow]] = []
    for row in _rows(path, cmap, out):
        f = _Fields(row, cmap, out.errors)
        parsed = _roster_row(f, table)
        if parsed is not None:
            rows.append((f, parsed))
    npi_by_name: dict[str, str] = {}
    for _f, v in rows:
        if v.org_npi and v.org_name:
            npi_by_name.setdefault(_norm(v.org_name), v.org_npi)
    orgs: dict[str, _Org] = {}
    #: NPI -> (resource, name, where the name was given)
    practitioners: dict[str, tuple[Resource, str, str]] = {}
    roles: dict[str, tuple[Resource, str]] = {}
    for f, v in rows:
        org: _Org | None = None
        if v.org_npi or v.org_name:
            org_npi = v.org_npi or npi_by_name.get(_norm(v.org_name))
            oid = organization_id(org_npi, v.org_name)
            org = orgs.get(oid)
            if org is None:
                org = orgs[oid] = _Org(oid, org_npi or None, v.org_name or None, v.where)
            elif v.org_npi and v.org_name and org.name and _norm(v.org_name) != _norm(org.name):
                _conflict(f, f"name of organisation NPI {v.org_npi}", (org.name, org.where), "org_name")
                continue
            elif v.org_name and not org.name:
                org.name, org.where = v.org_name, v.where
            if v.county and v.county not in org.counties:
                org.counties.append(v.county)
        if v.npi:
            seen = practitioners.get(v.npi)
            if seen is None:
                prac: Resource = {
                    "resourceType": "Practitioner",
                    "id": practitioner_id(v.npi),
                    "active": True,
                    "identifier": [{"system": NPI_SYSTEM, "value": v.npi}],
                }
                seen = practitioners[v.npi] = (prac, "", v.where)
            if v.name and seen[1] and _norm(v.name) != _norm(seen[1]):
                _conflict(f, f"name of NPI {v.npi}", (seen[1], seen[2]), "name")
                continue
            if v.name and not seen[1]:
                seen[0]["name"] = [{"text": v.name}]
                practitioners[v.npi] = (seen[0], v.name, v.where)
            if v.taxonomy:
                quals = seen[0].setdefault("qualification", [])
                qual = {"code": {"coding": [{"system": NUCC_SYSTEM, "code": v.taxonomy}]}}
                if qual not in quals:
                    quals.append(qual)
        elif v.cco == "" and v.in_network is None:
            continue  # an organisation row with nothing to say about a network
        role = _roster_role(v, org)
        earlier = roles.get(role["id"])
        if earlier is not None and earlier[0] != role:
            f.fail(f"the same provider, organisation and CCO is described differently at {earlier[1]}")
            continue
        roles.setdefault(role["id"], (role, v.where))
    out.resources = [
        *(p for p, _n, _w in practitioners.values()),
        *(o.resource() for o in orgs.values()),
        *(r for r, _w in roles.values()),
    ]
    return out


def _roster_role(v: _RosterRow, org: _Org | None) -> Resource:
    """A PractitionerRole: the practitioner at the organisation for one CCO (without a
    practitioner: the organisation's own place in that CCO's network)."""
    role: Resource = {
        "resourceType": "PractitionerRole",
        "id": role_id(v.npi or None, org.id if org else None, v.cco or None),
        "active": True,
    }
    extensions: list[Resource] = []
    if v.in_network is not None:
        extensions.append({"url": EXT_IN_NETWORK, "valueBoolean": v.in_network})
    if v.cco:
        extensions.append({"url": EXT_CCO, "valueString": v.cco})
    if v.county:
        extensions.append({"url": EXT_COUNTY, "valueString": v.county})
    if extensions:
        role["extension"] = extensions
    if v.npi:
        role["practitioner"] = _ref("Practitioner", practitioner_id(v.npi), npi=v.npi, display=v.name or None)
    if org is not None:
        role["organization"] = _ref("Organization", org.id, npi=org.npi, display=v.clinic or org.name)
    if v.taxonomy:
        role["specialty"] = [{"coding": [{"system": NUCC_SYSTEM, "code": v.taxonomy}]}]
    return role


# -- member assignments -------------------------------------------------------------------------


def convert_assignments(
    path: Path, cmap: ColumnMap, *, member_system: str, ccos: Sequence[Cco] = ()
) -> Converted:
    """A member-assignment file as one ATR-style Group per CCO plus the resources its members
    reference (the CCO's Organization, clinics, PCPs and their PractitionerRoles)."""
    out = Converted()
    table = _CcoTable(ccos)
    members: dict[str, dict[str, Resource]] = {}
    refs: dict[tuple[str, str], Resource] = {}
    for row in _rows(path, cmap, out):
        f = _Fields(row, cmap, out.errors)
        member_id = f.text("member_id")
        if not member_id:
            f.fail("missing member id", "member_id")
        cco = f.cco("cco", table, required=True)
        clinic = f.text("clinic")
        clinic_npi = ""
        if clinic.isdigit() and len(clinic) == 10:
            clinic_npi = f.npi("clinic")
        pcp_npi = f.npi("pcp_npi")
        start = f.date("start", required=True)
        end = f.date("end", required=False)
        if start and end and end < start:
            f.fail(f"ends ({end.isoformat()}) before it starts ({start.isoformat()})", "end")
        if f.bad or start is None:
            continue
        org_id = None
        if clinic:
            org_id = organization_id(clinic_npi or None, None if clinic_npi else clinic)
            org: Resource = {"resourceType": "Organization", "id": org_id, "active": True}
            if clinic_npi:
                org["identifier"] = [{"system": NPI_SYSTEM, "value": clinic_npi}]
            else:
                org["name"] = clinic
            org["type"] = _org_type("prov", "Healthcare Provider")
            refs[("Organization", org_id)] = org
        if pcp_npi:
            refs[("Practitioner", practitioner_id(pcp_npi))] = {
                "resourceType": "Practitioner",
                "id": practitioner_id(pcp_npi),
                "active": True,
                "identifier": [{"system": NPI_SYSTEM, "value": pcp_npi}],
            }
        if pcp_npi and org_id:
            rid = role_id(pcp_npi, org_id, cco)
            refs[("PractitionerRole", rid)] = {
                "resourceType": "PractitionerRole",
                "id": rid,
                "active": True,
                "extension": [{"url": EXT_CCO, "valueString": cco}],
                "practitioner": _ref("Practitioner", practitioner_id(pcp_npi), npi=pcp_npi),
                "organization": _ref(
                    "Organization", org_id, npi=clinic_npi or None, display=None if clinic_npi else clinic
                ),
            }
            provider = _ref("PractitionerRole", rid)
        elif pcp_npi:
            provider = _ref("Practitioner", practitioner_id(pcp_npi), npi=pcp_npi)
        elif org_id:
            provider = _ref(
                "Organization", org_id, npi=clinic_npi or None, display=None if clinic_npi else clinic
            )
        else:
            provider = None
        period = {"start": start.isoformat()}
        if end is not None:
            period["end"] = end.isoformat()
        member: Resource = {}
        if provider is not None:
            member["extension"] = [{"url": ATR_ATTRIBUTED_PROVIDER, "valueReference": provider}]
        member["entity"] = {"type": "Patient", "identifier": {"system": member_system, "value": member_id}}
        member["period"] = period
        key = "|".join(
            (member_id, period["start"], period.get("end", ""), provider["reference"] if provider else "")
        )
        members.setdefault(cco, {})[key] = member
    if out.errors:
        return out
    for cco in sorted(members):
        system, ident = table.identifier(cco)
        org_id = cco_org_id(cco)
        refs[("Organization", org_id)] = {
            "resourceType": "Organization",
            "id": org_id,
            "active": True,
            "identifier": [{"system": system, "value": ident}],
            "type": _org_type("pay", "Payer"),
            "name": table.name(cco),
        }
        listed = [members[cco][k] for k in sorted(members[cco])]
        out.resources.append(
            {
                "resourceType": "Group",
                "id": group_id(cco),
                "active": True,
                "type": "person",
                "actual": True,
                "name": f"Member assignment: {table.name(cco)}",
                "managingEntity": {
                    "reference": f"Organization/{org_id}",
                    "type": "Organization",
                    "identifier": {"system": system, "value": ident},
                    "display": table.name(cco),
                },
                "quantity": len(listed),
                "member": listed,
            }
        )
    out.resources.extend(refs[key] for key in sorted(refs))
    return out


# -- loading -----------------------------------------------------------------------------------


def _parsed(resources: Iterable[Resource]) -> list[ParsedResource]:
    items = []
    for r in resources:
        assert ID_RE.match(r["id"]), r["id"]  # ids are built above from checked parts
        items.append(ParsedResource(r["resourceType"], r["id"], r))
    return items


def _line(location: str) -> int:
    tail = location.rpartition(":")[2]
    return int(tail) if tail.isdigit() else 0


def _raise_errors(path: Path, errors: list[LineError]) -> None:
    if errors:
        ordered = sorted(errors, key=lambda e: _line(e.location))
        lines = "\n".join(f"{e.location}: {e.message}" for e in ordered)
        raise InvalidDataError(f"{path}: {len(errors)} problem(s); nothing was written:\n{lines}")


def _existing(store: Store, source: str, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which of ``keys`` (type, id) the source holds a current version of."""
    by_type: dict[str, list[str]] = {}
    for rtype, rid in keys:
        by_type.setdefault(rtype, []).append(rid)
    found: set[tuple[str, str]] = set()
    sql = text(
        "SELECT rid FROM resources WHERE source = :source AND rtype = :rtype AND rid IN :rids "
        "AND superseded_at IS NULL AND deleted = 0"
    ).bindparams(bindparam("rids", expanding=True))
    with store.read() as conn:
        for rtype, rids in by_type.items():
            for start in range(0, len(rids), 500):
                chunk = rids[start : start + 500]
                found.update(
                    (rtype, rid)
                    for rid in conn.execute(sql, {"source": source, "rtype": rtype, "rids": chunk}).scalars()
                )
    return found


@dataclass(frozen=True)
class LoadResult:
    """A loaded file: its data rows, the resources they became (written or already held) and
    what changed in the store."""

    rows: int
    resources: int
    stats: WriteStats


def _write(store: Store, items: list[ParsedResource], source: str, clock: Clock) -> WriteStats:
    # One batch, one transaction: all of the file or nothing.
    result = ingest_items(
        store, items, source, batch_size=max(1, len(items)), clock=clock, result=IngestResult()
    )
    if result.stats.created or result.stats.updated:
        store.analyze()
    return result.stats


def load_roster(
    store: Store,
    path: Path,
    source: str,
    *,
    cmap: ColumnMap,
    ccos: Sequence[Cco] = (),
    clock: Clock = utc_now,
) -> LoadResult:
    """Convert and store a provider roster under ``source``.
    Raises :class:`InvalidDataError` listing every bad row (``file:line``) and writes nothing
    when any row is bad."""
    source = check_source(source)
    converted = convert_roster(path, cmap, ccos=ccos)
    _raise_errors(path, converted.errors)
    stats = _write(store, _parsed(converted.resources), source, clock)
    return LoadResult(converted.rows, len(converted.resources), stats)


def load_assignments(
    store: Store,
    path: Path,
    source: str,
    *,
    cmap: ColumnMap,
    ccos: Sequence[Cco] = (),
    clock: Clock = utc_now,
) -> LoadResult:
    """Convert and store a member-assignment file under ``source`` (all or nothing, as
    :func:`load_roster`). Referenced resources the source already holds are left as they are."""
    source = check_source(source)
    converted = convert_assignments(path, cmap, member_system=store.member_system, ccos=ccos)
    _raise_errors(path, converted.errors)
    keys = [(r["resourceType"], r["id"]) for r in converted.resources if r["resourceType"] != "Group"]
    held = _existing(store, source, keys)
    resources = [
        r
        for r in converted.resources
        if r["resourceType"] == "Group" or (r["resourceType"], r["id"]) not in held
    ]
    stats = _write(store, _parsed(resources), source, clock)
    stats.unchanged += len(converted.resources) - len(resources)
    return LoadResult(converted.rows, len(converted.resources), stats)


_OPTIONS = frozenset({"status", "source"})


def _checked(cmap: ColumnMap) -> ColumnMap:
    unknown = set(cmap.options) - _OPTIONS
    if unknown:
        raise MappingsError(
            f"unknown [options] {sorted(unknown)}; allowed: {sorted(_OPTIONS)}", location=f"{cmap.path}:1"
        )
    return cmap


def roster_map(path: Path) -> ColumnMap:
    """The column map of a provider roster (``mappings/extracts/providers.toml`` by default)."""
    return _checked(load_column_map(path, required=ROSTER_FIELDS))


def assignment_map(path: Path) -> ColumnMap:
    """The column map of a member-assignment file (``mappings/extracts/assignments.toml``)."""
    return _checked(load_column_map(path, required=ASSIGNMENT_FIELDS))


__all__ = [
    "ASSIGNMENT_FIELDS",
    "ROSTER_FIELDS",
    "Converted",
    "LoadResult",
    "assignment_map",
    "convert_assignments",
    "convert_roster",
    "load_assignments",
    "load_roster",
    "npi_valid",
    "roster_map",
]
