"""``$data-requirements``: the same types and value-set code filters as the shipped logic Library, date
filters on the service dates only, and a valid R4 module-definition Library."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from fhir_adapter.measure.spec import Mappings
from fhir_adapter.report.conformance import build_library, build_measure
from fhir_adapter.report.datarequirements import DATE_PATHS, build_data_requirements
from fhir_adapter.settings import DEFAULT_CANONICAL_BASE
from tests.validators.harness import node_validate, validators_available

Json = dict[str, Any]
REPO = Path(__file__).resolve().parents[2]
CASES = [
    pytest.param("oregon-se-issue-focused", 2025, id="issue-focused-2025"),
    pytest.param("oregon-se-issue-focused", 2026, id="issue-focused-2026"),
    pytest.param("oregon-se-reach", 2024, id="reach-2024"),
]


def _without_dates(requirements: list[Json]) -> list[Json]:
    return [{k: v for k, v in r.items() if k != "dateFilter"} for r in requirements]


@pytest.mark.parametrize(("measure", "year"), CASES)
def test_code_filters_match_the_shipped_library(mappings: Mappings, measure: str, year: int) -> None:
    spec = mappings.measures[(measure, year)]
    library = build_data_requirements(spec, DEFAULT_CANONICAL_BASE, date(year, 1, 1), date(year, 12, 31))
    shipped = json.loads((REPO / "conformance" / f"Library-{measure}-{year}.json").read_text())
    assert _without_dates(library["dataRequirement"]) == shipped["dataRequirement"]
    assert (
        _without_dates(library["dataRequirement"])
        == build_library(spec, DEFAULT_CANONICAL_BASE)["dataRequirement"]
    )


@pytest.mark.parametrize(("measure", "year"), CASES)
def test_value_sets_are_the_measures(mappings: Mappings, measure: str, year: int) -> None:
    spec = mappings.measures[(measure, year)]
    library = build_data_requirements(spec, DEFAULT_CANONICAL_BASE, date(year, 1, 1), date(year, 12, 31))
    used = {f["valueSet"] for r in library["dataRequirement"] for f in r.get("codeFilter", [])}
    measure_resource = build_measure(spec, DEFAULT_CANONICAL_BASE, ccos=mappings.ccos)
    depends = {a["resource"] for a in measure_resource["relatedArtifact"] if a["type"] == "depends-on"}
    assert used and used <= depends
    # every value set a group's numerator or need criterion names is filtered on
    named = {g.numerator.procedures for g in spec.groups} | {g.numerator.diagnoses for g in spec.groups}
    named |= {g.need_diagnoses for g in spec.groups}
    expected = {
        f"{DEFAULT_CANONICAL_BASE}/ValueSet/{spec.id}-{name}|{spec.version}" for name in named if name
    }
    assert expected <= used
    assert {a["resource"] for a in library["relatedArtifact"]} == {
        f"{DEFAULT_CANONICAL_BASE}/Measure/{spec.id}|{spec.version}",
        f"{DEFAULT_CANONICAL_BASE}/Library/{spec.id}|{spec.version}",
        *used,
    }


@pytest.mark.parametrize(
    ("start", "end"),
    [
        pytest.param(date(2025, 1, 1), date(2025, 12, 31), id="calendar-year"),
        pytest.param(date(2025, 4, 1), date(2025, 6, 30), id="quarter"),
    ],
)
def test_date_filters_on_services_only(mappings: Mappings, start: date, end: date) -> None:
    spec = mappings.measures[("oregon-se-issue-focused", 2025)]
    library = build_data_requirements(spec, DEFAULT_CANONICAL_BASE, start, end)
    assert library["type"]["coding"][0]["code"] == "module-definition"
    for requirement in library["dataRequirement"]:
        if requirement["type"] in DATE_PATHS:
            assert requirement["dateFilter"] == [
                {
                    "path": DATE_PATHS[requirement["type"]],
                    "valuePeriod": {"start": start.isoformat(), "end": end.isoformat()},
                }
            ]
        else:
            assert requirement["type"] in ("Patient", "Coverage", "Condition")
            assert "dateFilter" not in requirement


def test_library_passes_both_r4_validators(mappings: Mappings) -> None:
    reason = validators_available()
    if reason:
        pytest.skip(reason)
    libraries = [
        build_data_requirements(
            mappings.measures[(m, y)], DEFAULT_CANONICAL_BASE, date(y, 1, 1), date(y, 12, 31)
        )
        for m, y in (("oregon-se-issue-focused", 2025), ("oregon-se-reach", 2024))
    ]
    results = node_validate(libraries)
    assert all(r.ok for r in results), [r.describe() for r in results if not r.ok]
