"""Returning customers and subscriptions, and every fixture summed to the cent in the reports."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest
import redis

from tests.conversions.platforms import Shops, fixture, fixture_bytes, make_shops
from tests.conversions.world import World, stream_rows
from tracker.conversions.attribution import add_months
from tracker.ingest.worker import Worker
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse

DAY = 86_400


@pytest.fixture
def shops(world: World) -> Shops:
    return make_shops(world)


def _subscription(world: World, link: dict[str, Any] | None, started: int) -> dict[str, Any]:
    event = fixture("stripe", "checkout_session_completed_subscription.json")
    event["created"] = event["data"]["object"]["created"] = started
    event["data"]["object"]["client_reference_id"] = world.click(link, started * 1000) if link else None
    return event


def _renewal(n: int, paid: int) -> dict[str, Any]:
    event = fixture("stripe", "invoice_paid_subscription_cycle.json")
    event["id"] = f"evt_renewal_{n}"
    invoice = event["data"]["object"]
    invoice["id"] = f"in_renewal_{n}"
    event["created"] = invoice["created"] = invoice["status_transitions"]["paid_at"] = paid
    return event


def _link_with_months(world: World, months: int) -> dict[str, Any]:
    campaign = world.call(world.registry.create_campaign, world.brand["id"], name=f"R{months}",
                          commission_type="percent", commission_value=Decimal("10"), recurring_months=months)
    link: dict[str, Any] = world.call(world.registry.create_link, world.brand["id"], campaign_id=campaign["id"],
                                      influencer_id=world.influencer_id, destination_url="https://shop.example/r")
    return link


def test_stripe_renewals_are_credited_to_the_link_that_brought_the_customer(shops: Shops) -> None:
    world = shops.world
    now = int(time.time())
    first = shops.send("stripe", _subscription(world, world.link, now - 600)).json()["conversion"]
    assert (first["attribution"], first["link_code"]) == ("click", world.link["code"])
    for n, paid in enumerate((now - 300, now - 60)):
        renewal = shops.send("stripe", _renewal(n, paid)).json()["conversion"]
        assert (renewal["order_id"], renewal["attribution"], renewal["link_code"], renewal["commission"]) == (
            f"in_renewal_{n}", "customer", world.link["code"], "2.90"), renewal


@pytest.mark.parametrize(
    ("months", "first_ago_days", "credited"),
    [(12, 30, True), (0, 30, False), (12, 400, False), (1, 20, True), (1, 40, False)],
)
def test_the_recurring_window(shops: Shops, months: int, first_ago_days: int, credited: bool) -> None:
    world = shops.world
    link = _link_with_months(world, months)
    now = int(time.time())
    started = now - first_ago_days * DAY
    first = shops.send("stripe", _subscription(world, link, started)).json()["conversion"]
    assert first["attribution"] == "click"
    renewal = shops.send("stripe", _renewal(1, now - 10)).json()["conversion"]
    assert (renewal["attribution"] == "customer") is credited
    assert renewal["attributed"] is credited


def test_a_returning_customer_by_postback(world: World, redis_client: redis.Redis) -> None:
    first = world.post({"order_id": "RC-1", "amount": "50.00", "currency": "USD", "click_id": world.click(world.link),
                        "customer_id": "C-9", "customer_email": " Ann@Example.COM "}).json()
    assert first["attribution"] == "click"
    later = world.post({"order_id": "RC-2", "amount": "20.00", "currency": "USD", "customer_id": "C-9"}).json()
    assert (later["attribution"], later["link_code"], later["commission"]) == ("customer", world.link["code"], "2.00")
    # A returning customer beats a coupon; another customer with the coupon gets the coupon's link.
    with_coupon = world.post({"order_id": "RC-3", "amount": "20.00", "currency": "USD", "customer_id": "C-9",
                              "coupon_code": "BOB5"}).json()
    assert with_coupon["attribution"] == "customer"
    other = world.post({"order_id": "RC-4", "amount": "20.00", "currency": "USD", "customer_id": "C-10",
                        "coupon_code": "BOB5"}).json()
    assert (other["attribution"], other["link_code"]) == ("coupon", world.coupon_link["code"])
    rows = {r["order_id"]: r for r in stream_rows(redis_client)}
    assert rows["RC-1"]["customer_hash"] == rows["RC-2"]["customer_hash"] != rows["RC-4"]["customer_hash"]
    assert len(rows["RC-1"]["email_hash"]) == 32 and "C-9" not in str(rows) and "ann@" not in str(rows).lower()


def test_a_returning_customer_survives_redis_losing_its_data(
    world: World, redis_client: redis.Redis, ch: ClickHouse, settings: Settings
) -> None:
    world.post({"order_id": "RL-1", "amount": "50.00", "currency": "USD", "click_id": world.click(world.link),
                "customer_id": "C-7"})
    assert Worker(settings, redis_client, ch, name="t-cust").drain() == 1
    redis_client.flushdb()
    later = world.post({"order_id": "RL-2", "amount": "20.00", "currency": "USD", "customer_id": "C-7"}).json()
    assert (later["attribution"], later["link_code"]) == ("customer", world.link["code"])


@pytest.mark.parametrize(
    ("start", "months", "end"),
    [("2026-01-31T10:00:00", 1, "2026-02-28T10:00:00"), ("2024-01-31T00:00:00", 1, "2024-02-29T00:00:00"),
     ("2026-11-15T12:00:00", 12, "2027-11-15T12:00:00"), ("2026-12-31T23:59:59", 2, "2027-02-28T23:59:59")],
)
def test_calendar_months(start: str, months: int, end: str) -> None:
    from datetime import datetime

    assert add_months(datetime.fromisoformat(start), months) == datetime.fromisoformat(end)


# --- every fixture, through the reports, to the cent ------------------------------------------------

_SENT = [
    ("shopify", "orders_create_usd.json", "orders/create"),
    ("shopify", "refunds_create_usd.json", "refunds/create"),
    ("shopify", "orders_paid_jpy_taxes_included.json", "orders/paid"),
    ("shopify", "orders_updated_partial_refund_eur.json", "orders/updated"),
    ("shopify", "orders_cancelled_usd_refunded.json", "orders/cancelled"),
    ("shopify", "orders_cancelled_kwd_voided.json", "orders/cancelled"),
    ("woocommerce", "order_created_processing_usd.json", "order.created"),
    ("woocommerce", "order_created_on_hold_kwd.json", "order.created"),
    ("woocommerce", "order_updated_cancelled_kwd.json", "order.updated"),
    ("woocommerce", "order_updated_partial_refund_gbp.json", "order.updated"),
    ("woocommerce", "order_updated_refunded_jpy.json", "order.updated"),
    ("stripe", "checkout_session_completed_usd.json", None),
    ("stripe", "charge_refunded_partial_usd.json", None),
    ("stripe", "checkout_session_completed_jpy.json", None),
    ("stripe", "charge_refunded_full_jpy.json", None),
    ("stripe", "checkout_session_completed_eur_unpaid.json", None),
    ("stripe", "checkout_session_async_payment_succeeded_eur.json", None),
    ("stripe", "checkout_session_completed_subscription.json", None),
    ("stripe", "invoice_paid_kwd.json", None),
    ("stripe", "invoice_paid_subscription_cycle.json", None),
    ("stripe", "customer_created.json", None),
]
RATES = {"EUR": "1.08", "JPY": "0.0068", "KWD": "3.25", "GBP": "1.27"}
# Worked by hand, per order: net revenue in USD of what still counts (approved or pending).
EXPECTED_NET = {
    "5822061346982": None,  # 23.33 then 124.60 refunded of 147.93: fully refunded
    "5931700486401": "116.84",  # JPY 17182 (tax taken out of a taxes-included subtotal) x 0.0068
    "5940013187226": "55.68",  # EUR 75.00, 30.00 of 96.00 refunded -> 23.44; 81.00 - 25.32
    "5955102228651": None,  # voided
    "4127": "51.00",
    "5310": None,  # on hold, then cancelled unpaid: rejected
    "4133": "28.85",  # GBP 41.67, 25.00 of 54.96 refunded -> 18.95; 52.92 - 24.07
    "8802": None,  # refunded
    "pi_3QLa2bLmR8sT2vXy0c4D5e6F": "49.53",  # 75.65, 30.00 of 86.89 refunded -> 26.12
    "pi_3QLgGzLmR8sT2vXy1JpYn002": None,  # fully refunded
    "pi_3QLsepaLmR8sT2vXy2SepaPi1": "129.60",  # SEPA pending, then paid: EUR 120 x 1.08
    "in_1QLsub0LmR8sT2vXyInv00001": "29.00",
    "in_1QLkwd0LmR8sT2vXyInvKwd01": "43.88",  # KWD 13.500 x 3.25 = 43.875, half-up
    "in_1QXren0LmR8sT2vXyInv00002": "29.00",
}


def test_reports_equal_the_fixtures_to_the_cent(
    shops: Shops, redis_client: redis.Redis, ch: ClickHouse, settings: Settings
) -> None:
    world = shops.world
    h = {"Authorization": f"Bearer {world.brand['api_key']}"}
    for currency, rate in RATES.items():
        assert world.client.put(f"/api/v1/fx-rates/{currency}", json={"rate": rate}, headers=h).status_code == 200
    for platform, name, topic in _SENT:
        r = shops.send(platform, fixture_bytes(platform, name), topic=topic)
        assert r.status_code == 200 and r.json().get("refused") is None, (name, r.text)
    Worker(settings, redis_client, ch, name="t-fixtures").drain()
    rows = ch.query_dicts(
        "SELECT order_id, status, amount - refunded_amount AS net FROM conversions FINAL WHERE brand_id = {b:String}",
        {"b": world.brand["id"]},
    )
    got = {r["order_id"]: (str(r["net"].quantize(Decimal("0.01"))) if r["status"] in ("approved", "pending")
                           else None) for r in rows}
    assert got == EXPECTED_NET
    report = world.client.get("/api/v1/reports", params={"from": "2026-11-01", "to": "2026-12-31",
                                                         "group_by": "campaign"}, headers=h).json()
    totals = report["totals"]
    expected = sum((Decimal(v) for v in EXPECTED_NET.values() if v), Decimal(0))
    assert Decimal(totals["revenue"]) + Decimal(totals["unattributed_revenue"]) == expected == Decimal("533.38")
