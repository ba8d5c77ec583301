"""OHA's member-level metric file, read through a column map (spec §4 "Reconciliation").

OHA sends each CCO member-level data (quarterly dashboards, and the file reviewed in the
three-week validation period after each year, spec §1 [V]). Its layout is not public, so the
file is read through :mod:`fhir_adapter.ingest.columns` with a map kept as data, by default
``mappings/extracts/oha-member-file.toml`` (header names UNVERIFIED, the project's guess).

Fields (``OHA_FIELDS``; True = the map must name it):

* ``member_id`` (required): the OHP member id; matched with ``ChildResult.member_id``.
* ``numerator`` (required): flag, translated through ``[values.numerator]`` to ``true``/``false``.
* ``denominator``: flag; without the column every row is in OHA's denominator.
* ``cco``: OHA's attribution; our CCO id, a CCO name from ``mappings/ccos.csv`` (any case) or a
  spelling listed in ``[values.cco]``.
* ``group``: our group id (``[values.group]`` translates OHA's sub-measure names); without it
  every row belongs to the group the caller names.
* ``measure``: rows whose measure (after ``[values.measure]``) is not the one reconciled are
  skipped and counted.
* ``claims_through``: the date OHA's claims data runs through (reason ``data-lag``).

``[options] run_out_days`` is the claims run-out in days [A] (default 90).

Every bad row is reported as ``file:line`` (all of them, in one :class:`InvalidDataError`, as
the other extract loaders do); a duplicate member id names both lines. Nothing is returned unless the whole file is good.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from fhir_adapter.errors import InvalidDataError, MappingsError
from fhir_adapter.ingest.columns import (
    ColumnMap,
    RowFields,
    check_options,
    load_column_map,
    read_rows,
    rows_failed,
)

#: Every field of the OHA member file; True = required in the column map.
OHA_FIELDS: Mapping[str, bool] = {
    "member_id": True,
    "numerator": True,
    "denominator": False,
    "cco": False,
    "group": False,
    "measure": False,
    "claims_through": False,
}
#: The column map shipped in ``mappings/``, relative to the mappings folder.
DEFAULT_MAP = Path("extracts") / "oha-member-file.toml"
#: Claims run-out when the map's ``[options]`` does not say (spec §4, [A]).
DEFAULT_RUN_OUT_DAYS = 90


@dataclass(frozen=True)
class OhaRow:
    """One child (in one group) as OHA counts it."""

    location: str
    member_id: str
    #: our CCO id; ``None`` when the file has no CCO column
    cco: str | None
    denominator: bool
    numerator: bool
    group: str


@dataclass(frozen=True)
class OhaFile:
    path: Path
    rows: tuple[OhaRow, ...]
    has_cco: bool
    has_denominator: bool
    has_group: bool
    #: the latest ``claims_through`` date in the file, if the column is mapped
    claims_through: date | None
    run_out_days: int
    #: rows skipped because they belong to another measure
    other_measure_rows: int


def default_map_path(mappings_dir: Path) -> Path:
    return mappings_dir / DEFAULT_MAP


def load_oha_map(path: Path) -> ColumnMap:
    """The column map, checked: known fields and options, ``run_out_days`` a whole number ≥ 0."""
    cmap = load_column_map(path, required=OHA_FIELDS)
    check_options(cmap, {"run_out_days": int})
    run_out = cmap.options.get("run_out_days", DEFAULT_RUN_OUT_DAYS)
    if isinstance(run_out, bool) or run_out < 0:
        raise MappingsError("[options] run_out_days must be a whole number of days ≥ 0", location=f"{path}:1")
    return cmap


def _flag(fields: RowFields, name: str) -> bool | None:
    """A flag translated through ``[values.<name>]`` to ``true``/``false``; ``None`` (and a
    recorded problem) otherwise."""
    translated = fields.text(name)
    if translated == "true":
        return True
    if translated == "false":
        return False
    raw = fields.row.get(name)
    if not raw:
        fields.fail(f"empty {name} flag", name)
    else:
        fields.fail(
            f'{name} flag {raw!r} is not a known value (map it to "true" or "false" in [values.{name}])', name
        )
    return None


def read_oha_file(
    path: Path,
    cmap: ColumnMap,
    *,
    measure: str,
    default_group: str,
    groups: Collection[str],
    ccos: Mapping[str, str],
) -> OhaFile:
    """Parse and check the whole file.

    ``groups`` are the measure's group ids; ``ccos`` maps every accepted CCO spelling
    (upper-case) to our CCO id (see :func:`cco_lookup`). Raises :class:`InvalidDataError` naming
    every bad row (``file:line``, :func:`~fhir_adapter.ingest.columns.rows_failed`), a missing
    header column, or a file whose rows all belong to other measures.
    """
    has = cmap.fields
    errors: list[InvalidDataError] = []
    rows: list[OhaRow] = []
    seen: dict[tuple[str, str], str] = {}
    other_measure = 0
    measures_seen: set[str] = set()
    through: date | None = None
    for row in read_rows(path, cmap, errors):
        fields = RowFields(row, cmap)
        if "measure" in has:
            row_measure = fields.text("measure")
            measures_seen.add(row_measure)
            if row_measure != measure:
                other_measure += 1
                continue
        member_id = row.get("member_id")
        if not member_id:
            fields.fail("empty member id", "member_id")
        numerator = _flag(fields, "numerator")
        denominator = _flag(fields, "denominator") if "denominator" in has else True
        if numerator is True and denominator is False:
            fields.fail("in OHA's numerator but not in its denominator")
        cco: str | None = None
        if "cco" in has:
            raw_cco = fields.text("cco", required="CCO")
            cco = ccos.get(raw_cco.upper()) if raw_cco else None
            if raw_cco and cco is None:
                fields.fail(
                    f"unknown CCO {raw_cco!r} (use our CCO ids or names, or map it in [values.cco])", "cco"
                )
        group = default_group
        if "group" in has:
            group = fields.text("group") or default_group
            if group not in groups:
                fields.fail(f"unknown group {group!r}; measure {measure} has {', '.join(groups)}", "group")
        if "claims_through" in has:
            day = fields.date("claims_through")
            if day is not None and (through is None or day > through):
                through = day
        if member_id and not fields.errors:
            key = (member_id, group)
            if key in seen:
                suffix = f" in group {group}" if "group" in has else ""
                fields.fail(f"duplicate member id {member_id!r}{suffix}: also at {seen[key]}")
            else:
                seen[key] = row.location
        if fields.errors or numerator is None or denominator is None:
            errors.extend(fields.errors)
            continue
        rows.append(OhaRow(row.location, member_id, cco, denominator, numerator, group))
    if errors:
        raise rows_failed(path, errors)
    if other_measure and not rows:
        raise InvalidDataError(
            f"no rows for measure {measure!r}; the file has {', '.join(sorted(measures_seen))} "
            "(map OHA's measure names in [values.measure])",
            location=f"{path}:1",
        )
    run_out = cmap.options.get("run_out_days", DEFAULT_RUN_OUT_DAYS)
    return OhaFile(
        path=path,
        rows=tuple(rows),
        has_cco="cco" in has,
        has_denominator="denominator" in has,
        has_group="group" in has,
        claims_through=through,
        run_out_days=int(run_out),
        other_measure_rows=other_measure,
    )


def cco_lookup(cco_ids: Collection[str], names: Mapping[str, str] | None = None) -> dict[str, str]:
    """Accepted CCO spellings (upper-case) → our CCO id: the ids themselves and, from ``names``
    (id → display name, as in ``mappings/ccos.csv``), the names."""
    out = {cid.upper(): cid for cid in cco_ids}
    for cid, name in (names or {}).items():
        out.setdefault(name.upper(), cid)
    return out
