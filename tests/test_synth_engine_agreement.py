"""The synthetic generator and the engine were written separately from the spec; here each
scenario the generator tags must come out of the engine as spec §3 says (issue-focused rules,
`all` sources), for every tagged child in the relevant year."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import pytest

from fhir_adapter.ingest.runner import ingest_paths
from fhir_adapter.measure.spec import Mappings
from fhir_adapter.store.evaluate import GroupResult, evaluate
from fhir_adapter.synth import synthesize
from tests.conftest import make_store_factory
from tests.measure.test_boundaries import FAR

IP_REASONS = {"no-birth-date", "ambiguous-birth-date", "outside-age-band"}
#: tag -> (year key in the manifest, check on the all-enrolled result, description)
SERVICE_NUMERATOR = {
    "qualifying-service", "qualifying-claims", "qualifying-ehr", "partial-outcome", "year-end-utc",
    "encounter-record-claim", "local-visit-type", "encounter-diagnosis-element", "encounter-reason-code-dx",
    "ehr-procedure-only", "dx-not-on-line", "dx-secondary-only", "same-service-ehr-and-claim",
}  # fmt: skip
SERVICE_NEVER = {
    "cancelled-eob-only", "condition-entered-in-error-only", "ehr-cancelled-only", "ehr-refuted-dx-only",
    "eob-error-only", "in-progress-encounter-only", "line-without-date-only", "preauth-only",
    "procedure-not-done-only", "replaced-only", "screening-only", "aba-autism",
}  # fmt: skip
SERVICE_REASON = {
    "denied-only": "denied-claim-only",
    "line-denied-only": "denied-claim-only",
    "claim-judged-by-denied-eob": "denied-claim-only",
    "service-without-qualifying-diagnosis": "service-without-qualifying-diagnosis",
    "unknown-code-system-only": "unknown-code-system",
}
ENROLLMENT_OK = {"gap-30", "gap-45"}
ENROLLMENT_GAP = {"gap-46", "two-gaps"}


@pytest.fixture(scope="module")
def outcome(
    tmp_path_factory: pytest.TempPathFactory, mappings: Mappings
) -> tuple[dict[str, Any], dict[int, dict[str, GroupResult]]]:
    root = tmp_path_factory.mktemp("synth")
    synthesize(root / "data", 1000, 5, first_year=2024, last_year=2025)
    manifest = json.loads((root / "data" / "manifest.json").read_text())
    store = make_store_factory("sqlite", root, [])()
    try:
        for folder in sorted(p for p in (root / "data").iterdir() if p.is_dir()):
            ingest_paths(
                store, [folder], folder.name, batch_size=5000, clock=lambda: datetime(2026, 3, 1, tzinfo=UTC)
            )
        spec = mappings.measure_for("oregon-se-issue-focused", date(2025, 12, 31))
        by_year = {}
        for year in (2024, 2025):
            ev = evaluate(store, mappings, spec, date(year, 1, 1), date(year, 12, 31), FAR, "all")
            by_year[year] = {ch.member_id: ch.groups[0] for ch in ev.children if ch.member_id}
    finally:
        store.close()
    return manifest, by_year


def _cases(
    manifest: dict[str, Any], by_year: dict[int, dict[str, GroupResult]], tags: set[str], year_key: str
) -> Iterator[tuple[str, str, int, GroupResult]]:
    for key, child in manifest["children"].items():
        if "unlinked-ehr" in child["tags"]:
            continue  # its EHR records are another (unlinked) person: not this child's services
        for tag in set(child["tags"]) & tags:
            if (
                year_key == "service_years"
                and tag not in SERVICE_NUMERATOR
                and SERVICE_NUMERATOR & set(child["tags"])
            ):
                continue  # tags are not exclusive: another service may qualify the child
            years = child.get(year_key) or []
            for year in years if isinstance(years, list) else [years]:
                result = by_year[year].get(child.get("member_id"))
                if result is not None:
                    yield key, tag, year, result


def test_manifest_lists_every_child(outcome: tuple[dict[str, Any], Any]) -> None:
    assert len(outcome[0]["children"]) == 1000


def test_service_scenarios(outcome: tuple[dict[str, Any], dict[int, dict[str, GroupResult]]]) -> None:
    manifest, by_year = outcome
    wrong = []
    checked = 0
    for key, tag, year, g in _cases(
        manifest, by_year, SERVICE_NUMERATOR | SERVICE_NEVER | set(SERVICE_REASON), "service_years"
    ):
        if not g.den or g.denex:
            continue
        checked += 1
        if tag in SERVICE_NUMERATOR and not g.num:
            wrong.append((key, tag, year, g.reason))
        if tag in SERVICE_NEVER and g.num:
            wrong.append((key, tag, year, g.reason))
        if tag in SERVICE_REASON and g.reason != SERVICE_REASON[tag]:
            wrong.append((key, tag, year, g.reason))
    assert checked > 100
    assert wrong == [], wrong


def test_enrollment_scenarios(outcome: tuple[dict[str, Any], dict[int, dict[str, GroupResult]]]) -> None:
    manifest, by_year = outcome
    wrong = []
    checked = 0
    for key, tag, year, g in _cases(manifest, by_year, ENROLLMENT_OK | ENROLLMENT_GAP, "enrollment_year"):
        if g.reason in IP_REASONS:
            continue
        checked += 1
        if tag in ENROLLMENT_OK and g.reason in {"enrollment-gap", "not-enrolled-on-anchor"}:
            wrong.append((key, tag, year, g.reason))
        if tag in ENROLLMENT_GAP and g.reason != "enrollment-gap":
            wrong.append((key, tag, year, g.reason))
    assert checked > 20
    assert wrong == [], wrong
