"""PATCH /api/v1/campaigns/{id}: the rule in force when an order occurred prices it; audited."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import redis

from tests.conversions.world import World
from tests.money.helpers import api
from tracker.core import keys
from tracker.core.records import LinkRecord


def test_a_new_campaign_holds_30_days_by_default(world: World) -> None:
    r = api(world, "POST", "/api/v1/campaigns", json={"name": "C", "commission": {"type": "percent", "value": "5"}})
    assert r.status_code == 201 and r.json()["hold_days"] == 30
    r = api(world, "POST", "/api/v1/campaigns",
            json={"name": "D", "commission": {"type": "flat", "value": "1"}, "hold_days": 0})
    assert r.json()["hold_days"] == 0


def test_patch_changes_the_campaign_and_the_audit_log_records_it(world: World) -> None:
    cid = world.campaign_id
    r = api(world, "PATCH", f"/api/v1/campaigns/{cid}",
            json={"name": "Summer", "commission": {"type": "percent", "value": "20"}, "hold_days": 14})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["name"], body["commission"], body["hold_days"]) == ("Summer", {"type": "percent", "value": "20"}, 14)
    assert api(world, "GET", f"/api/v1/campaigns/{cid}").json() == body
    audit = api(world, "GET", "/api/v1/audit").json()["items"][0]
    assert audit["action"] == "campaign.update" and audit["object_id"] == cid
    assert audit["before"]["commission"]["value"] == "10" and audit["after"]["commission"]["value"] == "20"


@pytest.mark.parametrize("body", [{}, {"hold_days": -1}, {"commission": {"type": "x", "value": "1"}},
                                  {"attribution_window_days": 0}, {"bogus": 1}])
def test_a_bad_patch_is_refused(world: World, body: dict[str, object]) -> None:
    r = api(world, "PATCH", f"/api/v1/campaigns/{world.campaign_id}", json=body)
    assert r.status_code == 422 and r.json()["error"]["code"]


def test_another_brands_campaign_is_not_found(world: World) -> None:
    other = world.client.post("/api/v1/brands", json={"name": "Other"},
                              headers={"Authorization": "Bearer tka_test_admin_token_0123456789"}).json()
    r = world.client.patch(f"/api/v1/campaigns/{world.campaign_id}", json={"name": "x"},
                           headers={"Authorization": f"Bearer {other['api_key']}"})
    assert r.status_code == 404


def test_the_rule_in_force_when_the_order_occurred_prices_it(world: World) -> None:
    before = (datetime.now(UTC) - timedelta(minutes=10)).isoformat()
    api(world, "PATCH", f"/api/v1/campaigns/{world.campaign_id}",
        json={"commission": {"type": "flat", "value": "7.00"}, "hold_days": 3})
    old = world.post({"order_id": "OLD", "amount": "100.00", "currency": "USD", "coupon_code": "ANNA10",
                      "occurred_at": before}).json()
    new = world.post({"order_id": "NEW", "amount": "100.00", "currency": "USD", "coupon_code": "ANNA10"}).json()
    assert old["commission"] == "10.00"  # 10 % in force ten minutes ago
    assert new["commission"] == "7.00"
    # A later refund keeps the rule the order was priced with.
    part = world.post({"order_id": "OLD", "amount": "50.00", "currency": "USD", "status": "refunded"}).json()
    assert part["commission"] == "5.00"


def test_a_new_window_reaches_the_link_records(world: World, redis_client: redis.Redis) -> None:
    api(world, "PATCH", f"/api/v1/campaigns/{world.campaign_id}", json={"attribution_window_days": 3})
    raw = redis_client.get(keys.link(world.link["code"]))
    assert raw is not None and LinkRecord.decode(raw).attribution_window_days == 3
