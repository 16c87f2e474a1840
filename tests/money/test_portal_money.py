"""The influencer's money: /api/v1/me/payouts, /api/v1/me/statement, and the portal's payouts and
statement sections in headless Chromium (download verified, head hash shown)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from starlette.testclient import TestClient

from loadtests.serve import free_port
from tests.conversions.world import make_world
from tests.live import live_server
from tests.money.helpers import api, drain
from tracker.app import create_app
from tracker.money import chain
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
OLD = (datetime.now(UTC) - timedelta(days=40)).isoformat()


def _build(c: TestClient, settings: Settings, redis_client: redis.Redis, ch: ClickHouse) -> dict[str, Any]:
    world = make_world(c, settings)
    for n, (amount, coupon) in enumerate([("100.00", "ANNA10"), ("40.00", "ANNA10"), ("30.00", "BOB5")]):
        assert world.post({"order_id": f"M-{n}", "amount": amount, "currency": "USD", "coupon_code": coupon,
                           "occurred_at": OLD}).status_code == 202
    drain(settings, redis_client, ch)
    items = api(world, "POST", "/api/v1/payouts", json={}).json()["items"]
    anna = next(p for p in items if p["influencer_id"] == world.influencer_id)
    api(world, "POST", f"/api/v1/payouts/{anna['id']}/paid", json={"reference": "SEPA-42"})
    key = api(world, "POST", "/api/v1/keys", json={"name": "anna", "scope": "influencer",
                                                    "influencer_id": world.influencer_id}).json()["key"]
    signin = api(world, "POST", f"/api/v1/influencers/{world.influencer_id}/portal-link").json()["url"]
    return {"world": world, "payout": anna, "key": key, "signin": signin}


def test_the_me_routes_show_only_the_influencers_money(
    app_client: TestClient, settings: Settings, redis_client: redis.Redis, ch: ClickHouse
) -> None:
    built = _build(app_client, settings, redis_client, ch)
    h = {"Authorization": f"Bearer {built['key']}"}
    payouts = app_client.get("/api/v1/me/payouts", headers=h).json()["items"]
    assert [(p["id"], p["amount"], p["status"], p["reference"]) for p in payouts] == [
        (built["payout"]["id"], "14.00", "paid", "SEPA-42")]
    st = app_client.get("/api/v1/me/statement", headers=h).json()
    assert [e["kind"] for e in st["entries"]] == ["commission", "commission", "payout", "paid"]
    assert chain.verify(st["entries"], st["head_hash"]) == st["head_hash"]
    brand_view = api(built["world"], "GET", f"/api/v1/influencers/{built['world'].influencer_id}/statement").json()
    assert brand_view == st
    csv_text = app_client.get("/api/v1/me/statement", headers=h, params={"format": "csv"}).text
    assert chain.verify(chain.load(csv_text)[0]) == st["head_hash"]
    # A brand key is not an influencer's view.
    assert api(built["world"], "GET", "/api/v1/me/payouts").status_code == 403


@pytest.fixture
def live(ch: ClickHouse, settings: Settings, redis_client: redis.Redis) -> Iterator[tuple[str, dict[str, Any]]]:
    port = free_port()
    settings = settings.with_(public_url=f"http://127.0.0.1:{port}")
    with TestClient(create_app(settings), follow_redirects=False) as c:
        built = _build(c, settings, redis_client, ch)
        built["head"] = c.get("/api/v1/me/statement", headers={"Authorization": f"Bearer {built['key']}"}).json()[
            "head_hash"]
    with live_server(settings, port) as base:
        yield base, built


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
def test_the_portal_shows_payouts_and_a_verifiable_statement(live: tuple[str, dict[str, Any]]) -> None:
    from playwright.sync_api import expect, sync_playwright

    base, built = live
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_context(timezone_id="UTC", accept_downloads=True).new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(built["signin"])
            page.wait_for_selector("body[data-money]")
            assert page.url == f"{base}/portal"
            row = page.locator(f'#payouts tr[data-payout="{built["payout"]["id"]}"]')
            expect(row).to_have_count(1)
            expect(row.locator("td.num[data-amount]")).to_have_text("14.00 USD")
            expect(row).to_contain_text("paid")
            expect(row).to_contain_text("SEPA-42")
            expect(page.locator("#head-hash")).to_have_text(built["head"])
            expect(page.locator("#statement-count")).to_have_text("4")
            with page.expect_download() as info:
                page.click("#statement-json")
            saved = json.loads(Path(info.value.path()).read_text())
            assert chain.verify(saved["entries"], saved["head_hash"]) == built["head"]
            assert errors == []
        finally:
            browser.close()
