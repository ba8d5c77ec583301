"""Import an official value-set workbook into a measure-year folder (spec §3 "Official lists";
``fhir-adapter mappings import``).

Steps, each finished before the next starts, so a bad workbook changes nothing:

1. load the current ``mappings/`` and the measure-year (``<measure>/<year>/measure.toml``);
2. read the workbook through its column map (:mod:`fhir_adapter.ingest.workbook`);
3. render each value set the workbook covers as a value-set CSV (``status = official``,
   ``source`` = the workbook's file name and date), write them into a temporary copy of
   ``mappings/`` and load that copy strictly with :func:`~fhir_adapter.mappings.load_mappings`;
4. diff the value sets (:mod:`fhir_adapter.terminology.valueset_diff`) and evaluate the measure for
   the calendar year with the current and the new mappings on the same data cut, per source mode
   (:mod:`fhir_adapter.report.impact`);
5. unless it is a dry run: write every changed CSV to a temporary file beside its target, rename
   them into place, and regenerate ``conformance/``.

Value sets the workbook does not name keep their files; a value set it names is replaced as a
whole (codes missing from the workbook are removed).
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from fhir_adapter.errors import MappingsError, NotFoundError
from fhir_adapter.ingest.runner import Clock, utc_now
from fhir_adapter.ingest.workbook import ImportedRow, Workbook, load_workbook_map, read_valueset_workbook
from fhir_adapter.mappings import VALUESET_COLUMNS, load_mappings
from fhir_adapter.measure.spec import CodeSystem, Mappings, SourceMode
from fhir_adapter.report.conformance import write_conformance
from fhir_adapter.report.impact import Impact, compare_evaluations
from fhir_adapter.settings import Settings, packaged_dir
from fhir_adapter.terminology.valueset_diff import ValueSetDiff, diff_valuesets

#: The column map used without ``--columns``: the site's own, else the shipped one.
DEFAULT_WORKBOOK_MAP = Path("extracts") / "valueset-workbook.toml"
OFFICIAL = "official"
DEFAULT_SOURCES: tuple[SourceMode, ...] = ("all", "claims")


@dataclass(frozen=True)
class ImportResult:
    measure: str
    year: int
    workbook: Workbook
    #: the code systems of the mappings (names and how codes are written, for printing)
    systems: Mapping[str, CodeSystem]
    #: value-set CSV paths (in the mappings folder) and their new contents
    files: dict[Path, bytes]
    diffs: list[ValueSetDiff]
    impacts: list[Impact]
    dry_run: bool
    #: files replaced and conformance files regenerated (empty on a dry run)
    written: list[Path] = field(default_factory=list)
    conformance: list[Path] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.diffs)


def default_workbook_map(settings: Settings) -> Path:
    own = settings.mappings_dir / DEFAULT_WORKBOOK_MAP
    return own if own.is_file() else packaged_dir("mappings") / DEFAULT_WORKBOOK_MAP


def valueset_csv(rows: Sequence[ImportedRow], source: str, status: str = OFFICIAL) -> bytes:
    """A value-set CSV (columns of :data:`~fhir_adapter.mappings.VALUESET_COLUMNS`) as the shipped
    files are written: UTF-8, LF line ends, quotes only where needed."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(VALUESET_COLUMNS)
    for r in rows:
        values = {
            "system": r.system,
            "code": r.code,
            "match": r.match,
            "valid_from": _iso(r.valid_from),
            "valid_to": _iso(r.valid_to),
            "display": r.display,
            "status": status,
            "source": source,
        }
        writer.writerow([values[c] for c in VALUESET_COLUMNS])
    return buffer.getvalue().encode("utf-8")


def _iso(value: date | None) -> str:
    return value.isoformat() if value else ""


def _load_copy(root: Path, files: dict[Path, bytes], workbook: Workbook) -> Mappings:
    """Load ``root`` with ``files`` replaced, from a temporary copy (the real folder is untouched)."""
    with tempfile.TemporaryDirectory(prefix="fhir-adapter-mappings-") as tmp:
        copy = Path(tmp) / root.name
        shutil.copytree(root, copy)
        for path, data in files.items():
            (copy / path.relative_to(root)).write_bytes(data)
        try:
            return load_mappings(copy)
        except MappingsError as exc:
            where = (exc.location or "").replace(str(copy), str(root))
            raise MappingsError(
                f"the imported value sets would make mappings/ invalid: {exc.message}",
                location=where or str(workbook.path),
            ) from None


def _replace(files: dict[Path, bytes]) -> list[Path]:
    """Write every file to a temporary file beside its target, then rename each into place."""
    temps: list[tuple[Path, Path]] = []
    try:
        for path, data in files.items():
            fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            temps.append((Path(name), path))
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            if path.exists():
                shutil.copymode(path, name)
    except BaseException:
        for temp, _ in temps:
            with contextlib.suppress(OSError):
                temp.unlink()
        raise
    for temp, path in temps:
        temp.replace(path)
    return [path for _, path in temps]


def _impacts(
    settings: Settings,
    current: Mappings,
    new: Mappings,
    measure: str,
    year: int,
    sources: Sequence[SourceMode],
    clock: Clock,
) -> list[Impact]:
    from fhir_adapter.workflow import EvaluationRequest, open_store, run_evaluation

    cut = clock()  # one data cut for both evaluations
    store = open_store(settings)
    try:
        out = []
        for mode in sources:
            request = EvaluationRequest(measure, date(year, 1, 1), date(year, 12, 31), mode, as_of=cut)
            before = run_evaluation(settings, store, request, evidence=False, mappings=current, clock=clock)
            after = run_evaluation(settings, store, request, evidence=False, mappings=new, clock=clock)
            out.append(compare_evaluations(before, after))
        return out
    finally:
        store.close()


def import_workbook(
    settings: Settings,
    path: Path,
    measure: str,
    year: int,
    *,
    columns: Path | None = None,
    sheets: Sequence[str] | None = None,
    dry_run: bool = False,
    sources: Sequence[SourceMode] = DEFAULT_SOURCES,
    clock: Clock = utc_now,
) -> ImportResult:
    """Import ``path`` into ``<mappings>/<measure>/<year>/`` (see the module docstring)."""
    root = settings.mappings_dir
    current = load_mappings(root)
    spec = current.measures.get((measure, year))
    if spec is None:
        known = sorted(f"{m} {y}" for m, y in current.measures)
        raise NotFoundError(f"no measure folder {measure}/{year} in {root} (known: {', '.join(known)})")
    wmap = load_workbook_map(columns or default_workbook_map(settings))
    workbook = read_valueset_workbook(path, wmap, current, spec, sheets=sheets, tz=settings.tz)
    files = {
        Path(spec.valuesets[name].path): valueset_csv(rows, workbook.source)
        for name, rows in workbook.valuesets().items()
    }
    new = _load_copy(root, files, workbook)
    diffs = diff_valuesets(spec.valuesets, new.measures[(measure, year)].valuesets)
    impacts = _impacts(settings, current, new, measure, year, sources, clock)
    result = ImportResult(measure, year, workbook, current.systems, files, diffs, impacts, dry_run)
    if dry_run:
        return result
    changed = {p: data for p, data in files.items() if not p.is_file() or p.read_bytes() != data}
    result.written.extend(_replace(changed))
    result.conformance.extend(
        write_conformance(load_mappings(root), settings.conformance_dir, settings.canonical_base)
    )
    return result


__all__ = ["DEFAULT_WORKBOOK_MAP", "ImportResult", "default_workbook_map", "import_workbook", "valueset_csv"]
