"""``synthesize``: a deterministic synthetic cohort of young OHP children as FHIR R4 NDJSON.

DESIGN.md §2 (``fhir-adapter synthesize --patients N --seed S --out DIR``). Output layout::

    out/oha-claims/     Patient, Coverage, Claim, ExplanationOfBenefit, Organization (CCO payors)
    out/ehr-clinic-a/   Patient, Encounter, Condition, Procedure, ServiceRequest, Organization, Practitioner
    out/ehr-clinic-b/   the same
    out/manifest.json   seed, arguments, counts, tag descriptions and counts, example children

Children are planned and written one at a time (memory stays bounded whatever ``patients``);
each child draws from its own ``random.Random`` seeded by (seed, index), so output depends only
on the arguments: no clock, no uuid, no ``hash()``. Large cohorts are rendered in blocks by
worker processes whose serialised blocks the parent appends in block order, so the bytes do not depend on
the number of workers.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from multiprocessing.pool import AsyncResult
from pathlib import Path
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from fhir_adapter.errors import UsageError
from fhir_adapter.synth import vocab
from fhir_adapter.synth.claims import ClaimsRenderer
from fhir_adapter.synth.ehr import EhrRenderer, ehr_sources
from fhir_adapter.synth.output import NdjsonWriter
from fhir_adapter.synth.plan import TAGS, Child, Setup, child_random, plan_child
from fhir_adapter.synth.shared import Codings, Providers

SOURCES = (vocab.CLAIMS_SOURCE, vocab.EHR_A[0], vocab.EHR_B[0])
MANIFEST = "manifest.json"
#: Children listed in the manifest: every child up to this many, else examples of every tag.
MANIFEST_CHILDREN = 1000
#: Examples kept per tag once the cohort is larger than MANIFEST_CHILDREN.
EXAMPLES_PER_TAG = 12
FORMAT_VERSION = 1
#: Children per block (one unit of work for a worker process, about 20 MB of NDJSON).
BLOCK = 500
#: Below this many children ``workers=None`` renders in-process (start-up would dominate).
PARALLEL_THRESHOLD = 10_000
#: Worker start method: ``spawn`` is safe in threaded callers (a service); tests may use ``fork``.
START_METHOD = "spawn"


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`synthesize` wrote: counts per source folder and resource type, and tags."""

    out_dir: Path
    seed: int
    patients: int
    first_year: int
    last_year: int
    counts: Mapping[str, Mapping[str, int]]
    tag_counts: Mapping[str, int]

    @property
    def total(self) -> int:
        """Resources written, all sources."""
        return sum(n for per_type in self.counts.values() for n in per_type.values())

    def count(self, source: str, resource_type: str) -> int:
        return self.counts.get(source, {}).get(resource_type, 0)

    def __str__(self) -> str:
        per_source = ", ".join(f"{source} {sum(c.values()):,}" for source, c in self.counts.items())
        return (
            f"{self.total:,} resources for {self.patients:,} children "
            f"(seed {self.seed}, {self.first_year}-{self.last_year}): {per_source}"
        )


@dataclass(frozen=True)
class _Arguments:
    seed: int
    patients: int
    first_year: int
    last_year: int
    timezone: str


@dataclass(frozen=True)
class _Job:
    arguments: _Arguments
    start: int
    stop: int


@dataclass(frozen=True)
class _BlockResult:
    """Counts and manifest material of one block of children."""

    counts: dict[str, dict[str, int]]
    #: Serialised NDJSON per source and resource type (worker blocks only).
    data: dict[str, dict[str, bytes]]
    #: (child key, sorted tags, manifest entry) per child, in index order.
    children: list[tuple[str, list[str], dict[str, Any]]]
    payor_reference: bool


class _Cohort:
    """The renderers of one process; stateless between children apart from caches."""

    def __init__(self, arguments: _Arguments) -> None:
        self.arguments = arguments
        self.setup = Setup.build(
            arguments.seed, arguments.patients, arguments.first_year, arguments.last_year, arguments.timezone
        )
        codings = Codings()
        providers = Providers.build()
        self.claims = ClaimsRenderer.build(self.setup.calendar, codings, providers)
        self.ehr = EhrRenderer(self.setup.calendar, codings)
        self.source_a, self.source_b = ehr_sources(providers)

    def render(self, writer: NdjsonWriter, start: int, stop: int) -> _BlockResult:
        emit_claims = writer.emitter(vocab.CLAIMS_SOURCE)
        emit_a = writer.emitter(self.source_a.folder)
        emit_b = writer.emitter(self.source_b.folder)
        seed = self.arguments.seed
        children: list[tuple[str, list[str], dict[str, Any]]] = []
        payor_reference = False
        for index in range(start, stop):
            rng = child_random(seed, index)
            child = plan_child(self.setup, index, rng)
            r = rng.random
            tags = set(child.tags)
            if child.in_claims:
                self.claims.render(child, r, emit_claims, tags)
                payor_reference = payor_reference or child.payor_reference
            if child.in_a:
                self.ehr.render(self.source_a, child, r, emit_a, tags)
            if child.in_b:
                self.ehr.render(self.source_b, child, r, emit_b, tags)
            children.append((child.key, sorted(tags), _manifest_entry(child)))
        return _BlockResult({}, {}, children, payor_reference)

    def write_shared(self, writer: NdjsonWriter, payor_reference: bool) -> None:
        """Organizations and Practitioners last, sorted by id, for sources that have patients."""
        if payor_reference:
            emit = writer.emitter(vocab.CLAIMS_SOURCE)
            for org in self.claims.organizations():
                emit("Organization", org)
        for source in (self.source_a, self.source_b):
            if writer.counts.get(source.folder):
                emit = writer.emitter(source.folder)
                for org in source.organizations():
                    emit("Organization", org)
                for practitioner in source.practitioners():
                    emit("Practitioner", practitioner)


@dataclass(frozen=True)
class ChildRecords:
    """One child's resources per source and type (parsed), and its scenario tags."""

    index: int
    key: str
    tags: tuple[str, ...]
    resources: Mapping[str, Mapping[str, tuple[dict[str, Any], ...]]]


def render_children(
    indices: list[int],
    patients: int,
    seed: int,
    *,
    first_year: int = 2024,
    last_year: int = 2025,
    timezone: str = "America/Los_Angeles",
) -> list[ChildRecords]:
    """The records :func:`synthesize` would write for children ``indices`` of that cohort, in memory.

    For tests that need a child with a given tag without writing a whole cohort (find indices
    with :func:`fhir_adapter.synth.plan.plan_child`). Shared Organizations and Practitioners
    are not included.
    """
    _check_arguments(patients, first_year, last_year, timezone, None)
    cohort = _Cohort(_Arguments(seed, patients, first_year, last_year, timezone))
    out: list[ChildRecords] = []
    for index in indices:
        if not 0 <= index < patients:
            raise UsageError(f"child index {index} is outside 0..{patients - 1}")
        with NdjsonWriter(None) as writer:
            block = cohort.render(writer, index, index + 1)
            data = writer.contents()
        key, tags, _entry = block.children[0]
        resources = {
            source: {
                rtype: tuple(orjson.loads(line) for line in blob.splitlines())
                for rtype, blob in per_type.items()
            }
            for source, per_type in data.items()
        }
        out.append(ChildRecords(index, key, tuple(tags), MappingProxyType(resources)))
    return out


def _run_job(job: _Job) -> _BlockResult:
    """Worker process: render one block into memory."""
    cohort = _Cohort(job.arguments)
    with NdjsonWriter(None) as writer:
        result = cohort.render(writer, job.start, job.stop)
        data = writer.contents()
    counts = {source: dict(per_type) for source, per_type in writer.counts.items() if per_type}
    return _BlockResult(counts, data, result.children, result.payor_reference)


def _parallel_blocks(arguments: _Arguments, n_workers: int) -> Iterator[_BlockResult]:
    """Blocks rendered by worker processes, yielded in index order.

    At most ``2 * n_workers`` blocks are in flight, so memory stays bounded even when writing
    is slower than rendering.
    """
    jobs = deque(
        _Job(arguments, start, min(start + BLOCK, arguments.patients))
        for start in range(0, arguments.patients, BLOCK)
    )
    pending: deque[AsyncResult[_BlockResult]] = deque()
    with multiprocessing.get_context(START_METHOD).Pool(n_workers) as pool:
        while jobs or pending:
            while jobs and len(pending) < 2 * n_workers:
                pending.append(pool.apply_async(_run_job, (jobs.popleft(),)))
            yield pending.popleft().get()


def _default_workers(patients: int) -> int:
    """In-process below PARALLEL_THRESHOLD children or with fewer than 4 CPUs (the parent
    receives and writes every byte, so two CPUs gain nothing), else one worker per spare CPU."""
    if patients < PARALLEL_THRESHOLD:
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return 1 if cpus < 4 else min(cpus - 1, 8)


def synthesize(
    out_dir: Path,
    patients: int,
    seed: int,
    *,
    first_year: int = 2024,
    last_year: int = 2025,
    timezone: str = "America/Los_Angeles",
    workers: int | None = None,
) -> SynthSummary:
    """Write a synthetic cohort of ``patients`` children under ``out_dir``.

    ``workers`` is the number of worker processes (None: in-process unless the cohort has
    ``PARALLEL_THRESHOLD`` children or more and the machine 4 CPUs or more, then one per spare
    CPU, at most 8); output bytes are the same for any value. Existing ``*.ndjson`` files in the three source folders and ``manifest.json``
    are replaced; nothing else in ``out_dir`` is touched. Raises :class:`UsageError` for
    invalid arguments.
    """
    _check_arguments(patients, first_year, last_year, timezone, workers)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for source in SOURCES:
        for old in sorted((out_dir / source).glob("*.ndjson")):
            old.unlink()
    arguments = _Arguments(seed, patients, first_year, last_year, timezone)
    n_workers = _default_workers(patients) if workers is None else workers
    cohort = _Cohort(arguments)
    manifest = _ManifestBuilder(patients)
    payor_reference = False
    with NdjsonWriter(out_dir) as writer:
        if n_workers <= 1 or patients <= BLOCK:
            for start in range(0, patients, BLOCK):
                block = cohort.render(writer, start, min(start + BLOCK, patients))
                manifest.add(block)
                payor_reference = payor_reference or block.payor_reference
        else:
            for block in _parallel_blocks(arguments, n_workers):
                for source, per_type in sorted(block.data.items()):
                    for resource_type, data in sorted(per_type.items()):
                        writer.append(source, resource_type, data, block.counts[source][resource_type])
                manifest.add(block)
                payor_reference = payor_reference or block.payor_reference
        cohort.write_shared(writer, payor_reference)
        counts = {
            source: dict(sorted(per_type.items()))
            for source, per_type in sorted(writer.counts.items())
            if per_type
        }

    tag_counts = dict(sorted(manifest.tag_counts.items()))
    document = {
        "generator": "fhir_adapter.synth",
        "format_version": FORMAT_VERSION,
        "seed": seed,
        "patients": patients,
        "first_year": first_year,
        "last_year": last_year,
        "timezone": timezone,
        "member_id_system": vocab.MEMBER_ID_SYSTEM,
        "cco_system": vocab.CCO_SYSTEM,
        "claim_number_system": vocab.CLAIM_NUMBER_SYSTEM,
        "sources": list(SOURCES),
        "counts": counts,
        "total": sum(n for per_type in counts.values() for n in per_type.values()),
        "tags": TAGS,
        "tag_counts": tag_counts,
        "children": manifest.examples,
    }
    (out_dir / MANIFEST).write_bytes(
        orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE)
    )
    return SynthSummary(
        out_dir=out_dir,
        seed=seed,
        patients=patients,
        first_year=first_year,
        last_year=last_year,
        counts=MappingProxyType({s: MappingProxyType(c) for s, c in counts.items()}),
        tag_counts=MappingProxyType(tag_counts),
    )


class _ManifestBuilder:
    """Tag counts over all children; example children (all up to MANIFEST_CHILDREN, else
    the first EXAMPLES_PER_TAG children of each tag, at most MANIFEST_CHILDREN in all)."""

    def __init__(self, patients: int) -> None:
        self.keep_all = patients <= MANIFEST_CHILDREN
        self.tag_counts: dict[str, int] = {}
        self.examples: dict[str, dict[str, Any]] = {}

    def add(self, block: _BlockResult) -> None:
        counts, examples = self.tag_counts, self.examples
        for key, tags, entry in block.children:
            wanted = self.keep_all or any(counts.get(t, 0) < EXAMPLES_PER_TAG for t in tags)
            for tag in tags:
                counts[tag] = counts.get(tag, 0) + 1
            if wanted and len(examples) < MANIFEST_CHILDREN:
                examples[key] = {"tags": tags, **entry}


def _check_arguments(
    patients: int, first_year: int, last_year: int, timezone: str, workers: int | None
) -> None:
    if patients < 0:
        raise UsageError(f"patients must be >= 0, got {patients}")
    if not 1900 < first_year <= last_year < 9000:
        raise UsageError(f"need 1900 < first_year <= last_year < 9000, got {first_year}..{last_year}")
    if workers is not None and workers < 1:
        raise UsageError(f"workers must be >= 1, got {workers}")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise UsageError(f"unknown time zone {timezone!r}") from exc


def _manifest_entry(child: Child) -> dict[str, Any]:
    patients: dict[str, str] = {}
    if child.in_claims:
        patients[vocab.CLAIMS_SOURCE] = f"Patient/{child.patient_claims}"
    if child.in_a:
        patients[vocab.EHR_A[0]] = f"Patient/{child.patient_a}"
    if child.in_b:
        patients[vocab.EHR_B[0]] = f"Patient/{child.patient_b}"
    entry: dict[str, Any] = {"member_id": child.member_id, "patients": patients}
    if child.enrollment_year is not None:
        entry["enrollment_year"] = child.enrollment_year
    if child.service_years:
        entry["service_years"] = list(child.service_years)
    return entry
