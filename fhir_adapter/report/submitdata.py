"""``Measure/$deqm-submit-data``: check submitted bundles and plan what to store.

Da Vinci DEQM STU5 (5.0.0), ``HL7/davinci-deqm``:

- OperationDefinition ``http://hl7.org/fhir/us/davinci-deqm/OperationDefinition/submit-data``, code
  ``deqm-submit-data``, type level on Measure: ``bundle`` 1..*; "These Bundles SHALL contain 1..* DEQM
  Data Exchange MeasureReports with data-of-interest and SHOULD be for a single subject".
- Data Exchange MeasureReport profile (``datax-measurereport-deqm``): R4 ``type = data-collection``
  (R5 says ``data-exchange``; that code is refused here with a message saying so), ``subject``
  1..1, ``measure`` canonical, ``extension-submitDataUpdateType`` 1..1. Each report is checked by
  :func:`fhir_adapter.report.checks.check_measure_report` against the Measure it names.
- Update types (CodeSystem ``http://hl7.org/fhir/us/davinci-deqm/CodeSystem/update-type``):
  ``incremental`` — the payload holds only new and updated resources, which update the previous
  payload; ``snapshot`` — the payload holds everything and "entirely replaces the previous payload".
  fhir-contract.md: incremental needs stable ids plus ``meta.source``.

This module is pure: :func:`parse_submission` validates (any problem raises
:class:`~fhir_adapter.errors.UsageError`, HTTP 400, with a FHIRPath-style location, before anything is
stored) and :func:`plan_bundle` decides, from the caller's previous *manifest*, what one bundle
writes and what it tombstones.

**The snapshot rule** (the project's reading of "replaces the previous payload"; UNVERIFIED beyond
DEQM's one-line definition). Every accepted bundle updates a manifest ``List`` stored under the
caller's source, one per subject (id :func:`manifest_id`), whose entries are the resources this source
submitted for that subject through ``$deqm-submit-data``, each tagged with the measure URLs (without
version) it was submitted for. A *snapshot* bundle for measures M tombstones (stores a deletion of)
every resource of the same source that (a) the manifest lists for that subject, (b) was submitted
only for measures in M, and (c) is not in the snapshot. Resources pushed any other way are never
touched, nor are resources also submitted for another measure. An *incremental* bundle only
upserts and adds to the manifest. Tombstones, the bundle's resources and the new manifest are one
transaction. Two concurrent snapshots for one subject may race on the manifest (the later one wins).
DEQM's "SHOULD be for a single subject" is enforced (one subject per bundle), because the snapshot
rule is per subject.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from fhir_adapter.errors import UsageError
from fhir_adapter.fhir.outcome import Issue, operation_outcome
from fhir_adapter.fhir.references import parse_reference
from fhir_adapter.fhir.resources import ID_RE, check_resource
from fhir_adapter.ingest.files import rewrite_references
from fhir_adapter.ingest.quality import linked_encounters, relocate
from fhir_adapter.report.checks import (
    SUBMIT_DATA_UPDATE_TYPE_EXT,
    SUBMIT_DATA_UPDATE_TYPES,
    check_measure_report,
)
from fhir_adapter.store.db import ParsedResource, WriteStats

Json = dict[str, Any]
#: ``resolve(url, version or None, period end text or None)`` → the FHIR Measure the report names;
#: raises :class:`UsageError` when there is none.
MeasureResolver = Callable[[str, str | None, str | None], Json]
#: ``check(resource, ids of Encounters that Conditions of the bundle name)`` → data-quality issues with
#: expressions relative to the resource (``Encounter.diagnosis``).
QualityCheck = Callable[[Json, Collection[str]], list[Issue]]
#: Problems listed in one 400 answer at most.
MAX_PROBLEMS = 20


@dataclass(frozen=True)
class Submission:
    """One validated ``bundle`` parameter."""

    index: int
    #: FHIRPath-style location of the Bundle in the request
    where: str
    update_type: str
    #: ``Patient/<id>``
    subject: str
    #: measure URLs (without ``|version``) of the bundle's data-collection reports, sorted
    measures: tuple[str, ...]
    items: tuple[ParsedResource, ...]
    warnings: tuple[Issue, ...]


@dataclass(frozen=True)
class Plan:
    """What storing one submission writes (one transaction)."""

    writes: tuple[ParsedResource, ...]
    tombstoned: tuple[tuple[str, str], ...]
    manifest: Json


def parse_submission(
    body: Any, resolve: MeasureResolver, quality: QualityCheck | None = None
) -> list[Submission]:
    """Validate the operation's ``Parameters`` body; every bundle must pass before any is stored.
    ``quality`` (e.g. :func:`fhir_adapter.ingest.quality.check_quality` with the loaded rules) adds the
    data-quality warnings of each resource to its bundle's acknowledgement (spec §5)."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise UsageError(
            "the body must be a Parameters resource with 1..* bundle parameters", location="Parameters"
        )
    params = body.get("parameter")
    if not isinstance(params, list) or not params:
        raise UsageError("no bundle parameter (bundle is 1..*)", location="Parameters.parameter")
    out = []
    for index, param in enumerate(params):
        where = f"Parameters.parameter[{index}]"
        if not isinstance(param, dict) or param.get("name") != "bundle":
            name = param.get("name") if isinstance(param, dict) else None
            raise UsageError(
                f"unknown parameter {name!r}: $deqm-submit-data takes only bundle (1..*)", location=where
            )
        bundle = param.get("resource")
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            raise UsageError("a bundle parameter must carry a Bundle resource", location=f"{where}.resource")
        out.append(_parse_bundle(index, f"{where}.resource", bundle, resolve, quality))
    return out


def _entries(where: str, bundle: Json) -> list[tuple[str, Json]]:
    entries = bundle.get("entry")
    if not isinstance(entries, list) or not entries:
        raise UsageError("the Bundle has no entries", location=f"{where}.entry")
    ids: dict[str, tuple[str, str]] = {}
    found: list[tuple[str, Json]] = []
    seen: dict[tuple[str, str], str] = {}
    for j, entry in enumerate(entries):
        ewhere = f"{where}.entry[{j}]"
        if not isinstance(entry, dict):
            raise UsageError("entry is not an object", location=ewhere)
        request = entry.get("request")
        if isinstance(request, dict) and request.get("method") == "DELETE":
            raise UsageError(
                "DELETE entries are not submitted data (a snapshot removes what it leaves out)",
                location=f"{ewhere}.request",
            )
        resource = entry.get("resource")
        full_url = entry.get("fullUrl")
        if isinstance(resource, dict) and "id" not in resource and isinstance(full_url, str):
            candidate = full_url.removeprefix("urn:uuid:")
            if full_url.startswith("urn:uuid:") and ID_RE.match(candidate):
                resource = {**resource, "id": candidate}
        problem = check_resource(resource)
        if problem:
            raise UsageError(problem, location=f"{ewhere}.resource")
        assert isinstance(resource, dict)
        key = (str(resource["resourceType"]), str(resource["id"]))
        if key in seen:
            raise UsageError(
                f"{key[0]}/{key[1]} is in the Bundle twice (also at {seen[key]})", location=ewhere
            )
        seen[key] = ewhere
        if isinstance(full_url, str) and full_url:
            ids[full_url] = key
        found.append((f"{ewhere}.resource", resource))
    return [(w, rewrite_references(r, ids) if ids else r) for w, r in found]


def _update_type(where: str, report: Json) -> str:
    found = [
        e
        for e in report.get("extension", [])
        if isinstance(e, dict) and e.get("url") == SUBMIT_DATA_UPDATE_TYPE_EXT
    ]
    if len(found) != 1:
        raise UsageError(
            f"needs exactly one {SUBMIT_DATA_UPDATE_TYPE_EXT} extension (found {len(found)})",
            location=f"{where}.extension",
        )
    value = found[0].get("valueCode")
    if value not in SUBMIT_DATA_UPDATE_TYPES:
        raise UsageError(
            f"submitDataUpdateType {value!r} is not supported: this server takes incremental or snapshot",
            location=f"{where}.extension",
        )
    return str(value)


def _parse_bundle(
    index: int, where: str, bundle: Json, resolve: MeasureResolver, quality: QualityCheck | None
) -> Submission:
    resources = _entries(where, bundle)
    reports = [(w, r) for w, r in resources if r["resourceType"] == "MeasureReport"]
    if not reports:
        raise UsageError(
            "the Bundle holds no MeasureReport (1..* data-collection reports required)", location=where
        )
    update_types: set[str] = set()
    subjects: set[str] = set()
    measures: set[str] = set()
    for rwhere, report in reports:
        rtype = report.get("type")
        if rtype != "data-collection":
            hint = (
                " (data-exchange is the R5 code; R4 says data-collection)" if rtype == "data-exchange" else ""
            )
            raise UsageError(
                f"MeasureReport type {rtype!r}: $deqm-submit-data takes data-collection reports{hint}",
                location=f"{rwhere}.type",
            )
        target = parse_reference(
            report.get("subject", {}).get("reference") if isinstance(report.get("subject"), dict) else None
        )
        if target is None or target[0] != "Patient":
            raise UsageError("subject must reference a Patient (1..1)", location=f"{rwhere}.subject")
        subjects.add(f"Patient/{target[1]}")
        canonical = report.get("measure")
        if not isinstance(canonical, str) or not canonical:
            raise UsageError("measure (canonical) is missing", location=f"{rwhere}.measure")
        url, _, version = canonical.partition("|")
        period = report.get("period")
        end = period.get("end") if isinstance(period, dict) else None
        try:
            measure = resolve(url, version or None, end if isinstance(end, str) else None)
        except UsageError as exc:
            raise UsageError(exc.message, location=f"{rwhere}.measure") from None
        measures.add(url)
        update_types.add(_update_type(rwhere, report))
        problems = check_measure_report(report, measure)
        if problems:
            shown = problems[:MAX_PROBLEMS]
            more = f" (and {len(problems) - len(shown)} more)" if len(problems) > len(shown) else ""
            raise UsageError("not a DEQM data-collection report: " + "; ".join(shown) + more, location=rwhere)
    if len(update_types) != 1:
        raise UsageError("the Bundle's MeasureReports disagree on submitDataUpdateType", location=where)
    if len(subjects) != 1:
        raise UsageError(
            f"the Bundle's MeasureReports name several subjects ({', '.join(sorted(subjects))}); send one "
            "subject per bundle (DEQM: SHOULD, required here because a snapshot replaces per subject)",
            location=where,
        )
    update_type = update_types.pop()
    warnings: list[Issue] = []
    linked = linked_encounters(r for _w, r in resources) if quality else set()
    for rwhere, resource in resources:
        meta = resource.get("meta")
        if update_type == "incremental" and not (
            isinstance(meta, dict) and isinstance(meta.get("source"), str) and meta["source"]
        ):
            warnings.append(
                Issue(
                    "warning",
                    "incomplete",
                    f"{resource['resourceType']}/{resource['id']} has no meta.source; incremental updates "
                    "need stable ids and meta.source to be matched with earlier submissions",
                    rwhere,
                )
            )
        if quality is not None:
            warnings.extend(relocate(issue, rwhere) for issue in quality(resource, linked))
    items = tuple(ParsedResource(r["resourceType"], r["id"], r) for _w, r in resources)
    return Submission(
        index, where, update_type, subjects.pop(), tuple(sorted(measures)), items, tuple(warnings)
    )


# --------------------------------------------------------------------------------------------------
# manifests and the snapshot rule


def manifest_id(subject: str) -> str:
    """The id of the caller's manifest List for ``subject`` (``Patient/<id>``)."""
    return "deqm-submitted-" + hashlib.sha256(subject.encode()).hexdigest()[:40]


def manifest_entries(manifest: Json | None, measure_ext: str) -> dict[tuple[str, str], set[str]]:
    """(type, id) → measure URLs recorded in a manifest List (empty for ``None``)."""
    out: dict[tuple[str, str], set[str]] = {}
    if manifest is None:
        return out
    for entry in manifest.get("entry", []):
        target = parse_reference(entry.get("item", {}).get("reference")) if isinstance(entry, dict) else None
        if target is None:
            continue
        out[target] = {
            str(e["valueCanonical"])
            for e in entry.get("extension", [])
            if isinstance(e, dict) and e.get("url") == measure_ext and "valueCanonical" in e
        }
    return out


def plan_bundle(submission: Submission, previous: Json | None, measure_ext: str) -> Plan:
    """Apply the update type (module docstring) to the previous manifest: the resources to write
    (the bundle's, the tombstones, the new manifest) and the keys tombstoned."""
    recorded = manifest_entries(previous, measure_ext)
    submitted = {(item.rtype, item.rid) for item in submission.items}
    covered = set(submission.measures)
    tombstoned: list[tuple[str, str]] = []
    if submission.update_type == "snapshot":
        for key in sorted(recorded):
            rest = recorded[key] - covered
            if key not in submitted and not rest:
                tombstoned.append(key)
                del recorded[key]
            else:
                recorded[key] = rest
    for key in submitted:
        recorded[key] = recorded.get(key, set()) | covered
    manifest = _manifest(submission.subject, recorded, measure_ext)
    tombstones = [ParsedResource(t, i, {"resourceType": t, "id": i}, deleted=True) for t, i in tombstoned]
    writes = (*submission.items, *tombstones, ParsedResource("List", manifest["id"], manifest))
    return Plan(writes, tuple(tombstoned), manifest)


def _manifest(subject: str, recorded: dict[tuple[str, str], set[str]], measure_ext: str) -> Json:
    entries = [
        {
            "extension": [{"url": measure_ext, "valueCanonical": m} for m in sorted(recorded[key])],
            "item": {"reference": f"{key[0]}/{key[1]}"},
        }
        for key in sorted(recorded)
    ]
    manifest: Json = {
        "resourceType": "List",
        "id": manifest_id(subject),
        "status": "current",
        "mode": "working",
        "title": f"Resources submitted with $deqm-submit-data for {subject}",
        "code": {"text": "deqm-submit-data manifest"},
        "subject": {"reference": subject},
    }
    if entries:
        manifest["entry"] = entries
    else:
        manifest["emptyReason"] = {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/list-empty-reason", "code": "nilknown"}
            ]
        }
    return manifest


def bundle_outcome(submission: Submission, plan: Plan, stats: WriteStats) -> Json:
    """The OperationOutcome of one stored bundle: counts of the bundle's own resources (the manifest
    excluded), the tombstones, and the warnings."""
    tombstones = ", ".join(f"{t}/{i}" for t, i in plan.tombstoned) or "none"
    summary = (
        f"bundle {submission.index} ({submission.update_type}, {submission.subject}, "
        f"{', '.join(submission.measures)}): {len(submission.items)} resources received; "
        f"created {stats.created}, updated {stats.updated}, unchanged {stats.unchanged}; "
        f"tombstoned {stats.deleted} resource(s) of the previous payload: {tombstones}"
    )
    issues = [Issue("information", "informational", summary, submission.where), *submission.warnings]
    return operation_outcome(issues)


def outcomes_parameters(outcomes: Sequence[Json]) -> Json:
    """The operation's answer: ``Parameters`` with one ``outcome`` (an OperationOutcome) per bundle,
    in request order."""
    return {"resourceType": "Parameters", "parameter": [{"name": "outcome", "resource": o} for o in outcomes]}


__all__ = [
    "MeasureResolver",
    "Plan",
    "QualityCheck",
    "Submission",
    "bundle_outcome",
    "manifest_entries",
    "manifest_id",
    "outcomes_parameters",
    "parse_submission",
    "plan_bundle",
]
