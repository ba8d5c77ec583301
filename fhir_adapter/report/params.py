"""Strict readers for the report parameters kept in ``mappings/`` (spec §3: rules we are unsure of
are data with a ``status`` and a ``source``): the referral loop (``referral-loop.toml``,
``se-referral-codes.csv``), benchmarks and improvement targets (``<measure>/targets.toml``),
Oregon's counties (``oregon-counties.csv``) and the health-complexity column map.

Every problem is a :class:`~fhir_adapter.errors.MappingsError` at ``file:line``, read with the same
TOML and CSV machinery as :mod:`fhir_adapter.mappings` (unknown keys and columns are errors).
:func:`check_report_mappings` loads them all for ``fhir-adapter mappings check``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from pathlib import Path

from fhir_adapter.errors import MappingsError
from fhir_adapter.mappings import (
    _TOML_ERROR_LINE,
    _Files,
    _read_csv,
    _render,
    _Row,
    _Table,
    _toml_key_lines,
    _TomlDoc,
)
from fhir_adapter.measure.spec import Mappings, Provenance

#: Statuses of report parameters: ``candidate`` (a placeholder or a guess to be replaced),
#: ``assumption`` (a project default, spec [A]), ``verified`` (checked against a public source),
#: ``official`` (OHA's published value).
PARAM_STATUSES = ("candidate", "assumption", "verified", "official")

__all__ = [
    "PARAM_STATUSES",
    "CsvRow",
    "Table",
    "check_report_mappings",
    "number",
    "provenance",
    "read_csv",
    "read_toml",
    "text_list",
]

Table = _Table
CsvRow = _Row


def read_toml(path: Path) -> Table:
    """The top-level table of a TOML file, with line numbers for errors."""
    files = _Files(path.parent)
    text = files.text(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = _TOML_ERROR_LINE.search(str(exc))
        raise MappingsError(
            f"invalid TOML: {exc}", location=f"{path}:{found.group(1) if found else 1}"
        ) from None
    return _Table(_TomlDoc(path, _toml_key_lines(text)), (), data)


def read_csv(path: Path, columns: Sequence[str]) -> list[CsvRow]:
    """The rows of a CSV whose header has exactly ``columns`` (values stripped)."""
    return _read_csv(_Files(path.parent), path, columns)


def provenance(table: Table, statuses: Sequence[str] = PARAM_STATUSES) -> Provenance:
    """``status`` (one of ``statuses``) and ``source`` of a table."""
    return Provenance(status=table.choice("status", statuses), source=table.get_str("source"))


def number(table: Table, key: str, *, minimum: float, maximum: float | None = None) -> float:
    """A number (integer or float, not a boolean) within ``[minimum, maximum]``."""
    value = table.data[key]
    where = _render((*table.path, key))
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise table.error(key, f"{where} must be a number, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise table.error(key, f"{where} must be {bound}, got {value}")
    return float(value)


def text_list(table: Table, key: str, *, allowed: Sequence[str] | None = None) -> tuple[str, ...]:
    """An array of non-empty strings (possibly empty), each one of ``allowed`` when given."""
    value = table.data.get(key, [])
    where = _render((*table.path, key))
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise table.error(key, f"{where} must be an array of non-empty strings")
    if allowed is not None:
        for v in value:
            if v not in allowed:
                raise table.error(key, f"{where}: {v!r} is not one of {', '.join(allowed)}")
    if len(set(value)) != len(value):
        raise table.error(key, f"{where} repeats a value")
    return tuple(value)


def check_report_mappings(root: Path, mappings: Mappings) -> list[str]:
    """Load every report parameter file under ``root`` as the reports do and summarise them;
    raises :class:`MappingsError` at ``file:line`` on the first problem. Absent optional files
    are reported as such."""
    from fhir_adapter.ingest.complexity import COMPLEXITY_MAP, complexity_map
    from fhir_adapter.report.capacity import COUNTIES_FILE, load_counties
    from fhir_adapter.report.referrals import (
        LOOP_FILE,
        REFERRAL_CODES_FILE,
        load_loop_config,
        load_referral_codes,
    )
    from fhir_adapter.report.targets import TARGETS_FILE, load_targets

    lines: list[str] = []
    if (root / LOOP_FILE).is_file():
        config = load_loop_config(root)
        lines.append(f"{LOOP_FILE}: window {config.window_days} days ({config.window_provenance.status})")
    if (root / REFERRAL_CODES_FILE).is_file():
        codes = load_referral_codes(root, mappings)
        lines.append(f"{REFERRAL_CODES_FILE}: {len(codes.rows)} referral codes")
    if (root / COUNTIES_FILE).is_file():
        lines.append(f"{COUNTIES_FILE}: {len(load_counties(root).counties)} counties")
    for measure_id in sorted({m for m, _y in mappings.measures}):
        if (root / measure_id / TARGETS_FILE).is_file():
            targets = load_targets(root, measure_id)
            years = ", ".join(str(y) for y in sorted({t.year for t in targets}))
            lines.append(f"{measure_id}/{TARGETS_FILE}: {len(targets)} targets (years {years})")
    complexity = root / "extracts" / COMPLEXITY_MAP
    if complexity.is_file():
        cmap = complexity_map(complexity)
        lines.append(
            f"extracts/{COMPLEXITY_MAP}: complexity column map ({cmap.format}, {len(cmap.fields)} fields)"
        )
    return lines
