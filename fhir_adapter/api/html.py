"""A tiny HTML builder that escapes everything it is not told is markup.

The dashboard (:mod:`fhir_adapter.api.routes_dashboard`) renders its pages on the server with
these helpers instead of a template engine: every text and attribute value goes through
:func:`html.escape` (``quote=True``) unless it is already :class:`Html` built by these helpers, so
a CCO name, a clinic or a patient id holding ``<script>`` is shown as text, never run.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping

#: Elements without content or end tag (HTML Living Standard, "void elements").
VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}
)


class Html(str):
    """Markup: text that is already safe HTML (made by :func:`el`, :func:`esc` or :func:`raw`)."""

    __slots__ = ()


def esc(value: object) -> Html:
    """``value`` as HTML text: ``None`` is empty, :class:`Html` is kept, anything else escaped."""
    if value is None:
        return Html("")
    if isinstance(value, Html):
        return value
    return Html(html.escape(str(value), quote=True))


def raw(markup: str) -> Html:
    """Trust ``markup`` as HTML (only for markup this program built, such as an SVG chart)."""
    return Html(markup)


def _name(key: str) -> str:
    """``class_`` -> ``class``, ``aria_label`` -> ``aria-label``, ``data_x`` -> ``data-x``."""
    return key.rstrip("_").replace("_", "-")


def attributes(values: Mapping[str, object]) -> Html:
    """`` name="value"`` pairs; ``True`` gives a bare attribute, ``None``/``False`` none."""
    parts: list[str] = []
    for key, value in values.items():
        if value is None or value is False:
            continue
        name = _name(key)
        parts.append(f" {name}" if value is True else f' {name}="{esc(value)}"')
    return Html("".join(parts))


def _children(children: Iterable[object]) -> Iterable[Html]:
    for child in children:
        if child is None:
            continue
        if isinstance(child, str | int | float):
            yield esc(child)
        elif isinstance(child, Iterable):
            yield from _children(child)
        else:
            yield esc(child)


def el(tag: str, *children: object, **attrs: object) -> Html:
    """``<tag attrs>children</tag>``: children are escaped text, :class:`Html` or iterables of
    them (lists from comprehensions); attribute names as in :func:`attributes`."""
    opening = f"<{tag}{attributes(attrs)}>"
    if tag in VOID:
        return Html(opening)
    return Html(opening + "".join(_children(children)) + f"</{tag}>")


def join(parts: Iterable[object], separator: str = "") -> Html:
    """Concatenate escaped parts."""
    return Html(esc(separator).join(_children(parts)))


__all__ = ["VOID", "Html", "attributes", "el", "esc", "join", "raw"]
