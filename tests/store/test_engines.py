"""One SQL layer, two engines: SQLite and PostgreSQL give identical results and reports on the
same synthetic cohort (DESIGN.md §5 "silent drift between two SQL dialects")."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from fhir_adapter.ingest.runner import ingest_paths
from fhir_adapter.measure.spec import Mappings
from fhir_adapter.report.measurereport import ReportContext
from fhir_adapter.settings import DEFAULT_CANONICAL_BASE, DEFAULT_MEMBER_ID_SYSTEM
from fhir_adapter.store.evaluate import evaluate
from fhir_adapter.synth import synthesize
from fhir_adapter.workflow import build_report
from tests.conftest import make_store_factory
from tests.measure.test_boundaries import FAR

T0 = datetime(2026, 2, 1, tzinfo=UTC)
CTX = ReportContext(DEFAULT_CANONICAL_BASE, "h", T0, DEFAULT_MEMBER_ID_SYSTEM)
RUNS = [
    ("oregon-se-issue-focused", 2025, "all"),
    ("oregon-se-issue-focused", 2025, "claims"),
    ("oregon-se-reach", 2024, "all"),
]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cohort")
    synthesize(out, 400, 11, first_year=2024, last_year=2025)
    return out


def _evaluate_all(
    engine: str, cohort: Path, mappings: Mappings, tmp_path: Path, schemas: list[str]
) -> list[Any]:
    store = make_store_factory(engine, tmp_path, schemas)()
    try:
        for folder in sorted(p for p in cohort.iterdir() if p.is_dir()):
            ingest_paths(store, [folder], folder.name, batch_size=2000, clock=lambda: T0)
        out: list[Any] = []
        for measure, year, sources in RUNS:
            spec = mappings.measure_for(measure, date(year, 12, 31))
            ev = evaluate(store, mappings, spec, date(year, 1, 1), date(year, 12, 31), FAR, sources,  # type: ignore[arg-type]
                          all_evidence=True)  # fmt: skip
            out.append(ev.children)
            out.append(ev.evidence)
            out.append(build_report(ev, CTX, "summary"))
            out.append(build_report(ev, CTX, "subject-list"))
        return out
    finally:
        store.close()


def test_sqlite_and_postgresql_agree(
    cohort: Path, mappings: Mappings, tmp_path: Path, pg_schemas: list[str]
) -> None:
    sqlite = _evaluate_all("sqlite", cohort, mappings, tmp_path, pg_schemas)
    postgres = _evaluate_all("postgresql", cohort, mappings, tmp_path, pg_schemas)
    served = sum(1 for ch in sqlite[0] if ch.groups[0].num)
    assert served > 10, "the cohort must exercise the numerator"
    for index, (a, b) in enumerate(zip(sqlite, postgres, strict=True)):
        assert a == b, f"engines differ in output {index} ({RUNS[index // 4]})"
