"""Deliveries end to end: postbacks in, the sender in a thread, a receiver verifying with ``standardwebhooks``."""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.testclient import TestClient

from tests.waiting import wait_until
from tests.webhooks.conftest import SenderThread, new_brand
from tests.webhooks.receiver import Receiver
from tracker import webhooks
from tracker.conversions import signature

ALL = ["conversion.created", "conversion.updated", "payout.created", "payout.paid"]


def shop(client: TestClient, receiver: Receiver, events: list[str] = ALL) -> dict[str, Any]:
    """A brand with a link and a store, and a webhook endpoint pointing at the receiver."""
    brand = new_brand(client)
    h = brand["headers"]
    campaign = client.post("/api/v1/campaigns", json={"name": "Spring", "commission": {"type": "percent",
                                                                                      "value": "10"}}, headers=h).json()
    influencer = client.post("/api/v1/influencers", json={"name": "Ann"}, headers=h).json()
    link = client.post("/api/v1/links", json={"campaign_id": campaign["id"], "influencer_id": influencer["id"],
                                              "destination_url": "https://shop.example/p", "coupon_code": "ANN10"},
                       headers=h).json()
    store = client.post("/api/v1/stores", json={"name": "Shop"}, headers=h).json()
    r = client.post("/api/v1/webhooks", json={"url": receiver.url, "events": events}, headers=h)
    assert r.status_code == 201, r.text
    endpoint = r.json()
    receiver.secret = endpoint["secret"]
    return {"brand": brand, "h": h, "link": link, "store": store, "endpoint": endpoint}


def postback(client: TestClient, world: dict[str, Any], order: str, amount: str, status: str = "approved") -> Any:
    raw = json.dumps({"order_id": order, "amount": amount, "currency": "USD", "coupon_code": "ANN10",
                      "status": status}).encode()
    store = world["store"]
    headers = {"X-Store-Id": store["id"], "Content-Type": "application/json",
               "X-Signature": signature.sign(store["secret"], int(time.time()), raw)}
    r = client.post("/api/v1/conversions", content=raw, headers=headers)
    assert r.status_code == 202, r.text
    return r.json()


def deliveries(client: TestClient, world: dict[str, Any], query: str = "") -> list[dict[str, Any]]:
    r = client.get(f"/api/v1/webhooks/{world['endpoint']['id']}/deliveries{query}", headers=world["h"])
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


def test_signed_deliveries_in_order_per_order(client: TestClient, receiver: Receiver, sender: SenderThread) -> None:
    world = shop(client, receiver)
    first = postback(client, world, "O1", "100.00", "pending")
    postback(client, world, "O1", "100.00", "approved")
    postback(client, world, "O1", "30.00", "refunded")
    other = postback(client, world, "O2", "50.00")
    postback(client, world, "O2", "50.00")  # a duplicate: no new version, no event
    payout = {"id": "pay_123", "influencer_id": "inf_x", "amount": "15.00", "currency": "USD", "status": "open"}
    assert client.portal is not None
    redis = client.app.state.services.redis  # type: ignore[attr-defined]
    ids = {client.portal.call(webhooks.emit, redis, world["brand"]["id"], "payout.created", "pay_123", payout)
           for _ in range(2)}
    assert len(ids) == 1  # the same fact twice is one event

    wait_until(lambda: len(receiver.got) >= 5, timeout=20, message=lambda: f"got {receiver.ids()}")
    assert receiver.refused == []  # every signature verified by standardwebhooks
    assert len(receiver.got) == 5 and len(set(receiver.ids())) == 5
    o1 = receiver.of(first["conversion_id"])
    assert [(r.type, r.data["status"], r.data["refunded_amount"]) for r in o1] == [
        ("conversion.created", "pending", "0.00"), ("conversion.updated", "approved", "0.00"),
        ("conversion.updated", "approved", "30.00"),
    ]
    assert [r.data["version"] for r in o1] == [1, 2, 3]
    data = o1[0].data
    assert data["order_id"] == "O1" and data["amount"] == "100.00" and data["attribution"] == "coupon"
    assert data["commission"] == "10.00" and data["link_code"] == world["link"]["code"]
    assert "click_id" not in data and data["occurred_at"].endswith("Z")
    assert [r.type for r in receiver.of(other["conversion_id"])] == ["conversion.created"]
    (paid,) = receiver.of("pay_123")
    assert paid.type == "payout.created" and paid.data == payout and paid.id in ids

    log = deliveries(client, world)
    assert len(log) == 5 and {d["status"] for d in log} == {"succeeded"}
    assert all(d["attempts"] == 1 and d["response_code"] == 200 and d["delivered_at"] for d in log)
    # Newest first. The payout's event is logged when emitted, the conversions' when the fan-out reads
    # their stream, so which came last is not fixed: the creation times must not increase down the page.
    created = [d["created_at"] for d in log]
    assert created == sorted(created, reverse=True)
    assert {d["event_id"] for d in log} == set(receiver.ids())


def test_retries_after_errors_and_downtime_keep_the_order(client: TestClient, receiver: Receiver,
                                                         sender: SenderThread) -> None:
    world = shop(client, receiver)
    receiver.answer = 500
    conv = postback(client, world, "O1", "80.00", "pending")
    postback(client, world, "O1", "80.00", "approved")
    wait_until(lambda: receiver.attempts >= 2, timeout=20)
    log = {d["type"]: d for d in deliveries(client, world)}
    created, updated = log["conversion.created"], log["conversion.updated"]
    assert created["status"] == "pending" and created["attempts"] >= 1 and created["response_code"] == 500
    assert created["last_error"].startswith("HTTP 500") and created["next_attempt_at"] is not None
    assert updated["attempts"] == 0  # waits for the earlier event of its order
    receiver.answer = 200
    wait_until(lambda: len(receiver.got) == 2, timeout=20)
    assert [r.type for r in receiver.of(conv["conversion_id"])] == ["conversion.created", "conversion.updated"]

    # The receiver is down: connection refused, then it comes back on the same port.
    receiver.stop()
    later = postback(client, world, "O2", "20.00")
    wait_until(lambda: any(d["attempts"] >= 1 for d in deliveries(client, world, "?status=pending")), timeout=20)
    (waiting,) = deliveries(client, world, "?status=pending")
    assert waiting["response_code"] is None and waiting["last_error"]
    receiver.start()
    wait_until(lambda: len(receiver.of(later["conversion_id"])) == 1, timeout=20)
    health = client.get(f"/api/v1/webhooks/{world['endpoint']['id']}", headers=world["h"]).json()
    assert health["enabled"] and health["failing_since"] is None and health["last_success_at"]


def test_failing_endpoint_is_disabled_then_resumed_and_retried(client: TestClient, receiver: Receiver,
                                                               sender: SenderThread) -> None:
    world = shop(client, receiver, ["conversion.created"])
    ep = world["endpoint"]["id"]
    receiver.answer = 500
    conv = postback(client, world, "O1", "10.00")
    # Give-up time is 3 s here (24 h by default): the delivery fails, the endpoint is disabled.
    wait_until(lambda: [d["status"] for d in deliveries(client, world)] == ["failed"], timeout=20)
    endpoint = client.get(f"/api/v1/webhooks/{ep}", headers=world["h"]).json()
    assert endpoint["enabled"] is False and "Every delivery failed" in endpoint["disabled_reason"]
    assert "HTTP 500" in endpoint["disabled_reason"] and endpoint["failing_since"]
    audit = client.get("/api/v1/audit", headers=world["h"]).json()["items"][0]
    assert audit["action"] == "webhook.disable" and audit["key_id"] == "system"

    # Disabled: new events are not queued for it; a retry asks to enable it first.
    failed = deliveries(client, world)[0]
    r = client.post(f"/api/v1/webhooks/{ep}/deliveries/{failed['id']}/retry", headers=world["h"])
    assert r.status_code == 409
    receiver.answer = 200
    r = client.patch(f"/api/v1/webhooks/{ep}", json={"enabled": True}, headers=world["h"])
    assert r.status_code == 200 and r.json()["enabled"] and r.json()["disabled_reason"] is None
    r = client.post(f"/api/v1/webhooks/{ep}/deliveries/{failed['id']}/retry", headers=world["h"])
    assert r.status_code == 202 and r.json()["status"] == "pending"
    wait_until(lambda: len(receiver.of(conv["conversion_id"])) == 1, timeout=20)
    (again,) = deliveries(client, world)
    assert again["status"] == "succeeded" and again["attempts"] >= 2 and again["event_id"] == failed["event_id"]


def test_410_gone_disables_at_once(client: TestClient, receiver: Receiver, sender: SenderThread) -> None:
    world = shop(client, receiver, ["conversion.created"])
    receiver.answer = 410
    postback(client, world, "O1", "10.00")
    ep = world["endpoint"]["id"]
    wait_until(lambda: not client.get(f"/api/v1/webhooks/{ep}", headers=world["h"]).json()["enabled"], timeout=20)
    endpoint = client.get(f"/api/v1/webhooks/{ep}", headers=world["h"]).json()
    assert "410 Gone" in endpoint["disabled_reason"]
    assert receiver.attempts == 1
