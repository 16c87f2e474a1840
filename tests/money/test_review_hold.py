"""Quality flags set money's review hook: a flagged conversion's commission is held (``review``), out
of payout runs, until a review decision: approve releases it into the lifecycle, reject voids it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import redis

from tests.conversions.world import World
from tests.money.helpers import api, drain
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse

OLD = (datetime.now(UTC) - timedelta(days=40)).isoformat()  # past the 30-day hold
NOW = datetime.now(UTC).isoformat()
EVE = "eve@example.com"


def eve(world: World) -> tuple[str, str]:
    """An influencer with an email on file and her link (coupon EVE10, 10 %); the coupon-leak rule off (the
    orders here are all coupon orders of one link)."""
    assert api(world, "PUT", "/api/v1/rules", json={"coupon_leak": False}).status_code == 200
    r = api(world, "POST", "/api/v1/influencers", json={"name": "Eve", "email": EVE})
    assert r.status_code == 201, r.text
    inf = r.json()["id"]
    r = api(world, "POST", "/api/v1/links", json={"campaign_id": world.campaign_id, "influencer_id": inf,
                                                   "destination_url": "https://shop.example/e",
                                                   "coupon_code": "EVE10"})
    assert r.status_code == 201, r.text
    return inf, r.json()["code"]


def order(world: World, oid: str, amount: str, email: str, occurred: str = OLD) -> str:
    r = world.post({"order_id": oid, "amount": amount, "currency": "USD", "coupon_code": "EVE10",
                    "occurred_at": occurred, "status": "approved", "customer_email": email})
    assert r.status_code == 202, r.text
    cid: str = r.json()["conversion_id"]
    return cid


def run(world: World) -> list[dict[str, Any]]:
    r = api(world, "POST", "/api/v1/payouts", json={})
    assert r.status_code == 201, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


def lines(items: list[dict[str, Any]], influencer_id: str) -> dict[str, tuple[str, str]]:
    return {line["order_id"]: (line["kind"], line["amount"])
            for p in items if p["influencer_id"] == influencer_id for line in p["lines"]}


def statuses(world: World, influencer_id: str) -> dict[str, str]:
    r = api(world, "GET", "/api/v1/conversions", params={"influencer_id": influencer_id})
    assert r.status_code == 200, r.text
    return {i["order_id"]: i["commission_status"] for i in r.json()["items"]}


def review(world: World, cid: str, decision: str) -> None:
    r = api(world, "POST", f"/api/v1/conversions/{cid}/review", json={"decision": decision, "note": "checked"})
    assert r.status_code == 200, r.text


def report_totals(world: World) -> dict[str, Any]:
    today = datetime.now(UTC).date()
    r = api(world, "GET", "/api/v1/reports", params={"from": (today - timedelta(days=45)).isoformat(),
                                                      "to": today.isoformat()})
    assert r.status_code == 200, r.text
    totals: dict[str, Any] = r.json()["totals"]
    return totals


def test_a_flagged_conversion_is_held_until_reviewed(
    world: World, settings: Settings, redis_client: redis.Redis, ch: ClickHouse
) -> None:
    inf, _code = eve(world)
    held = order(world, "SELF-1", "100.00", EVE)  # 10.00, self-referral
    rejected = order(world, "SELF-2", "50.00", EVE.upper())  # 5.00 (emails are compared lower-cased)
    open_ = order(world, "SELF-3", "30.00", EVE)  # 3.00, never decided
    recent = order(world, "SELF-4", "20.00", EVE, occurred=NOW)  # 2.00, inside the hold
    order(world, "HONEST-1", "40.00", "someone@example.com")  # 4.00
    drain(settings, redis_client, ch)

    # The run reads the flags first: the held versions are not in ClickHouse yet, and still nothing is claimed.
    first = run(world)
    assert lines(first, inf) == {"HONEST-1": ("commission", "4.00")}
    drain(settings, redis_client, ch)
    assert statuses(world, inf) == {"SELF-1": "review", "SELF-2": "review", "SELF-3": "review",
                                    "SELF-4": "review", "HONEST-1": "payable"}
    r = api(world, "GET", "/api/v1/conversions", params={"commission_status": "review"})
    assert sorted(i["order_id"] for i in r.json()["items"]) == ["SELF-1", "SELF-2", "SELF-3", "SELF-4"]
    detail = api(world, "GET", f"/api/v1/conversions/{held}").json()
    assert detail["flags"] == ["self_referral"]
    assert [h["change"] for h in detail["history"]] == ["created", "held for review: self_referral"]
    # A held commission counts in reports as usual, in none of the commission-status sums.
    totals = report_totals(world)
    assert (totals["conversions"], totals["flagged_conversions"]) == (5, 4)
    assert Decimal(totals["payable_commission"]) == Decimal("4.00")
    assert Decimal(totals["pending_commission"]) == Decimal("0.00")

    review(world, held, "approve")
    review(world, rejected, "reject")
    review(world, recent, "approve")
    drain(settings, redis_client, ch)
    assert statuses(world, inf) == {"SELF-1": "payable", "SELF-2": "void", "SELF-3": "review",
                                    "SELF-4": "pending", "HONEST-1": "payable"}
    assert [h["change"] for h in api(world, "GET", f"/api/v1/conversions/{rejected}").json()["history"]] == [
        "created", "held for review: self_referral", "rejected in review: commission void"]
    totals = report_totals(world)
    assert Decimal(totals["payable_commission"]) == Decimal("14.00")  # HONEST-1 (open payout) and SELF-1
    assert Decimal(totals["pending_commission"]) == Decimal("2.00")

    # The next run pays the approved one only; the rejected and the undecided ones are never claimed.
    second = run(world)
    assert lines(second, inf) == {"SELF-1": ("commission", "10.00")}
    for p in (*first, *second):
        if p["influencer_id"] == inf:
            r = api(world, "POST", f"/api/v1/payouts/{p['id']}/paid", json={"reference": p["id"]})
            assert r.status_code == 200, r.text
    assert run(world) == []
    assert statuses(world, inf) == {"SELF-1": "paid", "SELF-2": "void", "SELF-3": "review", "SELF-4": "pending",
                                    "HONEST-1": "paid"}
    assert open_ not in {line["conversion_id"] for p in (*first, *second) for line in p["lines"]}
    # The statement: the rejection took 5.00 back, the holds changed nothing; paid = earned - held - void.
    st = api(world, "GET", f"/api/v1/influencers/{inf}/statement").json()
    kinds = [(e["kind"], e["order_id"], e["amount"]) for e in st["entries"] if e["kind"] == "review"]
    assert ("review", "SELF-2", "-5.00") in kinds and ("review", "SELF-1", "0.00") in kinds
    assert Decimal(st["totals"]["paid"]) == Decimal("14.00")
    assert Decimal(st["totals"]["balance"]) == Decimal("5.00")  # SELF-3 held, SELF-4 in its hold


def test_flags_that_clear_release_the_hold(
    world: World, settings: Settings, redis_client: redis.Redis, ch: ClickHouse
) -> None:
    inf, _code = eve(world)
    order(world, "SELF-1", "100.00", EVE)
    drain(settings, redis_client, ch)
    assert run(world) == []
    drain(settings, redis_client, ch)
    assert statuses(world, inf) == {"SELF-1": "review"}
    r = api(world, "PUT", "/api/v1/rules", json={"self_referral": False, "coupon_leak": False})
    assert r.status_code == 200, r.text
    # The review queue evaluates the flags at once (ledger pages check them at most every 2 s per process).
    assert api(world, "GET", "/api/v1/rules/review-queue").json()["items"] == []
    assert statuses(world, inf) == {"SELF-1": "review"}  # the release is written; ingest has not run yet
    drain(settings, redis_client, ch)
    assert statuses(world, inf) == {"SELF-1": "payable"}
    assert lines(run(world), inf) == {"SELF-1": ("commission", "10.00")}
