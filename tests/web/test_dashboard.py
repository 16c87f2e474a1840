"""The brand dashboard: served from this origin only, and driven in headless Chromium."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import uvicorn
from starlette.testclient import TestClient

from loadtests.serve import free_port
from tests import reports_world
from tests.reports_world import EXPECTED_CAMPAIGNS, EXPECTED_INFLUENCERS, EXPECTED_TOTALS
from tests.waiting import wait_until
from tracker.app import create_app
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse
from tracker.web import dashboard

ARTIFACTS = Path(__file__).resolve().parent.parent.parent / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def client(ch: ClickHouse, settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), follow_redirects=False) as c:
        yield c


def test_page_and_assets_are_served_with_a_strict_policy(client: TestClient) -> None:
    r = client.get("/dashboard")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp and "script-src 'self'" in csp
    for asset, kind in (("dashboard.js", "javascript"), ("dashboard.css", "text/css")):
        a = client.get(f"/dashboard/{asset}")
        assert a.status_code == 200 and kind in a.headers["content-type"]
    assert client.get("/dashboard/../app.py").status_code == 404


@pytest.mark.parametrize("name", ["dashboard.html", "dashboard.js", "dashboard.css"])
def test_nothing_is_loaded_from_another_origin(name: str) -> None:
    text = (dashboard.STATIC / name).read_text()
    # The only absolute URL allowed is the SVG namespace (an identifier, never fetched).
    urls = set(re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"')]*", text)) - {"http://www.w3.org/2000/svg"}
    assert urls == set()
    assert "@import" not in text and "fonts.googleapis" not in text



@pytest.fixture
def live_world(
    ch: ClickHouse, settings: Settings, redis_client: redis.Redis
) -> Iterator[tuple[str, dict[str, Any]]]:
    """The world sent through the API, then a real uvicorn server for the browser."""
    with TestClient(create_app(settings), follow_redirects=False) as c:
        world = reports_world.build(c, redis_client, ch, settings)
    port = free_port()
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()

    def started() -> bool:
        assert thread.is_alive(), "uvicorn did not start"
        return server.started

    wait_until(started, timeout=30, message="uvicorn did not start")
    try:
        yield f"http://127.0.0.1:{port}", world
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
def test_dashboard_in_a_browser(live_world: tuple[str, dict[str, Any]]) -> None:
    from playwright.sync_api import expect, sync_playwright

    base, world = live_world
    requests: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            context = browser.new_context(
                timezone_id="UTC", accept_downloads=True, viewport={"width": 1360, "height": 1500}
            )
            page = context.new_page()
            page.on("request", lambda req: requests.append(req.url))
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{base}/dashboard")

            page.fill("#from", world["from"].isoformat())
            page.fill("#to", world["to"].isoformat())
            page.fill("#api-key", world["brand"]["api_key"])
            page.click("#save-key")

            totals = page.locator("#totals")
            expect(totals.locator('[data-metric="clicks"]')).to_have_text("9")
            expect(totals.locator('[data-metric="conversions"]')).to_have_text("4")
            expect(totals.locator('[data-metric="revenue"]')).to_have_text("230.00 USD")
            expect(totals.locator('[data-metric="cost"]')).to_have_text("42.00 USD")
            expect(totals.locator('[data-metric="roi"]')).to_have_text("447.6 %")  # (230 - 42) / 42
            expect(totals.locator('[data-metric="unattributed_revenue"]')).to_contain_text("25.00 USD")
            expect(totals.locator('[data-metric="payable_commission"]')).to_have_text("0.00 USD")
            status = totals.locator('[data-metric="commission_status"]')
            expect(status).to_have_text("21.50 USD pending · 0.00 USD paid")
            assert page.evaluate("localStorage.getItem('tracker.apiKey')") == world["brand"]["api_key"]

            # The chart: one bar per day of the range, today's bars carry today's figures.
            today = world["today"].isoformat()
            for series, value in (("clicks", "9"), ("conversions", "4"), ("revenue", "230.00")):
                bars = page.locator(f'#chart g[data-series="{series}"] rect')
                expect(bars).to_have_count(3)
                bar = page.locator(f'#chart g[data-series="{series}"] rect[data-day="{today}"]')
                assert bar.get_attribute("data-value") == value
                assert float(bar.get_attribute("height") or 0) > 0
                other = page.locator(f'#chart g[data-series="{series}"] rect[data-day="{world["from"].isoformat()}"]')
                assert float(other.get_attribute("height") or 1) == 0

            # The leaderboard: revenue first (Anna 170.00, Bob 60.00), then by ROI and conversions.
            rows = page.locator("#leaderboard tbody tr")
            expect(rows).to_have_count(2)
            expect(rows.nth(0).locator("td.name")).to_have_text("Anna")
            for name, row in (("Anna", rows.nth(0)), ("Bob", rows.nth(1))):
                exp = EXPECTED_INFLUENCERS[name]
                expect(row.locator('[data-metric="revenue"]')).to_have_text(f"{exp['revenue']} USD")
                expect(row.locator('[data-metric="conversions"]')).to_have_text(str(exp["conversions"]))
                expect(row.locator('[data-metric="cost"]')).to_have_text(f"{exp['cost']} USD")
                roi = f"{float(exp['roi']) * 100:.1f} %"
                expect(row.locator('[data-metric="roi"]')).to_have_text(roi)
            page.select_option("#lb-sort", "roi")
            expect(rows.nth(0).locator("td.name")).to_have_text("Anna")  # 457.4 % > 421.7 %
            page.click('#leaderboard th[data-key="roi"]')  # same key again: ascending
            expect(rows.nth(0).locator("td.name")).to_have_text("Bob")
            page.select_option("#lb-sort", "conversions")
            expect(rows.nth(0).locator("td.name")).to_have_text("Anna")
            expect(rows.nth(0).locator('[data-metric="conversions"]')).to_have_text("3")

            campaigns = page.locator("#campaigns tbody tr")
            expect(campaigns).to_have_count(2)
            for i, name in enumerate(("Spring", "Flat")):
                expect(campaigns.nth(i).locator("td.name")).to_have_text(name)
                exp = EXPECTED_CAMPAIGNS[name]
                expect(campaigns.nth(i).locator('[data-metric="revenue"]')).to_have_text(f"{exp['revenue']} USD")
                expect(campaigns.nth(i).locator('[data-metric="fees"]')).to_have_text(f"{exp['fees']} USD")

            # CSV of what is on screen: the influencer table as the API renders it.
            with page.expect_download() as info:
                page.click('button.csv[data-group="influencer"]')
            csv_text = Path(info.value.path()).read_text()
            lines = csv_text.strip().splitlines()
            assert lines[0].startswith("type,influencer_id,influencer_name,clicks")
            assert any(",Anna,6,2,3,3,170.00," in line for line in lines)
            assert lines[-1].startswith("total,,,9,3,5,4,230.00,21.50,21.50,0.00,0.00,20.50,42.00,")

            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
            assert errors == []
        finally:
            browser.close()
    assert requests and all(url.startswith(base) or url.startswith("blob:") for url in requests), requests
    assert EXPECTED_TOTALS["clicks"] == 9
