"""``/dashboard/quality``: the review queue and coupon-leak page, in headless Chromium over the generated world."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import uvicorn
from starlette.testclient import TestClient

from loadtests.serve import free_port
from tests.quality.world import World, build
from tests.waiting import wait_until
from tracker.app import create_app
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent.parent
# Screenshots go to test-artifacts/; to docs/ (the README's) only with TRACKER_SCREENSHOTS=docs.
SHOTS = ROOT / ("docs" if os.environ.get("TRACKER_SCREENSHOTS") == "docs" else "test-artifacts")


def test_the_page_is_served_with_the_dashboard_policy(ch: ClickHouse, settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        r = client.get("/dashboard/quality")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert "default-src 'none'" in r.headers["content-security-policy"]
        assert client.get("/dashboard/quality.js").status_code == 200


@pytest.fixture
def live_world(ch: ClickHouse, settings: Settings, redis_client: redis.Redis) -> Iterator[tuple[str, World]]:
    settings = settings.with_(country_header="CF-IPCountry")
    with TestClient(create_app(settings), follow_redirects=False) as c:
        world = build(c, redis_client, ch, settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
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
def test_review_queue_and_coupon_leaks_in_a_browser(live_world: tuple[str, World]) -> None:
    from playwright.sync_api import expect, sync_playwright

    base, world = live_world
    key = world.headers["Authorization"].removeprefix("Bearer ")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{base}/dashboard/quality")
            page.fill("#api-key", key)
            page.click("#save-key")
            rows = page.locator("#queue tbody tr")
            expect(rows).to_have_count(len(world.planted))
            for oid, flags in world.planted.items():
                row = page.locator(f'#queue tbody tr[data-order="{oid}"]')
                expect(row.locator("[data-flags]")).to_have_attribute("data-flags", ",".join(sorted(flags)))
            leak = page.locator('#leaks tbody tr[data-coupon="CORA10"]')
            expect(leak.locator("[data-foreign]")).to_have_attribute("data-foreign", "BR")
            expect(page.locator("#leaks tbody tr")).to_have_count(1)
            SHOTS.mkdir(exist_ok=True)
            page.screenshot(path=str(SHOTS / "quality.png"), full_page=True)
            # Reject one with a note: it leaves the open queue and shows under decided.
            first = sorted(world.planted)[0]
            row = page.locator(f'#queue tbody tr[data-order="{first}"]')
            row.locator("input.note").fill("bot farm")
            row.locator("button.reject").click()
            expect(rows).to_have_count(len(world.planted) - 1)
            expect(page.locator("#status")).to_contain_text(f"Order {first}: rejected")
            page.select_option("#queue-status", "decided")
            decided = page.locator(f'#queue tbody tr[data-order="{first}"] [data-review]')
            expect(decided).to_have_attribute("data-review", "rejected")
            assert errors == []
        finally:
            browser.close()
