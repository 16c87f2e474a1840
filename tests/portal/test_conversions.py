"""GET /api/v1/me/conversions: an influencer's page and commission by status, exact over re-attributions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from starlette.testclient import TestClient

from tests.conversions.world import World, make_world
from tests.money.helpers import api, drain
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse

FIELDS = {"conversion_id", "order_id", "status", "attribution", "link_code", "campaign_id", "currency", "amount",
          "refunded_amount", "commission", "occurred_at", "updated_at"}


@pytest.fixture
def world(client: TestClient, settings: Settings) -> World:
    return make_world(client, settings)


def _key(world: World, influencer_id: str) -> dict[str, str]:
    r = api(world, "POST", "/api/v1/keys", json={"name": "me", "scope": "influencer", "influencer_id": influencer_id})
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['key']}"}


def _pages(world: World, who: dict[str, str], limit: int, days: int = 0) -> tuple[list[dict[str, Any]], Any]:
    """Every item of the range, page by page, and the last answer's commission by status."""
    today = datetime.now(UTC).date()
    params = {"from": (today - timedelta(days=days)).isoformat(), "to": today.isoformat(), "limit": str(limit)}
    items: list[dict[str, Any]] = []
    while True:
        r = world.client.get("/api/v1/me/conversions", headers=who, params=params)
        assert r.status_code == 200, r.text
        items += r.json()["items"]
        if r.json()["next_cursor"] is None:
            return items, r.json()["commission_by_status"]
        params["cursor"] = r.json()["next_cursor"]


def _move(world: World, cid: str, link: dict[str, Any]) -> None:
    r = api(world, "POST", f"/api/v1/conversions/{cid}/attribution", json={"link_code": link["code"]})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("merged", [False, True])
def test_a_reattributed_conversion_is_its_new_influencers_only(
    world: World, settings: Settings, redis_client: redis.Redis, ch: ClickHouse, merged: bool
) -> None:
    if not merged:  # every version stays in the ledger's tables, the stale ones under the first influencer
        for table in ("conversion_ledger", "conversion_ledger_influencer"):
            ch.command(f"SYSTEM STOP MERGES {table}")
    old = (datetime.now(UTC) - timedelta(days=40)).isoformat()
    sent = {}
    for order, body in {
        "P-1": {"amount": "100.00", "click_id": world.click(world.link)},  # Anna's, moved to Bob
        "P-2": {"amount": "50.00", "coupon_code": "BOB5"},  # Bob's, then refunded
        "P-3": {"amount": "20.00", "coupon_code": "ANNA10"},  # Anna's, moved to Bob and back to Anna's flat link
        "P-4": {"amount": "30.00", "coupon_code": "ANNA10", "occurred_at": old},  # Anna's, 40 days ago
        "P-5": {"amount": "5.00"},  # nobody's
        "P-6": {"amount": "60.00", "coupon_code": "ANNA10"},  # Anna's, moved to nobody
    }.items():
        r = world.post({"order_id": order, "currency": "USD", **body})
        assert r.status_code == 202, r.text
        sent[order] = r.json()["conversion_id"]
    drain(settings, redis_client, ch)
    _move(world, sent["P-1"], world.coupon_link)
    _move(world, sent["P-3"], world.coupon_link)
    r = api(world, "POST", f"/api/v1/conversions/{sent['P-6']}/attribution", json={"link_code": None})
    assert r.status_code == 200, r.text
    drain(settings, redis_client, ch)
    _move(world, sent["P-3"], world.flat_link)
    refund = world.post({"order_id": "P-2", "amount": "50.00", "currency": "USD", "status": "refunded"})
    assert refund.status_code == 202, refund.text
    drain(settings, redis_client, ch)
    if merged:
        ch.command("OPTIMIZE TABLE conversion_ledger_influencer FINAL")
    else:
        assert ch.query("SELECT count() FROM conversion_ledger_influencer WHERE conversion_id = {c:String}",
                        {"c": sent["P-1"]}) == [(2,)]  # the older version is still under Anna
    anna, bob = _key(world, world.influencer_id), _key(world, world.coupon_link["influencer_id"])

    for limit in (1, 100):  # pages of one: a chunk of candidates may hold only stale rows
        items, by_status = _pages(world, anna, limit)
        assert [(i["order_id"], i["attribution"], i["link_code"], i["commission"]) for i in items] == [
            ("P-3", "manual", world.flat_link["code"], "2.50")]
        assert set(items[0]) == FIELDS
        assert by_status == [{"status": "approved", "conversions": 1, "commission": "2.50"}]
        items, by_status = _pages(world, bob, limit)
        assert [(i["order_id"], i["status"], i["attribution"], i["commission"]) for i in items] == [
            ("P-2", "refunded", "coupon", "0.00"), ("P-1", "approved", "manual", "10.00")]
        assert by_status == [{"status": "approved", "conversions": 1, "commission": "10.00"},
                             {"status": "refunded", "conversions": 1, "commission": "0.00"}]
    # A range reaching 45 days back has Anna's older order too, newest first.
    items, by_status = _pages(world, anna, 1, days=45)
    assert [i["order_id"] for i in items] == ["P-3", "P-4"]
    assert by_status == [{"status": "approved", "conversions": 2, "commission": "5.50"}]
