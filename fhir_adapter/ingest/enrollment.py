"""Eligibility (enrollment) extracts → FHIR R4 ``Patient`` and ``Coverage`` resources.

OHA scores the metric from the enrollment it holds (spec §1, §3 "Enrollment and attribution"):
834-derived files with CCO, benefit package, county and REALD fields. Each row is one
enrollment span of one member, read through a column map kept as data
(``mappings/extracts/enrollment.toml``; :mod:`fhir_adapter.ingest.columns`). The rows become

* one ``Patient`` per member (FHIR R4 Patient): ``id`` derived from the member id
  (:func:`patient_id`), ``identifier`` with the member-id system from settings (type ``MB``,
  v2-0203), ``birthDate``, ``gender``, ``deceasedDateTime``, ``address.district`` = county and
  the REALD values as the project's Patient extensions (valueString; :data:`REALD`, UNVERIFIED:
  OHA publishes no FHIR profile for REALD);
* one ``Coverage`` per span (FHIR R4 Coverage): ``status = active``, ``beneficiary`` → the
  Patient, ``payor.identifier`` = the CCO id (system ``https://oregon.gov/oha/cco-id``,
  mappings/ccos.csv), ``period``, the benefit package in ``class`` (type ``plan``,
  coverage-class), ``subscriberId`` = the member id.

A span's ``id`` is derived from the member and the extract's span id, else from the member, CCO
and start date, so a re-load with a changed end date or benefit package makes a new *version*
of the same Coverage, and ``--as-of`` before the load still sees the old one (DESIGN.md §1).

The load is a snapshot **per member**: Coverage of this source for a member in the file that is
not in the file any more is deleted (a tombstone version); with ``full`` also members absent
from the file lose their Patient and Coverage. Spans with a benefit package listed in
``[options] excluded_benefit_packages`` (status ``candidate``) are skipped and counted.

Conversion (:func:`convert_enrollment`) is pure; :func:`tombstones` and :func:`load_enrollment`
read and write the store. A file is all or nothing: every bad row is reported and nothing is
written unless the whole file is good.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy import select

from fhir_adapter.errors import InvalidDataError, MappingsError
from fhir_adapter.fhir.dates import to_micros
from fhir_adapter.fhir.resources import ID_RE
from fhir_adapter.ingest.columns import ColumnMap, Row, RowFields, check_options, read_rows, rows_failed
from fhir_adapter.ingest.runner import Clock, check_source, ingest_items, utc_now
from fhir_adapter.store.db import ParsedResource, Store, WriteStats
from fhir_adapter.store.extract import REALD
from fhir_adapter.store.schema import f_coverage, resources
from fhir_adapter.store.sources import check_kind, write_source_status

#: Every field of an eligibility extract; True = the column map must name it.
ENROLLMENT_FIELDS: Mapping[str, bool] = {
    "member_id": True,
    "cco": True,
    "span_start": True,
    "span_end": True,
    "birth_date": True,
    "sex": False,
    "county": False,
    "benefit_package": False,
    "span_id": False,
    "death_date": False,
    "reald_race_ethnicity": False,
    "reald_language": False,
    "reald_disability": False,
}
#: The column map shipped in ``mappings/``, relative to the mappings folder.
DEFAULT_MAP = Path("extracts") / "enrollment.toml"
#: CCO identifier system (mappings/ccos.csv; the project's own, UNVERIFIED).
CCO_SYSTEM = "https://oregon.gov/oha/cco-id"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
COVERAGE_CLASS = "http://terminology.hl7.org/CodeSystem/coverage-class"
SUBSCRIBER_RELATIONSHIP = "http://terminology.hl7.org/CodeSystem/subscriber-relationship"
#: FHIR R4 AdministrativeGender (required binding).
GENDERS = frozenset({"male", "female", "other", "unknown"})
_OPTIONS: Mapping[str, type | tuple[type, ...]] = {
    "excluded_benefit_packages": list,
    "excluded_benefit_packages_status": str,
    "excluded_benefit_packages_source": str,
    "open_end_from": (str, date),
    "cco_system": str,
}


def patient_id(member_id: str) -> str:
    """The ``Patient.id`` of a member: the member id itself when it is a valid FHIR id
    (``[A-Za-z0-9\\-\\.]{1,64}``), else ``m-`` and a SHA-256 prefix of it. Deterministic, so the
    eligibility and claims loaders name the same member the same way."""
    if ID_RE.match(member_id):
        return member_id
    return "m-" + hashlib.sha256(member_id.encode()).hexdigest()[:40]


def member_identifier(system: str, member_id: str) -> dict[str, Any]:
    """The member-id ``Identifier`` (type ``MB`` member number, HL7 v2-0203), which the person
    index links on (spec §3 "Identity")."""
    return {
        "type": {"coding": [{"system": V2_0203, "code": "MB"}]},
        "system": system,
        "value": member_id,
    }


def short_hash(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class EnrollmentOptions:
    """``[options]`` of an enrollment column map."""

    excluded_packages: frozenset[str] = frozenset()
    #: end dates on or after this day are sentinels for "open-ended" (e.g. 9999-12-31)
    open_end_from: date | None = None
    cco_system: str = CCO_SYSTEM

    @classmethod
    def from_map(cls, cmap: ColumnMap) -> EnrollmentOptions:
        check_options(cmap, _OPTIONS)
        where = f"{cmap.path}:1"
        packages = cmap.options.get("excluded_benefit_packages", [])
        if not all(isinstance(p, str) for p in packages):
            raise MappingsError("[options] excluded_benefit_packages must list texts", location=where)
        open_end = cmap.options.get("open_end_from")
        if isinstance(open_end, str):
            try:
                open_end = date.fromisoformat(open_end)
            except ValueError:
                raise MappingsError(
                    "[options] open_end_from must be a date (YYYY-MM-DD)", location=where
                ) from None
        return cls(
            excluded_packages=frozenset(p.strip().upper() for p in packages),
            open_end_from=open_end,
            cco_system=str(cmap.options.get("cco_system", CCO_SYSTEM)),
        )


@dataclass
class _Member:
    member_id: str
    birth: date | None
    birth_at: str
    #: (span start, row number) of the row whose demographics are kept: the latest span
    rank: tuple[date, int]
    values: dict[str, str]
    death: date | None


@dataclass
class Enrollment:
    """The resources one eligibility file converts to, and what was skipped."""

    patients: dict[str, dict[str, Any]] = field(default_factory=dict)
    coverages: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Coverage id → Patient id
    owner: dict[str, str] = field(default_factory=dict)
    rows: int = 0
    #: benefit package → spans skipped because the package does not count
    skipped: Counter[str] = field(default_factory=Counter)
    #: CCO ids not listed in mappings/ccos.csv (spans kept; the engine ignores them)
    unknown_ccos: Counter[str] = field(default_factory=Counter)
    #: the latest span start in the file
    last_data: date | None = None
    errors: list[InvalidDataError] = field(default_factory=list)


_DEMOGRAPHICS = ("sex", "county", "reald_race_ethnicity", "reald_language", "reald_disability")


def convert_enrollment(
    rows: Iterable[Row],
    cmap: ColumnMap,
    *,
    member_system: str,
    known_ccos: Collection[str] | None = None,
    options: EnrollmentOptions | None = None,
) -> Enrollment:
    """Convert eligibility rows; problems are collected in ``Enrollment.errors`` (all of them,
    at ``file:line``), and the resources are only meaningful when there are none."""
    opts = options or EnrollmentOptions.from_map(cmap)
    out = Enrollment()
    members: dict[str, _Member] = {}
    span_lines: dict[str, str] = {}
    for number, row in enumerate(rows):
        out.rows += 1
        f = RowFields(row, cmap)
        member_id = f.text("member_id", required="member id")
        cco = f.text("cco", required="CCO id")
        start = f.date("span_start", required=True)
        end = f.date("span_end")
        birth = f.date("birth_date")
        death = f.date("death_date")
        sex = f.text("sex").lower()
        if sex and sex not in GENDERS:
            f.fail(f"sex {sex!r} is not one of {sorted(GENDERS)} (translate it in [values.sex])", "sex")
        if end is not None and opts.open_end_from is not None and end >= opts.open_end_from:
            end = None
        if start is not None and end is not None and end < start:
            f.fail(f"the span ends ({end}) before it starts ({start})", "span_end")
        package = f.text("benefit_package")
        span_id = f.text("span_id")
        member = members.get(member_id)
        if member is not None and birth is not None and member.birth is not None and birth != member.birth:
            f.fail(f"birth date {birth} differs from {member.birth} at {member.birth_at}", "birth_date")
        if f.errors or start is None:
            out.errors.extend(f.errors)
            continue
        values = {name: f.text(name) for name in _DEMOGRAPHICS}
        values["sex"] = sex
        rank = (start, number)
        if member is None:
            member = members[member_id] = _Member(member_id, birth, row.location, rank, values, death)
        else:
            if member.birth is None and birth is not None:
                member.birth, member.birth_at = birth, row.location
            if rank > member.rank:
                member.rank, member.values = rank, values
            member.death = death or member.death
        if package and package.upper() in opts.excluded_packages:
            out.skipped[package] += 1
            continue
        pid = patient_id(member_id)
        key = span_id or f"{cco}|{start.isoformat()}"
        cid = "cov-" + short_hash(member_id, key)
        if cid in span_lines:
            what = f"span id {span_id!r}" if span_id else f"CCO {cco} and start date {start}"
            out.errors.append(row.error(f"duplicate span: same member, {what} as {span_lines[cid]}"))
            continue
        span_lines[cid] = row.location
        if known_ccos is not None and cco not in known_ccos:
            out.unknown_ccos[cco] += 1
        out.coverages[cid] = _coverage(cid, pid, member_id, cco, start, end, package, opts.cco_system)
        out.owner[cid] = pid
        out.last_data = start if out.last_data is None or start > out.last_data else out.last_data
    for member in members.values():
        pid = patient_id(member.member_id)
        out.patients[pid] = _patient(pid, member, member_system)
    return out


def _patient(pid: str, member: _Member, member_system: str) -> dict[str, Any]:
    r: dict[str, Any] = {
        "resourceType": "Patient",
        "id": pid,
        "identifier": [member_identifier(member_system, member.member_id)],
    }
    v = member.values
    extensions = [
        {"url": REALD + name, "valueString": v[f"reald_{name.replace('-', '_')}"]}
        for name in ("race-ethnicity", "language", "disability")
        if v[f"reald_{name.replace('-', '_')}"]
    ]
    if extensions:
        r["extension"] = extensions
    if v["sex"]:
        r["gender"] = v["sex"]
    if member.birth is not None:
        r["birthDate"] = member.birth.isoformat()
    if member.death is not None:
        r["deceasedDateTime"] = member.death.isoformat()
    if v["county"]:
        r["address"] = [{"use": "home", "district": v["county"]}]
    return r


def _coverage(
    cid: str, pid: str, member_id: str, cco: str, start: date, end: date | None, package: str, cco_system: str
) -> dict[str, Any]:
    period = {"start": start.isoformat()}
    if end is not None:
        period["end"] = end.isoformat()
    r: dict[str, Any] = {
        "resourceType": "Coverage",
        "id": cid,
        "status": "active",
        "subscriberId": member_id,
        "beneficiary": {"reference": f"Patient/{pid}"},
        "relationship": {"coding": [{"system": SUBSCRIBER_RELATIONSHIP, "code": "self"}]},
        "period": period,
        "payor": [{"identifier": {"system": cco_system, "value": cco}}],
    }
    if package:
        r["class"] = [
            {
                "type": {"coding": [{"system": COVERAGE_CLASS, "code": "plan"}]},
                "value": package,
                "name": package,
            }
        ]
    return r


# -- the store ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tombstones:
    coverages: tuple[str, ...]
    patients: tuple[str, ...]

    def items(self) -> list[ParsedResource]:
        return [
            ParsedResource(rtype, rid, {"resourceType": rtype, "id": rid}, deleted=True)
            for rtype, rids in (("Coverage", self.coverages), ("Patient", self.patients))
            for rid in rids
        ]


def tombstones(store: Store, source: str, enrollment: Enrollment, *, full: bool) -> Tombstones:
    """What the snapshot deletes: current Coverage of ``source`` for members in the file that the
    file no longer lists; with ``full`` also every Patient (and its Coverage) of ``source``
    absent from the file."""
    current = (
        select(resources.c.rid, f_coverage.c.pid)
        .select_from(resources.join(f_coverage, f_coverage.c.rkey == resources.c.rkey))
        .where(
            resources.c.source == source,
            resources.c.rtype == "Coverage",
            resources.c.superseded_at.is_(None),
            resources.c.deleted == 0,
        )
        .distinct()
    )
    people = select(resources.c.rid).where(
        resources.c.source == source,
        resources.c.rtype == "Patient",
        resources.c.superseded_at.is_(None),
        resources.c.deleted == 0,
    )
    with store.read() as conn:
        spans = [(str(rid), pid) for rid, pid in conn.execute(current)]
        patients = [str(rid) for (rid,) in conn.execute(people)] if full else []
    in_file = enrollment.patients
    gone_coverages = sorted(
        {rid for rid, pid in spans if rid not in enrollment.coverages and (full or pid in in_file)}
    )
    gone_patients = sorted(pid for pid in patients if pid not in in_file)
    return Tombstones(tuple(gone_coverages), tuple(gone_patients))


def resources_of(enrollment: Enrollment) -> list[ParsedResource]:
    """The file's Patients and Coverages, ready to store (Patients first)."""
    items = [ParsedResource("Patient", pid, r) for pid, r in sorted(enrollment.patients.items())]
    items += [ParsedResource("Coverage", cid, r) for cid, r in sorted(enrollment.coverages.items())]
    return items


@dataclass
class EnrollmentLoad:
    """What one ``load-enrollment`` did."""

    source: str
    path: Path
    enrollment: Enrollment
    removed: Tombstones
    stats: WriteStats

    def summary(self) -> str:
        e = self.enrollment
        skipped = sum(e.skipped.values())
        parts = [
            f"{self.path}: {e.rows} rows, {len(e.patients)} members, {len(e.coverages)} spans",
            f"{skipped} spans skipped"
            + (f" ({', '.join(f'{k} {v}' for k, v in sorted(e.skipped.items()))})" if skipped else ""),
            f"{len(self.removed.coverages)} spans and {len(self.removed.patients)} members removed",
        ]
        s = self.stats
        line = "; ".join(parts) + (
            f"; store: {s.created} created, {s.updated} updated, {s.unchanged} unchanged, {s.deleted} deleted"
        )
        if e.unknown_ccos:
            unknown = ", ".join(f"{k} ({v})" for k, v in sorted(e.unknown_ccos.items()))
            line += f"\nwarning: CCO ids not in mappings/ccos.csv (those spans never count): {unknown}"
        return line


def load_enrollment(
    store: Store,
    path: Path,
    cmap: ColumnMap,
    source: str,
    *,
    full: bool = False,
    known_ccos: Collection[str] | None = None,
    clock: Clock = utc_now,
    reader: Callable[[Path, ColumnMap, list[InvalidDataError]], Iterable[Row]] = read_rows,
) -> EnrollmentLoad:
    """Read, convert and store one eligibility file under ``source`` as a snapshot per member
    (``full``: of the whole source), then record the source's status. Raises
    :class:`InvalidDataError` listing every bad row, having written nothing, when any row is bad.
    ``reader`` yields the file's rows in our field names (CSV/fixed-width by default; X12 834:
    :mod:`fhir_adapter.ingest.x834`), recording bad rows in the list it is given."""
    source = check_source(source)
    options = EnrollmentOptions.from_map(cmap)
    check_kind(store, source, "enrollment")
    read_errors: list[InvalidDataError] = []
    enrollment = convert_enrollment(
        reader(path, cmap, read_errors),
        cmap,
        member_system=store.member_system,
        known_ccos=known_ccos,
        options=options,
    )
    if read_errors or enrollment.errors:
        raise rows_failed(path, [*read_errors, *enrollment.errors])
    removed = tombstones(store, source, enrollment, full=full)
    items = resources_of(enrollment) + removed.items()
    # One batch: the whole snapshot is one transaction.
    result = ingest_items(store, items, source, batch_size=max(1, len(items)), clock=clock)
    write_source_status(
        store,
        source,
        "enrollment",
        loaded_at=to_micros(clock()),
        last_data=enrollment.last_data,
        note=f"{path.name}: {len(enrollment.patients)} members, {len(enrollment.coverages)} spans",
    )
    if result.stats.created or result.stats.updated or result.stats.deleted:
        store.analyze()
    return EnrollmentLoad(source, path, enrollment, removed, result.stats)


__all__ = [
    "CCO_SYSTEM",
    "DEFAULT_MAP",
    "ENROLLMENT_FIELDS",
    "Enrollment",
    "EnrollmentLoad",
    "EnrollmentOptions",
    "Tombstones",
    "convert_enrollment",
    "load_enrollment",
    "member_identifier",
    "patient_id",
    "resources_of",
    "tombstones",
]
