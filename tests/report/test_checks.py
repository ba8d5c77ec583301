"""fhir_adapter.report.checks: valid DEQM reports pass; each invariant broken alone gives its message."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from fhir_adapter.report.checks import (
    COUNT_QUANTITY_EXT,
    CRITERIA_REFERENCE_EXTS,
    GROUP_IMPROVEMENT_NOTATION_EXT,
    MEASURE_SCORING_EXT,
    PROFILE_BY_TYPE,
    SUBMIT_DATA_UPDATE_TYPE_EXT,
    check_list_entries,
    check_measure_report,
)

Json = dict[str, Any]
Mutation = Callable[[Json], None]

URL = "https://example.org/fhir/Measure/oregon-se-test"
VERSION = "2025.0.0"
POP = "http://terminology.hl7.org/CodeSystem/measure-population"
CODES = ("initial-population", "denominator", "denominator-exclusion", "numerator")
INCREASE = {
    "coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/measure-improvement-notation", "code": "increase"}
    ]
}


def _scoring(code: str = "proportion") -> Json:
    return {
        "url": MEASURE_SCORING_EXT,
        "valueCodeableConcept": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/measure-scoring", "code": code}]
        },
    }


def measure() -> Json:
    """A hand-written Measure with two groups (independent of the conformance builder)."""

    def group(gid: str) -> Json:
        return {
            "id": gid,
            "population": [
                {"id": f"{gid}-{code}", "code": {"coding": [{"system": POP, "code": code}]}} for code in CODES
            ],
            "stratifier": [{"id": "age-band", "code": {"text": "age-band"}}],
        }

    return {
        "resourceType": "Measure",
        "url": URL,
        "version": VERSION,
        "scoring": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/measure-scoring", "code": "proportion"}
            ]
        },
        "improvementNotation": copy.deepcopy(INCREASE),
        "group": [group("g1"), group("g2")],
    }


def _pops(gid: str | None, counts: tuple[int, int, int, int]) -> list[Json]:
    out = []
    for code, count in zip(CODES, counts, strict=True):
        pop: Json = {"code": {"coding": [{"system": POP, "code": code}]}, "count": count}
        if gid is not None:
            pop["id"] = f"{gid}-{code}"
        out.append(pop)
    return out


def _header(report_type: str) -> Json:
    return {
        "resourceType": "MeasureReport",
        "meta": {"profile": [PROFILE_BY_TYPE[report_type]]},
        "status": "complete",
        "type": report_type,
        "measure": f"{URL}|{VERSION}",
        "date": "2026-01-15T10:00:00-08:00",
        "reporter": {"reference": "Organization/oha"},
        "period": {"start": "2025-01-01", "end": "2025-12-31"},
    }


def summary() -> Json:
    report = _header("summary")
    report["extension"] = [_scoring()]
    report["improvementNotation"] = copy.deepcopy(INCREASE)

    def stratum(value: str, counts: tuple[int, int, int, int], score: float | None) -> Json:
        out: Json = {"value": {"text": value}, "population": _pops(None, counts)}
        if score is not None:
            out["measureScore"] = {"value": score}
        return out

    report["group"] = [
        {
            "id": "g1",
            "population": _pops("g1", (10, 10, 1, 3)),
            "measureScore": {"value": 0.3333},
            "stratifier": [
                {
                    "id": "age-band",
                    "code": [{"text": "age-band"}],
                    "stratum": [stratum("1-2", (4, 4, 0, 1), 0.25), stratum("3-5", (6, 6, 1, 2), 0.4)],
                }
            ],
        },
        {
            "id": "g2",
            "population": _pops("g2", (10, 3, 0, 2)),
            "measureScore": {"value": 2 / 3},
            "stratifier": [
                {
                    "id": "age-band",
                    "code": [{"text": "age-band"}],
                    "stratum": [stratum("1-2", (4, 0, 0, 0), None), stratum("3-5", (6, 3, 0, 2), 2 / 3)],
                }
            ],
        },
    ]
    return report


def individual() -> Json:
    report = _header("individual")
    report["extension"] = [_scoring()]
    report["improvementNotation"] = copy.deepcopy(INCREASE)
    report["subject"] = {"reference": "Patient/p1"}
    report["group"] = [
        {"id": "g1", "population": _pops("g1", (1, 1, 0, 1)), "measureScore": {"value": 1.0}},
        {"id": "g2", "population": _pops("g2", (1, 0, 0, 0))},
    ]
    report["evaluatedResource"] = [
        {
            "reference": "Encounter/e1",
            "extension": [{"url": CRITERIA_REFERENCE_EXTS[0], "valueString": "g1-numerator"}],
        }
    ]
    return report


def subject_list() -> Json:
    report = _header("subject-list")
    report["extension"] = [_scoring()]
    report["improvementNotation"] = copy.deepcopy(INCREASE)
    report["contained"] = []
    report["group"] = []
    for gid, counts, score in (("g1", (1, 1, 0, 1), 1.0), ("g2", (1, 0, 0, 0), None)):
        pops = _pops(gid, counts)
        for pop in pops:
            list_id = f"{pop['id']}-list"
            pop["subjectResults"] = {"reference": f"#{list_id}"}
            entries = [{"item": {"reference": "MeasureReport/ind-1"}}] if pop["count"] else []
            contained: Json = {"resourceType": "List", "id": list_id, "status": "current", "mode": "snapshot"}
            if entries:
                contained["entry"] = entries
            report["contained"].append(contained)
        group: Json = {"id": gid, "population": pops}
        if score is not None:
            group["measureScore"] = {"value": score}
        report["group"].append(group)
    return report


def data_collection() -> Json:
    report = _header("data-collection")
    report["extension"] = [{"url": SUBMIT_DATA_UPDATE_TYPE_EXT, "valueCode": "snapshot"}]
    report["subject"] = {"reference": "Patient/p1"}
    report["group"] = [{"id": "g1", "population": _pops("g1", (1, 1, 0, 1))}]
    report["evaluatedResource"] = [{"reference": "Encounter/e1"}]
    return report


BUILDERS: dict[str, Callable[[], Json]] = {
    "summary": summary,
    "individual": individual,
    "subject-list": subject_list,
    "data-collection": data_collection,
}


def _walk(report: Json, path: str) -> tuple[Any, str | int]:
    parts: list[str | int] = [int(p) if p.isdigit() else p for p in path.split(".")]
    node: Any = report
    for part in parts[:-1]:
        node = node[part]
    return node, parts[-1]


def put(path: str, value: Any) -> Mutation:
    def mutate(report: Json) -> None:
        node, key = _walk(report, path)
        node[key] = copy.deepcopy(value)

    return mutate


def drop(path: str) -> Mutation:
    def mutate(report: Json) -> None:
        node, key = _walk(report, path)
        del node[key]

    return mutate


def both(*mutations: Mutation) -> Mutation:
    def mutate(report: Json) -> None:
        for m in mutations:
            m(report)

    return mutate


def _nothing(report: Json) -> None:
    return None


G0 = "MeasureReport.group[0]"
G1 = "MeasureReport.group[1]"
S00 = f"{G0}.stratifier[0]"

VALID = [
    pytest.param("summary", _nothing, id="summary"),
    pytest.param("individual", _nothing, id="individual"),
    pytest.param("subject-list", _nothing, id="subject-list"),
    pytest.param("data-collection", _nothing, id="data-collection"),
    pytest.param(
        "summary",
        both(
            drop("extension"),
            put(
                "group.0.extension",
                [_scoring(), {"url": GROUP_IMPROVEMENT_NOTATION_EXT, "valueCodeableConcept": INCREASE}],
            ),
            put(
                "group.1.extension",
                [_scoring(), {"url": GROUP_IMPROVEMENT_NOTATION_EXT, "valueCodeableConcept": INCREASE}],
            ),
        ),
        id="summary-scoring-on-every-group",
    ),
    pytest.param("summary", put("group.0.measureScore.value", 0.33333333), id="summary-score-more-decimals"),
    pytest.param("summary", put("measure", URL + "|" + VERSION), id="summary-measure-versioned"),
    pytest.param(
        "individual",
        put("evaluatedResource.0.extension.0.url", CRITERIA_REFERENCE_EXTS[1]),
        id="individual-cqfm-criteriaReference",
    ),
    pytest.param("individual", drop("meta"), id="individual-without-meta-profile"),
    pytest.param(
        "subject-list",
        put("group.0.population.0.subjectResults", {"reference": "List/external-1"}),
        id="subject-list-external-List",
    ),
    pytest.param("data-collection", drop("group"), id="data-collection-without-groups"),
    pytest.param("data-collection", put("measure", URL), id="data-collection-unversioned-measure"),
    pytest.param(
        "summary",
        put("period", {"start": "2025-01-01T00:00:00-08:00", "end": "2025-12-31"}),
        id="period-datetime",
    ),
]


@pytest.mark.parametrize(("report_type", "mutation"), VALID)
def test_valid_reports_pass(report_type: str, mutation: Mutation) -> None:
    report = BUILDERS[report_type]()
    mutation(report)
    assert check_measure_report(report, measure()) == []


BROKEN = [
    # header, measure reference, period
    pytest.param(
        "summary",
        put("resourceType", "Measure"),
        ["type: resourceType is 'Measure', expected 'MeasureReport'"],
        id="resourceType",
    ),
    pytest.param(
        "summary",
        put("type", "data-exchange"),
        [
            "type: MeasureReport.type 'data-exchange' is not one of the R4 codes individual, subject-list, "
            "summary, data-collection"
        ],
        id="r5-type-code",
    ),
    pytest.param(
        "summary",
        put("meta.profile", [PROFILE_BY_TYPE["individual"]]),
        [f"profile: MeasureReport.meta.profile claims {PROFILE_BY_TYPE['individual']} for a summary report"],
        id="wrong-profile-claim",
    ),
    pytest.param(
        "summary",
        put("measure", URL),
        [f"deqm-0: MeasureReport.measure: '{URL}' has no '|version'"],
        id="deqm-0-summary",
    ),
    pytest.param(
        "individual",
        put("measure", URL + "|"),
        [f"deqm-0: MeasureReport.measure: '{URL}|' has no '|version'"],
        id="deqm-0-individual-empty-version",
    ),
    pytest.param(
        "subject-list", drop("measure"), ["deqm-0: MeasureReport.measure: missing"], id="deqm-0-missing"
    ),
    pytest.param(
        "summary",
        put("measure", "https://example.org/fhir/Measure/other|2025.0.0"),
        [
            "measure: MeasureReport.measure: 'https://example.org/fhir/Measure/other' is not the Measure's "
            f"url '{URL}'"
        ],
        id="measure-other-url",
    ),
    pytest.param(
        "summary",
        put("measure", f"{URL}|2026.0.0"),
        ["measure: MeasureReport.measure: version '2026.0.0' is not the Measure's version '2025.0.0'"],
        id="measure-other-version",
    ),
    pytest.param(
        "summary",
        put("period.start", "2025-01"),
        ["deqm-1: MeasureReport.period.start: '2025-01' is not at least day precision"],
        id="deqm-1-month",
    ),
    pytest.param(
        "data-collection",
        drop("period.end"),
        ["deqm-1: MeasureReport.period.end: None is not at least day precision"],
        id="deqm-1-no-end",
    ),
    pytest.param(
        "individual", drop("period"), ["deqm-1: MeasureReport.period: missing"], id="deqm-1-no-period"
    ),
    pytest.param(
        "summary",
        put("period", {"start": "2025-12-31", "end": "2025-01-01"}),
        ["deqm-1: MeasureReport.period: start 2025-12-31 is after end 2025-01-01"],
        id="period-reversed",
    ),
    pytest.param("summary", drop("date"), ["profile: MeasureReport.date: missing (1..1)"], id="date-missing"),
    pytest.param(
        "subject-list",
        drop("reporter"),
        ["profile: MeasureReport.reporter: missing (1..1)"],
        id="reporter-missing",
    ),
    pytest.param(
        "individual",
        drop("subject"),
        ["profile: MeasureReport.subject: missing (1..1 in a individual report)"],
        id="indv-subject-missing",
    ),
    pytest.param(
        "data-collection",
        drop("subject"),
        ["profile: MeasureReport.subject: missing (1..1 in a data-collection report)"],
        id="datax-subject-missing",
    ),
    pytest.param(
        "summary",
        put("subject", {"reference": "Group/g"}),
        ["profile: MeasureReport.subject: present (0..0 in a summary report)"],
        id="summary-subject",
    ),
    pytest.param(
        "summary",
        put("evaluatedResource", [{"reference": "Encounter/e1"}]),
        ["profile: MeasureReport.evaluatedResource: present (0..0 in a summary report)"],
        id="summary-evaluatedResource",
    ),
    # scoring: deqm-2, deqm-3, deqm-4
    pytest.param(
        "summary",
        drop("extension"),
        ["deqm-3: MeasureReport.extension:scoring: scoring is neither on the root nor on every group"],
        id="deqm-3-no-scoring",
    ),
    pytest.param(
        "summary",
        put(
            "group.0.extension",
            [_scoring(), {"url": GROUP_IMPROVEMENT_NOTATION_EXT, "valueCodeableConcept": INCREASE}],
        ),
        ["deqm-3: MeasureReport.extension:scoring: scoring is on the root and on groups (not both)"],
        id="deqm-3-root-and-group",
    ),
    pytest.param(
        "individual",
        both(
            drop("extension"),
            put(
                "group.0.extension",
                [_scoring(), {"url": GROUP_IMPROVEMENT_NOTATION_EXT, "valueCodeableConcept": INCREASE}],
            ),
        ),
        ["deqm-3: MeasureReport.extension:scoring: scoring is neither on the root nor on every group"],
        id="deqm-3-only-some-groups",
    ),
    pytest.param(
        "summary",
        both(
            drop("extension"), put("group.0.extension", [_scoring()]), put("group.1.extension", [_scoring()])
        ),
        [
            "deqm-4: MeasureReport.group[0]: proportion scoring on the group requires "
            "extension-groupImprovementNotation",
            "deqm-4: MeasureReport.group[1]: proportion scoring on the group requires "
            "extension-groupImprovementNotation",
        ],
        id="deqm-4",
    ),
    pytest.param(
        "summary",
        drop("improvementNotation"),
        ["deqm-2: MeasureReport.improvementNotation: required when scoring at the root is proportion"],
        id="deqm-2",
    ),
    pytest.param(
        "summary",
        put("extension", [_scoring("ratio")]),
        ["scoring: extension-measureScoring: 'ratio' is not the Measure's scoring 'proportion'"],
        id="scoring-not-the-measures",
    ),
    pytest.param(
        "summary",
        put("improvementNotation.coding.0.code", "decrease"),
        [
            "measure: MeasureReport.improvementNotation: "
            "[('http://terminology.hl7.org/CodeSystem/measure-improvement-notation', 'decrease')] "
            "is not the Measure's [('http://terminology.hl7.org/CodeSystem/measure-improvement-notation', "
            "'increase')]"
        ],
        id="improvementNotation-not-the-measures",
    ),
    # group structure: deqm-5, deqm-7, deqm-8, deqm-9
    pytest.param(
        "individual",
        put("group.1.population", []),
        [
            "deqm-5: MeasureReport.group[1]: has no population",
            *(
                f"measure: MeasureReport.group[1].population: the Measure's population 'g2-{c}' is not "
                "reported"
                for c in CODES
            ),
        ],
        id="deqm-5",
    ),
    pytest.param(
        "summary",
        put("group.0.stratifier.0.stratum.0.component", [{"code": {"text": "x"}, "value": {"text": "y"}}]),
        [f"deqm-7: {S00}: needs exactly one of code and stratum.component"],
        id="deqm-7-code-and-components",
    ),
    pytest.param(
        "summary",
        put("group.0.population.0.extension", [{"url": COUNT_QUANTITY_EXT, "valueQuantity": {"value": 10}}]),
        [f"deqm-8: {G0}.population[0]: needs exactly one of count and countQuantity"],
        id="deqm-8-both",
    ),
    pytest.param(
        "individual",
        drop("group.0.population.3.count"),
        [f"deqm-8: {G0}.population[3]: needs exactly one of count and countQuantity"],
        id="deqm-8-neither",
    ),
    pytest.param(
        "summary",
        drop("group.0.stratifier.0.stratum.1.population.0.count"),
        [f"deqm-9: {S00}.stratum[1].population[0]: needs a count (and no countQuantity)"],
        id="deqm-9",
    ),
    # scores: deqm-6
    pytest.param(
        "summary",
        put("group.0.measureScore.value", 1.5),
        [f"deqm-6: {G0}.measureScore: 1.5 is not in [0, 1]"],
        id="deqm-6-above-one",
    ),
    pytest.param(
        "summary",
        put("group.0.measureScore.value", "0.3"),
        [f"deqm-6: {G0}.measureScore: '0.3' is not in [0, 1]"],
        id="deqm-6-not-a-number",
    ),
    pytest.param(
        "summary",
        put("group.0.measureScore.value", 0.5),
        [f"deqm-6: {G0}.measureScore: 0.5 is not numerator/(denominator − exclusion) = 3/9"],
        id="deqm-6-wrong-score",
    ),
    pytest.param(
        "summary",
        put("group.0.measureScore.value", 0.3),
        [f"deqm-6: {G0}.measureScore: 0.3 is not numerator/(denominator − exclusion) = 3/9"],
        id="deqm-6-exclusion-not-subtracted",
    ),
    pytest.param(
        "summary",
        drop("group.0.measureScore"),
        [f"deqm-6: {G0}.measureScore: missing although denominator − exclusion is 9"],
        id="deqm-6-missing",
    ),
    pytest.param(
        "individual",
        put("group.1.measureScore", {"value": 0.0}),
        [f"deqm-6: {G1}.measureScore: present although denominator − exclusion is 0"],
        id="deqm-6-no-denominator",
    ),
    pytest.param(
        "summary",
        put("group.1.stratifier.0.stratum.0.measureScore", {"value": 0.0}),
        [
            f"deqm-6: {G1}.stratifier[0].stratum[0].measureScore: present although denominator − exclusion "
            "is 0"
        ],
        id="deqm-6-stratum-no-denominator",
    ),
    # counts
    pytest.param(
        "individual",
        put("group.1.population.3.count", 1),
        [f"counts: {G1}: numerator 1 exceeds denominator − exclusion 0"],
        id="numerator-outside-denominator",
    ),
    pytest.param(
        "individual",
        put("group.0.population.0.count", 0),
        [f"counts: {G0}: denominator 1 exceeds initial-population 0"],
        id="denominator-outside-initial-population",
    ),
    pytest.param(
        "individual",
        put("group.1.population.2.count", 1),
        [f"counts: {G1}: denominator-exclusion 1 exceeds denominator 0"],
        id="exclusion-outside-denominator",
    ),
    pytest.param(
        "data-collection",
        put("group.0.population.3.count", -1),
        [f"counts: {G0}.population[3]: count -1 is not a count"],
        id="negative-count",
    ),
    # consistency with the Measure
    pytest.param(
        "summary",
        put("group.1.id", "g3"),
        [
            "measure: MeasureReport.group[1].id: 'g3' is not a group of the Measure",
            "measure: MeasureReport.group: the Measure's group 'g2' is not reported",
        ],
        id="group-id-unknown",
    ),
    pytest.param(
        "individual",
        put("group.1", individual()["group"][0]),
        [
            "measure: MeasureReport.group[1].id: group 'g1' is reported twice",
            "measure: MeasureReport.group: the Measure's group 'g2' is not reported",
        ],
        id="group-twice",
    ),
    pytest.param(
        "data-collection",
        put("group.0.id", "all"),
        ["measure: MeasureReport.group[0].id: 'all' is not a group of the Measure"],
        id="datax-group-id-unknown",
    ),
    pytest.param(
        "summary",
        put("group.0.population.3.id", "g1-numer"),
        [
            "measure: MeasureReport.group[0].population[3].id: 'g1-numer' is not a population of Measure "
            "group 'g1'",
            "measure: MeasureReport.group[0].population: the Measure's population 'g1-numerator' is not "
            "reported",
        ],
        id="population-id-unknown",
    ),
    pytest.param(
        "individual",
        put("group.0.population.1.code.coding.0.code", "denominator-exception"),
        [
            "measure: MeasureReport.group[0].population[1].code: 'denominator-exception' is not "
            "'denominator' as in the Measure"
        ],
        id="population-code-differs",
    ),
    pytest.param(
        "subject-list",
        drop("group.0.population.2"),
        [
            "measure: MeasureReport.group[0].population: the Measure's population "
            "'g1-denominator-exclusion' is not reported"
        ],
        id="population-missing",
    ),
    pytest.param(
        "summary",
        put("group.0.stratifier.0.id", "age"),
        [
            "measure: MeasureReport.group[0].stratifier[0].id: 'age' is not a stratifier of Measure group "
            "'g1'",
            "measure: MeasureReport.group[0].stratifier: the Measure's stratifier 'age-band' is not reported",
        ],
        id="stratifier-id-unknown",
    ),
    pytest.param(
        "summary",
        put("group.0.stratifier.0.code", [{"text": "age band"}]),
        [
            "measure: MeasureReport.group[0].stratifier[0].code: differs from the Measure's stratifier "
            "'age-band' code"
        ],
        id="stratifier-code-differs",
    ),
    pytest.param(
        "summary",
        drop("group.1.stratifier"),
        ["measure: MeasureReport.group[1].stratifier: the Measure's stratifier 'age-band' is not reported"],
        id="summary-stratifier-missing",
    ),
    # strata
    pytest.param(
        "summary",
        put("group.0.stratifier.0.stratum.0.population.0.count", 11),
        [
            f"strata: {S00}.stratum[0]: initial-population count 11 exceeds the group's 10",
            f"strata: {S00}: initial-population counts of the strata add up to 17, not the group's 10",
        ],
        id="stratum-exceeds-group",
    ),
    pytest.param(
        "summary",
        put("group.0.stratifier.0.stratum.0.population.0.count", 5),
        [f"strata: {S00}: initial-population counts of the strata add up to 11, not the group's 10"],
        id="strata-do-not-add-up",
    ),
    pytest.param(
        "summary",
        put("group.0.stratifier.0.stratum.0.value", {}),
        [f"summary: {S00}.stratum[0].value: missing"],
        id="stratum-value-missing",
    ),
    pytest.param(
        "summary",
        put("group.0.stratifier.0.stratum.0.population.2.code.coding.0.code", "numerator-exclusion"),
        [
            f"summary: {S00}.stratum[0].population: codes ['denominator', 'initial-population', "
            "'numerator', 'numerator-exclusion'] "
            "are not the group's ['denominator', 'denominator-exclusion', 'initial-population', 'numerator']"
        ],
        id="stratum-populations-differ",
    ),
    pytest.param(
        "summary",
        put("group.0.population.0.subjectResults", {"reference": "List/x"}),
        ["summary: MeasureReport.group[0].population: subjectResults in a summary report"],
        id="summary-subjectResults",
    ),
    # individual
    pytest.param(
        "individual",
        put("group.0.population.0.subjectResults", {"reference": "List/x"}),
        [f"indv: {G0}.population[0].subjectResults: present (0..0 in an individual report)"],
        id="indv-subjectResults",
    ),
    pytest.param(
        "individual",
        both(put("group.0.population.0.count", 2), put("group.0.population.1.count", 2)),
        [
            f"deqm-6: {G0}.measureScore: 1.0 is not numerator/(denominator − exclusion) = 1/2",
            f"indv: {G0}.population[0].count: 2 for one subject of a patient-based measure",
            f"indv: {G0}.population[1].count: 2 for one subject of a patient-based measure",
        ],
        id="indv-count-two",
    ),
    pytest.param(
        "individual",
        drop("evaluatedResource.0.extension"),
        ["indv: MeasureReport.evaluatedResource[0]: has no criteriaReference extension"],
        id="indv-evaluated-without-criteria",
    ),
    pytest.param(
        "individual",
        put("evaluatedResource.0.extension.0.valueString", "numerator"),
        [
            "indv: MeasureReport.evaluatedResource[0]: criteriaReference 'numerator' is not a population "
            "id of the Measure"
        ],
        id="indv-criteria-unknown-population",
    ),
    # subject-list
    pytest.param(
        "subject-list",
        drop("group.0.population.1.subjectResults"),
        [f"subjectlist: {G0}.population[1].subjectResults: missing (1..1)"],
        id="subjectlist-missing-results",
    ),
    pytest.param(
        "subject-list",
        put("group.0.population.1.subjectResults.reference", "Patient/p1"),
        [f"subjectlist: {G0}.population[1].subjectResults: 'Patient/p1' does not reference a List"],
        id="subjectlist-results-not-a-List",
    ),
    pytest.param(
        "subject-list",
        put("group.0.population.1.subjectResults.reference", "#nope"),
        [f"subjectlist: {G0}.population[1].subjectResults: '#nope' is not a contained List"],
        id="subjectlist-contained-missing",
    ),
    pytest.param(
        "subject-list",
        put("contained.0.entry.0.item.reference", "Patient/p1"),
        [
            f"subjectlist: {G0}.population[0].subjectResults: List.entry[0].item: references 'Patient/p1', "
            "expected an individual MeasureReport"
        ],
        id="subjectlist-list-of-patients",
    ),
    # data-collection
    pytest.param(
        "data-collection",
        drop("extension"),
        ["datax: MeasureReport.extension:updatetype: 0 present, expected 1"],
        id="datax-update-type-missing",
    ),
    pytest.param(
        "data-collection",
        put("extension.0.valueCode", "full"),
        ["datax: MeasureReport.extension:updatetype: 'full' is not 'incremental' or 'snapshot'"],
        id="datax-update-type-unknown",
    ),
    pytest.param(
        "data-collection",
        put("group.0.measureScore", {"value": 1.0}),
        ["datax: MeasureReport.group[0].measureScore: present (0..0)"],
        id="datax-score",
    ),
    pytest.param(
        "data-collection",
        put("group.0.stratifier", [{"id": "age-band", "code": [{"text": "age-band"}], "stratum": []}]),
        ["datax: MeasureReport.group[0].stratifier: present (0..0)"],
        id="datax-strata",
    ),
]


@pytest.mark.parametrize(("report_type", "mutation", "expected"), BROKEN)
def test_each_broken_invariant_is_reported(report_type: str, mutation: Mutation, expected: list[str]) -> None:
    report = BUILDERS[report_type]()
    mutation(report)
    assert check_measure_report(report, measure()) == expected


@pytest.mark.parametrize(
    ("suppressed", "expected"),
    [
        pytest.param(
            False,
            [f"strata: {S00}: initial-population counts of the strata add up to 11, not the group's 10"],
            id="not-suppressed",
        ),
        pytest.param(True, [], id="suppressed"),
    ],
)
def test_suppressed_summary_need_not_add_up(suppressed: bool, expected: list[str]) -> None:
    report = summary()
    put("group.0.stratifier.0.stratum.0.population.0.count", 5)(report)
    assert check_measure_report(report, measure(), suppressed=suppressed) == expected


def test_checks_do_not_mutate_their_inputs() -> None:
    report, m = summary(), measure()
    before = (copy.deepcopy(report), copy.deepcopy(m))
    check_measure_report(report, m)
    assert (report, m) == before


# --------------------------------------------------------------------------------------------------
# check_list_entries


def _ind(report_id: str, numerator: int = 1, report_type: str = "individual") -> Json:
    report = individual()
    report["id"] = report_id
    report["type"] = report_type
    report["group"][0]["population"][3]["count"] = numerator
    return report


def _list(*references: str) -> Json:
    return {
        "resourceType": "List",
        "status": "current",
        "mode": "snapshot",
        "entry": [{"item": {"reference": r}} for r in references],
    }


LISTS = [
    pytest.param(_list("MeasureReport/a", "MeasureReport/b"), {}, [], id="valid"),
    pytest.param(_list("https://example.org/fhir/MeasureReport/a"), {}, [], id="valid-absolute"),
    pytest.param(
        _list("MeasureReport/a"),
        {"group_id": "g1", "population_code": "numerator"},
        [],
        id="valid-membership",
    ),
    pytest.param(
        _list("Patient/p1"),
        {},
        ["subject-list: List.entry[0].item: references 'Patient/p1', expected an individual MeasureReport"],
        id="patients",
    ),
    pytest.param(
        _list("MeasureReport/zz"),
        {},
        ["subject-list: List.entry[0].item: 'MeasureReport/zz' is not among the given MeasureReports"],
        id="dangling",
    ),
    pytest.param(
        _list("MeasureReport/s"),
        {},
        ["subject-list: List.entry[0].item: 'MeasureReport/s' has type 'summary', expected 'individual'"],
        id="not-individual",
    ),
    pytest.param(
        _list("MeasureReport/a", "MeasureReport/a"),
        {},
        ["subject-list: List.entry[1].item: 'MeasureReport/a' is listed twice"],
        id="twice",
    ),
    pytest.param(
        _list("MeasureReport/b"),
        {"group_id": "g1", "population_code": "numerator"},
        ["subject-list: List.entry[0].item: 'MeasureReport/b' does not count 1 in g1/numerator"],
        id="not-a-member",
    ),
    pytest.param(
        {"resourceType": "Bundle"},
        {},
        ["subject-list: resourceType is 'Bundle', expected 'List'"],
        id="not-a-List",
    ),
]


@pytest.mark.parametrize(("list_resource", "kwargs", "expected"), LISTS)
def test_check_list_entries(list_resource: Json, kwargs: dict[str, str], expected: list[str]) -> None:
    reports = [_ind("a"), _ind("b", numerator=0), _ind("s", report_type="summary")]
    assert check_list_entries(list_resource, reports, **kwargs) == expected


def test_score_formula_counts_exceptions() -> None:
    """CQFM: score = (NUMER − NUMEX) / (DEN − DENEX − DENEXCEP)."""
    from fhir_adapter.report.checks import _check_proportion

    counts = {"initial-population": 10, "denominator": 10, "denominator-exclusion": 0,
              "denominator-exception": 2, "numerator": 4}  # fmt: skip
    assert _check_proportion("g", counts, [], {"measureScore": {"value": 0.5}}) == []
    assert _check_proportion("g", counts, [], {"measureScore": {"value": 0.4}}) != []


@pytest.mark.parametrize("bad", [["any"], {"x": 1}, 7], ids=["list", "dict", "int"])
def test_wrongly_typed_group_ids_are_reported_not_crashed(bad: object) -> None:
    from fhir_adapter.report.checks import check_measure_report

    report = {"resourceType": "MeasureReport", "type": "summary", "group": [{"id": bad, "population": []}]}
    measure = {"resourceType": "Measure", "group": [{"id": "any", "population": []}]}
    assert any("is not a group of the Measure" in v for v in check_measure_report(report, measure))
