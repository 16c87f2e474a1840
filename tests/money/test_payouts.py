"""Payout runs, statements of lines, mark paid once, clawbacks carried into the next payout."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import redis

from tests.conversions.world import World
from tests.money.helpers import api, drain
from tracker.core import keys
from tracker.money import intents, payoutoutbox, payouts
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse
from tracker.webhooks.events import Event

OLD = (datetime.now(UTC) - timedelta(days=40)).isoformat()  # past the 30-day hold


def order(world: World, oid: str, amount: str, coupon: str, *, occurred: str = OLD, status: str = "approved") -> Any:
    r = world.post({"order_id": oid, "amount": amount, "currency": "USD", "coupon_code": coupon,
                    "occurred_at": occurred, "status": status})
    assert r.status_code == 202, r.text
    return r.json()


def run(world: World, **body: Any) -> list[dict[str, Any]]:
    r = api(world, "POST", "/api/v1/payouts", json=body)
    assert r.status_code == 201, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


def by_influencer(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {p["influencer_id"]: p for p in items}


def test_a_run_pays_payable_commission_once(
    world: World, settings: Settings, redis_client: redis.Redis, ch: ClickHouse
) -> None:
    a1 = order(world, "A-1", "100.00", "ANNA10")  # 10.00
    order(world, "A-2", "33.33", "ANNA10")  # 3.33
    order(world, "A-3", "10.00", "FLAT")  # flat 2.50
    order(world, "A-4", "50.00", "ANNA10", occurred=datetime.now(UTC).isoformat())  # inside the hold
    order(world, "A-5", "50.00", "ANNA10", status="pending")  # pending
    order(world, "B-1", "20.00", "BOB5")  # 2.00
    order(world, "B-2", "20.00", "BOB5", status="rejected")
    drain(settings, redis_client, ch)
    items = by_influencer(run(world))
    anna, bob = items[world.influencer_id], items[world.coupon_link["influencer_id"]]
    assert (anna["amount"], anna["status"], anna["influencer_name"], anna["currency"]) == ("15.83", "open", "Anna",
                                                                                          "USD")
    assert sorted((line["order_id"], line["kind"], line["amount"]) for line in anna["lines"]) == [
        ("A-1", "commission", "10.00"), ("A-2", "commission", "3.33"), ("A-3", "commission", "2.50")]
    assert bob["amount"] == "2.00" and [line["order_id"] for line in bob["lines"]] == ["B-1"]
    assert run(world) == []  # the same period again: nothing new
    assert [p["id"] for p in api(world, "GET", "/api/v1/payouts").json()["items"]] != []
    got = api(world, "GET", f"/api/v1/payouts/{anna['id']}").json()
    assert got == anna
    # CSV: one row per line, then the total, which adds up.
    r = api(world, "GET", f"/api/v1/payouts/{anna['id']}", params={"format": "csv"})
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [row["type"] for row in rows] == ["line", "line", "line", "total"]
    assert sum(Decimal(row["amount"]) for row in rows[:-1]) == Decimal(rows[-1]["amount"]) == Decimal("15.83")
    # Ledger: in an open payout the commission is still payable; paid once marked.
    status = api(world, "GET", f"/api/v1/conversions/{a1['conversion_id']}").json()["commission_status"]
    assert status == "payable"
    r = api(world, "POST", f"/api/v1/payouts/{anna['id']}/paid", json={"reference": "SEPA-1"})
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["reference"]) == ("paid", "SEPA-1") and r.json()["paid_at"]
    assert api(world, "POST", f"/api/v1/payouts/{anna['id']}/paid", json={"reference": "x"}).status_code == 409
    assert api(world, "GET", f"/api/v1/conversions/{a1['conversion_id']}").json()["commission_status"] == "paid"
    assert [p["id"] for p in api(world, "GET", "/api/v1/payouts", params={"status": "paid"}).json()["items"]] == [
        anna["id"]]
    # Paid: re-attribution is refused.
    r = api(world, "POST", f"/api/v1/conversions/{a1['conversion_id']}/attribution", json={"link_code": None})
    assert r.status_code == 409
    assert api(world, "GET", "/api/v1/payouts/pay_nope").status_code == 404
    audit = [e["action"] for e in api(world, "GET", "/api/v1/audit").json()["items"]]
    assert "payout.paid" in audit and "payout.create" in audit


def test_refunds_after_payment_are_clawed_back_from_the_next_payout(
    world: World, settings: Settings, redis_client: redis.Redis, ch: ClickHouse
) -> None:
    order(world, "C-1", "100.00", "ANNA10")
    order(world, "C-2", "80.00", "ANNA10")
    drain(settings, redis_client, ch)
    (first,) = run(world)
    assert first["amount"] == "18.00"
    api(world, "POST", f"/api/v1/payouts/{first['id']}/paid", json={"reference": "R1"})
    # After payment: C-1 fully refunded (-10.00), C-2 partly (80 -> 50 net: -3.00).
    world.post({"order_id": "C-1", "currency": "USD", "status": "refunded"})
    world.post({"order_id": "C-2", "amount": "30.00", "currency": "USD", "status": "refunded"})
    drain(settings, redis_client, ch)
    assert run(world) == []  # -13.00 owed: no payout, the clawbacks stay open
    order(world, "C-3", "200.00", "ANNA10")  # +20.00
    drain(settings, redis_client, ch)
    (second,) = run(world)
    assert second["amount"] == "7.00"
    assert sorted((line["order_id"], line["kind"], line["amount"]) for line in second["lines"]) == [
        ("C-1", "clawback", "-10.00"), ("C-2", "clawback", "-3.00"), ("C-3", "commission", "20.00")]
    assert run(world) == []


def test_period_end_and_one_influencer(
    world: World, settings: Settings, redis_client: redis.Redis, ch: ClickHouse
) -> None:
    early = (datetime.now(UTC) - timedelta(days=60)).replace(hour=12)
    order(world, "D-1", "10.00", "ANNA10", occurred=early.isoformat())
    order(world, "D-2", "20.00", "ANNA10")
    order(world, "D-3", "30.00", "BOB5", occurred=early.isoformat())
    drain(settings, redis_client, ch)
    items = run(world, period_end=str(early.date()), influencer_id=world.influencer_id)
    assert [(p["influencer_id"], p["amount"]) for p in items] == [(world.influencer_id, "1.00")]
    assert api(world, "POST", "/api/v1/payouts", json={"influencer_id": "inf_nope0000000"}).status_code == 404
    items = by_influencer(run(world))
    assert items[world.influencer_id]["amount"] == "2.00" and items[world.coupon_link["influencer_id"]]["amount"] \
        == "3.00"


def test_a_reattributed_conversion_in_an_open_payout_is_clawed_back_from_its_first_influencer(
    world: World, settings: Settings, redis_client: redis.Redis, ch: ClickHouse
) -> None:
    e1 = order(world, "E-1", "100.00", "ANNA10")
    order(world, "E-2", "300.00", "ANNA10")
    drain(settings, redis_client, ch)
    (first,) = run(world)
    r = api(world, "POST", f"/api/v1/conversions/{e1['conversion_id']}/attribution",
            json={"link_code": world.coupon_link["code"], "note": "Bob's code really"})
    assert r.status_code == 200
    order(world, "E-3", "300.00", "ANNA10")
    drain(settings, redis_client, ch)
    items = by_influencer(run(world))
    anna, bob = items[world.influencer_id], items[world.coupon_link["influencer_id"]]
    assert sorted((line["order_id"], line["kind"], line["amount"]) for line in anna["lines"]) == [
        ("E-1", "clawback", "-10.00"), ("E-3", "commission", "30.00")]
    assert anna["amount"] == "20.00"
    assert [(line["order_id"], line["kind"], line["amount"]) for line in bob["lines"]] == [
        ("E-1", "commission", "10.00")]
    assert first["amount"] == "40.00"


def test_payout_events_reach_the_webhook_outbox(
    world: World, settings: Settings, redis_client: redis.Redis, ch: ClickHouse
) -> None:
    r = api(world, "POST", "/api/v1/webhooks", json={"url": "http://127.0.0.1:9/hook",
                                                      "events": ["payout.created", "payout.paid"]})
    assert r.status_code == 201, r.text
    order(world, "W-1", "100.00", "ANNA10")
    drain(settings, redis_client, ch)
    (payout,) = run(world)
    api(world, "POST", f"/api/v1/payouts/{payout['id']}/paid", json={"reference": "W"})
    events = [Event.from_fields(fields) for _id, fields in redis_client.xrange(keys.WEBHOOK_STREAM)]
    mine = [(e.type, e.object_id) for e in events if e.type.startswith("payout.")]
    assert mine == [("payout.created", payout["id"]), ("payout.paid", payout["id"])]
    body = json.loads(next(e.body for e in events if e.type == "payout.paid"))
    assert body["data"]["status"] == "paid" and body["data"]["amount"] == "10.00"
    assert redis_client.hlen(keys.PAYOUT_OUTBOX) == 0  # every owed event emitted, its intent settled


def test_a_paid_mark_whose_event_was_not_emitted_is_recovered(
    world: World, settings: Settings, redis_client: redis.Redis, ch: ClickHouse
) -> None:
    r = api(world, "POST", "/api/v1/webhooks", json={"url": "http://127.0.0.1:9/hook", "events": ["payout.paid"]})
    assert r.status_code == 201, r.text
    order(world, "W-1", "100.00", "ANNA10")
    drain(settings, redis_client, ch)
    (payout,) = run(world)
    svc = world.client.app.state.services  # type: ignore[attr-defined]
    # The library step alone: committed, then (as if killed) nothing emitted.
    world.call(payouts.mark_paid, svc.ch, svc.redis, world.brand["id"], payout["id"], "W", "key_x")
    assert redis_client.hlen(keys.PAYOUT_OUTBOX) == 1
    assert world.call(payoutoutbox.recover, svc.ch, svc.redis) == 0  # too young: the route may still emit it
    assert world.call(payoutoutbox.recover, svc.ch, svc.redis, min_age_seconds=0) == 1
    assert redis_client.hlen(keys.PAYOUT_OUTBOX) == 0
    events = [Event.from_fields(f) for _id, f in redis_client.xrange(keys.WEBHOOK_STREAM)]
    [paid] = [e for e in events if e.type == "payout.paid"]
    data = json.loads(paid.body)["data"]
    assert data == {**api(world, "GET", f"/api/v1/payouts/{payout['id']}").json()}
    assert (data["status"], data["reference"], data["influencer_name"]) == ("paid", "W", "Anna")
    # The audit entry the route would have written, naming the key that marked it paid.
    [entry] = [e for e in api(world, "GET", "/api/v1/audit").json()["items"] if e["action"] == "payout.paid"]
    assert (entry["object_id"], entry["key_id"], entry["at"], entry["after"]) == (
        payout["id"], "key_x", data["paid_at"], data)


def test_payout_audit_entries_are_recorded_once_when_a_recovery_records_them_again(
    world: World, settings: Settings, redis_client: redis.Redis, ch: ClickHouse
) -> None:
    order(world, "R-1", "100.00", "ANNA10")
    order(world, "R-2", "20.00", "BOB5")
    drain(settings, redis_client, ch)
    made = run(world)
    paid = made[0]
    assert api(world, "POST", f"/api/v1/payouts/{paid['id']}/paid", json={"reference": "R"}).status_code == 200

    def entries() -> list[dict[str, Any]]:
        items = api(world, "GET", "/api/v1/audit", params={"limit": 1000}).json()["items"]
        return [e for e in items if e["action"] in ("payout.create", "payout.paid")]

    before = entries()
    assert sorted((e["action"], e["object_id"]) for e in before) == sorted(
        [("payout.create", p["id"]) for p in made] + [("payout.paid", paid["id"])])
    # As if each route's process died after its entries and before settling its intent: the intents
    # are back, and the recovery writes the entries again.
    svc = world.client.app.state.services  # type: ignore[attr-defined]
    key_id = before[0]["key_id"]
    now = datetime.fromisoformat(made[0]["created_at"]).isoformat()
    world.call(intents.intend, svc.redis, world.brand["id"], intents.CREATED, "pay_token", now=now, key_id=key_id)
    world.call(intents.intend, svc.redis, world.brand["id"], intents.PAID, paid["id"], key_id=key_id)
    assert world.call(payoutoutbox.recover, svc.ch, svc.redis, min_age_seconds=0) == len(made) + 1
    assert redis_client.hlen(keys.PAYOUT_OUTBOX) == 0
    after = entries()
    assert len(after) == len(before)
    assert sorted(after, key=json.dumps) == sorted(before, key=json.dumps)
