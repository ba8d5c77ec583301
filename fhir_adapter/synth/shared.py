"""Pieces both renderers share: cached codings, provider pools, the emit signature.

Cached dicts are shared between resources and never mutated after creation: they are only
serialised (orjson), which keeps the hot path to dictionary literals.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from fhir_adapter.synth import vocab

Resource = dict[str, Any]
#: ``emit(resource_type, resource)`` writes one resource of the current source.
Emit = Callable[[str, Resource], None]
Rand = Callable[[], float]

# Cumulative chances of each system spelling, canonical first (vocab.*_VARIANTS order).
_CPT_CUM: Final = vocab.weights_to_cumulative((70, 12, 6, 12))
_HCPCS_CUM: Final = vocab.weights_to_cumulative((70, 10, 5, 5, 10))
#: ICD spellings: canonical dotted, canonical undotted, OID dotted, https dotted.
_ICD_CUM: Final = (0.72, 0.87, 0.95, 1.0)


def frag(value: Any) -> orjson.Fragment:
    """Pre-serialised JSON for a constant sub-object: orjson copies it instead of re-encoding."""
    return orjson.Fragment(orjson.dumps(value))


def reference(target: str) -> orjson.Fragment:
    """``{"reference": "Type/id"}`` as a fragment (built once per child or span)."""
    return frag({"reference": target})


def is_hcpcs(code: str) -> bool:
    """HCPCS Level II codes start with a letter; CPT codes are numeric."""
    return code[0].isalpha()


@dataclass(frozen=True)
class Codings:
    """CodeableConcepts by (code, spelling), built once per cohort, as JSON fragments."""

    _proc: dict[tuple[str, int], orjson.Fragment] = field(default_factory=dict)
    _icd: dict[tuple[str, int], orjson.Fragment] = field(default_factory=dict)
    _plain: dict[tuple[str, ...], orjson.Fragment] = field(default_factory=dict)

    def proc(self, code: str, x: float) -> orjson.Fragment:
        """A CodeableConcept for a CPT/HCPCS code, system spelling drawn from ``x`` in [0, 1)."""
        hcpcs = is_hcpcs(code)
        variant = bisect.bisect_right(_HCPCS_CUM if hcpcs else _CPT_CUM, x)
        return self.proc_variant(code, variant)

    def proc_variant(self, code: str, variant: int) -> orjson.Fragment:
        key = (code, variant)
        found = self._proc.get(key)
        if found is None:
            systems = vocab.HCPCS_VARIANTS if is_hcpcs(code) else vocab.CPT_VARIANTS
            found = frag({"coding": [{"system": systems[variant], "code": code}]})
            self._proc[key] = found
        return found

    def icd(self, code: str, x: float) -> orjson.Fragment:
        """A CodeableConcept for an ICD-10-CM code, spelling drawn from ``x`` in [0, 1)."""
        variant = bisect.bisect_right(_ICD_CUM, x)
        key = (code, variant)
        found = self._icd.get(key)
        if found is None:
            if variant == 0:
                coding = {"system": vocab.ICD10CM, "code": code}
            elif variant == 1:
                coding = {"system": vocab.ICD10CM, "code": code.replace(".", "")}
            elif variant == 2:
                coding = {"system": vocab.ICD_VARIANTS[1], "code": code}
            else:
                coding = {"system": vocab.ICD_VARIANTS[2], "code": code}
            found = frag({"coding": [coding]})
            self._icd[key] = found
        return found

    def concept(self, system: str, code: str) -> orjson.Fragment:
        """A single-coding CodeableConcept in ``system`` (no display: CPT licence)."""
        key = (system, code)
        found = self._plain.get(key)
        if found is None:
            found = frag({"coding": [{"system": system, "code": code}]})
            self._plain[key] = found
        return found

    def local_and_canonical(self, local: str, code: str) -> orjson.Fragment:
        """One CodeableConcept with the local visit type and the canonical CPT/HCPCS coding."""
        key = ("both", local, code)
        found = self._plain.get(key)
        if found is None:
            system = vocab.HCPCS if is_hcpcs(code) else vocab.CPT
            found = frag(
                {
                    "coding": [
                        {"system": vocab.LOCAL_VISIT_SYSTEM, "code": local},
                        {"system": system, "code": code},
                    ]
                }
            )
            self._plain[key] = found
        return found


@dataclass(frozen=True, slots=True)
class ProviderPool:
    """Practitioners (or billing providers) of one site, with NPIs and display names."""

    prefix: str
    npis: tuple[str, ...]
    names: tuple[tuple[str, str], ...]

    @classmethod
    def build(cls, prefix: str, first_serial: int, size: int) -> ProviderPool:
        npis = tuple(vocab.npi(first_serial + i) for i in range(size))
        names = tuple(
            (
                vocab.FAMILY[(i * 7 + first_serial) % len(vocab.FAMILY)],
                _PROVIDER_GIVEN[i % len(_PROVIDER_GIVEN)],
            )
            for i in range(size)
        )
        return cls(prefix, npis, names)

    def practitioner_id(self, i: int) -> str:
        return f"pr-{self.prefix}-{i + 1:02d}"


_PROVIDER_GIVEN: Final = (
    "Alex",
    "Jordan",
    "Sam",
    "Robin",
    "Casey",
    "Morgan",
    "Taylor",
    "Jamie",
    "Riley",
    "Avery",
)


@dataclass(frozen=True, slots=True)
class Providers:
    """Every provider pool of the cohort; NPI serials never overlap."""

    a: ProviderPool
    b: ProviderPool
    other: ProviderPool
    org_npis_a: tuple[str, ...]
    org_npis_b: tuple[str, ...]

    @classmethod
    def build(cls) -> Providers:
        n = vocab.PRACTITIONERS_PER_EHR
        return cls(
            a=ProviderPool.build("a", 1, n),
            b=ProviderPool.build("b", 1 + n, n),
            other=ProviderPool.build("o", 1 + 2 * n, vocab.OTHER_PROVIDERS),
            org_npis_a=tuple(vocab.npi(900 + i) for i in range(len(vocab.EHR_A[3]))),
            org_npis_b=tuple(vocab.npi(950 + i) for i in range(len(vocab.EHR_B[3]))),
        )

    def pool(self, site: str) -> ProviderPool:
        return self.a if site == "a" else (self.b if site == "b" else self.other)

    def billing_npi(self, site: str, child_index: int, provider: int) -> str:
        """The billing NPI of a claim: the clinic organisation, or the provider itself."""
        if site == "a":
            return self.org_npis_a[child_index % len(self.org_npis_a)]
        if site == "b":
            return self.org_npis_b[child_index % len(self.org_npis_b)]
        return self.other.npis[provider]
