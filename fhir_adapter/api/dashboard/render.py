"""The dashboard's HTML, built with :mod:`fhir_adapter.api.html` (everything escaped).

Accessibility (WCAG 2.2 AA): ``lang``, a skip link, one ``h1`` and an ``h2`` per panel in
labelled ``section`` landmarks, a labelled control for every selector in a plain GET form (works
without JavaScript, nothing changes before "Show" is pressed, WCAG 3.2.2), tables with
``caption``, ``th scope`` and two-level headers where columns are grouped, wide tables in a
focusable labelled scroll region, charts with text alternatives (:mod:`fhir_adapter.report.svg`)
next to the same numbers as a table, status messages in ``role="status"``, colours with at least
4.5:1 contrast and a visible focus outline (``static/dashboard.css``). No external assets.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlencode

from fhir_adapter.api.dashboard.data import Column, Panel, TableData
from fhir_adapter.api.dashboard.selection import (
    KIND_LABELS,
    KINDS,
    SOURCE_LABELS,
    SOURCE_MODES,
    Options,
    Selection,
)
from fhir_adapter.api.html import Html, el, esc, raw
from fhir_adapter.report.svg import percent

BASE = "/dashboard"
STATIC = f"{BASE}/static"
TITLE = "Social-emotional health measures: dashboard"


def document(title: str, *body: object, banner: object = None) -> Html:
    """The page skeleton: language, viewport, stylesheet, script, skip link, header, main."""
    return Html(
        "<!doctype html>\n"
        + el(
            "html",
            el(
                "head",
                el("meta", charset="utf-8"),
                el("meta", name="viewport", content="width=device-width, initial-scale=1"),
                el("title", title),
                el("link", rel="stylesheet", href=f"{STATIC}/dashboard.css"),
                el("script", src=f"{STATIC}/dashboard.js", defer=True),
            ),
            el(
                "body",
                el("a", "Skip to main content", href="#main", class_="skip-link"),
                el("header", el("p", "fhir-adapter", class_="brand"), banner, class_="site"),
                el("main", *body, id="main", tabindex="-1"),
                el(
                    "footer",
                    el(
                        "p",
                        "Rates use the project's candidate code lists and default rules (status 'assumption'), "
                        "not OHA's official specification, until an official specification is loaded.",
                    ),
                    class_="site",
                ),
            ),
            lang="en",
        )
    )


def visually_hidden(text: str) -> Html:
    return el("span", text, class_="visually-hidden")


# -- cells and tables -----------------------------------------------------------------------------


def cell_text(value: Any, column: Column, suppressed: bool) -> Html:
    if value is None or value == "":
        if suppressed:
            return el("span", "suppressed", class_="suppressed")
        return Html(el("span", "–", aria_hidden="true") + visually_hidden("none"))
    if column.kind == "rate":
        return esc(percent(float(value)))
    if column.kind == "bool":
        return esc("yes" if value else "no")
    if column.kind == "number":
        return esc(f"{float(value):g}")
    return esc(value)


def table_url(name: str, ext: str, selection: Selection) -> str:
    return f"{BASE}/table/{name}.{ext}?{selection.query()}"


def _links(table: TableData, selection: Selection) -> list[Html]:
    links = [
        el(
            "a",
            label,
            visually_hidden(f" of {table.caption}"),
            href=table_url(table.name, ext, selection),
            download=f"{table.name}.{ext}",
            data_table=table.name,
            data_format=ext,
        )
        for ext, label in (("csv", "CSV"), ("parquet", "Parquet"))
    ]
    return [links[0], Html(" · "), links[1]]


def download_links(table: TableData, selection: Selection) -> Html:
    return el("p", "Download this table: ", _links(table, selection), class_="downloads")


def table_html(table: TableData, selection: Selection) -> Html:
    rows = table.rows if table.shown is None else table.rows[: table.shown]
    caption = table.caption
    if len(rows) < len(table.rows):
        caption += f" (first {len(rows)} of {len(table.rows)} rows; the download has all)"
    caption_id = f"caption-{table.name}"
    columns = tuple(c for c in table.columns if c.page)
    head: list[Html] = []
    if table.column_groups:
        top: list[Html] = []
        second: list[Html] = []
        index = 0
        for label, span in table.column_groups:
            grouped = columns[index : index + span]
            index += span
            if label is None:
                top += [el("th", c.label, scope="col", rowspan="2", class_=_cls(c)) for c in grouped]
            else:
                top.append(el("th", label, scope="colgroup", colspan=str(span)))
                second += [el("th", c.label, scope="col", class_=_cls(c)) for c in grouped]
        head.append(el("tr", top))
        head.append(el("tr", second))
    else:
        head.append(el("tr", [el("th", c.label, scope="col", class_=_cls(c)) for c in columns]))
    body: list[Html] = []
    for row in rows:
        hidden = row.get("_suppressed") or set()
        cells = []
        for c in columns:
            content = cell_text(row.get(c.key), c, c.key in hidden)
            if c.key == table.row_header:
                cells.append(el("th", content, scope="row", class_=_cls(c)))
            else:
                cells.append(el("td", content, class_=_cls(c)))
        body.append(el("tr", cells))
    if not rows:
        body.append(el("tr", el("td", "No rows for this selection.", colspan=str(len(columns)))))
    drawn = Html(
        el(
            "div",
            el("table", el("caption", caption, id=caption_id), el("thead", head), el("tbody", body)),
            class_="table-wrap",
            role="region",
            aria_labelledby=caption_id,
            tabindex="0",
        )
        + download_links(table, selection)
    )
    if table.collapsed:
        return el(
            "details", el("summary", f"{table.caption} ({len(table.rows)} rows)"), drawn, class_="folded"
        )
    return drawn


def _cls(column: Column) -> str | None:
    if column.kind in ("int", "rate", "number"):
        return "num"
    return "wrap" if column.kind == "longtext" else None


# -- panels ---------------------------------------------------------------------------------------


def gap_filter(panel: Panel, selection: Selection) -> Html:
    hidden = [
        el("input", type="hidden", name=k, value=v)
        for k, v in selection.params(clinic=None, group=None).items()
    ]
    group_options = [
        el("option", f"{title} ({gid})", value=gid, selected=(gid == (selection.group or panel.groups[0][0])))
        for gid, title in panel.groups
    ]
    clinic_options = [el("option", "Every clinic", value="", selected=selection.clinic is None)]
    clinic_options += [el("option", c, value=c, selected=(c == selection.clinic)) for c in panel.clinics]
    return el(
        "form",
        hidden,
        el("label", "Group", for_="gap-group"),
        el("select", group_options, id="gap-group", name="group"),
        el("label", "Clinic", for_="gap-clinic"),
        el("select", clinic_options, id="gap-clinic", name="clinic"),
        el("button", "Filter the gap list", type="submit"),
        method="get",
        action=f"{BASE}#panel-gaps",
        class_="filter",
        aria_label="Gap list filter",
    )


def panel_html(panel: Panel, selection: Selection, reload_url: str) -> Html:
    heading_id = f"panel-{panel.id}-h"
    parts: list[object] = [el("h2", panel.title, id=heading_id)]
    if panel.status == "pending":
        parts.append(
            el(
                "p",
                panel.message,
                " ",
                el("a", "Reload the page", href=reload_url),
                class_="pending",
                role="status",
            )
        )
    elif panel.status == "error":
        parts.append(el("p", panel.message, class_="error", role="alert"))
    else:
        if panel.intro:
            parts.append(el("p", panel.intro, class_="intro"))
        if panel.message:
            parts.append(el("p", panel.message, class_="message", role="status"))
        if panel.facts:
            parts.append(
                el("dl", [el("div", el("dt", k), el("dd", v)) for k, v in panel.facts], class_="facts")
            )
        if panel.id == "gaps" and panel.groups:
            parts.append(gap_filter(panel, selection))
        for table in panel.tables:
            for chart in panel.charts.get(table.name, []):
                parts.append(el("div", raw(chart), class_="chart"))
            if table.download_only:
                parts.append(el("p", f"{table.caption}: ", _links(table, selection), class_="download-only"))
                continue
            parts.append(table_html(table, selection))
        if panel.notes:
            parts.append(el("ul", [el("li", n) for n in panel.notes], class_="notes"))
    return el(
        "section",
        parts,
        id=f"panel-{panel.id}",
        class_="panel",
        aria_labelledby=heading_id,
        data_status=panel.status,
    )


# -- the selector form ----------------------------------------------------------------------------


def _select(name: str, label: str, options: Iterable[tuple[str, str, dict[str, str]]], chosen: str) -> Html:
    field_id = f"sel-{name}"
    return el(
        "div",
        el("label", label, for_=field_id),
        el(
            "select",
            [
                el("option", text, value=value, selected=(value == chosen), **extra)
                for value, text, extra in options
            ],
            id=field_id,
            name=name,
        ),
        class_="field",
    )


def selector_form(selection: Selection, opts: Options) -> Html:
    years = sorted({y for ys in opts.years.values() for y in ys})
    return el(
        "form",
        el(
            "fieldset",
            el("legend", "What to show"),
            _select(
                "measure",
                "Measure",
                [
                    (m, f"{title} ({m})", {"data_years": " ".join(map(str, opts.years[m]))})
                    for m, title in opts.measures
                ],
                selection.measure,
            ),
            _select("period", "Period", [(k, KIND_LABELS[k], {}) for k in KINDS], selection.kind),
            _select("year", "Year", [(str(y), str(y), {}) for y in years], str(selection.year)),
            _select(
                "quarter",
                "Quarter (quarter and rolling 12 months)",
                [(str(q), f"Q{q}", {}) for q in (1, 2, 3, 4)],
                str(selection.quarter),
            ),
            _select("cco", "CCO", [(v, label, {}) for v, label in opts.ccos], selection.cco or "statewide"),
            _select(
                "sources", "Sources", [(m, SOURCE_LABELS[m], {}) for m in SOURCE_MODES], selection.sources
            ),
            el("div", el("button", "Show", type="submit"), class_="field actions"),
        ),
        method="get",
        action=BASE,
        class_="selectors",
        aria_label="Selection",
    )


def dashboard_page(
    selection: Selection,
    opts: Options,
    panels: Sequence[Panel],
    *,
    status: Sequence[tuple[str, str]],
    who: Html,
    notices: Sequence[str] = (),
) -> Html:
    reload_url = f"{BASE}?{selection.query()}"
    nav = el(
        "nav",
        el("ul", [el("li", el("a", p.title, href=f"#panel-{p.id}")) for p in panels]),
        aria_label="Panels",
        class_="panels-nav",
    )
    body: list[object] = [
        el("h1", TITLE),
        selector_form(selection, opts),
    ]
    if notices:
        body.append(el("div", [el("p", n) for n in notices], class_="notice", role="status"))
    body.append(el("dl", [el("div", el("dt", k), el("dd", v)) for k, v in status], class_="status"))
    body.append(nav)
    body += [panel_html(p, selection, reload_url) for p in panels]
    title = f"{selection.measure} {selection.period_label}, {selection.scope_label}: dashboard"
    return document(title, *body, banner=who)


def who_html(description: str, *, can_sign_out: bool) -> Html:
    parts: list[object] = [el("span", description)]
    if can_sign_out:
        parts.append(
            el(
                "form",
                el("button", "Sign out", type="submit"),
                method="post",
                action=f"{BASE}/logout",
                class_="signout",
            )
        )
    return el("div", parts, class_="who")


def login_page(*, message: str = "", error: str = "", auth_required: bool, next_url: str = BASE) -> Html:
    body: list[object] = [el("h1", "Sign in to the dashboard")]
    if not auth_required:
        body.append(
            el(
                "p",
                "Authorisation is off on this server (development or sandbox): no sign-in is needed. ",
                el("a", "Open the dashboard", href=BASE),
            )
        )
        return document("Sign in: dashboard", *body)
    if error:
        body.append(el("p", error, class_="error", role="alert", id="login-error"))
    if message:
        body.append(el("p", message, class_="message", role="status"))
    body.append(
        el(
            "p",
            "Paste an access token of your client. Get one from the token endpoint ",
            el("code", "POST /auth/token"),
            " with a client assertion signed by your client's key (SMART Backend Services), for example with ",
            el("code", "fhir-adapter clients token CLIENT_ID --key PRIVATE-JWKS.json --url https://HOST"),
            ". The token is kept in a cookie only this dashboard reads, until it expires (at most 5 minutes).",
        )
    )
    body.append(
        el(
            "form",
            el("input", type="hidden", name="next", value=next_url),
            el("div", el("label", "Access token", for_="token"), class_="field"),
            el(
                "textarea",
                id="token",
                name="token",
                rows="6",
                cols="60",
                required=True,
                spellcheck="false",
                autocomplete="off",
                aria_describedby="login-error" if error else None,
            ),
            el("div", el("button", "Sign in", type="submit"), class_="field actions"),
            method="post",
            action=f"{BASE}/login",
            class_="login",
        )
    )
    return document("Sign in: dashboard", *body)


def error_page(status: int, message: str, *, location: str | None = None) -> Html:
    detail = f" (parameter {location})" if location else ""
    return document(
        f"Error {status}: dashboard",
        el("h1", f"The dashboard cannot show this ({status})"),
        el("p", message + detail, class_="error", role="alert"),
        el("p", el("a", "Back to the dashboard", href=BASE)),
    )


def login_url(next_url: str) -> str:
    return f"{BASE}/login?{urlencode({'next': next_url})}"


__all__ = [
    "BASE",
    "dashboard_page",
    "document",
    "error_page",
    "login_page",
    "login_url",
    "panel_html",
    "selector_form",
    "table_html",
    "who_html",
]
