"""Every accepted conversion fits the ClickHouse columns it lands in (issue #13, item 2).

A 202 (or a platform's 200) must mean the row reaches reports: an amount that overflows
``Decimal(18, 4)`` once converted to the brand currency is refused with 422 up front
(a platform event is kept as refused, visible and re-drivable), never dead-lettered by ingest.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
import redis
from starlette.testclient import TestClient

from tests.conversions.platforms import make_shops, shopify_order
from tests.conversions.world import make_world, stream_rows
from tracker.core import keys
from tracker.ingest.worker import Worker
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse

# (brand currency, rate of the order's currency, order amount, order currency, status)
CASES = [
    # The case: 4,000,000,000.00 USD at 25,000 is 10^14 VND, one digit too many for Decimal(18, 4).
    ("VND", "25000", "4000000000.00", "USD", 422),
    ("VND", "25000", "3999999999.99", "USD", 202),  # 99,999,999,999,750 VND: the largest that fits
    ("VND", "25000", "9999999999999.99", "USD", 422),
    ("VND", None, "99999999999999", "VND", 422),  # beyond what a postback amount may be at all
    ("VND", None, "9999999999999", "VND", 202),
    ("USD", None, "9999999999999.99", "USD", 202),
    ("USD", "9999999999.99999999", "10000.00", "EUR", 422),
    ("USD", "9999999999.99999999", "9999.99", "EUR", 202),  # 99,999,900,000,000.00 USD
    ("KWD", "1000", "100000000000.00", "USD", 422),  # 10^14 KWD
    ("KWD", "1000", "99999999999.99", "USD", 202),
]


@pytest.mark.parametrize(("brand_currency", "rate", "amount", "currency", "status"), CASES)
def test_a_postback_is_accepted_only_if_it_fits_the_columns(
    app_client: TestClient, settings: Settings, redis_client: redis.Redis, ch: ClickHouse,
    brand_currency: str, rate: str | None, amount: str, currency: str, status: int,
) -> None:
    world = make_world(app_client, settings, currency=brand_currency)
    h = {"Authorization": f"Bearer {world.brand['api_key']}"}
    if rate is not None:
        assert app_client.put(f"/api/v1/fx-rates/{currency}", json={"rate": rate}, headers=h).status_code == 200
    r = world.post({"order_id": "BIG-1", "amount": amount, "currency": currency, "click_id": world.click(world.link)})
    assert r.status_code == status, r.text
    worker = Worker(settings, redis_client, ch, name="t-bounds")
    if status == 422:
        assert r.json()["error"]["code"] in ("amount_too_large", "invalid_amount")
        assert stream_rows(redis_client) == []
        # A retry is refused again (not answered "duplicate": nothing was kept).
        again = world.post({"order_id": "BIG-1", "amount": amount, "currency": currency})
        assert again.status_code == 422
        return
    answer = r.json()
    assert worker.drain() == 1
    assert worker.dead_lettered == 0
    stored = ch.query(
        "SELECT amount, original_amount, commission FROM conversions FINAL WHERE brand_id = {b:String}",
        {"b": world.brand["id"]},
    )
    assert [tuple(Decimal(v) for v in row) for row in stored] == [
        (Decimal(answer["amount"]), Decimal(answer["original_amount"]), Decimal(answer["commission"]))]


def test_a_status_change_that_would_overflow_is_refused(
    app_client: TestClient, settings: Settings, redis_client: redis.Redis
) -> None:
    world = make_world(app_client, settings, currency="VND")
    h = {"Authorization": f"Bearer {world.brand['api_key']}"}
    assert app_client.put("/api/v1/fx-rates/USD", json={"rate": "25000"}, headers=h).status_code == 200
    first = world.post({"order_id": "P-1", "amount": "1.00", "currency": "USD", "status": "pending"})
    assert first.status_code == 202, first.text
    grown = world.post({"order_id": "P-1", "amount": "4000000000.00", "currency": "USD", "status": "approved"})
    assert grown.status_code == 422, grown.text
    assert grown.json()["error"]["code"] == "amount_too_large"
    assert len(stream_rows(redis_client)) == 1


@pytest.mark.parametrize(
    ("amount", "status", "outcome"),
    [
        ("4000000000.00", 200, "amount_too_large"),  # the order, from Shopify
        ("1000000000000000000000000000000.00", 200, "amount_too_large"),  # 31 digits: still kept as refused
        ("99999999999999999999999999999999999999", 200, "amount_too_large"),
        ("1e50", 422, "invalid_payload"),  # not an amount at all: refused, nothing kept (the platform retries)
    ],
)
def test_an_overflowing_platform_event_is_kept_as_refused_not_dead_lettered(
    app_client: TestClient, settings: Settings, redis_client: redis.Redis, ch: ClickHouse,
    amount: str, status: int, outcome: str,
) -> None:
    world = make_world(app_client, settings, currency="VND")
    shops = make_shops(world)
    h = {"Authorization": f"Bearer {world.brand['api_key']}"}
    assert app_client.put("/api/v1/fx-rates/USD", json={"rate": "25000"}, headers=h).status_code == 200
    order = shopify_order(world, 4242)
    for key in ("subtotal_price", "total_price"):
        order[key] = amount
        order[f"{key}_set"] = {side: {"amount": amount, "currency_code": "USD"}
                               for side in ("shop_money", "presentment_money")}
    r = shops.send("shopify", order)
    # 2xx only when the event is kept: refused, with its reason, listed for the brand.
    assert r.status_code == status, r.text
    listed = app_client.get(f"/api/v1/stores/{shops.stores['shopify']}/events", headers=h).json()["items"]
    assert redis_client.xlen(keys.CONVERSION_STREAM) == 0
    if status == 422:
        assert r.json()["error"]["code"] == outcome
        assert listed == []
        return
    answer = r.json()
    assert answer["refused"]["code"] == outcome, answer
    assert [(e["id"], e["code"], e["status"]) for e in listed] == [(answer["event_id"], outcome, "open")]
    worker = Worker(settings, redis_client, ch, name="t-bounds")
    worker.drain()
    assert worker.dead_lettered == 0
