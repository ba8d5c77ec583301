"""X12 834 (005010X220A1 Benefit Enrollment and Maintenance) files → eligibility rows.

The rows are those of the CSV route (:data:`~fhir_adapter.ingest.enrollment.ENROLLMENT_FIELDS`),
so :func:`~fhir_adapter.ingest.enrollment.convert_enrollment` turns them into the same FHIR R4
``Patient`` and ``Coverage`` resources and :func:`~fhir_adapter.ingest.enrollment.load_enrollment`
writes them all or nothing. Segments are split by ``pyx12`` (:class:`pyx12.x12file.X12Reader`,
which also reports envelope faults such as a wrong ``SE01`` count); the loops are walked here.
Element names follow the 005010X220A1 implementation guide (UNVERIFIED against the guide's text,
which is not public; element positions per the X12 834 segment definitions):

* loop 2000 ``INS``: ``INS01`` subscriber indicator, ``INS03`` maintenance type (``021`` add,
  ``001`` change, ``024`` cancellation/termination, ``025`` reinstatement, ``030`` audit),
  ``INS11``/``INS12`` date of death; ``REF*0F`` subscriber id; ``DTP*357`` eligibility end;
* loop 2100A ``NM1*IL``: ``NM109`` member id when ``NM108`` is one of ``[options]
  member_id_qualifiers`` (default ``MI``, ``ZZ``); a subscriber (``INS01 = Y``) without it falls
  back to ``REF*0F``; a dependent (``INS01 = N``, e.g. a child) is its own member and needs it;
  ``N4``: ``N406`` county when ``N405 = CY``; ``DMG``: ``DMG02`` birth date (``DMG01 = D8``,
  CCYYMMDD, required), ``DMG03`` sex (M/F/U through ``[values.sex]``); ``LUI``: ``LUI03`` (else
  ``LUI02``) language;
* loop 2300 ``HD``: one span per loop; ``HD04`` plan (else ``HD03`` insurance line) is the
  benefit package; ``DTP*348`` benefit begin (required), ``DTP*349`` benefit end; the CCO is the
  ``REF`` whose qualifier is ``[options] cco_ref_qualifier`` (default ``1L``; site-specific, status
  candidate), in the loop, else in loop 2000, translated by ``[values.cco]``.

Maintenance type (``HD01``, else ``INS03``): ``021``/``001``/``025``/``030`` take the span as
given (a change is a new version of the same Coverage, whose id is member + CCO + line + begin
date); ``024`` closes the span at ``DTP*349``, else at the member's ``DTP*357``, and is an error
without either. REALD race/ethnicity and disability are not in an 834 and stay empty (``DMG05``
race codes are not REALD categories). Every fault is an :class:`InvalidDataError` at
``file:segment N`` (N = position in the file, ``ISA`` = 1) naming the element.
"""

from __future__ import annotations

import tomllib
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pyx12.errors
import pyx12.x12file

from fhir_adapter.errors import InvalidDataError, MappingsError
from fhir_adapter.ingest.columns import ColumnMap, Row
from fhir_adapter.ingest.enrollment import ENROLLMENT_FIELDS, EnrollmentLoad, load_enrollment
from fhir_adapter.ingest.runner import Clock, utc_now
from fhir_adapter.store.db import Store

#: The 834 map shipped in ``mappings/``, relative to the mappings folder.
DEFAULT_834_MAP = Path("extracts") / "enrollment-834.toml"
SUFFIXES = frozenset({".834", ".x12", ".edi"})
MAINTENANCE = {
    "001": "change",
    "021": "addition",
    "024": "termination",
    "025": "reinstatement",
    "030": "audit",
}
_ENROLLMENT_OPTIONS = ("excluded_benefit_packages", "open_end_from", "cco_system")
_OPTIONS: Mapping[str, type | tuple[type, ...]] = {
    "cco_ref_qualifier": str,
    "cco_ref_qualifier_status": str,
    "cco_ref_qualifier_source": str,
    "member_id_qualifiers": list,
    "excluded_benefit_packages": list,
    "excluded_benefit_packages_status": str,
    "excluded_benefit_packages_source": str,
    "open_end_from": (str, date),
    "cco_system": str,
}
_VALUES = ("cco", "sex", "county", "reald_language")


@dataclass(frozen=True)
class X834Map:
    """An 834 map: which ``REF`` names the CCO, which ``NM108`` qualifiers carry the member id,
    and ``cmap``, the column map :func:`convert_enrollment` reads the rows through."""

    cmap: ColumnMap
    cco_ref_qualifier: str = "1L"
    member_id_qualifiers: tuple[str, ...] = ("MI", "ZZ")


def load_834_map(path: Path) -> X834Map:
    """Load ``[options]`` and ``[values.<field>]`` of an 834 map; unknown keys are errors."""
    where = f"{path}:1"
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MappingsError("834 map not found", location=where) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MappingsError(f"cannot read 834 map: {exc}", location=where) from None
    except tomllib.TOMLDecodeError as exc:
        raise MappingsError(f"not TOML: {exc}", location=f"{path}:{getattr(exc, 'lineno', 1)}") from None
    unknown = set(raw) - {"format", "options", "values"}
    if unknown or raw.get("format", "x12-834") != "x12-834":
        raise MappingsError("an 834 map has format = 'x12-834', [options] and [values] only", location=where)
    options = raw.get("options", {})
    values = raw.get("values", {})
    if not isinstance(options, dict) or not isinstance(values, dict):
        raise MappingsError("[options] and [values] must be tables", location=where)
    bad = set(options) - set(_OPTIONS)
    bad_type = [k for k, kind in _OPTIONS.items() if k in options and not isinstance(options[k], kind)]
    if bad or bad_type:
        raise MappingsError(
            f"unknown or mistyped [options] {sorted(bad | set(bad_type))}; allowed: {sorted(_OPTIONS)}",
            location=where,
        )
    if set(values) - set(_VALUES) or not all(
        isinstance(m, dict) and all(isinstance(v, str) for v in m.values()) for m in values.values()
    ):
        raise MappingsError(f"[values.<field>] must map texts to texts for {list(_VALUES)}", location=where)
    qualifiers = options.get("member_id_qualifiers", ["MI", "ZZ"])
    if not qualifiers or not all(isinstance(q, str) for q in qualifiers):
        raise MappingsError("[options] member_id_qualifiers must list NM108 codes", location=where)
    cmap = ColumnMap(
        path=path,
        format="csv",
        columns={name: name for name in ENROLLMENT_FIELDS},
        positions={},
        values={"sex": {"M": "male", "F": "female", "U": "unknown"}}
        | {k: dict(v) for k, v in values.items()},
        date_formats=("%Y-%m-%d",),
        options={k: v for k, v in options.items() if k.startswith(_ENROLLMENT_OPTIONS)},
    )
    return X834Map(cmap, str(options.get("cco_ref_qualifier", "1L")), tuple(qualifiers))


def is_834_file(path: Path) -> bool:
    """An 834 by suffix (``.834``, ``.x12``, ``.edi``) or by content (``ISA`` first)."""
    if path.suffix.lower() in SUFFIXES:
        return True
    try:
        with path.open("rb") as fh:
            head = fh.read(64)
    except OSError:
        return False
    return head.lstrip(b"\xef\xbb\xbf \r\n\t").startswith(b"ISA")


# -- the reader --------------------------------------------------------------------------------
@dataclass
class _Coverage:
    at: int
    maintenance: str
    line: str
    plan: str
    start: tuple[str, int] | None = None
    end: tuple[str, int] | None = None
    refs: dict[str, str] = field(default_factory=dict)


@dataclass
class _Member:
    at: int
    subscriber: bool
    maintenance: str
    death: str = ""
    refs: dict[str, str] = field(default_factory=dict)
    eligibility_end: tuple[str, int] | None = None
    in_2100a: bool = False
    nm1_at: int | None = None
    member_id: str = ""
    dmg_at: int | None = None
    birth: str = ""
    sex: str = ""
    county: str = ""
    language: str = ""
    coverages: list[_Coverage] = field(default_factory=list)


class _Reader:
    def __init__(self, path: Path, m: X834Map, errors: list[InvalidDataError]) -> None:
        self.path, self.map, self.errors = path, m, errors

    def fail(self, at: int, message: str, element: str) -> None:
        self.errors.append(InvalidDataError(f"{message} ({element})", location=f"{self.path}:segment {at}"))

    def day(self, text: str | None, at: int, element: str, fmt: str = "D8", fmt_element: str = "") -> str:
        """A CCYYMMDD date (format qualifier ``D8``) as ISO text; '' and an error when absent or
        malformed."""
        if fmt != "D8":
            self.fail(at, f"date format qualifier {fmt!r} is not D8", fmt_element)
            return ""
        try:
            return datetime.strptime(text or "", "%Y%m%d").date().isoformat()
        except ValueError:
            self.fail(at, f"{text!r} is not a date (CCYYMMDD)" if text else "missing date", element)
            return ""

    def rows(self, member: _Member) -> Iterator[Row]:
        member_id = member.member_id or (member.refs.get("0F", "") if member.subscriber else "")
        ok = member.maintenance in MAINTENANCE  # else reported at the INS segment
        if not member_id:
            where = member.nm1_at or member.at
            self.fail(where, "missing member id: no NM1*IL with NM108 in "
                      f"{list(self.map.member_id_qualifiers)}" + (" nor REF*0F" if member.subscriber else ""), "NM109")  # fmt: skip
            ok = False
        if member.dmg_at is None:
            self.fail(member.nm1_at or member.at, "no DMG segment in loop 2100A: missing birth date", "DMG02")
            ok = False
        elif not member.birth:
            ok = False  # reported where the DMG was read
        if not member.coverages:
            self.fail(member.at, "member has no coverage (loop 2300)", "HD")
        for cov in member.coverages:
            maintenance = cov.maintenance or member.maintenance
            start = cov.start[0] if cov.start else ""
            if cov.start is None:
                self.fail(cov.at, "missing benefit begin date (DTP*348)", "DTP03")
            end = cov.end[0] if cov.end else ""
            if maintenance == "024" and not end:
                end = member.eligibility_end[0] if member.eligibility_end else ""
                if not end:
                    self.fail(cov.at, "termination (024) without an end date (DTP*349 or DTP*357)", "DTP03")
            q = self.map.cco_ref_qualifier
            cco = cov.refs.get(q) or member.refs.get(q, "")
            if not cco:
                self.fail(cov.at, f"missing CCO: no REF*{q} in loop 2300 or 2000", "REF02")
            known = not cov.maintenance or cov.maintenance in MAINTENANCE  # else reported at the HD
            if not (ok and known and start and cco and (end or maintenance != "024")):
                continue
            yield Row(
                f"{self.path}:segment {cov.at}",
                {
                    "member_id": member_id,
                    "cco": cco,
                    "span_start": start,
                    "span_end": end,
                    "birth_date": member.birth,
                    "sex": member.sex,
                    "county": member.county,
                    "benefit_package": cov.plan or cov.line,
                    "span_id": f"x834|{cco}|{cov.line}|{start}",
                    "death_date": member.death,
                    "reald_race_ethnicity": "",
                    "reald_language": member.language,
                    "reald_disability": "",
                },
            )

    def read(self) -> Iterator[Row]:
        try:
            handle = self.path.open(encoding="utf-8-sig", newline="")
        except OSError as exc:
            raise InvalidDataError(
                f"cannot read: {exc.strerror or exc}", location=f"{self.path}:segment 1"
            ) from None
        with handle:
            try:
                reader = pyx12.x12file.X12Reader(handle)
            except pyx12.errors.X12Error as exc:
                raise InvalidDataError(
                    f"not an X12 interchange: {exc}", location=f"{self.path}:segment 1"
                ) from None
            except UnicodeDecodeError as exc:
                raise InvalidDataError(
                    f"not UTF-8/ASCII text: {exc.reason}", location=f"{self.path}"
                ) from None
            yield from self._walk(reader)

    def _walk(self, reader: Any) -> Iterator[Row]:
        member: _Member | None = None
        cov: _Coverage | None = None
        in_ts = skip = False
        n = 0
        try:
            for n, seg in enumerate(reader, start=1):
                sid = seg.get_seg_id()

                def v(ref: str, seg: Any = seg) -> str:
                    return str(seg.get_value(ref) or "").strip()

                for _kind, _code, message, _value, src in reader.pop_errors():
                    self.fail(src or n, message, sid)
                if sid == "ST":
                    in_ts = True
                    if v("ST01") != "834":
                        self.fail(n, f"transaction set {v('ST01')!r} is not an 834", "ST01")
                    continue
                if sid in ("INS", "SE") and member is not None:
                    yield from self.rows(member)
                    member, cov = None, None
                if sid == "SE":
                    in_ts = False
                    continue
                if not in_ts:
                    continue
                if sid == "INS":
                    maintenance = v("INS03")
                    if maintenance not in MAINTENANCE:
                        self.fail(
                            n,
                            f"maintenance type {maintenance!r} is not one of {sorted(MAINTENANCE)}",
                            "INS03",
                        )
                    if v("INS01") not in ("Y", "N"):
                        self.fail(n, f"subscriber indicator {v('INS01')!r} is not Y or N", "INS01")
                    member = _Member(n, v("INS01") == "Y", maintenance)
                    if v("INS12"):
                        member.death = self.day(v("INS12"), n, "INS12", v("INS11") or "D8", "INS11")
                    skip = False
                    continue
                if member is None:
                    continue  # header loops 1000A-C (sponsor, payer, broker)
                if sid == "LS":
                    skip = True
                elif sid == "LE":
                    skip = False
                elif skip:
                    continue
                elif sid == "HD":
                    member.in_2100a = False
                    if v("HD01") and v("HD01") not in MAINTENANCE:
                        self.fail(
                            n, f"maintenance type {v('HD01')!r} is not one of {sorted(MAINTENANCE)}", "HD01"
                        )
                    cov = _Coverage(n, v("HD01"), v("HD03"), v("HD04"))
                    member.coverages.append(cov)
                elif sid == "NM1":
                    member.in_2100a = cov is None and v("NM101") == "IL"
                    if member.in_2100a:
                        member.nm1_at = n
                        if v("NM108") in self.map.member_id_qualifiers:
                            member.member_id = v("NM109")
                elif sid == "REF":
                    (cov.refs if cov is not None else member.refs).setdefault(v("REF01"), v("REF02"))
                elif sid == "DTP":
                    self._dtp(member, cov, n, v("DTP01"), v("DTP02"), v("DTP03"))
                elif sid == "DMG" and member.in_2100a:
                    member.dmg_at = n
                    member.birth = self.day(v("DMG02"), n, "DMG02", v("DMG01") or "D8", "DMG01")
                    member.sex = v("DMG03")
                    if member.sex and member.sex not in ("M", "F", "U"):
                        self.fail(n, f"sex {member.sex!r} is not M, F or U", "DMG03")
                elif sid == "N4" and member.in_2100a and v("N405") == "CY":
                    member.county = v("N406")
                elif sid == "LUI" and member.in_2100a and not member.language:
                    member.language = v("LUI03") or v("LUI02")
            reader.cleanup()
            for _kind, _code, message, _value, src in reader.pop_errors():
                self.fail(src or n, message, "envelope")
        except pyx12.errors.X12Error as exc:
            self.fail(n + 1, f"malformed X12: {exc}", "segment")
        if member is not None:
            self.fail(member.at, "the transaction set is not closed (no SE after this member)", "SE")

    def _dtp(
        self, member: _Member, cov: _Coverage | None, n: int, qualifier: str, fmt: str, text: str
    ) -> None:
        if cov is not None and qualifier in ("348", "349"):
            when = (self.day(text, n, "DTP03", fmt, "DTP02"), n)
            if qualifier == "348":
                cov.start = when
            else:
                cov.end = when
        elif cov is None and qualifier == "357":
            member.eligibility_end = (self.day(text, n, "DTP03", fmt, "DTP02"), n)


def read_834(path: Path, cmap: ColumnMap, errors: list[InvalidDataError], *, x834: X834Map) -> Iterator[Row]:
    """The eligibility rows of an 834 file (one per loop 2300 of each member); faults are
    recorded in ``errors`` at ``file:segment N`` and the member's rows are left out."""
    del cmap  # the rows are in our field names already; x834.cmap translates them
    return _Reader(path, x834, errors).read()


def load_enrollment_834(
    store: Store,
    path: Path,
    x834: X834Map,
    source: str,
    *,
    full: bool = False,
    known_ccos: Collection[str] | None = None,
    clock: Clock = utc_now,
) -> EnrollmentLoad:
    """:func:`load_enrollment` of an 834 file: all or nothing, a snapshot per member."""
    return load_enrollment(
        store, path, x834.cmap, source, full=full, known_ccos=known_ccos, clock=clock,
        reader=partial(read_834, x834=x834),
    )  # fmt: skip


__all__ = ["DEFAULT_834_MAP", "X834Map", "is_834_file", "load_834_map", "load_enrollment_834", "read_834"]
