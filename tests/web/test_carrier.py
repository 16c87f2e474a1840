"""``GET /t.js`` served, and the carrier in a real browser: short link -> landing page -> cookie ->
Shopify cart attribute -> the order webhook carrying the click id is attributed to the link."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from loadtests.serve import free_port
from tests.conversions.platforms import SECRETS, b64_hmac, compact, shopify_order
from tests.conversions.world import make_world
from tests.live import live_server, serving
from tests.waiting import wait_until
from tracker.app import create_app
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse
from tracker.web import carrier

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def client(ch: ClickHouse, settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), follow_redirects=False) as c:
        yield c


def test_served_cacheable_and_revalidated(client: TestClient) -> None:
    r = client.get("/t.js")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/javascript; charset=utf-8"
    assert r.content == (carrier.STATIC / "t.js").read_bytes()
    assert r.headers["cache-control"] == "public, max-age=3600"
    etag = r.headers["etag"]
    assert etag.startswith('"') and len(etag) > 10
    for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        again = client.get("/t.js", headers={"If-None-Match": header})
        assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    assert client.get("/t.js", headers={"If-None-Match": '"stale"'}).status_code == 200


def landing_app(tracker: str, carts: list[dict[str, Any]]) -> Starlette:
    """A store's landing page with the script tag, and Shopify's Ajax cart endpoint faked."""

    async def landing(request: Request) -> Response:
        return HTMLResponse(
            "<!doctype html><html><head><title>Linen shirt</title>"
            "<script>window.Shopify = {shop: 'demo.myshopify.com'};</script>"
            f'<script src="{tracker}/t.js" data-param="click_id" async></script>'
            "</head><body><h1>Linen shirt</h1></body></html>"
        )

    async def cart_update(request: Request) -> Response:
        carts.append({"body": json.loads(await request.body()), "cookie": request.headers.get("cookie", "")})
        response = JSONResponse({"token": "c1-7f3a9b2e", "attributes": {}})
        response.set_cookie("cart", "c1-7f3a9b2e", path="/")
        return response

    return Starlette(routes=[Route("/p/linen-shirt", landing), Route("/cart/update.js", cart_update, methods=["POST"])])


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
def test_the_click_id_travels_from_the_short_link_to_the_order(ch: ClickHouse, settings: Settings) -> None:
    from playwright.sync_api import sync_playwright

    tracker_port, shop_port = free_port(), free_port()
    tracker = f"http://127.0.0.1:{tracker_port}"
    shop = f"http://127.0.0.1:{shop_port}"
    settings = settings.with_(public_url=tracker)
    with TestClient(create_app(settings)) as c:
        world = make_world(c, settings)
        link = world.call(world.registry.create_link, world.brand["id"], campaign_id=world.campaign_id,
                          influencer_id=world.influencer_id, destination_url=f"{shop}/p/linen-shirt?ref=bio")
        store = world.call(world.registry.create_store, world.brand["id"], name="Shopify", platform="shopify",
                           webhook_secret=SECRETS["shopify"])
    carts: list[dict[str, Any]] = []
    with live_server(settings, tracker_port), serving(landing_app(tracker, carts), shop_port), \
            sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            context = browser.new_context()
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{tracker}/{link['code']}")  # the follower clicks the influencer's short link
            assert page.url.startswith(f"{shop}/p/linen-shirt?")
            query = parse_qs(urlsplit(page.url).query)
            click_id = query["click_id"][0]
            assert query["ref"] == ["bio"]
            wait_until(lambda: carts, timeout=10, message="the carrier sent no cart attribute request")
            cookies = {c["name"]: c for c in context.cookies(shop)}
            assert cookies["trk_click_id"]["value"] == click_id
            assert cookies["trk_click_id"]["sameSite"] == "Lax"
            assert cookies["trk_click_id"]["expires"] > time.time() + 89 * 86400
            assert page.evaluate("window.trk.clickId()") == click_id
            assert carts[0]["body"] == {"attributes": {"click_id": click_id}}
            # The next page of the same cart does not send it again.
            page.goto(f"{shop}/p/linen-shirt")
            page.wait_for_load_state("load")
            assert page.evaluate("window.trk.clickId()") == click_id and len(carts) == 1
            assert errors == []
            # A follower with a mistyped link (well-formed, or not a code at all) gets the page that says so,
            # written by the HTTP protocol itself (api.early), its inline style allowed by the page's CSP.
            for wrong in (f"{link['code']}x", "no.such.link"):
                resp = page.goto(f"{tracker}/{wrong}")
                assert resp is not None and resp.status == 404
                assert page.locator("h1").inner_text() == "This link does not exist"
                assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(246, 247, 249)"
        finally:
            browser.close()

        # Shopify copies the cart attribute into the order's note_attributes: the webhook is attributed.
        order = shopify_order(world, 4242)
        order["note_attributes"] = [{"name": "click_id", "value": click_id}]
        body = compact(order)
        r = httpx.post(f"{tracker}/api/v1/integrations/shopify/{store.store['id']}", content=body, headers={
            "X-Shopify-Hmac-Sha256": b64_hmac(SECRETS["shopify"], body), "X-Shopify-Topic": "orders/create",
            "X-Shopify-Webhook-Id": "wh-4242", "Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    conversion = r.json()["conversion"]
    assert (conversion["attribution"], conversion["link_code"]) == ("click", link["code"])
