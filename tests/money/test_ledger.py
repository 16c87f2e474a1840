"""GET /api/v1/conversions (the ledger), one conversion with history, and manual re-attribution."""

from __future__ import annotations

import csv
import io
import time
from datetime import UTC, datetime, timedelta

import redis

from tests.conversions.world import World
from tests.money.helpers import api, drain
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse

ADMIN = {"Authorization": "Bearer tka_test_admin_token_0123456789"}


def _orders(world: World) -> dict[str, dict[str, object]]:
    now_ms = int(time.time() * 1000)
    sent = {
        "click": {"order_id": "L-1", "amount": "100.00", "currency": "USD", "click_id": world.click(world.link)},
        "coupon": {"order_id": "L-2", "amount": "50.00", "currency": "USD", "coupon_code": "BOB5"},
        "expired": {"order_id": "L-3", "amount": "20.00", "currency": "USD", "coupon_code": "ANNA10",
                    "click_id": world.click(world.coupon_link, now_ms - 40 * 86_400_000)},
        "forged": {"order_id": "L-4", "amount": "10.00", "currency": "USD", "click_id": "not-a-click-id"},
        "none": {"order_id": "L-5", "amount": "5.00", "currency": "USD"},
    }
    out = {}
    for name, body in sent.items():
        r = world.post(body)
        assert r.status_code == 202, r.text
        out[name] = r.json()
    return out


def test_the_ledger_lists_conversions_with_status_and_reason(
    world: World, settings: Settings, redis_client: redis.Redis, ch: ClickHouse
) -> None:
    sent = _orders(world)
    drain(settings, redis_client, ch)
    r = api(world, "GET", "/api/v1/conversions")
    assert r.status_code == 200, r.text
    items = {i["order_id"]: i for i in r.json()["items"]}
    assert len(items) == 5 and r.json()["next_cursor"] is None
    click = items["L-1"]
    assert click["conversion_id"] == sent["click"]["conversion_id"]
    assert (click["attribution"], click["commission"], click["commission_status"]) == ("click", "10.00", "pending")
    assert click["influencer_id"] == world.influencer_id and click["store_id"] == world.store_id
    assert "within the 30-day window" in click["reason"] and world.link["code"] in click["reason"]
    assert click["hold_days"] == 30 and click["payable_at"] is not None and click["flags"] == []
    assert items["L-2"]["attribution"] == "coupon" and "coupon 'BOB5'" in items["L-2"]["reason"]
    expired = items["L-3"]
    assert expired["attribution"] == "coupon" and "beyond the 30-day window (expired)" in expired["reason"]
    assert "forged or garbled" in items["L-4"]["reason"] and items["L-4"]["commission_status"] is None
    assert items["L-5"]["reason"] == "Unattributed: the order carried no click id and no coupon."
    # Filters.
    def orders(**params: str) -> list[str]:
        res = api(world, "GET", "/api/v1/conversions", params=params)
        assert res.status_code == 200, res.text
        return sorted(i["order_id"] for i in res.json()["items"])
    assert orders(influencer_id=world.influencer_id) == ["L-1", "L-3"]
    assert orders(attribution="none") == ["L-4", "L-5"]
    assert orders(attribution="coupon") == ["L-2", "L-3"]
    assert orders(commission_status="pending") == ["L-1", "L-2", "L-3"]
    assert orders(commission_status="payable") == []
    today = datetime.now(UTC).date()
    assert orders(**{"from": str(today + timedelta(days=1))}) == []
    assert len(orders(**{"from": str(today), "to": str(today)})) == 5
    assert api(world, "GET", "/api/v1/conversions", params={"limit": "1001"}).status_code == 422
    assert api(world, "GET", "/api/v1/conversions", params={"cursor": "garbage!"}).status_code == 422


def test_a_refunded_order_is_void_and_its_history_says_why(
    world: World, settings: Settings, redis_client: redis.Redis, ch: ClickHouse
) -> None:
    cid = world.post({"order_id": "H-1", "amount": "80.00", "currency": "USD", "coupon_code": "ANNA10"}).json()[
        "conversion_id"]
    world.post({"order_id": "H-1", "amount": "30.00", "currency": "USD", "status": "refunded"})
    world.post({"order_id": "H-1", "currency": "USD", "status": "refunded"})
    drain(settings, redis_client, ch)
    r = api(world, "GET", f"/api/v1/conversions/{cid}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["status"], body["commission"], body["commission_status"]) == ("refunded", "0.00", "void")
    history = body["history"]
    assert [h["version"] for h in history] == [1, 2, 3]
    assert history[0]["change"] == "created"
    assert history[1]["change"] == "refunded 0.00 -> 30.00" and history[1]["commission"] == "5.00"
    assert history[1]["changed"] == ["refunded_amount", "commission"]
    assert history[2]["change"] == "status approved -> refunded" and "status" in history[2]["changed"]
    assert api(world, "GET", "/api/v1/conversions/cnv_nope").status_code == 404


def test_another_brand_sees_nothing(world: World, settings: Settings, redis_client: redis.Redis,
                                    ch: ClickHouse) -> None:
    cid = world.post({"order_id": "X-1", "amount": "10.00", "currency": "USD"}).json()["conversion_id"]
    drain(settings, redis_client, ch)
    other = world.client.post("/api/v1/brands", json={"name": "Other"}, headers=ADMIN).json()
    h = {"Authorization": f"Bearer {other['api_key']}"}
    assert world.client.get("/api/v1/conversions", headers=h).json()["items"] == []
    assert world.client.get(f"/api/v1/conversions/{cid}", headers=h).status_code == 404
    r = world.client.post(f"/api/v1/conversions/{cid}/attribution", json={"link_code": None}, headers=h)
    assert r.status_code == 404


def test_pages_neither_repeat_nor_skip_while_orders_arrive(
    world: World, settings: Settings, redis_client: redis.Redis, ch: ClickHouse
) -> None:
    base = datetime(2026, 11, 1, tzinfo=UTC)
    for n in range(7):
        world.post({"order_id": f"P-{n}", "amount": "10.00", "currency": "USD", "coupon_code": "ANNA10",
                    "occurred_at": (base + timedelta(hours=n)).isoformat()})
    drain(settings, redis_client, ch)
    seen: list[str] = []
    cursor = None
    added = 0
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        body = api(world, "GET", "/api/v1/conversions", params=params).json()
        seen += [i["order_id"] for i in body["items"]]
        # New orders, older and newer than the cursor, arrive between pages.
        for hours in (-5, 30):
            world.post({"order_id": f"NEW-{added}", "amount": "1.00", "currency": "USD",
                        "occurred_at": (base + timedelta(hours=hours)).isoformat()})
            added += 1
        drain(settings, redis_client, ch)
        cursor = body["next_cursor"]
        if cursor is None:
            break
    first = [f"P-{n}" for n in range(6, -1, -1)]
    assert [o for o in seen if o.startswith("P-")] == first
    assert len(seen) == len(set(seen))


def test_the_ledger_as_csv(world: World, settings: Settings, redis_client: redis.Redis, ch: ClickHouse) -> None:
    _orders(world)
    drain(settings, redis_client, ch)
    r = api(world, "GET", "/api/v1/conversions", params={"format": "csv", "limit": "2"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == 2 and r.headers["x-next-cursor"]
    assert set(rows[0]) >= {"conversion_id", "order_id", "commission", "commission_status", "reason"}


def test_reattribution_is_manual_audited_and_followed(
    world: World, settings: Settings, redis_client: redis.Redis, ch: ClickHouse
) -> None:
    sent = _orders(world)
    drain(settings, redis_client, ch)
    cid = sent["click"]["conversion_id"]
    r = api(world, "POST", f"/api/v1/conversions/{cid}/attribution",
            json={"link_code": world.flat_link["code"], "note": "creator swap"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["attribution"], body["link_code"], body["commission"]) == ("manual", world.flat_link["code"], "2.50")
    assert body["reason"] == f"Attributed manually to link {world.flat_link['code']}: creator swap"
    audit = api(world, "GET", "/api/v1/audit").json()["items"][0]
    assert audit["action"] == "conversion.reattribute" and audit["object_id"] == cid
    assert audit["before"]["attribution"] == "click" and audit["after"]["note"] == "creator swap"
    drain(settings, redis_client, ch)
    got = api(world, "GET", f"/api/v1/conversions/{cid}").json()
    assert got["attribution"] == "manual" and got["campaign_id"] == world.flat_campaign_id
    assert got["history"][-1]["change"].startswith(f"re-attributed from {world.link['code']} to ")
    # A later postback of the order builds on the manual version.
    world.post({"order_id": "L-1", "amount": "100.00", "currency": "USD", "status": "refunded"})
    drain(settings, redis_client, ch)
    got = api(world, "GET", f"/api/v1/conversions/{cid}").json()
    assert (got["attribution"], got["commission_status"], got["commission"]) == ("manual", "void", "0.00")
    # To nobody; an unknown link is refused.
    cid2 = sent["coupon"]["conversion_id"]
    assert api(world, "POST", f"/api/v1/conversions/{cid2}/attribution", json={"link_code": "nope"}).status_code == 422
    r = api(world, "POST", f"/api/v1/conversions/{cid2}/attribution", json={"link_code": None, "note": "fraud"})
    assert r.status_code == 200 and r.json()["attributed"] is False and r.json()["commission"] == "0.00"


def test_filters_see_last_versions_while_older_ones_are_not_merged_away(
    world: World, settings: Settings, redis_client: redis.Redis, ch: ClickHouse
) -> None:
    # The ledger's tables keep every version until a merge: a page's filters must still see only the last.
    for table in ("conversion_ledger", "conversion_ledger_influencer"):
        ch.command(f"SYSTEM STOP MERGES {table}")
    sent = _orders(world)
    drain(settings, redis_client, ch)
    cid = sent["click"]["conversion_id"]
    bob = world.coupon_link["influencer_id"]
    r = api(world, "POST", f"/api/v1/conversions/{cid}/attribution", json={"link_code": world.coupon_link["code"]})
    assert r.status_code == 200, r.text
    world.post({"order_id": "L-2", "amount": "50.00", "currency": "USD", "status": "refunded"})
    drain(settings, redis_client, ch)
    assert ch.query("SELECT count() FROM conversion_ledger_influencer WHERE conversion_id = {c:String}",
                    {"c": cid}) == [(2,)]  # the older version is still under Anna

    def orders(**params: str) -> list[str]:
        res = api(world, "GET", "/api/v1/conversions", params={"limit": "1", **params})
        assert res.status_code == 200, res.text
        found = [i["order_id"] for i in res.json()["items"]]
        while res.json()["next_cursor"]:  # pages of one: every chunk of candidates has stale ones
            res = api(world, "GET", "/api/v1/conversions", params={"limit": "1", "cursor": res.json()["next_cursor"],
                                                                   **params})
            found += [i["order_id"] for i in res.json()["items"]]
        return sorted(found)

    assert orders(influencer_id=world.influencer_id) == ["L-3"]
    assert orders(influencer_id=bob) == ["L-1", "L-2"]
    assert orders(influencer_id=bob, status="approved") == ["L-1"]
    assert orders(status="refunded") == ["L-2"]
    assert orders(attribution="manual") == ["L-1"] and orders(attribution="click") == []
    assert orders(commission_status="void") == ["L-2"]
    assert orders(commission_status="pending", influencer_id=bob) == ["L-1"]
    got = api(world, "GET", f"/api/v1/conversions/{cid}").json()
    assert (got["influencer_id"], got["attribution"], got["commission_status"]) == (bob, "manual", "pending")
