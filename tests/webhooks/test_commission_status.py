"""``commission_status`` in conversion webhooks end to end: the sender asks ClickHouse whether a later
version's commission is paid (a refund after payment keeps it ``paid``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from starlette.testclient import TestClient

from tests.conversions.world import make_world
from tests.money.helpers import api, drain
from tests.waiting import wait_until
from tests.webhooks.conftest import SenderThread
from tests.webhooks.receiver import Receiver
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse

OLD = (datetime.now(UTC) - timedelta(days=40)).isoformat()


def test_commission_status_follows_the_lifecycle(
    client: TestClient, receiver: Receiver, sender: SenderThread, wh_settings: Settings,
    redis_client: redis.Redis, ch: ClickHouse,
) -> None:
    world = make_world(client, wh_settings)
    r = api(world, "POST", "/api/v1/webhooks", json={"url": receiver.url,
                                                     "events": ["conversion.created", "conversion.updated"]})
    assert r.status_code == 201, r.text
    receiver.secret = r.json()["secret"]

    def post(body: dict[str, Any]) -> str:
        r = world.post({"currency": "USD", "coupon_code": "ANNA10", **body})
        assert r.status_code == 202, r.text
        cid: str = r.json()["conversion_id"]
        return cid

    paid = post({"order_id": "P-1", "amount": "100.00", "occurred_at": OLD})
    later = post({"order_id": "P-2", "amount": "50.00", "status": "pending"})
    post({"order_id": "P-2", "amount": "50.00", "status": "approved"})
    none = post({"order_id": "P-3", "amount": "10.00", "coupon_code": "NOBODY"})
    drain(wh_settings, redis_client, ch)
    (payout,) = api(world, "POST", "/api/v1/payouts", json={}).json()["items"]
    assert api(world, "POST", f"/api/v1/payouts/{payout['id']}/paid", json={"reference": "R"}).status_code == 200
    post({"order_id": "P-1", "amount": "100.00", "status": "refunded"})
    post({"order_id": "P-2", "amount": "50.00", "status": "refunded"})

    wait_until(lambda: len(receiver.got) >= 6, timeout=20, message=lambda: f"got {receiver.ids()}")
    assert receiver.refused == []
    got = {cid: [(r.type, r.data["status"], r.data["commission_status"]) for r in receiver.of(cid)]
           for cid in (paid, later, none)}
    assert got == {
        paid: [("conversion.created", "approved", "payable"), ("conversion.updated", "refunded", "paid")],
        later: [("conversion.created", "pending", "pending"), ("conversion.updated", "approved", "pending"),
                ("conversion.updated", "refunded", "void")],
        none: [("conversion.created", "approved", None)],
    }
