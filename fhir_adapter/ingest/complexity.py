"""OPIP health-complexity files (spec §1: "OPIP shares child health-complexity data with CCOs";
§4 "Health complexity": gap lists and rates split by the flags) converted to FHIR R4.

A row (member id, medical complexity, social complexity, optional as-of date; column names in a
column map, default ``mappings/extracts/complexity.toml``) becomes, in the load's source:

* a ``Patient`` carrying only the Medicaid member id (``identifier``), id ``mbr-<member id>``
  (``mbr-<hash>`` when the member id is not a valid FHIR id), so the person index links it to the
  child's other records (spec §3 "Identity"); it has no birth date, so a child known *only* from
  this file is listed among the children without a birth date in data quality;
* one ``Observation`` per non-empty level (FHIR R4 Observation: ``status = final``, ``code`` from
  the project's own CodeSystem :data:`COMPLEXITY_SYSTEM` with codes ``medical-complexity`` /
  ``social-complexity`` (UNVERIFIED: OPIP publishes no FHIR representation), ``subject`` the
  Patient, ``effectiveDateTime`` the as-of date when given, ``valueString`` the level as the file
  gives it, translated through ``[values.medical]`` / ``[values.social]``).

Observations that arrive as FHIR (NDJSON, REST) with that system and those codes are read the
same way (``f_observation``). Ids are deterministic: loading the same file again changes nothing,
a changed level makes a new version. Loads are all or nothing: every bad row is reported at
``file:line`` and nothing is written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any

from fhir_adapter.errors import InvalidDataError, MappingsError
from fhir_adapter.fhir.resources import ID_RE
from fhir_adapter.ingest.columns import (
    ColumnMap,
    RowFields,
    check_options,
    load_column_map,
    read_rows,
    rows_failed,
)
from fhir_adapter.ingest.runner import Clock, IngestResult, check_source, ingest_items, utc_now
from fhir_adapter.settings import DEFAULT_CANONICAL_BASE
from fhir_adapter.store.db import ParsedResource, Store, WriteStats

#: The project's CodeSystem of OPIP health-complexity observations (UNVERIFIED as a standard).
COMPLEXITY_SYSTEM = f"{DEFAULT_CANONICAL_BASE}/CodeSystem/opip-complexity"
MEDICAL, SOCIAL = "medical-complexity", "social-complexity"
DIMENSIONS = {"medical": MEDICAL, "social": SOCIAL}
DISPLAY = {MEDICAL: "Medical complexity (OPIP)", SOCIAL: "Social complexity (OPIP)"}
COMPLEXITY_FIELDS: Mapping[str, bool] = {
    "member_id": True,
    "medical": False,
    "social": False,
    "effective": False,
}
COMPLEXITY_MAP = "complexity.toml"
DEFAULT_SOURCE = "opip-complexity"


def complexity_map(path: Path) -> ColumnMap:
    """The column map of a complexity file; it must name at least one of ``medical``/``social``."""
    cmap = load_column_map(path, required=COMPLEXITY_FIELDS)
    check_options(cmap, {"status": str, "source": str})
    if not cmap.fields & set(DIMENSIONS):
        raise MappingsError("the map names neither 'medical' nor 'social'", location=f"{path}:1")
    return cmap


def patient_id(member_id: str) -> str:
    candidate = f"mbr-{member_id}"
    if ID_RE.match(candidate):
        return candidate
    return "mbr-" + hashlib.blake2b(member_id.encode(), digest_size=12).hexdigest()


def _observation_id(member_id: str, code: str, effective: date | None) -> str:
    key = f"{member_id}|{code}|{effective.isoformat() if effective else ''}"
    return "cx-" + hashlib.blake2b(key.encode(), digest_size=16).hexdigest()


def observation(member_id: str, code: str, level: str, effective: date | None) -> dict[str, Any]:
    """The Observation of one level (module docstring)."""
    r: dict[str, Any] = {
        "resourceType": "Observation",
        "id": _observation_id(member_id, code, effective),
        "status": "final",
        "code": {"coding": [{"system": COMPLEXITY_SYSTEM, "code": code, "display": DISPLAY[code]}]},
        "subject": {"reference": f"Patient/{patient_id(member_id)}"},
        "valueString": level,
    }
    if effective is not None:
        r["effectiveDateTime"] = effective.isoformat()
    return r


def convert_complexity(path: Path, cmap: ColumnMap, *, member_system: str) -> list[dict[str, Any]]:
    """The resources of a complexity file; raises :class:`InvalidDataError` listing every bad row
    (``file:line``). A member id on two rows with the same as-of date and different levels is an
    error."""
    errors: list[InvalidDataError] = []
    patients: dict[str, dict[str, Any]] = {}
    observations: dict[str, tuple[dict[str, Any], str]] = {}
    try:
        for row in read_rows(path, cmap, errors):
            fields = RowFields(row, cmap)
            member_id = fields.text("member_id", required="member id")
            effective = fields.date("effective") if "effective" in cmap.fields else None
            levels = {DIMENSIONS[name]: fields.text(name) for name in DIMENSIONS if name in cmap.fields}
            if member_id and not any(levels.values()):
                fields.fail("no complexity level on the row")
            if fields.errors:
                errors.extend(fields.errors)
                continue
            patients.setdefault(
                member_id,
                {
                    "resourceType": "Patient",
                    "id": patient_id(member_id),
                    "identifier": [{"system": member_system, "value": member_id}],
                },
            )
            for code, level in levels.items():
                if not level:
                    continue
                obs = observation(member_id, code, level, effective)
                earlier = observations.get(obs["id"])
                if earlier is not None and earlier[0]["valueString"] != level:
                    errors.append(
                        row.error(
                            f"{code} {level!r} differs from {earlier[0]['valueString']!r} at {earlier[1]}"
                        )
                    )
                    continue
                observations.setdefault(obs["id"], (obs, row.location))
    except InvalidDataError as exc:  # a fatal problem (header, encoding): report it with the rest
        errors.append(exc)
    if errors:
        raise rows_failed(path, errors)
    return [*patients.values(), *(o for o, _where in observations.values())]


def load_complexity(
    store: Store, path: Path, source: str = DEFAULT_SOURCE, *, cmap: ColumnMap, clock: Clock = utc_now
) -> tuple[int, WriteStats]:
    """Convert and store a complexity file under ``source`` in one transaction; returns the number
    of resources and what changed."""
    source = check_source(source)
    resources = convert_complexity(path, cmap, member_system=store.member_system)
    items = [ParsedResource(r["resourceType"], r["id"], r) for r in resources]
    result = ingest_items(
        store, items, source, batch_size=max(1, len(items)), clock=clock, result=IngestResult()
    )
    if result.stats.created or result.stats.updated:
        store.analyze()
    return len(resources), result.stats


__all__ = [
    "COMPLEXITY_FIELDS",
    "COMPLEXITY_MAP",
    "COMPLEXITY_SYSTEM",
    "DEFAULT_SOURCE",
    "MEDICAL",
    "SOCIAL",
    "complexity_map",
    "convert_complexity",
    "load_complexity",
    "observation",
    "patient_id",
]
