"""Every synthesised resource: parses, has the R4 required elements, valid codes and references."""

from __future__ import annotations

import re
from collections.abc import Iterator

import orjson
import pytest

from fhir_adapter.synth import vocab
from tests.synth.conftest import Cohort, Resource
from tests.validators.harness import node_validate, validators_available

ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
REFERENCE = re.compile(r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})$")
DATE = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?$")
DATETIME = re.compile(r"^\d{4}(-\d{2}(-\d{2}(T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2}))?)?)?$")
REFERENCE_VALUE = re.compile(rb'"reference":"([^"]*)"')
DATE_VALUE = re.compile(
    rb'"(birthDate|servicedDate|created|recordedDate|authoredOn|performedDateTime|start|end|deceasedDateTime)":"([^"]*)"'
)
NPI_VALUE = re.compile(rb'"system":"http://hl7\.org/fhir/sid/us-npi","value":"([^"]*)"')

#: FHIR R4 elements with minimum cardinality 1, per resource type (the base specification,
#: http://hl7.org/fhir/R4/<type>.html), plus a few the adapter relies on (marked "ours").
REQUIRED: dict[str, tuple[str, ...]] = {
    "Patient": ("identifier", "gender"),  # ours: every synthetic Patient has an identifier and a gender
    "Coverage": ("status", "beneficiary", "payor"),
    "ExplanationOfBenefit": (
        "status",
        "type",
        "use",
        "patient",
        "created",
        "insurer",
        "provider",
        "outcome",
        "insurance",
        "item",
        "diagnosis",
        "billablePeriod",
    ),
    "Claim": ("status", "type", "use", "patient", "created", "provider", "priority", "insurance", "item"),
    "Encounter": ("status", "class", "subject", "period", "type"),
    "Condition": ("subject", "code", "category", "verificationStatus"),
    "Procedure": ("status", "subject", "code"),
    "ServiceRequest": ("status", "intent", "subject", "code", "authoredOn"),
    "Organization": ("identifier", "name"),
    "Practitioner": ("identifier", "name"),
}
#: Required bindings (R4) of the coded elements the measure reads.
BINDINGS: dict[tuple[str, str], frozenset[str]] = {
    ("Patient", "gender"): frozenset({"male", "female", "other", "unknown"}),
    ("Coverage", "status"): frozenset({"active", "cancelled", "draft", "entered-in-error"}),
    ("ExplanationOfBenefit", "status"): frozenset({"active", "cancelled", "draft", "entered-in-error"}),
    ("ExplanationOfBenefit", "use"): frozenset({"claim", "preauthorization", "predetermination"}),
    ("ExplanationOfBenefit", "outcome"): frozenset({"queued", "complete", "error", "partial"}),
    ("Claim", "status"): frozenset({"active", "cancelled", "draft", "entered-in-error"}),
    ("Claim", "use"): frozenset({"claim", "preauthorization", "predetermination"}),
    ("Encounter", "status"): frozenset(
        {"planned", "arrived", "triaged", "in-progress", "onleave", "finished", "cancelled", "entered-in-error", "unknown"}
    ),
    ("Procedure", "status"): frozenset(
        {"preparation", "in-progress", "not-done", "on-hold", "stopped", "completed", "entered-in-error", "unknown"}
    ),
    ("ServiceRequest", "status"): frozenset(
        {"draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown"}
    ),
    ("ServiceRequest", "intent"): frozenset(
        {"proposal", "plan", "directive", "order", "original-order", "reflex-order", "filler-order", "instance-order", "option"}
    ),
}  # fmt: skip
CONDITION_CODES = {
    "clinicalStatus": {"active", "recurrence", "relapse", "inactive", "remission", "resolved"},
    "verificationStatus": {
        "unconfirmed",
        "provisional",
        "differential",
        "confirmed",
        "refuted",
        "entered-in-error",
    },
}


def all_resources(cohort: Cohort) -> Iterator[tuple[str, str, Resource]]:
    for source, per_type in sorted(cohort.resources.items()):
        for resource_type, resources in sorted(per_type.items()):
            for resource in resources:
                yield source, resource_type, resource


def test_every_line_is_one_resource_of_its_file_type(small_cohort: Cohort) -> None:
    for rel, data in small_cohort.raw.items():
        if not rel.endswith(".ndjson"):
            continue
        assert data.endswith(b"\n") and b"\n\n" not in data, rel
        expected_type = rel.split("/")[1].removesuffix(".ndjson")
        for number, line in enumerate(data.splitlines(), 1):
            resource = orjson.loads(line)
            assert resource["resourceType"] == expected_type, f"{rel}:{number}"
            assert ID.match(resource["id"]), f"{rel}:{number}"


def test_ids_are_unique_per_source_and_type(small_cohort: Cohort) -> None:
    for source, per_type in small_cohort.resources.items():
        for resource_type, resources in per_type.items():
            ids = [r["id"] for r in resources]
            assert len(ids) == len(set(ids)), (source, resource_type)


def ndjson(cohort: Cohort) -> Iterator[tuple[str, bytes]]:
    """(source, file bytes) of every NDJSON file; the scans below rely on orjson's compact output."""
    for rel, data in sorted(cohort.raw.items()):
        if rel.endswith(".ndjson"):
            yield rel.split("/")[0], data


def test_references_resolve_within_their_source(small_cohort: Cohort) -> None:
    """Every Reference.reference is ``Type/id`` of a resource in the same folder.

    (``ExplanationOfBenefit.related.reference`` is an Identifier, the other claim's number: not matched.)
    """
    ids = {
        (source, resource_type, r["id"])
        for source, per_type in small_cohort.resources.items()
        for resource_type, resources in per_type.items()
        for r in resources
    }
    checked = 0
    for source, data in ndjson(small_cohort):
        for value in REFERENCE_VALUE.findall(data):
            match = REFERENCE.match(value.decode())
            assert match, value
            assert (source, match.group(1), match.group(2)) in ids, (source, value)
            checked += 1
    assert checked > 10_000


def test_claim_numbers_in_related_name_other_eobs(small_cohort: Cohort) -> None:
    eobs = small_cohort.of_type("oha-claims", "ExplanationOfBenefit")
    numbers = {r["identifier"][0]["value"] for r in eobs}
    related = [rel["reference"] for r in eobs for rel in r.get("related", [])]
    assert related
    for identifier in related:
        assert identifier["system"] == vocab.CLAIM_NUMBER_SYSTEM and identifier["value"] in numbers


@pytest.mark.parametrize("resource_type", sorted(REQUIRED))
def test_required_elements_are_present(small_cohort: Cohort, resource_type: str) -> None:
    seen = 0
    for _source, rtype, resource in all_resources(small_cohort):
        if rtype != resource_type:
            continue
        seen += 1
        for element in REQUIRED[resource_type]:
            assert resource.get(element) not in (None, [], {}, ""), (resource["id"], element)
        if resource_type in ("ExplanationOfBenefit", "Claim"):
            for item in resource["item"]:
                assert isinstance(item["sequence"], int) and item["productOrService"]["coding"], resource[
                    "id"
                ]
            for diagnosis in resource["diagnosis"]:
                assert diagnosis["sequence"] >= 1 and diagnosis["diagnosisCodeableConcept"]["coding"]
            assert resource["diagnosis"][0]["type"][0]["coding"][0]["code"] == "principal"
            for insurance in resource["insurance"]:
                assert insurance["focal"] is True and insurance["coverage"]["reference"]
        if resource_type == "Claim":
            assert all(i["sequence"] >= 1 for i in resource["insurance"])
        if resource_type == "Encounter":
            assert resource["class"]["system"] == vocab.ACT_CODE and resource["class"]["code"] == "AMB"
    assert seen > 0


@pytest.mark.parametrize(("resource_type", "element"), sorted(BINDINGS), ids=str)
def test_codes_come_from_required_bindings(small_cohort: Cohort, resource_type: str, element: str) -> None:
    allowed = BINDINGS[(resource_type, element)]
    values = {r[element] for _s, rtype, r in all_resources(small_cohort) if rtype == resource_type}
    assert values and values <= allowed, values - allowed


def test_condition_statuses_follow_r4_invariants(small_cohort: Cohort) -> None:
    """con-5: no clinicalStatus when entered-in-error; codes from the R4 code systems."""
    for _source, rtype, condition in all_resources(small_cohort):
        if rtype != "Condition":
            continue
        verification = condition["verificationStatus"]["coding"][0]["code"]
        assert verification in CONDITION_CODES["verificationStatus"]
        if verification == "entered-in-error":
            assert "clinicalStatus" not in condition, condition["id"]
        else:
            assert condition["clinicalStatus"]["coding"][0]["code"] in CONDITION_CODES["clinicalStatus"]


def test_dates_are_fhir_dates_or_datetimes(small_cohort: Cohort) -> None:
    checked = 0
    for _source, data in ndjson(small_cohort):
        for key, value in DATE_VALUE.findall(data):
            pattern = DATE if key in (b"birthDate", b"servicedDate") else DATETIME
            assert pattern.match(value.decode()), (key, value)
            checked += 1
    assert checked > 10_000


def test_npis_have_valid_check_digits(small_cohort: Cohort) -> None:
    npis = {npi.decode() for _source, data in ndjson(small_cohort) for npi in NPI_VALUE.findall(data)}
    assert len(npis) > 20
    for npi in npis:
        digits = [int(c) for c in "80840" + npi]
        total = sum(
            d if i % 2 == 0 else (2 * d - 9 if 2 * d > 9 else 2 * d) for i, d in enumerate(reversed(digits))
        )
        assert len(npi) == 10 and total % 10 == 0, npi


@pytest.mark.parametrize("system", vocab.CPT_VARIANTS)
def test_cpt_codings_carry_no_display_text(small_cohort: Cohort, system: str) -> None:
    """AMA copyright: CPT codes only (helpers-common.md)."""
    bare = re.compile(rb'\{"system":"' + re.escape(system.encode()) + rb'","code":"[^"]*"\}')
    with_more = re.compile(rb'\{"system":"' + re.escape(system.encode()) + rb'","code":"[^"]*",')
    data = b"".join(d for _s, d in ndjson(small_cohort))
    assert bare.search(data) and not with_more.search(data)


@pytest.mark.parametrize(
    ("element", "systems"),
    [
        pytest.param(b"productOrService", set(vocab.CPT_VARIANTS) | set(vocab.HCPCS_VARIANTS), id="proc"),
        pytest.param(b"diagnosisCodeableConcept", set(vocab.ICD_VARIANTS), id="icd"),
    ],
)
def test_claims_use_every_system_alias(small_cohort: Cohort, element: bytes, systems: set[str]) -> None:
    """Messy codings on purpose: each alias of helpers-common.md occurs, and nothing else (bar one)."""
    first_coding = re.compile(b'"' + element + rb'":\{"coding":\[\{"system":"([^"]+)","code":"([^"]+)"')
    found = [
        (m[0].decode(), m[1].decode())
        for _s, data in ndjson(small_cohort)
        for m in first_coding.findall(data)
    ]
    seen = {system for system, _code in found}
    assert systems <= seen
    assert seen - systems <= {vocab.UNKNOWN_PROC_SYSTEM}
    if element == b"diagnosisCodeableConcept":
        assert any(len(code) > 3 and "." not in code for _system, code in found)


@pytest.mark.node
def test_node_validators_accept_a_sample(small_cohort: Cohort) -> None:
    """@medplum/core and FHIR.js (base R4) on every 80th resource of every file.

    FHIR.js rejects the header-level ``ExplanationOfBenefit.adjudication``, which R4 defines
    (contentReference to item.adjudication, "Header-level adjudication"): ignored.
    """
    reason = validators_available()
    if reason:
        pytest.skip(reason)
    sample = [r for per_type in small_cohort.resources.values() for rs in per_type.values() for r in rs[::80]]
    for result in node_validate(sample):
        fhirjs = [e for e in result.fhirjs if not e.startswith("ExplanationOfBenefit.adjudication:")]
        assert not result.medplum and not fhirjs, result.describe()
