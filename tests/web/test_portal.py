"""The influencer portal in headless Chromium, on a desktop and on a 390 px phone.

Anna signs in through the link the brand made for her and sees the figures worked out by
hand in ``tests/reports_world.py``: her clicks, unique clicks, sales, earnings by status,
her two links with their QR codes and copy buttons, and a chart of her days.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from starlette.testclient import TestClient

from loadtests.serve import free_port
from tests import reports_world
from tests.live import live_server
from tests.reports_world import EXPECTED_INFLUENCERS
from tests.web.shots import shot
from tracker.app import create_app
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse
from tracker.web import portal

ROOT = Path(__file__).resolve().parent.parent.parent
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.mark.parametrize("name", ["portal.html", "portal.js", "portal.css", "portal_message.html"])
def test_nothing_is_loaded_from_another_origin(name: str) -> None:
    text = (portal.STATIC / name).read_text()
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "") and "https://" not in text
    assert "@import" not in text


@pytest.fixture
def live(ch: ClickHouse, settings: Settings, redis_client: redis.Redis) -> Iterator[tuple[str, dict[str, Any]]]:
    port = free_port()
    settings = settings.with_(public_url=f"http://127.0.0.1:{port}")
    with TestClient(create_app(settings), follow_redirects=False) as c:
        world = reports_world.build(c, redis_client, ch, settings)
        links = []
        for _ in range(2):  # one sign-in link per device
            r = c.post(f"/api/v1/influencers/{world['influencers']['Anna']}/portal-link", headers=world["headers"])
            assert r.status_code == 200, r.text
            links.append(r.json()["url"])
        world["signin"] = links
    with live_server(settings, port) as base:
        yield base, world


def _check_portal(page: Any, base: str, world: dict[str, Any], signin: str, phone: bool) -> None:
    from playwright.sync_api import expect

    anna = EXPECTED_INFLUENCERS["Anna"]
    page.goto(signin)
    expect(page).to_have_url(f"{base}/portal")
    page.wait_for_selector("body[data-loaded]")
    expect(page.locator("#influencer-name")).to_have_text("Hi Anna")
    expect(page.locator("#brand-name")).to_have_text("Acme")
    kpis = page.locator("#kpis")
    expect(kpis.locator('[data-metric="commission"]')).to_have_text(f"{anna['commission']} USD")
    expect(kpis.locator('[data-metric="clicks"]')).to_have_text(str(anna["clicks"]))
    expect(kpis.locator('[data-metric="unique_clicks"]')).to_have_text(str(anna["unique_clicks"]))
    expect(kpis.locator('[data-metric="conversions"]')).to_have_text(str(anna["conversions"]))
    expect(kpis.locator('[data-metric="revenue"]')).to_have_text(f"{anna['revenue']} USD")
    expect(kpis.locator('[data-metric="conversion_rate"]')).to_have_text("50.0 %")

    # The chart: 30 days, today's bars and point carry today's figures.
    today = world["today"].isoformat()
    expect(page.locator('#chart g[data-series="clicks"] rect')).to_have_count(30)
    bar = page.locator(f'#chart g[data-series="clicks"] rect[data-day="{today}"]')
    assert bar.get_attribute("data-value") == "6" and float(bar.get_attribute("height") or 0) > 0
    uniques = page.locator(f'#chart g[data-series="unique_clicks"] rect[data-day="{today}"]')
    assert uniques.get_attribute("data-value") == "3"
    dot = page.locator(f'#chart g[data-series="commission"] circle[data-day="{today}"]')
    assert dot.get_attribute("data-value") == "15.50"

    # Her two links (not Bob's), each with a QR code that loaded, per-link figures and a copy button.
    cards = page.locator("#links article.link")
    expect(cards).to_have_count(2)
    a1 = page.locator(f'#links article[data-code="{world["links"]["A1"]}"]')
    expect(a1.locator('[data-link-metric="clicks"]')).to_have_text("4")
    expect(a1.locator('[data-link-metric="commission"]')).to_have_text("13.00 USD")
    # expect() polls without eval (the portal's CSP forbids it; wait_for_function of a string needs it).
    expect(page.locator("img.qr")).to_have_count(2)
    for qr in page.locator("img.qr").all():
        expect(qr).to_have_js_property("complete", True)
        assert qr.evaluate("i => i.naturalWidth") > 0
    assert page.locator(f'#links article[data-code="{world["links"]["B1"]}"]').count() == 0
    a1.locator('button[data-copy="url"]').click()
    short_url = f"{base}/{world['links']['A1']}"
    expect(a1.locator('button[data-copy="url"]')).to_have_text("Copied!")
    assert page.evaluate("navigator.clipboard.readText()") == short_url

    # Commission by status and the sales, without customer data.
    expect(page.locator('#by-status [data-status="approved"] .value')).to_have_text("13.00 USD")
    expect(page.locator('#by-status [data-status="pending"] .value')).to_have_text("2.50 USD")
    expect(page.locator("#conversions tbody tr")).to_have_count(3)
    orders = page.locator("#conversions tbody tr td:nth-child(2)").all_inner_texts()
    assert sorted(orders) == ["O1", "O2", "O4"]

    if phone:  # nothing wider than the screen: no sideways scrolling of the page
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=shot("portal-phone.png" if phone else "portal.png"), full_page=True)

    page.click("#signout")
    expect(page.locator("h1")).to_have_text("Your influencer portal")
    assert page.evaluate("document.cookie") == ""  # HttpOnly: the script never saw it anyway


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
def test_portal_on_desktop_and_phone(live: tuple[str, dict[str, Any]]) -> None:
    from playwright.sync_api import sync_playwright

    base, world = live
    requests: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            for phone, signin in zip((False, True), world["signin"], strict=True):
                size = {"width": 390, "height": 844} if phone else {"width": 1280, "height": 900}
                context = browser.new_context(timezone_id="UTC", viewport=size, is_mobile=phone, has_touch=phone,
                                              device_scale_factor=2 if phone else 1)
                context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
                page = context.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda exc, errors=errors: errors.append(str(exc)))
                page.on("request", lambda req: requests.append(req.url))
                _check_portal(page, base, world, signin, phone)
                assert errors == []
                context.close()
        finally:
            browser.close()
    assert requests and all(u.startswith(base) for u in requests), requests
