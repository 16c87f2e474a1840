"""Store connectors pass the order's country into the conversion, so the coupon-leak detector's
"countries where the link had no clicks" works for platform orders too."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import redis
from starlette.testclient import TestClient

from tests.conversions.platforms import fixture, make_shops
from tests.conversions.world import make_world
from tests.money.helpers import api
from tests.redirect.test_handler import asgi_get
from tracker.app import create_app
from tracker.ingest.worker import Worker
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse

UA = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Mobile"


@pytest.fixture
def client(ch: ClickHouse, settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings.with_(country_header="CF-IPCountry")), follow_redirects=False) as c:
        yield c


def test_connector_orders_from_countries_without_clicks_are_leak_suspects(
    client: TestClient, settings: Settings, redis_client: redis.Redis, ch: ClickHouse
) -> None:
    world = make_world(client, settings)
    shops = make_shops(world)
    # Four coupon orders of one link and no click-attributed one: only the country reason is looked at here.
    assert api(world, "PUT", "/api/v1/rules", json={"coupon_leak_factor": "10"}).status_code == 200
    # The ANNA10 link's clicks come from the US only.
    status, _ = asgi_get(client, f"/{world.link['code']}", peer="127.0.0.1",
                         headers={"User-Agent": UA, "CF-IPCountry": "US"})
    assert status == 302
    now = datetime.now(UTC)

    shop = fixture("shopify", "orders_create_usd.json")  # ships to the US (bills to Canada), coupon ANNA10
    shop.update(id=9001, note_attributes=[], landing_site=None, processed_at=now.isoformat(),
                created_at=now.isoformat())
    woo = fixture("woocommerce", "order_created_processing_usd.json")
    woo.update(id=9002, meta_data=[], coupon_lines=[{"id": 1, "code": "ANNA10"}], shipping={"country": "BR"},
               date_created_gmt=now.strftime("%Y-%m-%dT%H:%M:%S"))
    session = fixture("stripe", "checkout_session_completed_usd.json")
    session["created"] = int(now.timestamp())
    obj = session["data"]["object"]
    obj.update(payment_intent="pi_9003", client_reference_id=None, metadata={"coupon_code": "ANNA10"})
    obj["customer_details"]["address"]["country"] = "DE"
    no_country = fixture("shopify", "orders_create_usd.json")
    no_country.update(id=9004, note_attributes=[], landing_site=None, processed_at=now.isoformat(),
                      shipping_address=None, billing_address=None, customer=None)  # a guest
    for platform, payload in (("shopify", shop), ("woocommerce", woo), ("stripe", session),
                              ("shopify", no_country)):
        r = shops.send(platform, payload)
        assert r.status_code == 200, r.text
        assert r.json()["conversion"]["attribution"] == "coupon", r.text
    Worker(settings, redis_client, ch, name="country").drain()

    rows = ch.query("SELECT order_id, country FROM conversions FINAL WHERE brand_id = {b:String} ORDER BY order_id",
                    {"b": world.brand["id"]})
    assert [tuple(r) for r in rows] == [("9001", "US"), ("9002", "BR"), ("9004", ""), ("pi_9003", "DE")]
    r = api(world, "GET", "/api/v1/rules/review-queue")
    assert r.status_code == 200, r.text
    flagged = {i["order_id"]: (i["flags"], i["evidence"]["leak_reasons"]) for i in r.json()["items"]}
    assert flagged == {"9002": (["coupon_leak"], ["country"]), "pi_9003": (["coupon_leak"], ["country"])}
    leaks = api(world, "GET", "/api/v1/rules/coupon-leaks").json()["items"]
    [leak] = leaks
    assert leak["coupon_code"] == "ANNA10" and leak["foreign_countries"] == ["BR", "DE"]
    assert leak["link_click_countries"] == ["US"]
