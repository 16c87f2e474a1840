"""The brand app's Review view in headless Chromium over the generated quality world: every planted
conversion in the queue with its flags, reject and approve with a note (each leaves the queue and shows
under decided), the planted coupon-leak suspect with its evidence, the rules saved; a read key sees the
queue without the decision buttons."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from starlette.testclient import TestClient

from loadtests.serve import free_port
from tests.live import live_server
from tests.quality.world import World, build
from tests.web.appsteps import ARGS, CHROMIUM, HAVE_CHROMIUM, go, sign_in
from tests.web.shots import shot
from tracker.app import create_app
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse


@pytest.fixture
def live_world(ch: ClickHouse, settings: Settings, redis_client: redis.Redis) -> Iterator[tuple[str, World, str]]:
    settings = settings.with_(country_header="CF-IPCountry")
    with TestClient(create_app(settings), follow_redirects=False) as c:
        world = build(c, redis_client, ch, settings)
        read = c.post("/api/v1/keys", json={"name": "viewer", "scope": "read"}, headers=world.headers)
        assert read.status_code == 201, read.text
    with live_server(settings, free_port()) as base:
        yield base, world, read.json()["key"]


@pytest.mark.browser
@pytest.mark.skipif(not HAVE_CHROMIUM, reason="Debian's chromium is not installed")
def test_review_queue_and_coupon_leaks_in_the_app(live_world: tuple[str, World, str]) -> None:
    from playwright.sync_api import expect, sync_playwright

    base, world, read_key = live_world
    key = world.headers["Authorization"].removeprefix("Bearer ")
    errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("request", lambda r: requests.append(r.url))
            # The old page's address leads here.
            page.goto(base + "/dashboard/quality")
            page.wait_for_selector("body[data-state=signed-out]")
            assert page.url == base + "/app#review"
            sign_in(page, base, key)
            go(page, "review")
            rows = page.locator("#review-table tbody tr")
            expect(rows).to_have_count(len(world.planted))
            for oid, flags in world.planted.items():
                row = page.locator(f'#review-table tbody tr[data-order="{oid}"]')
                expect(row.locator("[data-flags]")).to_have_attribute("data-flags", ",".join(sorted(flags)))
                expect(row.locator("[data-review]")).to_have_attribute("data-review", "open")
            leak = page.locator('#leaks-table tbody tr[data-coupon="CORA10"]')
            expect(leak.locator("[data-foreign]")).to_have_attribute("data-foreign", "BR")
            expect(leak).to_contain_text("Cora")
            expect(page.locator("#leaks-table tbody tr")).to_have_count(1)
            page.screenshot(path=shot("app-review.png"), full_page=True)

            first, second = sorted(world.planted)[:2]
            row = page.locator(f'#review-table tbody tr[data-order="{first}"]')
            row.locator("input.note").fill("bot farm")
            row.locator('[data-action="reject"]').click()
            expect(page.locator("#review-notice")).to_have_text(f"Order {first}: rejected.")
            expect(rows).to_have_count(len(world.planted) - 1)
            expect(page.locator(f'#review-table tr[data-order="{first}"]')).to_have_count(0)
            row = page.locator(f'#review-table tbody tr[data-order="{second}"]')
            row.locator("input.note").fill("known customer")
            row.locator('[data-action="approve"]').click()
            expect(page.locator("#review-notice")).to_have_text(f"Order {second}: approved.")
            expect(rows).to_have_count(len(world.planted) - 2)

            page.select_option("#review-status", "decided")
            expect(rows).to_have_count(2)
            decided = page.locator(f'#review-table tr[data-order="{first}"] [data-review]')
            expect(decided).to_have_attribute("data-review", "rejected")
            expect(decided).to_have_text("rejected (bot farm)")
            expect(page.locator(f'#review-table tr[data-order="{second}"] [data-review]')).to_have_text(
                "approved (known customer)")
            expect(page.locator('#review-table [data-action="approve"]')).to_have_count(0)

            page.click("#rules summary")
            page.fill("#rules-form [name=coupon_leak_factor]", "x")
            page.click("#rules-form button[type=submit]")
            expect(page.locator("#rules-form .form-error")).to_contain_text("coupon_leak_factor")
            page.fill("#rules-form [name=coupon_leak_factor]", "4.5")
            page.click("#rules-form button[type=submit]")
            expect(page.locator("#review-notice")).to_have_text("Rules saved; flags follow at the next read.")
            assert page.evaluate("fetch('/api/v1/rules').then(r => r.json()).then(r => r.coupon_leak_factor)") == "4.5"
            page.context.close()

            # A read key: the queue and the suspects, no decision buttons; the API refuses a decision.
            page = browser.new_page()
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("request", lambda r: requests.append(r.url))
            sign_in(page, base, read_key)
            go(page, "review")
            expect(page.locator("#review-table tbody tr")).to_have_count(len(world.planted) - 2)
            expect(page.locator('#review-table [data-action="reject"]')).to_have_count(0)
            expect(page.locator('#leaks-table tbody tr[data-coupon="CORA10"]')).to_have_count(1)
            expect(page.locator("#rules-form")).to_have_count(0)
            expect(page.locator('#rules-table tr[data-rule="coupon_leak_factor"]')).to_contain_text("4.5")
            cid = page.locator("#review-table tbody tr").first.get_attribute("data-id")
            refused = page.evaluate("""async (cid) => {
                const s = await (await fetch('/app/session')).json();
                const r = await fetch(`/api/v1/conversions/${cid}/review`, {method: 'POST', headers: {
                    'Content-Type': 'application/json', 'X-CSRF-Token': s.csrf_token},
                    body: JSON.stringify({decision: 'approve'})});
                return [r.status, (await r.json()).error.code];
            }""", cid)
            assert refused == [403, "insufficient_scope"]
            page.context.close()
        finally:
            browser.close()
    assert errors == []
    assert requests and all(u.startswith(base) for u in requests), requests
