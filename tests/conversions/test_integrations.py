"""Platform webhooks end to end: signatures, topics, re-deliveries, held refunds, refusals, no loss."""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from typing import Any

import pytest
import redis
from starlette.testclient import TestClient

from tests.conversions.platforms import (
    SECRETS,
    Shops,
    compact,
    fixture,
    fixture_bytes,
    make_shops,
    shopify_order,
)
from tests.conversions.world import World, stream_rows
from tests.waiting import wait_until
from tracker.core import keys
from tracker.ingest.worker import Worker
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse


@pytest.fixture
def shops(world: World) -> Shops:
    return make_shops(world)


def test_each_platform_records_its_order(shops: Shops, redis_client: redis.Redis) -> None:
    r = shops.send("shopify", fixture_bytes("shopify", "orders_create_usd.json"))
    assert r.status_code == 200, r.text
    conv = r.json()["conversion"]
    # subtotal_price after the ANNA10 discount, before shipping and tax; the coupon attributes.
    assert (conv["order_id"], conv["amount"], conv["attribution"], conv["commission"]) == (
        "5822061346982", "127.80", "coupon", "12.78")
    r = shops.send("woocommerce", fixture_bytes("woocommerce", "order_created_processing_usd.json"))
    assert r.status_code == 200 and r.json()["conversion"]["status"] == "approved", r.text
    r = shops.send("stripe", fixture_bytes("stripe", "checkout_session_completed_usd.json"))
    assert r.status_code == 200 and r.json()["conversion"]["status"] == "approved", r.text
    rows = stream_rows(redis_client)
    assert len(rows) == 3
    assert all(len(row["customer_hash"]) == 32 and row["platform_state"] for row in rows)
    assert "7391048213670" not in str(rows) and "mia.rossi" not in str(rows)


# --- what is refused, and that it stores nothing -----------------------------------------------------


def _bad_requests(shops: Shops) -> list[tuple[str, Any, int]]:
    order = fixture_bytes("shopify", "orders_create_usd.json")
    other = shops.world.call(shops.world.registry.create_store, shops.world.brand["id"], name="other",
                             platform="shopify", webhook_secret="shpss_another_store_secret")
    stale = int(time.time()) - 400
    return [
        ("bad signature", lambda: shops.send("shopify", order, secret="shpss_wrong_secret_000000"), 401),
        ("other store's secret", lambda: shops.send("shopify", order, secret="shpss_another_store_secret"), 401),
        ("right secret, other store", lambda: shops.send("shopify", order, store_id=other.store["id"]), 401),
        ("unknown store", lambda: shops.send("shopify", order, store_id="sto_0000000000000000"), 401),
        ("garbled store id", lambda: shops.send("shopify", order, store_id="nope"), 401),
        ("store of another platform", lambda: shops.send("shopify", order, store_id=shops.stores["stripe"]), 401),
        ("stale stripe timestamp", lambda: shops.send(
            "stripe", fixture_bytes("stripe", "checkout_session_completed_usd.json"), ts=stale), 401),
        ("malformed json", lambda: shops.send("shopify", b'{"id": 1, "subtotal_price": '), 400),
        ("not an order", lambda: shops.send("shopify", compact({"id": 7})), 422),
        ("5 MB body", lambda: shops.send("shopify", b"{" + b" " * 5_000_000 + b"}"), 413),
        ("unknown topic", lambda: shops.send("shopify", order, topic="products/update"), 200),
        ("woo ping", lambda: shops.client.post(shops.url("woocommerce"), content=b"webhook_id=42",
                                               headers={"Content-Type": "application/x-www-form-urlencoded"}), 200),
        ("stripe event type not handled", lambda: shops.send(
            "stripe", fixture_bytes("stripe", "customer_created.json")), 200),
    ]


def test_refused_and_ignored_requests_store_nothing_and_lose_nothing_around_them(
    shops: Shops, redis_client: redis.Redis
) -> None:
    world = shops.world
    for i, (name, send, status) in enumerate(_bad_requests(shops)):
        r = send()
        assert r.status_code == status, (name, r.text)
        if status == 401:
            assert r.json()["error"]["code"] in ("bad_signature", "stale_signature"), name
        elif status == 200:
            assert r.json()["ignored"] is True, name
        # A valid event right after each bad one is recorded.
        good = shops.send("shopify", shopify_order(world, 9000 + i, coupon="ANNA10"))
        assert good.status_code == 200 and good.json()["conversion"]["duplicate"] is False, (name, good.text)
    # An unknown store, a store of another platform and a wrong secret answer alike: ids cannot be probed.
    answers = [_bad_requests(shops)[i][1]().json() for i in (0, 2, 3, 4, 5)]
    assert all(a == answers[0] for a in answers), answers
    rows = stream_rows(redis_client)
    assert sorted(row["order_id"] for row in rows) == sorted(str(9000 + i) for i in range(13))


def test_twenty_concurrent_redeliveries_make_one_conversion(
    ch: ClickHouse, settings: Settings, shops: Shops, redis_client: redis.Redis
) -> None:
    from tracker.app import create_app

    payload = compact(shopify_order(shops.world, 777, click_link=shops.world.link))
    results: list[dict[str, Any]] = []
    lock = threading.Lock()
    start = threading.Barrier(20)
    with TestClient(create_app(settings)) as second:

        def send(i: int) -> None:
            start.wait()
            r = shops.send("shopify", payload, delivery="b4e1c9d0-redelivered", client=second if i % 2 else None)
            with lock:
                results.append({"status": r.status_code, **r.json()})

        threads = [threading.Thread(target=send, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert [r["status"] for r in results] == [200] * 20, results
    assert sum(1 for r in results if not r["conversion"]["duplicate"]) == 1
    assert {r["conversion"]["attribution"] for r in results} == {"click"}
    assert redis_client.xlen(keys.CONVERSION_STREAM) == 1
    # Later re-deliveries of the same webhook id are answered from the marker.
    again = shops.send("shopify", payload, delivery="b4e1c9d0-redelivered").json()
    assert again["redelivered"] is True and again["conversion"]["duplicate"] is True


# --- refunds ------------------------------------------------------------------------------------------


def test_a_refund_before_its_order_is_held_then_applied(shops: Shops, redis_client: redis.Redis,
                                                       ch: ClickHouse) -> None:
    refund = fixture("shopify", "refunds_create_usd.json")
    r = shops.send("shopify", refund, topic="refunds/create")
    assert r.status_code == 200 and r.json()["held"] is True, r.text
    assert redis_client.xlen(keys.CONVERSION_STREAM) == 0
    held = ch.query("SELECT count() FROM store_events FINAL WHERE kind = 'held' AND order_id = '5822061346982'")
    assert held[0][0] == 1
    # The same refund again changes nothing; the order then arrives and takes it.
    assert shops.send("shopify", refund, topic="refunds/create").json()["held"] is True
    order = shops.send("shopify", fixture_bytes("shopify", "orders_create_usd.json")).json()["conversion"]
    assert order["refunded_amount"] != "0.00" and order["status"] in ("approved", "refunded")
    assert redis_client.get(keys.held_refunds(shops.world.brand["id"], "5822061346982")) is None
    # Refunds merge by id: the refund delivered again after the order adds nothing.
    again = shops.send("shopify", refund, topic="refunds/create", delivery="another-delivery").json()
    assert again["conversion"]["duplicate"] is True
    assert again["conversion"]["refunded_amount"] == order["refunded_amount"]


def test_a_refused_event_is_answered_200_kept_and_redriven(shops: Shops, redis_client: redis.Redis) -> None:
    world = shops.world
    # EUR without a rate: not recordable yet.
    r = shops.send("shopify", fixture_bytes("shopify", "orders_updated_partial_refund_eur.json"),
                   topic="orders/updated")
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["refused"]["code"] == "missing_fx_rate" and answer["event_id"].startswith("sev_")
    assert redis_client.xlen(keys.CONVERSION_STREAM) == 0
    h = {"Authorization": f"Bearer {world.brand['api_key']}"}
    listed = world.client.get(f"/api/v1/stores/{shops.stores['shopify']}/events", headers=h).json()["items"]
    assert [(e["id"], e["kind"], e["code"], e["status"]) for e in listed] == [
        (answer["event_id"], "refused", "missing_fx_rate", "open")]
    assert world.client.put("/api/v1/fx-rates/EUR", json={"rate": "1.08"}, headers=h).status_code == 200
    url = f"/api/v1/stores/{shops.stores['shopify']}/events/{answer['event_id']}/redrive"
    redriven = world.client.post(url, headers=h)
    assert redriven.status_code == 200, redriven.text
    assert redriven.json()["conversion"]["original_currency"] == "EUR"
    assert world.client.post(url, headers=h).status_code == 409  # once
    assert redis_client.xlen(keys.CONVERSION_STREAM) == 1
    statuses = world.client.get(f"/api/v1/stores/{shops.stores['shopify']}/events", headers=h).json()["items"]
    assert statuses[0]["status"] == "redriven"


def test_a_rotated_secret_keeps_verifying_for_a_day(shops: Shops) -> None:
    world = shops.world
    h = {"Authorization": f"Bearer {world.brand['api_key']}"}
    r = world.client.patch(f"/api/v1/stores/{shops.stores['woocommerce']}",
                           json={"webhook_secret": "wc-new-secret-999"}, headers=h)
    assert r.status_code == 200
    lookups = world.client.app.state.services.conversions.lookups  # type: ignore[attr-defined]
    lookups.cache.forget(("store", shops.stores["woocommerce"]))  # this process's 2 s cache
    body = fixture_bytes("woocommerce", "order_created_processing_usd.json")
    assert shops.send("woocommerce", body, secret="wc-new-secret-999").status_code == 200
    assert shops.send("woocommerce", body, secret=SECRETS["woocommerce"], delivery="d2").status_code == 200
    assert shops.send("woocommerce", body, secret="wc-neither-secret", delivery="d3").status_code == 401


# --- Redis loses its data --------------------------------------------------------------------------------


def test_after_redis_lost_everything_no_order_is_counted_twice(
    shops: Shops, redis_client: redis.Redis, ch: ClickHouse, settings: Settings
) -> None:
    world = shops.world
    first = [shops.send("shopify", shopify_order(world, 5000 + i, coupon="ANNA10")).json() for i in range(5)]
    assert Worker(settings, redis_client, ch, name="t-loss").drain() == 5
    redis_client.flushdb()
    world.client.app.state.services.conversions.lookups.cache._entries.clear()  # type: ignore[attr-defined]
    conversions = world.client.app.state.services.conversions  # type: ignore[attr-defined]
    rebuilt = conversions.rebuild.completed  # the brand's first order built a filter; Redis just lost it
    again = [shops.send("shopify", shopify_order(world, 5000 + i, coupon="ANNA10")).json() for i in range(5)]
    assert all(a["conversion"]["duplicate"] for a in again)
    assert [a["conversion"]["conversion_id"] for a in again] == [f["conversion"]["conversion_id"] for f in first]
    # The filter is rebuilt from ClickHouse in the background; after that new orders skip ClickHouse.
    def rebuilt_after_an_order() -> bool:
        shops.send("shopify", shopify_order(world, 6000, coupon="ANNA10"))
        return bool(conversions.rebuild.completed > rebuilt)

    wait_until(rebuilt_after_an_order, timeout=30, message="the order filter was not rebuilt")
    reads = conversions.states.clickhouse_reads
    fresh = [shops.send("shopify", shopify_order(world, 7000 + i)).json() for i in range(20)]
    assert all(not f["conversion"]["duplicate"] for f in fresh)
    assert conversions.states.clickhouse_reads - reads <= 2  # only the filter's rare "maybe"
    replay = shops.send("shopify", shopify_order(world, 5001, coupon="ANNA10")).json()
    assert replay["conversion"]["duplicate"] is True
    Worker(settings, redis_client, ch, name="t-loss").drain()
    count = ch.query("SELECT count(), uniqExact(order_id) FROM conversions FINAL WHERE brand_id = {b:String}",
                     {"b": world.brand["id"]})
    assert count[0][0] == count[0][1] == 26


def test_new_orders_read_no_clickhouse(shops: Shops) -> None:
    world = shops.world
    conversions = world.client.app.state.services.conversions  # type: ignore[attr-defined]
    shops.send("shopify", shopify_order(world, 1))  # the first order of a brand finds no filter: it builds one
    wait_until(lambda: conversions.rebuild.completed > 0, timeout=30, message="the order filter was not built")
    reads = conversions.states.clickhouse_reads
    for i in range(30):
        assert world.post({"order_id": f"N-{i}", "amount": "10.00", "currency": "USD"}).status_code == 202
    assert conversions.states.clickhouse_reads - reads <= 2
    assert world.post({"order_id": "N-3", "amount": "10.00", "currency": "USD"}).json()["duplicate"] is True
    amount = Decimal(world.post({"order_id": "N-4", "amount": "10.00", "currency": "USD"}).json()["amount"])
    assert amount == Decimal("10.00")
