"""The money loop to the cent: a few hundred orders across influencers, campaigns and currencies,
refunds (partial and full) before and after the hold and after payment, re-attributions and two
payout runs. Every payout, ledger and statement figure equals the model computed here, independently
of tracker's code (its own rounding, its own hold and clawback rules), and
sum(payouts) + open lines = commission earned - voided.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import redis

from tests.conversions.world import World
from tests.money.helpers import api, drain, rules_off
from tracker.money import chain
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse

CENT = Decimal("0.01")
RATES = {"USD": Decimal(1), "EUR": Decimal("1.0837"), "JPY": Decimal("0.00666")}
# Days ago an order occurred: never within a day of a hold's end (30, 7 or 0 days), so the
# model's "now" and the server's agree on every hold.
DAYS_AGO = [2, 3, 4, 5, 10, 12, 15, 20, 25, 35, 40, 50, 60, 75, 90]


def cents(d: Decimal) -> Decimal:
    return d.quantize(CENT, rounding=ROUND_HALF_UP)


@dataclass
class Order:
    oid: str
    currency: str
    amount: Decimal  # original currency
    occurred: datetime
    link: dict[str, Any]
    status: str = "approved"
    refunded: Decimal = Decimal(0)  # original currency, cumulative
    cid: str = ""
    lines: dict[str, Decimal] = field(default_factory=dict)  # influencer -> claimed

    def brand_amount(self) -> Decimal:
        return cents(self.amount * RATES[self.currency])

    def commission(self, rules: dict[str, tuple[str, Decimal, int]]) -> Decimal:
        if self.status not in ("approved", "pending") or self.link is None:
            return Decimal("0.00")
        kind, value, _hold = rules[self.link["campaign_id"]]
        amount = self.brand_amount()
        refunded = cents(self.refunded * RATES[self.currency])
        if amount - refunded <= 0:
            return Decimal("0.00")
        return cents((amount - refunded) * value / 100) if kind == "percent" else cents(value)

    def target(self, rules: dict[str, tuple[str, Decimal, int]], now: datetime) -> Decimal:
        """Commission payable now (the model's own rule: approved and the hold over)."""
        if self.link is None or self.status != "approved":
            return Decimal("0.00")
        if self.occurred + timedelta(days=rules[self.link["campaign_id"]][2]) > now:
            return Decimal("0.00")
        return self.commission(rules)


def _setup(world: World) -> tuple[list[dict[str, Any]], dict[str, tuple[str, Decimal, int]]]:
    rules_off(world)
    for cur in ("EUR", "JPY"):
        assert api(world, "PUT", f"/api/v1/fx-rates/{cur}", json={"rate": str(RATES[cur])}).status_code == 200
    quick = api(world, "POST", "/api/v1/campaigns", json={
        "name": "Quick", "commission": {"type": "percent", "value": "12.5"}, "hold_days": 0}).json()
    week = api(world, "POST", "/api/v1/campaigns", json={
        "name": "Week", "commission": {"type": "flat", "value": "3.10"}, "hold_days": 7}).json()
    rules = {
        world.campaign_id: ("percent", Decimal(10), 30), world.flat_campaign_id: ("flat", Decimal("2.50"), 30),
        quick["id"]: ("percent", Decimal("12.5"), 0), week["id"]: ("flat", Decimal("3.10"), 7),
    }
    links = [world.link, world.coupon_link, world.flat_link]
    for n, name in enumerate(("Cleo", "Dan", "Eve")):
        inf = api(world, "POST", "/api/v1/influencers", json={"name": name}).json()
        for camp in (quick, week):
            r = api(world, "POST", "/api/v1/links", json={"campaign_id": camp["id"], "influencer_id": inf["id"],
                                                           "destination_url": "https://shop.example/x",
                                                           "coupon_code": f"{name.upper()}{n}{camp['name'][0]}"})
            assert r.status_code == 201, r.text
            links.append(r.json())
    return links, rules


def _post(world: World, body: dict[str, Any]) -> dict[str, Any]:
    r = world.post(body)
    assert r.status_code == 202, r.text
    out: dict[str, Any] = r.json()
    return out


def _refund(world: World, o: Order, full: bool, rng: random.Random) -> None:
    if full:
        o.refunded, o.status = o.amount, "refunded"
        _post(world, {"order_id": o.oid, "currency": o.currency, "status": "refunded"})
        return
    step = Decimal(1) if o.currency == "JPY" else CENT
    part = (o.amount * Decimal(rng.randint(10, 60)) / 100).quantize(step)
    if part <= o.refunded or part >= o.amount:
        return
    o.refunded = part
    _post(world, {"order_id": o.oid, "amount": str(part), "currency": o.currency, "status": "refunded"})


def _run(world: World) -> dict[str, dict[str, Any]]:
    r = api(world, "POST", "/api/v1/payouts", json={})
    assert r.status_code == 201, r.text
    return {p["influencer_id"]: p for p in r.json()["items"]}


def _expected_run(orders: list[Order], rules: dict[str, tuple[str, Decimal, int]], now: datetime
                  ) -> dict[str, dict[str, Decimal]]:
    """The model's next run: influencer -> {order id: line amount}, only influencers owed > 0."""
    owed: dict[str, dict[str, Decimal]] = {}
    for o in orders:
        current = o.link["influencer_id"] if o.link else None
        for inf in {*o.lines, *([current] if current else [])}:
            target = o.target(rules, now) if inf == current else Decimal("0.00")
            claimed = o.lines.get(inf, Decimal(0))
            if not o.lines.get(inf) and inf not in o.lines and target == 0:
                continue
            if target - claimed != 0:
                owed.setdefault(inf, {})[o.oid] = target - claimed
    return {i: lines for i, lines in owed.items() if sum(lines.values()) > 0}


def _check_run(got: dict[str, dict[str, Any]], want: dict[str, dict[str, Decimal]], orders: list[Order]) -> None:
    assert set(got) == set(want)
    by_oid = {o.oid: o for o in orders}
    for inf, payout in got.items():
        lines = {line["order_id"]: Decimal(line["amount"]) for line in payout["lines"]}
        assert lines == want[inf], inf
        assert Decimal(payout["amount"]) == sum(want[inf].values())
        for oid, amount in lines.items():
            o = by_oid[oid]
            o.lines[inf] = o.lines.get(inf, Decimal(0)) + amount


def _ledger(world: World, **filters: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    cursor = None
    while True:
        body = api(world, "GET", "/api/v1/conversions", params={"limit": "97", **filters, **(
            {"cursor": cursor} if cursor else {})}).json()
        out.update({i["order_id"]: i for i in body["items"]})
        cursor = body["next_cursor"]
        if cursor is None:
            return out


def test_every_figure_matches_an_independent_model(
    world: World, settings: Settings, redis_client: redis.Redis, ch: ClickHouse
) -> None:
    rng = random.Random(15)
    links, rules = _setup(world)
    now = datetime.now(UTC)
    orders: list[Order] = []
    _new_orders(world, rng, links, now, orders, 300)
    # Before the first payout: refunds (in and after the hold), pending orders approved, re-attributions.
    for o in orders:
        roll = rng.random()
        if o.status == "pending" and roll < 0.6:
            o.status = "approved"
            _post(world, {"order_id": o.oid, "amount": str(o.amount), "currency": o.currency, "status": "approved"})
        elif o.status == "approved" and roll < 0.08:
            _refund(world, o, True, rng)
        elif o.status == "approved" and roll < 0.2:
            _refund(world, o, False, rng)
    drain(settings, redis_client, ch)
    for o in rng.sample([o for o in orders if o.status != "rejected"], 12):
        new = rng.choice([lk for lk in links if lk is not o.link] + [None])
        r = api(world, "POST", f"/api/v1/conversions/{o.cid}/attribution",
                json={"link_code": new["code"] if new else None, "note": "audit"})
        assert r.status_code == 200, r.text
        o.link = new  # type: ignore[assignment]
    drain(settings, redis_client, ch)

    first = _run(world)
    _check_run(first, _expected_run(orders, rules, now), orders)
    keep_open = sorted(first)[0]
    for inf, p in first.items():
        if inf != keep_open:
            assert api(world, "POST", f"/api/v1/payouts/{p['id']}/paid", json={"reference": "R"}).status_code == 200
    paid_ids = {p["id"] for i, p in first.items() if i != keep_open}

    # After the first payout: refunds after payment (full and partial), more approvals, a re-attribution
    # of an unpaid conversion; paid ones are refused.
    claimed = [o for o in orders if o.lines]
    for o in rng.sample(claimed, 40):
        _refund(world, o, rng.random() < 0.5, rng)
    for o in orders:
        if o.status == "pending":
            o.status = "approved"
            _post(world, {"order_id": o.oid, "amount": str(o.amount), "currency": o.currency, "status": "approved"})
    _new_orders(world, rng, links, now, orders, 100)
    paid_one = next(o for o in claimed if o.link and o.link["influencer_id"] != keep_open)
    assert api(world, "POST", f"/api/v1/conversions/{paid_one.cid}/attribution",
               json={"link_code": None}).status_code == 409
    drain(settings, redis_client, ch)
    second = _run(world)
    _check_run(second, _expected_run(orders, rules, now), orders)
    # The scenario is broad: several payouts each run, clawbacks in the second one.
    kinds = [line["kind"] for p in second.values() for line in p["lines"]]
    assert len(first) >= 5 and len(second) >= 3 and kinds.count("clawback") >= 5, (len(first), len(second), kinds)
    assert _run(world) == {}

    # The ledger: every conversion's commission and commission status.
    ledger = _ledger(world)
    assert len(ledger) == 400
    paid_oids = {line["order_id"] for i, p in first.items() if p["id"] in paid_ids for line in p["lines"]
                 if line["kind"] == "commission"}
    for o in orders:
        row = ledger[o.oid]
        assert Decimal(row["commission"]) == o.commission(rules), o.oid
        if o.link is None:
            assert row["commission_status"] is None
        elif o.oid in paid_oids and row["influencer_id"] == (o.link or {}).get("influencer_id"):
            assert row["commission_status"] == "paid"
        elif o.status in ("rejected", "refunded"):
            assert row["commission_status"] == "void", o.oid
        elif o.status == "pending" or o.occurred + timedelta(days=rules[o.link["campaign_id"]][2]) > now:
            assert row["commission_status"] == "pending", o.oid
        else:
            assert row["commission_status"] == "payable", o.oid

    # Each filter lists exactly the conversions whose last version it matches (re-attributed ones moved).
    for status in ("pending", "payable", "paid", "void"):
        assert _ledger(world, commission_status=status) == {
            oid: row for oid, row in ledger.items() if row["commission_status"] == status}, status
    for inf in {lk["influencer_id"] for lk in links}:
        assert _ledger(world, influencer_id=inf) == {
            oid: row for oid, row in ledger.items() if row["influencer_id"] == inf}, inf
        assert _ledger(world, influencer_id=inf, commission_status="paid") == {
            oid: row for oid, row in ledger.items()
            if row["influencer_id"] == inf and row["commission_status"] == "paid"}
    manual = _ledger(world, attribution="manual")
    assert manual and manual == {oid: row for oid, row in ledger.items() if row["attribution"] == "manual"}

    # Reports: commission by lifecycle status over every order.
    want = {"pending": Decimal("0.00"), "payable": Decimal("0.00"), "paid": Decimal("0.00")}
    for o in orders:
        if o.link is None or o.status not in ("approved", "pending"):
            continue
        state = ledger[o.oid]["commission_status"]
        want[state] += o.commission(rules)
    report = api(world, "GET", "/api/v1/reports", params={
        "from": str((now - timedelta(days=95)).date()), "to": str(now.date())}).json()["totals"]
    assert {k: Decimal(report[f"{k}_commission"]) for k in want} == want
    assert sum(want.values()) == Decimal(report["commission"])

    # Statements: each influencer's chain holds and its balance is what is still to come.
    all_payouts = api(world, "GET", "/api/v1/payouts").json()["items"]
    influencers = {lk["influencer_id"] for lk in links}
    for inf in influencers:
        st = api(world, "GET", f"/api/v1/influencers/{inf}/statement").json()
        assert chain.verify(st["entries"], st["head_hash"]) == st["head_hash"]
        earned = sum((o.commission(rules) for o in orders if o.link and o.link["influencer_id"] == inf),
                     Decimal("0.00"))
        paid_out = sum((Decimal(p["amount"]) for p in all_payouts if p["influencer_id"] == inf), Decimal("0.00"))
        assert Decimal(st["totals"]["earned"]) == earned, inf
        assert Decimal(st["totals"]["balance"]) == earned - paid_out, inf
        assert Decimal(st["totals"]["paid"]) + Decimal(st["totals"]["in_open_payouts"]) == paid_out

    # sum(payouts) + open lines = commission earned - voided, over the whole brand.
    payable_now = sum((o.target(rules, now) for o in orders), Decimal("0.00"))
    open_lines = sum((line for lines in _open_lines(orders, rules, now).values() for line in lines.values()),
                     Decimal("0.00"))
    assert sum(Decimal(p["amount"]) for p in all_payouts) + open_lines == payable_now


def _new_orders(world: World, rng: random.Random, links: list[dict[str, Any]], now: datetime, orders: list[Order],
                count: int) -> None:
    for n in range(len(orders), len(orders) + count):
        currency = rng.choice(["USD", "USD", "EUR", "JPY"])
        amount = Decimal(rng.randint(500, 40000)) if currency == "JPY" else Decimal(rng.randint(100, 50000)) / 100
        link = rng.choice(links)
        o = Order(f"X-{n}", currency, amount, now - timedelta(days=rng.choice(DAYS_AGO), minutes=rng.randint(0, 600)),
                  link, status=rng.choice(["approved"] * 8 + ["pending", "rejected"]))
        body: dict[str, Any] = {"order_id": o.oid, "amount": str(amount), "currency": currency, "status": o.status,
                                "occurred_at": o.occurred.isoformat()}
        if n % 3 == 0:  # click attributed (clicked a day before the order)
            body["click_id"] = world.click(link, int((o.occurred - timedelta(days=1)).timestamp() * 1000))
        else:
            body["coupon_code"] = link["coupon_code"]
        o.cid = _post(world, body)["conversion_id"]
        orders.append(o)


def _open_lines(orders: list[Order], rules: dict[str, tuple[str, Decimal, int]], now: datetime
                ) -> dict[str, dict[str, Decimal]]:
    """Differences no payout holds yet (carried clawbacks, commission of influencers owed nothing net)."""
    out: dict[str, dict[str, Decimal]] = {}
    for o in orders:
        current = o.link["influencer_id"] if o.link else None
        for inf in {*o.lines, *([current] if current else [])}:
            target = o.target(rules, now) if inf == current else Decimal("0.00")
            if target - o.lines.get(inf, Decimal(0)) != 0:
                out.setdefault(inf, {})[o.oid] = target - o.lines.get(inf, Decimal(0))
    return out
