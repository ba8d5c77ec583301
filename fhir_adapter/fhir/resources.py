"""Minimal structural checks every stored resource passes (FHIR R4 §2.6 Resource).

Full profile validation is not on the ingest hot path (DESIGN.md §5: pydantic validation runs at
≈5k resources/s); what is checked here is what the store depends on: a JSON object, a known R4
``resourceType``, and an ``id`` matching the FHIR id pattern ``[A-Za-z0-9\\-\\.]{1,64}``.
"""

from __future__ import annotations

import re
from typing import Any

# \Z, not $: "$" also matches before a trailing newline, which no FHIR id may hold.
ID_RE = re.compile(r"^[A-Za-z0-9\-\.]{1,64}\Z")

#: Every R4 (4.0.1) resource type.
R4_RESOURCE_TYPES = frozenset(
    [
        "Account",
        "ActivityDefinition",
        "AdverseEvent",
        "AllergyIntolerance",
        "Appointment",
        "AppointmentResponse",
        "AuditEvent",
        "Basic",
        "Binary",
        "BiologicallyDerivedProduct",
        "BodyStructure",
        "Bundle",
        "CapabilityStatement",
        "CarePlan",
        "CareTeam",
        "CatalogEntry",
        "ChargeItem",
        "ChargeItemDefinition",
        "Claim",
        "ClaimResponse",
        "ClinicalImpression",
        "CodeSystem",
        "Communication",
        "CommunicationRequest",
        "CompartmentDefinition",
        "Composition",
        "ConceptMap",
        "Condition",
        "Consent",
        "Contract",
        "Coverage",
        "CoverageEligibilityRequest",
        "CoverageEligibilityResponse",
        "DetectedIssue",
        "Device",
        "DeviceDefinition",
        "DeviceMetric",
        "DeviceRequest",
        "DeviceUseStatement",
        "DiagnosticReport",
        "DocumentManifest",
        "DocumentReference",
        "EffectEvidenceSynthesis",
        "Encounter",
        "Endpoint",
        "EnrollmentRequest",
        "EnrollmentResponse",
        "EpisodeOfCare",
        "EventDefinition",
        "Evidence",
        "EvidenceVariable",
        "ExampleScenario",
        "ExplanationOfBenefit",
        "FamilyMemberHistory",
        "Flag",
        "Goal",
        "GraphDefinition",
        "Group",
        "GuidanceResponse",
        "HealthcareService",
        "ImagingStudy",
        "Immunization",
        "ImmunizationEvaluation",
        "ImmunizationRecommendation",
        "ImplementationGuide",
        "InsurancePlan",
        "Invoice",
        "Library",
        "Linkage",
        "List",
        "Location",
        "Measure",
        "MeasureReport",
        "Media",
        "Medication",
        "MedicationAdministration",
        "MedicationDispense",
        "MedicationKnowledge",
        "MedicationRequest",
        "MedicationStatement",
        "MedicinalProduct",
        "MedicinalProductAuthorization",
        "MedicinalProductContraindication",
        "MedicinalProductIndication",
        "MedicinalProductIngredient",
        "MedicinalProductInteraction",
        "MedicinalProductManufactured",
        "MedicinalProductPackaged",
        "MedicinalProductPharmaceutical",
        "MedicinalProductUndesirableEffect",
        "MessageDefinition",
        "MessageHeader",
        "MolecularSequence",
        "NamingSystem",
        "NutritionOrder",
        "Observation",
        "ObservationDefinition",
        "OperationDefinition",
        "OperationOutcome",
        "Organization",
        "OrganizationAffiliation",
        "Parameters",
        "Patient",
        "PaymentNotice",
        "PaymentReconciliation",
        "Person",
        "PlanDefinition",
        "Practitioner",
        "PractitionerRole",
        "Procedure",
        "Provenance",
        "Questionnaire",
        "QuestionnaireResponse",
        "RelatedPerson",
        "RequestGroup",
        "ResearchDefinition",
        "ResearchElementDefinition",
        "ResearchStudy",
        "ResearchSubject",
        "RiskAssessment",
        "RiskEvidenceSynthesis",
        "Schedule",
        "SearchParameter",
        "ServiceRequest",
        "Slot",
        "SpecimenDefinition",
        "Specimen",
        "StructureDefinition",
        "StructureMap",
        "Subscription",
        "Substance",
        "SubstanceNucleicAcid",
        "SubstancePolymer",
        "SubstanceProtein",
        "SubstanceReferenceInformation",
        "SubstanceSourceMaterial",
        "SubstanceSpecification",
        "SupplyDelivery",
        "SupplyRequest",
        "Task",
        "TerminologyCapabilities",
        "TestReport",
        "TestScript",
        "ValueSet",
        "VerificationResult",
        "VisionPrescription",
    ]
)


#: Top-level elements that repeat (cardinality ``..*`` in R4) among those the adapter reads, per
#: type. R4 JSON (json.html "JSON representation of Resources"): a repeating element is always an
#: array, even with one item; an object or string in its place is the commonest shape error in
#: real extracts, and a resource carrying one would silently lose what the measure reads there.
REPEATING: dict[str, frozenset[str]] = {
    rtype: frozenset(names.split())
    for rtype, names in {
        "Claim": "identifier related careTeam supportingInfo diagnosis procedure insurance item",
        "Condition": "identifier category bodySite evidence note",
        "Coverage": "identifier payor class",
        "Encounter": "identifier type participant reasonCode reasonReference diagnosis location basedOn",
        "ExplanationOfBenefit": "identifier related careTeam supportingInfo diagnosis procedure insurance item "
        "adjudication total",
        "Group": "identifier characteristic member",
        "List": "identifier entry note",
        "Location": "identifier alias type telecom",
        "MeasureReport": "identifier group evaluatedResource",
        "Observation": "identifier basedOn partOf category performer component note",
        "Organization": "identifier type telecom address",
        "Patient": "identifier name telecom address communication contact",
        "Practitioner": "identifier name telecom address qualification",
        "PractitionerRole": "identifier code specialty location telecom",
        "Procedure": "identifier basedOn partOf performer reasonCode reasonReference bodySite note",
        "ServiceRequest": "identifier basedOn replaces category performer reasonCode reasonReference insurance "
        "supportingInfo note",
        "Task": "identifier basedOn partOf input output note",
    }.items()
}
#: DomainResource's own repeating elements (every type but Bundle, Parameters and Binary).
_DOMAIN_REPEATING = ("contained", "extension", "modifierExtension")
_NOT_DOMAIN = frozenset({"Bundle", "Parameters", "Binary"})


def resource_problem(value: Any) -> tuple[str, str] | None:
    """``(element, why)`` when ``value`` cannot be stored as a resource (``element`` is the
    top-level element at fault: ``resourceType``, a repeating element that is not an array, or
    ``id``, checked in that order), or ``None`` if it can."""
    if not isinstance(value, dict):
        return "resourceType", f"expected a JSON object, got {type(value).__name__}"
    rtype = value.get("resourceType")
    if not isinstance(rtype, str):
        return "resourceType", "no resourceType"
    if rtype not in R4_RESOURCE_TYPES:
        return "resourceType", f"unknown resourceType {rtype[:64]!r} (not FHIR R4)"
    names = REPEATING.get(rtype, ())
    for name in (*names, *(() if rtype in _NOT_DOMAIN else _DOMAIN_REPEATING)):
        element = value.get(name)
        if element is not None and not isinstance(element, list):
            return name, (
                f"{rtype}.{name} is a JSON {_json_type(element)}, not an array: a repeating element is always "
                "an array in FHIR JSON, even with one item"
            )
    rid = value.get("id")
    if not isinstance(rid, str):
        return "id", f"{rtype} has no id"
    if not ID_RE.match(rid):
        return "id", f"{rtype} id {rid[:80]!r} is not a valid FHIR id"
    return None


def _json_type(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    return "number"


def check_resource(value: Any) -> str | None:
    """Return why ``value`` cannot be stored as a resource, or ``None`` if it can
    (:func:`resource_problem` without the element)."""
    found = resource_problem(value)
    return None if found is None else found[1]


#: Deepest JSON nesting accepted, counting objects and arrays (the resource itself is level 1).
#: UNVERIFIED bound: FHIR R4 sets none; real resources (nested Questionnaire items, extensions on
#: extensions, contained resources) stay far below it. orjson serialises at most 254 levels and
#: the store must be able to serve back what it keeps, and deeper input only costs recursion.
MAX_NESTING = 100
_NUL = b"\\u0000"


def json_problem(value: Any, raw: bytes | None = None) -> str | None:
    """Why parsed JSON ``value`` cannot be stored although it parsed, or ``None``: nesting deeper
    than :data:`MAX_NESTING`, or a NUL character in a string or name (R4 §2.24.0.1 ``string``:
    no control characters but tab, CR and LF; PostgreSQL text cannot hold NUL, and both engines
    must accept the same data). With ``raw`` (the bytes ``value`` was parsed from) the bytes are
    scanned first (C speed) and the values walked only when that cannot rule a problem out.
    Iterative, so no recursion limit applies. Pure."""
    if not isinstance(value, dict | list):
        return None
    deep = raw is None or raw.count(b"{") + raw.count(b"[") > MAX_NESTING
    nul = raw is None or _NUL in raw
    if not (deep or nul):
        return None
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            if nul and any("\x00" in key for key in item):
                return "a JSON name contains a NUL character (U+0000)"
            children: Any = item.values()
        else:
            children = item
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > MAX_NESTING:
                    return f"JSON nested deeper than {MAX_NESTING} levels"
                stack.append((child, depth + 1))
            elif nul and isinstance(child, str) and "\x00" in child:
                return "a string contains a NUL character (U+0000), which FHIR strings do not allow"
    return None
