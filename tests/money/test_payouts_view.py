"""The brand app's Payouts view in headless Chromium: run payouts, open one and see its lines, download its
CSV, mark it paid (a second mark-paid, from a page opened before, shows the 409), filter; a read key sees
the payouts without the change controls."""

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
from tests.live import live_server
from tests.money.helpers import auth, drain
from tests.web.appsteps import ARGS, CHROMIUM, HAVE_CHROMIUM, go, sign_in
from tests.web.shots import shot
from tracker.app import create_app
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse

OLD = (datetime.now(UTC) - timedelta(days=40)).isoformat()


def _csv_of(download: Any) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(Path(download.path()).read_text())))


@pytest.mark.browser
@pytest.mark.skipif(not HAVE_CHROMIUM, reason="Debian's chromium is not installed")
def test_run_open_download_and_mark_paid_in_the_app(ch: ClickHouse, settings: Settings,
                                                    redis_client: redis.Redis) -> None:
    from playwright.sync_api import expect, sync_playwright

    port = free_port()
    settings = settings.with_(public_url=f"http://127.0.0.1:{port}")
    with TestClient(create_app(settings)) as c:
        world = make_world(c, settings)
        for n, (amount, coupon) in enumerate([("100.00", "ANNA10"), ("25.00", "ANNA10"), ("30.00", "BOB5")]):
            assert world.post({"order_id": f"P-{n}", "amount": amount, "currency": "USD", "coupon_code": coupon,
                               "occurred_at": OLD}).status_code == 202
        drain(settings, redis_client, ch)
        read = c.post("/api/v1/keys", json={"name": "viewer", "scope": "read"}, headers=auth(world))
        assert read.status_code == 201, read.text
    key, read_key, anna = world.brand["api_key"], read.json()["key"], world.influencer_id
    requests: list[str] = []
    errors: list[str] = []
    with live_server(settings, port) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            context = browser.new_context(timezone_id="UTC", accept_downloads=True,
                                          viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            sign_in(page, base, key)
            go(page, "payouts")
            expect(page.locator("#payouts-none")).to_be_visible()
            page.click("#payout-run-form button[type=submit]")
            rows = page.locator("#payouts-table tbody tr")
            expect(rows).to_have_count(2)
            expect(page.locator("#payouts-notice")).to_have_text("2 payout(s) created.")
            row = page.locator("#payouts-table tbody tr", has_text="Anna")
            expect(row.locator("td[data-amount]")).to_have_text("12.50 USD")
            payout_id = row.get_attribute("data-payout")
            row.locator('[data-action="open"]').click()
            detail = page.locator("#payout-detail")
            expect(detail).to_have_attribute("data-payout", payout_id or "")
            expect(page.locator("#payout-lines tbody tr")).to_have_count(2)
            expect(page.locator("#payout-lines tbody")).to_contain_text("P-0")
            expect(page.locator("#payout-lines tbody")).to_contain_text("10.00 USD")
            with page.expect_download() as info:
                page.click("#payout-csv")
            assert info.value.suggested_filename == f"payout-{payout_id}.csv"
            lines = _csv_of(info.value)
            assert [(r["type"], r["order_id"], r["amount"]) for r in lines] == [
                ("line", "P-0", "10.00"), ("line", "P-1", "2.50"), ("total", "", "12.50")]
            assert {r["influencer_id"] for r in lines} == {anna}
            assert {r["payout_id"] for r in lines} == {payout_id}
            page.screenshot(path=shot("app-payouts.png"), full_page=True)

            # A second page, opened before the payout is paid, still offers "Mark paid".
            stale = context.new_page()
            stale.on("pageerror", lambda e: errors.append(str(e)))
            stale.on("request", lambda r: requests.append(r.url))
            stale.goto(base + "/app#payouts")
            stale.wait_for_selector("body[data-state=ready]")
            stale.locator(f'#payouts-table tr[data-payout="{payout_id}"] [data-action="open"]').click()
            expect(stale.locator("#paid-form")).to_be_visible()

            page.fill("#paid-form [name=reference]", "SEPA-9")
            page.click("#paid-form button[type=submit]")
            expect(page.locator("#payouts-notice")).to_have_text(f"Payout {payout_id} marked paid.")
            row = page.locator(f'#payouts-table tr[data-payout="{payout_id}"]')
            expect(row.locator("td.status")).to_have_text("paid")
            expect(row).to_contain_text("SEPA-9")
            expect(detail).to_have_attribute("data-status", "paid")
            expect(page.locator("#paid-form")).to_have_count(0)

            stale.fill("#paid-form [name=reference]", "SEPA-10")
            stale.click("#paid-form button[type=submit]")
            expect(stale.locator("#paid-form .form-error")).to_contain_text("is paid already (reference 'SEPA-9')")
            stale.close()

            page.click("#payout-run-form button[type=submit]")
            expect(page.locator("#payouts-notice")).to_have_text("Nothing new to pay for this period.")
            page.select_option("#payouts-filter", "paid")
            expect(rows).to_have_count(1)
            expect(rows.first).to_have_attribute("data-payout", payout_id or "")
            page.select_option("#payouts-filter", "open")
            expect(rows).to_have_count(1)
            expect(rows.first).to_contain_text("Bob")
            context.close()

            # A read key: the payouts and their lines, no run or mark-paid controls.
            context = browser.new_context(timezone_id="UTC")
            page = context.new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            sign_in(page, base, read_key)
            expect(page.locator("#scope")).to_have_text("read only")
            go(page, "payouts")
            expect(page.locator("#payouts-table tbody tr")).to_have_count(2)
            expect(page.locator("#payout-run-form")).to_have_count(0)
            page.locator('#payouts-table tr[data-status="open"] [data-action="open"]').click()
            expect(page.locator("#payout-lines tbody tr")).to_have_count(1)
            expect(page.locator("#payout-csv")).to_be_visible()
            expect(page.locator("#paid-form")).to_have_count(0)
            context.close()
        finally:
            browser.close()
    assert errors == []
    assert requests and all(u.startswith(base) for u in requests), requests
