"""Code systems, aliases, local-code crosswalks and value-set matching (spec §3 "Code handling").

Pure: built from :class:`~fhir_adapter.measure.spec.Mappings`, no I/O. Aliases, normalisation
rules and crosswalks are data in ``mappings/``; the only knowledge kept here is that CPT and HCPCS
share one namespace (HCPCS Level I *is* CPT, and payers such as CMS Blue Button send CPT codes
under a HCPCS system), so a CPT or HCPCS coding matches value-set rows of either system.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date

from fhir_adapter.measure.spec import CodeRow, CodeSystem, Mappings, ValueSet

CPT_URI = "http://www.ama-assn.org/go/cpt"
HCPCS_URI = "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
#: Canonical systems matched as one namespace: HCPCS Level I is CPT (CMS HCPCS overview).
SHARED_NAMESPACES: tuple[frozenset[str], ...] = (frozenset({CPT_URI, HCPCS_URI}),)
_CPT_LEVEL_I = re.compile(r"\d{4}[0-9FT]")


def is_cpt_code(canonical: str, code: str) -> bool:
    """A CPT (HCPCS Level I) code, whichever system of the shared namespace files it: such codes
    carry no descriptor text here (AMA copyright, spec §3). Level I codes are five digits or four
    digits and F/T."""
    return canonical == CPT_URI or (canonical == HCPCS_URI and bool(_CPT_LEVEL_I.fullmatch(code)))


def clean_uri(uri: str) -> str:
    """A system URI as compared: surrounding whitespace and trailing slashes removed."""
    return uri.strip().rstrip("/")


def normalise(kind: str, code: str) -> str:
    """Normalise ``code`` by a :attr:`CodeSystem.normalise` kind.

    ``icd``: upper-case, dots and spaces removed (``f43.22`` -> ``F4322``, spec §3 undotted
    ICD-10-CM); ``upper``: stripped and upper-cased; ``none`` (or anything else): stripped.
    """
    if kind == "icd":
        return code.replace(".", "").replace(" ", "").strip().upper()
    if kind == "upper":
        return code.strip().upper()
    return code.strip()


@dataclass(frozen=True)
class CodeMatch:
    """One row of the engine's code-match table: a raw (system, code) pair as stored in facts,
    a value set it falls in, and the validity window of the matched value-set row."""

    raw_system: str
    raw_code: str
    valueset: str
    valid_from: date | None
    valid_to: date | None


_Key = tuple[str, str]  # (namespace, normalised code)
_Hit = tuple[str, int, CodeRow]  # (value-set name, row position, row)


@dataclass(frozen=True)
class _Index:
    exact: Mapping[_Key, tuple[_Hit, ...]]
    prefix: Mapping[_Key, tuple[_Hit, ...]]
    #: namespace -> prefix lengths present, longest first
    prefix_lengths: Mapping[str, tuple[int, ...]]


class Terminology:
    """Resolves raw codings against the code systems, aliases and crosswalks of a
    :class:`Mappings`. Immutable after construction."""

    def __init__(self, mappings: Mappings) -> None:
        self._systems: dict[str, CodeSystem] = dict(mappings.systems)
        aliases: dict[str, str] = {clean_uri(uri): uri for uri in mappings.systems}
        for alias, canonical in mappings.aliases.items():
            if canonical in mappings.systems:
                aliases[clean_uri(alias)] = canonical
        self._aliases = aliases
        namespace = {uri: uri for uri in mappings.systems}
        for group in SHARED_NAMESPACES:
            members = sorted(group & set(mappings.systems))
            for uri in members:
                namespace[uri] = members[0]
        self._namespace = namespace
        local: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
        for lc in mappings.local_codes:
            src = self.canonical_system(lc.system)
            dst = self.canonical_system(lc.target_system)
            if src is None or dst is None:
                continue
            target = (dst, self.normalise_code(dst, lc.target_code))
            key = (src, self.normalise_code(src, lc.code))
            if target not in local[key]:
                local[key].append(target)
        self._local = {k: tuple(v) for k, v in local.items()}

    def canonical_system(self, uri: str) -> str | None:
        """The canonical URI for ``uri`` (itself or an alias), else ``None``."""
        return self._aliases.get(clean_uri(uri))

    def known(self, raw_system: str) -> bool:
        """Whether codes in ``raw_system`` can ever match (unknown systems never match and are
        counted in data quality, spec §3)."""
        return self.canonical_system(raw_system) is not None

    def normalise_code(self, canonical: str, code: str) -> str:
        """``code`` normalised by the rule of the canonical system (stripped when unknown)."""
        system = self._systems.get(canonical)
        return normalise(system.normalise if system else "none", code)

    def translate(self, system: str, code: str) -> list[tuple[str, str]]:
        """The (canonical system, normalised code) pairs a raw coding stands for: itself, then
        the standard codes its local code maps to (``local-codes.csv``). Empty when the system
        is unknown."""
        canonical = self.canonical_system(system)
        if canonical is None:
            return []
        own = (canonical, self.normalise_code(canonical, code))
        if not own[1]:
            return []
        out = [own]
        out.extend(t for t in self._local.get(own, ()) if t not in out)
        return out

    def match(self, raw_system: str, raw_code: str, valueset: ValueSet) -> list[CodeRow]:
        """The rows of ``valueset`` the coding matches (exact or prefix, after translation and
        normalisation), in value-set order."""
        keys = [(self._namespace[s], c) for s, c in self.translate(raw_system, raw_code)]
        if not keys:
            return []
        out: list[CodeRow] = []
        for row in valueset.rows:
            ns = self._namespace.get(row.system)
            if ns is None:
                continue
            for key_ns, code in keys:
                if key_ns == ns and (code == row.code if row.match == "exact" else code.startswith(row.code)):
                    out.append(row)
                    break
        return out

    def expand(self, pairs: Iterable[tuple[str, str]], valuesets: Mapping[str, ValueSet]) -> list[CodeMatch]:
        """The code-match table for the distinct raw (system, code) ``pairs`` found in the
        store: one :class:`CodeMatch` per matched value-set row. Rows are indexed by namespace
        and code (prefix rows by length), so the cost is linear in the pairs."""
        index = self._index(valuesets)
        out: list[CodeMatch] = []
        seen: set[tuple[str, str]] = set()
        for raw_system, raw_code in pairs:
            if (raw_system, raw_code) in seen:
                continue
            seen.add((raw_system, raw_code))
            hits: dict[tuple[str, int], CodeRow] = {}
            for system, code in self.translate(raw_system, raw_code):
                ns = self._namespace[system]
                for name, pos, row in index.exact.get((ns, code), ()):
                    hits[(name, pos)] = row
                for length in index.prefix_lengths.get(ns, ()):
                    if length <= len(code):
                        for name, pos, row in index.prefix.get((ns, code[:length]), ()):
                            hits[(name, pos)] = row
            out.extend(
                CodeMatch(raw_system, raw_code, name, row.valid_from, row.valid_to)
                for (name, _), row in sorted(hits.items(), key=lambda item: item[0])
            )
        return out

    def _index(self, valuesets: Mapping[str, ValueSet]) -> _Index:
        exact: dict[_Key, list[_Hit]] = defaultdict(list)
        prefix: dict[_Key, list[_Hit]] = defaultdict(list)
        lengths: dict[str, set[int]] = defaultdict(set)
        for name, vs in valuesets.items():
            for pos, row in enumerate(vs.rows):
                ns = self._namespace.get(row.system)
                if ns is None:
                    continue
                if row.match == "exact":
                    exact[(ns, row.code)].append((name, pos, row))
                else:
                    prefix[(ns, row.code)].append((name, pos, row))
                    lengths[ns].add(len(row.code))
        return _Index(
            exact={k: tuple(v) for k, v in exact.items()},
            prefix={k: tuple(v) for k, v in prefix.items()},
            prefix_lengths={ns: tuple(sorted(ls, reverse=True)) for ns, ls in lengths.items()},
        )
