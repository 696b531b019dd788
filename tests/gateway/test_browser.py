"""A real browser (Debian's Chromium, headless) follows a subscription with
EventSource: it shows an ingested event's numbers, and when the gateway
restarts it reconnects by itself with Last-Event-ID and goes on."""

import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import sync_playwright
from support import GatewayProcess, ServerThread, Tenant, event
from tests_live import ingest

from server.domain import Role

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

PAGE = """<!doctype html><meta charset="utf-8"><title>live</title>
<p>state: <b id="state">connecting</b> · updates: <b id="updates">0</b>
 · impressions: <b id="impressions">-</b></p>
<script>
const source = new EventSource(%(url)r);
source.onopen = () => { document.getElementById("state").textContent = "open"; };
source.onerror = () => { document.getElementById("state").textContent = "reconnecting"; };
source.onmessage = (message) => {
  const frame = JSON.parse(message.data);
  if (frame.type !== "update") return;
  const updates = document.getElementById("updates");
  updates.textContent = String(Number(updates.textContent) + 1);
  document.getElementById("impressions").textContent =
    String(frame.data.data.metrics.impressions);
};
</script>"""


@pytest.fixture
def page_server() -> Iterator[tuple[str, dict[str, str]]]:
    """Serves the test page from another origin than the gateway's."""
    pages: dict[str, str] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(self.path, "").encode()
            self.send_response(200 if body else 404)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", pages
    server.shutdown()
    server.server_close()


def test_a_browser_follows_updates_across_a_gateway_restart(
    analytics_server: ServerThread,
    tenant: Tenant,
    page_server: tuple[str, dict[str, str]],
) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is needed: apt-get install chromium (scripts/test does)")
    org, campaign = tenant.organization_id, tenant.campaign_ids[0]
    gateway = GatewayProcess(analytics_server.target)
    gateway.start()
    try:
        subscription = httpx.post(
            gateway.url + "/api/analytics/real-time/subscribe",
            json={"organizationId": org, "campaignIds": [campaign]},
            headers=tenant.headers(Role.READ),
        ).json()["subscription"]["id"]
        origin, pages = page_server
        stream = (
            f"{gateway.url}/api/analytics/real-time/updates"
            f"?subscriptionId={subscription}&format=sse"
        )
        pages["/live.html"] = PAGE % {"url": stream}

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM,
                headless=True,
                args=[
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--no-first-run",
                ],
            )
            page = browser.new_page()
            page.goto(origin + "/live.html")
            page.wait_for_function(
                "document.getElementById('state').textContent === 'open'", timeout=20_000
            )
            ingest(
                analytics_server.target,
                tenant,
                *(event("impression", campaign, org) for _ in range(3)),
            )
            page.wait_for_function(
                "document.getElementById('impressions').textContent === '3'", timeout=20_000
            )
            before = int(page.text_content("#updates") or 0)

            gateway.stop()
            page.wait_for_function(
                "document.getElementById('state').textContent === 'reconnecting'",
                timeout=20_000,
            )
            gateway.start()
            # Reconnecting with Last-Event-ID, the browser gets the current
            # numbers at once, with no new event.
            page.wait_for_function(
                f"Number(document.getElementById('updates').textContent) > {before}",
                timeout=30_000,
            )
            assert page.text_content("#state") == "open"
            ingest(
                analytics_server.target,
                tenant,
                *(event("impression", campaign, org) for _ in range(2)),
            )
            page.wait_for_function(
                "document.getElementById('impressions').textContent === '5'", timeout=20_000
            )
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "browser-live-updates.png"))
            browser.close()
    finally:
        gateway.stop()
