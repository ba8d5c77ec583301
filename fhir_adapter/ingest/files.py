"""Read FHIR R4 files: NDJSON (Bulk Data ``application/fhir+ndjson``, optionally gzipped) and
Bundle JSON (FHIR R4 §2.36 Bundle), streaming line by line.

A bad line is reported as ``file:line`` with the reason and skipped; good lines are kept.
Inside a Bundle, ``fullUrl`` references (``urn:uuid:…`` or absolute) are rewritten to
``Type/id`` before storing, and ``request.method = DELETE`` entries become deletions.
"""

from __future__ import annotations

import codecs
import gzip
import io
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from fhir_adapter.errors import UsageError
from fhir_adapter.fhir.references import parse_reference
from fhir_adapter.fhir.resources import ID_RE, check_resource, json_problem
from fhir_adapter.store.db import ParsedResource

_PEEK = 1 << 20
SUFFIXES = (".ndjson", ".ndjson.gz", ".jsonl", ".jsonl.gz", ".json", ".json.gz")


@dataclass(frozen=True)
class LineError:
    location: str
    message: str


Item = ParsedResource | LineError


def expand_paths(paths: list[Path]) -> list[Path]:
    """Files named directly, and the FHIR files inside named folders (sorted, recursive)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(SUFFIXES)))
        elif path.is_file():
            files.append(path)
        else:
            raise UsageError(f"{path}: no such file or folder")
    return files


def _open(path: Path) -> IO[bytes]:
    raw = path.open("rb")
    if path.name.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw)  # type: ignore[return-value]
    return raw


def _is_ndjson(path: Path, head: bytes) -> bool:
    name = path.name.removesuffix(".gz")
    if name.endswith((".ndjson", ".jsonl")):
        return True
    # A .json file holding one resource per line is NDJSON too.
    first = head.lstrip().split(b"\n", 1)
    return len(first) > 1 and first[1].strip().startswith(b"{") and first[0].rstrip().endswith(b"}")


def read_file(
    path: Path, on_bytes: Callable[[int], None] | None = None, max_line_bytes: int | None = None
) -> Iterator[Item]:
    """Yield parsed resources and line errors from one file, in file order; an NDJSON line longer
    than ``max_line_bytes`` is a line error (and is never held in memory whole)."""
    with _open(path) as stream:
        # A buffer large enough that peek() sees past a long first line.
        buffered = io.BufferedReader(stream, buffer_size=_PEEK)  # type: ignore[type-var]
        head = buffered.peek(_PEEK)[:_PEEK]
        if head.startswith(codecs.BOM_UTF8):  # RFC 8259 §8.1: a parser MAY ignore it (Windows editors)
            buffered.read(len(codecs.BOM_UTF8))
            if on_bytes:
                on_bytes(len(codecs.BOM_UTF8))
            head = head[len(codecs.BOM_UTF8) :]
        if _is_ndjson(path, head):
            yield from _read_ndjson(path, buffered, on_bytes, max_line_bytes)
        else:
            data = buffered.read()
            if on_bytes:
                on_bytes(len(data))
            yield from _read_json(path, data)


def _read_ndjson(
    path: Path, stream: IO[bytes], on_bytes: Callable[[int], None] | None, max_line_bytes: int | None
) -> Iterator[Item]:
    for number, line in enumerate(bounded_lines(stream, max_line_bytes), start=1):
        if isinstance(line, LongLine):
            if on_bytes:
                on_bytes(line.read)
            yield LineError(f"{path}:{number}", line.message)
            continue
        if on_bytes:
            on_bytes(len(line))
        yield from parse_ndjson_line(line, f"{path}:{number}")


@dataclass(frozen=True)
class LongLine:
    """An NDJSON line over the limit, skipped without holding it in memory."""

    #: bytes of the line, its line end excluded
    size: int
    #: bytes consumed, line end included
    read: int
    limit: int

    @property
    def message(self) -> str:
        return f"{TOO_LONG}{self.size} bytes, the limit is {self.limit} (setting max_ndjson_line_bytes); not read"


#: How the message of a :class:`LongLine` error starts.
TOO_LONG = "line too long: "


def _content_length(line: bytes) -> int:
    return len(line) - (2 if line.endswith(b"\r\n") else 1 if line.endswith(b"\n") else 0)


def bounded_lines(stream: IO[bytes] | Iterable[bytes], limit: int | None) -> Iterator[bytes | LongLine]:
    """The lines of ``stream``, each a :class:`LongLine` instead when longer than ``limit`` bytes
    (line end excluded). A stream with ``readline`` is read at most ``limit`` + 2 bytes at a time,
    so an endless line never fills memory; other iterables are checked line by line."""
    if limit is None:
        yield from stream
        return
    readline = getattr(stream, "readline", None)
    if readline is None:
        for whole in stream:
            size = _content_length(whole)
            yield LongLine(size, len(whole), limit) if size > limit else whole
        return
    while True:
        line: bytes = readline(limit + 2)
        if not line:
            return
        if line.endswith(b"\n") or len(line) < limit + 2:
            size = _content_length(line)
            yield LongLine(size, len(line), limit) if size > limit else line
            continue
        read, ending = len(line), 0
        while True:
            chunk: bytes = readline(1 << 20)
            read += len(chunk)
            if not chunk or chunk.endswith(b"\n"):
                ending = len(chunk) - _content_length(chunk)
                break
        yield LongLine(read - ending, read, limit)


def parse_ndjson_line(line: bytes, location: str) -> Iterator[Item]:
    """The resource of one NDJSON line (nothing for a blank line; the entries of a Bundle line),
    or a :class:`LineError` at ``location`` saying why it cannot be stored. Pure."""
    if not line.strip():
        return
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        yield LineError(location, f"not JSON: {exc}")
        return
    problem = json_problem(value, line) or check_resource(value)
    if problem:
        yield LineError(location, problem)
        return
    if value["resourceType"] == "Bundle":
        yield from _bundle_entries(location, value)
        return
    yield ParsedResource(value["resourceType"], value["id"], value, raw=line.rstrip(b"\r\n"))


def _read_json(path: Path, data: bytes) -> Iterator[Item]:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        yield LineError(f"{path}:{_line_of(data, exc.pos)}", f"not JSON: {exc.msg}")
        return
    deep = json_problem(value, data)
    if deep:
        yield LineError(f"{path}:1", deep)
        return
    if isinstance(value, dict) and value.get("resourceType") == "Bundle":
        yield from _bundle_entries(f"{path}:1", value)
        return
    problem = check_resource(value)
    if problem:
        yield LineError(f"{path}:1", problem)
        return
    yield ParsedResource(value["resourceType"], value["id"], value)


def _line_of(data: bytes, pos: int) -> int:
    return data.count(b"\n", 0, max(pos, 0)) + 1


def rewrite_references(value: Any, ids: Mapping[str, tuple[str, str]]) -> Any:
    """A copy of ``value`` whose ``Reference.reference`` strings naming a Bundle entry's
    ``fullUrl`` (a key of ``ids``) become ``Type/id`` (FHIR R4 bundle.html#references
    "Resolving references in Bundles"; http.html#transaction processing rules). Pure."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "reference" and isinstance(item, str) and item in ids:
                rtype, rid = ids[item]
                out[key] = f"{rtype}/{rid}"
            else:
                out[key] = rewrite_references(item, ids)
        return out
    if isinstance(value, list):
        return [rewrite_references(item, ids) for item in value]
    return value


def _bundle_entries(location: str, bundle: dict[str, Any]) -> Iterator[Item]:
    """Entries of a Bundle (any type). Ids missing on ``urn:uuid`` entries take the uuid."""
    entries = bundle.get("entry")
    if not isinstance(entries, list):
        yield LineError(location, "Bundle has no entry list")
        return
    ids: dict[str, tuple[str, str]] = {}
    resolved: list[tuple[int, dict[str, Any], dict[str, Any]]] = []
    for index, entry in enumerate(entries):
        where = f"{location} (Bundle.entry[{index}])"
        if not isinstance(entry, dict):
            yield LineError(where, "entry is not an object")
            continue
        request: dict[str, Any] = entry["request"] if isinstance(entry.get("request"), dict) else {}
        if request.get("method") == "DELETE":
            target = parse_reference(request.get("url"))
            if target is None:
                yield LineError(where, f"cannot delete {request.get('url')!r}")
            else:
                yield ParsedResource(
                    target[0], target[1], {"resourceType": target[0], "id": target[1]}, deleted=True
                )
            continue
        resource = entry.get("resource")
        if isinstance(resource, dict) and "id" not in resource:
            full_url = entry.get("fullUrl")
            if isinstance(full_url, str) and full_url.startswith("urn:uuid:"):
                candidate = full_url.removeprefix("urn:uuid:")
                if ID_RE.match(candidate):
                    resource = {**resource, "id": candidate}
            elif isinstance(full_url, str) and full_url:
                named = parse_reference(full_url)
                new_id = named[1] if named else uuid.uuid5(uuid.NAMESPACE_URL, full_url).hex
                resource = {**resource, "id": new_id}
        problem = check_resource(resource)
        if problem:
            yield LineError(where, problem)
            continue
        assert isinstance(resource, dict)
        full_url = entry.get("fullUrl")
        if isinstance(full_url, str) and full_url:
            ids[full_url] = (resource["resourceType"], resource["id"])
        resolved.append((index, request, resource))
    for _index, _request, resource in resolved:
        rewritten = rewrite_references(resource, ids) if ids else resource
        yield ParsedResource(rewritten["resourceType"], rewritten["id"], rewritten)
