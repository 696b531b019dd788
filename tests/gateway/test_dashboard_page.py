"""The dashboard page at ``/``, in a real browser (Debian's Chromium, headless,
driven by Playwright with ``executable_path``) against the real server and
gateway: it signs in from the URL fragment, shows the REST API's numbers with
no console errors, follows ingested events live, shows a campaign's funnel,
refuses a wrong key or another organization's key, fits a phone's screen, and
recovers its live updates after the gateway restarts. Screenshots go to
``test-artifacts/``."""

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Error, Page, sync_playwright
from support import GatewayProcess, GatewayThread, ServerThread, Tenant, event
from tests_live import ingest

from server.domain import Role

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
WINDOW = 3600  # the page's default window
TIMEOUT_MS = 20_000

# DashboardSummary field -> the tile's format on the page.
SUMMARY_TILES = {
    "totalImpressions": "count",
    "totalAdPlaybacks": "count",
    "totalClicks": "count",
    "totalConversions": "count",
    "totalSpent": "money",
    "overallCtr": "rate",
    "overallConversionRate": "rate",
    "overallCpc": "unit",
    "overallCpa": "unit",
    "overallCompletionRate": "rate",
    "averageViewTime": "seconds",
    "activeCampaigns": "count",
}


def shown(value: float, kind: str) -> str:
    """How the page (locale en-US) writes a number of this kind."""
    if kind == "count":
        return f"{round(value):,}"
    if kind == "money":
        return f"{value:,.2f}"
    if kind == "rate":
        return f"{value:,.2f} %"
    if kind == "unit":  # cpc, cpa: 2 to 4 decimals
        text = f"{value:,.4f}"
        return text[:-2] + text[-2:].rstrip("0")
    if kind == "seconds":
        return f"{value:,.2f}".rstrip("0").rstrip(".") + " s"
    raise ValueError(kind)


@dataclass
class Console:
    """The page's console errors and warnings, and its uncaught exceptions."""

    problems: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> None:
        page.on("console", self._message)
        page.on("pageerror", lambda error: self.problems.append(f"pageerror: {error}"))

    def _message(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.problems.append(f"{message.type}: {message.text} ({message.location})")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is needed: apt-get install chromium (scripts/test does)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--no-first-run",
            ],
        )
        yield launched
        launched.close()


def open_page(browser: Browser, width: int = 1280, height: int = 900) -> tuple[Page, Console]:
    context = browser.new_context(viewport={"width": width, "height": height}, locale="en-US")
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    console = Console()
    console.watch(page)
    return page, console


def until(page: Page, condition: str, timeout: float = TIMEOUT_MS) -> None:
    """Waits for a JavaScript condition. It is sent as a function: the page's
    Content-Security-Policy forbids eval, which Playwright uses for a bare
    expression."""
    page.wait_for_function(f"() => {condition}", timeout=timeout)


def signed_in_url(base: str, organization_id: str, key: str) -> str:
    return f"{base}/#organization={quote(organization_id)}&key={quote(key)}"


def wait_until_live(page: Page) -> None:
    """Tiles filled, live updates connected and the overview's charts drawn."""
    page.wait_for_selector("#summary-tiles .tile .value[data-raw]")
    until(page, "document.getElementById('connection').dataset.state === 'live'")
    until(page, "document.querySelectorAll('#overview-charts .plot canvas').length === 3")


def tile(page: Page, container: str, metric: str) -> tuple[float, str]:
    value = page.locator(f"#{container} [data-metric='{metric}'] .value")
    return float(value.get_attribute("data-raw") or "nan"), value.inner_text()


def dashboard(http: httpx.Client, tenant: Tenant) -> dict[str, Any]:
    reply = http.get(
        "/api/analytics/real-time/dashboard",
        params={"organizationId": tenant.organization_id, "timeWindow": WINDOW},
        headers=tenant.headers(Role.READ),
    )
    assert reply.status_code == 200, reply.text
    return reply.json()


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}.png"), full_page=True)


def some_traffic(tenant: Tenant) -> list[Any]:
    """Events of two campaigns: spend, rates and views differ from zero."""
    org = tenant.organization_id
    first, second = tenant.campaign_ids[:2]
    return [
        *(event("impression", first, org) for _ in range(40)),
        *(event("view", first, org, duration=12.5) for _ in range(20)),
        *(event("completion", first, org) for _ in range(8)),
        *(event("click", first, org, value=1.25) for _ in range(6)),
        event("conversion", first, org, value=30),
        *(event("impression", second, org) for _ in range(15)),
        *(event("click", second, org, value=0.75) for _ in range(2)),
    ]


def test_the_page_and_its_assets_are_served_with_cache_headers(http: httpx.Client) -> None:
    page = http.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["cache-control"] == "no-cache"
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert http.get("/", headers={"if-none-match": page.headers["etag"]}).status_code == 304
    assert "https://" not in page.text and "http://" not in page.text  # no CDN

    # Each asset is named with its content's hash: cached for good.
    for path in (
        "/dashboard/app.js",
        "/dashboard/style.css",
        "/dashboard/vendor/uplot/uPlot.iife.min.js",
        "/dashboard/vendor/uplot/uPlot.min.css",
    ):
        start = page.text.index(f'"{path}?v=') + 1
        url = page.text[start : page.text.index('"', start)]
        asset = http.get(url)
        assert asset.status_code == 200, url
        assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert http.get(path + "?v=old").headers["cache-control"] == "no-cache"
    licence = http.get("/dashboard/vendor/uplot/LICENSE")
    assert licence.status_code == 200 and "MIT License" in licence.text

    missing = http.get("/dashboard/nothing.js")
    assert missing.status_code == 404 and missing.json()["code"] == 5
    assert http.get("/dashboard/index.html").status_code == 404
    paths = http.get("/openapi.json").json()["paths"]
    assert not [path for path in paths if not path.startswith("/api/")]


def test_the_page_shows_the_dashboard_numbers_with_no_console_errors(
    browser: Browser,
    gateway: GatewayThread,
    http: httpx.Client,
    analytics_server: ServerThread,
    tenant: Tenant,
) -> None:
    ingest(analytics_server.target, tenant, *some_traffic(tenant))
    page, console = open_page(browser)

    started = time.perf_counter()
    page.goto(signed_in_url(gateway.url, tenant.organization_id, tenant.keys[Role.READ]))
    page.wait_for_selector("#summary-tiles .tile .value[data-raw]")
    seen = time.perf_counter() - started
    filled = page.evaluate("performance.getEntriesByName('dashboard-tiles-filled')[0].startTime")
    print(
        f"\ndashboard load on loopback: tiles filled {filled:.0f} ms after navigation start "
        f"({seen * 1000:.0f} ms from goto in the test)"
    )
    wait_until_live(page)

    # The key left the address bar at once.
    assert page.url == gateway.url + "/"
    assert page.text_content("#session-organization") == tenant.organization_id
    expected = dashboard(http, tenant)["summary"]
    assert expected["totalImpressions"] == 55 and expected["totalClicks"] == 8
    for metric, kind in SUMMARY_TILES.items():
        raw, text = tile(page, "summary-tiles", metric)
        assert raw == expected[metric], metric
        assert text == shown(expected[metric], kind), metric

    # The table: one row per campaign, with its numbers.
    rows = page.locator("#campaigns tbody tr")
    assert rows.count() == len(tenant.campaign_ids)
    first = page.locator(f"#campaigns tr[data-campaign='{tenant.campaign_ids[0]}']")
    assert first.locator("td[data-metric='impressions']").inner_text() == "40"
    assert first.locator("td[data-metric='adPlaybacks']").inner_text() == "20"
    assert first.locator("td[data-metric='ctr']").inner_text() == "15.00 %"
    assert first.locator("td[data-metric='completionRate']").inner_text() == "40.00 %"

    # The charts plot the trends route: all the window's spend is there.
    trends = http.get(
        "/api/analytics/real-time/trends",
        params={"organizationId": tenant.organization_id, "timeWindow": WINDOW, "step": 15},
        headers=tenant.headers(Role.READ),
    ).json()
    spend = page.locator("#overview-charts [data-chart='spend'] .plot")
    assert int(spend.get_attribute("data-points") or 0) == len(trends["points"])
    assert float(spend.get_attribute("data-total") or 0) == pytest.approx(
        trends["totals"]["totalSpent"]
    )

    screenshot(page, "overview")
    assert console.problems == []
    page.context.close()


def test_a_number_changes_when_events_are_ingested_without_a_reload(
    browser: Browser, gateway: GatewayThread, analytics_server: ServerThread, tenant: Tenant
) -> None:
    org, campaign = tenant.organization_id, tenant.campaign_ids[1]
    ingest(analytics_server.target, tenant, event("impression", campaign, org))
    page, console = open_page(browser)
    page.goto(signed_in_url(gateway.url, org, tenant.keys[Role.READ]))
    wait_until_live(page)
    page.evaluate("window.sameDocument = true")
    impressions, _ = tile(page, "summary-tiles", "totalImpressions")
    assert impressions == 1
    spend_chart = "#overview-charts [data-chart='spend'] .plot"
    assert float(page.get_attribute(spend_chart, "data-total") or "nan") == 0

    ingest(
        analytics_server.target,
        tenant,
        *(event("impression", campaign, org) for _ in range(4)),
        event("click", campaign, org, value=2.5),
    )
    until(
        page,
        "document.querySelector(\"#summary-tiles [data-metric='totalImpressions'] .value\")"
        ".dataset.raw === '5'",
    )
    row = page.locator(f"#campaigns tr[data-campaign='{campaign}']")
    assert row.locator("td[data-metric='impressions']").inner_text() == "5"
    assert row.locator("td[data-metric='clicks']").inner_text() == "1"
    assert tile(page, "summary-tiles", "totalSpent") == (2.5, "2.50")
    assert tile(page, "summary-tiles", "overallCtr") == (20.0, "20.00 %")
    # The charts re-read the trends too (throttled to one read per 2 s).
    until(page, f"document.querySelector(\"{spend_chart}\").dataset.total === '2.5'")
    assert page.evaluate("window.sameDocument") is True  # no reload
    assert page.text_content("#connection") == "live"
    screenshot(page, "live-update")
    assert console.problems == []
    page.context.close()


def test_the_campaign_view_shows_the_campaign_funnel(
    browser: Browser,
    gateway: GatewayThread,
    http: httpx.Client,
    analytics_server: ServerThread,
    tenant: Tenant,
) -> None:
    org, campaign = tenant.organization_id, tenant.campaign_ids[2]
    ingest(
        analytics_server.target,
        tenant,
        *(event("impression", campaign, org) for _ in range(10)),
        *(event("view", campaign, org, duration=20) for _ in range(6)),
        *(event("click", campaign, org, value=1.5) for _ in range(3)),
        event("conversion", campaign, org, value=25),
        # Another campaign's events are not in this campaign's funnel.
        *(event("impression", tenant.campaign_ids[0], org) for _ in range(7)),
    )
    page, console = open_page(browser)
    page.goto(signed_in_url(gateway.url, org, tenant.keys[Role.READ]))
    wait_until_live(page)
    page.click(f"#campaigns tr[data-campaign='{campaign}'] td[data-metric='clicks']")
    page.wait_for_selector("#campaign-view:not([hidden]) #funnel li .count[data-raw]")
    assert page.url.endswith(f"#/campaign/{campaign}")

    metrics = http.get(
        f"/api/campaigns/{campaign}/analytics/real-time",
        params={"timeWindow": WINDOW},
        headers=tenant.headers(Role.READ),
    ).json()["metrics"]
    funnel = {
        step: page.locator(f"#funnel li[data-step='{step}'] .count").inner_text()
        for step in ("impressions", "adPlaybacks", "clicks", "conversions")
    }
    assert funnel == {"impressions": "10", "adPlaybacks": "6", "clicks": "3", "conversions": "1"}
    assert [metrics[step] for step in funnel] == [10, 6, 3, 1]
    rates = [
        page.locator(f"#funnel li[data-step='{step}'] .step-rate").inner_text()
        for step in ("adPlaybacks", "clicks", "conversions")
    ]
    assert rates == ["60.00 % of previous", "50.00 % of previous", "33.33 % of previous"]
    for metric, kind in (("ctr", "rate"), ("totalSpent", "money"), ("cpa", "unit")):
        assert tile(page, "campaign-tiles", metric) == (
            metrics[metric],
            shown(metrics[metric], kind),
        )
    until(page, "document.querySelectorAll('#campaign-charts .plot canvas').length === 3")
    spend = page.locator("#campaign-charts [data-chart='spend'] .plot")
    until(
        page,
        "document.querySelector(\"#campaign-charts [data-chart='spend'] .plot\")"
        ".dataset.total === '4.5'",
    )
    assert int(spend.get_attribute("data-points") or 0) > 0
    screenshot(page, "campaign")

    page.click("#crumb-overview")
    page.wait_for_selector("#overview-view:not([hidden])")
    assert console.problems == []
    page.context.close()


def test_a_wrong_key_or_another_organizations_key_shows_a_sign_in_error_and_no_data(
    browser: Browser,
    gateway: GatewayThread,
    analytics_server: ServerThread,
    tenant: Tenant,
    other_tenant: Tenant,
) -> None:
    org, campaign = tenant.organization_id, tenant.campaign_ids[0]
    ingest(analytics_server.target, tenant, *(event("impression", campaign, org) for _ in range(7)))

    def refused(page: Page, status: int, words: str) -> None:
        until(
            page, f"document.getElementById('signin-error').textContent.includes('HTTP {status}')"
        )
        text = page.locator("#signin-error").inner_text()
        assert f"HTTP {status}" in text and words in text, text
        assert page.is_hidden("#dashboard")
        assert page.locator(".tile, #campaigns tbody tr, #funnel li, .plot").count() == 0
        assert campaign not in page.content()
        assert page.evaluate("sessionStorage.getItem('campaign-analytics.session')") is None

    page, _ = open_page(browser)
    page.goto(signed_in_url(gateway.url, org, "ca_000000000000_not-a-key"))
    refused(page, 401, "unknown or revoked")
    assert page.url == gateway.url + "/"
    screenshot(page, "wrong-key")

    # A key of another organization, with this organization's id.
    page.goto(signed_in_url(gateway.url, org, other_tenant.keys[Role.READ]))
    refused(page, 403, org)
    screenshot(page, "other-organization")

    # The form: a wrong key, then the right one.
    page.fill("#signin-organization", org)
    page.fill("#signin-key", "ca_000000000000_still-wrong")
    page.click("#signin-submit")
    refused(page, 401, "unknown or revoked")
    page.fill("#signin-organization", org)
    page.fill("#signin-key", tenant.keys[Role.READ])
    page.click("#signin-submit")
    page.wait_for_selector("#summary-tiles .tile .value[data-raw]")
    assert tile(page, "summary-tiles", "totalImpressions") == (7, "7")

    page.click("#sign-out")
    page.wait_for_selector("#signin:not([hidden])")
    assert page.locator(".tile, #campaigns tbody tr").count() == 0
    page.context.close()


def test_the_page_fits_a_phone_screen(
    browser: Browser, gateway: GatewayThread, analytics_server: ServerThread, tenant: Tenant
) -> None:
    ingest(analytics_server.target, tenant, *some_traffic(tenant))
    page, console = open_page(browser, 390, 844)
    page.goto(signed_in_url(gateway.url, tenant.organization_id, tenant.keys[Role.READ]))
    wait_until_live(page)

    def fits() -> None:
        page_width, viewport = page.evaluate(
            "[document.documentElement.scrollWidth, window.innerWidth]"
        )
        assert page_width <= viewport == 390
        widest = page.evaluate(
            "Math.max(...[...document.querySelectorAll('.tile, .chart, .table-wrap, .funnel')]"
            ".filter((e) => e.offsetParent).map((e) => e.getBoundingClientRect().right))"
        )
        assert widest <= 390

    fits()
    # The table scrolls inside its own box, not the page.
    assert page.evaluate(
        "(() => { const w = document.querySelector('.table-wrap');"
        " return w.scrollWidth > w.clientWidth; })()"
    )
    screenshot(page, "phone")
    page.click(f"#campaigns tr[data-campaign='{tenant.campaign_ids[0]}'] a")
    page.wait_for_selector("#campaign-view:not([hidden]) #funnel li .count[data-raw]")
    until(page, "document.querySelectorAll('#campaign-charts .plot canvas').length === 3")
    fits()
    screenshot(page, "phone-campaign")
    assert console.problems == []
    page.context.close()


def test_live_updates_recover_after_the_gateway_restarts(
    browser: Browser, analytics_server: ServerThread, tenant: Tenant
) -> None:
    org, campaign = tenant.organization_id, tenant.campaign_ids[0]
    gateway = GatewayProcess(analytics_server.target)
    gateway.start()
    page, _ = open_page(browser)

    def impressions_are(count: int) -> None:
        until(
            page,
            "document.querySelector(\"#summary-tiles [data-metric='totalImpressions']"
            f" .value\").dataset.raw === '{count}'",
        )

    try:
        page.goto(signed_in_url(gateway.url, org, tenant.keys[Role.READ]))
        wait_until_live(page)
        ingest(analytics_server.target, tenant, event("impression", campaign, org))
        impressions_are(1)
        gateway.stop()
        until(
            page,
            "['reconnecting', 'offline'].includes("
            "document.getElementById('connection').dataset.state)",
        )
        screenshot(page, "reconnecting")
        gateway.start()
        until(
            page, "document.getElementById('connection').dataset.state === 'live'", timeout=30_000
        )
        ingest(
            analytics_server.target,
            tenant,
            *(event("impression", campaign, org) for _ in range(2)),
        )
        impressions_are(3)
        screenshot(page, "recovered")
    except Error:
        screenshot(page, "restart-failure")
        raise
    finally:
        page.context.close()
        gateway.stop()
