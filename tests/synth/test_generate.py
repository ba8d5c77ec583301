"""synthesize(): determinism, arguments, layout, counts and the manifest."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from fhir_adapter.errors import UsageError
from fhir_adapter.synth import SOURCES, TAGS, generate, synthesize
from fhir_adapter.synth.generate import EXAMPLES_PER_TAG, MANIFEST_CHILDREN
from tests.synth.conftest import SCAN, SMALL, Cohort, read_tree

#: Tags added while rendering (not in plans): checked on the written cohort instead.
RENDER_TAGS = {"adjusted-claim", "encounter-late-night-utc", "encounter-without-diagnosis"}

EXPECTED_TYPES = {
    "oha-claims": {"Patient", "Coverage", "Claim", "ExplanationOfBenefit", "Organization"},
    "ehr-clinic-a": {
        "Patient",
        "Encounter",
        "Condition",
        "Procedure",
        "ServiceRequest",
        "Organization",
        "Practitioner",
    },
    "ehr-clinic-b": {
        "Patient",
        "Encounter",
        "Condition",
        "Procedure",
        "ServiceRequest",
        "Organization",
        "Practitioner",
    },
}


def test_same_arguments_give_identical_bytes(small_cohort: Cohort, tmp_path: Path) -> None:
    synthesize(tmp_path, SMALL["patients"], SMALL["seed"])
    again = read_tree(tmp_path)
    assert sorted(again) == sorted(small_cohort.raw)
    different = [name for name in again if again[name] != small_cohort.raw[name]]
    assert different == []


def test_other_seed_gives_other_bytes(tmp_path: Path) -> None:
    synthesize(tmp_path / "one", 30, SMALL["seed"])
    synthesize(tmp_path / "other", 30, SMALL["seed"] + 1)
    one, other = read_tree(tmp_path / "one"), read_tree(tmp_path / "other")
    for name in ("oha-claims/ExplanationOfBenefit.ndjson", "ehr-clinic-a/Encounter.ndjson", "manifest.json"):
        assert other[name] != one[name], name


def test_rerun_replaces_previous_output(tmp_path: Path) -> None:
    used, fresh = tmp_path / "used", tmp_path / "fresh"
    synthesize(used, 40, 5)
    (used / "oha-claims" / "Stale.ndjson").write_text("{}\n")
    (used / "notes.txt").write_text("kept")
    synthesize(used, 20, 5)
    synthesize(fresh, 20, 5)
    assert not (used / "oha-claims" / "Stale.ndjson").exists()
    assert (used / "notes.txt").read_text() == "kept"
    assert {k: v for k, v in read_tree(used).items() if k != "notes.txt"} == read_tree(fresh)


def test_worker_processes_do_not_change_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks rendered by two spawned workers, appended in order, equal the in-process result."""
    monkeypatch.setattr(generate, "BLOCK", 40)
    monkeypatch.setattr(generate, "START_METHOD", "fork")  # spawn costs a second of imports
    synthesize(tmp_path / "serial", 130, 9, workers=1)
    synthesize(tmp_path / "parallel", 130, 9, workers=2)
    assert read_tree(tmp_path / "serial") == read_tree(tmp_path / "parallel")


def test_child_records_do_not_depend_on_cohort_size(small_cohort: Cohort, tmp_path: Path) -> None:
    """Per-child random streams: the first 50 children of a 300-child cohort equal a 50-child cohort."""
    synthesize(tmp_path, 50, SMALL["seed"])
    prefix = [
        line
        for line in small_cohort.raw["oha-claims/ExplanationOfBenefit.ndjson"].splitlines()
        if int(orjson.loads(line)["id"].split("-")[1]) < 50
    ]
    assert (tmp_path / "oha-claims" / "ExplanationOfBenefit.ndjson").read_bytes().splitlines() == prefix


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"patients": -1}, "patients", id="negative-patients"),
        pytest.param({"first_year": 2026, "last_year": 2025}, "first_year", id="years-reversed"),
        pytest.param({"timezone": "Mars/Olympus"}, "time zone", id="unknown-zone"),
        pytest.param({"workers": 0}, "workers", id="zero-workers"),
    ],
)
def test_bad_arguments_are_usage_errors(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"patients": 5, "seed": 1} | kwargs
    with pytest.raises(UsageError, match=message):
        synthesize(tmp_path, **arguments)  # type: ignore[arg-type]


def test_zero_patients_writes_only_a_manifest(tmp_path: Path) -> None:
    summary = synthesize(tmp_path, 0, 1)
    assert summary.total == 0
    assert sorted(read_tree(tmp_path)) == ["manifest.json"]


def test_layout_has_the_expected_files(small_cohort: Cohort) -> None:
    found: dict[str, set[str]] = {}
    for rel in small_cohort.raw:
        if rel.endswith(".ndjson"):
            source, name = rel.split("/")
            found.setdefault(source, set()).add(name.removesuffix(".ndjson"))
    assert found == EXPECTED_TYPES
    assert tuple(sorted(found)) == tuple(sorted(SOURCES))


def test_summary_and_manifest_counts_match_the_files(small_cohort: Cohort) -> None:
    lines = {
        source: {rtype: len(items) for rtype, items in per_type.items()}
        for source, per_type in small_cohort.resources.items()
    }
    summary = {source: dict(per_type) for source, per_type in small_cohort.summary.counts.items()}
    assert summary == lines
    assert small_cohort.manifest["counts"] == lines
    assert (
        small_cohort.manifest["total"]
        == small_cohort.summary.total
        == sum(sum(c.values()) for c in lines.values())
    )


@pytest.mark.parametrize(
    ("source", "resource_type", "low", "high"),
    [
        pytest.param("oha-claims", "Patient", 0.85, 0.97, id="claims-patients-per-child"),
        pytest.param("oha-claims", "Coverage", 1.0, 2.0, id="coverages-per-child"),
        pytest.param("oha-claims", "ExplanationOfBenefit", 6.0, 16.0, id="eobs-per-child"),
        pytest.param("oha-claims", "Claim", 0.5, 3.0, id="claims-per-child"),
        pytest.param("ehr-clinic-a", "Patient", 0.5, 0.75, id="clinic-a-patients-per-child"),
        pytest.param("ehr-clinic-b", "Patient", 0.15, 0.35, id="clinic-b-patients-per-child"),
        pytest.param("ehr-clinic-a", "Encounter", 5.0, 14.0, id="clinic-a-encounters-per-child"),
        pytest.param("ehr-clinic-a", "Condition", 6.0, 20.0, id="clinic-a-conditions-per-child"),
    ],
)
def test_counts_are_sane(
    small_cohort: Cohort, source: str, resource_type: str, low: float, high: float
) -> None:
    per_child = small_cohort.summary.count(source, resource_type) / SMALL["patients"]
    assert low <= per_child <= high


def test_resources_per_child_fit_the_statewide_benchmark(small_cohort: Cohort) -> None:
    """About 120,000 children should give about 5 million resources (brief)."""
    assert 33 <= small_cohort.summary.total / SMALL["patients"] <= 50


def test_small_manifest_lists_every_child(small_cohort: Cohort) -> None:
    manifest = small_cohort.manifest
    assert manifest["seed"] == SMALL["seed"]
    assert manifest["patients"] == SMALL["patients"]
    assert len(manifest["children"]) == SMALL["patients"]
    claims_patients = {p["id"] for p in small_cohort.of_type("oha-claims", "Patient")}
    listed = {
        entry["patients"]["oha-claims"].removeprefix("Patient/")
        for entry in manifest["children"].values()
        if "oha-claims" in entry["patients"]
    }
    assert listed == claims_patients


def test_manifest_tags_are_documented_and_counted(small_cohort: Cohort) -> None:
    manifest = small_cohort.manifest
    assert manifest["tags"] == TAGS
    counted: dict[str, int] = {}
    for entry in manifest["children"].values():
        assert entry["tags"] == sorted(entry["tags"])
        for tag in entry["tags"]:
            assert tag in TAGS
            counted[tag] = counted.get(tag, 0) + 1
    assert counted == manifest["tag_counts"] == dict(small_cohort.summary.tag_counts)


def _block(keys_and_tags: list[tuple[int, list[str]]]) -> generate._BlockResult:
    return generate._BlockResult(
        {}, {}, [(f"{i:06d}", tags, {"member_id": str(i)}) for i, tags in keys_and_tags], False
    )


@pytest.mark.parametrize(
    ("patients", "children", "expected"),
    [
        pytest.param(
            3, [(0, ["x"]), (1, []), (2, ["x", "y"])], ["000000", "000001", "000002"], id="small-keeps-all"
        ),
        pytest.param(
            5000,
            [(i, ["common"]) for i in range(40)] + [(40, ["common", "rare"])],
            [f"{i:06d}" for i in range(EXAMPLES_PER_TAG)] + ["000040"],
            id="large-keeps-examples-per-tag",
        ),
        pytest.param(
            5000,
            [(i, [f"tag{i}"]) for i in range(MANIFEST_CHILDREN + 5)],
            [f"{i:06d}" for i in range(MANIFEST_CHILDREN)],
            id="large-is-capped",
        ),
    ],
)
def test_manifest_examples(patients: int, children: list[tuple[int, list[str]]], expected: list[str]) -> None:
    builder = generate._ManifestBuilder(patients)
    builder.add(_block(children))
    assert list(builder.examples) == expected
    assert sum(builder.tag_counts.values()) == sum(len(tags) for _i, tags in children)


def test_every_tag_occurs_for_several_children(scan: dict[str, list[int]], small_cohort: Cohort) -> None:
    """Plan tags: at least 5 per 3,000 children (a few hundred in a statewide cohort of 120,000).
    Tags added while rendering are common: at least 5 in the 300-child cohort."""
    counts = {tag: len(scan.get(tag, [])) for tag in set(TAGS) - RENDER_TAGS}
    counts |= {tag: small_cohort.manifest["tag_counts"].get(tag, 0) for tag in RENDER_TAGS}
    rare = {tag: n for tag, n in sorted(counts.items()) if n < 5}
    assert rare == {}, (rare, SCAN)


@pytest.mark.parametrize(
    ("patients", "cpus", "expected"),
    [
        pytest.param(500, 16, 1, id="small-cohort-in-process"),
        pytest.param(50_000, 2, 1, id="two-cpus-in-process"),
        pytest.param(50_000, 4, 3, id="four-cpus-three-workers"),
        pytest.param(120_000, 64, 8, id="capped-at-eight"),
    ],
)
def test_default_workers(monkeypatch: pytest.MonkeyPatch, patients: int, cpus: int, expected: int) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: set(range(cpus)))
    assert generate._default_workers(patients) == expected


def test_summary_reads_well_on_the_command_line(small_cohort: Cohort) -> None:
    text = str(small_cohort.summary)
    assert text.startswith(f"{small_cohort.summary.total:,} resources for 300 children (seed 1, 2024-2025): ")
    assert all(source in text for source in SOURCES)
