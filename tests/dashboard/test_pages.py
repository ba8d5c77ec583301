"""The dashboard's HTML and downloads without a browser (fastapi TestClient): every panel filled
with the numbers the report library computes for the same selection, selectors, escaping of
hostile strings, small-cell suppression, downloads, sign-in and CCO tenancy."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlencode

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from fhir_adapter import workflow
from fhir_adapter.api.app import create_app
from fhir_adapter.api.dashboard.data import PANELS, data_cut
from fhir_adapter.api.deps import DASHBOARD_COOKIE
from fhir_adapter.api.routes_dashboard import install_dashboard
from fhir_adapter.auth.clients import Registration, register
from fhir_adapter.fhir.dates import from_micros
from fhir_adapter.mappings import load_mappings
from fhir_adapter.report import capacity, dataquality, dual, referrals, trend
from fhir_adapter.report.measurereport import summary_report
from fhir_adapter.report.suppression import DEFAULT_THRESHOLD, extension_url, is_masked, suppress_report
from fhir_adapter.settings import Settings
from fhir_adapter.store.db import Store
from fhir_adapter.store.providers import assignments
from tests.cohorts import coverage, patient
from tests.dashboard.conftest import (
    CLINICS,
    HOSTILE_CCO_NAME,
    HOSTILE_COUNTY,
    HOSTILE_MEMBER,
    IF,
    YEAR,
    DashEnv,
)
from tests.smart import assertion, jwks, key_pair, token_form

FIRST, LAST = date(YEAR, 1, 1), date(YEAR, 12, 31)


# -- helpers ----------------------------------------------------------------------------------------


class Tables(HTMLParser):
    """Cell texts of every ``<table>`` by caption id, and the page's panels' statuses."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.status: dict[str, str] = {}
        self._caption: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._rows: list[list[str]] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section" and a.get("data-status"):
            self.status[str(a.get("id"))] = str(a["data-status"])
        if tag == "table":
            self._rows = []
        elif tag == "caption":
            self._caption = str(a.get("id"))
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "span" and (a.get("aria-hidden") == "true"):
            self._hidden += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self._rows.append(self._row)
            self._row = None
        elif tag == "table" and self._caption is not None:
            self.tables[self._caption.removeprefix("caption-")] = self._rows
            self._caption = None
        elif tag == "span" and self._hidden:
            self._hidden -= 1

    def handle_data(self, data: str) -> None:
        if self._cell is not None and not self._hidden:
            self._cell.append(data)


def parsed(html: str) -> Tables:
    tables = Tables()
    tables.feed(html)
    return tables


def csv_rows(body: bytes) -> list[dict[str, str]]:
    assert body.startswith(b"\xef\xbb\xbf"), "Excel needs the UTF-8 BOM"
    return list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"))))


def number(text: str) -> int | None:
    return int(text) if text not in ("", None) else None


@pytest.fixture(scope="module")
def api(dash_env: DashEnv) -> Iterator[TestClient]:
    """The service (authorisation off) whose dashboard waits for every panel."""
    app = create_app(dash_env.settings)
    install_dashboard(app, wait_seconds=120)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="module")
def lib(dash_env: DashEnv) -> Iterator[Store]:
    store = workflow.open_store(dash_env.settings)
    yield store
    store.close()


def _clock(store: Store) -> Any:
    cut = data_cut(store)
    return lambda: from_micros(cut)


def _today(settings: Settings) -> date:
    return datetime.now(UTC).astimezone(settings.tz).date()


def _table(api: TestClient, name: str, query: str = "", ext: str = "csv") -> Any:
    answer = api.get(f"/dashboard/table/{name}.{ext}?measure={IF}&year={YEAR}{query}")
    assert answer.status_code == 200, answer.text
    return answer


# -- the page ----------------------------------------------------------------------------------------


def test_every_panel_is_present_and_filled(api: TestClient) -> None:
    answer = api.get("/dashboard")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in answer.headers["content-security-policy"]
    assert answer.headers["cache-control"] == "no-store"
    html = answer.text
    assert html.startswith("<!doctype html>") and '<html lang="en">' in html
    assert '<a href="#main" class="skip-link">' in html and '<main id="main" tabindex="-1">' in html
    page = parsed(html)
    assert page.status == {f"panel-{pid}": "ready" for pid, _t in PANELS}
    for name in ("rates", "strata-age", "strata-age-band", "strata-sex", "strata-race-ethnicity", "strata-language",
                 "strata-disability", "strata-county", "trend", "targets", "gaps", "referral-counts", "referrals",
                 "capacity", "reconciliation", "data-quality", "data-quality-sources"):  # fmt: skip
        assert len(page.tables[name]) > 1, name  # a header and rows
        assert (
            f'href="/dashboard/table/{name}.csv?' in html
            and f'href="/dashboard/table/{name}.parquet?' in html
        )
    assert html.count("<caption") == len(page.tables)
    assert 'scope="col"' in html and 'scope="row"' in html and 'scope="colgroup"' in html
    # charts with text alternatives
    assert html.count('role="img"') >= 9
    for chart in re.findall(r'<svg [^>]*aria-labelledby="([^"]+)"', html):
        title, desc = chart.split()
        assert f'<title id="{title}">' in html and f'<desc id="{desc}">' in html
    # every form control has a label
    for control in re.findall(r'<select id="([^"]+)"', html):
        assert f'<label for="{control}">' in html, control


def test_rates_match_the_dual_rates_of_the_library(api: TestClient, dash_env: DashEnv, lib: Store) -> None:
    ours = {(r["group"], r["cco"]): r for r in csv_rows(_table(api, "rates").content)}
    theirs = dual.run_dual_rates(dash_env.settings, lib, IF, FIRST, LAST, clock=_clock(lib))
    assert len(ours) == len(theirs.rows) > 10
    for row in theirs.rows:
        mine = ours[(row.group, row.cco)]
        for mode, rate in (("claims", row.claims), ("all", row.all)):
            assert number(mine[f"{mode}_denominator"]) == rate.denominator, row
            assert number(mine[f"{mode}_exclusions"]) == rate.exclusions, row
            assert number(mine[f"{mode}_numerator"]) == rate.numerator, row
            assert (mine[f"{mode}_rate"] or None) == (None if rate.rate is None else f"{rate.rate:.6f}".rstrip("0").rstrip(".")), row  # fmt: skip
    # the page shows the same statewide numbers
    page = parsed(api.get("/dashboard").text)
    statewide = next(r for r in page.tables["rates"] if r[:2] == ["all-enrolled", "statewide"])
    want = next(r for r in theirs.rows if r.group == "all-enrolled" and r.cco == dual.STATEWIDE)
    assert statewide[2:5] == [
        str(want.claims.denominator),
        str(want.claims.exclusions),
        str(want.claims.numerator),
    ]
    assert statewide[6:9] == [str(want.all.denominator), str(want.all.exclusions), str(want.all.numerator)]


def _suppressed_summary(settings: Settings, store: Store, cco: str | None) -> dict[str, Any]:
    mappings = load_mappings(settings.mappings_dir)
    request = workflow.EvaluationRequest(IF, FIRST, LAST, "all", as_of=_clock(store)())
    ev = workflow.run_evaluation(settings, store, request, evidence=False, mappings=mappings)
    children = [c for c in ev.children if cco is None or c.cco == cco]
    report = summary_report(ev, workflow.report_context(settings, ev.spec.hash), children=children)
    return suppress_report(report, DEFAULT_THRESHOLD, extension_url=extension_url(settings.canonical_base))


@pytest.mark.parametrize(
    "cco", [pytest.param(None, id="statewide"), pytest.param("HEALTH-SHARE", id="one-cco")]
)
def test_strata_are_the_suppressed_summary_report(
    api: TestClient, dash_env: DashEnv, lib: Store, cco: str | None
) -> None:
    rows = csv_rows(_table(api, "strata", f"&cco={cco or 'statewide'}").content)
    ours = {(r["group"], r["stratifier"], r["stratum"]): r for r in rows}
    report = _suppressed_summary(dash_env.settings, lib, cco)
    codes = {"initial-population": "initial_population", "denominator": "denominator",
             "denominator-exclusion": "exclusions", "numerator": "numerator"}  # fmt: skip
    masked_cells = 0
    for group in report["group"]:
        units = [("all", "all children", group)] + [
            (s["id"], str(stratum["value"]["text"]), stratum)
            for s in group["stratifier"]
            if not (cco and s["id"] == "cco")
            for stratum in s["stratum"]
        ]
        for sid, text, unit in units:
            mine = ours.pop((group["id"], sid, text))
            for population in unit["population"]:
                key = codes[population["code"]["coding"][0]["code"]]
                if is_masked(population):
                    masked_cells += 1
                    assert mine[key] == "" and key in mine["suppressed"], (sid, text, key)
                else:
                    assert number(mine[key]) == population["count"], (sid, text, key)
            score = unit.get("measureScore", {}).get("value")
            assert (float(mine["rate"]) if mine["rate"] else None) == score
    assert not ours, "rows the report does not have"
    assert masked_cells > 0
    # no published count is a small cell (1..10)
    for row in rows:
        for key in codes.values():
            if row[key]:
                assert not 1 <= int(row[key]) <= DEFAULT_THRESHOLD - 1, row


def test_suppressed_cells_say_so_on_the_page(api: TestClient) -> None:
    page = parsed(api.get("/dashboard?cco=IHN").text)
    county = page.tables["strata-county"]
    cells = [c for row in county[2:] for c in row[1:]]
    assert "suppressed" in cells
    for c in cells:
        assert c in ("suppressed", "none") or c.endswith("%") or not 1 <= int(c) <= 10, c


def test_gaps_match_the_library_and_filter_by_clinic(api: TestClient, dash_env: DashEnv, lib: Store) -> None:
    settings = dash_env.settings
    mappings = load_mappings(settings.mappings_dir)
    clock = _clock(lib)
    ev = workflow.run_evaluation(settings, lib, workflow.EvaluationRequest(IF, FIRST, LAST, "all", as_of=clock()),
                                 evidence=False, mappings=mappings)  # fmt: skip
    assigned = assignments(lib, ev.as_of, LAST, ccos=mappings.ccos)
    want = workflow.gap_rows(ev, assignments=assigned)
    ours = csv_rows(_table(api, "gaps").content)
    assert [r["patient"] for r in ours] == [r["patient"] for r in want]
    assert {r["clinic"] for r in ours} == {*CLINICS, ""}
    north = csv_rows(_table(api, "gaps", "&clinic=Clinic+North").content)
    assert north and {r["clinic"] for r in north} == {"Clinic North"}
    assert len(north) == sum(1 for r in want if r["clinic"] == "Clinic North")
    unassigned = csv_rows(_table(api, "gaps", "&clinic=unassigned").content)
    assert unassigned and {r["clinic"] for r in unassigned} == {""}
    need = csv_rows(_table(api, "gaps", "&group=identified-need").content)
    assert len(need) == len(workflow.gap_rows(ev, group="identified-need")) < len(ours)
    page = api.get("/dashboard?" + urlencode({"clinic": CLINICS[1], "cco": "statewide"})).text
    assert "Clinic &lt;South&gt; &amp; Co" in page and "Clinic <South>" not in page
    gaps = parsed(page).tables["gaps"]
    assert {row[8] for row in gaps[1:]} == {CLINICS[1]}


def test_trend_matches_run_trend(api: TestClient, dash_env: DashEnv, lib: Store) -> None:
    theirs = trend.run_trend(dash_env.settings, lib, IF, FIRST, LAST, persisted="never", clock=_clock(lib))
    ours = csv_rows(_table(api, "trend").content)
    key = ("kind", "period", "group", "cco", "denominator", "exclusions", "numerator")
    want = sorted(tuple(str(r[k]).replace("all", "statewide") if k == "cco" and r[k] == "all" else str(r[k])
                        for k in key) for r in theirs.rows())  # fmt: skip
    assert sorted(tuple(r[k] for k in key) for r in ours) == want
    targets = csv_rows(_table(api, "targets").content)
    assert len(targets) == len(theirs.targets) > 1
    for mine, their in zip(sorted(targets, key=lambda r: r["cco"]), sorted(theirs.targets, key=lambda r: r["cco"].replace("all", "statewide")), strict=True):  # fmt: skip
        assert (float(mine["rate"]) if mine["rate"] else None) == their["rate"]
        assert (float(mine["baseline"]) if mine["baseline"] else None) == their["baseline"]
        assert float(mine["benchmark"]) == their["benchmark"]


def test_referrals_capacity_and_quality_match_the_library(
    api: TestClient, dash_env: DashEnv, lib: Store
) -> None:
    settings = dash_env.settings
    clock = _clock(lib)
    loop = referrals.run_referral_loop(settings, lib, IF, FIRST, LAST, today=_today(settings), clock=clock)
    ours = csv_rows(_table(api, "referrals").content)
    assert [(r["referral"], r["status"], r["cco"], r["clinic"]) for r in ours] == [
        (r["referral"], r["status"], r["cco"], r["clinic"]) for r in loop.rows
    ]
    assert len(ours) > 10
    cap = capacity.run_capacity(settings, lib, IF, FIRST, LAST, clock=clock)
    summary = csv_rows(_table(api, "capacity").content)
    assert [(r["cco"], r["county"], int(r["providers"]), int(r["children_served"])) for r in summary] == [
        (r["cco"].replace("all", "statewide") if r["cco"] == "all" else r["cco"], r["county"], r["providers"],
         r["children_served"]) for r in cap.summary
    ]  # fmt: skip
    quality = dataquality.run_data_quality(settings, lib, IF, FIRST, LAST, clock=clock)
    checks = csv_rows(_table(api, "data-quality").content)
    assert [(r["check"], r["detail"], int(r["count"])) for r in checks] == [
        (r["check"], r["detail"] or "", r["count"]) for r in dataquality.evaluation_rows(quality.evaluation)
    ]
    sources = csv_rows(_table(api, "data-quality-sources").content)
    assert [r["source"] for r in sources] == [s.source for s in quality.sources]


def test_reconciliation_panel(api: TestClient, dash_env: DashEnv) -> None:
    page = api.get("/dashboard").text
    assert "ihn-2025/summary.json" in page
    rows = csv_rows(_table(api, "reconciliation").content)
    assert {r["population"] for r in rows} >= {"numerator"} and any(
        int(r["only_us"] or 0) + int(r["only_oha"] or 0) for r in rows
    )
    # another CCO has none
    other = api.get("/dashboard?cco=ALLCARE").text
    assert "No reconciliation loaded" in other and "FHIR_ADAPTER_RECONCILIATION_DIR" in other


def test_reconciliation_without_a_folder_says_how(dash_env: DashEnv) -> None:
    settings = dash_env.settings.model_copy(update={"reconciliation_dir": None})
    app = create_app(settings)
    install_dashboard(app, wait_seconds=120)
    with TestClient(app) as client:
        page = client.get("/dashboard").text
    assert "No reconciliation loaded" in page and "fhir-adapter reconcile" in page


# -- selectors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "present", "absent"),
    [
        pytest.param("?cco=IHN", ["IHN"], ["statewide", "ALLCARE"], id="one-cco"),
        pytest.param("?cco=statewide", ["statewide", "ALLCARE", "IHN"], [], id="statewide"),
    ],
)
def test_cco_selector_changes_the_rates(
    api: TestClient, query: str, present: list[str], absent: list[str]
) -> None:
    ccos = {row[1] for row in parsed(api.get(f"/dashboard{query}").text).tables["rates"][2:]}
    assert set(present) <= ccos and not set(absent) & ccos


def test_sources_and_measure_selectors_change_the_content(api: TestClient) -> None:
    claims = api.get("/dashboard?sources=claims").text
    assert "Strata of the summary MeasureReport (claims sources)" in claims
    reach = parsed(api.get("/dashboard?measure=oregon-se-reach").text)
    assert {row[0] for row in reach.tables["rates"][2:]} == {"any", "assessment", "treatment"}
    assert "2024" in api.get("/dashboard?measure=oregon-se-reach").text  # its last year
    quarter = api.get("/dashboard?period=quarter&quarter=2").text
    assert "2025 Q2 (2025-04-01 to 2025-06-30)" in quarter
    rolling = api.get("/dashboard?period=rolling-12&quarter=2").text
    assert "12 months 2024-07-01 to 2025-06-30" in rolling


def test_a_year_the_measure_lacks_falls_back_with_a_note(api: TestClient) -> None:
    page = api.get("/dashboard?measure=oregon-se-reach&year=2025").text
    assert "oregon-se-reach has no measurement year 2025; showing 2024." in page


@pytest.mark.parametrize(
    ("query", "location"),
    [
        pytest.param("?measure=nope", "measure", id="measure"),
        pytest.param("?year=twenty", "year", id="year"),
        pytest.param("?period=decade", "period", id="period"),
        pytest.param("?quarter=5", "quarter", id="quarter"),
        pytest.param("?cco=NOPE", "cco", id="cco"),
        pytest.param("?sources=ehr", "sources", id="sources"),
        pytest.param("?group=nope", None, id="gap-group"),
    ],
)
def test_bad_selections_are_400_pages(api: TestClient, query: str, location: str | None) -> None:
    answer = api.get(f"/dashboard{query}")
    if location is None:  # the gap panel says it; the rest of the page stands
        assert answer.status_code == 200 and "has no group" in answer.text
        return
    assert answer.status_code == 400 and answer.headers["content-type"].startswith("text/html")
    assert f"(parameter {location})" in answer.text


# -- escaping ---------------------------------------------------------------------------------------


def test_hostile_strings_are_shown_as_text(api: TestClient) -> None:
    html = api.get("/dashboard?cco=IHN").text + api.get("/dashboard").text
    for hostile in (HOSTILE_CCO_NAME, HOSTILE_MEMBER, HOSTILE_COUNTY):
        assert hostile not in html
    assert "&lt;script&gt;alert(&quot;cco&quot;)&lt;/script&gt; Yamhill" in html  # the selector
    assert "&lt;script&gt;alert(&quot;member&quot;)&lt;/script&gt;" in html  # the gap list
    assert "&lt;img src=x onerror=alert(1)&gt;" in html  # county strata and charts
    reflected = api.get("/dashboard?cco=%3Cscript%3Ealert(2)%3C/script%3E")
    assert reflected.status_code == 400 and "<script>alert(2)" not in reflected.text
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in reflected.text
    # a hostile clinic filter value is echoed escaped, never as markup
    echoed = api.get('/dashboard?clinic="><script>alert(3)</script>').text
    assert "<script>alert(3)" not in echoed


# -- downloads --------------------------------------------------------------------------------------


def test_downloads_are_excel_csv_and_parquet(api: TestClient) -> None:
    answer = _table(api, "gaps")
    assert answer.headers["content-type"].startswith("text/csv")
    assert answer.content.startswith(b"\xef\xbb\xbfmember_id,patient,")
    assert b"\r\n" in answer.content and b"\n" not in answer.content.replace(b"\r\n", b"")
    assert (
        'filename="gaps-oregon-se-issue-focused-2025-01-01-2025-12-31-statewide-all.csv"'
        in answer.headers["content-disposition"]
    )
    rows = csv_rows(answer.content)
    parquet = _table(api, "gaps", ext="parquet")
    assert parquet.headers["content-type"] == "application/vnd.apache.parquet"
    table = pq.read_table(io.BytesIO(parquet.content))
    assert table.num_rows == len(rows) and table.column_names == list(rows[0])
    assert table.schema.field("age").type == "int64"
    assert table.column("member_id").to_pylist() == [r["member_id"] or None for r in rows]
    strata = pq.read_table(io.BytesIO(_table(api, "strata-age-band", ext="parquet").content))
    assert strata.num_rows >= 3 and strata.schema.field("all-enrolled_rate").type == "double"


@pytest.mark.parametrize(
    ("path", "status"),
    [
        pytest.param("/dashboard/table/nope.csv", 400, id="unknown-table"),
        pytest.param("/dashboard/table/gaps.xlsx", 400, id="unknown-format"),
        pytest.param("/dashboard/table/gaps", 400, id="no-format"),
        pytest.param("/dashboard/table/gaps.csv?cco=NOPE", 400, id="bad-cco"),
        pytest.param("/dashboard/static/nope.css", 404, id="unknown-static"),
    ],
)
def test_download_errors(api: TestClient, path: str, status: int) -> None:
    assert api.get(path).status_code == status


def test_static_files_are_served(api: TestClient) -> None:
    css = api.get("/dashboard/static/dashboard.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    js = api.get("/dashboard/static/dashboard.js")
    assert js.status_code == 200 and "sel-quarter" in js.text


def test_slow_panels_are_pending_then_filled(dash_env: DashEnv) -> None:
    app = create_app(dash_env.settings)
    install_dashboard(app, wait_seconds=0)
    with TestClient(app) as client:
        first = parsed(client.get("/dashboard?period=quarter&quarter=3").text)
        assert "pending" in first.status.values()
        page = client.get("/dashboard?period=quarter&quarter=3").text
        assert "Still computing" in page or "pending" not in parsed(page).status.values()
        app.state.dashboard.wait_seconds = 120
        last = parsed(client.get("/dashboard?period=quarter&quarter=3").text)
        assert set(last.status.values()) == {"ready"}


def test_demo_prints_the_dashboard_hint(dash_env: DashEnv) -> None:
    text = " ".join(dash_env.demo_output.split())
    assert "FHIR_ADAPTER_AUTH_REQUIRED=false fhir-adapter serve --database" in text
    assert "http://127.0.0.1:8080/dashboard" in text


# -- sign-in and tenancy ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def secured(dash_env: DashEnv) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """Authorisation on: the client and access tokens of a CCO (IHN), OHA and an EHR client."""
    settings = dash_env.settings.model_copy(
        update={"auth_required": True, "public_base_url": "http://testserver"}
    )
    app = create_app(settings)
    install_dashboard(app, wait_seconds=120)
    key = key_pair("ES384", "pages")
    store = app.state.adapter.store
    known = {c.id for c in load_mappings(settings.mappings_dir).ccos}
    now = datetime.now(UTC)
    clients = {"cco": ("pages-cco", ("IHN",)), "oha": ("pages-oha", ()), "ehr": ("pages-ehr", ())}
    for role, (client_id, ccos) in clients.items():
        register(store, Registration(client_id, role, source="pages-ehr-src" if role == "ehr" else None, ccos=ccos,
                                     scopes=["system/*.rs"], jwks=jwks(key)), known_ccos=known, now=now)  # fmt: skip
    with TestClient(app, raise_server_exceptions=False) as client:
        tokens = {}
        for role, (client_id, _ccos) in clients.items():
            answer = client.post("/auth/token", data=token_form(assertion(key, client_id), "system/*.rs"))
            assert answer.status_code == 200, answer.text
            tokens[role] = answer.json()["access_token"]
        yield client, tokens


def test_without_a_token_the_page_asks_to_sign_in(secured: tuple[TestClient, dict[str, str]]) -> None:
    client, _tokens = secured
    client.cookies.clear()
    answer = client.get("/dashboard?cco=IHN")
    assert answer.status_code == 401 and answer.headers["www-authenticate"].startswith("Bearer")
    assert 'href="/dashboard/login?next=%2Fdashboard%3Fcco%3DIHN"' in answer.text
    assert client.get("/dashboard/table/gaps.csv").status_code == 401
    form = client.get("/dashboard/login?next=/dashboard?cco=IHN")
    assert form.status_code == 200 and '<label for="token">Access token</label>' in form.text
    assert 'name="next" value="/dashboard?cco=IHN"' in form.text
    evil = client.get("/dashboard/login?next=https://evil.example/")
    assert 'name="next" value="/dashboard"' in evil.text
    assert client.get("/dashboard/static/dashboard.css").status_code == 200


def test_a_cco_session_sees_only_its_cco(secured: tuple[TestClient, dict[str, str]]) -> None:
    client, tokens = secured
    client.cookies.clear()
    answer = client.post(
        "/dashboard/login", data={"token": tokens["cco"], "next": "/dashboard"}, follow_redirects=False
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/dashboard"
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"{DASHBOARD_COOKIE}=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Path=/dashboard" in cookie and "Max-Age=" in cookie
    page = client.get("/dashboard")
    assert page.status_code == 200 and "Signed in as pages-cco (role cco, CCOs IHN)" in page.text
    options = re.findall(r'<select id="sel-cco" name="cco">(.*?)</select>', page.text, re.S)[0]
    assert re.findall(r'value="([^"]+)"', options) == ["IHN"]
    tables = parsed(page.text).tables
    assert {row[1] for row in tables["rates"][2:]} == {"IHN"}
    assert {row[3] for row in tables["gaps"][1:]} == {"IHN"}
    for name in ("gaps", "referrals", "capacity", "trend", "targets", "rates"):
        rows = csv_rows(client.get(f"/dashboard/table/{name}.csv").content)
        assert rows and {r["cco"] for r in rows} == {"IHN"}, name
    assert "data-quality-sources" not in tables and "ihn-2025/summary.json" in page.text
    assert client.get("/dashboard?cco=ALLCARE").status_code == 400
    assert client.get("/dashboard?cco=statewide").status_code == 400
    assert client.get("/dashboard/table/gaps.csv?cco=ALLCARE").status_code == 400
    # the cookie authenticates dashboard reads only
    assert client.get("/fhir/Patient").status_code == 401
    signed_out = client.post("/dashboard/logout", follow_redirects=False)
    assert signed_out.status_code == 303 and f'{DASHBOARD_COOKIE}=""' in signed_out.headers["set-cookie"]


def test_oha_sees_every_cco_and_scripts_may_send_the_header(
    secured: tuple[TestClient, dict[str, str]],
) -> None:
    client, tokens = secured
    client.cookies.clear()
    headers = {"Authorization": f"Bearer {tokens['oha']}"}
    page = client.get("/dashboard", headers=headers)
    assert page.status_code == 200 and "statewide" in parsed(page.text).tables["rates"][-1]
    rows = csv_rows(client.get("/dashboard/table/rates.csv", headers=headers).content)
    assert {"IHN", "ALLCARE", "statewide"} <= {r["cco"] for r in rows}


@pytest.mark.parametrize(
    ("token", "headers", "status", "says"),
    [
        pytest.param("ehr", {}, 403, "may not use the dashboard", id="ehr-role"),
        pytest.param("garbage", {}, 401, "This token cannot sign in", id="invalid-token"),
        pytest.param("", {}, 400, "Paste an access token", id="empty"),
        pytest.param(
            "cco", {"Origin": "https://evil.example"}, 403, "must be sent from this server", id="csrf"
        ),
    ],
)
def test_sign_in_refusals(
    secured: tuple[TestClient, dict[str, str]], token: str, headers: dict[str, str], status: int, says: str
) -> None:
    client, tokens = secured
    client.cookies.clear()
    answer = client.post("/dashboard/login", data={"token": tokens.get(token, token)}, headers=headers,
                         follow_redirects=False)  # fmt: skip
    assert answer.status_code == status and says in answer.text
    assert "set-cookie" not in answer.headers


def test_an_ehr_token_cannot_read_the_dashboard(secured: tuple[TestClient, dict[str, str]]) -> None:
    client, tokens = secured
    client.cookies.clear()
    answer = client.get("/dashboard", headers={"Authorization": f"Bearer {tokens['ehr']}"})
    assert answer.status_code == 403 and "runs no measure evaluations" in answer.text


# -- both engines -------------------------------------------------------------------------------------


def test_dashboard_on_each_engine(settings: Settings, store: Store, mappings: Any) -> None:
    """A tiny cohort on the parametrised store (SQLite and PostgreSQL): the page renders and its
    rates are the engine's."""
    from fhir_adapter.ingest.runner import ingest_items
    from fhir_adapter.store.db import ParsedResource

    resources = [patient("d1", "2021-05-01"), coverage("c1", "d1", "2024-01-01", None, cco="IHN"),
                 patient("d2", "2022-05-01"), coverage("c2", "d2", "2024-01-01", None, cco="IHN")]  # fmt: skip
    items = [ParsedResource(r["resourceType"], r["id"], r) for r in resources]
    ingest_items(store, items, "t", batch_size=100)
    app = create_app(settings.model_copy(update={"auth_required": False}), store=store)
    install_dashboard(app, wait_seconds=120)
    with TestClient(app) as client:
        page = client.get("/dashboard?cco=IHN")
        assert page.status_code == 200
        rates = parsed(page.text)
        assert set(rates.status.values()) == {"ready"}
        row = next(r for r in rates.tables["rates"] if r[:2] == ["all-enrolled", "IHN"])
        assert row[6:9] == ["2", "0", "0"]


def test_an_empty_store_renders_every_panel(settings: Settings, tmp_path: Any) -> None:
    empty = settings.model_copy(
        update={"auth_required": False, "database_url": f"sqlite:///{tmp_path / 'empty.db'}"}
    )
    app = create_app(empty)
    install_dashboard(app, wait_seconds=120)
    with TestClient(app) as client:
        answer = client.get("/dashboard")
        assert answer.status_code == 200
        page = parsed(answer.text)
        assert set(page.status.values()) == {"ready"}
        assert "no data loaded" in answer.text
        assert page.tables["gaps"][1] == ["No rows for this selection."]
        assert csv_rows(client.get("/dashboard/table/gaps.csv").content) == []


def test_the_dashboard_never_starts_another_tenants_selection(api: TestClient) -> None:
    from fhir_adapter.api.dashboard.selection import Selection
    from fhir_adapter.auth.policy import EvaluationScope
    from fhir_adapter.errors import ForbiddenError

    dash = api.app.state.dashboard  # type: ignore[attr-defined]
    for cco in (None, "ALLCARE"):
        with pytest.raises(ForbiddenError):
            dash.start(Selection(IF, "year", YEAR, 4, cco, "all"), EvaluationScope(("IHN",)), unrestricted=False,
                       today=date(2026, 11, 23))  # fmt: skip


def test_the_cookie_is_secure_behind_https(dash_env: DashEnv) -> None:
    base = "https://adapter.example"
    settings = dash_env.settings.model_copy(update={"auth_required": True, "public_base_url": base})
    app = create_app(settings)
    key = key_pair("ES384", "https")
    register(app.state.adapter.store, Registration("https-oha", "oha", scopes=["system/*.rs"], jwks=jwks(key)),
             known_ccos={"IHN"}, now=datetime.now(UTC))  # fmt: skip
    with TestClient(app, base_url=base) as client:
        form = token_form(assertion(key, "https-oha", aud=f"{base}/auth/token"), "system/*.rs")
        token = client.post("/auth/token", data=form).json()["access_token"]
        answer = client.post("/dashboard/login", data={"token": token}, headers={"Origin": base},
                             follow_redirects=False)  # fmt: skip
    assert answer.status_code == 303
    assert "Secure" in answer.headers["set-cookie"] and "HttpOnly" in answer.headers["set-cookie"]
