"""``$deqm-submit-data`` checks (every mismatch is a 400 naming where) and the snapshot/incremental
plans over a manifest."""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection
from datetime import date
from typing import Any

import pytest

from fhir_adapter.errors import UsageError
from fhir_adapter.fhir.outcome import Issue
from fhir_adapter.measure.spec import Mappings
from fhir_adapter.report.checks import SUBMIT_DATA_UPDATE_TYPE_EXT
from fhir_adapter.report.conformance import build_measure
from fhir_adapter.report.submitdata import (
    Submission,
    manifest_entries,
    manifest_id,
    parse_submission,
    plan_bundle,
)
from fhir_adapter.settings import DEFAULT_CANONICAL_BASE
from fhir_adapter.store.db import ParsedResource
from tests import cohorts as c

Json = dict[str, Any]
MEASURE_URL = f"{DEFAULT_CANONICAL_BASE}/Measure/oregon-se-issue-focused"
OTHER_URL = f"{DEFAULT_CANONICAL_BASE}/Measure/oregon-se-reach"
EXT = f"{DEFAULT_CANONICAL_BASE}/StructureDefinition/submitted-for-measure"


def datax(
    rid: str = "dx-1", subject: str = "Patient/p1", update: str | None = "snapshot", **extra: Any
) -> Json:
    report: Json = {
        "resourceType": "MeasureReport",
        "id": rid,
        "status": "complete",
        "type": "data-collection",
        "measure": f"{MEASURE_URL}|2025.0.0",
        "subject": {"reference": subject},
        "date": "2026-01-10T00:00:00Z",
        "reporter": {"reference": "Organization/clinic-1"},
        "period": {"start": "2025-01-01", "end": "2025-12-31"},
    }
    if update is not None:
        report["extension"] = [{"url": SUBMIT_DATA_UPDATE_TYPE_EXT, "valueCode": update}]
    report.update(extra)
    return report


def body(*bundles: list[Json]) -> Json:
    return {
        "resourceType": "Parameters",
        "parameter": [
            {
                "name": "bundle",
                "resource": {
                    "resourceType": "Bundle",
                    "type": "collection",
                    "entry": [{"resource": r} for r in resources],
                },
            }
            for resources in bundles
        ],
    }


@pytest.fixture
def resolve(mappings: Mappings) -> Callable[[str, str | None, str | None], Json]:
    measure = build_measure(
        mappings.measure_for("oregon-se-issue-focused", date(2025, 12, 31)), DEFAULT_CANONICAL_BASE
    )

    def resolver(url: str, version: str | None, _end: str | None) -> Json:
        if url != MEASURE_URL or version not in (None, "2025.0.0"):
            raise UsageError(f"{url!r} is not a Measure of this server")
        return measure

    return resolver


def _with(report: Json, **changes: Any) -> Json:
    out = copy.deepcopy(report)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


P1 = c.patient("p1", "2022-01-01")
ENC = c.encounter("enc-1", "p1", "2025-03-01", reason="F43.22")


@pytest.mark.parametrize(
    ("payload", "message", "location"),
    [
        pytest.param({"resourceType": "Bundle"}, "Parameters resource", "Parameters", id="not-parameters"),
        pytest.param(
            {"resourceType": "Parameters"}, "no bundle parameter", "Parameters.parameter", id="no-bundle"
        ),
        pytest.param(
            {"resourceType": "Parameters", "parameter": [{"name": "measureReport", "resource": datax()}]},
            "only bundle",
            "Parameters.parameter[0]",
            id="base-submit-data-parameters",
        ),
        pytest.param(
            {"resourceType": "Parameters", "parameter": [{"name": "bundle", "resource": datax()}]},
            "Bundle resource",
            "Parameters.parameter[0].resource",
            id="bundle-is-not-a-bundle",
        ),
        pytest.param(body([P1, ENC]), "no MeasureReport", "Parameters.parameter[0].resource", id="no-report"),
        pytest.param(
            body([_with(datax(), type="individual"), P1]),
            "takes data-collection",
            "Parameters.parameter[0].resource.entry[0].resource.type",
            id="individual-report",
        ),
        pytest.param(
            body([_with(datax(), type="data-exchange"), P1]),
            "R5 code",
            "Parameters.parameter[0].resource.entry[0].resource.type",
            id="r5-data-exchange-code",
        ),
        pytest.param(
            body([datax(update=None), P1]),
            "exactly one",
            "Parameters.parameter[0].resource.entry[0].resource.extension",
            id="no-update-type",
        ),
        pytest.param(
            body([datax(update="replace"), P1]),
            "not supported",
            "Parameters.parameter[0].resource.entry[0].resource.extension",
            id="unknown-update-type",
        ),
        pytest.param(
            body([_with(datax(), subject=None), P1]),
            "subject must reference a Patient",
            "Parameters.parameter[0].resource.entry[0].resource.subject",
            id="no-subject",
        ),
        pytest.param(
            body([datax(subject="Group/g1"), P1]),
            "subject must reference a Patient",
            "Parameters.parameter[0].resource.entry[0].resource.subject",
            id="group-subject",
        ),
        pytest.param(
            body([_with(datax(), measure=f"{OTHER_URL}|2024.0.0"), P1]),
            "not a Measure of this server",
            "Parameters.parameter[0].resource.entry[0].resource.measure",
            id="unknown-measure",
        ),
        pytest.param(
            body([_with(datax(), measure=None), P1]),
            "measure (canonical) is missing",
            "Parameters.parameter[0].resource.entry[0].resource.measure",
            id="no-measure",
        ),
        pytest.param(
            body([_with(datax(), reporter=None), P1]),
            "reporter: missing",
            "Parameters.parameter[0].resource.entry[0].resource",
            id="deqm-profile-check-reporter",
        ),
        pytest.param(
            body([_with(datax(), group=[{"id": "all-enrolled", "measureScore": {"value": 1}}]), P1]),
            "measureScore",
            "Parameters.parameter[0].resource.entry[0].resource",
            id="datax-has-no-score",
        ),
        pytest.param(
            body([datax(), datax("dx-2", update="incremental"), P1]),
            "disagree",
            "Parameters.parameter[0].resource",
            id="mixed-update-types",
        ),
        pytest.param(
            body([datax(), datax("dx-2", subject="Patient/p2"), P1]),
            "several subjects",
            "Parameters.parameter[0].resource",
            id="two-subjects",
        ),
        pytest.param(
            body([datax(), P1, P1]),
            "twice",
            "Parameters.parameter[0].resource.entry[2]",
            id="duplicate-entry",
        ),
        pytest.param(
            body([datax(), {"resourceType": "Encounter"}]),
            "has no id",
            "Parameters.parameter[0].resource.entry[1].resource",
            id="entry-without-id",
        ),
    ],
)
def test_parse_errors(
    resolve: Callable[[str, str | None, str | None], Json], payload: Json, message: str, location: str
) -> None:
    with pytest.raises(UsageError) as caught:
        parse_submission(payload, resolve)
    assert message in caught.value.message
    assert caught.value.location == location


def test_every_bundle_is_checked_before_any_is_accepted(
    resolve: Callable[[str, str | None, str | None], Json],
) -> None:
    assert [
        s.index for s in parse_submission(body([datax(), P1], [datax(update="incremental")]), resolve)
    ] == [0, 1]
    with pytest.raises(UsageError) as caught:
        parse_submission(body([datax(), P1], [datax(update=None)]), resolve)
    assert caught.value.location == "Parameters.parameter[1].resource.entry[0].resource.extension"


def test_delete_entries_are_refused(resolve: Callable[[str, str | None, str | None], Json]) -> None:
    payload = body([datax(), P1])
    payload["parameter"][0]["resource"]["entry"].append(
        {"request": {"method": "DELETE", "url": "Encounter/x"}}
    )
    with pytest.raises(UsageError, match="DELETE"):
        parse_submission(payload, resolve)


def test_parsed_bundle(resolve: Callable[[str, str | None, str | None], Json]) -> None:
    payload = body([datax(update="incremental"), {**P1, "meta": {"source": "clinic-ehr"}}])
    # a urn:uuid entry without id takes the uuid; references to it are rewritten
    uid = "2f1c7e5a-0b7b-4b8e-9c1a-7d6f2e3a4b5c"
    encounter = c.encounter("x", "p1", "2025-03-01")
    del encounter["id"]
    encounter["subject"] = {"reference": "urn:uuid:99999999-0000-0000-0000-000000000001"}
    payload["parameter"][0]["resource"]["entry"] += [
        {"fullUrl": f"urn:uuid:{uid}", "resource": encounter},
    ]
    payload["parameter"][0]["resource"]["entry"][1]["fullUrl"] = (
        "urn:uuid:99999999-0000-0000-0000-000000000001"
    )
    (sub,) = parse_submission(payload, resolve)
    assert sub.update_type == "incremental"
    assert sub.subject == "Patient/p1"
    assert sub.measures == (MEASURE_URL,)
    by_key = {(i.rtype, i.rid): i.resource for i in sub.items}
    assert by_key[("Encounter", uid)]["subject"] == {"reference": "Patient/p1"}
    # incremental updates want meta.source: the report and the Encounter lack it, the Patient has it
    assert [w.expression for w in sub.warnings] == [
        "Parameters.parameter[0].resource.entry[0].resource",
        "Parameters.parameter[0].resource.entry[2].resource",
    ]
    assert all(w.severity == "warning" for w in sub.warnings)


def test_quality_warnings_are_located_in_the_request(
    resolve: Callable[[str, str | None, str | None], Json],
) -> None:
    seen: list[tuple[str, frozenset[str]]] = []

    def quality(resource: Json, linked: Collection[str]) -> list[Issue]:
        seen.append((resource["resourceType"], frozenset(linked)))
        if resource["resourceType"] != "Encounter":
            return []
        return [Issue("warning", "business-rule", "no diagnosis", "Encounter.diagnosis")]

    condition = c.condition("cond-1", "p1", encounter_id="enc-1")
    (sub,) = parse_submission(body([datax(), P1, ENC, condition]), resolve, quality)
    assert [(w.diagnostics, w.expression) for w in sub.warnings] == [
        ("no diagnosis", "Parameters.parameter[0].resource.entry[2].resource.diagnosis")
    ]
    assert seen[2] == ("Encounter", frozenset({"enc-1"})), (
        "Conditions of the same bundle link their Encounter"
    )


def _submission(
    update: str, keys: list[tuple[str, str]], measures: tuple[str, ...] = (MEASURE_URL,)
) -> Submission:
    items = tuple(ParsedResource(t, i, {"resourceType": t, "id": i}) for t, i in keys)
    return Submission(0, "Parameters.parameter[0].resource", update, "Patient/p1", measures, items, ())


def _manifest(entries: dict[tuple[str, str], set[str]]) -> Json:
    return {
        "resourceType": "List",
        "id": manifest_id("Patient/p1"),
        "entry": [
            {
                "extension": [{"url": EXT, "valueCanonical": m} for m in sorted(ms)],
                "item": {"reference": f"{t}/{i}"},
            }
            for (t, i), ms in entries.items()
        ],
    }


MR = ("MeasureReport", "dx-1")
PAT = ("Patient", "p1")
E1 = ("Encounter", "e1")
E2 = ("Encounter", "e2")


@pytest.mark.parametrize(
    ("previous", "update", "keys", "measures", "tombstoned", "after"),
    [
        pytest.param(None, "snapshot", [MR, PAT, E1], (MEASURE_URL,), [], {MR, PAT, E1}, id="first-snapshot"),
        pytest.param(
            {MR: {MEASURE_URL}, PAT: {MEASURE_URL}, E1: {MEASURE_URL}, E2: {MEASURE_URL}},
            "snapshot",
            [MR, PAT, E1],
            (MEASURE_URL,),
            [E2],
            {MR, PAT, E1},
            id="snapshot-drops-what-it-omits",
        ),
        pytest.param(
            {MR: {MEASURE_URL}, PAT: {MEASURE_URL}, E1: {MEASURE_URL}, E2: {MEASURE_URL}},
            "incremental",
            [("MeasureReport", "dx-2"), ("Encounter", "e3")],
            (MEASURE_URL,),
            [],
            {MR, PAT, E1, E2, ("MeasureReport", "dx-2"), ("Encounter", "e3")},
            id="incremental-only-adds",
        ),
        pytest.param(
            {MR: {MEASURE_URL}, PAT: {MEASURE_URL, OTHER_URL}, E2: {MEASURE_URL, OTHER_URL}},
            "snapshot",
            [("MeasureReport", "dx-9")],
            (MEASURE_URL,),
            [MR],
            {("MeasureReport", "dx-9"), PAT, E2},
            id="resources-of-another-measure-stay",
        ),
        pytest.param(
            {E1: {OTHER_URL}},
            "snapshot",
            [MR],
            (MEASURE_URL,),
            [],
            {E1, MR},
            id="other-measure-only-untouched",
        ),
    ],
)
def test_plan(
    previous: dict[tuple[str, str], set[str]] | None,
    update: str,
    keys: list[tuple[str, str]],
    measures: tuple[str, ...],
    tombstoned: list[tuple[str, str]],
    after: set[tuple[str, str]],
) -> None:
    plan = plan_bundle(_submission(update, keys, measures), _manifest(previous) if previous else None, EXT)
    assert list(plan.tombstoned) == tombstoned
    deletions = [(w.rtype, w.rid) for w in plan.writes if w.deleted]
    assert deletions == tombstoned
    recorded = manifest_entries(plan.manifest, EXT)
    assert set(recorded) == after
    for key in keys:
        assert set(measures) <= recorded[key]
    assert plan.manifest["id"] == manifest_id("Patient/p1")
    assert plan.writes[-1].rtype == "List" and plan.writes[-1].rid == plan.manifest["id"]


def test_snapshot_narrows_a_shared_resource_to_the_other_measure() -> None:
    previous = _manifest({PAT: {MEASURE_URL, OTHER_URL}})
    plan = plan_bundle(_submission("snapshot", [MR], (MEASURE_URL,)), previous, EXT)
    assert plan.tombstoned == ()
    assert manifest_entries(plan.manifest, EXT)[PAT] == {OTHER_URL}
