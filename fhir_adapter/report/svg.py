"""Pure SVG charts with text alternatives: horizontal bar charts and line charts.

Used by the dashboard (:mod:`fhir_adapter.api.routes_dashboard`); no JavaScript, no external
assets. Accessibility follows WAI "Images Tutorial: Complex Images" and SVG 2 / WAI-ARIA Graphics:
the ``<svg>`` has ``role="img"`` and ``aria-labelledby`` naming its ``<title>`` (short name) and
``<desc>`` (every value in words), each data mark has its own ``<title>``, series differ by line
pattern and marker as well as colour (WCAG 1.4.1 "Use of Color"), and every colour on white has a
contrast of at least 4.5:1 (text) or 3:1 (graphics, WCAG 1.4.11). The dashboard shows the same
numbers in a table next to each chart.

Every text is escaped with :func:`html.escape`; ``chart_id`` must be an HTML id (letters, digits,
``-`` and ``_``).
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

#: Series colours (contrast on white ≥ 4.5:1) and their dash patterns and markers.
COLOURS = ("#1f5fa8", "#a64b00", "#2e7031", "#6a1b9a", "#8a1538", "#00616b")
DASHES = ("", "6 3", "2 3", "8 3 2 3", "4 4", "1 2")
MARKERS = ("circle", "square", "diamond", "triangle", "circle", "square")
REFERENCE_COLOURS = ("#3d3d3d", "#b00020")
REFERENCE_DASHES = ("8 4", "3 3")
TEXT = "#1a1a1a"
GRID = "#c8c8c8"
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"
_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
LABEL_CHARS = 30


def percent(value: float) -> str:
    """A rate as a percentage with one decimal (``0.0953`` -> ``9.5%``)."""
    return f"{value * 100:.1f}%"


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _check_id(chart_id: str) -> None:
    if not _ID.match(chart_id):
        raise ValueError(f"chart id {chart_id!r} is not an HTML id")


def _short(label: str) -> str:
    return label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "…"


def nice_max(value: float) -> float:
    """The smallest of 1, 2, 2.5 or 5 times a power of ten that is ≥ ``value`` (1 for 0)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= value - 1e-12:
            return float(step * power)
    return float(10 * power)  # pragma: no cover - the loop always returns


def _ticks(top: float, count: int = 4) -> list[float]:
    return [top * i / count for i in range(count + 1)]


def _open(chart_id: str, width: int, height: int, title: str, desc: str) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'aria-labelledby="{chart_id}-title {chart_id}-desc" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" font-family="{_e(FONT)}" font-size="12">',
        f'<title id="{chart_id}-title">{_e(title)}</title>',
        f'<desc id="{chart_id}-desc">{_e(desc)}</desc>',
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
    ]


# -- bar charts -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    """One bar: ``value`` ``None`` draws none and shows ``note`` (e.g. ``suppressed``)."""

    label: str
    value: float | None
    note: str = "no value"


def bar_chart(
    bars: Sequence[Bar],
    *,
    chart_id: str,
    title: str,
    description: str,
    fmt: Callable[[float], str] = percent,
    max_value: float | None = None,
    width: int = 560,
) -> str:
    """A horizontal bar chart: one row per bar, label left, value right of the bar."""
    _check_id(chart_id)
    label_w, value_w, row_h, top, bottom = 190, 80, 24, 8, 30
    plot_w = max(width - label_w - value_w, 60)
    height = top + row_h * max(len(bars), 1) + bottom
    known = [b.value for b in bars if b.value is not None]
    scale = max_value if max_value is not None else nice_max(max(known, default=0.0))
    words = "; ".join(f"{b.label}: {fmt(b.value) if b.value is not None else b.note}" for b in bars)
    out = _open(
        chart_id, width, height, title, f"{description} {words}." if bars else f"{description} No data."
    )
    axis_y = top + row_h * max(len(bars), 1)
    for tick in _ticks(scale):
        x = label_w + plot_w * (tick / scale if scale else 0)
        out.append(
            f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{axis_y}" stroke="{GRID}" stroke-width="1"/>'
        )
        out.append(
            f'<text x="{x:.1f}" y="{axis_y + 16}" text-anchor="middle" fill="{TEXT}" aria-hidden="true">'
            f"{_e(fmt(tick))}</text>"
        )
    if not bars:
        out.append(f'<text x="{label_w}" y="{top + 16}" fill="{TEXT}">No data</text>')
    for i, bar in enumerate(bars):
        y = top + i * row_h
        mid = y + row_h / 2 + 4
        shown = fmt(bar.value) if bar.value is not None else bar.note
        out.append(f"<g><title>{_e(bar.label)}: {_e(shown)}</title>")
        out.append(
            f'<text x="{label_w - 8}" y="{mid:.1f}" text-anchor="end" fill="{TEXT}">{_e(_short(bar.label))}</text>'
        )
        if bar.value is not None:
            w = plot_w * min(max(bar.value / scale if scale else 0.0, 0.0), 1.0)
            out.append(
                f'<rect x="{label_w}" y="{y + 4}" width="{w:.1f}" height="{row_h - 8}" fill="{COLOURS[0]}"/>'
            )
            out.append(f'<text x="{label_w + w + 6:.1f}" y="{mid:.1f}" fill="{TEXT}">{_e(shown)}</text>')
        else:
            out.append(
                f'<text x="{label_w + 6}" y="{mid:.1f}" fill="{TEXT}" font-style="italic">{_e(shown)}</text>'
            )
        out.append("</g>")
    out.append(
        f'<line x1="{label_w}" y1="{top}" x2="{label_w}" y2="{axis_y}" stroke="{TEXT}" stroke-width="1"/>'
    )
    out.append("</svg>")
    return "\n".join(out)


# -- line charts ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    """One line: a value (or ``None``: a gap) per x label."""

    name: str
    values: Sequence[float | None]


@dataclass(frozen=True)
class Reference:
    """A horizontal line across the plot, such as a benchmark."""

    name: str
    value: float


def _marker(kind: str, x: float, y: float, colour: str) -> str:
    if kind == "square":
        return f'<rect x="{x - 4:.1f}" y="{y - 4:.1f}" width="8" height="8" fill="{colour}"/>'
    if kind == "diamond":
        return f'<path d="M{x:.1f} {y - 5:.1f} L{x + 5:.1f} {y:.1f} L{x:.1f} {y + 5:.1f} L{x - 5:.1f} {y:.1f} Z" fill="{colour}"/>'
    if kind == "triangle":
        return f'<path d="M{x:.1f} {y - 5:.1f} L{x + 5:.1f} {y + 4:.1f} L{x - 5:.1f} {y + 4:.1f} Z" fill="{colour}"/>'
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{colour}"/>'


def line_chart(
    x_labels: Sequence[str],
    series: Sequence[Series],
    *,
    chart_id: str,
    title: str,
    description: str,
    references: Sequence[Reference] = (),
    fmt: Callable[[float], str] = percent,
    width: int = 560,
    height: int = 260,
) -> str:
    """Lines over categorical x labels, with horizontal reference lines and a legend below."""
    _check_id(chart_id)
    for s in series:
        if len(s.values) != len(x_labels):
            raise ValueError(f"series {s.name!r} has {len(s.values)} values for {len(x_labels)} labels")
    legend_items = [s.name for s in series] + [r.name for r in references]
    legend_h = 20 * len(legend_items)
    left, right, top, bottom = 56, 16, 12, 34
    plot_w = width - left - right
    plot_h = height - top - bottom
    total_h = height + legend_h
    values = [v for s in series for v in s.values if v is not None] + [r.value for r in references]
    scale = nice_max(max(values, default=0.0))
    words = []
    for s in series:
        points = ", ".join(
            f"{label} {fmt(v) if v is not None else 'no value'}"
            for label, v in zip(x_labels, s.values, strict=True)
        )
        words.append(f"{s.name}: {points}")
    words += [f"{r.name}: {fmt(r.value)}" for r in references]
    desc = f"{description} " + ("; ".join(words) + "." if words else "No data.")
    out = _open(chart_id, width, total_h, title, desc)

    def x_at(i: int) -> float:
        return left + (plot_w * (i + 0.5) / len(x_labels) if x_labels else 0)

    def y_at(v: float) -> float:
        return top + plot_h * (1 - min(max(v / scale, 0.0), 1.0))

    for tick in _ticks(scale):
        y = y_at(tick)
        out.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="{GRID}" stroke-width="1"/>'
        )
        out.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="{TEXT}" aria-hidden="true">{_e(fmt(tick))}</text>'
        )
    for i, label in enumerate(x_labels):
        out.append(
            f'<text x="{x_at(i):.1f}" y="{top + plot_h + 18}" text-anchor="middle" fill="{TEXT}" aria-hidden="true">'
            f"{_e(label)}</text>"
        )
    out.append(
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="{TEXT}" stroke-width="1"/>'
    )
    for n, ref in enumerate(references):
        colour, dash = (
            REFERENCE_COLOURS[n % len(REFERENCE_COLOURS)],
            REFERENCE_DASHES[n % len(REFERENCE_DASHES)],
        )
        y = y_at(ref.value)
        out.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="{colour}" '
            f'stroke-width="2" stroke-dasharray="{dash}"><title>{_e(ref.name)}: {_e(fmt(ref.value))}</title></line>'
        )
    for n, s in enumerate(series):
        colour, dash, marker = COLOURS[n % len(COLOURS)], DASHES[n % len(DASHES)], MARKERS[n % len(MARKERS)]
        runs: list[list[tuple[float, float]]] = [[]]
        for i, v in enumerate(s.values):
            if v is None:
                runs.append([])
            else:
                runs[-1].append((x_at(i), y_at(v)))
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        for run in runs:
            if len(run) > 1:
                d = " ".join(f"{'M' if k == 0 else 'L'}{x:.1f} {y:.1f}" for k, (x, y) in enumerate(run))
                out.append(f'<path d="{d}" fill="none" stroke="{colour}" stroke-width="2.5"{dash_attr}/>')
        for i, v in enumerate(s.values):
            if v is not None:
                out.append(
                    f"<g><title>{_e(s.name)}, {_e(x_labels[i])}: {_e(fmt(v))}</title>"
                    f"{_marker(marker, x_at(i), y_at(v), colour)}</g>"
                )
    y0 = height + 4
    for n, name in enumerate(legend_items):
        y = y0 + 20 * n
        if n < len(series):
            colour, dash, marker = (
                COLOURS[n % len(COLOURS)],
                DASHES[n % len(DASHES)],
                MARKERS[n % len(MARKERS)],
            )
            width_attr = "2.5"
        else:
            k = n - len(series)
            colour, dash, marker = REFERENCE_COLOURS[k % 2], REFERENCE_DASHES[k % 2], ""
            width_attr = "2"
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + 32}" y2="{y:.1f}" stroke="{colour}" '
            f'stroke-width="{width_attr}"{dash_attr} aria-hidden="true"/>'
        )
        if marker:
            out.append(_marker(marker, left + 16, y, colour))
        out.append(
            f'<text x="{left + 40}" y="{y + 4:.1f}" fill="{TEXT}" aria-hidden="true">{_e(name)}</text>'
        )
    out.append("</svg>")
    return "\n".join(out)


__all__ = ["COLOURS", "Bar", "Reference", "Series", "bar_chart", "line_chart", "nice_max", "percent"]
