"""Cohorts synthesised once per test session, loaded into memory."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_adapter.synth import SynthSummary, synthesize
from fhir_adapter.synth.plan import Setup, plan_child

Resource = dict[str, Any]

#: The written cohort: every child is listed in its manifest (patients <= 1000).
SMALL = {"patients": 300, "seed": 1}
#: Plans only (no files): tag frequencies and children to render per tag.
SCAN = {"patients": 3000, "seed": 2}


@dataclass(frozen=True)
class Cohort:
    """One synthesised folder: raw bytes and parsed resources."""

    root: Path
    summary: SynthSummary
    manifest: dict[str, Any]
    raw: dict[str, bytes]
    #: source -> resource type -> resources in file order.
    resources: dict[str, dict[str, list[Resource]]]

    def of_type(self, source: str, resource_type: str) -> list[Resource]:
        return self.resources.get(source, {}).get(resource_type, [])


def read_tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def load_cohort(root: Path, summary: SynthSummary) -> Cohort:
    raw = read_tree(root)
    resources: dict[str, dict[str, list[Resource]]] = defaultdict(dict)
    for rel, data in raw.items():
        if rel.endswith(".ndjson"):
            source, name = rel.split("/")
            resources[source][name.removesuffix(".ndjson")] = [
                orjson.loads(line) for line in data.splitlines()
            ]
    return Cohort(root, summary, orjson.loads(raw["manifest.json"]), raw, dict(resources))


@pytest.fixture(scope="session")
def small_cohort(tmp_path_factory: pytest.TempPathFactory) -> Cohort:
    root = tmp_path_factory.mktemp("synth-small")
    return load_cohort(root, synthesize(root, SMALL["patients"], SMALL["seed"]))


@pytest.fixture(scope="session")
def scan() -> dict[str, list[int]]:
    """Plan-level tags of SCAN children: tag -> child indices, in index order."""
    setup = Setup.build(SCAN["seed"], SCAN["patients"], 2024, 2025, "America/Los_Angeles")
    found: dict[str, list[int]] = defaultdict(list)
    for index in range(SCAN["patients"]):
        for tag in plan_child(setup, index).tags:
            found[tag].append(index)
    return dict(found)
