"""What each router implements, merged into the one CapabilityStatement at ``/fhir/metadata``.

Every router module exports ``router`` and ``CAPABILITIES`` (a :class:`Contribution`); the app
factory mounts the routers and merges their contributions, and a test checks the merged
statement against the mounted routes, so the statement lists exactly what is implemented.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from fhir_adapter.report.conformance import OperationRef, ResourceCapability, SearchParam


@dataclass(frozen=True)
class Contribution:
    resources: dict[str, ResourceCapability] = field(default_factory=dict)
    #: R4 ``rest.interaction``: transaction, batch, search-system, history-system
    system_interactions: tuple[str, ...] = ()
    system_operations: tuple[OperationRef, ...] = ()


T = TypeVar("T")


def _merge_tuple(a: tuple[T, ...], b: tuple[T, ...]) -> tuple[T, ...]:
    return a + tuple(x for x in b if x not in a)


def merge(parts: Iterable[Contribution]) -> Contribution:
    resources: dict[str, ResourceCapability] = {}
    interactions: tuple[str, ...] = ()
    operations: tuple[OperationRef, ...] = ()
    for part in parts:
        for rtype, cap in part.resources.items():
            old = resources.get(rtype)
            if old is None:
                resources[rtype] = cap
                continue
            params: tuple[SearchParam, ...] = old.search_params + tuple(
                p for p in cap.search_params if p.name not in {q.name for q in old.search_params}
            )
            resources[rtype] = ResourceCapability(
                interactions=_merge_tuple(old.interactions, cap.interactions),
                search_params=params,
                operations=_merge_tuple(old.operations, cap.operations),
                profile=old.profile or cap.profile,
                documentation=old.documentation or cap.documentation,
            )
        interactions = _merge_tuple(interactions, part.system_interactions)
        operations = _merge_tuple(operations, part.system_operations)
    return Contribution(resources, interactions, operations)
