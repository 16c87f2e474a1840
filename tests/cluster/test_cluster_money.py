"""Money and quality on the Redis Cluster: payout runs, the review hold, re-attribution, mark paid and the
payout events, through the API of two app instances (two servers) sharing the cluster and ClickHouse.

What they keep in Redis: the brand's money lock (redis-py's ``Lock``: one key per script), the payout
intents (one hash), the order states the hold and re-attribution write (the brand's ``{c:N}`` slot) and
the webhook outbox (the ``{wh}`` slot). Merges of ``payout_lines`` are stopped, so a line written twice
would be seen twice.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from redis.crc import key_slot
from starlette.testclient import TestClient

from tests.cluster.test_cluster import drain
from tests.conversions.world import World, make_world
from tests.money.test_review_hold import EVE, eve
from tests.redis_cluster import Cluster
from tracker.app import create_app
from tracker.core import keys
from tracker.money import payoutoutbox, payouts
from tracker.settings import Settings
from tracker.storage import redis_client
from tracker.storage.clickhouse import ClickHouse
from tracker.webhooks.events import Event

OLD = (datetime.now(UTC) - timedelta(days=40)).isoformat()  # past the 30-day hold
CENT = Decimal("0.01")


@pytest.fixture
def settings_(cluster_settings: Settings) -> Settings:
    return cluster_settings.with_(webhooks_allow_private=True)


@pytest.fixture
def servers(settings_: Settings, ch: ClickHouse) -> Iterator[tuple[TestClient, TestClient]]:
    ch.command("SYSTEM STOP MERGES payout_lines")
    with TestClient(create_app(settings_)) as one, TestClient(create_app(settings_)) as two:
        yield one, two


def call(client: TestClient, world: World, method: str, path: str, **kw: Any) -> Any:
    return client.request(method, path, headers={"Authorization": f"Bearer {world.brand['api_key']}"}, **kw)


def post_order(world: World, oid: str, amount: str, coupon: str, email: str = "") -> str:
    body = {"order_id": oid, "amount": amount, "currency": "USD", "coupon_code": coupon, "occurred_at": OLD,
            "status": "approved"}
    if email:
        body["customer_email"] = email
    r = world.post(body)
    assert r.status_code == 202, r.text
    cid: str = r.json()["conversion_id"]
    return cid


def concurrent_runs(world: World, clients: tuple[TestClient, ...]) -> list[list[dict[str, Any]]]:
    """``POST /api/v1/payouts`` on every server at once; each answer's payouts."""
    start = threading.Barrier(len(clients))
    answers: list[Any] = [None] * len(clients)

    def one(i: int) -> None:
        start.wait()
        answers[i] = call(clients[i], world, "POST", "/api/v1/payouts", json={})

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(a is not None and a.status_code == 201 for a in answers), [getattr(a, "text", a) for a in answers]
    return [a.json()["items"] for a in answers]


def lines_of(items: list[dict[str, Any]]) -> dict[str, tuple[str, Decimal]]:
    """conversion id -> (influencer id, amount) of every line of these payouts."""
    out = {}
    for p in items:
        assert Decimal(p["amount"]) == sum(Decimal(line["amount"]) for line in p["lines"])
        for line in p["lines"]:
            assert line["conversion_id"] not in out, f"{line['conversion_id']} is in two payouts"
            out[line["conversion_id"]] = (p["influencer_id"], Decimal(line["amount"]))
    return out


def test_payouts_and_the_review_hold_on_the_cluster(
    servers: tuple[TestClient, TestClient], settings_: Settings, ch: ClickHouse, cluster: Cluster
) -> None:
    one, two = servers
    world = make_world(one, settings_)
    brand = world.brand["id"]
    r = call(one, world, "POST", "/api/v1/webhooks", json={"url": "http://127.0.0.1:9/hook",
                                                           "events": ["payout.created", "payout.paid"]})
    assert r.status_code == 201, r.text
    eve_id, _ = eve(world)  # coupon EVE10, 10 %; the coupon-leak rule off
    anna, bob = world.influencer_id, world.coupon_link["influencer_id"]
    expected: dict[str, tuple[str, Decimal]] = {}
    for n in range(24):
        amount = Decimal(n * 37 % 90 + 10) + Decimal(n * 13 % 100) / 100
        coupon, who, commission = [("ANNA10", anna, amount / 10), ("BOB5", bob, amount / 10),
                                   ("FLAT", anna, Decimal("2.50"))][n % 3]
        cid = post_order(world, f"A-{n}", str(amount), coupon)
        expected[cid] = (who, commission.quantize(CENT, ROUND_HALF_UP))
    self_1 = post_order(world, "SELF-1", "100.00", "EVE10", EVE)  # self-referral: held for review
    self_2 = post_order(world, "SELF-2", "50.00", "EVE10", EVE)
    honest = post_order(world, "HONEST-1", "40.00", "EVE10", "someone@example.com")
    expected[honest] = (eve_id, Decimal("4.00"))
    moved = next(c for c, (who, _) in expected.items() if who == anna and _ != Decimal("2.50"))
    assert drain(settings_, ch) == 27
    # Re-attribution (the money lock and the order state) on the other server: Anna's order goes to Bob.
    r = call(two, world, "POST", f"/api/v1/conversions/{moved}/attribution",
             json={"link_code": world.coupon_link["code"], "note": "Bob's code really"})
    assert r.status_code == 200, r.text
    expected[moved] = (bob, expected[moved][1])
    drain(settings_, ch)

    # Two servers run payouts at once: each commission in exactly one payout, to the cent; the held ones in none.
    first = concurrent_runs(world, (one, two))
    assert sorted(len(items) for items in first) == [0, 3]
    assert lines_of([p for items in first for p in items]) == expected
    drain(settings_, ch)
    statuses = {i["order_id"]: i["commission_status"] for i in call(
        two, world, "GET", "/api/v1/conversions", params={"influencer_id": eve_id}).json()["items"]}
    assert statuses == {"SELF-1": "review", "SELF-2": "review", "HONEST-1": "payable"}

    for cid, decision in ((self_1, "approve"), (self_2, "reject")):
        r = call(two, world, "POST", f"/api/v1/conversions/{cid}/review", json={"decision": decision, "note": "x"})
        assert r.status_code == 200, r.text
    drain(settings_, ch)
    second = concurrent_runs(world, (two, one))
    assert sorted(len(items) for items in second) == [0, 1]
    assert lines_of([p for items in second for p in items]) == {self_1: (eve_id, Decimal("10.00"))}
    assert concurrent_runs(world, (one, two)) == [[], []]

    made = [p for items in (*first, *second) for p in items]
    for i, p in enumerate(made):
        client = (one, two)[i % 2]
        assert call(client, world, "POST", f"/api/v1/payouts/{p['id']}/paid",
                    json={"reference": f"SEPA-{i}"}).status_code == 200
        assert call(client, world, "POST", f"/api/v1/payouts/{p['id']}/paid",
                    json={"reference": "again"}).status_code == 409
    stored = ch.query_dicts("SELECT conversion_id, influencer_id, amount FROM payout_lines WHERE brand_id = {b:String}",
                            {"b": brand})
    assert sorted((r["conversion_id"], r["influencer_id"], Decimal(r["amount"])) for r in stored) == sorted(
        (c, who, amount) for c, (who, amount) in {**expected, self_1: (eve_id, Decimal("10.00"))}.items())

    # The events: each payout created once and paid once, every intent settled; the keys in their slots.
    r_sync: Any = redis_client.connect_sync(settings_)
    try:
        events = [Event.from_fields(f) for _id, f in r_sync.xrange(keys.webhook_stream())]
        assert sorted((e.type, e.object_id) for e in events) == sorted(
            [("payout.created", p["id"]) for p in made] + [("payout.paid", p["id"]) for p in made])
        paid = {e.object_id: json.loads(e.body)["data"] for e in events if e.type == "payout.paid"}
        assert {pid: Decimal(d["amount"]) for pid, d in paid.items()} == {p["id"]: Decimal(p["amount"]) for p in made}
        assert r_sync.hlen(keys.PAYOUT_OUTBOX) == 0
        assert key_slot(keys.webhook_stream().encode()) == key_slot(keys.webhook_due().encode())
    finally:
        r_sync.close()


def test_a_payout_intent_left_on_the_cluster_is_recovered(
    servers: tuple[TestClient, TestClient], settings_: Settings, ch: ClickHouse, cluster: Cluster
) -> None:
    """Marked paid, then (as if killed) no event: ``payoutoutbox.recover`` takes the lock and emits it."""
    one, two = servers
    world = make_world(one, settings_)
    r = call(one, world, "POST", "/api/v1/webhooks", json={"url": "http://127.0.0.1:9/hook",
                                                           "events": ["payout.paid"]})
    assert r.status_code == 201, r.text
    post_order(world, "W-1", "100.00", "ANNA10")
    drain(settings_, ch)
    (payout,) = call(two, world, "POST", "/api/v1/payouts", json={}).json()["items"]
    svc = two.app.state.services  # type: ignore[attr-defined]
    assert two.portal is not None
    two.portal.call(payouts.mark_paid, svc.ch, svc.redis, world.brand["id"], payout["id"], "W", "key_x")
    assert two.portal.call(payoutoutbox.recover, svc.ch, svc.redis, 0) == 1
    assert two.portal.call(payoutoutbox.recover, svc.ch, svc.redis, 0) == 0
    r_sync: Any = redis_client.connect_sync(settings_)
    try:
        assert r_sync.hlen(keys.PAYOUT_OUTBOX) == 0
        events = [Event.from_fields(f) for _id, f in r_sync.xrange(keys.webhook_stream())]
        assert [e.object_id for e in events if e.type == "payout.paid"] == [payout["id"]]
    finally:
        r_sync.close()
