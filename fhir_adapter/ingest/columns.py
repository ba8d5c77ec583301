"""Flat extracts (CSV or fixed-width) read through a column map kept as data.

Eligibility, claims, provider, assignment and OHA member-level files differ per site and per
year, so the file's column names (or fixed-width positions), value codes and date formats are
configuration, not code: a TOML file such as ``mappings/extracts/enrollment.toml``::

    format = "csv"                        # or "fixed-width"
    delimiter = ","                       # csv only
    date_formats = ["%Y-%m-%d", "%m/%d/%Y", "%Y%m%d"]

    [columns]                             # our field = the file's header (csv)
    member_id = "MEMBER_ID"

    [positions]                           # fixed-width only: field = [first column (1-based), width]
    member_id = [1, 12]

    [values.sex]                          # optional: file value = our value (exact, then upper-case)
    M = "male"

Every problem names ``file:line`` (the TOML file for a bad map, the extract for a bad row).
Given an ``errors`` list, :func:`read_rows` records malformed rows there and goes on, so a
loader can report every bad row of a file at once.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import IO, Any, Literal

from fhir_adapter.errors import InvalidDataError, MappingsError

DEFAULT_DATE_FORMATS = ("%Y-%m-%d", "%m/%d/%Y", "%Y%m%d")
_MAP_KEYS = {"format", "delimiter", "encoding", "date_formats", "columns", "positions", "values", "options"}


@dataclass(frozen=True)
class ColumnMap:
    """How to read one kind of extract; ``fields`` are our names, each required or optional."""

    path: Path
    format: Literal["csv", "fixed-width"]
    columns: dict[str, str]
    positions: dict[str, tuple[int, int]]
    values: dict[str, dict[str, str]]
    date_formats: tuple[str, ...] = DEFAULT_DATE_FORMATS
    delimiter: str = ","
    encoding: str = "utf-8-sig"
    #: free-form settings of the extract kind (e.g. which benefit packages count), as given
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def fields(self) -> frozenset[str]:
        return frozenset(self.columns if self.format == "csv" else self.positions)


@dataclass(frozen=True)
class Row:
    """One data row: ``location`` is ``file:line``; ``values`` hold stripped text ('' when empty)."""

    location: str
    values: dict[str, str]

    def get(self, name: str) -> str:
        return self.values.get(name, "")

    def error(self, message: str, name: str | None = None) -> InvalidDataError:
        where = f" (column {name})" if name else ""
        return InvalidDataError(f"{message}{where}", location=self.location)


def load_column_map(path: Path, *, required: Mapping[str, bool]) -> ColumnMap:
    """Load and check a column map; ``required`` lists every field this extract kind knows
    (``True`` when the file must carry it). Unknown keys and fields are errors."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MappingsError("column map not found", location=f"{path}:1") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MappingsError(f"cannot read column map: {exc}", location=f"{path}:1") from None
    except tomllib.TOMLDecodeError as exc:
        raise MappingsError(f"not TOML: {exc}", location=f"{path}:{getattr(exc, 'lineno', 1)}") from None
    where = f"{path}:1"
    unknown = set(raw) - _MAP_KEYS
    if unknown:
        raise MappingsError(f"unknown keys {sorted(unknown)}; allowed: {sorted(_MAP_KEYS)}", location=where)
    fmt = raw.get("format", "csv")
    if fmt not in ("csv", "fixed-width"):
        raise MappingsError(f"format must be 'csv' or 'fixed-width', not {fmt!r}", location=where)
    columns = raw.get("columns", {})
    positions_raw = raw.get("positions", {})
    if not isinstance(columns, dict) or not all(isinstance(v, str) for v in columns.values()):
        raise MappingsError("[columns] must map field names to header texts", location=where)
    positions: dict[str, tuple[int, int]] = {}
    if not isinstance(positions_raw, dict):
        raise MappingsError("[positions] must map field names to [start, width]", location=where)
    for name, pos in positions_raw.items():
        if not (isinstance(pos, list) and len(pos) == 2 and all(isinstance(p, int) and p > 0 for p in pos)):
            raise MappingsError(f"[positions] {name} must be [start (1-based), width]", location=where)
        positions[name] = (pos[0], pos[1])
    given = set(columns if fmt == "csv" else positions)
    unknown_fields = given - set(required)
    if unknown_fields:
        raise MappingsError(
            f"unknown fields {sorted(unknown_fields)}; this extract knows {sorted(required)}", location=where
        )
    missing = {name for name, needed in required.items() if needed} - given
    if missing:
        table = "columns" if fmt == "csv" else "positions"
        raise MappingsError(f"[{table}] lacks required fields {sorted(missing)}", location=where)
    values = raw.get("values", {})
    if not isinstance(values, dict) or not all(
        isinstance(m, dict) and all(isinstance(v, str) for v in m.values()) for m in values.values()
    ):
        raise MappingsError("[values.<field>] must map file values to texts", location=where)
    unknown_values = set(values) - set(required)
    if unknown_values:
        raise MappingsError(
            f"[values] names unknown fields {sorted(unknown_values)}; this extract knows {sorted(required)}",
            location=where,
        )
    formats = raw.get("date_formats", list(DEFAULT_DATE_FORMATS))
    if not isinstance(formats, list) or not formats or not all(isinstance(f, str) for f in formats):
        raise MappingsError("date_formats must be a non-empty list of strptime formats", location=where)
    delimiter = raw.get("delimiter", ",")
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise MappingsError("delimiter must be one character", location=where)
    options = raw.get("options", {})
    if not isinstance(options, dict):
        raise MappingsError("[options] must be a table", location=where)
    encoding = raw.get("encoding", "utf-8-sig")
    try:
        codecs.lookup(encoding)
    except (LookupError, TypeError):
        raise MappingsError(f"unknown encoding {encoding!r}", location=where) from None
    return ColumnMap(
        path=path,
        format=fmt,
        columns=dict(columns),
        positions=positions,
        values={k: dict(v) for k, v in values.items()},
        date_formats=tuple(formats),
        delimiter=delimiter,
        encoding=encoding,
        options=dict(options),
    )


def _open_text(path: Path, encoding: str) -> IO[str]:
    try:
        # gzip.open owns the file it opens (GzipFile(fileobj=...) would leave it open).
        raw: IO[bytes] = gzip.open(path, "rb") if path.name.endswith(".gz") else path.open("rb")  # type: ignore[assignment]  # noqa: SIM115
    except OSError as exc:
        raise InvalidDataError(f"cannot read: {exc.strerror or exc}", location=f"{path}:1") from None
    return io.TextIOWrapper(raw, encoding=encoding, newline="")


def _undecodable_line(path: Path, encoding: str) -> int | None:
    """The number of the first line of ``path`` that ``encoding`` cannot decode (the decoder
    reads ahead in blocks, so the error itself does not say), or ``None``."""
    decoder = codecs.getincrementaldecoder(encoding)()
    try:
        with gzip.open(path, "rb") if path.name.endswith(".gz") else path.open("rb") as raw:
            for number, line in enumerate(raw, start=1):
                try:
                    decoder.decode(line)
                except UnicodeDecodeError:
                    return number
    except (OSError, EOFError):
        return None
    return None


def read_rows(path: Path, cmap: ColumnMap, errors: list[InvalidDataError] | None = None) -> Iterator[Row]:
    """The data rows of ``path``; blank lines are skipped. A missing or ambiguous header column,
    undecodable text or an unreadable file raises :class:`InvalidDataError` at ``file:line``.
    A row with the wrong number of fields raises too, unless ``errors`` is given: then it is
    recorded there and skipped. Fixed-width lines shorter than the map are padded with blanks
    (tools often trim trailing blanks)."""
    with _open_text(path, cmap.encoding) as handle:
        try:
            if cmap.format == "csv":
                yield from _csv_rows(path, handle, cmap, errors)
            else:
                yield from _fixed_rows(path, handle, cmap)
        except UnicodeDecodeError as exc:
            line = _undecodable_line(path, cmap.encoding)
            raise InvalidDataError(
                f"not {cmap.encoding} text: {exc.reason} (Excel saves 'CSV' in the Windows code page: save as "
                "'CSV UTF-8', or set encoding in the column map)",
                location=f"{path}:{line}" if line else f"{path}",
            ) from None
        except (OSError, EOFError) as exc:  # a corrupt or truncated .gz
            raise InvalidDataError(f"cannot read: {exc}", location=f"{path}") from None


def _csv_rows(
    path: Path, handle: IO[str], cmap: ColumnMap, errors: list[InvalidDataError] | None
) -> Iterator[Row]:
    reader = csv.reader(handle, delimiter=cmap.delimiter, strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise InvalidDataError("empty file: no header row", location=f"{path}:1")
        names = [name.strip() for name in header]
        index = {name: i for i, name in enumerate(names)}
        missing = [f"{field} ({col!r})" for field, col in cmap.columns.items() if col not in index]
        if missing:
            raise InvalidDataError(
                f"header lacks columns {', '.join(missing)} (column map {cmap.path.name})",
                location=f"{path}:1",
            )
        twice = sorted({col for col in cmap.columns.values() if names.count(col) > 1})
        if twice:
            raise InvalidDataError(
                f"header repeats columns {twice}: which one is meant?", location=f"{path}:1"
            )
        wanted = [(field, index[col]) for field, col in cmap.columns.items()]
        while True:
            # A quoted field may span lines: a record is named by its first physical line.
            line = reader.line_num + 1
            record = next(reader, None)
            if record is None:
                break
            if not record or all(not cell.strip() for cell in record):
                continue
            if len(record) != len(header):
                problem = InvalidDataError(
                    f"expected {len(header)} fields, got {len(record)}", location=f"{path}:{line}"
                )
                if errors is None:
                    raise problem
                errors.append(problem)
                continue
            yield Row(f"{path}:{line}", {name: record[i].strip() for name, i in wanted})
    except csv.Error as exc:
        raise InvalidDataError(f"malformed CSV: {exc}", location=f"{path}:{reader.line_num}") from None


def _fixed_rows(path: Path, handle: IO[str], cmap: ColumnMap) -> Iterator[Row]:
    needed = max((start + width - 1 for start, width in cmap.positions.values()), default=0)
    for line, raw in enumerate(handle, start=1):
        stripped = raw.rstrip("\r\n")
        if not stripped.strip():
            continue
        # trailing blanks are often trimmed by the tools that pass these files around
        text = stripped.ljust(needed)
        yield Row(
            f"{path}:{line}",
            {
                name: text[start - 1 : start - 1 + width].strip()
                for name, (start, width) in cmap.positions.items()
            },
        )


def value(row: Row, cmap: ColumnMap, name: str) -> str:
    """A field's text translated through ``[values.<name>]`` (exact match, then upper-case)."""
    text = row.get(name)
    table = cmap.values.get(name)
    if not table or not text:
        return text
    if text in table:
        return table[text]
    return table.get(text.upper(), text)


def parse_date(row: Row, cmap: ColumnMap, name: str, *, required: bool = False) -> date | None:
    """A date field in one of the map's formats; empty gives ``None`` (or an error when
    ``required``); anything else unparseable is an error at ``file:line``."""
    text = row.get(name)
    if not text:
        if required:
            raise row.error("missing date", name)
        return None
    for fmt in cmap.date_formats:
        try:
            return datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    raise row.error(f"{text!r} is not a date in {', '.join(cmap.date_formats)}", name)


class RowFields:
    """Reads the fields of one row and records every problem (not only the first), so a loader
    can report all of a row's faults at ``file:line`` and then skip the row."""

    def __init__(self, row: Row, cmap: ColumnMap) -> None:
        self.row = row
        self.cmap = cmap
        self.errors: list[InvalidDataError] = []

    def fail(self, message: str, name: str | None = None) -> None:
        self.errors.append(self.row.error(message, name))

    def text(self, name: str, *, required: str | None = None) -> str:
        """The field's translated text; when empty and ``required`` names it, a problem
        ``missing <required>``."""
        text = value(self.row, self.cmap, name)
        if not text and required:
            self.fail(f"missing {required}", name)
        return text

    def date(self, name: str, *, required: bool = False) -> date | None:
        try:
            return parse_date(self.row, self.cmap, name, required=required)
        except InvalidDataError as exc:
            self.errors.append(exc)
            return None


def check_options(cmap: ColumnMap, allowed: Mapping[str, type | tuple[type, ...]]) -> None:
    """``[options]`` may hold only the ``allowed`` keys, each of the given type."""
    where = f"{cmap.path}:1"
    unknown = set(cmap.options) - set(allowed)
    if unknown:
        raise MappingsError(
            f"unknown [options] {sorted(unknown)}; allowed: {sorted(allowed)}", location=where
        )
    for key, kind in allowed.items():
        if key in cmap.options and not isinstance(cmap.options[key], kind):
            raise MappingsError(f"[options] {key} has the wrong type", location=where)


#: At most this many bad rows are listed in one error.
MAX_LISTED = 200


def _line_number(location: str | None) -> int:
    tail = (location or "").rpartition(":")[2]
    return int(tail) if tail.isdigit() else 0


def rows_failed(path: Path, errors: list[InvalidDataError], *, limit: int = MAX_LISTED) -> InvalidDataError:
    """One error listing the bad rows of ``path`` in line order as ``file:line: message`` (at
    most ``limit`` of them), for loaders that write nothing unless every row is good."""
    ordered = sorted(errors, key=lambda e: _line_number(e.location))
    lines = [str(e) for e in ordered[:limit]]
    if len(ordered) > limit:
        lines.append(f"… and {len(ordered) - limit} more")
    noun = "row" if len(ordered) == 1 else "rows"
    return InvalidDataError(f"{len(ordered)} bad {noun} in {path}; nothing was written:\n" + "\n".join(lines))
