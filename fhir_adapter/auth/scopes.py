"""SMART scopes for Backend Services, normalised to sets of (resource type, permission).

SMART App Launch 2.2, "Scopes and Launch Context", § "Scopes for requesting FHIR Resources":
``system/<type | *>.<permissions>``, where v2 permissions are an in-order subset of ``cruds``
(``c`` create, ``r`` read/vread/history, ``u`` update/patch, ``d`` delete, ``s`` search) and the
v1 forms map as ``.read`` ⇒ ``.rs``, ``.write`` ⇒ ``.cud``, ``.*`` ⇒ ``.cruds`` (the same section,
"for backwards compatibility"). "Scope Equivalence": ``Observation.rs`` is ``Observation.r
Observation.s``, so a scope set is a set of single permissions and grants compare as sets.

Not supported, refused with a message (RFC 6749 §5.2 ``invalid_scope`` at the token endpoint):
granular ``?param=value`` constraints (§ "Finer-grained resource constraints using search
parameters"), ``patient/`` and ``user/`` scopes (no launch context in Backend Services), other
scopes (``openid``, ``launch``, ``offline_access``: Backend Services issue no refresh tokens),
unknown resource types and out-of-order or undefined permission strings (the section lets a
server reject them).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from fhir_adapter.errors import UsageError
from fhir_adapter.fhir.resources import R4_RESOURCE_TYPES

#: SMART v2 permissions in their defined order.
PERMISSIONS = "cruds"
#: v1 permission names ⇒ v2 permission strings.
V1_TO_V2 = {"read": "rs", "write": "cud", "*": "cruds"}
_V2_TO_V1 = {v2: v1 for v1, v2 in V1_TO_V2.items()}
_V2_RE = re.compile(r"^c?r?u?d?s?$")
_SCOPE_RE = re.compile(r"^(?P<context>[a-z]+)/(?P<type>[A-Za-z]+|\*)\.(?P<perms>[A-Za-z*]+)$")
WILDCARD = "*"

Grant = tuple[str, str]


@dataclass(frozen=True)
class ParsedScope:
    """One ``system/…`` scope: a resource type (or ``*``), its permissions in ``cruds`` order,
    and whether it was written in the v1 syntax."""

    resource_type: str
    permissions: str
    v1: bool

    @property
    def grants(self) -> frozenset[Grant]:
        return frozenset((self.resource_type, p) for p in self.permissions)


def parse_scope(token: str) -> ParsedScope:
    """Parse one scope; :class:`UsageError` naming the scope and what is wrong with it."""
    if "?" in token:
        raise UsageError(f"scope {token!r}: granular constraints ('?param=value') are not supported")
    match = _SCOPE_RE.match(token)
    if match is None:
        raise UsageError(f"scope {token!r} is not supported: only system/<type or *>.<permissions> scopes")
    context, rtype, perms = match.group("context", "type", "perms")
    if context != "system":
        raise UsageError(f"scope {token!r}: only system/ scopes are supported (SMART Backend Services)")
    if rtype != WILDCARD and rtype not in R4_RESOURCE_TYPES:
        raise UsageError(f"scope {token!r}: {rtype!r} is not an R4 resource type")
    if perms in V1_TO_V2:
        return ParsedScope(rtype, V1_TO_V2[perms], v1=True)
    if perms and _V2_RE.match(perms):
        return ParsedScope(rtype, perms, v1=False)
    raise UsageError(
        f"scope {token!r}: permissions {perms!r} are neither an in-order subset of 'cruds' "
        "nor one of read, write, *"
    )


def split_scopes(text: str) -> list[str]:
    """Scope tokens of an OAuth ``scope`` value (RFC 6749 §3.3: space-delimited), duplicates dropped."""
    seen: dict[str, None] = {}
    for token in text.split(" "):
        if token:
            seen.setdefault(token, None)
    return list(seen)


@dataclass(frozen=True)
class ScopeSet:
    """A normalised set of grants ``(resource type or "*", one permission letter)``: a grant on
    a type is dropped when the wildcard grants the same permission."""

    grants: frozenset[Grant] = frozenset()

    def __post_init__(self) -> None:
        wild = {p for t, p in self.grants if t == WILDCARD}
        normal = frozenset((t, p) for t, p in self.grants if t == WILDCARD or p not in wild)
        object.__setattr__(self, "grants", normal)

    @classmethod
    def parse(cls, text: str) -> ScopeSet:
        """The grants of a space-separated scope string (v1 and v2 forms may be mixed)."""
        grants: set[Grant] = set()
        for token in split_scopes(text):
            grants |= parse_scope(token).grants
        return cls(frozenset(grants))

    @classmethod
    def everything(cls) -> ScopeSet:
        return cls(frozenset((WILDCARD, p) for p in PERMISSIONS))

    def allows(self, resource_type: str, permission: str) -> bool:
        if len(permission) != 1 or permission not in PERMISSIONS:
            raise ValueError(f"permission must be one of {PERMISSIONS!r}, not {permission!r}")
        return (WILDCARD, permission) in self.grants or (resource_type, permission) in self.grants

    def __and__(self, other: ScopeSet) -> ScopeSet:
        """The grants both sets allow: ``system/*.rs`` ∩ ``system/Encounter.cruds`` is
        ``system/Encounter.rs``."""
        out: set[Grant] = set()
        for rtype, perm in self.grants:
            if rtype == WILDCARD:
                out |= {(t, p) for t, p in other.grants if p == perm}
            elif other.allows(rtype, perm):
                out.add((rtype, perm))
        return ScopeSet(frozenset(out))

    def __bool__(self) -> bool:
        return bool(self.grants)

    def __iter__(self) -> Iterator[Grant]:
        return iter(sorted(self.grants))

    def render(self, *, v1: bool = False) -> str:
        """The shortest scope string ("Scope Equivalence" recommends factored forms), wildcard
        first; with ``v1``, a type whose permissions are exactly ``rs``, ``cud`` or ``cruds`` is
        written ``.read``, ``.write`` or ``.*`` (2.2: servers SHOULD return v1 scopes when v1
        scopes were requested)."""
        return " ".join(_render(self.grants, v1=v1))


def _render(grants: Iterable[Grant], *, v1: bool) -> list[str]:
    by_type: dict[str, set[str]] = {}
    for rtype, perm in grants:
        by_type.setdefault(rtype, set()).add(perm)
    out = []
    for rtype in sorted(by_type, key=lambda t: (t != WILDCARD, t)):
        perms = "".join(p for p in PERMISSIONS if p in by_type[rtype])
        if v1 and perms in _V2_TO_V1:
            perms = _V2_TO_V1[perms]
        out.append(f"system/{rtype}.{perms}")
    return out


def grant(requested: str, allowed: ScopeSet) -> tuple[ScopeSet, str]:
    """Requested ∩ allowed (SMART App Launch 2.2 Backend Services, "Evaluate Requested Access":
    the server SHALL assure that the scope requested is within the scope pre-authorised to the
    client). Returns the grants and the ``scope`` string to answer, each requested scope
    rendered in the syntax (v1 or v2) it was asked in. Malformed scopes raise
    :class:`UsageError`; an empty result is the caller's ``invalid_scope``."""
    total: set[Grant] = set()
    parts: dict[str, None] = {}
    for token in split_scopes(requested):
        parsed = parse_scope(token)
        got = ScopeSet(parsed.grants) & allowed
        total |= got.grants
        for part in _render(got.grants, v1=parsed.v1):
            parts.setdefault(part, None)
    granted = ScopeSet(frozenset(total))
    # Drop parts that parts kept before them cover (e.g. "system/Encounter.rs" after "system/*.rs");
    # wildcard parts first, so they are the ones kept.
    kept: list[str] = []
    covered = ScopeSet()
    for part in sorted(parts, key=lambda q: not q.startswith(f"system/{WILDCARD}.")):
        mine = parse_scope(part).grants
        if not all(covered.allows(t, p) for t, p in mine):
            kept.append(part)
            covered = ScopeSet(covered.grants | mine)
    return granted, " ".join(kept)
