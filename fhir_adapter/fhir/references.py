"""FHIR references: relative, absolute, versioned, contained and ``urn:uuid``.

FHIR R4 §2.3.0 (References): a literal reference is relative ``Type/id``, absolute
``http…/Type/id``, may carry ``/_history/n``, points into ``contained`` with ``#id``, or (inside
a Bundle) names an entry's ``fullUrl`` such as ``urn:uuid:…``. Resolution against stored data
happens at query time; this module only parses.
"""

from __future__ import annotations

import re
from typing import Any

_ID = r"[A-Za-z0-9\-\.]{1,64}"
_REL_RE = re.compile(rf"(?:^|/)([A-Z][A-Za-z]+)/({_ID})(?:/_history/[^/]+)?$")


def parse_reference(
    ref: object, bundle_ids: dict[str, tuple[str, str]] | None = None
) -> tuple[str, str] | None:
    """Return ``(type, id)`` for a literal reference string, or ``None``.

    ``bundle_ids`` maps a Bundle entry's ``fullUrl`` (for instance ``urn:uuid:…``) to the
    ``(type, id)`` of that entry, so intra-bundle references resolve whatever their form.
    """
    if not isinstance(ref, str) or not ref:
        return None
    if bundle_ids is not None:
        hit = bundle_ids.get(ref)
        if hit is not None:
            return hit
    if ref.startswith(("#", "urn:")):
        return None
    m = _REL_RE.search(ref)
    if not m:
        return None
    return m.group(1), m.group(2)


def reference_target(
    element: object, bundle_ids: dict[str, tuple[str, str]] | None = None
) -> tuple[str, str] | None:
    """``(type, id)`` of a Reference element (a dict with ``reference``), else ``None``."""
    if not isinstance(element, dict):
        return None
    return parse_reference(element.get("reference"), bundle_ids)


def reference_id(element: Any, expected_type: str) -> str | None:
    """The id of a Reference element when it points at ``expected_type``; else ``None``."""
    target = reference_target(element)
    if target is None or target[0] != expected_type:
        return None
    return target[1]
