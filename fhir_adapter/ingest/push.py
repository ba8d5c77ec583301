"""REST pushes into the store: transaction and batch Bundles, single writes, raw NDJSON.

FHIR R4 http.html#transaction (batch/transaction): a ``transaction`` is all or nothing (every entry is
checked first; one bad entry rejects the Bundle and nothing is stored), ``fullUrl`` references
(``urn:uuid:…``) are rewritten to the ``Type/id`` the entry gets (R4 bundle.html#references), entries are processed
as DELETE, POST, PUT (all in one store transaction here, so the order does not change the
outcome) and two entries may not name the same resource; a ``batch`` processes each entry on its
own, and its entries may not depend on one another. Answers are ``transaction-response`` /
``batch-response`` Bundles whose ``entry.response`` carry ``status``, ``location``
(``Type/id/_history/v``), ``etag``, ``lastModified`` and an ``outcome`` with that entry's
data-quality warnings (:mod:`fhir_adapter.ingest.quality`).

No web code: the router (:mod:`fhir_adapter.api.routes_ingest`) passes parsed bodies in and
turns :class:`PushResult` into HTTP responses.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qsl

import orjson
from sqlalchemy import text

from fhir_adapter.errors import PayloadTooLargeError, PreconditionFailedError, UsageError
from fhir_adapter.fhir.dates import from_micros
from fhir_adapter.fhir.outcome import Issue, operation_outcome
from fhir_adapter.fhir.resources import ID_RE, R4_RESOURCE_TYPES, resource_problem
from fhir_adapter.ingest.files import (
    TOO_LONG,
    LineError,
    LongLine,
    bounded_lines,
    parse_ndjson_line,
    rewrite_references,
)
from fhir_adapter.ingest.quality import QualityRules, check_quality, linked_encounters, relocate
from fhir_adapter.ingest.runner import Clock, IngestResult, ingest_items, utc_now
from fhir_adapter.store.db import KeyResult, ParsedResource, Prepared, Store, WriteStats, prepare

#: Resource types accepted by create, update, delete, transaction and batch: what the measure,
#: its reports and the referral loop read (spec §3, §4). ``$ingest`` takes any R4 type, as the
#: command line does.
WRITABLE_TYPES = frozenset(
    {
        "Claim",
        "Condition",
        "Coverage",
        "Encounter",
        "ExplanationOfBenefit",
        "Group",
        "List",
        "Location",
        "MeasureReport",
        "Observation",
        "Organization",
        "Patient",
        "Practitioner",
        "PractitionerRole",
        "Procedure",
        "ServiceRequest",
        "Task",
    }
)
#: Issues listed in one acknowledgement; the rest are counted in its first issue.
MAX_LISTED_ISSUES = 1000
#: Resources written by one ``$ingest`` after which the planner statistics are refreshed.
ANALYZE_AFTER = 10_000
#: ``allowed(resource type, permission letter)``: whether the caller's SMART scopes allow it
#: (:meth:`fhir_adapter.auth.scopes.ScopeSet.allows`); ``None`` allows everything.
Allowed = Callable[[str, str], bool]
#: SMART v2 permission of each Bundle entry method (SMART App Launch 2.2 "Scopes").
METHOD_PERMISSION = {"POST": "c", "PUT": "u", "DELETE": "d"}
_PERMISSION_NAME = {"c": "create", "u": "update", "d": "delete"}

REASONS = {
    200: "200 OK",
    201: "201 Created",
    204: "204 No Content",
    400: "400 Bad Request",
    403: "403 Forbidden",
    404: "404 Not Found",
    409: "409 Conflict",
    412: "412 Precondition Failed",
    422: "422 Unprocessable Entity",
}
_ISSUE_TYPE = {
    400: "invalid",
    403: "forbidden",
    404: "not-supported",
    409: "conflict",
    412: "conflict",
    422: "invalid",
}


def new_id() -> str:
    """A server-assigned id (R4 http.html#create): a uuid4 in hex, a valid FHIR id."""
    return uuid.uuid4().hex


def instant_text(micros: int) -> str:
    """A store time (µs since the epoch) as a FHIR instant with microseconds, in UTC."""
    return from_micros(micros).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def served(resource: dict[str, Any], source: str, version: int, at: int) -> dict[str, Any]:
    """The resource as the service returns it: ``meta.versionId``, ``meta.lastUpdated`` (the
    store's ingestion time) and ``meta.source`` (the source name) set."""
    meta = dict(resource["meta"]) if isinstance(resource.get("meta"), dict) else {}
    meta.update({"versionId": str(version), "lastUpdated": instant_text(at), "source": source})
    return {**resource, "meta": meta}


@dataclass(frozen=True)
class Problem:
    """Why one entry (or body) cannot be written: HTTP status, message, FHIRPath expression."""

    status: int
    message: str
    expression: str

    def issue(self) -> Issue:
        return Issue("error", _ISSUE_TYPE.get(self.status, "invalid"), self.message, self.expression)


def structure_problem(value: Any, root: str) -> Problem | None:
    """Status 422 with the failing element when ``value`` fails the store's structural check
    (:func:`~fhir_adapter.fhir.resources.resource_problem`); ``root`` is the resource's own path
    (``Bundle.entry[2].resource``), or empty for a request body (then ``Patient.id``)."""
    found = resource_problem(value)
    if found is None:
        return None
    element, problem = found
    if not isinstance(value, dict):
        return Problem(422, problem, root or "Resource")
    rtype = value.get("resourceType")
    known = isinstance(rtype, str) and rtype in R4_RESOURCE_TYPES
    base = root or (rtype if known else "Resource")
    return Problem(422, problem, f"{base}.{element}")


def type_problem(rtype: str, where: str) -> Problem | None:
    """404 for a type that is not R4 or not accepted for writes here (R4 http.html: "resource
    type not supported")."""
    if rtype not in R4_RESOURCE_TYPES:
        return Problem(404, f"unknown resource type {rtype[:64]!r} (not FHIR R4)", where)
    if rtype not in WRITABLE_TYPES:
        return Problem(
            404,
            f"{rtype} is not accepted here; writable types: {', '.join(sorted(WRITABLE_TYPES))}",
            where,
        )
    return None


def parse_if_match(value: str, where: str = "If-Match") -> int:
    """The version of a weak ETag ``W/"3"`` (or ``"3"``, ``3``) (R4 http.html#concurrency "Managing Resource
    Contention"). Raises :class:`UsageError`."""
    text = value.strip()
    text = text.removeprefix("W/").strip('"')
    if not text.isdigit() or int(text) < 1:
        raise UsageError(f'{where} {value[:40]!r} is not a version ETag such as W/"1"', location=where)
    return int(text)


def parse_if_none_exist(value: str) -> tuple[str | None, str]:
    """``identifier=[system|]value`` of ``If-None-Exist`` (R4 http.html#ccreate conditional create; token
    search: ``value`` any system, ``|value`` no system). Raises :class:`UsageError` for other
    search parameters, which this server does not evaluate."""
    params = parse_qsl(value.strip().lstrip("?"), keep_blank_values=True)
    if len(params) != 1 or params[0][0] != "identifier" or not params[0][1]:
        raise UsageError(
            f"If-None-Exist {value[:80]!r}: only one 'identifier=system|value' criterion is supported",
            location="If-None-Exist",
        )
    token = params[0][1]
    if "|" not in token:
        return None, token
    system, _, ident = token.partition("|")
    if not ident:
        raise UsageError(f"If-None-Exist {value[:80]!r} has no identifier value", location="If-None-Exist")
    return system, ident


# --------------------------------------------------------------------------------------------
# Bundles


@dataclass
class Entry:
    """One Bundle entry as planned: what it writes, or why it cannot."""

    index: int
    method: str = ""
    rtype: str = ""
    rid: str = ""
    resource: dict[str, Any] | None = None
    full_url: str | None = None
    if_match: int | None = None
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str]:
        return (self.rtype, self.rid)

    @property
    def where(self) -> str:
        return f"Bundle.entry[{self.index}]"


@dataclass(frozen=True)
class PushResult:
    """An HTTP status and a body (a response Bundle or an OperationOutcome), with the write
    counts for metrics."""

    status: int
    body: dict[str, Any]
    stats: WriteStats = field(default_factory=WriteStats)
    rejected: int = 0


def bundle_entries(bundle: dict[str, Any], max_entries: int) -> list[Any]:
    """``Bundle.entry`` (a list; absent means none), at most ``max_entries`` (HTTP 413 beyond)."""
    entries = bundle.get("entry", [])
    if not isinstance(entries, list):
        raise UsageError("Bundle.entry is not a list", location="Bundle.entry")
    if len(entries) > max_entries:
        raise PayloadTooLargeError(
            f"Bundle has {len(entries)} entries; at most {max_entries} per request (send several Bundles, "
            "or NDJSON to POST /fhir/$ingest)",
            location="Bundle.entry",
        )
    return entries


def _plan_entry(index: int, raw: Any, make_id: Callable[[], str]) -> Entry:
    entry = Entry(index)
    where = entry.where
    if not isinstance(raw, dict):
        entry.problems.append(Problem(400, "entry is not a JSON object", where))
        return entry
    full_url = raw.get("fullUrl")
    entry.full_url = full_url if isinstance(full_url, str) and full_url else None
    request = raw.get("request")
    if not isinstance(request, dict):
        entry.problems.append(Problem(400, "entry has no request (method and url)", f"{where}.request"))
        return entry
    method = request.get("method")
    url = request.get("url")
    if method not in ("POST", "PUT", "DELETE"):
        entry.problems.append(
            Problem(400, f"request.method {method!r} is not supported here: use POST, PUT or DELETE",
                    f"{where}.request.method")
        )  # fmt: skip
        return entry
    entry.method = method
    if not isinstance(url, str) or not url.strip():
        entry.problems.append(Problem(400, "entry has no request.url", f"{where}.request.url"))
        return entry
    for element in ("ifNoneExist", "ifNoneMatch", "ifModifiedSince"):
        if request.get(element) is not None:
            entry.problems.append(
                Problem(400, f"request.{element} is not supported in Bundle entries (If-None-Exist is, on "
                        "POST /fhir/{type})", f"{where}.request.{element}")
            )  # fmt: skip
    if request.get("ifMatch") is not None:
        try:
            entry.if_match = parse_if_match(str(request["ifMatch"]), f"{where}.request.ifMatch")
        except UsageError as exc:
            entry.problems.append(Problem(400, exc.message, f"{where}.request.ifMatch"))
    path = url.strip().split("?", 1)
    parts = path[0].strip("/").split("/")
    if len(path) > 1:
        entry.problems.append(
            Problem(400, f"conditional request.url {url[:80]!r} is not supported: name the resource as Type or "
                    "Type/id", f"{where}.request.url")
        )  # fmt: skip
        return entry
    expected_parts = 1 if method == "POST" else 2
    if len(parts) != expected_parts:
        shape = "Type" if method == "POST" else "Type/id"
        entry.problems.append(
            Problem(400, f"request.url {url[:80]!r} of a {method} must be {shape}", f"{where}.request.url")
        )
        return entry
    entry.rtype = parts[0]
    problem = type_problem(entry.rtype, f"{where}.request.url")
    if problem:
        entry.problems.append(problem)
        return entry
    if method != "POST":
        if not ID_RE.match(parts[1]):
            entry.problems.append(
                Problem(
                    400, f"request.url id {parts[1][:80]!r} is not a valid FHIR id", f"{where}.request.url"
                )
            )
            return entry
        entry.rid = parts[1]
    if method == "DELETE":
        return entry
    resource = raw.get("resource")
    if resource is None:
        entry.problems.append(Problem(400, f"a {method} entry needs a resource", f"{where}.resource"))
        return entry
    # The resource's own structure first (422), whatever its id: a create gets a new one.
    problem = structure_problem(
        {**resource, "id": resource.get("id", "x")} if isinstance(resource, dict) else resource,
        f"{where}.resource",
    )
    if problem and not problem.expression.endswith(".id"):
        entry.problems.append(problem)
        return entry
    assert isinstance(resource, dict)
    if resource.get("resourceType") != entry.rtype:
        entry.problems.append(
            Problem(400, f"resource.resourceType {str(resource.get('resourceType'))[:64]!r} is not {entry.rtype} "
                    "(request.url)", f"{where}.resource.resourceType")
        )  # fmt: skip
        return entry
    if method == "POST":
        entry.rid = make_id()  # R4 http.html#create: the server assigns the id of a create
        resource = {**resource, "id": entry.rid}
    elif resource.get("id") != entry.rid:
        entry.problems.append(
            Problem(400, f"resource.id {str(resource.get('id'))[:80]!r} is not the id of request.url "
                    f"({entry.rid})", f"{where}.resource.id")
        )  # fmt: skip
        return entry
    problem = structure_problem(resource, f"{where}.resource")
    if problem:
        entry.problems.append(problem)
        return entry
    entry.resource = resource
    return entry


def _urn_references(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """(path, reference) of every ``reference`` still naming a ``urn:uuid:`` / ``urn:oid:``."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "reference" and isinstance(item, str) and item.startswith(("urn:uuid:", "urn:oid:")):
                yield f"{path}.reference", item
            else:
                yield from _urn_references(item, f"{path}.{key}")
    elif isinstance(value, list):
        for n, item in enumerate(value):
            yield from _urn_references(item, f"{path}[{n}]")


def plan_bundle(
    raw_entries: list[Any],
    *,
    transaction: bool,
    make_id: Callable[[], str] = new_id,
    allowed: Allowed | None = None,
) -> list[Entry]:
    """Every entry checked: methods, URLs, types, ids, structure, duplicates, then (in a
    transaction) ``fullUrl`` references rewritten to ``Type/id``. References to ``urn:`` URLs
    that name no entry are problems (in a batch every such reference is: entries of a batch
    cannot depend on one another, R4 http.html#transaction)."""
    entries = [_plan_entry(index, raw, make_id) for index, raw in enumerate(raw_entries)]
    if allowed is not None:
        for entry in entries:
            permission = METHOD_PERMISSION.get(entry.method)
            if entry.problems or permission is None or allowed(entry.rtype, permission):
                continue
            entry.problems.append(
                Problem(
                    403,
                    f"the access token does not allow {_PERMISSION_NAME[permission]} of {entry.rtype}: that needs "
                    f"system/{entry.rtype}.{permission}",
                    f"{entry.where}.request",
                )
            )
    first: dict[tuple[str, str], int] = {}
    for entry in entries:
        if entry.problems or not entry.rid:
            continue
        if entry.key in first:
            entry.problems.append(
                Problem(400, f"{entry.rtype}/{entry.rid} is also the target of Bundle.entry[{first[entry.key]}]; "
                        "one Bundle may change a resource once", f"{entry.where}.request.url")
            )  # fmt: skip
        else:
            first[entry.key] = entry.index
    if transaction:
        ids = {e.full_url: e.key for e in entries if e.full_url and e.rid and e.method != "DELETE"}
        for entry in entries:
            if entry.resource is not None and ids:
                entry.resource = rewrite_references(entry.resource, ids)
    for entry in entries:
        if entry.resource is None or entry.problems:
            continue
        for path, ref in _urn_references(entry.resource, f"{entry.where}.resource"):
            hint = (
                "" if transaction else " (entries of a batch cannot reference each other: use a transaction)"
            )
            entry.problems.append(
                Problem(400, f"reference {ref[:80]!r} names no entry of this Bundle{hint}", path)
            )
            break
    return entries


def _add_warnings(entries: list[Entry], rules: QualityRules | None) -> None:
    if rules is None:
        return
    resources = [e.resource for e in entries if e.resource is not None and not e.problems]
    linked = linked_encounters(resources)
    for entry in entries:
        if entry.resource is not None and not entry.problems:
            entry.warnings = check_quality(entry.resource, rules, linked_encounters=linked)


def _item(entry: Entry) -> ParsedResource:
    if entry.method == "DELETE":
        return ParsedResource(
            entry.rtype, entry.rid, {"resourceType": entry.rtype, "id": entry.rid}, deleted=True
        )
    assert entry.resource is not None
    return ParsedResource(entry.rtype, entry.rid, entry.resource)


def entry_response(entry: Entry, result: KeyResult) -> dict[str, Any]:
    """``Bundle.entry`` of a response for a written entry (R4 ``Bundle.entry.response``)."""
    if entry.method == "DELETE":
        status = 204
    elif entry.method == "POST" or result.outcome == "created":
        status = 201
    else:
        status = 200
    response: dict[str, Any] = {"status": REASONS[status]}
    if result.version is not None:
        response["location"] = f"{entry.rtype}/{entry.rid}/_history/{result.version}"
        response["etag"] = f'W/"{result.version}"'
    if result.at is not None:
        response["lastModified"] = instant_text(result.at)
    if entry.warnings:
        response["outcome"] = operation_outcome(entry.warnings)
    return {"response": response}


def _error_response(problems: list[Problem]) -> dict[str, Any]:
    status = problems[0].status
    return {
        "response": {"status": REASONS[status], "outcome": operation_outcome(p.issue() for p in problems)}
    }


def _response_bundle(kind: str, entries: list[dict[str, Any]], now: int) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "id": new_id(),
        "type": kind,
        "timestamp": instant_text(now),
        "entry": entries,
    }


def _overall_status(problems: list[Problem]) -> int:
    statuses = {p.status for p in problems}
    return statuses.pop() if len(statuses) == 1 else 400


def transaction(
    store: Store,
    source: str,
    raw_entries: list[Any],
    now: int,
    *,
    rules: QualityRules | None,
    make_id: Callable[[], str] = new_id,
    allowed: Allowed | None = None,
) -> PushResult:
    """A ``transaction`` Bundle: all entries written in one store transaction, or none (an
    OperationOutcome naming every bad entry). ``If-Match`` of entries (``request.ifMatch``) is
    checked inside that transaction (:class:`PreconditionFailedError` names the entry)."""
    entries = plan_bundle(raw_entries, transaction=True, make_id=make_id, allowed=allowed)
    problems = [p for e in entries for p in e.problems]
    if problems:
        return PushResult(_overall_status(problems), operation_outcome(p.issue() for p in problems))
    _add_warnings(entries, rules)
    items = [prepare(_item(e)) for e in entries]
    expect = {e.key: e.if_match for e in entries if e.if_match is not None}
    try:
        stats = store.write_prepared(source, items, now, expect_version=expect)
    except PreconditionFailedError as exc:
        index = next((e.index for e in entries if f"{e.rtype}/{e.rid}" == exc.location), None)
        where = f"Bundle.entry[{index}].request.ifMatch" if index is not None else exc.location
        raise PreconditionFailedError(f"{exc.message}; nothing was stored", location=where) from exc
    body = _response_bundle(
        "transaction-response", [entry_response(e, stats.results[e.key]) for e in entries], now
    )
    return PushResult(200, body, stats)


def batch(
    store: Store,
    source: str,
    raw_entries: list[Any],
    now: int,
    *,
    rules: QualityRules | None,
    make_id: Callable[[], str] = new_id,
    allowed: Allowed | None = None,
) -> PushResult:
    """A ``batch`` Bundle: each entry on its own; bad entries get their own 4xx response entry
    with an outcome, good ones are stored (those without ``ifMatch`` in one store transaction,
    each conditional one in its own)."""
    entries = plan_bundle(raw_entries, transaction=False, make_id=make_id, allowed=allowed)
    _add_warnings(entries, rules)
    good = [e for e in entries if not e.problems]
    stats = WriteStats()
    results: dict[int, KeyResult] = {}
    plain = [e for e in good if e.if_match is None]
    if plain:
        written = store.write_prepared(source, [prepare(_item(e)) for e in plain], now, expect_version={})
        stats.add(written)
        results.update({e.index: written.results[e.key] for e in plain})
    for entry in good:
        if entry.if_match is None:
            continue
        try:
            written = store.write_prepared(
                source, [prepare(_item(entry))], now, expect_version={entry.key: entry.if_match}
            )
        except PreconditionFailedError as exc:
            entry.problems.append(Problem(412, exc.message, f"{entry.where}.request.ifMatch"))
            continue
        stats.add(written)
        results[entry.index] = written.results[entry.key]
    response = [
        _error_response(e.problems) if e.problems else entry_response(e, results[e.index]) for e in entries
    ]
    rejected = sum(1 for e in entries if e.problems)
    return PushResult(200, _response_bundle("batch-response", response, now), stats, rejected)


def validate_bundle(raw_entries: list[Any], *, transaction: bool, rules: QualityRules | None) -> list[Issue]:
    """What :func:`transaction` / :func:`batch` would say of these entries, without storing:
    errors and data-quality issues, expressions under ``Bundle.entry[i]``."""
    entries = plan_bundle(raw_entries, transaction=transaction, make_id=lambda: "validate")
    _add_warnings(entries, rules)
    out: list[Issue] = []
    for entry in entries:
        out.extend(p.issue() for p in entry.problems)
        out.extend(relocated(entry.warnings, f"{entry.where}.resource"))
    return out


def relocated(issues: Iterable[Issue], prefix: str) -> list[Issue]:
    return [relocate(issue, prefix) for issue in issues]


# --------------------------------------------------------------------------------------------
# NDJSON ($ingest)


def ingest_ndjson(
    store: Store,
    lines: Iterable[bytes],
    source: str,
    *,
    rules: QualityRules | None,
    batch_size: int,
    clock: Clock = utc_now,
    on_progress: Callable[[int], None] | None = None,
    progress_every: int = 5000,
    max_issues: int | None = None,
    allowed: Allowed | None = None,
    max_line_bytes: int | None = None,
) -> tuple[IngestResult, dict[str, Any]]:
    """Store the resources of NDJSON ``lines`` under ``source`` like ``fhir-adapter ingest``
    (bad lines reported as ``line N: reason`` and skipped, good lines kept, batches of
    ``batch_size`` each one transaction) and build the acknowledgement: an OperationOutcome
    whose first issue counts created/updated/unchanged/deleted/rejected (and warnings per
    check code), then the rejected lines (errors), then the data-quality issues of the stored
    lines, at most ``max_issues`` (default :data:`MAX_LISTED_ISSUES`) listed. A resource whose
    type the caller may not both create and update (or delete, for a deletion), per ``allowed``,
    is a rejected line, and so is a line longer than ``max_line_bytes`` (never read whole)."""
    cap = MAX_LISTED_ISSUES if max_issues is None else max_issues
    warning_counts: Counter[str] = Counter()
    listed: list[Issue] = []
    unlisted = 0
    line_count = 0

    def items() -> Iterator[ParsedResource | LineError]:
        nonlocal unlisted, line_count
        for number, line in enumerate(bounded_lines(lines, max_line_bytes), start=1):
            line_count = number
            if isinstance(line, LongLine):
                yield LineError(f"line {number}", line.message)
                continue
            for parsed in parse_ndjson_line(line, f"line {number}"):
                item = _permitted(parsed, allowed, f"line {number}")
                if isinstance(item, ParsedResource) and rules is not None and not item.deleted:
                    for issue in check_quality(item.resource, rules):
                        warning_counts[issue.details[1] if issue.details else issue.code] += 1
                        if len(listed) < cap:
                            label = f"line {number} ({item.rtype}/{item.rid})"
                            listed.append(replace(issue, diagnostics=f"{label}: {issue.diagnostics}"))
                        else:
                            unlisted += 1
                yield item
            if on_progress is not None and number % progress_every == 0:
                on_progress(number)

    result = ingest_items(store, items(), source, batch_size=batch_size, clock=clock)
    s = result.stats
    if s.created + s.updated + s.deleted >= ANALYZE_AFTER:
        store.analyze()
    summary = (
        f"{line_count} lines, {result.read} resources: created {s.created}, updated {s.updated}, unchanged "
        f"{s.unchanged}, deleted {s.deleted}, rejected {len(result.errors)}"
    )
    if warning_counts:
        summary += "; data-quality issues: " + ", ".join(
            f"{code} {n}" for code, n in sorted(warning_counts.items(), key=lambda kv: (-kv[1], kv[0]))
        )
    issues = [Issue("information", "informational", summary)]
    errors = [
        Issue("error", "structure" if e.message.startswith("not JSON") else
              "too-costly" if e.message.startswith(TOO_LONG) else "invalid", f"{e.location}: {e.message}",
              e.location)
        for e in result.errors
    ]  # fmt: skip
    room = max(cap - len(errors[:cap]), 0)
    issues.extend(errors[:cap])
    issues.extend(listed[:room])
    unlisted += max(len(errors) - cap, 0) + max(len(listed) - room, 0)
    if unlisted:
        issues.append(Issue("information", "informational", f"{unlisted} more issues not listed"))
    return result, operation_outcome(issues)


def _permitted(
    item: ParsedResource | LineError, allowed: Allowed | None, location: str
) -> ParsedResource | LineError:
    if allowed is None or isinstance(item, LineError):
        return item
    permissions = "d" if item.deleted else "cu"
    missing = "".join(p for p in permissions if not allowed(item.rtype, p))
    if not missing:
        return item
    return LineError(
        location, f"not allowed: storing {item.rtype} needs the scope system/{item.rtype}.{permissions}"
    )


def prepared(rtype: str, rid: str, resource: dict[str, Any] | None, *, deleted: bool = False) -> Prepared:
    """A single write's resource, ready for :meth:`Store.write_prepared`."""
    body = resource if resource is not None else {"resourceType": rtype, "id": rid}
    return prepare(ParsedResource(rtype, rid, body, deleted=deleted))


def current_resource(
    store: Store, source: str, rtype: str, rid: str
) -> tuple[dict[str, Any], KeyResult] | None:
    """The current, not deleted version of ``rtype/rid`` in ``source``: its body and version."""
    with store.read() as conn:
        row = conn.execute(
            text(
                "SELECT r.version, r.ingested_at, b.body FROM resources r JOIN resource_bodies b ON b.rkey = r.rkey "
                "WHERE r.source = :source AND r.rtype = :rtype AND r.rid = :rid AND r.superseded_at IS NULL "
                "AND r.deleted = 0"
            ),
            {"source": source, "rtype": rtype, "rid": rid},
        ).first()
    if row is None:
        return None
    return orjson.loads(row[2]), KeyResult("unchanged", int(row[0]), int(row[1]), False)
