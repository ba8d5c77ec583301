"""Official value-set workbooks (Excel ``.xlsx`` or CSV) read through a column map kept as data
(spec §3 "Official lists" and "Code handling").

OHA publishes its code lists as specification sheets and value-set workbooks whose layout changes
from year to year, so which sheets to read, where the header is, which column holds what, and how
the workbook names its value sets and code systems are configuration: a TOML file such as
``mappings/extracts/valueset-workbook.toml``::

    sheets = "all"                 # or ["Procedures", "Diagnoses"]; "all" skips sheets without a header
    header_row = "auto"            # or the 1-based row number of the header
    date_formats = ["%Y-%m-%d", "%m/%d/%Y", "%Y%m%d"]
    optional = ["display", "match", "valid_from", "valid_to"]   # columns the file may lack
    default_valueset = "se-issue-diagnoses"   # optional: when there is no value-set column (or it is empty)
    default_system = "ICD-10-CM"              # optional: when there is no code-system column (or it is empty)
    delimiter = ","                # CSV only
    encoding = "utf-8-sig"         # CSV only

    [columns]                      # our field = the header text, or a list of accepted header texts
    valueset = ["Value Set Name", "Value Set OID"]
    system = "Code System"
    code = "Code"
    display = "Description"
    match = "Match"
    valid_from = "Effective Date"
    valid_to = "End Date"

    [values.valueset]              # the workbook's value-set names (or OIDs) = our value-set ids
    "SE Intervention Procedures" = "se-intervention-procedures"

    [values.system]                # the workbook's code-system names = a URI, OID or code-system name
    "CPT-4" = "CPT"

    [values.match]                 # the workbook's match words = exact | prefix
    "Starts with" = "prefix"

Names in ``[values.*]`` and header texts are compared case-insensitively with runs of spaces
collapsed; code-system names (``[values.system]`` targets and cells) also match the ``name``
column of ``mappings/code-systems.csv`` ignoring punctuation (``ICD10CM`` = ``ICD-10-CM``), a URI
or alias of ``mappings/system-aliases.csv``, or a bare OID (``2.16.840.1.113883.6.12`` is read as
``urn:oid:2.16.840.1.113883.6.12``). A value-set cell that is not in ``[values.valueset]`` may be
the value-set id itself.

Codes: normalised by their code system's rule and written as the shipped CSVs write them
(ICD-10-CM with the dot after the category). ``match`` is ``exact`` when empty; a code ending in a
wildcard (``F43.*``, ``F43*``, ``F43%``) means ``prefix`` on what precedes it. CPT descriptors are
AMA-copyrighted, so the description of a CPT code (also a CPT code filed under HCPCS) is dropped.

The workbook's date (for the ``source`` column) is, in this order: a date in the file name
(``2025-01-15``, ``2025_01_15`` or ``20250115``); for ``.xlsx`` the ``modified`` (else ``created``)
date of the workbook's core properties (``docProps/core.xml``, UTC, taken in the reporting time
zone); else the file's modification time in the reporting time zone. :attr:`Workbook.date_basis`
says which.

Every problem is an :class:`~fhir_adapter.errors.InvalidDataError` (a bad map:
:class:`~fhir_adapter.errors.MappingsError`) located at ``file.xlsx[Sheet]:row`` (``file.csv:line``)
with the column named in the message.
"""

from __future__ import annotations

import csv
import io
import re
import tomllib
import zipfile
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, tzinfo
from pathlib import Path
from typing import Any, cast, get_args

from fhir_adapter.errors import InvalidDataError, MappingsError, UsageError
from fhir_adapter.measure.spec import Mappings, MatchKind, MeasureSpec
from fhir_adapter.terminology.codes import Terminology, is_cpt_code
from fhir_adapter.terminology.valueset_diff import written_code

#: Our fields, in the order messages list them.
FIELDS = ("valueset", "system", "code", "display", "match", "valid_from", "valid_to")
#: Fields a map may leave out of ``[columns]`` (``valueset`` and ``system`` need a default then).
OPTIONAL_FIELDS = frozenset({"display", "match", "valid_from", "valid_to"})
DEFAULT_DATE_FORMATS = ("%Y-%m-%d", "%m/%d/%Y", "%Y%m%d")
#: Rows searched for the header when ``header_row = "auto"``.
HEADER_SEARCH_ROWS = 50
EXCEL_SUFFIXES = (".xlsx", ".xlsm")
CSV_SUFFIXES = (".csv", ".txt")
_MAP_KEYS = {
    "sheets", "header_row", "date_formats", "optional", "default_valueset", "default_system",
    "delimiter", "encoding", "columns", "values",
}  # fmt: skip
_VALUE_TABLES = ("valueset", "system", "match")
_WILDCARD = re.compile(r"\.?[*%]$")
_OID = re.compile(r"^[0-2](?:\.\d+)+$")
_NAME_DATE = re.compile(r"(?<!\d)(\d{4})([-_.]?)(\d{2})\2(\d{2})(?!\d)")
_SPACES = re.compile(r"\s+")


def _key(text: str) -> str:
    """A header text or name as compared: case-folded, spaces collapsed."""
    return _SPACES.sub(" ", text).strip().casefold()


def _alnum(text: str) -> str:
    return "".join(ch for ch in text.casefold() if ch.isalnum())


# --------------------------------------------------------------------------------------------
# the column map


@dataclass(frozen=True)
class WorkbookMap:
    """How to read one layout of value-set workbook."""

    path: Path
    #: sheet names to read; ``None`` = every sheet that has a header row
    sheets: tuple[str, ...] | None
    #: 1-based header row; ``None`` = the first row (of :data:`HEADER_SEARCH_ROWS`) naming the code column
    header_row: int | None
    #: field -> accepted header texts (first found wins)
    columns: Mapping[str, tuple[str, ...]]
    optional: frozenset[str] = OPTIONAL_FIELDS
    default_valueset: str | None = None
    default_system: str | None = None
    #: ``valueset`` | ``system`` | ``match`` -> {compared name: our value}
    values: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    date_formats: tuple[str, ...] = DEFAULT_DATE_FORMATS
    delimiter: str = ","
    encoding: str = "utf-8-sig"


def _line_of(text: str, key: str) -> int:
    """Best-effort 1-based line of ``key =`` or of the ``[key]`` table header in TOML ``text``."""
    pattern = re.compile(rf"^\s*(?:\[\s*{re.escape(key)}\s*\]|{re.escape(key)}\s*=)")
    for number, line in enumerate(text.splitlines(), 1):
        if pattern.match(line):
            return number
    return 1


def load_workbook_map(path: Path) -> WorkbookMap:
    """Load and check a workbook column map; unknown keys, fields and value tables are errors
    located at ``map.toml:line``."""
    try:
        text = path.read_text(encoding="utf-8")
        raw = tomllib.loads(text)
    except FileNotFoundError:
        raise MappingsError("workbook column map not found", location=f"{path}:1") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MappingsError(f"cannot read workbook column map: {exc}", location=f"{path}:1") from None
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"at line (\d+)", str(exc))
        line = found.group(1) if found else "1"
        raise MappingsError(f"not TOML: {exc}", location=f"{path}:{line}") from None

    def error(key: str, message: str) -> MappingsError:
        return MappingsError(message, location=f"{path}:{_line_of(text, key)}")

    unknown = sorted(set(raw) - _MAP_KEYS)
    if unknown:
        raise error(unknown[0], f"unknown keys {unknown}; allowed: {sorted(_MAP_KEYS)}")

    sheets_raw = raw.get("sheets", "all")
    sheets: tuple[str, ...] | None
    if sheets_raw == "all":
        sheets = None
    elif isinstance(sheets_raw, list) and sheets_raw and all(isinstance(s, str) and s for s in sheets_raw):
        sheets = tuple(sheets_raw)
    else:
        raise error("sheets", 'sheets must be "all" or a non-empty array of sheet names')

    header_raw = raw.get("header_row", "auto")
    if header_raw == "auto":
        header_row = None
    elif isinstance(header_raw, int) and not isinstance(header_raw, bool) and header_raw >= 1:
        header_row = header_raw
    else:
        raise error("header_row", 'header_row must be "auto" or a row number (1-based)')

    columns_raw = raw.get("columns")
    if not isinstance(columns_raw, dict) or not columns_raw:
        raise error("columns", "[columns] must map our fields to header texts")
    columns: dict[str, tuple[str, ...]] = {}
    for name, header in columns_raw.items():
        if name not in FIELDS:
            raise error("columns", f"[columns] unknown field {name!r}; fields: {', '.join(FIELDS)}")
        texts = [header] if isinstance(header, str) else header
        if (
            not isinstance(texts, list)
            or not texts
            or not all(isinstance(t, str) and t.strip() for t in texts)
        ):
            raise error(name, f"[columns] {name} must be a header text or a non-empty array of them")
        columns[name] = tuple(texts)

    optional_raw = raw.get("optional", sorted(OPTIONAL_FIELDS))
    if not isinstance(optional_raw, list) or not all(o in FIELDS for o in optional_raw):
        raise error("optional", f"optional must be an array of fields among {', '.join(FIELDS)}")
    optional = frozenset(cast("list[str]", optional_raw))
    if "code" in optional:
        raise error("optional", "the code column cannot be optional")

    defaults: dict[str, str | None] = {}
    for name in ("default_valueset", "default_system"):
        value = raw.get(name)
        if value is not None and not (isinstance(value, str) and value.strip()):
            raise error(name, f"{name} must be a non-empty string")
        defaults[name] = value
    if "code" not in columns:
        raise error("columns", "[columns] lacks required field 'code'")
    for name in ("valueset", "system"):
        if name not in columns and defaults[f"default_{name}"] is None:
            raise error("columns", f"[columns] lacks {name!r} and there is no default_{name}")

    values_raw = raw.get("values", {})
    if not isinstance(values_raw, dict):
        raise error("values", "[values.<field>] tables must map workbook names to our values")
    values: dict[str, dict[str, str]] = {}
    for table, mapping in values_raw.items():
        if table not in _VALUE_TABLES:
            raise error(
                f"values.{table}", f"unknown table [values.{table}]; known: {', '.join(_VALUE_TABLES)}"
            )
        if not isinstance(mapping, dict) or not all(isinstance(v, str) and v for v in mapping.values()):
            raise error(f"values.{table}", f"[values.{table}] must map workbook names to non-empty texts")
        if table == "match":
            bad = sorted(v for v in mapping.values() if v not in get_args(MatchKind))
            if bad:
                raise error("values.match", f"[values.match] targets {bad} are not exact or prefix")
        values[table] = {_key(k): v for k, v in mapping.items()}

    formats = raw.get("date_formats", list(DEFAULT_DATE_FORMATS))
    if not isinstance(formats, list) or not formats or not all(isinstance(f, str) and f for f in formats):
        raise error("date_formats", "date_formats must be a non-empty array of strptime formats")
    delimiter = raw.get("delimiter", ",")
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise error("delimiter", "delimiter must be one character")
    encoding = raw.get("encoding", "utf-8-sig")
    if not isinstance(encoding, str) or not encoding:
        raise error("encoding", "encoding must be a codec name")
    return WorkbookMap(
        path=path,
        sheets=sheets,
        header_row=header_row,
        columns=columns,
        optional=optional,
        default_valueset=defaults["default_valueset"],
        default_system=defaults["default_system"],
        values=values,
        date_formats=tuple(formats),
        delimiter=delimiter,
        encoding=encoding,
    )


# --------------------------------------------------------------------------------------------
# what a workbook yields


@dataclass(frozen=True)
class ImportedRow:
    """One value-set row read from the workbook, ready for a value-set CSV."""

    valueset: str
    #: canonical system URI
    system: str
    #: the code as the CSV writes it (normalised; ICD-10-CM dotted)
    code: str
    match: MatchKind
    valid_from: date | None
    valid_to: date | None
    display: str
    #: ``file.xlsx[Sheet]:row`` or ``file.csv:line``
    location: str


@dataclass(frozen=True)
class Workbook:
    path: Path
    #: the workbook's date and where it came from: ``file name``, ``workbook properties`` or
    #: ``file modification time``
    date: date
    date_basis: str
    rows: tuple[ImportedRow, ...]
    #: sheets read and sheets skipped (no header row; only with ``sheets = "all"``)
    sheets: tuple[str, ...]
    skipped_sheets: tuple[str, ...] = ()
    #: CPT descriptors left out (AMA copyright)
    dropped_displays: int = 0
    #: rows repeating an earlier row exactly (kept once)
    duplicates: int = 0

    @property
    def source(self) -> str:
        """The ``source`` of every imported row: the workbook's file name and date."""
        return f"{self.path.name} ({self.date.isoformat()})"

    def valuesets(self) -> dict[str, tuple[ImportedRow, ...]]:
        """Rows per value set, in workbook order."""
        out: dict[str, list[ImportedRow]] = {}
        for row in self.rows:
            out.setdefault(row.valueset, []).append(row)
        return {name: tuple(rows) for name, rows in out.items()}


# --------------------------------------------------------------------------------------------
# tables (one per sheet, or the CSV file)


@dataclass(frozen=True)
class _Table:
    label: str  # "file.xlsx[Sheet]" or "file.csv"
    sheet: str  # the sheet name, or the CSV file's name
    excel: bool
    rows: Iterator[tuple[int, Sequence[Any]]]

    def at(self, row: int) -> str:
        return f"{self.label}:{row}"


def _column_letter(index: int) -> str:
    letters = ""
    n = index + 1
    while n:
        n, rem = divmod(n - 1, 26)
        letters = chr(65 + rem) + letters
    return letters


def _excel_tables(path: Path, wanted: Sequence[str] | None) -> Generator[_Table]:
    import openpyxl  # only Excel imports need it
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (OSError, zipfile.BadZipFile, KeyError, ValueError, InvalidFileException) as exc:
        raise InvalidDataError(f"not a readable .xlsx workbook: {exc}", location=str(path)) from None
    try:
        names = list(book.sheetnames)
        chosen = list(wanted) if wanted is not None else names
        missing = [n for n in chosen if n not in names]
        if missing:
            raise InvalidDataError(
                f"unknown sheet {missing[0]!r}; the workbook has sheets: {', '.join(repr(n) for n in names)}",
                location=str(path),
            )
        for name in chosen:
            sheet = book[name]
            if hasattr(sheet, "reset_dimensions"):
                sheet.reset_dimensions()  # some writers record a wrong sheet size
            rows = cast("Iterator[Sequence[Any]]", sheet.iter_rows(values_only=True))
            yield _Table(f"{path}[{name}]", name, True, enumerate(rows, start=1))
    finally:
        book.close()


def _csv_rows(path: Path, wmap: WorkbookMap) -> Iterator[tuple[int, Sequence[Any]]]:
    try:
        text = path.read_bytes().decode(wmap.encoding)
    except OSError as exc:
        raise InvalidDataError(f"cannot read: {exc.strerror or exc}", location=f"{path}:1") from None
    except (UnicodeDecodeError, LookupError) as exc:
        raise InvalidDataError(f"not {wmap.encoding} text: {exc}", location=f"{path}:1") from None
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=wmap.delimiter)
    previous = 0
    try:
        for record in reader:
            line, previous = previous + 1, reader.line_num
            yield line, record
    except csv.Error as exc:
        raise InvalidDataError(f"malformed CSV: {exc}", location=f"{path}:{reader.line_num}") from None


def _tables(path: Path, wmap: WorkbookMap, sheets: Sequence[str] | None) -> Generator[_Table]:
    suffix = path.suffix.lower()
    if suffix in EXCEL_SUFFIXES:
        yield from _excel_tables(path, sheets if sheets else wmap.sheets)
    elif suffix in CSV_SUFFIXES:
        if sheets:
            raise UsageError(f"--sheet applies to Excel workbooks only, not {path.name}")
        yield _Table(str(path), path.name, False, _csv_rows(path, wmap))
    else:
        raise InvalidDataError(
            f"unsupported file type {suffix or '(none)'!r}: expected {', '.join(EXCEL_SUFFIXES + CSV_SUFFIXES)}"
            " (save .xls workbooks as .xlsx)",
            location=str(path),
        )


# --------------------------------------------------------------------------------------------
# cells


def _cell_text(value: Any) -> str:
    """A cell as text: numbers without a spurious ``.0``, whitespace runs collapsed."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).upper()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime | date):
        return value.isoformat()
    return _SPACES.sub(" ", str(value)).strip()


@dataclass(frozen=True)
class _Header:
    row: int
    #: field -> (column index, header text as written)
    columns: Mapping[str, tuple[int, str]]
    #: cells in the header row up to its last non-empty one
    width: int


def _find_header(table: _Table, wmap: WorkbookMap, strict: bool) -> _Header | None:
    """The header row (``None`` when ``auto`` finds none and ``strict`` is off); missing
    required columns are errors at the header row."""
    limit = wmap.header_row or HEADER_SEARCH_ROWS
    code_headers = {_key(t) for t in wmap.columns["code"]}
    for number, cells in table.rows:
        if number > limit:
            break
        if wmap.header_row is not None and number != wmap.header_row:
            continue
        texts = [_key(_cell_text(c)) for c in cells]
        if wmap.header_row is None and not code_headers & set(texts):
            continue
        found: dict[str, tuple[int, str]] = {}
        missing: list[str] = []
        for name, accepted in wmap.columns.items():
            wanted = [_key(t) for t in accepted]
            index = next((texts.index(w) for w in wanted if w in texts), None)
            if index is not None:
                found[name] = (index, _cell_text(cells[index]))
            elif name not in wmap.optional:
                missing.append(f"{name} ({' or '.join(repr(t) for t in accepted)})")
        if missing:
            raise InvalidDataError(
                f"missing column {', '.join(missing)} in the header row (column map {wmap.path.name})",
                location=table.at(number),
            )
        width = max((i + 1 for i, t in enumerate(texts) if t), default=0)
        return _Header(number, found, width)
    if not strict:
        return None
    where = f"row {wmap.header_row}" if wmap.header_row else f"the first {HEADER_SEARCH_ROWS} rows"
    code_texts = " or ".join(repr(t) for t in wmap.columns["code"])
    raise InvalidDataError(
        f"missing column code ({code_texts}): no header row in {where} (column map {wmap.path.name})",
        location=table.at(wmap.header_row or 1),
    )


class _RowReader:
    """Turns the cells of one data row into an :class:`ImportedRow`."""

    def __init__(self, wmap: WorkbookMap, mappings: Mappings, spec: MeasureSpec) -> None:
        self.wmap = wmap
        self.mappings = mappings
        self.term = Terminology(mappings)
        self.spec = spec
        self.targets = {name for name, vs in spec.valuesets.items() if Path(vs.path).suffix == ".csv"}
        by_name: dict[str, str] = {}
        for uri, system in mappings.systems.items():
            by_name[_alnum(system.name)] = uri
        self.system_names = by_name
        self.dropped_displays = 0

    # -- one field each -----------------------------------------------------------------
    def valueset(self, text: str, where: str, column: str) -> str:
        text = text or (self.wmap.default_valueset or "")
        if not text:
            raise InvalidDataError(f"missing value set in {column}", location=where)
        mapped = self.wmap.values.get("valueset", {}).get(_key(text))
        name = mapped if mapped is not None else _key(text)
        if name not in self.spec.valuesets:
            declared = ", ".join(self.spec.valuesets)
            hint = (
                f"[values.valueset] maps it to {mapped!r}, which is not declared"
                if mapped is not None
                else f"map it in [values.valueset] of {self.wmap.path.name}"
            )
            raise InvalidDataError(
                f"unknown value set {text!r} in {column}: {hint} "
                f"({self.spec.id} {self.spec.year} declares: {declared})",
                location=where,
            )
        if name not in self.targets:
            raise InvalidDataError(
                f"value set {name!r} ({text!r} in {column}) is built by 'include' in measure.toml; "
                "import the value sets it includes",
                location=where,
            )
        return name

    def system(self, text: str, where: str, column: str) -> str:
        text = text or (self.wmap.default_system or "")
        if not text:
            raise InvalidDataError(f"missing code system in {column}", location=where)
        target = self.wmap.values.get("system", {}).get(_key(text), text)
        candidates = [target]
        if _OID.match(target):
            candidates.append(f"urn:oid:{target}")
        for candidate in candidates:
            canonical = self.term.canonical_system(candidate)
            if canonical is not None:
                return canonical
        by_name = self.system_names.get(_alnum(target))
        if by_name is not None:
            return by_name
        known = ", ".join(s.name for s in self.mappings.systems.values())
        raise InvalidDataError(
            f"unknown code system {text!r} in {column}: not a code-system name ({known}), URI, alias or "
            f"OID in mappings/; map it in [values.system] of {self.wmap.path.name}",
            location=where,
        )

    def match_and_code(
        self, system: str, raw_code: str, raw_match: str, where: str, code_col: str, match_col: str
    ) -> tuple[MatchKind, str]:
        if not raw_code:
            raise InvalidDataError(f"missing code in {code_col}", location=where)
        wildcard = bool(_WILDCARD.search(raw_code))
        bare = _WILDCARD.sub("", raw_code) if wildcard else raw_code
        match: str | None = None
        if raw_match:
            match = self.wmap.values.get("match", {}).get(_key(raw_match), raw_match.strip().lower())
            if match not in get_args(MatchKind):
                raise InvalidDataError(
                    f"match {raw_match!r} in {match_col} is not exact or prefix "
                    f"(map it in [values.match] of {self.wmap.path.name})",
                    location=where,
                )
            if wildcard and match == "exact":
                raise InvalidDataError(
                    f"code {raw_code!r} in {code_col} ends in a wildcard but {match_col} says exact",
                    location=where,
                )
        kind = self.mappings.systems[system].normalise
        code = written_code(kind, bare)
        if not code or any(ch in code for ch in "*%?"):
            raise InvalidDataError(f"code {raw_code!r} in {code_col} is not a code or prefix", location=where)
        return cast("MatchKind", match or ("prefix" if wildcard else "exact")), code

    def parse_date(self, value: Any, where: str, column: str) -> date | None:
        if isinstance(value, datetime):
            return value.date()
        if isinstance(value, date):
            return value
        text = _cell_text(value)
        if not text:
            return None
        for fmt in self.wmap.date_formats:
            try:
                return datetime.strptime(text, fmt).date()
            except ValueError:
                continue
        raise InvalidDataError(
            f"bad date {text!r} in {column}: expected one of {', '.join(self.wmap.date_formats)}",
            location=where,
        )

    # -- the row ------------------------------------------------------------------------
    def read(self, table: _Table, header: _Header, number: int, cells: Sequence[Any]) -> ImportedRow | None:
        def raw(name: str) -> Any:
            if name not in header.columns:
                return None
            index = header.columns[name][0]
            return cells[index] if index < len(cells) else None

        def column(name: str) -> str:
            if name not in header.columns:
                return f"(default {name})"
            index, text = header.columns[name]
            return f"column {text!r} ({_column_letter(index)})" if table.excel else f"column {text!r}"

        if all(_cell_text(raw(name)) == "" for name in header.columns):
            return None
        where = table.at(number)
        if not table.excel and any(_cell_text(c) for c in cells[header.width :]):
            raise InvalidDataError(
                f"expected at most {header.width} fields, got {len(cells)} (the header has {header.width})",
                location=where,
            )
        valueset = self.valueset(_cell_text(raw("valueset")), where, column("valueset"))
        system = self.system(_cell_text(raw("system")), where, column("system"))
        raw_code = raw("code")
        if isinstance(raw_code, datetime | date):
            raise InvalidDataError(
                f"code in {column('code')} is a date cell ({_cell_text(raw_code)}); format the column as text",
                location=where,
            )
        match, code = self.match_and_code(
            system, _cell_text(raw_code), _cell_text(raw("match")), where, column("code"), column("match")
        )
        valid_from = self.parse_date(raw("valid_from"), where, column("valid_from"))
        valid_to = self.parse_date(raw("valid_to"), where, column("valid_to"))
        if valid_from and valid_to and valid_from > valid_to:
            raise InvalidDataError(
                f"bad date: {column('valid_from')} {valid_from} is after {column('valid_to')} {valid_to}",
                location=where,
            )
        display = _cell_text(raw("display"))
        if display and is_cpt_code(system, self.term.normalise_code(system, code)):
            display = ""  # AMA copyright (spec §3 Code handling)
            self.dropped_displays += 1
        return ImportedRow(valueset, system, code, match, valid_from, valid_to, display, where)


# --------------------------------------------------------------------------------------------
# the workbook


def workbook_date(path: Path, tz: tzinfo = UTC) -> tuple[date, str]:
    """The workbook's date and its basis (see the module docstring for the order)."""
    found = [m for m in _NAME_DATE.finditer(path.name)]
    for m in reversed(found):
        try:
            return date(int(m.group(1)), int(m.group(3)), int(m.group(4))), "file name"
        except ValueError:
            continue
    if path.suffix.lower() in EXCEL_SUFFIXES:
        stamp = _core_properties_date(path)
        if stamp is not None:
            return stamp.replace(tzinfo=UTC).astimezone(tz).date(), "workbook properties"
    try:
        mtime = path.stat().st_mtime
    except OSError as exc:
        raise InvalidDataError(f"cannot read: {exc.strerror or exc}", location=str(path)) from None
    return datetime.fromtimestamp(mtime, tz).date(), "file modification time"


def _core_properties_date(path: Path) -> datetime | None:
    """``modified`` (else ``created``) from ``docProps/core.xml``; ``None`` when the workbook has
    no core properties (openpyxl would otherwise report the current time)."""
    import openpyxl

    try:
        with zipfile.ZipFile(path) as archive:
            if "docProps/core.xml" not in archive.namelist():
                return None
    except (OSError, zipfile.BadZipFile):
        return None
    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (OSError, zipfile.BadZipFile, KeyError, ValueError):
        return None
    try:
        props = book.properties
        stamp = props.modified or props.created
    finally:
        book.close()
    return stamp if isinstance(stamp, datetime) else None


_RowKey = tuple[str, str, str, str, date | None]


def _read_table(
    reader: _RowReader,
    table: _Table,
    header: _Header,
    rows: list[ImportedRow],
    seen: dict[_RowKey, ImportedRow],
) -> int:
    """Append the rows of ``table`` after its header; returns the exact repeats skipped."""
    duplicates = 0
    for number, cells in table.rows:
        row = reader.read(table, header, number, cells)
        if row is None:
            continue
        code = reader.term.normalise_code(row.system, row.code)
        key = (row.valueset, row.system, code, row.match, row.valid_from)
        first = seen.get(key)
        if first is None:
            seen[key] = row
            rows.append(row)
        elif (first.valid_to, first.display) == (row.valid_to, row.display):
            duplicates += 1
        else:
            what = "valid_to" if first.valid_to != row.valid_to else "description"
            raise InvalidDataError(
                f"duplicate code {row.code} ({row.match}, value set {row.valueset}) with conflicting {what}: "
                f"first at {first.location}",
                location=row.location,
            )
    return duplicates


def read_valueset_workbook(
    path: Path,
    wmap: WorkbookMap,
    mappings: Mappings,
    spec: MeasureSpec,
    *,
    sheets: Sequence[str] | None = None,
    tz: tzinfo = UTC,
) -> Workbook:
    """Read every value-set row of ``path`` (sheets: ``sheets``, else the map's) for the value
    sets of ``spec``. Rows repeating an earlier row exactly are kept once; the same code twice
    with different data is an error naming both places."""
    if not path.is_file():
        raise InvalidDataError("file not found", location=str(path))
    reader = _RowReader(wmap, mappings, spec)
    strict = bool(sheets) or wmap.sheets is not None or path.suffix.lower() in CSV_SUFFIXES
    rows: list[ImportedRow] = []
    seen: dict[_RowKey, ImportedRow] = {}
    read: list[str] = []
    skipped: list[str] = []
    duplicates = 0
    tables = _tables(path, wmap, sheets)
    try:
        for table in tables:
            header = _find_header(table, wmap, strict)
            if header is None:
                skipped.append(table.sheet)
                continue
            read.append(table.sheet)
            duplicates += _read_table(reader, table, header, rows, seen)
    finally:
        tables.close()  # closes the workbook even when a row is bad
    if not read:
        code_texts = " or ".join(repr(t) for t in wmap.columns["code"])
        raise InvalidDataError(
            f"missing column code ({code_texts}): no sheet has a header row naming it in its first "
            f"{HEADER_SEARCH_ROWS} rows (column map {wmap.path.name}); sheets: {', '.join(skipped)}",
            location=str(path),
        )
    if not rows:
        raise InvalidDataError("no value-set rows found", location=str(path))
    day, basis = workbook_date(path, tz)
    return Workbook(
        path=path,
        date=day,
        date_basis=basis,
        rows=tuple(rows),
        sheets=tuple(read),
        skipped_sheets=tuple(skipped),
        dropped_displays=reader.dropped_displays,
        duplicates=duplicates,
    )


__all__ = [
    "FIELDS",
    "ImportedRow",
    "Workbook",
    "WorkbookMap",
    "load_workbook_map",
    "read_valueset_workbook",
    "workbook_date",
]
