"""Publish MeasureReports to another FHIR server (``fhir-adapter publish``, DESIGN.md §2).

What is sent, and how:

- **Reports by update** (FHIR R4 RESTful API §3.1.0.5 "update": ``PUT [base]/[type]/[id]``, which
  creates the resource when the id is new). The ids are the report builder's
  (:func:`fhir_adapter.report.measurereport.report_id`): a hash of measure, version, period, data cut
  and source mode, so publishing the same evaluation again updates the same resources on the
  receiver and never duplicates them. ``summary`` sends one summary MeasureReport; ``individual`` one
  individual MeasureReport per child in an initial population; ``subject-list`` the DEQM STU5
  subject-list report whose ``subjectResults`` reference stored ``List`` resources of individual
  MeasureReports (:func:`fhir_adapter.report.results.stored_subject_list`): the individual reports
  and the Lists are sent first, so every reference resolves once the report arrives.
- **The data cut** fixes the ids, so by default it is the moment of the store's last change
  (:func:`data_cut`): evaluating as of then gives exactly what evaluating "now" gives, and the same
  ids as long as no data changes. New data is a new data cut, hence new reports (the old ones stay
  on the receiver as the reports of their own data cut).
- **Data of interest** (``--submit-data``): DEQM STU5 ``Measure/$deqm-submit-data``
  (``http://hl7.org/fhir/us/davinci-deqm/OperationDefinition/submit-data``, type level, ``bundle``
  1..*): one POST per child, a ``Parameters`` with one ``bundle`` holding a DEQM data-exchange
  MeasureReport (``datax-measurereport-deqm``; R4 ``type = data-collection``; ``subject`` 1..1;
  ``extension-submitDataUpdateType`` = ``snapshot``) followed by the resources it names in
  ``evaluatedResource``, read from the store at the versions the evaluation used. DEQM: the producer
  "sends the reporter, subject, and any relevant resources". A snapshot "entirely replaces the
  previous payload", so sending it again is idempotent as well.
- **Retries** on HTTP 429 and 5xx and on transport errors, waiting what ``Retry-After`` says (RFC 9110
  §10.2.3: seconds or an HTTP date; capped) or else an exponential back-off. Both kinds of request are
  safe to repeat: PUT is idempotent (RFC 9110 §9.2.2), and so is a snapshot submission.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import httpx
import orjson
from sqlalchemy import bindparam, text
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from fhir_adapter.errors import UsageError
from fhir_adapter.fhir.dates import from_micros, iso_instant
from fhir_adapter.measure.engine import visible
from fhir_adapter.report.checks import PROFILE_BY_TYPE, SUBMIT_DATA_UPDATE_TYPE_EXT
from fhir_adapter.report.measurereport import (
    MEASURE_SCORING,
    ReportContext,
    individual_report,
    measure_canonical,
    report_id,
)
from fhir_adapter.report.results import stored_subject_list
from fhir_adapter.store.db import Store
from fhir_adapter.store.evaluate import ChildResult, Evaluation

Json = dict[str, Any]
FHIR_JSON = "application/fhir+json"
SUBMIT_DATA_PATH = "Measure/$deqm-submit-data"
DATAX_PROFILE = PROFILE_BY_TYPE["data-collection"]
#: Ids per ``IN (…)`` when reading evaluated resources.
_CHUNK = 500


@dataclass(frozen=True)
class PublishRequest:
    """One HTTP request to the receiving server."""

    method: Literal["PUT", "POST"]
    #: relative to the receiver's FHIR base, e.g. ``MeasureReport/<id>``
    path: str
    #: what the result table calls it: ``MeasureReport/<id>`` or ``$deqm-submit-data Patient/<id>``
    label: str
    body: Json

    def url(self, base: str) -> str:
        return f"{base.rstrip('/')}/{self.path}"


@dataclass(frozen=True)
class PublishResult:
    label: str
    method: str
    #: the final HTTP status, ``None`` when no answer came (transport error)
    status: int | None
    #: created | updated | submitted | failed
    outcome: str
    #: the version the receiver gave (``ETag``), or the reason of a failure
    detail: str
    attempts: int

    @property
    def ok(self) -> bool:
        return self.outcome != "failed"


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` in all (1 = no retry); back-off ``backoff * 2**n`` seconds, every wait at most
    ``max_wait`` (also the cap on ``Retry-After``)."""

    attempts: int = 5
    backoff: float = 0.5
    max_wait: float = 30.0


def base_url(to: str) -> str:
    """The receiver's FHIR base without a trailing slash; :class:`UsageError` unless http(s)."""
    url = httpx.URL(to)
    if url.scheme not in ("http", "https") or not url.host:
        raise UsageError(f"--to {to!r} is not an http(s) URL of a FHIR server base")
    return to.rstrip("/")


# --------------------------------------------------------------------------------------------------
# what to send


def data_cut(store: Store, *, exclude_source: str | None = None) -> datetime | None:
    """The store's last change (µs precision), ``None`` for an empty store. Versions are visible as
    of T when ``ingested_at <= T`` and not superseded by T (DESIGN.md §1), and a supersession happens
    at the successor's ``ingested_at``, so evaluating as of this moment equals evaluating now.
    ``exclude_source`` leaves out the service's own stored reports, which no evaluation reads."""
    sql = "SELECT MAX(ingested_at) FROM resources"
    params: dict[str, str] = {}
    if exclude_source is not None:
        sql += " WHERE source <> :source"
        params["source"] = exclude_source
    with store.read() as conn:
        latest = conn.execute(text(sql), params).scalar()
    return None if latest is None else from_micros(int(latest))


def report_resources(built: Json) -> list[Json]:
    """The resources to PUT for a report of :func:`fhir_adapter.workflow.build_report`, referenced
    ones first: a summary or individual MeasureReport; each report of a collection Bundle of
    individual reports; for a subject-list Bundle the individual reports, the Lists, then the
    subject-list report."""
    if built.get("resourceType") == "MeasureReport":
        return [built]
    entries = [e["resource"] for e in built.get("entry", [])]
    if entries and entries[0].get("type") == "subject-list":
        report, lists, individuals = stored_subject_list(built)
        return [*individuals, *lists, report]
    return entries


def update_requests(resources: Iterable[Json]) -> list[PublishRequest]:
    return [
        PublishRequest("PUT", f"{r['resourceType']}/{r['id']}", f"{r['resourceType']}/{r['id']}", r)
        for r in resources
    ]


def data_collection_report(ev: Evaluation, ctx: ReportContext, child: ChildResult) -> Json:
    """DEQM STU5 data-exchange MeasureReport (R4 ``type = data-collection``) of one child: subject,
    ``submitDataUpdateType = snapshot``, no groups (the receiver evaluates), the evaluated resources
    as in the individual report (with their ``cqf-criteriaReference``), and the report stamps except
    the scoring extension (a data-exchange report has no score)."""
    individual = individual_report(ev, ctx, child)
    report: Json = {
        "resourceType": "MeasureReport",
        "id": report_id(ev, "data-collection", child.person),
        "meta": {"profile": [DATAX_PROFILE]},
        "extension": [
            {"url": SUBMIT_DATA_UPDATE_TYPE_EXT, "valueCode": "snapshot"},
            *(e for e in individual["extension"] if e["url"] != MEASURE_SCORING),
        ],
        "status": "complete",
        "type": "data-collection",
        "measure": measure_canonical(ev.spec, ctx.canonical_base),
        "subject": individual["subject"],
        "date": iso_instant(ctx.generated),
        "reporter": ctx.reporter,
        "period": {"start": ev.period_start.isoformat(), "end": ev.period_end.isoformat()},
    }
    if "evaluatedResource" in individual:
        report["evaluatedResource"] = individual["evaluatedResource"]
    return report


Key = tuple[str, str, str, int]  # source, type, id, version


def _read_versions(store: Store, keys: Iterable[Key]) -> dict[Key, Json]:
    """The stored bodies of exact resource versions (deleted versions are left out)."""
    wanted = set(keys)
    groups: dict[tuple[str, str], set[str]] = {}
    for source, rtype, rid, _version in wanted:
        groups.setdefault((source, rtype), set()).add(rid)
    sql = text(
        "SELECT r.rid, r.version, r.deleted, b.body FROM resources r "
        "JOIN resource_bodies b ON b.rkey = r.rkey "
        "WHERE r.source = :source AND r.rtype = :rtype AND r.rid IN :rids"
    ).bindparams(bindparam("rids", expanding=True))
    out: dict[Key, Json] = {}
    with store.read() as conn:
        for (source, rtype), ids in sorted(groups.items()):
            ordered = sorted(ids)
            for i in range(0, len(ordered), _CHUNK):
                params = {"source": source, "rtype": rtype, "rids": ordered[i : i + _CHUNK]}
                for rid, version, deleted, body in conn.execute(sql, params):
                    key = (source, rtype, str(rid), int(version))
                    if key in wanted and not deleted:
                        out[key] = orjson.loads(bytes(body))
    return out


def _read_visible(store: Store, source: str, rtype: str, rid: str, as_of: int) -> Json | None:
    sql = text(
        "SELECT r.deleted, b.body FROM resources r JOIN resource_bodies b ON b.rkey = r.rkey "
        f"WHERE r.source = :source AND r.rtype = :rtype AND r.rid = :rid AND {visible('r')}"
    )
    with store.read() as conn:
        row = conn.execute(sql, {"source": source, "rtype": rtype, "rid": rid, "as_of": as_of}).first()
    if row is None or row[0]:
        return None
    loaded: Json = orjson.loads(bytes(row[1]))
    return loaded


def submit_data_requests(store: Store, ev: Evaluation, ctx: ReportContext) -> list[PublishRequest]:
    """One ``$deqm-submit-data`` request per child in an initial population: a ``Parameters`` with
    one ``bundle`` (DEQM: "SHOULD be for a single subject") holding the data-exchange report, the
    subject's Patient and every resource its ``evaluatedResource`` names, at the evaluated versions.
    Two resources with the same type and id from different sources cannot both be in one Bundle;
    the first (by source name) is sent."""
    children = [c for c in ev.children if any(g.ip for g in c.groups)]
    reports = {c.person: data_collection_report(ev, ctx, c) for c in children}
    evaluated: dict[str, list[Key]] = {}
    for child in children:
        named = {str(r.get("reference")) for r in reports[child.person].get("evaluatedResource", [])}
        evaluated[child.person] = sorted(
            {(e.source, e.rtype, e.rid, e.version) for e in ev.evidence.get(child.person, [])
             if f"{e.rtype}/{e.rid}" in named},
            key=lambda k: (k[1], k[2], k[0], k[3]),
        )  # fmt: skip
    bodies = _read_versions(store, (k for keys in evaluated.values() for k in keys))
    out = []
    for child in children:
        report = reports[child.person]
        resources: list[Json] = [report]
        seen = {("MeasureReport", report["id"])}
        for key in evaluated[child.person]:
            if key in bodies and (key[1], key[2]) not in seen:
                seen.add((key[1], key[2]))
                resources.append(bodies[key])
        if ("Patient", child.subject_id) not in seen:
            patient = _read_visible(store, child.subject_source, "Patient", child.subject_id, ev.as_of)
            if patient is not None:
                resources.append(patient)
        parameters = {
            "resourceType": "Parameters",
            "parameter": [
                {
                    "name": "bundle",
                    "resource": {
                        "resourceType": "Bundle",
                        "type": "collection",
                        "entry": [{"resource": r} for r in resources],
                    },
                }
            ],
        }
        label = f"$deqm-submit-data Patient/{child.subject_id}"
        out.append(PublishRequest("POST", SUBMIT_DATA_PATH, label, parameters))
    return out


def dry_run_ndjson(base: str, requests: Sequence[PublishRequest]) -> bytes:
    """The requests as NDJSON (method, url, headers, body), one per line; no credentials."""
    lines = [
        orjson.dumps(
            {
                "method": r.method,
                "url": r.url(base),
                "headers": {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON},
                "body": r.body,
            }
        )
        for r in requests
    ]
    return b"".join(line + b"\n" for line in lines)


# --------------------------------------------------------------------------------------------------
# sending


class BearerAuth(httpx.Auth):
    """``Authorization: Bearer <token>`` on every request (RFC 6750 §2.1)."""

    def __init__(self, token: str) -> None:
        self.token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.token}"
        yield request


class _RetryableStatusError(Exception):
    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


def retryable(status: int) -> bool:
    return status == 429 or status >= 500


def retry_after(response: httpx.Response, now: Callable[[], float] = time.time) -> float | None:
    """Seconds that ``Retry-After`` asks to wait (delta-seconds or an HTTP date), ``None`` if absent
    or unreadable."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - now())


def _wait(policy: RetryPolicy) -> Callable[[RetryCallState], float]:
    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome is not None else None
        if isinstance(error, _RetryableStatusError):
            asked = retry_after(error.response)
            if asked is not None:
                return min(asked, policy.max_wait)
        return float(min(policy.backoff * 2 ** (state.attempt_number - 1), policy.max_wait))

    return wait


def _send_once(client: httpx.Client, base: str, request: PublishRequest) -> httpx.Response:
    response = client.request(
        request.method,
        request.url(base),
        content=orjson.dumps(request.body),
        headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON, "Prefer": "return=minimal"},
    )
    if retryable(response.status_code):
        raise _RetryableStatusError(response)
    return response


def _diagnostics(response: httpx.Response) -> str:
    """The first issue of an OperationOutcome answer, else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200].strip() or response.reason_phrase
    if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        issues = [i for i in body.get("issue", []) if isinstance(i, dict)]
        if issues:
            first = issues[0]
            where = ", ".join(str(x) for x in first.get("expression", []) or first.get("location", []))
            text_ = str(first.get("diagnostics") or first.get("details", {}).get("text") or first.get("code"))
            return f"{where}: {text_}" if where else text_
    return response.text[:200].strip()


def _version(response: httpx.Response) -> str:
    """The new version: the ``ETag`` (R4 §3.1.0.5 "update"), else ``meta.versionId`` of a returned
    body (servers that ignore ``Prefer: return=minimal``)."""
    value = response.headers.get("etag", "").removeprefix("W/").strip('"')
    if not value and response.content:
        try:
            body = response.json()
        except ValueError:
            body = None
        meta = body.get("meta") if isinstance(body, dict) else None
        value = str(meta.get("versionId") or "") if isinstance(meta, dict) else ""
    return f"version {value}" if value else ""


def _submitted(response: httpx.Response) -> str:
    """The first information issue (the receiver's summary) of each outcome of a
    ``$deqm-submit-data`` answer (a Parameters of OperationOutcomes, or one OperationOutcome)."""
    try:
        body = response.json()
    except ValueError:
        return ""
    outcomes = []
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        outcomes = [p.get("resource") for p in body.get("parameter", []) if isinstance(p, dict)]
    elif isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        outcomes = [body]
    texts = []
    for outcome in outcomes:
        issues = outcome.get("issue", []) if isinstance(outcome, dict) else []
        first = next((i for i in issues if isinstance(i, dict) and i.get("severity") == "information"), None)
        if first is not None and first.get("diagnostics"):
            texts.append(str(first["diagnostics"]))
    return "; ".join(texts)


def _result(request: PublishRequest, response: httpx.Response, attempts: int) -> PublishResult:
    status = response.status_code
    if not 200 <= status < 300:
        return PublishResult(
            request.label, request.method, status, "failed", _diagnostics(response), attempts
        )
    if request.method == "POST":
        return PublishResult(
            request.label, request.method, status, "submitted", _submitted(response), attempts
        )
    outcome = "created" if status == 201 else "updated"
    return PublishResult(request.label, request.method, status, outcome, _version(response), attempts)


def send(
    client: httpx.Client,
    base: str,
    requests: Sequence[PublishRequest],
    policy: RetryPolicy = RetryPolicy(),
    *,
    sleep: Callable[[float], None] = time.sleep,
    on_result: Callable[[PublishResult], None] | None = None,
) -> list[PublishResult]:
    """Send every request in order, each retried on its own under ``policy``; a request that still
    fails is reported and the next one is sent."""
    results = []
    for request in requests:
        retrying = Retrying(
            stop=stop_after_attempt(policy.attempts),
            wait=_wait(policy),
            retry=retry_if_exception(lambda e: isinstance(e, _RetryableStatusError | httpx.TransportError)),
            sleep=sleep,
            reraise=True,
        )
        attempts = 0

        def attempt(request: PublishRequest = request) -> httpx.Response:
            nonlocal attempts
            attempts += 1
            return _send_once(client, base, request)

        try:
            result = _result(request, retrying(attempt), attempts)
        except _RetryableStatusError as exc:
            result = _result(request, exc.response, attempts)
        except httpx.TransportError as exc:
            detail = f"{exc.__class__.__name__}: {exc}" if str(exc) else exc.__class__.__name__
            result = PublishResult(request.label, request.method, None, "failed", detail, attempts)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


__all__ = [
    "DATAX_PROFILE",
    "SUBMIT_DATA_PATH",
    "BearerAuth",
    "PublishRequest",
    "PublishResult",
    "RetryPolicy",
    "base_url",
    "data_collection_report",
    "data_cut",
    "dry_run_ndjson",
    "report_resources",
    "retry_after",
    "retryable",
    "send",
    "submit_data_requests",
    "update_requests",
]
