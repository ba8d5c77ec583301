"""A tiny, safe Markdown-to-HTML converter for the service's own documentation pages.

Only the subset the shipped docs use: ATX headings, paragraphs, ``-``/``*`` and ``1.`` lists
(one level; indented lines continue an item), fenced code blocks, pipe tables, inline code,
``**bold**`` and ``[links](url)``. Everything else is text: every character of the input is
HTML-escaped, links keep only ``http(s)``, relative and ``#`` targets, and HTML comments are
dropped. It is not CommonMark and never runs on user input.
"""

from __future__ import annotations

import re
from html import escape

_INLINE = re.compile(r"`([^`]+)`|\*\*(.+?)\*\*|\[([^\]]+)\]\(([^)\s]+)\)")
_SAFE_URL = re.compile(r"^(?:https?://|/|#|\./|[A-Za-z0-9._-]+(?:/|#|$))")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_BULLET = re.compile(r"^[-*]\s+(.*)$")
_NUMBERED = re.compile(r"^\d+[.)]\s+(.*)$")
_TABLE_RULE = re.compile(r"^\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")


def inline(text: str) -> str:
    """Escaped HTML of one line's inline Markdown."""
    out: list[str] = []
    pos = 0
    for m in _INLINE.finditer(text):
        out.append(escape(text[pos : m.start()]))
        code, bold, label, url = m.groups()
        if code is not None:
            out.append(f"<code>{escape(code)}</code>")
        elif bold is not None:
            out.append(f"<strong>{inline(bold)}</strong>")
        elif _SAFE_URL.match(url):
            out.append(f'<a href="{escape(url, quote=True)}">{inline(label)}</a>')
        else:
            out.append(inline(label))
        pos = m.end()
    out.append(escape(text[pos:]))
    return "".join(out)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def to_html(markdown: str) -> str:
    """The HTML body (no ``<html>`` wrapper) of ``markdown``."""
    lines = markdown.splitlines()
    out: list[str] = []
    paragraph: list[str] = []
    n = 0

    def flush() -> None:
        if paragraph:
            out.append(f"<p>{inline(' '.join(paragraph))}</p>")
            paragraph.clear()

    while n < len(lines):
        line = lines[n]
        stripped = line.strip()
        if stripped.startswith("```"):
            flush()
            body: list[str] = []
            n += 1
            while n < len(lines) and not lines[n].strip().startswith("```"):
                body.append(lines[n])
                n += 1
            out.append(f"<pre><code>{escape(chr(10).join(body))}</code></pre>")
            n += 1
            continue
        if not stripped or stripped.startswith("<!--"):
            flush()
            n += 1
            continue
        heading = _HEADING.match(stripped)
        if heading:
            flush()
            level = len(heading.group(1))
            text = heading.group(2)
            out.append(f'<h{level} id="{_slug(text)}">{inline(text)}</h{level}>')
            n += 1
            continue
        if stripped.startswith("|") and n + 1 < len(lines) and _TABLE_RULE.match(lines[n + 1].strip()):
            flush()
            head = "".join(f"<th>{inline(c)}</th>" for c in _cells(stripped))
            rows = []
            n += 2
            while n < len(lines) and lines[n].strip().startswith("|"):
                rows.append("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in _cells(lines[n])) + "</tr>")
                n += 1
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")
            continue
        if _BULLET.match(stripped) or _NUMBERED.match(stripped):
            flush()
            numbered = bool(_NUMBERED.match(stripped))
            pattern = _NUMBERED if numbered else _BULLET
            items: list[str] = []
            while n < len(lines):
                current = lines[n]
                item = pattern.match(current.strip())
                if item and not current.startswith((" ", "\t")):
                    items.append(item.group(1))
                elif items and current.startswith((" ", "\t")) and current.strip():
                    items[-1] += " " + current.strip()
                else:
                    break
                n += 1
            tag = "ol" if numbered else "ul"
            out.append(f"<{tag}>" + "".join(f"<li>{inline(i)}</li>" for i in items) + f"</{tag}>")
            continue
        paragraph.append(stripped)
        n += 1
    flush()
    return "\n".join(out)


_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;line-height:1.5}"
    "pre{background:#f4f4f4;padding:.75rem;overflow:auto}code{font-size:.9em}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;"
    "vertical-align:top}"
)


def page(markdown: str, title: str) -> str:
    """A complete HTML page for ``markdown``."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>\n"
        f"{to_html(markdown)}\n</body></html>\n"
    )
