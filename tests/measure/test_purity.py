"""The pure core (``measure/``, ``terminology/``) imports no web, file, database or network code
and never opens a file (DESIGN.md §3)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "fhir_adapter"
FORBIDDEN = {
    "sqlalchemy", "psycopg", "sqlite3", "httpx", "requests", "urllib", "socket", "subprocess", "os", "io",
    "pathlib", "shutil", "tempfile", "fastapi", "starlette", "uvicorn", "click", "rich", "gzip", "csv", "tomllib",
    "fhir_adapter.store", "fhir_adapter.ingest", "fhir_adapter.api", "fhir_adapter.cli", "fhir_adapter.report",
    "fhir_adapter.mappings", "fhir_adapter.workflow",
}  # fmt: skip
CORE_FILES = sorted([*(PACKAGE / "measure").rglob("*.py"), *(PACKAGE / "terminology").rglob("*.py")])


def _imports(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _forbidden(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN)


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_core_module_is_pure(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    bad = sorted(n for n in _imports(tree) if _forbidden(n))
    assert bad == [], f"{path.name} imports {bad}"
    opens = [
        n.lineno for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "open"
    ]
    assert opens == [], f"{path.name} calls open() at lines {opens}"


def test_the_check_can_fail() -> None:
    tree = ast.parse("import sqlalchemy\nfrom fhir_adapter.store import db\n")
    assert sorted(n for n in _imports(tree) if _forbidden(n)) == ["fhir_adapter.store", "sqlalchemy"]


def test_core_files_found() -> None:
    assert len(CORE_FILES) >= 3
