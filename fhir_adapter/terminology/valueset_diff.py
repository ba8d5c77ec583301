"""What changes between two versions of a measure-year's value sets (spec §3 "Official lists":
report the code diff when an official workbook replaces candidate lists).

Pure: compares :class:`~fhir_adapter.measure.spec.ValueSet` values, no I/O. Rows are compared by
(canonical system, normalised code), the identity the engine matches on
(:mod:`fhir_adapter.terminology.codes`); ``source`` and the row's file location are bookkeeping
and never count as a change.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Literal

from fhir_adapter.measure.spec import CodeRow, ValueSet
from fhir_adapter.terminology.codes import normalise

ChangeKind = Literal["added", "removed", "changed"]
#: The row fields a diff reports, in this order; ``rows`` means the number of rows for the code changed.
COMPARED_FIELDS = ("match", "valid_from", "valid_to", "display", "status")

_Signature = tuple[str, str, str, str, str]


def written_code(normalise_kind: str, code: str) -> str:
    """A code as value-set CSVs and reports write it: normalised by the code system's rule, and
    ICD-10 (``normalise = icd``) codes longer than three characters with the dot after the
    three-character category (``f4322`` -> ``F43.22``), as ICD-10-CM's tabular list and the shipped
    CSVs write them (matching ignores the dot either way, :func:`normalise`)."""
    value = normalise(normalise_kind, code)
    if normalise_kind == "icd" and len(value) > 3:
        return f"{value[:3]}.{value[3:]}"
    return value


def _text(value: date | None) -> str:
    return value.isoformat() if value else ""


def _signature(row: CodeRow) -> _Signature:
    return (row.match, _text(row.valid_from), _text(row.valid_to), row.display, row.provenance.status)


@dataclass(frozen=True)
class RowChange:
    """The rows of one (system, code) before and after."""

    system: str
    code: str
    kind: ChangeKind
    before: tuple[CodeRow, ...]
    after: tuple[CodeRow, ...]
    #: changed fields among :data:`COMPARED_FIELDS`, plus ``rows`` when the row count differs
    fields: tuple[str, ...] = ()

    def details(self) -> list[str]:
        """``field: before -> after`` for every changed field (one row on each side), else the
        row counts; empty for additions and removals."""
        if self.kind != "changed":
            return []
        if len(self.before) != 1 or len(self.after) != 1:
            return [f"rows: {len(self.before)} -> {len(self.after)}"] + [
                f"{name} changed" for name in self.fields if name != "rows"
            ]
        old, new = _signature(self.before[0]), _signature(self.after[0])
        return [
            f"{name}: {old[i] or '(empty)'} -> {new[i] or '(empty)'}"
            for i, name in enumerate(COMPARED_FIELDS)
            if old[i] != new[i]
        ]


@dataclass(frozen=True)
class ValueSetDiff:
    name: str
    changes: tuple[RowChange, ...]

    def of_kind(self, kind: ChangeKind) -> list[RowChange]:
        return [c for c in self.changes if c.kind == kind]

    @property
    def counts(self) -> dict[ChangeKind, int]:
        return {k: len(self.of_kind(k)) for k in ("added", "removed", "changed")}


def _by_code(rows: Sequence[CodeRow]) -> dict[tuple[str, str], list[CodeRow]]:
    out: dict[tuple[str, str], list[CodeRow]] = defaultdict(list)
    for row in rows:
        out[(row.system, row.code)].append(row)
    return out


def _changed_fields(before: Sequence[CodeRow], after: Sequence[CodeRow]) -> tuple[str, ...]:
    old = sorted(_signature(r) for r in before)
    new = sorted(_signature(r) for r in after)
    if old == new:
        return ()
    common = Counter(old) & Counter(new)  # rows kept as they were pair with themselves
    old = sorted((Counter(old) - common).elements())
    new = sorted((Counter(new) - common).elements())
    names = {
        name for a, b in zip(old, new, strict=False) for i, name in enumerate(COMPARED_FIELDS) if a[i] != b[i]
    }
    if len(old) != len(new):
        names.add("rows")
    return tuple(n for n in (*COMPARED_FIELDS, "rows") if n in names)


def diff_rows(before: Sequence[CodeRow], after: Sequence[CodeRow]) -> tuple[RowChange, ...]:
    """Added, removed and changed codes, in the order they first appear (old rows first, then
    codes only the new rows have)."""
    old, new = _by_code(before), _by_code(after)
    keys = list(old) + [k for k in new if k not in old]
    changes: list[RowChange] = []
    for system, code in keys:
        a, b = tuple(old.get((system, code), ())), tuple(new.get((system, code), ()))
        if not a:
            changes.append(RowChange(system, code, "added", a, b))
        elif not b:
            changes.append(RowChange(system, code, "removed", a, b))
        else:
            fields = _changed_fields(a, b)
            if fields:
                changes.append(RowChange(system, code, "changed", a, b, fields))
    return tuple(changes)


def diff_valuesets(before: Mapping[str, ValueSet], after: Mapping[str, ValueSet]) -> list[ValueSetDiff]:
    """One :class:`ValueSetDiff` per value set whose rows differ (a value set on one side only
    is all additions or all removals), in the order of ``before`` then new names."""
    names = list(before) + [n for n in after if n not in before]
    out: list[ValueSetDiff] = []
    for name in names:
        old = before[name].rows if name in before else ()
        new = after[name].rows if name in after else ()
        changes = diff_rows(old, new)
        if changes:
            out.append(ValueSetDiff(name, changes))
    return out


__all__ = [
    "COMPARED_FIELDS",
    "ChangeKind",
    "RowChange",
    "ValueSetDiff",
    "diff_rows",
    "diff_valuesets",
    "written_code",
]
