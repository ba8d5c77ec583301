"""The dashboard in a real browser (Debian's Chromium driven by Playwright) against the service
under uvicorn: panels filled with the library's numbers, selectors, the gap filter, downloads,
a CCO's cookie session, keyboard use, and screenshots in ``tests/dashboard/screenshots/``."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from fhir_adapter import workflow
from fhir_adapter.api.dashboard.data import PANELS, data_cut
from fhir_adapter.cli import main
from fhir_adapter.fhir.dates import from_micros
from fhir_adapter.report import dual
from tests.dashboard.conftest import CCO_CLIENT, CHROMIUM_ARGS, CLINICS, IF, YEAR, AuthServer, DashEnv

SCREENSHOTS = Path(__file__).parent / "screenshots"


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Browser]:
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def _context(browser: Browser, **options: object) -> BrowserContext:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True, **options)  # type: ignore[arg-type]
    context.set_default_timeout(30_000)
    return context


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = _context(browser)
    yield context.new_page()
    context.close()


def open_dashboard(page: Page, url: str, panels: tuple[str, ...] = ()) -> None:
    """Load ``url`` and reload until no panel (of ``panels``, default every one) is still computing."""
    deadline = time.monotonic() + 60
    pending = (
        ", ".join(f"section#panel-{p}[data-status=pending]" for p in panels)
        or "section.panel[data-status=pending]"
    )
    while True:
        page.goto(url)
        if page.locator(pending).count() == 0:
            return
        assert time.monotonic() < deadline, "panels still computing after 60 s"
        page.wait_for_timeout(500)


def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def cells(page: Page, table: str, column: int) -> list[str]:
    """The texts of one column of a table's body rows (``table``: its download name)."""
    rows = page.locator(f"table:has(caption#caption-{table}) tbody tr")
    return [row.locator("th, td").nth(column).inner_text().strip() for row in rows.all()]


def test_every_panel_is_filled_with_the_library_numbers(page: Page, live_url: str, dash_env: DashEnv) -> None:
    open_dashboard(page, f"{live_url}/dashboard")
    expect(page).to_have_title(f"{IF} {YEAR}, statewide (every CCO): dashboard")
    for pid, title in PANELS:
        section = page.locator(f"section#panel-{pid}")
        expect(section).to_have_attribute("data-status", "ready")
        expect(section.locator("h2")).to_have_text(title)
        assert section.locator("table tbody tr").count() > 0, pid
    assert page.locator("svg[role=img]").count() >= 9
    # the statewide rates are the library's dual rates as of the same data cut
    store = workflow.open_store(dash_env.settings)
    try:
        cut = data_cut(store)
        theirs = dual.run_dual_rates(dash_env.settings, store, IF, date(YEAR, 1, 1), date(YEAR, 12, 31),
                                     clock=lambda: from_micros(cut))  # fmt: skip
    finally:
        store.close()
    want = next(r for r in theirs.rows if r.group == "all-enrolled" and r.cco == dual.STATEWIDE)
    row = page.locator("table:has(caption#caption-rates) tbody tr", has_text="statewide").first
    texts = [c.strip() for c in row.locator("th, td").all_inner_texts()]
    assert texts[:2] == ["all-enrolled", "statewide"]
    assert texts[2:5] == [
        str(want.claims.denominator),
        str(want.claims.exclusions),
        str(want.claims.numerator),
    ]
    assert texts[6:9] == [str(want.all.denominator), str(want.all.exclusions), str(want.all.numerator)]
    shot(page, "dashboard-statewide")


def test_selectors_change_the_content(page: Page, live_url: str) -> None:
    open_dashboard(page, f"{live_url}/dashboard")
    page.select_option("#sel-cco", "IHN")
    page.click("button:has-text('Show')")
    page.wait_for_url("**/dashboard?*cco=IHN*")
    open_dashboard(page, page.url, ("rates", "gaps"))
    assert set(cells(page, "rates", 1)) == {"IHN"}
    assert set(cells(page, "gaps", 3)) == {"IHN"}
    page.select_option("#sel-sources", "claims")
    page.click("button:has-text('Show')")
    page.wait_for_url("**sources=claims**")
    open_dashboard(page, page.url, ("strata",))
    expect(page.locator("#panel-strata .intro")).to_contain_text("(claims sources)")
    # the script offers the reach measure's own years
    page.select_option("#sel-measure", "oregon-se-reach")
    assert page.locator("#sel-year option").all_inner_texts() == ["2022", "2023", "2024"]
    expect(page.locator("#sel-year")).to_have_value("2024")
    page.click("button:has-text('Show')")
    page.wait_for_url("**measure=oregon-se-reach**")
    open_dashboard(page, page.url, ("rates",))
    assert set(cells(page, "rates", 0)) == {"any", "assessment", "treatment"}
    shot(page, "dashboard-reach-ihn-claims")


def test_the_page_works_without_javascript(browser: Browser, live_url: str) -> None:
    context = _context(browser, java_script_enabled=False)
    try:
        page = context.new_page()
        open_dashboard(page, f"{live_url}/dashboard")
        page.select_option("#sel-measure", "oregon-se-reach")  # the year stays 2025
        page.select_option("#sel-period", "quarter")
        page.select_option("#sel-quarter", "2")
        page.click("button:has-text('Show')")
        page.wait_for_url("**measure=oregon-se-reach**")
        open_dashboard(page, page.url, ("rates",))
        expect(page.locator(".notice")).to_contain_text("has no measurement year 2025; showing 2024")
        expect(page.locator(".status")).to_contain_text("2024 Q2 (2024-04-01 to 2024-06-30)")
    finally:
        context.close()


def test_gap_list_filters_by_clinic(page: Page, live_url: str) -> None:
    open_dashboard(page, f"{live_url}/dashboard")
    page.select_option("#gap-clinic", CLINICS[1])
    page.click("button:has-text('Filter the gap list')")
    page.wait_for_url("**clinic=**")
    open_dashboard(page, page.url, ("gaps",))
    clinics = cells(page, "gaps", 8)
    assert clinics and set(clinics) == {CLINICS[1]}
    expect(page.locator("#gap-clinic")).to_have_value(CLINICS[1])


def test_download_links_give_csv_and_parquet(page: Page, live_url: str) -> None:
    open_dashboard(page, f"{live_url}/dashboard?cco=IHN")
    with page.expect_download() as csv_download:
        page.click("a[data-table=gaps][data-format=csv]")
    body = Path(csv_download.value.path()).read_bytes()
    assert body.startswith(b"\xef\xbb\xbfmember_id,") and b"\r\n" in body
    rows = list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"))))
    assert rows and {r["cco"] for r in rows} == {"IHN"}
    with page.expect_download() as parquet_download:
        page.click("a[data-table=gaps][data-format=parquet]")
    table = pq.read_table(parquet_download.value.path())
    assert table.num_rows == len(rows)
    assert csv_download.value.suggested_filename.endswith("-IHN-all.csv")


def test_a_cco_cookie_session_sees_only_its_cco(browser: Browser, auth_server: AuthServer) -> None:
    context = _context(browser)
    try:
        page = context.new_page()
        answer = page.goto(f"{auth_server.url}/dashboard")
        assert answer is not None and answer.status == 401
        page.click("text=Sign in to the dashboard")
        # the token as a person gets it: `fhir-adapter clients token CLIENT_ID --key FILE --url URL`
        printed = CliRunner().invoke(
            main,
            ["clients", "token", CCO_CLIENT, "--key", str(auth_server.key_file), "--url", auth_server.url],
        )
        assert printed.exit_code == 0, printed.output
        page.fill("#token", printed.output.strip())
        page.click("button:has-text('Sign in')")
        page.wait_for_url(f"{auth_server.url}/dashboard")
        open_dashboard(page, page.url)
        expect(page.locator(".who")).to_contain_text(f"Signed in as {CCO_CLIENT} (role cco, CCOs IHN)")
        assert page.locator("#sel-cco option").evaluate_all("os => os.map(o => o.value)") == ["IHN"]
        for table, column in (("rates", 1), ("gaps", 3), ("targets", 2)):
            assert set(cells(page, table, column)) == {"IHN"}, table
        assert page.locator("table:has(caption#caption-data-quality-sources)").count() == 0
        (cookie,) = [c for c in context.cookies() if c["name"] == "fhir_adapter_dashboard"]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/dashboard"
        download = page.request.get(f"{auth_server.url}/dashboard/table/referrals.csv?cco=IHN")
        assert download.status == 200
        rows = list(csv.DictReader(io.StringIO(download.body().decode("utf-8-sig"))))
        assert {r["cco"] for r in rows} <= {"IHN"}
        assert page.request.get(f"{auth_server.url}/dashboard/table/gaps.csv?cco=ALLCARE").status == 400
        shot(page, "dashboard-cco-session")
        page.click("button:has-text('Sign out')")
        page.wait_for_url("**/dashboard/login**")
        assert not [c for c in context.cookies() if c["name"] == "fhir_adapter_dashboard"]
    finally:
        context.close()


def test_keyboard_reaches_and_uses_the_selectors(page: Page, live_url: str) -> None:
    open_dashboard(page, f"{live_url}/dashboard")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to main content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    reached = []
    for _ in range(10):
        page.keyboard.press("Tab")
        reached.append(page.evaluate("document.activeElement.id || document.activeElement.textContent"))
    # the quarter is disabled (and skipped) for a calendar year
    assert reached[:6] == ["sel-measure", "sel-period", "sel-year", "sel-cco", "sel-sources", "Show"]
    page.focus("#sel-cco")
    page.keyboard.press("ArrowDown")  # statewide -> the first CCO
    first_cco = page.eval_on_selector("#sel-cco", "s => s.value")
    assert first_cco != "statewide"
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    page.wait_for_url(f"**cco={first_cco}**")
    expect(page.locator(".status")).to_contain_text(first_cco)
