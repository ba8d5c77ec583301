"""Measure operations (issue #5 item 4): evaluation, data requirements, DEQM submit-data and gaps.

| route | definition |
|---|---|
| ``GET|POST /fhir/Measure/{id}/$evaluate-measure`` | FHIR R4 ``OperationDefinition/Measure-evaluate-measure`` |
| ``POST /fhir/Measure/$evaluate`` | DEQM STU5 ``…/davinci-deqm/OperationDefinition/evaluate`` |
| ``GET /fhir/Measure/{id}/$data-requirements`` | FHIR R4 ``OperationDefinition/Measure-data-requirements`` |
| ``POST /fhir/Measure/$deqm-submit-data`` | DEQM STU5 ``…/davinci-deqm/OperationDefinition/submit-data`` (code ``deqm-submit-data``) |
| ``GET|POST /fhir/Measure/$care-gaps`` | DEQM STU5 ``…/davinci-deqm/OperationDefinition/care-gaps`` |

Parameters come from the query string (GET) or a ``Parameters`` body (POST, R4 §3.1.0.11
"Operations"; ``value[x]`` of the primitive types, ``valueReference`` for references). Unknown
parameters are refused (400) rather than ignored, so a misspelt name never silently changes an
answer. Project extensions, on every evaluating operation: ``sources`` (``claims`` | ``all``,
default ``all``: spec §3 "Where the data comes from"), ``asOf`` (the data cut: a dateTime, or a date
meaning the end of that day in the reporting time zone), ``source`` (which source's ``Patient/<id>``
when two sources share the id, DESIGN.md §2), ``reporter`` on ``$care-gaps`` too (the Composition
author) and ``persist`` (store the produced MeasureReports under ``settings.report_source``).

What is stored: R4 leaves persisting evaluation results to the server. A ``subject-list`` report
is always stored with its Lists and individual reports (also on GET), because its
``subjectResults`` must resolve (:mod:`fhir_adapter.report.results`); other reports only with
``persist=true``. ``$care-gaps`` stores nothing. ``$deqm-submit-data`` stores under the caller's
source (``Caller.source``), one transaction per bundle (:mod:`fhir_adapter.report.submitdata`).

Dates: ``periodStart``/``periodEnd`` take a FHIR date (``2025``, ``2025-03``, ``2025-03-31``: the
start is the first day it can mean, the end the last, so a date-only end means the whole day) or a
dateTime, taken as its local date in ``settings.timezone`` (spec §3 "Measurement period").

Measure ids: ``oregon-se-issue-focused`` picks the version of the year the period ends in
(``workflow.measure_spec``); ``oregon-se-issue-focused-2025`` (the id of the generated Measure of that
year) must be the version that period picks, else 400.

Tenancy (:mod:`fhir_adapter.auth.policy`, docs/security.md): evaluating operations need the
``MeasureReport`` read scope and a role that evaluates (EHR clients: 403). A CCO client's population
and subject-list reports count only the children the evaluation attributes to its CCOs and are
stored under its own report source with ids of their own; its ``subject`` must be a child enrolled
in one of its CCOs during the period (else 404, as for an unknown id); ``$care-gaps`` takes only its
own CCOs as ``organization`` (else 403). The scope travels in job requests, so a job (and its re-run)
answers what the caller may see.

Long work: ``Prefer: respond-async`` turns any evaluating operation into a persisted job
(``evaluate-measure``, ``evaluate``, ``care-gaps``); the job's result is exactly what the synchronous
call would have answered. A missing ``asOf`` is fixed to the time of the request, so a job (and
``$rerun``) reproduces the answer the request asked for.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, cast

import orjson
from fastapi import APIRouter, FastAPI, Request
from sqlalchemy import bindparam, text
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from fhir_adapter.api import audit
from fhir_adapter.api.capabilities import Contribution
from fhir_adapter.api.deps import AppState, Caller, CallerDep, PolicyDep, StateDep, require
from fhir_adapter.api.jobs import JobContext, JobResult
from fhir_adapter.api.responses import JSON_TYPES, FhirResponse
from fhir_adapter.api.routes_ingest import quality_rules
from fhir_adapter.api.routes_jobs import accepted, base_url, wants_async
from fhir_adapter.auth.policy import EvaluationScope, Policy, Window
from fhir_adapter.errors import NotFoundError, UnsupportedMediaTypeError, UsageError
from fhir_adapter.fhir.dates import from_micros, iso_instant, parse_day_range, parse_instant, to_micros
from fhir_adapter.fhir.outcome import Issue
from fhir_adapter.fhir.resources import ID_RE
from fhir_adapter.ingest.quality import QualityRules, check_quality
from fhir_adapter.measure.engine import visible
from fhir_adapter.measure.spec import MeasureSpec, SourceMode
from fhir_adapter.report.caregaps import SUPPORTED_STATUSES, child_gaps, gaps_bundle
from fhir_adapter.report.checks import SUBMIT_DATA_UPDATE_TYPE_EXT, SUBMIT_DATA_UPDATE_TYPES
from fhir_adapter.report.conformance import OperationRef, ResourceCapability, build_measure
from fhir_adapter.report.datarequirements import build_data_requirements
from fhir_adapter.report.measurereport import (
    ReportContext,
    individual_id,
    individual_report,
    report_id,
    subject_list_bundle,
    summary_report,
)
from fhir_adapter.report.results import evaluate_bundle, parameters, stored_subject_list
from fhir_adapter.report.submitdata import (
    Submission,
    bundle_outcome,
    manifest_id,
    outcomes_parameters,
    parse_submission,
    plan_bundle,
)
from fhir_adapter.report.suppression import DEFAULT_THRESHOLD, extension_url, suppress_report
from fhir_adapter.store.db import ParsedResource, WriteStats, canonical_bytes
from fhir_adapter.store.evaluate import ChildResult, Evaluation
from fhir_adapter.workflow import EvaluationRequest, report_context, run_evaluation

Json = dict[str, Any]
Progress = Callable[[str], None]

router = APIRouter(tags=["measure"])

OP_EVALUATE_MEASURE = "http://hl7.org/fhir/OperationDefinition/Measure-evaluate-measure"
OP_DATA_REQUIREMENTS = "http://hl7.org/fhir/OperationDefinition/Measure-data-requirements"
OP_EVALUATE = "http://hl7.org/fhir/us/davinci-deqm/OperationDefinition/evaluate"
OP_SUBMIT_DATA = "http://hl7.org/fhir/us/davinci-deqm/OperationDefinition/submit-data"
OP_CARE_GAPS = "http://hl7.org/fhir/us/davinci-deqm/OperationDefinition/care-gaps"

_EXTENSIONS_DOC = (
    "Extensions: sources (claims|all), asOf (data cut), source (which source's Patient/<id>), persist, "
    "suppress (population reports: mask counts 1..N-1 and their complements; true means 11)."
)
CAPABILITIES = Contribution(
    resources={
        "Measure": ResourceCapability(
            interactions=(),
            operations=(
                OperationRef(
                    "evaluate-measure",
                    OP_EVALUATE_MEASURE,
                    "reportType subject | subject-list | population; subject-list reports reference stored "
                    "Lists of stored individual MeasureReports; Prefer: respond-async runs a job. "
                    + _EXTENSIONS_DOC,
                ),
                OperationRef(
                    "evaluate",
                    OP_EVALUATE,
                    "measureId / measureUrl 1..*; returns Parameters with one Bundle of reports plus the "
                    "resources they reference. " + _EXTENSIONS_DOC,
                ),
                OperationRef(
                    "data-requirements",
                    OP_DATA_REQUIREMENTS,
                    "module-definition Library: types, value-set code filters and service date filters.",
                ),
                OperationRef(
                    "deqm-submit-data",
                    OP_SUBMIT_DATA,
                    "Bundles of data-collection MeasureReports plus data of interest, stored under the "
                    "caller's source; a snapshot replaces what the source submitted earlier for the same "
                    "subject and measures.",
                    extension=tuple(
                        {"url": SUBMIT_DATA_UPDATE_TYPE_EXT, "valueCode": code}
                        for code in SUBMIT_DATA_UPDATE_TYPES
                    ),
                ),
                OperationRef(
                    "care-gaps",
                    OP_CARE_GAPS,
                    "status open-gap | closed-gap (prospective-gap is not supported); subject or organization "
                    "(a CCO id); gaps only for denominator children. "
                    "Extensions: sources (claims|all), asOf (data cut), source (which source's Patient/<id>).",
                ),
            ),
        )
    }
)

REPORT_TYPES = {
    "subject": "subject",
    "individual": "subject",
    "subject-list": "subject-list",
    "population": "population",
    "summary": "population",
}
REPORTER_TYPES = ("Organization", "Practitioner", "PractitionerRole", "Location")
_REFERENCE = re.compile(r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})$")
_VERSIONED_ID = re.compile(r"^(.+)-(\d{4})$")

# --------------------------------------------------------------------------------------------------
# parameters


@dataclass(frozen=True)
class Value:
    """One parameter value as text, with where it came from (query name or Parameters path)."""

    text: str
    where: str


#: name → (min, max); max ``None`` means ``*``
ParamSpec = Mapping[str, tuple[int, int | None]]

_EVALUATING = {"sources": (0, 1), "asOf": (0, 1), "source": (0, 1), "reporter": (0, 1)}
EVALUATE_MEASURE_PARAMS: ParamSpec = {
    "periodStart": (1, 1),
    "periodEnd": (1, 1),
    "reportType": (0, 1),
    "subject": (0, 1),
    "persist": (0, 1),
    "suppress": (0, 1),
    **_EVALUATING,
}
EVALUATE_PARAMS: ParamSpec = {**EVALUATE_MEASURE_PARAMS, "measureId": (0, None), "measureUrl": (0, None)}
DATA_REQUIREMENTS_PARAMS: ParamSpec = {"periodStart": (1, 1), "periodEnd": (1, 1)}
CARE_GAPS_PARAMS: ParamSpec = {
    "periodStart": (1, 1),
    "periodEnd": (1, 1),
    "status": (1, None),
    "subject": (0, 1),
    "organization": (0, 1),
    "measureId": (0, None),
    "measureUrl": (0, None),
    **_EVALUATING,
}


class Params:
    """Validated operation parameters."""

    def __init__(self, values: dict[str, list[Value]]) -> None:
        self.values = values

    def one(self, name: str) -> Value | None:
        found = self.values.get(name)
        return found[0] if found else None

    def all(self, name: str) -> list[Value]:
        return self.values.get(name, [])


def _value_text(param: Json, where: str) -> str:
    if "resource" in param or "part" in param:
        raise UsageError("this operation takes primitive values and references only", location=where)
    for key, value in param.items():
        if not key.startswith("value"):
            continue
        if key == "valueReference":
            reference = value.get("reference") if isinstance(value, dict) else None
            if not isinstance(reference, str) or not reference:
                raise UsageError("valueReference has no reference", location=f"{where}.valueReference")
            return reference
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str | int):
            return str(value)
        raise UsageError(f"{key} is not supported here", location=f"{where}.{key}")
    raise UsageError("the parameter has no value", location=where)


def _body_values(body: bytes, content_type: str) -> dict[str, list[Value]]:
    media = content_type.split(";", maxsplit=1)[0].strip().lower()
    if media not in JSON_TYPES:
        raise UnsupportedMediaTypeError(
            f"send a Parameters resource as application/fhir+json, not {media or 'nothing'}"
        )
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise UsageError(f"the body is not JSON: {exc}") from None
    if not isinstance(parsed, dict) or parsed.get("resourceType") != "Parameters":
        raise UsageError("the body must be a Parameters resource", location="Parameters")
    items = parsed.get("parameter", [])
    if not isinstance(items, list):
        raise UsageError("parameter must be a list", location="Parameters.parameter")
    out: dict[str, list[Value]] = {}
    for index, param in enumerate(items):
        where = f"Parameters.parameter[{index}]"
        if not isinstance(param, dict) or not isinstance(param.get("name"), str):
            raise UsageError("a parameter needs a name", location=where)
        out.setdefault(param["name"], []).append(Value(_value_text(param, where), where))
    return out


async def read_params(request: Request, spec: ParamSpec, operation: str) -> Params:
    """The operation's parameters from the query string and, for POST, a ``Parameters`` body; names
    and cardinalities checked against ``spec``. ``_format``-style general parameters are ignored."""
    values: dict[str, list[Value]] = {}
    if request.method == "POST":
        body = await request.body()
        if body.strip():
            values = _body_values(body, request.headers.get("content-type", ""))
    for name, value in request.query_params.multi_items():
        if not name.startswith("_"):
            values.setdefault(name, []).append(Value(value, name))
    for name, found in values.items():
        for item in found:
            if "\x00" in item.text:  # no stored value holds one (PostgreSQL text cannot)
                raise UsageError(f"{name} contains a NUL character", location=item.where)
        if name not in spec:
            known = ", ".join(sorted(spec))
            raise UsageError(
                f"${operation} has no parameter {name!r} on this server (it takes {known})",
                location=found[0].where,
            )
    for name, (low, high) in spec.items():
        count = len(values.get(name, []))
        if count < low:
            raise UsageError(
                f"${operation} needs {name} ({low}..{'*' if high is None else high})", location=name
            )
        if high is not None and count > high:
            raise UsageError(
                f"{name} is given {count} times (at most {high})", location=values[name][-1].where
            )
    return Params(values)


def _period(params: Params, state: AppState) -> tuple[date, date]:
    tz = state.settings.tz
    bounds = []
    for name in ("periodStart", "periodEnd"):
        value = params.one(name)
        assert value is not None  # cardinality checked
        days = parse_day_range(value.text, tz)
        if days is None:
            raise UsageError(f"{name} {value.text!r} is not a FHIR date or dateTime", location=value.where)
        bounds.append(days.first if name == "periodStart" else days.last)
    start, end = bounds
    if start > end:
        raise UsageError(f"periodStart {start} is after periodEnd {end}", location="periodStart")
    return start, end


def _as_of(params: Params, state: AppState) -> datetime:
    value = params.one("asOf")
    if value is None:
        return state.clock()
    try:
        return parse_instant(value.text, state.settings.tz)
    except ValueError:
        raise UsageError(
            f"asOf {value.text!r} is not a date or a dateTime with a time-zone offset", location=value.where
        ) from None


def _sources(params: Params) -> SourceMode:
    value = params.one("sources")
    if value is None:
        return "all"
    if value.text not in ("claims", "all"):
        raise UsageError(f"sources {value.text!r} must be claims or all", location=value.where)
    return cast(SourceMode, value.text)


def _subject(params: Params) -> str | None:
    value = params.one("subject")
    if value is None:
        return None
    match = _REFERENCE.match(value.text)
    if match is None or match.group(1) != "Patient":
        raise UsageError(
            f"subject {value.text!r} must look like Patient/<id> (Group and other subjects are not supported)",
            location=value.where,
        )
    return value.text


def _reporter(params: Params) -> str | None:
    value = params.one("reporter")
    if value is None:
        return None
    match = _REFERENCE.match(value.text)
    if match is None or match.group(1) not in REPORTER_TYPES:
        raise UsageError(
            f"reporter {value.text!r} must be a reference to one of {', '.join(REPORTER_TYPES)}",
            location=value.where,
        )
    return value.text


def _text(params: Params, name: str) -> str | None:
    value = params.one(name)
    return None if value is None else value.text


def _flag(params: Params, name: str) -> bool:
    value = params.one(name)
    if value is None:
        return False
    if value.text not in ("true", "false"):
        raise UsageError(f"{name} must be true or false", location=value.where)
    return value.text == "true"


# --------------------------------------------------------------------------------------------------
# measures


def _known_ids(state: AppState) -> list[str]:
    return sorted({m for m, _ in state.mappings.measures})


def _for_period(state: AppState, measure: str, period_end: date, where: str) -> MeasureSpec:
    try:
        return state.mappings.measure_for(measure, period_end)
    except KeyError:
        raise UsageError(
            f"measure {measure} has no version for a period ending {period_end}", location=where
        ) from None


def resolve_measure_id(state: AppState, measure_id: str, period_end: date, where: str = "id") -> MeasureSpec:
    """The MeasureSpec for ``measure_id`` (plain or ``<id>-<year>``) over a period ending ``period_end``."""
    if measure_id in _known_ids(state):
        return _for_period(state, measure_id, period_end, where)
    match = _VERSIONED_ID.match(measure_id)
    if match and (match.group(1), int(match.group(2))) in state.mappings.measures:
        spec = _for_period(state, match.group(1), period_end, where)
        if spec.year != int(match.group(2)):
            raise UsageError(
                f"Measure {measure_id} is the {match.group(2)} version; a period ending {period_end} uses "
                f"{spec.id}-{spec.year} (or ask for {spec.id})",
                location=where,
            )
        return spec
    raise NotFoundError(f"no Measure {measure_id!r} (known: {', '.join(_known_ids(state))})", location=where)


def resolve_measure_url(state: AppState, canonical: str, period_end: date, where: str) -> MeasureSpec:
    """The MeasureSpec for a canonical ``{base}/Measure/{id}[|version]``; a version must be the one the
    period picks."""
    url, _, version = canonical.partition("|")
    prefix = state.settings.canonical_base.rstrip("/") + "/Measure/"
    measure = url.removeprefix(prefix)
    if not url.startswith(prefix) or measure not in _known_ids(state):
        raise NotFoundError(f"no Measure with url {url!r} on this server", location=where)
    spec = _for_period(state, measure, period_end, where)
    if version and version != spec.version:
        raise UsageError(
            f"{canonical}: a period ending {period_end} uses version {spec.version} of {measure}",
            location=where,
        )
    return spec


def _measures(
    state: AppState, params: Params, period_end: date, *, default_all: bool
) -> tuple[MeasureSpec, ...]:
    specs: list[MeasureSpec] = []
    for value in params.all("measureId"):
        specs.append(resolve_measure_id(state, value.text, period_end, value.where))
    for value in params.all("measureUrl"):
        specs.append(resolve_measure_url(state, value.text, period_end, value.where))
    if not specs and default_all:
        # "every measure valid for the period": a version written for the year the period ends in.
        specs = [
            state.mappings.measures[(m, period_end.year)]
            for m in _known_ids(state)
            if (m, period_end.year) in state.mappings.measures
        ]
        if not specs:
            raise UsageError(
                f"no measure has a version for {period_end.year}; name one with measureId",
                location="periodEnd",
            )
    if not specs:
        raise UsageError("give measureId or measureUrl (1..*)", location="measureId")
    unique: dict[tuple[str, int], MeasureSpec] = {}
    for spec in specs:
        unique.setdefault((spec.id, spec.year), spec)
    return tuple(unique.values())


def _measure_resource(state: AppState, spec: MeasureSpec) -> Json:
    return build_measure(spec, state.settings.canonical_base, ccos=state.mappings.ccos)


# --------------------------------------------------------------------------------------------------
# reading and writing the store


def _served(body: bytes, source: str, version: int, ingested_at: int) -> Json:
    """A stored body as the service serves it (``meta.versionId``, ``lastUpdated``, ``source``)."""
    resource: Json = orjson.loads(body)
    meta = dict(resource.get("meta") or {})
    meta.update(versionId=str(version), lastUpdated=iso_instant(from_micros(ingested_at)), source=source)
    resource["meta"] = meta
    return resource


_CHUNK = 500


def read_versions(
    state: AppState, keys: Iterable[tuple[str, str, str, int]]
) -> dict[tuple[str, str, str, int], Json]:
    """Bodies of exact resource versions ``(source, type, id, version)``, served form."""
    wanted = set(keys)
    by_type: dict[str, list[str]] = {}
    for _source, rtype, rid, _version in wanted:
        by_type.setdefault(rtype, []).append(rid)
    out: dict[tuple[str, str, str, int], Json] = {}
    sql = text(
        "SELECT r.source, r.rtype, r.rid, r.version, r.ingested_at, b.body FROM resources r "
        "JOIN resource_bodies b ON b.rkey = r.rkey WHERE r.rtype = :rtype AND r.rid IN :rids AND r.deleted = 0"
    ).bindparams(bindparam("rids", expanding=True))
    with state.store.read() as conn:
        for rtype, rids in by_type.items():
            unique = sorted(set(rids))
            for i in range(0, len(unique), _CHUNK):
                for source, rt, rid, version, ingested, body in conn.execute(
                    sql, {"rtype": rtype, "rids": unique[i : i + _CHUNK]}
                ):
                    key = (str(source), str(rt), str(rid), int(version))
                    if key in wanted:
                        out[key] = _served(bytes(body), key[0], key[3], int(ingested))
    return out


def read_visible(
    state: AppState, keys: Iterable[tuple[str, str, str]], as_of: int
) -> dict[tuple[str, str, str], Json]:
    """Bodies of ``(source, type, id)`` as visible at ``as_of`` (µs), served form."""
    wanted = set(keys)
    by_type: dict[str, list[str]] = {}
    for _source, rtype, rid in wanted:
        by_type.setdefault(rtype, []).append(rid)
    out: dict[tuple[str, str, str], Json] = {}
    sql = text(
        "SELECT r.source, r.rtype, r.rid, r.version, r.ingested_at, b.body FROM resources r "
        f"JOIN resource_bodies b ON b.rkey = r.rkey WHERE r.rtype = :rtype AND r.rid IN :rids AND {visible('r')}"
    ).bindparams(bindparam("rids", expanding=True))
    with state.store.read() as conn:
        for rtype, rids in by_type.items():
            unique = sorted(set(rids))
            for i in range(0, len(unique), _CHUNK):
                for source, rt, rid, version, ingested, body in conn.execute(
                    sql, {"rtype": rtype, "rids": unique[i : i + _CHUNK], "as_of": as_of}
                ):
                    key = (str(source), str(rt), str(rid))
                    if key in wanted:
                        out[key] = _served(bytes(body), key[0], int(version), int(ingested))
    return out


def _current(state: AppState, source: str, rtype: str, rid: str) -> tuple[bytes, bool] | None:
    """The current version's body and deleted flag, or ``None`` when there is none."""
    with state.store.read() as conn:
        row = conn.execute(
            text(
                "SELECT b.body, r.deleted FROM resources r JOIN resource_bodies b ON b.rkey = r.rkey "
                "WHERE r.source = :s AND r.rtype = :t AND r.rid = :i AND r.superseded_at IS NULL"
            ),
            {"s": source, "t": rtype, "i": rid},
        ).first()
    return None if row is None else (bytes(row[0]), bool(row[1]))


def _store(state: AppState, source: str, resources: Iterable[Json]) -> WriteStats:
    items = [ParsedResource(r["resourceType"], r["id"], r) for r in resources]
    return state.store.write_batch(source, items, to_micros(state.clock()))


# --------------------------------------------------------------------------------------------------
# evaluation


@dataclass(frozen=True)
class EvaluateArgs:
    """A validated evaluation request (JSON round trip for jobs)."""

    measures: tuple[tuple[str, int], ...]
    period_start: date
    period_end: date
    #: subject | subject-list | population
    report_type: str
    subject: str | None
    source: str | None
    reporter: str | None
    sources: SourceMode
    as_of: datetime
    persist: bool
    fhir_base: str
    #: the caller's tenancy (:class:`fhir_adapter.auth.policy.EvaluationScope`): CCO ids, or ``None``
    tenant: tuple[str, ...] | None = None
    #: small-cell suppression threshold of population reports (:mod:`fhir_adapter.report.suppression`)
    suppress: int | None = None

    def to_json(self) -> Json:
        return {
            "tenant": EvaluationScope(self.tenant).to_json(),
            "measures": [list(m) for m in self.measures],
            "periodStart": self.period_start.isoformat(),
            "periodEnd": self.period_end.isoformat(),
            "reportType": self.report_type,
            "subject": self.subject,
            "source": self.source,
            "reporter": self.reporter,
            "sources": self.sources,
            "asOf": self.as_of.isoformat(),
            "persist": self.persist,
            "fhirBase": self.fhir_base,
            "suppress": self.suppress,
        }

    @classmethod
    def from_json(cls, data: Json) -> EvaluateArgs:
        return cls(
            tuple((str(m), int(y)) for m, y in data["measures"]),
            date.fromisoformat(data["periodStart"]),
            date.fromisoformat(data["periodEnd"]),
            str(data["reportType"]),
            data.get("subject"),
            data.get("source"),
            data.get("reporter"),
            cast(SourceMode, data["sources"]),
            datetime.fromisoformat(data["asOf"]),
            bool(data["persist"]),
            str(data["fhirBase"]),
            EvaluationScope.from_json(data.get("tenant")).ccos,
            data.get("suppress"),
        )


def evaluate_args(
    state: AppState, params: Params, measure_ids: list[str] | None, fhir_base: str
) -> EvaluateArgs:
    """Validate the parameters of ``$evaluate-measure`` (``measure_ids`` from the path) or ``$evaluate``
    (``measure_ids`` is ``None``: from ``measureId``/``measureUrl``)."""
    start, end = _period(params, state)
    subject = _subject(params)
    report_value = params.one("reportType")
    if report_value is None:
        report_type = "subject" if subject else "population"
    elif report_value.text in REPORT_TYPES:
        report_type = REPORT_TYPES[report_value.text]
    else:
        raise UsageError(
            f"reportType {report_value.text!r} must be one of {', '.join(REPORT_TYPES)}",
            location=report_value.where,
        )
    if report_type == "subject" and subject is None:
        raise UsageError("reportType subject needs subject=Patient/<id>", location="subject")
    if report_type != "subject" and subject is not None:
        raise UsageError(f"subject is not allowed with reportType {report_type}", location="subject")
    source = _text(params, "source")
    if source is not None and subject is None:
        raise UsageError("source only qualifies a subject", location="source")
    if measure_ids is not None:
        specs: tuple[MeasureSpec, ...] = tuple(resolve_measure_id(state, m, end) for m in measure_ids)
    else:
        specs = _measures(state, params, end, default_all=False)
    return EvaluateArgs(
        tuple((s.id, s.year) for s in specs),
        start,
        end,
        report_type,
        subject,
        source,
        _reporter(params),
        _sources(params),
        _as_of(params, state),
        _flag(params, "persist"),
        fhir_base,
        suppress=_suppress(params, state, report_type),
    )


def _suppress(params: Params, state: AppState, report_type: str) -> int | None:
    """``suppress``: a threshold (an integer ≥ 2) or ``true`` (11, CMS's 1–10 rule); the site's
    ``suppression_threshold`` is a floor a request cannot lower."""
    value = params.one("suppress")
    floor = state.settings.suppression_threshold if report_type == "population" else None
    if value is None:
        return floor
    if report_type != "population":
        raise UsageError("suppress applies to population (summary) reports only", location=value.where)
    text = value.text.strip().lower()
    if text == "true":
        asked = DEFAULT_THRESHOLD
    elif text.isdigit() and 2 <= int(text) <= 1_000_000:
        asked = int(text)
    else:
        raise UsageError(
            f"suppress {value.text[:32]!r}: give true or a threshold of at least 2", location=value.where
        )
    return max(asked, floor or 0)


def _context(state: AppState, reporter: str | None) -> ReportContext:
    ctx = report_context(state.settings, state.mappings.hash, state.clock)
    if reporter is not None:
        ctx = dataclasses.replace(ctx, reporter={"reference": reporter})
    return ctx


def _evaluate(
    state: AppState,
    spec: MeasureSpec,
    args: EvaluateArgs,
    *,
    subject: str | None,
    evidence: bool,
) -> Evaluation:
    request = EvaluationRequest(
        spec.id, args.period_start, args.period_end, args.sources, args.as_of, subject, args.source
    )
    try:
        return run_evaluation(
            state.settings,
            state.store,
            request,
            evidence=evidence,
            mappings=state.mappings,
            clock=state.clock,
        )
    except UsageError as exc:  # worded for the command line
        message = exc.message.replace("--source", "the source parameter").replace("--subject", "subject")
        raise UsageError(message, location=exc.location) from None


@dataclass
class Evaluated:
    """One measure's report and what it references (Lists, individual reports, evaluated resources)."""

    report: Json
    referenced: list[Json]
    stored: list[Json]


def _subject_child(ev: Evaluation, subject: str) -> ChildResult:
    if len(ev.children) != 1:
        raise NotFoundError(f"{subject} was not evaluated for {ev.spec.id}")
    return ev.children[0]


def _evaluated_resources(state: AppState, ev: Evaluation, child: ChildResult, report: Json) -> list[Json]:
    named = {str(r.get("reference")) for r in report.get("evaluatedResource", [])}
    keys = [
        (e.source, e.rtype, e.rid, e.version)
        for e in ev.evidence.get(child.person, [])
        if f"{e.rtype}/{e.rid}" in named
    ]
    found = read_versions(state, keys)
    return [found[k] for k in sorted(set(keys)) if k in found]


def _retag_subject_list(ev: Evaluation, bundle: Json, tag: str) -> Json:
    """Give a tenant's subject-list report and its individual reports ids of their own (the same
    inputs evaluated for OHA keep theirs), rewriting the Lists that reference them."""
    renamed = {
        f"MeasureReport/{individual_id(ev, c)}": f"MeasureReport/{report_id(ev, 'individual', c.person, tag)}"
        for c in ev.children
    }
    entries = bundle["entry"]
    report = entries[0]["resource"]
    report["id"] = report_id(ev, "subject-list", tag)
    entries[0]["fullUrl"] = f"MeasureReport/{report['id']}"
    bundle["id"] = report["id"] + "-bundle"
    for contained in report.get("contained", []):
        for entry in contained.get("entry", []):
            item = entry.get("item", {})
            item["reference"] = renamed.get(item.get("reference"), item.get("reference"))
    for entry in entries[1:]:
        new = renamed[f"MeasureReport/{entry['resource']['id']}"]
        entry["fullUrl"] = new
        entry["resource"]["id"] = new.removeprefix("MeasureReport/")
    return bundle


def evaluate_one(state: AppState, spec: MeasureSpec, args: EvaluateArgs, *, with_data: bool) -> Evaluated:
    """Evaluate one measure for ``args``; stores what must be stored (subject-list always, the report
    when ``persist``). A CCO caller's population and subject-list reports cover only the children
    the evaluation attributes to its CCOs (strata too), get ids of their own and are stored under
    its report source (:mod:`fhir_adapter.auth.policy`)."""
    scope = EvaluationScope(args.tenant)
    ev = _evaluate(state, spec, args, subject=args.subject, evidence=args.report_type != "population")
    if args.report_type != "subject":
        ev.children = scope.children(ev.children)
    ctx = _context(state, args.reporter)
    if args.report_type == "population":
        report = summary_report(ev, ctx)
        if scope.tag is not None:
            report["id"] = report_id(ev, "summary", scope.tag)
        if args.suppress is not None:
            url = extension_url(state.settings.canonical_base)
            report = suppress_report(report, args.suppress, extension_url=url)
        result = Evaluated(report, [], [])
    elif args.report_type == "subject":
        assert args.subject is not None
        child = _subject_child(ev, args.subject)
        report = individual_report(ev, ctx, child)
        if scope.tag is not None:
            report["id"] = report_id(ev, "individual", child.person, scope.tag)
        data = _evaluated_resources(state, ev, child, report) if with_data else []
        result = Evaluated(report, data, [])
    else:
        bundle = subject_list_bundle(ev, ctx)
        if scope.tag is not None:
            bundle = _retag_subject_list(ev, bundle, scope.tag)
        report, lists, individuals = stored_subject_list(bundle)
        result = Evaluated(report, [*lists, *individuals], [*lists, *individuals])
    if args.persist or result.stored:
        _store(state, scope.report_source(state.settings.report_source), [result.report, *result.stored])
    return result


def run_evaluate_measure(state: AppState, args: EvaluateArgs, progress: Progress | None = None) -> Json:
    """``$evaluate-measure``: one MeasureReport."""
    spec = state.mappings.measures[args.measures[0]]
    if progress:
        progress(f"evaluating {spec.id} {spec.version}")
    return evaluate_one(state, spec, args, with_data=False).report


def run_evaluate(state: AppState, args: EvaluateArgs, progress: Progress | None = None) -> Json:
    """DEQM ``$evaluate``: Parameters with one Bundle (organised by subject, or the population) of one
    report per measure followed by what the reports reference."""
    reports: list[Json] = []
    referenced: list[Json] = []
    for spec in (state.mappings.measures[m] for m in args.measures):
        if progress:
            progress(f"evaluating {spec.id} {spec.version}")
        result = evaluate_one(state, spec, args, with_data=True)
        reports.append(result.report)
        referenced.extend(result.referenced)
    key = hashlib.sha256("|".join(r["id"] for r in reports).encode()).hexdigest()[:40]
    bundle = evaluate_bundle(f"evaluate-{key}", [*reports, *referenced], args.fhir_base)
    return parameters("return", [bundle])


# --------------------------------------------------------------------------------------------------
# care gaps


@dataclass(frozen=True)
class CareGapsArgs:
    measures: tuple[tuple[str, int], ...]
    period_start: date
    period_end: date
    statuses: tuple[str, ...]
    subject: str | None
    source: str | None
    organization: str | None
    reporter: str | None
    sources: SourceMode
    as_of: datetime
    fhir_base: str
    #: the caller's tenancy (:class:`fhir_adapter.auth.policy.EvaluationScope`): CCO ids, or ``None``
    tenant: tuple[str, ...] | None = None

    def to_json(self) -> Json:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data.update(
            tenant=EvaluationScope(self.tenant).to_json(),
            measures=[list(m) for m in self.measures],
            statuses=list(self.statuses),
            period_start=self.period_start.isoformat(),
            period_end=self.period_end.isoformat(),
            as_of=self.as_of.isoformat(),
        )
        return data

    @classmethod
    def from_json(cls, data: Json) -> CareGapsArgs:
        return cls(
            tuple((str(m), int(y)) for m, y in data["measures"]),
            date.fromisoformat(data["period_start"]),
            date.fromisoformat(data["period_end"]),
            tuple(data["statuses"]),
            data.get("subject"),
            data.get("source"),
            data.get("organization"),
            data.get("reporter"),
            cast(SourceMode, data["sources"]),
            datetime.fromisoformat(data["as_of"]),
            str(data["fhir_base"]),
            EvaluationScope.from_json(data.get("tenant")).ccos,
        )


def care_gaps_args(state: AppState, params: Params, fhir_base: str) -> CareGapsArgs:
    start, end = _period(params, state)
    statuses = []
    for value in params.all("status"):
        if value.text == "prospective-gap":
            raise UsageError(
                "status prospective-gap is not supported by this server: it reports open-gap and closed-gap only",
                location=value.where,
            )
        if value.text not in SUPPORTED_STATUSES:
            raise UsageError(f"status {value.text!r} must be open-gap or closed-gap", location=value.where)
        if value.text not in statuses:
            statuses.append(value.text)
    subject = _subject(params)
    organization = None
    org_value = params.one("organization")
    if org_value is not None:
        cco = org_value.text.removeprefix("Organization/")
        known = {c.id for c in state.mappings.ccos}
        if cco not in known:
            raise UsageError(
                f"organization {org_value.text!r} is not a CCO of this server (known: {', '.join(sorted(known))})",
                location=org_value.where,
            )
        organization = cco
    if (subject is None) == (organization is None):
        raise UsageError(
            "give subject (Patient/<id>) or organization (a CCO), one of them (DEQM care-gaps conformance "
            "requirement 1; practitioner is not supported)",
            location="subject",
        )
    source = _text(params, "source")
    if source is not None and subject is None:
        raise UsageError("source only qualifies a subject", location="source")
    return CareGapsArgs(
        tuple((s.id, s.year) for s in _measures(state, params, end, default_all=True)),
        start,
        end,
        tuple(sorted(statuses)),
        subject,
        source,
        organization,
        _reporter(params),
        _sources(params),
        _as_of(params, state),
        fhir_base,
    )


def run_care_gaps(state: AppState, args: CareGapsArgs, progress: Progress | None = None) -> Json:
    """Evaluate each measure, keep the subject or the organisation's children, and build one gaps
    document per child with a gap of a requested status."""
    eval_args = EvaluateArgs(
        args.measures, args.period_start, args.period_end, "subject", args.subject, args.source,
        args.reporter, args.sources, args.as_of, False, args.fhir_base, args.tenant,
    )  # fmt: skip
    scope = EvaluationScope(args.tenant)
    by_person: dict[str, list[tuple[Evaluation, ChildResult]]] = {}
    as_of = to_micros(args.as_of)
    for spec in (state.mappings.measures[m] for m in args.measures):
        if progress:
            progress(f"evaluating {spec.id} {spec.version}")
        ev = _evaluate(state, spec, eval_args, subject=args.subject, evidence=True)
        as_of = ev.as_of
        # A subject was checked against the caller's tenancy when the request came in.
        for child in ev.children if args.subject is not None else scope.children(ev.children):
            if args.organization is not None and child.cco != args.organization:
                continue
            by_person.setdefault(child.person, []).append((ev, child))
    with_gaps = {
        person: results
        for person, results in by_person.items()
        if any(child_gaps(child, args.statuses) for _ev, child in results)
    }
    if progress:
        progress(f"building {len(with_gaps)} gaps documents")
    patients = read_visible(
        state, [(r[0][1].subject_source, "Patient", r[0][1].subject_id) for r in with_gaps.values()], as_of
    )
    ctx = _context(state, args.reporter)
    bundles = []
    for results in with_gaps.values():
        first = results[0][1]
        bundle = gaps_bundle(
            results,
            ctx,
            statuses=args.statuses,
            fhir_base=args.fhir_base,
            patient=patients.get((first.subject_source, "Patient", first.subject_id)),
        )
        if bundle is not None:
            bundles.append(bundle)
    return parameters("return", bundles)


# --------------------------------------------------------------------------------------------------
# routes


def _fhir_base(request: Request) -> str:
    return f"{base_url(request)}/fhir"


def _check_id(measure_id: str) -> None:
    if not ID_RE.match(measure_id):
        raise UsageError(f"{measure_id!r} is not a FHIR id", location="id")


def _subject_source(state: AppState, policy: Policy, args: EvaluateArgs | CareGapsArgs) -> str | None:
    if args.subject is None:
        return args.source
    window = Window(args.period_start, args.period_end)
    return policy.resolve_subject(state.store, args.subject, args.source, window, to_micros(args.as_of))


def _tenancy(state: AppState, policy: Policy, args: EvaluateArgs) -> EvaluateArgs:
    """The request as this caller may make it: its evaluation scope (403 for EHR clients), and the
    subject resolved among the Patient records the caller may evaluate (attributed to one of its
    CCOs during the measurement period, as the store was at the data cut)."""
    scope = policy.evaluation_scope()
    return dataclasses.replace(args, tenant=scope.ccos, source=_subject_source(state, policy, args))


def _evaluate_request(
    state: AppState, policy: Policy, params: Params, measure_ids: list[str] | None, fhir_base: str
) -> EvaluateArgs:
    return _tenancy(state, policy, evaluate_args(state, params, measure_ids, fhir_base))


def _care_gaps_request(state: AppState, policy: Policy, params: Params, fhir_base: str) -> CareGapsArgs:
    args = care_gaps_args(state, params, fhir_base)
    if args.organization is not None:
        policy.check_organization(args.organization)
    scope = policy.evaluation_scope()
    return dataclasses.replace(args, tenant=scope.ccos, source=_subject_source(state, policy, args))


async def _submit(request: Request, kind: str, payload: Json, owner: str) -> Response:
    job_id = await run_in_threadpool(request.app.state.jobs.submit, kind, payload, owner)
    return accepted(request, job_id)


_EVALUATE_MEASURE = "/fhir/Measure/{measure_id}/$evaluate-measure"
_EVALUATE_MEASURE_SUMMARY = "Evaluate a measure (R4 $evaluate-measure): one MeasureReport"


@router.get(_EVALUATE_MEASURE, operation_id="evaluate_measure_get", summary=_EVALUATE_MEASURE_SUMMARY)
@router.post(_EVALUATE_MEASURE, operation_id="evaluate_measure_post", summary=_EVALUATE_MEASURE_SUMMARY)
async def evaluate_measure(
    measure_id: str, request: Request, state: StateDep, caller: CallerDep, policy: PolicyDep
) -> Response:
    require(caller, "MeasureReport", "r")
    _check_id(measure_id)
    params = await read_params(request, EVALUATE_MEASURE_PARAMS, "evaluate-measure")
    args = await run_in_threadpool(
        _evaluate_request, state, policy, params, [measure_id], _fhir_base(request)
    )
    if args.subject:  # an individual report reads that child's records
        subject = args.subject.split("/", 1)
        audit.note(
            request, [audit.Entity("Measure", measure_id, "E"), audit.Entity(subject[0], subject[-1], "R")]
        )
    if wants_async(request):
        return await _submit(request, "evaluate-measure", args.to_json(), caller.client_id)
    return FhirResponse(await run_in_threadpool(run_evaluate_measure, state, args))


@router.post("/fhir/Measure/$evaluate", summary="Evaluate measures (DEQM $evaluate): Parameters of Bundles")
async def evaluate(request: Request, state: StateDep, caller: CallerDep, policy: PolicyDep) -> Response:
    require(caller, "MeasureReport", "r")
    params = await read_params(request, EVALUATE_PARAMS, "evaluate")
    args = await run_in_threadpool(_evaluate_request, state, policy, params, None, _fhir_base(request))
    if wants_async(request):
        return await _submit(request, "evaluate", args.to_json(), caller.client_id)
    return FhirResponse(await run_in_threadpool(run_evaluate, state, args))


def _data_requirements(state: AppState, measure_id: str, params: Params) -> Json:
    start, end = _period(params, state)
    spec = resolve_measure_id(state, measure_id, end)
    return build_data_requirements(spec, state.settings.canonical_base, start, end)


@router.get(
    "/fhir/Measure/{measure_id}/$data-requirements",
    summary="Data requirements of a measure (R4 $data-requirements): a module-definition Library",
)
async def data_requirements(
    measure_id: str, request: Request, state: StateDep, caller: CallerDep
) -> Response:
    require(caller, "Measure", "r")
    _check_id(measure_id)
    params = await read_params(request, DATA_REQUIREMENTS_PARAMS, "data-requirements")
    return FhirResponse(await run_in_threadpool(_data_requirements, state, measure_id, params))


def _measure_resolver(state: AppState) -> Callable[[str, str | None, str | None], Json]:
    cache: dict[tuple[str, int], Json] = {}

    def resolve(url: str, version: str | None, period_end: str | None) -> Json:
        prefix = state.settings.canonical_base.rstrip("/") + "/Measure/"
        measure = url.removeprefix(prefix)
        if not url.startswith(prefix) or measure not in _known_ids(state):
            raise UsageError(f"{url!r} is not a Measure of this server")
        if version:
            found = [
                s for (m, _y), s in state.mappings.measures.items() if m == measure and s.version == version
            ]
            if not found:
                raise UsageError(f"{measure} has no version {version!r}")
            spec = found[0]
        else:
            days = parse_day_range(period_end, state.settings.tz) if period_end else None
            if days is None:
                raise UsageError(
                    "measure has no version and the report's period.end gives no date to pick one"
                )
            spec = _for_period(state, measure, days.last, "MeasureReport.measure")
        key = (spec.id, spec.year)
        if key not in cache:
            cache[key] = _measure_resource(state, spec)
        return cache[key]

    return resolve


def _store_submission(state: AppState, source: str, submission: Submission) -> Json:
    measure_ext = f"{state.settings.canonical_base.rstrip('/')}/StructureDefinition/submitted-for-measure"
    previous = _current(state, source, "List", manifest_id(submission.subject))
    manifest = orjson.loads(previous[0]) if previous and not previous[1] else None
    plan = plan_bundle(submission, manifest, measure_ext)
    stats = state.store.write_batch(source, list(plan.writes), to_micros(state.clock()))
    # The counts are of the bundle's own resources: take the manifest out again.
    if previous is None:
        stats.created -= 1
    elif not previous[1] and previous[0] == canonical_bytes(plan.manifest):
        stats.unchanged -= 1
    else:
        stats.updated -= 1
    return bundle_outcome(submission, plan, stats)


def _submit_data(state: AppState, caller: Caller, body: Any, rules: QualityRules | None) -> Json:
    quality = None
    if rules is not None:

        def quality(resource: Json, linked: Collection[str]) -> list[Issue]:
            return check_quality(resource, rules, linked_encounters=linked)

    submissions = parse_submission(body, _measure_resolver(state), quality)
    for submission in submissions:  # each resource is created or updated under the caller's source
        for item in submission.items:
            require(caller, item.rtype, "c")
            require(caller, item.rtype, "u")
    return outcomes_parameters([_store_submission(state, caller.source, s) for s in submissions])


@router.post(
    "/fhir/Measure/$deqm-submit-data",
    summary="Submit data-collection MeasureReports and data of interest (DEQM STU5 $deqm-submit-data)",
)
async def submit_data(request: Request, state: StateDep, caller: CallerDep) -> Response:
    require(caller, "MeasureReport", "c")
    media = request.headers.get("content-type", "").split(";", maxsplit=1)[0].strip().lower()
    if media not in JSON_TYPES:
        raise UnsupportedMediaTypeError(
            f"send a Parameters resource as application/fhir+json, not {media or 'nothing'}"
        )
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise UsageError(f"the body is not JSON: {exc}") from None
    rules = await run_in_threadpool(quality_rules, request.app)
    return FhirResponse(await run_in_threadpool(_submit_data, state, caller, body, rules))


_CARE_GAPS_SUMMARY = "Gaps in care (DEQM $care-gaps): Parameters of gaps-in-care document Bundles"


@router.get("/fhir/Measure/$care-gaps", operation_id="care_gaps_get", summary=_CARE_GAPS_SUMMARY)
@router.post("/fhir/Measure/$care-gaps", operation_id="care_gaps_post", summary=_CARE_GAPS_SUMMARY)
async def care_gaps(request: Request, state: StateDep, caller: CallerDep, policy: PolicyDep) -> Response:
    require(caller, "MeasureReport", "r")
    params = await read_params(request, CARE_GAPS_PARAMS, "care-gaps")
    args = await run_in_threadpool(_care_gaps_request, state, policy, params, _fhir_base(request))
    if wants_async(request):
        return await _submit(request, "care-gaps", args.to_json(), caller.client_id)
    return FhirResponse(await run_in_threadpool(run_care_gaps, state, args))


# --------------------------------------------------------------------------------------------------
# jobs


def register_jobs(app: FastAPI) -> None:
    """Job kinds ``evaluate-measure``, ``evaluate`` and ``care-gaps`` (their results are the synchronous
    answers)."""
    state: AppState = app.state.adapter

    def evaluate_measure_job(ctx: JobContext, request: Json) -> JobResult:
        return JobResult(
            orjson.dumps(run_evaluate_measure(state, EvaluateArgs.from_json(request), ctx.progress))
        )

    def evaluate_job(ctx: JobContext, request: Json) -> JobResult:
        return JobResult(orjson.dumps(run_evaluate(state, EvaluateArgs.from_json(request), ctx.progress)))

    def care_gaps_job(ctx: JobContext, request: Json) -> JobResult:
        return JobResult(orjson.dumps(run_care_gaps(state, CareGapsArgs.from_json(request), ctx.progress)))

    app.state.jobs.register("evaluate-measure", evaluate_measure_job)
    app.state.jobs.register("evaluate", evaluate_job)
    app.state.jobs.register("care-gaps", care_gaps_job)


__all__ = [
    "CAPABILITIES",
    "CareGapsArgs",
    "EvaluateArgs",
    "read_params",
    "register_jobs",
    "resolve_measure_id",
    "resolve_measure_url",
    "router",
    "run_care_gaps",
    "run_evaluate",
    "run_evaluate_measure",
]
