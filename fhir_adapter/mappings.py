"""Loads ``mappings/`` strictly into :class:`~fhir_adapter.measure.spec.Mappings` (DESIGN §3).

Layout (spec §2, §3)::

    mappings/code-systems.csv      uri,name,normalise,status,source
    mappings/system-aliases.csv    alias,canonical,status,source
    mappings/ccos.csv              cco_id,name,identifier_system,identifier_value,status,source
    mappings/local-codes.csv       system,code,target_system,target_code,display,status,source
    mappings/<measure-id>/<year>/measure.toml
    mappings/<measure-id>/<year>/valuesets/*.csv
                                   system,code,match,valid_from,valid_to,display,status,source

A folder under ``mappings/`` is a measure folder when it holds at least one ``YYYY`` folder;
other folders (e.g. extract column maps) are left alone. Unknown keys or columns, missing keys,
wrong types, unknown systems, unknown value-set references and duplicate rows are errors, raised
as :class:`~fhir_adapter.errors.MappingsError` located at ``file:line``. Every rule and row must
carry ``status`` and ``source`` (spec §3: nothing tagged [A] may pass as OHA's specification).
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import tomllib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Literal, cast, get_args

from fhir_adapter.errors import MappingsError
from fhir_adapter.measure.spec import (
    CODE_STATUSES,
    RULE_STATUSES,
    STRATIFIER_IDS,
    AgeBand,
    AgeRule,
    Cco,
    CodeRow,
    CodeSystem,
    DiagnosisPosition,
    EnrollmentRule,
    EnrollmentScope,
    Exclusion,
    Group,
    LocalCode,
    Mappings,
    MatchKind,
    MeasureSpec,
    Provenance,
    ServiceCriterion,
    ValueSet,
)
from fhir_adapter.terminology.codes import Terminology, clean_uri, is_cpt_code

CODE_SYSTEMS_FILE = "code-systems.csv"
ALIASES_FILE = "system-aliases.csv"
CCOS_FILE = "ccos.csv"
LOCAL_CODES_FILE = "local-codes.csv"
MEASURE_FILE = "measure.toml"
#: Exclusion rule templates the engine implements (spec §3 "Exclusions").
EXCLUSION_IDS = ("death", "hospice")
NORMALISE_KINDS = ("icd", "upper", "none")
VALUESET_COLUMNS = ("system", "code", "match", "valid_from", "valid_to", "display", "status", "source")

_SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_VERSION = re.compile(r"^(\d{4})\.\d+\.\d+$")
_YEAR_DIR = re.compile(r"^\d{4}$")
_TOML_ERROR_LINE = re.compile(r"at line (\d+)")

_KeyPath = tuple[str | int, ...]


# --------------------------------------------------------------------------------------------
# file reading and hashing


@dataclass
class _Files:
    """Reads files once and remembers their bytes for the hashes."""

    root: Path
    data: dict[Path, bytes] = field(default_factory=dict)

    def text(self, path: Path) -> str:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise MappingsError("file not found", location=f"{path}:1") from None
        except OSError as exc:
            raise MappingsError(f"cannot read file: {exc}", location=f"{path}:1") from None
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            raise MappingsError("not UTF-8 text", location=f"{path}:{line}") from None
        self.data[path] = raw
        return text

    def digest(self, paths: Iterable[Path]) -> str:
        """sha256 over (path relative to the root, sha256 of bytes), in path order."""
        h = hashlib.sha256()
        rel = sorted((p.relative_to(self.root).as_posix(), p) for p in set(paths))
        for name, path in rel:
            h.update(name.encode())
            h.update(b"\0")
            h.update(hashlib.sha256(self.data[path]).digest())
        return h.hexdigest()


# --------------------------------------------------------------------------------------------
# CSV


@dataclass(frozen=True)
class _Row:
    path: Path
    line: int
    values: Mapping[str, str]

    @property
    def location(self) -> str:
        return f"{self.path}:{self.line}"

    def error(self, message: str) -> MappingsError:
        return MappingsError(message, location=self.location)

    def __getitem__(self, column: str) -> str:
        return self.values[column]

    def required(self, column: str) -> str:
        value = self.values[column]
        if not value:
            raise self.error(f"missing {column}")
        return value

    def provenance(self, statuses: Sequence[str]) -> Provenance:
        status = self.required("status")
        if status not in statuses:
            raise self.error(f"status {status!r} is not one of {', '.join(statuses)}")
        return Provenance(status=status, source=self.required("source"))


def _read_csv(files: _Files, path: Path, columns: Sequence[str]) -> list[_Row]:
    """Rows of a CSV whose header has exactly ``columns`` (any order), values stripped."""
    reader = csv.reader(io.StringIO(files.text(path), newline=""))
    header: list[str] | None = None
    rows: list[_Row] = []
    previous = 0
    try:
        for record in reader:
            line, previous = previous + 1, reader.line_num
            if not any(cell.strip() for cell in record):
                continue
            if header is None:
                header = [cell.strip() for cell in record]
                unknown = [c for c in header if c not in columns]
                missing = [c for c in columns if c not in header]
                repeated = sorted(c for c, n in Counter(header).items() if n > 1)
                if unknown or missing or repeated:
                    parts = [
                        f"{label}: {', '.join(names)}"
                        for label, names in (
                            ("unknown columns", unknown),
                            ("missing columns", missing),
                            ("repeated columns", repeated),
                        )
                        if names
                    ]
                    raise MappingsError(
                        f"bad header ({'; '.join(parts)}); expected {','.join(columns)}",
                        location=f"{path}:{line}",
                    )
                continue
            if len(record) != len(header):
                raise MappingsError(
                    f"expected {len(header)} fields, got {len(record)}", location=f"{path}:{line}"
                )
            rows.append(_Row(path, line, {h: v.strip() for h, v in zip(header, record, strict=True)}))
    except csv.Error as exc:
        raise MappingsError(f"malformed CSV: {exc}", location=f"{path}:{reader.line_num}") from None
    if header is None:
        raise MappingsError(f"empty file; expected header {','.join(columns)}", location=f"{path}:1")
    return rows


def _parse_date(row: _Row, column: str) -> date | None:
    value = row[column]
    if not value:
        return None
    if _DATE.match(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise row.error(f"{column} {value!r} is not an ISO date (YYYY-MM-DD)")


# --------------------------------------------------------------------------------------------
# shared tables


def _load_systems(files: _Files, path: Path) -> dict[str, CodeSystem]:
    systems: dict[str, CodeSystem] = {}
    for row in _read_csv(files, path, ("uri", "name", "normalise", "status", "source")):
        uri = row.required("uri")
        if uri != clean_uri(uri):
            raise row.error(f"uri {uri!r} must not end with '/'")
        if uri in systems:
            raise row.error(f"duplicate code system {uri!r}")
        kind = row.required("normalise")
        if kind not in NORMALISE_KINDS:
            raise row.error(f"normalise {kind!r} is not one of {', '.join(NORMALISE_KINDS)}")
        row.provenance(RULE_STATUSES)
        systems[uri] = CodeSystem(
            uri=uri, name=row.required("name"), normalise=cast(Literal["icd", "upper", "none"], kind)
        )
    if not systems:
        raise MappingsError("no code systems", location=f"{path}:1")
    return systems


def _load_aliases(files: _Files, path: Path, systems: Mapping[str, CodeSystem]) -> dict[str, str]:
    aliases: dict[str, str] = {uri: uri for uri in systems}
    lines: dict[str, int] = {}
    for row in _read_csv(files, path, ("alias", "canonical", "status", "source")):
        alias = clean_uri(row.required("alias"))
        canonical = row.required("canonical")
        if canonical not in systems:
            raise row.error(f"canonical {canonical!r} is not in {CODE_SYSTEMS_FILE}")
        if alias in systems:
            raise row.error(f"alias {alias!r} is itself a canonical system")
        if alias in lines:
            raise row.error(f"duplicate alias {alias!r} (first on line {lines[alias]})")
        row.provenance(RULE_STATUSES)
        lines[alias] = row.line
        aliases[alias] = canonical
    return aliases


def _load_ccos(files: _Files, path: Path) -> tuple[Cco, ...]:
    columns = ("cco_id", "name", "identifier_system", "identifier_value", "status", "source")
    names: dict[str, str] = {}
    provenance: dict[str, Provenance] = {}
    identifiers: dict[str, list[tuple[str, str]]] = {}
    owner: dict[tuple[str, str], str] = {}
    for row in _read_csv(files, path, columns):
        cco_id, name = row.required("cco_id"), row.required("name")
        ident = (row.required("identifier_system"), row.required("identifier_value"))
        prov = row.provenance(RULE_STATUSES)
        if names.setdefault(cco_id, name) != name:
            raise row.error(f"CCO {cco_id!r} has two names: {names[cco_id]!r} and {name!r}")
        if ident in owner:
            raise row.error(f"identifier {ident[0]}|{ident[1]} already names CCO {owner[ident]!r}")
        owner[ident] = cco_id
        provenance.setdefault(cco_id, prov)
        identifiers.setdefault(cco_id, []).append(ident)
    return tuple(
        Cco(id=i, name=names[i], identifiers=tuple(identifiers[i]), provenance=provenance[i]) for i in names
    )


def _load_local_codes(files: _Files, path: Path, term: Terminology) -> tuple[LocalCode, ...]:
    columns = ("system", "code", "target_system", "target_code", "display", "status", "source")
    out: list[LocalCode] = []
    seen: dict[tuple[str, str, str, str], int] = {}
    for row in _read_csv(files, path, columns):
        system = _canonical(row, "system", term)
        target_system = _canonical(row, "target_system", term)
        code = term.normalise_code(system, row.required("code"))
        target_code = term.normalise_code(target_system, row.required("target_code"))
        key = (system, code, target_system, target_code)
        if key in seen:
            raise row.error(f"duplicate local code mapping (first on line {seen[key]})")
        seen[key] = row.line
        out.append(LocalCode(system, code, target_system, target_code, row.provenance(RULE_STATUSES)))
    return tuple(out)


def _canonical(row: _Row, column: str, term: Terminology) -> str:
    raw = row.required(column)
    canonical = term.canonical_system(raw)
    if canonical is None:
        raise row.error(f"unknown code system {raw!r} (not in {CODE_SYSTEMS_FILE} or {ALIASES_FILE})")
    return canonical


# --------------------------------------------------------------------------------------------
# value-set CSVs


def _load_valueset_rows(files: _Files, path: Path, term: Terminology) -> tuple[CodeRow, ...]:
    rows: list[CodeRow] = []
    seen: dict[tuple[str, str, str, date | None], int] = {}
    for row in _read_csv(files, path, VALUESET_COLUMNS):
        system = _canonical(row, "system", term)
        code = term.normalise_code(system, row.required("code"))
        if not code:
            raise row.error("missing code")
        match = row.required("match")
        if match not in get_args(MatchKind):
            raise row.error(f"match {match!r} is not one of {', '.join(get_args(MatchKind))}")
        valid_from, valid_to = _parse_date(row, "valid_from"), _parse_date(row, "valid_to")
        if valid_from and valid_to and valid_from > valid_to:
            raise row.error(f"valid_from {valid_from} is after valid_to {valid_to}")
        if is_cpt_code(system, code) and row["display"]:
            raise row.error("CPT descriptor text is not allowed (AMA copyright): leave display empty")
        provenance = row.provenance(CODE_STATUSES)
        key = (system, code, match, valid_from)
        if key in seen:
            raise row.error(f"duplicate row: same system, code, match and valid_from as line {seen[key]}")
        seen[key] = row.line
        rows.append(
            CodeRow(
                system=system,
                code=code,
                match=cast("MatchKind", match),
                valid_from=valid_from,
                valid_to=valid_to,
                display=row["display"],
                provenance=provenance,
                location=row.location,
            )
        )
    return tuple(rows)


# --------------------------------------------------------------------------------------------
# TOML with line numbers

_TOML_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\[\]]+?)\s*\]\]?\s*(?:#.*)?$")
_TOML_KEY = re.compile(
    r"""^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*=(.*)$"""
)
_TOML_STRING = re.compile(r'"""|\'\'\'|"(?:\\.|[^"\\])*"|\'[^\']*\'')


def _dotted(text: str) -> list[str]:
    return [part.strip().strip("\"'") for part in re.findall(r'"[^"]*"|\'[^\']*\'|[^.]+', text)]


def _bracket_delta(value: str) -> int:
    bare = _TOML_STRING.sub("", value).split("#", 1)[0]
    return bare.count("[") - bare.count("]")


def _toml_key_lines(text: str) -> dict[_KeyPath, int]:
    """Best-effort map from key paths (array-of-tables items by index) to 1-based lines."""
    lines: dict[_KeyPath, int] = {}
    counts: dict[tuple[str, ...], int] = {}
    current: _KeyPath = ()
    depth = 0
    in_string: str | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        if in_string is not None:
            if raw.count(in_string) % 2 == 1:
                in_string = None
            continue
        if depth > 0:
            depth += _bracket_delta(raw)
            continue
        header = _TOML_HEADER.match(raw)
        if header and "=" not in raw.split("#", 1)[0]:
            is_array = header.group(1) == "[["
            parts = _dotted(header.group(2))
            resolved: list[str | int] = []
            for i, part in enumerate(parts):
                resolved.append(part)
                names = tuple(parts[: i + 1])
                if is_array and i == len(parts) - 1:
                    counts[names] = counts.get(names, 0) + 1
                    resolved.append(counts[names] - 1)
                elif names in counts:
                    resolved.append(counts[names] - 1)
            current = tuple(resolved)
            lines.setdefault(current, number)
            continue
        key = _TOML_KEY.match(raw)
        if key:
            lines.setdefault((*current, *_dotted(key.group(1))), number)
            value = key.group(2)
            for quote in ('"""', "'''"):
                if value.count(quote) % 2 == 1:
                    in_string = quote
            if in_string is None:
                depth = max(_bracket_delta(value), 0)
    return lines


@dataclass(frozen=True)
class _TomlDoc:
    path: Path
    lines: Mapping[_KeyPath, int]

    def error(self, keypath: _KeyPath, message: str) -> MappingsError:
        path = keypath
        while path and path not in self.lines:
            path = path[:-1]
        line = self.lines.get(path, 1) if path else 1
        return MappingsError(message, location=f"{self.path}:{line}")


def _render(path: _KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part + 1}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "top level"


@dataclass(frozen=True)
class _Table:
    """One TOML table with its key path, for typed, located access."""

    doc: _TomlDoc
    path: _KeyPath
    data: Mapping[str, object]

    def error(self, key: str | None, message: str) -> MappingsError:
        return self.doc.error((*self.path, key) if key else self.path, message)

    def keys(self, required: Sequence[str], optional: Sequence[str] = ()) -> None:
        for key in self.data:
            if key not in required and key not in optional:
                allowed = ", ".join([*required, *optional])
                raise self.error(key, f"unknown key {key!r} in [{_render(self.path)}] (allowed: {allowed})")
        for key in required:
            if key not in self.data:
                raise self.error(None, f"missing key {key!r} in [{_render(self.path)}]")

    def _typed(self, key: str, kind: type, label: str) -> object:
        value = self.data[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.error(key, f"{_render((*self.path, key))} must be {label}, got {value!r}")
        return value

    def get_str(self, key: str) -> str:
        value = cast("str", self._typed(key, str, "a string"))
        if not value.strip():
            raise self.error(key, f"{_render((*self.path, key))} must not be empty")
        return value

    def opt_str(self, key: str) -> str | None:
        return self.get_str(key) if key in self.data else None

    def get_int(self, key: str, minimum: int = 0) -> int:
        value = cast("int", self._typed(key, int, "an integer"))
        if value < minimum:
            raise self.error(key, f"{_render((*self.path, key))} must be >= {minimum}, got {value}")
        return value

    def get_bool(self, key: str) -> bool:
        return cast("bool", self._typed(key, bool, "true or false"))

    def str_list(self, key: str) -> list[str]:
        value = cast("list[object]", self._typed(key, list, "an array of strings"))
        if not value or not all(isinstance(v, str) and v for v in value):
            raise self.error(key, f"{_render((*self.path, key))} must be a non-empty array of strings")
        return cast("list[str]", value)

    def choice(self, key: str, allowed: Sequence[str]) -> str:
        value = self.get_str(key)
        if value not in allowed:
            raise self.error(
                key, f"{_render((*self.path, key))} {value!r} is not one of {', '.join(allowed)}"
            )
        return value

    def slug(self, key: str) -> str:
        value = self.get_str(key)
        if not _SLUG.match(value):
            raise self.error(
                key, f"{_render((*self.path, key))} {value!r} must be lower-case words joined by '-'"
            )
        return value

    def table(self, key: str) -> _Table:
        value = self.data[key]
        if not isinstance(value, dict):
            raise self.error(key, f"[{_render((*self.path, key))}] must be a table")
        return _Table(self.doc, (*self.path, key), value)

    def tables(self, key: str) -> list[_Table]:
        value = self.data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.error(key, f"{key} must be an array of tables ([[{key}]])")
        return [_Table(self.doc, (*self.path, key, i), v) for i, v in enumerate(value)]

    def provenance(self) -> Provenance:
        return Provenance(status=self.choice("status", RULE_STATUSES), source=self.get_str("source"))


# --------------------------------------------------------------------------------------------
# measure folders


def _load_measure(files: _Files, folder: Path, term: Terminology) -> tuple[MeasureSpec, list[Path]]:
    path = folder / MEASURE_FILE
    text = files.text(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = _TOML_ERROR_LINE.search(str(exc))
        raise MappingsError(
            f"invalid TOML: {exc}", location=f"{path}:{found.group(1) if found else 1}"
        ) from None
    top = _Table(_TomlDoc(path, _toml_key_lines(text)), (), data)
    top.keys(("measure", "age", "enrollment", "exclusion", "valueset", "group"), ("age_band",))
    used = [path]

    m = top.table("measure")
    m.keys(("id", "year", "version", "title", "description", "stratifiers", "status", "source"))
    measure_id = m.slug("id")
    if measure_id != folder.parent.name:
        raise m.error("id", f"measure id {measure_id!r} does not match its folder {folder.parent.name!r}")
    year = m.get_int("year", 1900)
    if str(year) != folder.name:
        raise m.error("year", f"year {year} does not match its folder {folder.name!r}")
    version = m.get_str("version")
    found_version = _VERSION.match(version)
    if not found_version or found_version.group(1) != str(year):
        raise m.error("version", f"version {version!r} must look like '{year}.MAJOR.MINOR'")
    stratifiers = m.str_list("stratifiers")
    for s in stratifiers:
        if s not in STRATIFIER_IDS:
            raise m.error("stratifiers", f"stratifier {s!r} is not one of {', '.join(STRATIFIER_IDS)}")
    if len(set(stratifiers)) != len(stratifiers):
        raise m.error("stratifiers", "stratifiers repeat an id")

    a = top.table("age")
    a.keys(("min", "max", "status", "source"))
    age = AgeRule(min_age=a.get_int("min"), max_age=a.get_int("max"), provenance=a.provenance())
    if age.min_age > age.max_age:
        raise a.error("min", f"age min {age.min_age} is greater than max {age.max_age}")

    bands = _age_bands(top.tables("age_band"), age)
    if "age-band" in stratifiers and not bands:
        raise m.error("stratifiers", "the age-band stratifier needs [[age_band]] tables")

    e = top.table("enrollment")
    e.keys(("scope", "max_gaps", "max_gap_days", "status", "source"))
    enrollment = EnrollmentRule(
        scope=cast("EnrollmentScope", e.choice("scope", get_args(EnrollmentScope))),
        max_gaps=e.get_int("max_gaps"),
        max_gap_days=e.get_int("max_gap_days"),
        provenance=e.provenance(),
    )

    valuesets, vs_tables = _valuesets(files, top.tables("valueset"), folder, term, used)

    def ref(table: _Table, key: str) -> str | None:
        name = table.opt_str(key)
        if name is not None and name not in valuesets:
            raise table.error(key, f"unknown value set {name!r} (declared: {', '.join(vs_tables)})")
        return name

    exclusions: list[Exclusion] = []
    for x in top.tables("exclusion"):
        x.keys(("id", "enabled", "status", "source"), ("valueset",))
        exclusion = Exclusion(
            id=x.choice("id", EXCLUSION_IDS),
            enabled=x.get_bool("enabled"),
            provenance=x.provenance(),
            valueset=ref(x, "valueset"),
        )
        if any(other.id == exclusion.id for other in exclusions):
            raise x.error("id", f"exclusion {exclusion.id!r} appears twice")
        if exclusion.id == "hospice" and exclusion.valueset is None:
            raise x.error(None, "the hospice exclusion needs a valueset")
        exclusions.append(exclusion)
    if not any(x.id == "death" for x in exclusions):
        # Edge rule 10: death applies unless measure.toml says otherwise (enabled = false).
        exclusions.append(
            Exclusion(
                "death", True, Provenance("assumption", "spec §3 Edge rule 10 (default when not listed)")
            )
        )

    groups: list[Group] = []
    group_tables = top.tables("group")
    if not group_tables:
        raise top.error("group", "at least one [[group]] is required")
    for g in group_tables:
        g.keys(("id", "title", "description", "numerator", "status", "source"), ("need_diagnoses",))
        group_id = g.slug("id")
        if any(other.id == group_id for other in groups):
            raise g.error("id", f"group id {group_id!r} appears twice")
        n = g.table("numerator")
        n.keys(("procedures",), ("diagnoses", "diagnosis_position"))
        procedures = cast("str", ref(n, "procedures"))
        diagnoses = ref(n, "diagnoses")
        if diagnoses is not None and "diagnosis_position" not in n.data:
            raise n.error(None, f"missing key 'diagnosis_position' in [{_render(n.path)}] (diagnoses is set)")
        position = (
            n.choice("diagnosis_position", get_args(DiagnosisPosition))
            if "diagnosis_position" in n.data
            else "any"
        )
        groups.append(
            Group(
                id=group_id,
                title=g.get_str("title"),
                description=g.get_str("description"),
                numerator=ServiceCriterion(
                    procedures=procedures,
                    diagnoses=diagnoses,
                    diagnosis_position=cast("DiagnosisPosition", position),
                ),
                need_diagnoses=ref(g, "need_diagnoses"),
                provenance=g.provenance(),
            )
        )

    spec = MeasureSpec(
        id=measure_id,
        year=year,
        version=version,
        title=m.get_str("title"),
        description=m.get_str("description"),
        provenance=m.provenance(),
        age=age,
        age_bands=bands,
        enrollment=enrollment,
        exclusions=tuple(exclusions),
        groups=tuple(groups),
        stratifiers=tuple(stratifiers),
        valuesets=valuesets,
        path=str(folder),
    )
    return spec, used


def _age_bands(tables: list[_Table], age: AgeRule) -> tuple[AgeBand, ...]:
    bands: list[AgeBand] = []
    for t in tables:
        t.keys(("code", "min", "max", "status", "source"))
        band = AgeBand(
            code=t.get_str("code"),
            min_age=t.get_int("min"),
            max_age=t.get_int("max"),
            provenance=t.provenance(),
        )
        if band.min_age > band.max_age:
            raise t.error(
                "min", f"age band {band.code!r}: min {band.min_age} is greater than max {band.max_age}"
            )
        if band.min_age < age.min_age or band.max_age > age.max_age:
            key = "min" if band.min_age < age.min_age else "max"
            raise t.error(key, f"age band {band.code!r} is outside the age rule {age.min_age}-{age.max_age}")
        for other in bands:
            if other.code == band.code:
                raise t.error("code", f"age band code {band.code!r} appears twice")
            if band.min_age <= other.max_age and other.min_age <= band.max_age:
                raise t.error("min", f"age band {band.code!r} overlaps age band {other.code!r}")
        bands.append(band)
    covered = {age for b in bands for age in range(b.min_age, b.max_age + 1)}
    missing = [a for a in range(age.min_age, age.max_age + 1) if a not in covered]
    if bands and missing:
        raise tables[0].error("code", f"age bands leave ages {missing} of the age rule uncovered")
    return tuple(bands)


def _valuesets(
    files: _Files, tables: list[_Table], folder: Path, term: Terminology, used: list[Path]
) -> tuple[dict[str, ValueSet], dict[str, _Table]]:
    if not tables:
        raise MappingsError("at least one [[valueset]] is required", location=f"{folder / MEASURE_FILE}:1")
    declared: dict[str, _Table] = {}
    for t in tables:
        t.keys(("name", "title"), ("file", "include"))
        name = t.slug("name")
        if name in declared:
            raise t.error("name", f"value set {name!r} is declared twice")
        if ("file" in t.data) == ("include" in t.data):
            raise t.error(None, f"value set {name!r} needs exactly one of 'file' or 'include'")
        declared[name] = t

    resolved: dict[str, ValueSet] = {}

    def resolve(name: str, stack: tuple[str, ...]) -> ValueSet:
        if name in resolved:
            return resolved[name]
        t = declared[name]
        if "file" in t.data:
            relative = t.get_str("file")
            path = (folder / relative).resolve()
            if not path.is_relative_to(folder.resolve()) or Path(relative).is_absolute():
                raise t.error("file", f"value set file {relative!r} must be inside {folder}")
            if not path.is_file():
                raise t.error("file", f"value set file {relative!r} not found")
            path = folder / relative
            used.append(path)
            vs = ValueSet(name, t.get_str("title"), _load_valueset_rows(files, path, term), str(path))
        else:
            rows: dict[tuple[str, str, str, date | None, date | None], CodeRow] = {}
            for part in t.str_list("include"):
                if part not in declared:
                    raise t.error("include", f"unknown value set {part!r} (declared: {', '.join(declared)})")
                if part in stack or part == name:
                    cycle = " -> ".join((*stack, name, part))
                    raise t.error("include", f"value-set include cycle: {cycle}")
                for row in resolve(part, (*stack, name)).rows:
                    rows.setdefault((row.system, row.code, row.match, row.valid_from, row.valid_to), row)
            vs = ValueSet(name, t.get_str("title"), tuple(rows.values()), str(folder / MEASURE_FILE))
        resolved[name] = vs
        return vs

    return {name: resolve(name, ()) for name in declared}, declared


# --------------------------------------------------------------------------------------------
# public API


def load_mappings(root: Path) -> Mappings:
    """Load and validate every table and measure folder under ``root``.

    ``Mappings.hash`` covers every file read; each ``MeasureSpec.hash`` covers the shared
    tables and that measure-year's own files. Raises :class:`MappingsError` at ``file:line``.
    """
    if not root.is_dir():
        raise MappingsError("mappings folder not found", location=f"{root}:1")
    files = _Files(root)
    shared = [root / n for n in (CODE_SYSTEMS_FILE, ALIASES_FILE, CCOS_FILE, LOCAL_CODES_FILE)]
    systems = _load_systems(files, shared[0])
    aliases = _load_aliases(files, shared[1], systems)
    ccos = _load_ccos(files, shared[2])
    term = Terminology(Mappings(systems=systems, aliases=aliases, ccos=(), local_codes=()))
    local_codes = _load_local_codes(files, shared[3], term)
    term = Terminology(Mappings(systems=systems, aliases=aliases, ccos=ccos, local_codes=local_codes))

    measures: dict[tuple[str, int], MeasureSpec] = {}
    for measure_dir in _subfolders(root):
        years = _subfolders(measure_dir)
        if not any(_YEAR_DIR.match(y.name) for y in years):
            continue
        for year_dir in years:
            if not _YEAR_DIR.match(year_dir.name):
                raise MappingsError(
                    f"{year_dir.name!r} is not a measurement-year folder (YYYY)", location=f"{year_dir}:1"
                )
            spec, used = _load_measure(files, year_dir, term)
            digest = files.digest([*shared, *used])
            measures[(spec.id, spec.year)] = replace(spec, hash=digest)
    if not measures:
        raise MappingsError("no measure folders (<measure-id>/<year>/measure.toml)", location=f"{root}:1")
    return Mappings(
        systems=systems,
        aliases=aliases,
        ccos=ccos,
        local_codes=local_codes,
        measures=measures,
        hash=files.digest(files.data),
    )


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def _count(items: Iterable[str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(Counter(items).items()))


def check_mappings(root: Path) -> list[str]:
    """Validate ``root`` and summarise it in human-readable lines (``fhir-adapter mappings
    check``). Raises :class:`MappingsError` on the first problem."""
    m = load_mappings(root)
    lines = [
        f"mappings {root} (sha256 {m.hash[:12]})",
        f"code systems {len(m.systems)}, aliases {len(m.aliases) - len(m.systems)}, "
        f"CCOs {len(m.ccos)}, local codes {len(m.local_codes)}",
    ]
    for (measure_id, year), spec in sorted(m.measures.items()):
        rules = [
            spec.provenance.status,
            spec.age.provenance.status,
            spec.enrollment.provenance.status,
            *(x.provenance.status for x in spec.exclusions),
            *(g.provenance.status for g in spec.groups),
        ]
        lines.append(
            f"{measure_id} {year} version {spec.version} (sha256 {spec.hash[:12]}): "
            f"groups {', '.join(g.id for g in spec.groups)}; rules: {_count(rules)}"
        )
        for vs in spec.valuesets.values():
            statuses = _count(r.provenance.status for r in vs.rows) or "empty"
            lines.append(f"  {vs.name}: {len(vs.rows)} rows ({statuses})")
    lines.extend(_check_extract_maps(root / "extracts"))
    from fhir_adapter.report.params import check_report_mappings  # report parameters (referrals, targets …)

    lines.extend(check_report_mappings(root, m))
    return lines


def _check_extract_maps(folder: Path) -> list[str]:
    """Load the eligibility and claims column maps (``extracts/enrollment*.toml``,
    ``extracts/claims*.toml``) as their loaders would; other extract maps are their loaders' own."""
    from fhir_adapter.ingest.claims import CLAIMS_FIELDS, ClaimsOptions
    from fhir_adapter.ingest.columns import load_column_map
    from fhir_adapter.ingest.enrollment import ENROLLMENT_FIELDS, EnrollmentOptions

    kinds = (
        ("enrollment", ENROLLMENT_FIELDS, EnrollmentOptions.from_map),
        ("claims", CLAIMS_FIELDS, ClaimsOptions.from_map),
    )
    lines = []
    for path in sorted(folder.glob("*.toml")) if folder.is_dir() else ():
        if path.name.startswith("enrollment-834"):
            from fhir_adapter.ingest.x834 import load_834_map

            x834 = load_834_map(path)
            EnrollmentOptions.from_map(x834.cmap)
            lines.append(
                f"extracts/{path.name}: X12 834 enrollment map (CCO from REF*{x834.cco_ref_qualifier})"
            )
            continue
        for kind, fields, options in kinds:
            if path.name.startswith(kind):
                cmap = load_column_map(path, required=fields)
                options(cmap)
                lines.append(
                    f"extracts/{path.name}: {kind} column map ({cmap.format}, {len(cmap.fields)} fields)"
                )
    return lines


__all__ = ["check_mappings", "load_mappings"]
