"""DEQM gaps-in-care documents (``Measure/$care-gaps``) from evaluations.

Da Vinci DEQM STU5 (5.0.0), ``HL7/davinci-deqm``:

- operation ``http://hl7.org/fhir/us/davinci-deqm/OperationDefinition/care-gaps`` returns a
  ``Parameters`` with one ``return`` Bundle per subject;
- each Bundle follows the Gaps In Care Bundle profile (``gaps-bundle-deqm``): ``type = document``,
  ``identifier`` and ``timestamp`` (R4 bdl-9, bdl-10), the Composition first (bdl-11);
- the Composition (``gaps-composition-deqm``) has ``type`` LOINC 96315-7 "Gaps in care report",
  ``subject`` the patient, ``date``, ``author`` (the reporter) and one ``section`` per measure whose
  ``focus`` is the DEQM individual MeasureReport and whose ``entry`` (1..*) references the
  DetectedIssue(s);
- each DetectedIssue (``gaps-detectedissue-deqm``) carries the modifier extension
  ``extension-gapStatus`` (CodeableConcept from ``http://hl7.org/fhir/us/davinci-deqm/CodeSystem/gaps-status``:
  ``open-gap`` | ``closed-gap``), ``code`` ``v3-ActCode#CAREGAP``, ``patient`` and
  ``evidence.detail`` → the individual MeasureReport (as in the STU5 example
  ``Bundle-single-gaps-open-indv-report01``).

Gap rule (spec §4 "Gap list", DESIGN.md §5): only a child in a group's denominator and not
excluded has a gap in that group; a positive proportion measure (``improvementNotation =
increase``) has an *open* gap when the child is not in the numerator and a *closed* gap when it is.
Children outside the denominator never get a DetectedIssue. Our measures have several groups
(``all-enrolled``, ``identified-need``): one DetectedIssue per group with a gap, each naming its group
in the project's own ``measure-group`` extension (UNVERIFIED: DEQM defines gaps per measure, not per
group). ``prospective-gap`` is not supported.
"""

from __future__ import annotations

import hashlib
import html
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from fhir_adapter.fhir.dates import iso_instant
from fhir_adapter.measure.engine import REASON_TEXT
from fhir_adapter.report.measurereport import ReportContext, individual_report
from fhir_adapter.store.evaluate import ChildResult, Evaluation, GroupResult

Json = dict[str, Any]

DEQM = "http://hl7.org/fhir/us/davinci-deqm/StructureDefinition/"
GAPS_BUNDLE_PROFILE = DEQM + "gaps-bundle-deqm"
GAPS_COMPOSITION_PROFILE = DEQM + "gaps-composition-deqm"
GAPS_DETECTED_ISSUE_PROFILE = DEQM + "gaps-detectedissue-deqm"
GAP_STATUS_EXT = DEQM + "extension-gapStatus"
GAP_STATUS_SYSTEM = "http://hl7.org/fhir/us/davinci-deqm/CodeSystem/gaps-status"
#: Composition.type fixed by gaps-composition-deqm.
GAPS_REPORT_TYPE = {
    "coding": [{"system": "http://loinc.org", "code": "96315-7", "display": "Gaps in care report"}]
}
#: DetectedIssue.code of a care gap (STU5 examples).
CARE_GAP_CODE = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
            "code": "CAREGAP",
            "display": "Caregap",
        }
    ]
}
#: The gap statuses this server reports (``prospective-gap`` is defined by DEQM but not supported).
SUPPORTED_STATUSES = ("open-gap", "closed-gap")
STATUS_DISPLAY = {"open-gap": "Open Gap", "closed-gap": "Closed Gap"}


def gap_status(result: GroupResult) -> str | None:
    """``open-gap`` / ``closed-gap`` for a denominator child that is not excluded, else ``None``."""
    if not result.den or result.denex:
        return None
    return "closed-gap" if result.num else "open-gap"


def child_gaps(child: ChildResult, statuses: Iterable[str]) -> list[tuple[int, str]]:
    """(group index, status) of the child's gaps whose status is one of ``statuses``."""
    wanted = set(statuses)
    out = []
    for index, result in enumerate(child.groups):
        status = gap_status(result)
        if status is not None and status in wanted:
            out.append((index, status))
    return out


def _digest(*parts: object) -> str:
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()


def _narrative(text: str) -> Json:
    return {
        "status": "generated",
        "div": f'<div xmlns="http://www.w3.org/1999/xhtml"><p>{html.escape(text)}</p></div>',
    }


def _detected_issue(
    ev: Evaluation, child: ChildResult, index: int, status: str, report: Json, ctx: ReportContext
) -> Json:
    group = ev.spec.groups[index]
    result = child.groups[index]
    reason = REASON_TEXT.get(result.reason, result.reason)
    return {
        "resourceType": "DetectedIssue",
        "id": "gap-" + _digest(report["id"], group.id)[:40],
        "meta": {"profile": [GAPS_DETECTED_ISSUE_PROFILE]},
        "extension": [
            {"url": ctx.ext("measure-group"), "valueString": group.id},
            {"url": ctx.ext("reason-code"), "valueCode": result.reason},
        ],
        "modifierExtension": [
            {
                "url": GAP_STATUS_EXT,
                "valueCodeableConcept": {
                    "coding": [
                        {"system": GAP_STATUS_SYSTEM, "code": status, "display": STATUS_DISPLAY[status]}
                    ]
                },
            }
        ],
        "status": "final",
        "code": CARE_GAP_CODE,
        "patient": dict(report["subject"]),
        "identifiedDateTime": iso_instant(ctx.generated),
        "evidence": [{"detail": [{"reference": f"MeasureReport/{report['id']}"}]}],
        "detail": f"{ev.spec.title}, group {group.id}: {STATUS_DISPLAY[status].lower()}. {reason}",
    }


def gaps_bundle(
    results: Sequence[tuple[Evaluation, ChildResult]],
    ctx: ReportContext,
    *,
    statuses: Sequence[str],
    fhir_base: str,
    patient: Json | None = None,
) -> Json | None:
    """The gaps-in-care document of one subject over one evaluation per measure, or ``None`` when the
    subject has no gap of the requested ``statuses`` (the Composition needs ≥ 1 section, each with ≥ 1
    DetectedIssue). ``results`` pairs each measure's evaluation with the subject's result in it;
    ``patient`` (the served Patient resource) is added when given; ``fhir_base`` (``…/fhir``) makes
    the entries' absolute ``fullUrl``."""
    unknown = sorted(set(statuses) - set(SUPPORTED_STATUSES))
    if unknown:
        raise ValueError(f"unsupported gap status {', '.join(unknown)}")
    base = fhir_base.rstrip("/")
    sections: list[Json] = []
    reports: list[Json] = []
    issues: list[Json] = []
    for ev, child in results:
        gaps = child_gaps(child, statuses)
        if not gaps:
            continue
        report = individual_report(ev, ctx, child)
        found = [_detected_issue(ev, child, index, status, report, ctx) for index, status in gaps]
        summary = "; ".join(
            f"{ev.spec.groups[index].id}: {STATUS_DISPLAY[status].lower()}" for index, status in gaps
        )
        sections.append(
            {
                "title": ev.spec.title,
                "text": _narrative(f"{ev.spec.title} ({ev.spec.version}): {summary}."),
                "focus": {"reference": f"MeasureReport/{report['id']}"},
                "entry": [{"reference": f"DetectedIssue/{issue['id']}"} for issue in found],
            }
        )
        reports.append(report)
        issues.extend(found)
    if not sections:
        return None
    first_ev, first_child = results[0]
    subject = dict(reports[0]["subject"])
    key = _digest(
        first_child.person,
        *sorted(
            f"{ev.spec.id}|{ev.spec.version}|{ev.period_start}|{ev.period_end}|{ev.as_of}|{ev.sources}"
            for ev, _ in results
        ),
        *sorted(statuses),
    )
    period = f"{first_ev.period_start.isoformat()}..{first_ev.period_end.isoformat()}"
    composition: Json = {
        "resourceType": "Composition",
        "id": "gaps-composition-" + key[:40],
        "meta": {"profile": [GAPS_COMPOSITION_PROFILE]},
        "text": _narrative(f"Gaps in care of {subject['reference']} for {period}: {len(issues)} gap(s)."),
        "status": "final",
        "type": GAPS_REPORT_TYPE,
        "subject": subject,
        "date": iso_instant(ctx.generated),
        "author": [dict(ctx.reporter)],
        "title": f"Gaps in care report for {subject['reference']} ({period})",
        "section": sections,
    }
    entries = [composition, *reports, *issues]
    if patient is not None:
        entries.append(patient)
    return {
        "resourceType": "Bundle",
        "id": "gaps-" + key[:40],
        "meta": {"profile": [GAPS_BUNDLE_PROFILE]},
        "identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.UUID(key[:32])}"},
        "type": "document",
        "timestamp": iso_instant(ctx.generated),
        "entry": [{"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r} for r in entries],
    }


__all__ = [
    "CARE_GAP_CODE",
    "GAPS_BUNDLE_PROFILE",
    "GAPS_COMPOSITION_PROFILE",
    "GAPS_DETECTED_ISSUE_PROFILE",
    "GAPS_REPORT_TYPE",
    "GAP_STATUS_EXT",
    "GAP_STATUS_SYSTEM",
    "SUPPORTED_STATUSES",
    "child_gaps",
    "gap_status",
    "gaps_bundle",
]
