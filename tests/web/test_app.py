"""The brand app in headless Chromium, on a desktop and on a 390 px phone.

A newcomer opens ``/``, creates the brand with the admin token, signs in with the key shown
once, creates a campaign, an influencer, a link, a store, a fee and a rate, edits them, sees
each form's API error, follows the link like a follower, finds the click in the report,
is refused a change without the CSRF token, and signs out.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from loadtests.serve import free_port
from tests.conftest import ADMIN_TOKEN
from tests.live import live_server
from tests.waiting import wait_until
from tests.web.shots import shot
from tracker.ingest.worker import Worker
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse
from tracker.web import app as brand_app

ROOT = Path(__file__).resolve().parent.parent.parent
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
# A person's browser (the headless one names itself HeadlessChrome, which counts as a bot).
HUMAN = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
         "Chrome/131.0.0.0 Safari/537.36")
STATIC_FILES = ["app.html", "app.css", "app.js", "app_core.js", "app_manage.js", "app_links.js", "app_reports.js",
                "app_keys.js", "app_payouts.js", "app_quality.js"]


@pytest.mark.parametrize("name", STATIC_FILES)
def test_nothing_is_loaded_from_another_origin(name: str) -> None:
    text = (brand_app.STATIC / name).read_text()
    assert "https://" not in text.replace("https://shop.example", "")
    assert "http://" not in text and "@import" not in text and "localStorage" not in text
    if name == "app.html":
        assert "<script>" not in text and " on" + "click=" not in text  # no inline script


@pytest.fixture
def live(ch: ClickHouse, settings: Settings, redis_client: redis.Redis) -> Iterator[tuple[str, Worker, str]]:
    port = free_port()
    settings = settings.with_(public_url=f"http://127.0.0.1:{port}")
    with live_server(settings, port) as base:
        yield base, Worker(settings, redis_client, ch, name="app-test"), str(settings.redis_url)


def _submit(page: Any, form: str, **values: str) -> None:
    for name, value in values.items():
        field = page.locator(f"#{form} [name={name}]")
        if field.evaluate("e => e.tagName") == "SELECT":
            field.select_option(label=value)
        else:
            field.fill(value)
    page.click(f"#{form} button[type=submit]")


def _error(page: Any, form: str) -> Any:
    return page.locator(f"#{form} .form-error")


def _go(page: Any, view: str) -> None:
    page.click(f'#nav a[data-view="{view}"]')
    page.wait_for_selector(f"#view-{view}")
    page.wait_for_selector("body[data-state=ready]")


def _sign_up(page: Any, base: str) -> str:
    from playwright.sync_api import expect

    page.goto(base + "/")
    expect(page).to_have_url(base + "/app")
    page.wait_for_selector("body[data-state=signed-out]")
    _submit(page, "signin-form", key="trk_" + "x" * 43)
    expect(_error(page, "signin-form")).to_contain_text("unknown or revoked")
    page.click("#first-brand summary")
    _submit(page, "brand-form", admin="tka_wrong", name="Acme", currency="USD")
    expect(_error(page, "brand-form")).to_contain_text("admin token")
    _submit(page, "brand-form", admin=ADMIN_TOKEN, name="Acme", currency="USD")
    key = page.locator("#brand-key-once code")
    expect(key).to_have_text(re.compile(r"^trk_"))
    api_key: str = key.inner_text()
    assert page.locator("#signin-key").input_value() == api_key
    page.click("#signin-form button[type=submit]")
    expect(page.locator("#brand-name")).to_have_text("Acme")
    expect(page.locator("#scope")).to_have_text("can edit")
    assert page.evaluate("document.cookie") == ""  # HttpOnly
    assert page.evaluate("Object.keys(localStorage).length + Object.keys(sessionStorage).length") == 0
    return api_key


def _manage(page: Any, base: str) -> str:
    """Campaign, influencer, link, store, fee and rate: created, edited, errors shown. The link's code."""
    from playwright.sync_api import expect

    _go(page, "campaigns")
    _submit(page, "campaign-form", name="Spring", value="150")
    expect(_error(page, "campaign-form")).to_contain_text("out of range")
    _submit(page, "campaign-form", name="Spring", value="10", fallback_url="https://shop.example/sale")
    row = page.locator("#campaigns-table tbody tr").first
    expect(row).to_contain_text("Spring")
    expect(row).to_contain_text("10 %")
    row.locator('[data-action="edit"]').click()
    form = page.locator("form[id^=campaign-edit-]")
    form.locator("[name=name]").fill("Spring 2027")
    form.locator("button[type=submit]").click()
    expect(page.locator("#campaigns-table tbody tr").first).to_contain_text("Spring 2027")

    _go(page, "influencers")
    _submit(page, "influencer-form", name="Anna", handle="@anna", platform="instagram")
    row = page.locator("#influencers-table tbody tr").first
    expect(row).to_contain_text("@anna")
    row.locator('[data-action="edit"]').click()
    form = page.locator("form[id^=influencer-edit-]")
    form.locator("[name=name]").fill("")
    form.locator("button[type=submit]").click()
    expect(form.locator(".form-error")).to_contain_text("name")
    form.locator("[name=name]").fill("Anna B")
    form.locator("button[type=submit]").click()
    expect(page.locator("#influencers-table tbody tr").first).to_contain_text("Anna B")
    page.locator('#influencers-table [data-action="portal"]').first.click()
    expect(page.locator("#influencers-table .once code")).to_contain_text("/portal/signin?token=pst_")

    _go(page, "links")
    _submit(page, "link-form", destination_url="ftp://shop.example/p")
    expect(_error(page, "link-form")).to_contain_text("destination_url")
    _submit(page, "link-form", destination_url="https://shop.example/p")
    row = page.locator("#links-table tbody tr").first
    expect(row).to_contain_text("Anna B")
    code: str = row.get_attribute("data-code") or ""
    row.locator("button[data-copy]").click()
    expect(row.locator("button[data-copy]")).to_have_text("Copied!")
    assert page.evaluate("navigator.clipboard.readText()") == f"{base}/{code}"
    row.locator('[data-action="qr"]').click()
    qr = page.locator("img.qr")
    expect(qr).to_have_js_property("complete", True)
    assert qr.evaluate("i => i.naturalWidth") > 0
    row.locator('[data-action="toggle"]').click()
    expect(page.locator(f'#links-table tr[data-code="{code}"]')).to_contain_text("disabled")
    page.locator(f'#links-table tr[data-code="{code}"] [data-action="toggle"]').click()
    expect(page.locator(f'#links-table tr[data-code="{code}"]')).to_contain_text("live")
    page.locator(f'#links-table tr[data-code="{code}"] [data-action="destination"]').click()
    form = page.locator(f"#link-edit-{code}")
    form.locator("[name=destination_url]").fill("https://shop.example/p2")
    form.locator("button[type=submit]").click()
    expect(page.locator(f'#links-table tr[data-code="{code}"]')).to_contain_text("https://shop.example/p2")
    page.click("#bulk summary")
    page.set_input_files("#bulk-file", files=[{"name": "people.csv", "mimeType": "text/csv",
                                               "buffer": b"name,handle\nBob,@bob\nCleo,@cleo\n"}])
    expect(page.locator("#bulk-form [name=csv]")).to_have_value("name,handle\nBob,@bob\nCleo,@cleo\n")
    _submit(page, "bulk-form", destination_url="https://shop.example/b")
    expect(page.locator('#bulk-results tr[data-result="ok"]')).to_have_count(2)

    _go(page, "stores")
    _submit(page, "store-form", name="Shop", platform="Shopify")
    expect(_error(page, "store-form")).to_contain_text("webhook_secret")
    _submit(page, "store-form", name="Shop", platform="custom (postbacks)")
    expect(page.locator("#store-created .secret").first).to_have_text(re.compile(r"^[0-9a-f]{64}$"))
    expect(page.locator("#store-created pre").first).to_contain_text("openssl dgst -sha256 -hmac")
    expect(page.locator("#stores-table tbody tr")).to_have_count(1)

    _go(page, "rates")
    _submit(page, "rate-form", currency="EUR", rate="-1")
    expect(_error(page, "rate-form")).to_contain_text("greater than 0")
    _submit(page, "rate-form", currency="EUR", rate="1.08")
    expect(page.locator('#rates-table tr[data-currency="EUR"]')).to_contain_text("1.08 USD")

    _go(page, "keys")
    _submit(page, "key-form", name="BI", scope="read")
    shown = page.locator("#key-shown .secret")
    expect(shown).to_have_text(re.compile(r"^trk_"))
    first = shown.inner_text()
    page.locator('#keys-table tr:has-text("BI") [data-action="rotate"]').click()
    expect(shown).not_to_have_text(first)
    expect(shown).to_have_text(re.compile(r"^trk_"))
    page.once("dialog", lambda d: d.accept())
    page.locator('#keys-table tr:has-text("this session") [data-action="revoke"]').click()
    expect(page.locator("#keys-table .form-error")).to_contain_text("last write key")
    page.once("dialog", lambda d: d.accept())
    page.locator('#keys-table tr:has-text("BI") [data-action="revoke"]').click()
    expect(page.locator("#keys-table tbody tr")).to_have_count(1)

    _go(page, "fees")
    _submit(page, "fee-form", influencer_id="Anna B", amount="1.234")
    expect(_error(page, "fee-form")).to_contain_text("amount")
    _submit(page, "fee-form", influencer_id="Anna B", amount="250")
    row = page.locator("#fees-table tbody tr").first
    expect(row).to_contain_text("250.00 USD")
    row.locator('[data-action="edit"]').click()
    page.locator("form[id^=fee-edit-] [name=amount]").fill("300")
    page.locator("form[id^=fee-edit-] button[type=submit]").click()
    expect(page.locator("#fees-table tbody tr").first).to_contain_text("300.00 USD")
    _submit(page, "fee-form", influencer_id="Bob", amount="20", currency="EUR", note="story")
    expect(page.locator("#fees-table tbody tr")).to_have_count(2)
    page.once("dialog", lambda d: d.accept())
    page.locator('#fees-table tr:has-text("Bob") [data-action="delete"]').click()
    expect(page.locator("#fees-table tbody tr")).to_have_count(1)
    return code


def _report(page: Any, base: str, code: str, worker: Worker) -> None:
    from playwright.sync_api import expect

    # A follower clicks (with the browser's own user agent and Accept; the shop is not on this machine,
    # so the redirect is read, not followed).
    resp = page.request.get(f"{base}/{code}", max_redirects=0, headers={"Accept": "text/html"})
    assert resp.status == 302 and resp.headers["location"].startswith("https://shop.example/p2?click_id=")
    worker.drain()
    page.goto(base + "/app#reports")
    page.wait_for_selector("body[data-state=ready]")
    row = page.locator('#report-table tr[data-key="Anna B"]')
    expect(row.locator('[data-metric="clicks"]')).to_contain_text("1")
    expect(row.locator('[data-metric="fees"]')).to_contain_text("300.00 USD")
    expect(page.locator('#report-table tr[data-key="totals"] [data-metric="cost"]')).to_contain_text("300.00 USD")
    page.click('button[data-dimension="campaign"]')
    expect(page.locator('#report-table tr[data-key="Spring 2027"] [data-metric="clicks"]')).to_contain_text("1")
    page.select_option("#report-preset", "7")
    expect(page.locator("#report-status")).to_contain_text("compared with")
    href = page.locator("#report-csv").get_attribute("href") or ""
    assert "format=csv" in href and "group_by=campaign" in href
    csv = page.evaluate(f"fetch({href!r}).then(r => r.text())")
    assert "campaign_id,campaign_name" in csv.splitlines()[0] and "Spring 2027" in csv


def _expiry(page: Any, base: str, api_key: str, redis_url: str) -> None:
    """A session that runs out while the page is open: the next request shows the sign-in form."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    import redis.asyncio as aioredis
    from playwright.sync_api import expect

    from tests.conftest import SECRET_KEY
    from tracker.api.brandsessions import COOKIE, BrandSessions
    from tracker.core.credentials import token_hash

    async def short() -> str:
        client = aioredis.from_url(redis_url)
        try:
            cookie, _ = await BrandSessions(client, SECRET_KEY, 1).open(token_hash(api_key), 2)
            return cookie
        finally:
            await client.aclose()

    # Playwright's sync API runs a loop in this thread: the coroutine runs in another one.
    with ThreadPoolExecutor(1) as pool:
        cookie = pool.submit(asyncio.run, short()).result()
    page.context.add_cookies([{"name": COOKIE, "value": cookie, "url": base}])
    page.goto(base + "/app#campaigns")
    page.reload()  # the page was open (a hash change alone does not reload it)
    page.wait_for_selector("body[data-state=ready]")
    expect(page.locator("#brand-name")).to_have_text("Acme")

    def expired() -> bool:
        if page.locator("#signin-screen").is_visible():
            return True
        # Each visit of a view asks the server: the one after the expiry is refused.
        page.evaluate("location.hash = location.hash === '#fees' ? '#campaigns' : '#fees'")
        return False

    wait_until(expired, timeout=10, message="the session did not run out")
    expect(page.locator("#signin-form .form-error")).to_contain_text("session ended")


def _csrf_and_signout(page: Any) -> None:
    from playwright.sync_api import expect

    status = page.evaluate("""fetch('/api/v1/campaigns', {method: 'POST', headers: {'Content-Type': 'application/json'},
        body: JSON.stringify({name: 'x', commission: {type: 'percent', value: '1'}})})
        .then(async r => [r.status, (await r.json()).error.code])""")
    assert status == [403, "csrf_failed"]
    page.click("#signout")
    page.wait_for_selector("body[data-state=signed-out]")
    assert page.evaluate("fetch('/api/v1/campaigns').then(r => r.status)") == 401
    page.reload()
    page.wait_for_selector("body[data-state=signed-out]")
    expect(page.locator("#signin-screen")).to_be_visible()


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
def test_the_brand_app_on_desktop_and_phone(live: tuple[str, Worker, str]) -> None:
    from playwright.sync_api import expect, sync_playwright

    base, worker, redis_url = live
    requests: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            context = browser.new_context(timezone_id="UTC", viewport={"width": 1280, "height": 900}, user_agent=HUMAN)
            context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("request", lambda req: requests.append(req.url))
            key = _sign_up(page, base)
            code = _manage(page, base)
            _report(page, base, code, worker)
            page.screenshot(path=shot("app.png"), full_page=True)
            _csrf_and_signout(page)
            _expiry(page, base, key, redis_url)
            assert errors == []
            context.close()

            # A phone: the same key signs in; nothing is wider than the screen.
            phone = browser.new_context(timezone_id="UTC", viewport={"width": 390, "height": 844}, is_mobile=True,
                                        has_touch=True, user_agent=HUMAN)
            page = phone.new_page()
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("request", lambda req: requests.append(req.url))
            page.goto(base + "/app")
            page.wait_for_selector("body[data-state=signed-out]")
            _submit(page, "signin-form", key=key)
            page.wait_for_selector("body[data-state=ready]")
            for view in ("campaigns", "links", "fees", "reports"):
                page.goto(f"{base}/app#{view}")
                page.wait_for_selector(f"#view-{view}")
                page.wait_for_selector("body[data-state=ready]")
                assert page.evaluate("document.documentElement.scrollWidth") <= 390, view
            expect(page.locator('#report-table tr[data-key="totals"]')).to_be_visible()
            page.screenshot(path=shot("app-phone.png"), full_page=True)
            assert errors == []
            phone.close()
        finally:
            browser.close()
    assert requests and all(u.startswith(base) for u in requests), requests
