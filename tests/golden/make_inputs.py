"""Writes the golden cohorts' input NDJSON (run by hand when a cohort changes; the files are
committed). Expected outputs are reviewed by hand: see each case's README.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from tests import cohorts as c

HERE = Path(__file__).resolve().parent


def _write(folder: Path, resources: list[dict[str, Any]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for r in resources:
        by_type.setdefault(r["resourceType"], []).append(r)
    for rtype, items in sorted(by_type.items()):
        (folder / f"{rtype}.ndjson").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in items))


def mixed_sources() -> None:
    case = HERE / "mixed-sources-2025" / "input"
    _write(
        case / "oha-claims",
        [
            c.patient("p1", "2022-06-15", member="M1"), c.full_year("p1"),
            c.eob("e1", "p1", "2025-01-01"),  # first day: numerator
            c.patient("p2", "2020-01-01", member="M2", gender="male"), c.full_year("p2", cco="IHN"),
            c.eob("e2", "p2", "2025-06-01", denied=True),  # denied only
            c.patient("p3", "2024-12-31", member="M3"), c.full_year("p3", cco="IHN"),
            c.eob("e3", "p3", "2025-06-01", "99392"),  # need, no service
            c.patient("p4", "2022-02-02", member="M4"),
            c.coverage("p4a", "p4", "2024-01-01", "2025-03-01"), c.coverage("p4b", "p4", "2025-04-17", None),  # 46-day gap
            c.patient("p5", "2021-05-05", member="M5", deceasedDateTime="2025-08-01"), c.full_year("p5"),
            c.patient("p6", "2023-03-03", member="M6"), c.full_year("p6", cco="HEALTH-SHARE"),
            c.eob("e6a", "p6", "2025-05-05"),
            c.eob("e6b", "p6", "2025-05-05", "99392", related=[c.replaces("ExplanationOfBenefit", "e6a")]),
        ],
    )  # fmt: skip
    _write(
        case / "ehr-a",
        [
            c.patient("a6", "2023-03-03", member="M6"),
            c.encounter("v6", "a6", "2026-01-01T07:30:00Z"), c.condition("d6", "a6", "F93.0", encounter_id="v6"),
            c.patient("a7", "2021-07-07", unlinked=True),  # no member id: unlinked, no enrollment
            c.encounter("v7", "a7", "2025-03-03", reason="F43.22"),
        ],
    )  # fmt: skip


def reach_2024() -> None:
    case = HERE / "reach-2024" / "input"
    _write(
        case / "oha-claims",
        [
            c.patient("r1", "2024-03-10", member="R1"), c.coverage("r1c", "r1", "2024-03-10", None),
            c.eob("s1", "r1", "2024-09-01", "96110", ("Z00.129",)),  # newborn, screening: any + assessment
            c.patient("r2", "2019-01-01", member="R2"), c.full_year("r2", 2024),
            c.eob("s2", "r2", "2024-12-31", "90834", ("Z00.129",)),  # age 5, therapy without SE dx: any + treatment
            c.patient("r3", "2018-12-31", member="R3"), c.full_year("r3", 2024),
            c.eob("s3", "r3", "2024-06-01", "96127"),  # age 6: outside 0-5
            c.patient("r4", "2021-07-07", member="R4"), c.full_year("r4", 2024),  # nothing
            c.patient("r5", "2022-02-02", member="R5"), c.full_year("r5", 2024),
            c.eob("s5", "r5", "2024-04-04", "96127", denied=True),  # denied screening: nothing
        ],
    )  # fmt: skip


if __name__ == "__main__":
    mixed_sources()
    reach_2024()
