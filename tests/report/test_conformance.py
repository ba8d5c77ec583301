"""fhir_adapter.report.conformance: stable ids, complete populations, provenance, deterministic bytes,
and every generated resource passing both Node.js base-R4 validators."""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from fhir_adapter.errors import MappingsError
from fhir_adapter.mappings import load_mappings
from fhir_adapter.measure.spec import (
    AgeBand,
    AgeRule,
    Cco,
    CodeRow,
    CodeSystem,
    EnrollmentRule,
    Exclusion,
    Group,
    Mappings,
    MatchKind,
    MeasureSpec,
    Provenance,
    ServiceCriterion,
    ValueSet,
)
from fhir_adapter.report.checks import MEASURE_SCORING_EXT, check_measure_report
from fhir_adapter.report.conformance import (
    RULE_LANGUAGE,
    OperationRef,
    ResourceCapability,
    SearchParam,
    assumptions,
    build_capability_statement,
    build_library,
    build_measure,
    build_valueset,
    cli_capabilities,
    render_conformance,
    write_conformance,
)
from tests.validators.harness import node_validate, validators_available

Json = dict[str, Any]
BASE = "https://example.org/fhir"
CPT = "http://www.ama-assn.org/go/cpt"
HCPCS = "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
REPO = Path(__file__).resolve().parents[2]

V = Provenance("verified", "OHA spec sheet 2025, p. 3")
OFF = Provenance("official", "OHA value-set workbook 2025-01-15")
A = Provenance("assumption", "spec §3 Enrollment [A]")
C = Provenance("candidate", "spec §3 candidate list")

SYSTEMS = {
    CPT: CodeSystem(CPT, "CPT", "upper"),
    HCPCS: CodeSystem(HCPCS, "HCPCS", "upper"),
    ICD: CodeSystem(ICD, "ICD-10-CM", "icd"),
}


def _row(
    system: str, code: str, match: MatchKind = "exact", display: str = "", prov: Provenance = OFF
) -> CodeRow:
    return CodeRow(system, code, match, None, None, display, prov)


def make_spec(*, settled: bool = False, year: int = 2025) -> MeasureSpec:
    """A small issue-focused-like spec, by hand. ``settled``: every rule and row verified/official."""
    rule = V if settled else A
    code = OFF if settled else C
    procedures = ValueSet(
        "se-intervention-procedures",
        "Interventions",
        (
            _row(CPT, "90837", display="AMA TEXT MUST NOT SHIP", prov=code),
            _row(CPT, "90832", prov=OFF),
            _row(
                HCPCS, "H0004", display="Behavioral health counseling and therapy, per 15 minutes", prov=OFF
            ),
            _row(HCPCS, "H20", match="prefix", prov=OFF),
        ),
    )
    diagnoses = ValueSet(
        "se-issue-diagnoses",
        "Diagnoses",
        (
            _row(ICD, "F43", match="prefix", display="Reaction to severe stress", prov=OFF),
            _row(ICD, "F4322", display="Adjustment disorder with anxiety", prov=OFF),
            _row(ICD, "F988", match="prefix", prov=OFF),
        ),
    )
    return MeasureSpec(
        id="oregon-se-test",
        year=year,
        version=f"{year}.0.0",
        title="Test SE measure",
        description="Children 1-5 with a qualifying service.",
        provenance=V,
        age=AgeRule(1, 5, V),
        age_bands=(AgeBand("1-2", 1, 2, V), AgeBand("3-5", 3, 5, V)),
        enrollment=EnrollmentRule("same-cco", 1, 45, rule),
        exclusions=(Exclusion("death", True, V), Exclusion("hospice", False, V, "se-issue-diagnoses")),
        groups=(
            Group(
                "all-enrolled",
                "All enrolled",
                "Every eligible child.",
                ServiceCriterion("se-intervention-procedures", "se-issue-diagnoses", "any"),
                None,
                V,
            ),
            Group(
                "identified-need",
                "Identified need",
                "Children with a qualifying diagnosis.",
                ServiceCriterion("se-intervention-procedures", "se-issue-diagnoses", "any"),
                "se-issue-diagnoses",
                V,
            ),
        ),
        stratifiers=("cco", "age-band"),
        valuesets={"se-intervention-procedures": procedures, "se-issue-diagnoses": diagnoses},
        hash="abc123",
    )


def make_mappings(*specs: MeasureSpec) -> Mappings:
    return Mappings(
        systems=SYSTEMS,
        aliases={},
        ccos=(Cco("UHA", "Umpqua Health Alliance", (("https://oregon.gov/oha/cco-id", "UHA"),), A),),
        local_codes=(),
        measures={(s.id, s.year): s for s in specs},
    )


# --------------------------------------------------------------------------------------------------
# ids and canonical URLs


IDS: list[Any] = [
    pytest.param(
        lambda s: build_measure(s, BASE),
        "Measure",
        "oregon-se-test-2025",
        f"{BASE}/Measure/oregon-se-test",
        id="measure",
    ),
    pytest.param(
        lambda s: build_library(s, BASE),
        "Library",
        "oregon-se-test-2025",
        f"{BASE}/Library/oregon-se-test",
        id="library",
    ),
    pytest.param(
        lambda s: build_valueset(s, s.valuesets["se-issue-diagnoses"], BASE),
        "ValueSet",
        "oregon-se-test-2025-se-issue-diagnoses",
        f"{BASE}/ValueSet/oregon-se-test-se-issue-diagnoses",
        id="valueset",
    ),
]


@pytest.mark.parametrize(("build", "resource_type", "resource_id", "url"), IDS)
def test_ids_and_urls_are_stable_and_versioned(
    build: Callable[[MeasureSpec], Json], resource_type: str, resource_id: str, url: str
) -> None:
    resource = build(make_spec())
    assert (resource["resourceType"], resource["id"], resource["url"], resource["version"]) == (
        resource_type,
        resource_id,
        url,
        "2025.0.0",
    )
    other_year = build(make_spec(year=2026))
    assert other_year["url"] == url, "the year lives in version, never in the url"
    assert other_year["version"] == "2026.0.0"
    assert other_year["id"] == resource_id.replace("2025", "2026")


def test_version_without_the_year_is_a_mappings_error() -> None:
    spec = dataclasses.replace(make_spec(), version="1.0.0")
    with pytest.raises(MappingsError, match="must contain the year"):
        build_measure(spec, BASE)


# --------------------------------------------------------------------------------------------------
# Measure content


def test_measure_groups_have_every_population_with_stable_ids() -> None:
    measure = build_measure(make_spec(), BASE)
    for group in measure["group"]:
        populations = [
            (
                p["id"],
                p["code"]["coding"][0]["system"],
                p["code"]["coding"][0]["code"],
                p["criteria"]["language"],
            )
            for p in group["population"]
        ]
        assert populations == [
            (
                f"{group['id']}-{code}",
                "http://terminology.hl7.org/CodeSystem/measure-population",
                code,
                RULE_LANGUAGE,
            )
            for code in ("initial-population", "denominator", "denominator-exclusion", "numerator")
        ]
        assert [(s["id"], s["code"]["text"]) for s in group["stratifier"]] == [
            ("cco", "cco"),
            ("age-band", "age-band"),
        ]
    assert [g["id"] for g in measure["group"]] == ["all-enrolled", "identified-need"]
    assert [s["id"] for s in measure["supplementalData"]] == [
        "sde-sex",
        "sde-race",
        "sde-ethnicity",
        "sde-payer",
    ]


def test_measure_header() -> None:
    measure = build_measure(make_spec(), BASE, date=date(2025, 2, 1))
    assert measure["scoring"]["coding"] == [
        {
            "system": "http://terminology.hl7.org/CodeSystem/measure-scoring",
            "code": "proportion",
            "display": "Proportion",
        }
    ]
    assert measure["improvementNotation"]["coding"][0]["code"] == "increase"
    assert measure["meta"]["profile"] == [
        "http://hl7.org/fhir/us/cqfmeasures/StructureDefinition/proportion-measure-cqfm"
    ]
    assert measure["extension"] == [
        {
            "url": "http://hl7.org/fhir/us/cqfmeasures/StructureDefinition/cqfm-populationBasis",
            "valueCode": "boolean",
        }
    ]
    assert measure["effectivePeriod"] == {"start": "2025-01-01", "end": "2025-12-31"}
    assert measure["library"] == [f"{BASE}/Library/oregon-se-test|2025.0.0"]
    assert measure["date"] == "2025-02-01"
    assert "date" not in build_measure(make_spec(), BASE), "no clock: date only when given"


STATUS = [
    pytest.param(True, "active", False, 0, id="all-verified-or-official"),
    pytest.param(False, "draft", True, 2, id="assumptions-remain"),
]


@pytest.mark.parametrize(("settled", "status", "experimental", "n_assumptions"), STATUS)
def test_status_follows_provenance(
    settled: bool, status: str, experimental: bool, n_assumptions: int
) -> None:
    spec = make_spec(settled=settled)
    assert len(assumptions(spec)) == n_assumptions
    for resource in (build_measure(spec, BASE), build_library(spec, BASE)):
        assert (resource["status"], resource["experimental"]) == (status, experimental)


def test_every_assumption_is_listed_with_its_source() -> None:
    spec = make_spec()
    measure = build_measure(spec, BASE)
    listed = [a.what for a in assumptions(spec)]
    assert listed == [
        "enrolled in the same CCO on the last day of the period and continuously through the period "
        "(or since birth), with at most 1 gap(s) of at most 45 days in all",
        "value set se-intervention-procedures: 1 of 4 rows",
    ]
    artifacts = [r for r in measure["relatedArtifact"] if r.get("label") == "assumption"]
    assert [r["display"] for r in artifacts] == [
        f"{w} [{s}]" for w, s in zip(listed, ["assumption", "candidate"], strict=True)
    ]
    assert all(a.source in r["citation"] for a, r in zip(assumptions(spec), artifacts, strict=True))
    for a in assumptions(spec):
        assert a.source in measure["usage"]
    assert "not the OHA specification" in measure["disclaimer"]
    settled = build_measure(make_spec(settled=True), BASE)
    assert not [r for r in settled["relatedArtifact"] if r.get("label") == "assumption"]
    assert "Assumptions" not in settled["usage"]


# --------------------------------------------------------------------------------------------------
# ValueSet content


def _include(valueset: Json, system: str, key: str) -> list[Json]:
    return [x for inc in valueset["compose"]["include"] if inc["system"] == system for x in inc.get(key, [])]


def test_valueset_rows() -> None:
    spec = make_spec()
    procedures = build_valueset(spec, spec.valuesets["se-intervention-procedures"], BASE, systems=SYSTEMS)
    diagnoses = build_valueset(spec, spec.valuesets["se-issue-diagnoses"], BASE, systems=SYSTEMS)
    assert _include(procedures, CPT, "concept") == [{"code": "90832"}, {"code": "90837"}], "CPT: no display"
    assert "AMA TEXT" not in json.dumps(procedures)
    assert _include(procedures, HCPCS, "concept") == [
        {"code": "H0004", "display": "Behavioral health counseling and therapy, per 15 minutes"}
    ]
    assert _include(procedures, HCPCS, "filter") == [{"property": "code", "op": "regex", "value": "^H20.*"}]
    assert _include(diagnoses, ICD, "concept") == [
        {"code": "F43.22", "display": "Adjustment disorder with anxiety"}
    ]
    assert _include(diagnoses, ICD, "filter") == [
        {"property": "concept", "op": "is-a", "value": "F43"},
        {"property": "concept", "op": "is-a", "value": "F98.8"},
    ]
    assert "candidate" in procedures["description"] and "spec §3 candidate list" in procedures["description"]
    assert (procedures["status"], diagnoses["status"]) == ("draft", "active")


def test_empty_valueset_has_no_compose() -> None:
    spec = make_spec()
    resource = build_valueset(spec, ValueSet("empty", "Empty", ()), BASE)
    assert "compose" not in resource


# --------------------------------------------------------------------------------------------------
# Library


def test_library_documents_rules_and_data_requirements() -> None:
    spec = make_spec()
    library = build_library(spec, BASE)
    assert library["type"]["coding"][0]["code"] == "logic-library"
    content = library["content"][0]
    assert content["contentType"] == "text/markdown"
    text = base64.b64decode(content["data"]).decode("utf-8")
    for needle in (
        "spec §3 Enrollment [A]",
        "OHA spec sheet 2025, p. 3",
        "group identified-need",
        "se-issue-diagnoses",
    ):
        assert needle in text
    procedures = f"{BASE}/ValueSet/oregon-se-test-se-intervention-procedures|2025.0.0"
    diagnoses = f"{BASE}/ValueSet/oregon-se-test-se-issue-diagnoses|2025.0.0"
    requirements = {
        (r["type"], tuple((f["path"], f["valueSet"]) for f in r.get("codeFilter", [])))
        for r in library["dataRequirement"]
    }
    assert ("Encounter", (("type", procedures),)) in requirements
    assert ("Condition", (("code", diagnoses),)) in requirements
    assert (
        "ExplanationOfBenefit",
        (("item.productOrService", procedures), ("diagnosis.diagnosisCodeableConcept", diagnoses)),
    ) in requirements
    assert ("Patient", ()) in requirements
    assert not any("hospice" in str(r) for r in requirements), "disabled exclusions need no data"


# --------------------------------------------------------------------------------------------------
# CapabilityStatement


def test_capability_statement_for_the_cli() -> None:
    statement = build_capability_statement(BASE, cli_capabilities())
    assert (statement["kind"], statement["fhirVersion"], statement["format"]) == (
        "capability",
        "4.0.1",
        ["json"],
    )
    rest = statement["rest"][0]
    assert [(r["type"], r["interaction"]) for r in rest["resource"]] == [
        (t, [{"code": "read"}]) for t in ("Library", "Measure", "MeasureReport", "ValueSet")
    ]
    assert "does not exist yet" in rest["documentation"] or "No FHIR REST service" in rest["documentation"]


def test_capability_statement_takes_real_routes() -> None:
    implemented = {
        "MeasureReport": ResourceCapability(
            interactions=("read", "search-type"),
            search_params=(SearchParam("measure", "reference"), SearchParam("period", "date")),
        ),
        "Measure": ResourceCapability(
            operations=(
                OperationRef(
                    "evaluate-measure", "http://hl7.org/fhir/OperationDefinition/Measure-evaluate-measure"
                ),
            )
        ),
    }
    statement = build_capability_statement(
        BASE,
        implemented,
        system_operations=(
            OperationRef("export", "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"),
        ),
    )
    resources = statement["rest"][0]["resource"]
    assert [r["type"] for r in resources] == ["Measure", "MeasureReport"]
    assert resources[1]["searchParam"] == [
        {"name": "measure", "type": "reference"},
        {"name": "period", "type": "date"},
    ]
    assert resources[0]["operation"][0]["name"] == "evaluate-measure"
    assert statement["rest"][0]["operation"][0]["name"] == "export"


# --------------------------------------------------------------------------------------------------
# determinism and files


def test_render_is_byte_stable_and_independent_of_input_order() -> None:
    spec = make_spec()
    shuffled = dataclasses.replace(spec, valuesets=dict(reversed(list(spec.valuesets.items()))))
    first = render_conformance(make_mappings(spec, make_spec(year=2026)), BASE)
    again = render_conformance(make_mappings(make_spec(year=2026), shuffled), BASE)
    assert first == again
    assert list(first) == [
        "CapabilityStatement-fhir-adapter.json",
        "Library-oregon-se-test-2025.json",
        "Library-oregon-se-test-2026.json",
        "Measure-oregon-se-test-2025.json",
        "Measure-oregon-se-test-2026.json",
        "ValueSet-oregon-se-test-2025-se-intervention-procedures.json",
        "ValueSet-oregon-se-test-2025-se-issue-diagnoses.json",
        "ValueSet-oregon-se-test-2026-se-intervention-procedures.json",
        "ValueSet-oregon-se-test-2026-se-issue-diagnoses.json",
    ]
    for data in first.values():
        text = data.decode("utf-8")
        assert text.endswith("}\n") and text.startswith('{\n  "')
        assert json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n" == text


def test_write_conformance(tmp_path: Path) -> None:
    mappings = make_mappings(make_spec())
    out = tmp_path / "conformance"
    written = write_conformance(mappings, out, BASE)
    assert [p.name for p in written] == list(render_conformance(mappings, BASE))
    assert all(p.read_bytes() == render_conformance(mappings, BASE)[p.name] for p in written)
    assert write_conformance(mappings, out, BASE) == written


def test_real_mappings_render() -> None:
    mappings = load_mappings(REPO / "mappings")
    files = render_conformance(mappings, BASE)
    assert {f"Measure-{m}-{y}.json" for m, y in mappings.measures} <= set(files)
    for (measure_id, year), spec in mappings.measures.items():
        measure = json.loads(files[f"Measure-{measure_id}-{year}.json"])
        assert measure["version"] == spec.version and str(year) in spec.version
        assert [g["id"] for g in measure["group"]] == [g.id for g in spec.groups]


# --------------------------------------------------------------------------------------------------
# the Measure and the checks agree


def summary_for(measure: Json) -> Json:
    """A valid summary MeasureReport for ``measure`` (counts: IP 10, DEN 8, DENEX 0, NUMER 2)."""
    counts = {"initial-population": 10, "denominator": 8, "denominator-exclusion": 0, "numerator": 2}
    groups = []
    for group in measure["group"]:
        populations = [
            {"id": p["id"], "code": copy.deepcopy(p["code"]), "count": counts[p["code"]["coding"][0]["code"]]}
            for p in group["population"]
        ]
        stratifiers = [
            {
                "id": s["id"],
                "code": [copy.deepcopy(s["code"])],
                "stratum": [
                    {
                        "value": {"text": "all"},
                        "population": [
                            {"code": copy.deepcopy(p["code"]), "count": p["count"]} for p in populations
                        ],
                        "measureScore": {"value": 0.25},
                    }
                ],
            }
            for s in group["stratifier"]
        ]
        groups.append(
            {
                "id": group["id"],
                "population": populations,
                "measureScore": {"value": 0.25},
                "stratifier": stratifiers,
            }
        )
    return {
        "resourceType": "MeasureReport",
        "meta": {
            "profile": ["http://hl7.org/fhir/us/davinci-deqm/StructureDefinition/summary-measurereport-deqm"]
        },
        "extension": [
            {
                "url": MEASURE_SCORING_EXT,
                "valueCodeableConcept": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/measure-scoring",
                            "code": "proportion",
                        }
                    ]
                },
            }
        ],
        "status": "complete",
        "type": "summary",
        "measure": f"{measure['url']}|{measure['version']}",
        "date": "2026-01-15T10:00:00-08:00",
        "reporter": {"reference": "Organization/oha"},
        "period": {"start": "2025-01-01", "end": "2025-12-31"},
        "improvementNotation": copy.deepcopy(measure["improvementNotation"]),
        "group": groups,
    }


def test_checks_accept_a_report_of_the_built_measure() -> None:
    measure = build_measure(make_spec(), BASE)
    assert check_measure_report(summary_for(measure), measure) == []


# --------------------------------------------------------------------------------------------------
# Node.js validators (base R4): the generated resources pass, a broken one fails in both


@pytest.fixture(scope="module")
def validators() -> None:
    reason = validators_available()
    if reason is not None:
        pytest.skip(reason)


def _generated() -> list[tuple[str, Json]]:
    spec = make_spec()
    resources = [
        ("measure", build_measure(spec, BASE, ccos=make_mappings().ccos, date=date(2025, 2, 1))),
        ("library", build_library(spec, BASE)),
        ("capability-statement", build_capability_statement(BASE, cli_capabilities())),
        ("summary-report", summary_for(build_measure(spec, BASE))),
    ]
    resources += [
        (f"valueset-{n}", build_valueset(spec, vs, BASE, systems=SYSTEMS)) for n, vs in spec.valuesets.items()
    ]
    real = render_conformance(load_mappings(REPO / "mappings"), BASE)
    resources += [(name, json.loads(data)) for name, data in real.items()]
    return resources


@pytest.mark.node
def test_generated_resources_pass_both_validators(validators: None) -> None:
    resources = _generated()
    results = node_validate([r for _, r in resources])
    failures = [
        f"{name}: {result.describe()}"
        for (name, _), result in zip(resources, results, strict=True)
        if not result.ok
    ]
    assert failures == []


def _measure() -> Json:
    return build_measure(make_spec(), BASE)


def _report() -> Json:
    return summary_for(build_measure(make_spec(), BASE))


BROKEN: list[Any] = [
    pytest.param(_measure, lambda r: r.update(groups=r.pop("group")), id="measure-unknown-property"),
    pytest.param(_measure, lambda r: r.update(experimental="yes"), id="measure-boolean-as-string"),
    pytest.param(_measure, lambda r: r.pop("status"), id="measure-status-missing"),
    pytest.param(
        _report, lambda r: r["group"][0]["population"][0].update(count="ten"), id="report-count-as-string"
    ),
]


@pytest.mark.node
@pytest.mark.parametrize(("build", "breakage"), BROKEN)
def test_broken_resource_fails_in_both_validators(
    validators: None, build: Callable[[], Json], breakage: Callable[[Json], object]
) -> None:
    resource = build()
    [before] = node_validate([resource])
    assert before.ok, before.describe()
    breakage(resource)
    [result] = node_validate([resource])
    assert result.medplum, f"medplum accepted it: {result.describe()}"
    assert result.fhirjs, f"fhir.js accepted it: {result.describe()}"
