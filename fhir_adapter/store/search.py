"""FHIR R4 search on stored resources, as set-based SQL over the resource and fact tables.

Pure: this module parses search parameter values and builds SQL text with bind parameters; it
executes nothing (the REST router runs the statements on a store connection). One statement
serves both engines (plain SQL, integers for days and instants).

Semantics followed (FHIR R4 4.0.1, ``search.html``):

- Parameter values: a comma separates alternatives (OR), a repeated parameter adds a condition
  (AND); ``\\,``, ``\\|``, ``\\$`` and ``\\\\`` are escapes (search.html#escaping).
- ``date`` (search.html#date, prefixes search.html#prefix): a search value is the *range* its
  precision implies (``2025`` is the whole year, ``2025-03`` the month) and so is the stored value
  (a partial date in the data keeps the days it can mean; a period its days). With search range
  [S1, S2] and target range [T1, T2]: ``eq`` T1 ≥ S1 and T2 ≤ S2 (the search range contains the
  target); ``ne`` the opposite; ``gt`` T2 > S2 (part of the target lies above the search range);
  ``lt`` T1 < S1; ``ge`` T2 ≥ S1 (part of the target lies at or above the start of the search
  range); ``le`` T1 ≤ S2; ``sa`` T1 > S2; ``eb`` T2 < S1. For ``ge``/``le`` the R4 text ("the
  range above the search value intersects the target, or the search range fully contains it")
  can be read as "above S2" or "from S1"; we read it as "from S1", as HAPI FHIR does, so that
  ``period=ge2025-12-31`` finds a report for 2025. Both readings agree whenever the target is one
  day or lies inside or outside the search range. ``ap`` is not supported (its tolerance is
  server-defined). Clinical and claims dates are stored as *local days* in the reporting time
  zone (an instant with an offset becomes its local day), so a dateTime search value on them is
  taken as its local day; ``_lastUpdated`` compares instants to the microsecond, a value without
  an offset being local time in the reporting time zone.
- ``token`` (search.html#token): ``system|code``, ``|code`` (no system), ``code`` (any system),
  ``system|`` (any code of the system); exact, case-sensitive.
- ``reference`` (search.html#reference): ``Type/id``, an absolute URL ending in ``Type/id``, or a
  bare ``id``; the ``:Type`` modifier names the type of a bare id.
- ``uri`` (search.html#uri) is an exact match; ``_source`` matches ``meta.source``, which the
  service sets to the store's source name.

Only current, not-deleted versions match. Paging is by keyset on ``rkey`` (insertion order) with
an upper bound fixed on the first page (:func:`page_sql`): following the links never repeats a
resource; resources created after the first page are not added, and one updated while a client
pages may be missed (its new version lies beyond the bound).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from fhir_adapter.errors import UsageError
from fhir_adapter.fhir.dates import parse_day_range, to_micros
from fhir_adapter.fhir.references import parse_reference

#: Open ends of a period (a MeasureReport period without start or end), as day ordinals.
MIN_DAY = date.min.toordinal()
MAX_DAY = date.max.toordinal()
#: Date prefixes supported (R4 search.html#prefix; ``ap`` is not).
PREFIXES = frozenset({"eq", "ne", "gt", "lt", "ge", "le", "sa", "eb"})
_ALL_PREFIXES = PREFIXES | {"ap"}
_DATETIME_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?(Z|[+-]\d{2}:\d{2})?$"
)
_DATE_RE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")
_ID_RE = re.compile(r"^[A-Za-z0-9\-\.]{1,64}$")

#: Types with one ``f_event`` row per resource version (patient, local day, status).
EVENT_TYPES = frozenset(
    {"Encounter", "Procedure", "Condition", "ServiceRequest", "Claim", "ExplanationOfBenefit"}
)
#: R4 MeasureReport.subject and .reporter target types.
_SUBJECT_TYPES = (
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "Location",
    "Device",
    "RelatedPerson",
    "Group",
)
_REPORTER_TYPES = ("Practitioner", "PractitionerRole", "Location", "Organization")


@dataclass(frozen=True)
class SearchContext:
    """What value parsing needs: the reporting time zone (local days, dates without offsets) and
    the Medicaid member-id identifier system (the one Patient identifier the facts keep)."""

    tz: ZoneInfo
    member_system: str


@dataclass
class Query:
    """Conditions (ANDed) on ``resources r`` and their bind parameters."""

    where: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    #: enumerate the store's sources so the ``(source, rtype, rid)`` index serves id look-ups
    by_id: bool = False
    #: conditions on the resource's one ``f_event`` row (alias ``e``), ANDed in one subquery
    event: list[str] = field(default_factory=list)

    def bind(self, value: Any) -> str:
        name = f"p{len(self.params)}"
        self.params[name] = value
        return ":" + name

    def bind_all(self, values: Iterable[Any]) -> str:
        return ", ".join(self.bind(v) for v in values)


# --------------------------------------------------------------------------------------------------
# value parsing


def split_escaped(value: str, sep: str) -> list[str]:
    """Split ``value`` on ``sep`` except where escaped as ``\\sep`` (R4 search.html#escaping);
    other escapes are kept for :func:`unescape`."""
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value):
            nxt = value[i + 1]
            current.append(nxt if nxt == sep else ch + nxt)
            i += 2
            continue
        if ch == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    parts.append("".join(current))
    return parts


def unescape(value: str) -> str:
    return re.sub(r"\\([\\,|$])", r"\1", value)


def alternatives(value: str) -> list[str]:
    """The comma-separated alternatives of one parameter value, escapes kept."""
    return split_escaped(value, ",")


@dataclass(frozen=True)
class Bound:
    """A search value with its prefix as an inclusive integer range (days or microseconds)."""

    prefix: str
    first: int
    last: int


def _prefix(raw: str, name: str) -> tuple[str, str]:
    text = raw.strip().replace(" ", "+")  # an unencoded '+' in a URL arrives as a space
    head = text[:2]
    if head.isalpha() and head.islower():
        if head not in _ALL_PREFIXES:
            raise UsageError(f"{name}: unknown prefix {head!r} in {raw!r}", location=name)
        if head not in PREFIXES:
            raise UsageError(f"{name}: prefix {head!r} is not supported (use eq, ne, gt, lt, ge, le, sa, eb)",
                             location=name)  # fmt: skip
        return head, text[2:]
    return "eq", text


def parse_day_bound(raw: str, ctx: SearchContext, name: str) -> Bound:
    """A ``date`` search value on local days: the days its precision covers (R4
    search.html#date); a dateTime is taken as its local day in the reporting time zone."""
    prefix, text = _prefix(raw, name)
    days = parse_day_range(text, ctx.tz)
    if days is None:
        raise UsageError(f"{name}: {raw!r} is not a FHIR date or dateTime", location=name)
    return Bound(prefix, days.first.toordinal(), days.last.toordinal())


def _local_midnight(day: date, tz: ZoneInfo) -> int:
    return to_micros(datetime(day.year, day.month, day.day, tzinfo=tz))


def parse_instant_bound(raw: str, ctx: SearchContext, name: str) -> Bound:
    """A ``date`` search value on an instant (``_lastUpdated``): the microseconds its precision
    covers; without an offset the value is local time in the reporting time zone (R4
    search.html#date: "the server's time zone")."""
    prefix, text = _prefix(raw, name)
    try:
        m = _DATE_RE.match(text)
        if m:
            days = parse_day_range(text, ctx.tz)
            if days is None:
                raise ValueError(text)
            lo = _local_midnight(days.first, ctx.tz)
            hi = _local_midnight(days.last + timedelta(days=1), ctx.tz)
            return Bound(prefix, lo, hi - 1)
        m = _DATETIME_RE.match(text)
        if not m:
            raise ValueError(text)
        y, mo, d, hh, mi = (int(m.group(i)) for i in range(1, 6))
        seconds, fraction, offset = m.group(6), m.group(7), m.group(8)
        tzinfo: Any = ctx.tz
        if offset == "Z":
            tzinfo = UTC
        elif offset:
            sign = 1 if offset[0] == "+" else -1
            tzinfo = timezone(sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6])))
        micro = int((fraction or "0")[:6].ljust(6, "0"))
        start = datetime(y, mo, d, hh, mi, int(seconds or 0), micro, tzinfo=tzinfo)
        if seconds is None:
            width = 60_000_000
        elif fraction is None:
            width = 1_000_000
        else:
            width = 10 ** max(0, 6 - len(fraction))
        lo = to_micros(start)
        return Bound(prefix, lo, lo + width - 1)
    except ValueError:
        raise UsageError(f"{name}: {raw!r} is not a FHIR date, dateTime or instant", location=name) from None


def range_condition(q: Query, lo_expr: str, hi_expr: str, bound: Bound) -> str:
    """The R4 prefix semantics (see the module docstring) for a target range
    [``lo_expr``, ``hi_expr``] (inclusive integers)."""
    s1, s2 = q.bind(bound.first), q.bind(bound.last)
    contained = f"({lo_expr} >= {s1} AND {hi_expr} <= {s2})"
    return {
        "eq": contained,
        "ne": f"({lo_expr} < {s1} OR {hi_expr} > {s2})",
        "gt": f"({hi_expr} > {s2})",
        "lt": f"({lo_expr} < {s1})",
        "ge": f"({hi_expr} >= {s1})",
        "le": f"({lo_expr} <= {s2})",
        "sa": f"({lo_expr} > {s2})",
        "eb": f"({hi_expr} < {s1})",
    }[bound.prefix]


@dataclass(frozen=True)
class Token:
    """``system|code``: ``system`` ``None`` means any system, ``""`` no system; ``code``
    ``None`` means any code of the system."""

    system: str | None
    code: str | None


def parse_token(raw: str, name: str) -> Token:
    parts = split_escaped(raw, "|")
    if len(parts) == 1:
        code = unescape(parts[0])
        if not code:
            raise UsageError(f"{name}: empty value", location=name)
        return Token(None, code)
    if len(parts) == 2:
        system, code = unescape(parts[0]), unescape(parts[1])
        if not system and not code:
            raise UsageError(f"{name}: empty value", location=name)
        return Token(system, code or None)
    raise UsageError(f"{name}: {raw!r} has more than one unescaped '|'", location=name)


def token_condition(q: Query, system_expr: str | None, code_expr: str, token: Token) -> str:
    parts = []
    if token.code is not None:
        parts.append(f"{code_expr} = {q.bind(token.code)}")
    if token.system is not None:
        if system_expr is None:
            if token.system:
                return "1 = 0"  # the stored value has no system
        else:
            parts.append(f"{system_expr} = {q.bind(token.system)}")
    return "(" + " AND ".join(parts) + ")" if parts else "1 = 1"


def parse_references(raw: str, targets: Sequence[str], name: str) -> list[str]:
    """The ``Type/id`` strings a reference search value can mean (one per target type for a
    bare id); an unparseable value or another type yields none."""
    value = unescape(raw.strip())
    if not value:
        raise UsageError(f"{name}: empty value", location=name)
    if _ID_RE.match(value):
        return [f"{t}/{value}" for t in targets]
    target = parse_reference(value)
    if target is None or target[0] not in targets:
        return []
    return [f"{target[0]}/{target[1]}"]


def _ref_targets(modifier: str | None, targets: Sequence[str], name: str) -> Sequence[str]:
    if modifier is None:
        return targets
    if modifier in targets:
        return (modifier,)
    raise UsageError(f"{name}:{modifier}: modifier not supported", location=name)


def _ids_of(refs: Iterable[str], rtype: str) -> list[str]:
    prefix = rtype + "/"
    return [r[len(prefix) :] for r in refs if r.startswith(prefix)]


# --------------------------------------------------------------------------------------------------
# parameters

#: Build the SQL condition on ``r`` for one occurrence of a parameter: (query, context, modifier,
#: raw value) → condition, or "" when it was added to ``Query.event`` instead.
Build = Callable[[Query, SearchContext, str | None, str], str]


@dataclass(frozen=True)
class Param:
    """A supported search parameter: R4 ``SearchParamType`` and what it searches."""

    name: str
    type: str
    documentation: str
    build: Build
    #: modifiers accepted besides reference type modifiers (``:Patient``)
    modifiers: frozenset[str] = frozenset()
    definition: str | None = None


def _no_modifier(modifier: str | None, name: str) -> None:
    if modifier is not None:
        raise UsageError(f"{name}:{modifier}: modifier not supported", location=name)


def _any(parts: list[str]) -> str:
    parts = [p for p in parts if p != "1 = 0"] or ["1 = 0"]
    return parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")"


def _build_id(q: Query, _ctx: SearchContext, modifier: str | None, raw: str) -> str:
    _no_modifier(modifier, "_id")
    ids = [unescape(v) for v in alternatives(raw)]
    q.by_id = True
    return f"r.rid IN ({q.bind_all(ids)})"


def _build_source(q: Query, _ctx: SearchContext, modifier: str | None, raw: str) -> str:
    _no_modifier(modifier, "_source")
    return f"r.source IN ({q.bind_all(unescape(v) for v in alternatives(raw))})"


def _build_last_updated(q: Query, ctx: SearchContext, modifier: str | None, raw: str) -> str:
    _no_modifier(modifier, "_lastUpdated")
    return _any(
        [
            range_condition(q, "r.ingested_at", "r.ingested_at", parse_instant_bound(v, ctx, "_lastUpdated"))
            for v in alternatives(raw)
        ]
    )


def _event_exists(q: Query, condition: str) -> str:
    """Add ``condition`` on the resource's ``f_event`` row (one row per version, so all of them
    go in one ``IN`` subquery: one pass over the facts, or an index look-up once there is one)."""
    q.event.append(condition)
    return ""


def _patient_ids(modifier: str | None, raw: str, name: str) -> list[str]:
    targets = _ref_targets(modifier, ("Patient",), name)
    refs = [ref for v in alternatives(raw) for ref in parse_references(v, targets, name)]
    return _ids_of(refs, "Patient")


def _event_patient(name: str) -> Build:
    def build(q: Query, _ctx: SearchContext, modifier: str | None, raw: str) -> str:
        ids = _patient_ids(modifier, raw, name)
        return _event_exists(q, f"e.pid IN ({q.bind_all(ids)})") if ids else "1 = 0"

    return build


def _build_event_date(q: Query, ctx: SearchContext, modifier: str | None, raw: str) -> str:
    _no_modifier(modifier, "date")
    conditions = [
        range_condition(q, "e.day", "COALESCE(e.day_last, e.day)", parse_day_bound(v, ctx, "date"))
        for v in alternatives(raw)
    ]
    return _event_exists(q, "e.day IS NOT NULL AND " + _any(conditions))


def _event_code(name: str, role: str, claim_lines: bool) -> Build:
    """``f_code`` rows of the resource with ``role`` (``proc``/``dx``), on the header (line 0)
    or, for claims, on the lines (line ≥ 1: ``item.productOrService``)."""

    def build(q: Query, _ctx: SearchContext, modifier: str | None, raw: str) -> str:
        _no_modifier(modifier, name)
        tokens = [parse_token(v, name) for v in alternatives(raw)]
        match = _any([token_condition(q, "d.system", "d.code", t) for t in tokens])
        line = "c.line >= 1" if claim_lines else "c.line = 0"
        return (
            "EXISTS (SELECT 1 FROM f_code c JOIN codes d ON d.cid = c.cid "
            f"WHERE c.rkey = r.rkey AND c.role = {q.bind(role)} AND {line} AND {match})"
        )

    return build


def _coverage_patient(name: str) -> Build:
    def build(q: Query, _ctx: SearchContext, modifier: str | None, raw: str) -> str:
        ids = _patient_ids(modifier, raw, name)
        if not ids:
            return "1 = 0"
        return f"r.rkey IN (SELECT c.rkey FROM f_coverage c WHERE c.pid IN ({q.bind_all(ids)}))"

    return build


def _build_group_member(q: Query, _ctx: SearchContext, modifier: str | None, raw: str) -> str:
    ids = _patient_ids(modifier, raw, "member")
    if not ids:
        return "1 = 0"
    return f"r.rkey IN (SELECT g.rkey FROM f_group_member g WHERE g.pid IN ({q.bind_all(ids)}))"


def _build_patient_identifier(q: Query, ctx: SearchContext, modifier: str | None, raw: str) -> str:
    _no_modifier(modifier, "identifier")
    values = []
    for v in alternatives(raw):
        token = parse_token(v, "identifier")
        if token.system is not None and token.system not in ("", ctx.member_system):
            raise UsageError(
                f"identifier: only the member id system {ctx.member_system} is searchable on Patient",
                location="identifier",
            )
        if token.system == "" or token.code is None:
            continue  # member ids always carry their system; 'system|' alone is not searchable
        values.append(token.code)
    if not values:
        return "1 = 0"
    return f"r.rkey IN (SELECT p.rkey FROM f_patient p WHERE p.member_id IN ({q.bind_all(values)}))"


def _build_org_identifier(q: Query, _ctx: SearchContext, modifier: str | None, raw: str) -> str:
    _no_modifier(modifier, "identifier")
    tokens = [parse_token(v, "identifier") for v in alternatives(raw)]
    match = _any([token_condition(q, "o.system", "o.value", t) for t in tokens])
    return f"EXISTS (SELECT 1 FROM f_org_ident o WHERE o.rkey = r.rkey AND {match})"


def _report(condition: str) -> str:
    return f"r.rkey IN (SELECT f.rkey FROM f_report f WHERE {condition})"


def _build_report_measure(q: Query, _ctx: SearchContext, modifier: str | None, raw: str) -> str:
    """A canonical with ``|version`` matches that version; without, every version (stored
    ``url`` or ``url|…``)."""
    _no_modifier(modifier, "measure")
    parts = []
    for v in alternatives(raw):
        value = unescape(v.strip())
        if not value:
            raise UsageError("measure: empty value", location="measure")
        if "|" in value:
            parts.append(f"f.measure = {q.bind(value)}")
        else:
            prefix = value + "|"
            parts.append(
                f"(f.measure = {q.bind(value)} OR substr(f.measure, 1, {q.bind(len(prefix))}) = {q.bind(prefix)})"
            )
    return _report(_any(parts))


def _build_report_period(q: Query, ctx: SearchContext, modifier: str | None, raw: str) -> str:
    _no_modifier(modifier, "period")
    lo = f"COALESCE(f.period_start, {MIN_DAY})"
    hi = f"COALESCE(f.period_end, {MAX_DAY})"
    return _report(
        _any([range_condition(q, lo, hi, parse_day_bound(v, ctx, "period")) for v in alternatives(raw)])
    )


def _report_reference(name: str, column: str, targets: Sequence[str], *, identifier: bool) -> Build:
    def build(q: Query, _ctx: SearchContext, modifier: str | None, raw: str) -> str:
        values: list[str] = []
        if identifier and modifier == "identifier":
            for v in alternatives(raw):
                token = parse_token(v, name)
                if token.code is not None:
                    values.append(token.code)
        else:
            kinds = _ref_targets(modifier, targets, name)
            values = [ref for v in alternatives(raw) for ref in parse_references(v, kinds, name)]
        return _report(f"f.{column} IN ({q.bind_all(values)})") if values else "1 = 0"

    return build


def _build_report_status(q: Query, _ctx: SearchContext, modifier: str | None, raw: str) -> str:
    _no_modifier(modifier, "status")
    tokens = [parse_token(v, "status") for v in alternatives(raw)]
    return _report(_any([token_condition(q, None, "f.status", Token(None, t.code)) for t in tokens]))


_R4_SP = "http://hl7.org/fhir/SearchParameter/"

#: Parameters of every stored type (R4 "Parameters for all resources").
COMMON_PARAMS: tuple[Param, ...] = (
    Param("_id", "token", "Logical id as the source sent it (several sources may share one).", _build_id,
          definition=_R4_SP + "Resource-id"),
    Param("_lastUpdated", "date", "When this adapter stored the version (meta.lastUpdated).", _build_last_updated,
          definition=_R4_SP + "Resource-lastUpdated"),
    Param("_source", "uri", "The store source the resource came from (meta.source).", _build_source,
          definition=_R4_SP + "Resource-source"),
)  # fmt: skip

_PATIENT_DOC = "The patient (Patient/id or id), from the resource's subject or patient reference."
_DATE_DOC = {
    "Encounter": "Local day of period.start (else period.end), in the reporting time zone.",
    "Procedure": "Local day of performedDateTime or performedPeriod.start.",
    "Condition": "Local day of recordedDate, else onsetDateTime or onsetPeriod.start.",
    "ServiceRequest": "Local day of authoredOn.",
    "Claim": "Earliest item.serviced[x] day (date of service).",
    "ExplanationOfBenefit": "Earliest item.serviced[x] day (date of service).",
}
_CODE_DOC = {
    "Encounter": ("proc", False, "Encounter.type or serviceType coding (system|code, |code or code)."),
    "Procedure": ("proc", False, "Procedure.code coding (system|code, |code or code)."),
    "Condition": ("dx", False, "Condition.code coding (system|code, |code or code)."),
    "Claim": ("proc", True, "item.productOrService coding of any line (system|code, |code or code)."),
    "ExplanationOfBenefit": (
        "proc",
        True,
        "item.productOrService coding of any line (system|code, |code or code).",
    ),
}


def _type_params() -> dict[str, tuple[Param, ...]]:
    out: dict[str, list[Param]] = {}
    for rtype in sorted(EVENT_TYPES):
        params = out.setdefault(rtype, [])
        params.append(Param("patient", "reference", _PATIENT_DOC, _event_patient("patient")))
        if rtype not in ("Claim", "ExplanationOfBenefit"):
            params.append(Param("subject", "reference", _PATIENT_DOC, _event_patient("subject")))
        params.append(Param("date", "date", _DATE_DOC[rtype], _build_event_date))
        if rtype in _CODE_DOC:
            role, lines, doc = _CODE_DOC[rtype]
            params.append(Param("code", "token", doc, _event_code("code", role, lines)))
            if rtype == "Encounter":
                params.append(Param("type", "token", doc, _event_code("type", role, lines)))
    out["Coverage"] = [
        Param("patient", "reference", "Coverage.beneficiary (Patient/id or id).", _coverage_patient("patient")),
        Param("beneficiary", "reference", "Coverage.beneficiary (Patient/id or id).", _coverage_patient("beneficiary")),
    ]  # fmt: skip
    out["Patient"] = [
        Param(
            "identifier",
            "token",
            "Medicaid member id (system|value or value; only the configured member-id system is searchable).",
            _build_patient_identifier,
        )
    ]
    out["Organization"] = [
        Param(
            "identifier",
            "token",
            "Organization.identifier (system|value, |value or value).",
            _build_org_identifier,
        )
    ]
    out["Group"] = [
        Param(
            "member",
            "reference",
            "An active member (Patient/id or id) of Group.member.entity.",
            _build_group_member,
        )
    ]
    out["MeasureReport"] = [
        Param("measure", "reference", "Measure canonical: url|version matches that version, url every version.",
              _build_report_measure),
        Param("period", "date", "MeasureReport.period (local days; an open end is unbounded).", _build_report_period),
        Param("reporter", "reference", "Reporter reference (Type/id or id); :identifier matches the identifier "
              "value (the system is not compared).", _report_reference("reporter", "reporter", _REPORTER_TYPES,
                                                                        identifier=True),
              modifiers=frozenset({"identifier"})),
        Param("subject", "reference", "Subject reference (Type/id or id).",
              _report_reference("subject", "subject", _SUBJECT_TYPES, identifier=False)),
        Param("patient", "reference", "Subject when it is a Patient (Patient/id or id).",
              _report_reference("patient", "subject", ("Patient",), identifier=False)),
        Param("status", "token", "complete | pending | error.", _build_report_status),
    ]  # fmt: skip
    return {rtype: tuple(params) for rtype, params in out.items()}


TYPE_PARAMS: dict[str, tuple[Param, ...]] = _type_params()


def params_for(rtype: str) -> dict[str, Param]:
    """Every search parameter of a stored type, by name."""
    return {p.name: p for p in (*COMMON_PARAMS, *TYPE_PARAMS.get(rtype, ()))}


# --------------------------------------------------------------------------------------------------
# statements

#: The distinct sources, read from the ``(source, rtype, rid, superseded_at)`` index one step at
#: a time (a loose index scan): joined to a look-up by id it lets that index serve it.
SOURCES_CTE = (
    "WITH RECURSIVE src(s) AS (SELECT MIN(source) FROM resources "
    "UNION ALL SELECT (SELECT MIN(x.source) FROM resources x WHERE x.source > src.s) FROM src "
    "WHERE src.s IS NOT NULL) "
)
_CURRENT = "r.rtype = :rtype AND r.superseded_at IS NULL AND r.deleted = 0"


def _where(q: Query) -> str:
    conditions = [_CURRENT, *q.where]
    if q.event:
        conditions.append(f"r.rkey IN (SELECT e.rkey FROM f_event e WHERE {' AND '.join(q.event)})")
    if q.by_id:
        conditions.append("r.source IN (SELECT s FROM src WHERE s IS NOT NULL)")
    return " AND ".join(conditions)


def _prefix_cte(q: Query) -> str:
    return SOURCES_CTE if q.by_id else ""


def count_sql(q: Query, rtype: str, bound: int) -> tuple[str, dict[str, Any]]:
    """How many current, not-deleted resources of ``rtype`` match (rkey ≤ ``bound``)."""
    sql = f"{_prefix_cte(q)}SELECT COUNT(*) FROM resources r WHERE {_where(q)} AND r.rkey <= :bound"
    return sql, {**q.params, "rtype": rtype, "bound": bound}


def page_sql(
    q: Query, rtype: str, bound: int, *, after: int | None, before: int | None, limit: int
) -> tuple[str, dict[str, Any]]:
    """One page of matches in ``rkey`` order: after ``after`` (ascending) or before ``before``
    (descending, for a previous page), never beyond ``bound`` (the largest rkey when the first
    page was served). Columns: rkey, source, rid, version, ingested_at, body."""
    keyset = ""
    params: dict[str, Any] = {**q.params, "rtype": rtype, "bound": bound, "limit": limit}
    order = "ASC"
    if after is not None:
        keyset = " AND r.rkey > :after"
        params["after"] = after
    elif before is not None:
        keyset = " AND r.rkey < :before"
        params["before"] = before
        order = "DESC"
    sql = (
        f"{_prefix_cte(q)}SELECT r.rkey, r.source, r.rid, r.version, r.ingested_at, b.body "
        f"FROM resources r JOIN resource_bodies b ON b.rkey = r.rkey "
        f"WHERE {_where(q)} AND r.rkey <= :bound{keyset} ORDER BY r.rkey {order} LIMIT :limit"
    )
    return sql, params


MAX_RKEY_SQL = "SELECT COALESCE(MAX(rkey), 0) FROM resources"


def versions_sql(*, current: bool, source: str | None, restrict: str = "") -> str:
    """Versions of ``:rtype``/``:rid`` (the current ones, or version ``:version``), in every
    source or in ``:source``; ``restrict`` (`` AND (…)`` on ``r``) is the caller's tenancy
    condition. Columns: rkey, source, version, ingested_at, deleted."""
    head = "SELECT r.rkey, r.source, r.version, r.ingested_at, r.deleted FROM resources r WHERE "
    which = ("r.superseded_at IS NULL" if current else "r.version = :version") + restrict
    if source is not None:
        return f"{head}r.source = :source AND r.rtype = :rtype AND r.rid = :rid AND {which}"
    return (
        f"{SOURCES_CTE}{head}r.source IN (SELECT s FROM src WHERE s IS NOT NULL) "
        f"AND r.rtype = :rtype AND r.rid = :rid AND {which} ORDER BY r.source"
    )


BODY_SQL = "SELECT body FROM resource_bodies WHERE rkey = :rkey"


def build_query(rtype: str, criteria: Sequence[tuple[str, str | None, str]], ctx: SearchContext) -> Query:
    """The conditions for ``criteria`` ((name, modifier, raw value), each one ANDed) on
    ``rtype``; every name must be one of :func:`params_for`."""
    q = Query()
    known = params_for(rtype)
    for name, modifier, raw in criteria:
        condition = known[name].build(q, ctx, modifier, raw)
        if condition:
            q.where.append(condition)
    return q


__all__ = [
    "BODY_SQL",
    "COMMON_PARAMS",
    "EVENT_TYPES",
    "MAX_RKEY_SQL",
    "PREFIXES",
    "TYPE_PARAMS",
    "Bound",
    "Param",
    "Query",
    "SearchContext",
    "Token",
    "build_query",
    "count_sql",
    "page_sql",
    "params_for",
    "parse_day_bound",
    "parse_instant_bound",
    "parse_references",
    "parse_token",
    "range_condition",
    "split_escaped",
    "unescape",
    "versions_sql",
]
