"""``Measure/[id]/$data-requirements``: the data a measure-year reads, as a module-definition Library.

FHIR R4 ``OperationDefinition/Measure-data-requirements``
(http://hl7.org/fhir/OperationDefinition/Measure-data-requirements): ``periodStart``/``periodEnd``
in, a ``Library`` of type ``module-definition`` (system
``http://terminology.hl7.org/CodeSystem/library-type``) out, whose ``dataRequirement`` lists the
resource types the logic reads with ``codeFilter`` by value set canonical and ``dateFilter`` on the
period (R4 ``DataRequirement``; the filters of one requirement are ANDed).

The types and code filters are exactly those of the shipped logic Library
(:func:`fhir_adapter.report.conformance.data_requirements`), so the operation and
``conformance/Library-*.json`` cannot drift apart. Only the date filters are added here, on the
element that dates each *service* (spec §3 "Measurement period" and Edge rule 7): claim lines by
their from-date (``item.serviced``), Encounters by ``period``, Procedures by ``performed``. Patient,
Coverage and Condition carry no date filter on purpose: enrollment spans start before the period
(and may have no end, Edge rule 7), and a Condition is dated by its encounter when it has one
(Edge rule 9), so filtering them by their own dates would drop data the rules read.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from fhir_adapter.measure.spec import MeasureSpec
from fhir_adapter.report.conformance import (
    LIBRARY_TYPE_SYSTEM,
    PUBLISHER,
    assumptions,
    data_requirements,
    library_url,
    measure_url,
    valueset_url,
)

Json = dict[str, Any]

#: The element that dates a service of each type (spec §3, Edge rule 7).
DATE_PATHS = {
    "ExplanationOfBenefit": "item.serviced",
    "Claim": "item.serviced",
    "Encounter": "period",
    "Procedure": "performed",
}


def build_data_requirements(
    spec: MeasureSpec, canonical_base: str, period_start: date, period_end: date
) -> Json:
    """The module-definition Library for ``spec`` over ``[period_start, period_end]`` (both days
    included). Deterministic: no clock is read."""
    base = canonical_base.rstrip("/")
    period = {"start": period_start.isoformat(), "end": period_end.isoformat()}
    requirements = []
    for requirement in data_requirements(spec, base):
        out = dict(requirement)
        path = DATE_PATHS.get(str(out["type"]))
        if path is not None:
            out["dateFilter"] = [{"path": path, "valuePeriod": period}]
        requirements.append(out)
    used = sorted(
        {
            str(f["valueSet"])
            for requirement in requirements
            for f in requirement.get("codeFilter", [])
            if "valueSet" in f
        }
    )
    settled = not assumptions(spec)
    return {
        "resourceType": "Library",
        "status": "active" if settled else "draft",
        "experimental": not settled,
        "type": {"coding": [{"system": LIBRARY_TYPE_SYSTEM, "code": "module-definition"}]},
        "title": f"Data requirements of {spec.title} ({spec.year}) for {period['start']}..{period['end']}",
        "publisher": PUBLISHER,
        "description": (
            "Resource types, value sets and dates the fhir-adapter rules read for this measure-year and "
            "period. Code filters name the value sets of the generated Measure; date filters apply to the "
            "element that dates a service."
        ),
        "relatedArtifact": [
            {
                "type": "depends-on",
                "display": "Measure",
                "resource": f"{measure_url(spec, base)}|{spec.version}",
            },
            {
                "type": "depends-on",
                "display": "Rules",
                "resource": f"{library_url(spec, base)}|{spec.version}",
            },
            *(
                {"type": "depends-on", "display": _valueset_name(spec, base, vs), "resource": vs}
                for vs in used
            ),
        ],
        "parameter": [{"name": "Measurement Period", "use": "in", "min": 0, "max": "1", "type": "Period"}],
        "dataRequirement": requirements,
    }


def _valueset_name(spec: MeasureSpec, base: str, canonical: str) -> str:
    for name, valueset in spec.valuesets.items():
        if canonical == f"{valueset_url(spec, name, base)}|{spec.version}":
            return valueset.title or name
    return canonical


__all__ = ["DATE_PATHS", "build_data_requirements"]
