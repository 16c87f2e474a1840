"""The dashboard's payouts page in headless Chromium: run payouts, see lines, download CSV, mark paid."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from starlette.testclient import TestClient

from loadtests.serve import free_port
from tests.conversions.world import make_world
from tests.money.helpers import drain, live_server
from tracker.app import create_app
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
OLD = (datetime.now(UTC) - timedelta(days=40)).isoformat()


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
def test_run_inspect_download_and_mark_paid(ch: ClickHouse, settings: Settings, redis_client: redis.Redis) -> None:
    from playwright.sync_api import expect, sync_playwright

    port = free_port()
    settings = settings.with_(public_url=f"http://127.0.0.1:{port}")
    with TestClient(create_app(settings)) as c:
        world = make_world(c, settings)
        for n, (amount, coupon) in enumerate([("100.00", "ANNA10"), ("25.00", "ANNA10"), ("30.00", "BOB5")]):
            assert world.post({"order_id": f"P-{n}", "amount": amount, "currency": "USD", "coupon_code": coupon,
                               "occurred_at": OLD}).status_code == 202
        drain(settings, redis_client, ch)
    key, anna = world.brand["api_key"], world.influencer_id
    with live_server(settings, port) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_context(timezone_id="UTC", accept_downloads=True).new_page()
            errors: list[str] = []
            requests: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(f"{base}/dashboard/payouts")
            page.fill("#api-key", key)
            page.click("#save-key")
            page.wait_for_selector('body[data-loaded="0"]')
            expect(page.locator("#none")).to_be_visible()
            page.click("#run")
            rows = page.locator("#payouts tbody tr")
            expect(rows).to_have_count(2)
            expect(page.locator("#status")).to_have_text("2 payout(s) created.")
            row = page.locator("#payouts tbody tr", has_text="Anna")
            expect(row.locator("td[data-amount]")).to_have_text("12.50 USD")
            row.locator("button.lines").click()
            expect(page.locator("#lines tbody tr")).to_have_count(2)
            expect(page.locator("#lines tbody")).to_contain_text("P-0")
            with page.expect_download() as info:
                row.locator("button.csv").click()
            lines: list[dict[str, Any]] = list(csv.DictReader(io.StringIO(Path(info.value.path()).read_text())))
            assert [(r["type"], r["order_id"], r["amount"]) for r in lines] == [
                ("line", "P-0", "10.00"), ("line", "P-1", "2.50"), ("total", "", "12.50")]
            assert {r["influencer_id"] for r in lines} == {anna}
            row.locator("input.reference").fill("SEPA-9")
            row.locator("button.paid").click()
            expect(row.locator("td.status")).to_have_text("paid")
            expect(row).to_contain_text("SEPA-9")
            expect(row.locator("button.paid")).to_have_count(0)
            page.click("#run")
            expect(page.locator("#status")).to_have_text("Nothing new to pay for this period.")
            page.select_option("#filter", "paid")
            expect(rows).to_have_count(1)
            assert errors == []
            assert all(u.startswith(base) or u.startswith("blob:") for u in requests), requests
        finally:
            browser.close()
