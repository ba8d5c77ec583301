"""NDJSON output: one file per (source folder, resource type), one resource per line.

Lines are ``orjson`` dumps (compact, UTF-8, insertion-ordered keys), so equal inputs give
byte-identical files. FHIR NDJSON: http://hl7.org/fhir/R4/ndjson.html.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

import orjson

from fhir_adapter.synth.shared import Emit, Resource

_BUFFER = 1 << 20
_FLUSH_LINES = 1024


class NdjsonWriter:
    """Writes NDJSON files under ``root``, or into memory when ``root`` is None.

    Lines are collected per file and written in chunks of ``_FLUSH_LINES`` (one write call per
    chunk instead of per resource); files open on first flush. Use as a context manager:
    :meth:`close` flushes.
    """

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self._handles: dict[str, dict[str, BinaryIO]] = {}
        self._pending: dict[str, dict[str, list[bytes]]] = {}
        self._counts: dict[str, dict[str, int]] = {}

    def __enter__(self) -> NdjsonWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def counts(self) -> dict[str, dict[str, int]]:
        """Resources written so far per source and type (pending lines included)."""
        out: dict[str, dict[str, int]] = {}
        for source, per_type in self._pending.items():
            done = self._counts.get(source, {})
            out[source] = {rtype: done.get(rtype, 0) + len(lines) for rtype, lines in per_type.items()}
        return out

    def _handle(self, source: str, resource_type: str) -> BinaryIO:
        handles = self._handles.setdefault(source, {})
        handle = handles.get(resource_type)
        if handle is None:
            if self.root is None:
                handle = io.BytesIO()
            else:
                folder = self.root / source
                folder.mkdir(parents=True, exist_ok=True)
                handle = open(folder / f"{resource_type}.ndjson", "wb", buffering=_BUFFER)  # noqa: SIM115
            handles[resource_type] = handle
        return handle

    def _flush(self, source: str, resource_type: str) -> None:
        lines = self._pending[source][resource_type]
        if lines:
            self._handle(source, resource_type).write(b"".join(lines))
            counts = self._counts.setdefault(source, {})
            counts[resource_type] = counts.get(resource_type, 0) + len(lines)
            lines.clear()

    def emitter(self, source: str) -> Emit:
        """An ``emit(resource_type, resource)`` writing into ``source``'s folder."""
        pending = self._pending.setdefault(source, {})
        dumps = orjson.dumps
        option = orjson.OPT_APPEND_NEWLINE
        flush = self._flush

        def emit(resource_type: str, resource: Resource) -> None:
            lines = pending.get(resource_type)
            if lines is None:
                lines = pending[resource_type] = []
            lines.append(dumps(resource, option=option))
            if len(lines) >= _FLUSH_LINES:
                flush(source, resource_type)

        return emit

    def append(self, source: str, resource_type: str, data: bytes, lines: int) -> None:
        """Append ``lines`` already serialised resources (a worker's block) to a file."""
        self._flush_all()
        self._pending.setdefault(source, {}).setdefault(resource_type, [])
        self._handle(source, resource_type).write(data)
        counts = self._counts.setdefault(source, {})
        counts[resource_type] = counts.get(resource_type, 0) + lines

    def contents(self) -> dict[str, dict[str, bytes]]:
        """In-memory mode: the bytes written so far per source and resource type."""
        self._flush_all()
        out: dict[str, dict[str, bytes]] = {}
        for source, handles in self._handles.items():
            for resource_type, handle in handles.items():
                if isinstance(handle, io.BytesIO):
                    out.setdefault(source, {})[resource_type] = handle.getvalue()
        return out

    def _flush_all(self) -> None:
        for source, per_type in self._pending.items():
            for resource_type in per_type:
                self._flush(source, resource_type)

    def close(self) -> None:
        self._flush_all()
        for handles in self._handles.values():
            for handle in handles.values():
                handle.close()
        self._handles.clear()
