"""A generated brand day with fraud planted among honest traffic; the test knows the truth.

Everything goes in through the public API: registry routes, clicks through the redirect
(``CF-IPCountry`` from a trusted proxy gives each click its country), signed postbacks, then
the ingest worker drains both streams. ``build`` returns the truth: every planted order with
the flag it must get, and the honest orders, which must get none.

Planted (default rules: 10 s, 3 a visitor-day, self-referral on, coupon leak on, factor 3):
- ``fast_click``: orders 2 to 8 seconds after their click;
- ``visitor_repeat``: one visitor clicking and ordering 5 times in the day (every order flagged);
- ``self_referral``: an order through Sally's link by Sally's own email (case and spaces differ);
- ``coupon_leak``: Cora's coupon used from BR, where her link had no clicks.
Honest: visitors ordering 15 s to a minute after a click, at most 3 times, other emails, Cora's
coupon used from the countries of her clicks (US, FR), Dan's coupon-only orders below the factor.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import redis
from starlette.testclient import TestClient

from tests.redirect.test_handler import asgi_get
from tests.reports_world import ADMIN
from tracker.conversions import signature
from tracker.core.clickid import ClickIds
from tracker.ingest.worker import Worker
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse


@dataclass
class World:
    headers: dict[str, str]
    store: dict[str, Any]
    links: dict[str, dict[str, Any]]
    influencers: dict[str, dict[str, Any]]
    planted: dict[str, set[str]] = field(default_factory=dict)  # order id -> the flags it must get
    honest: set[str] = field(default_factory=set)
    # order id -> (country of its click or the store's, device, revenue) for counted orders
    orders: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    post: Callable[[dict[str, Any]], dict[str, Any]] | None = None


def _ok(resp: Any, status: int = 201) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    out: dict[str, Any] = resp.json()
    return out


def _ua(n: int) -> str:
    return (f"Mozilla/5.0 (Linux; Android 14; Pixel {n}) AppleWebKit/537.36 (KHTML, like Gecko) "
            f"Chrome/13{n % 10}.0 Mobile")


def build(client: TestClient, redis_client: redis.Redis, ch: ClickHouse, settings: Settings, seed: int = 5) -> World:
    rng = random.Random(seed)
    brand = _ok(client.post("/api/v1/brands", json={"name": "Quality", "currency": "USD"}, headers=ADMIN))
    h = {"Authorization": f"Bearer {brand['api_key']}"}
    main = {"name": "Main", "commission": {"type": "percent", "value": "10"}}
    campaign = _ok(client.post("/api/v1/campaigns", json=main, headers=h))
    influencers = {
        name: _ok(client.post("/api/v1/influencers", json={"name": name, "email": f"{name.lower()}@creators.example"},
                              headers=h))
        for name in ("Anna", "Sally", "Cora", "Dan")
    }
    coupons = {"Cora": "CORA10", "Dan": "DAN20"}
    links = {
        name: _ok(client.post("/api/v1/links", json={
            "campaign_id": campaign["id"], "influencer_id": inf["id"], "destination_url": "https://shop.example/p",
            **({"coupon_code": coupons[name]} if name in coupons else {}),
        }, headers=h))
        for name, inf in influencers.items()
    }
    store = _ok(client.post("/api/v1/stores", json={"name": "Shop"}, headers=h))
    world = World(h, store, links, influencers)
    click_ids = ClickIds(str(settings.secret_key))

    def click(name: str, visitor: int, country: str) -> tuple[str, datetime]:
        status, headers = asgi_get(client, f"/{links[name]['code']}", peer="127.0.0.1",
                                   headers={"User-Agent": _ua(visitor), "CF-IPCountry": country})
        assert status == 302
        cid = parse_qs(headers["location"].split("?", 1)[1])["click_id"][0]
        ref = click_ids.parse(cid)
        assert ref is not None
        return cid, datetime.fromtimestamp(ref.ts_ms / 1000, UTC)

    def post(body: dict[str, Any]) -> dict[str, Any]:
        raw = json.dumps(body).encode()
        headers = {"X-Store-Id": store["id"], "X-Signature": signature.sign(store["secret"], int(time.time()), raw),
                   "Content-Type": "application/json"}
        return _ok(client.post("/api/v1/conversions", content=raw, headers=headers), 202)

    world.post = post
    n = 0

    def order(flags: set[str], *, click_at: datetime | None = None, cid: str | None = None, after: float = 0,
              where: str = "", device: str = "", **body: Any) -> str:
        nonlocal n
        n += 1
        oid = f"Q{n:03d}"
        amount = f"{rng.randrange(1000, 20000) / 100:.2f}"
        data = {"order_id": oid, "amount": amount, "currency": "USD", **body}
        if cid is not None and click_at is not None:
            data["click_id"] = cid
            data["occurred_at"] = (click_at + timedelta(seconds=after)).isoformat()
        answer = post(data)
        assert answer["attributed"] is True, answer
        (world.planted.__setitem__(oid, flags) if flags else world.honest.add(oid))
        world.orders[oid] = (where, device, amount)
        return oid

    # Honest visitors: 1 to 3 orders each, 30 s to 4 min after a click, their own emails.
    visitor = 10
    for name, country in (("Anna", "US"), ("Anna", "FR"), ("Sally", "US"), ("Cora", "US"), ("Cora", "FR"),
                          ("Dan", "IN"), ("Anna", "DE"), ("Sally", "GB")):
        visitor += 1
        for k in range(rng.randrange(1, 4)):
            cid, at = click(name, visitor, country)
            click(name, visitor, country)  # a second look that does not convert
            order(set(), click_at=at, cid=cid, after=rng.randrange(15, 60), where=country, device="mobile",
                  customer_email=f"buyer{visitor}-{k}@mail.example")
    # Planted: fast clicks.
    for after in (2, 5, 8):
        visitor += 1
        cid, at = click("Anna", visitor, "US")
        order({"fast_click"}, click_at=at, cid=cid, after=after, where="US", device="mobile")
    # Planted: one visitor converting 5 times in the day.
    visitor += 1
    for _ in range(5):
        cid, at = click("Dan", visitor, "IN")
        order({"visitor_repeat"}, click_at=at, cid=cid, after=60, where="IN", device="mobile")
    # Planted: self-referral (and an honest order of another customer on the same link).
    visitor += 1
    cid, at = click("Sally", visitor, "US")
    order({"self_referral"}, click_at=at, cid=cid, after=90, where="US", device="mobile",
          customer_email="  SALLY@Creators.Example ")
    # Coupon-only orders come after every order above (those are dated up to 4 min after now).
    later = (datetime.now(UTC) + timedelta(seconds=270)).isoformat()
    # Cora's coupon: honest uses from her clicks' countries, leaked uses from BR.
    for country in ("US", "FR", "US"):
        order(set(), coupon_code="CORA10", where=country, country=country, occurred_at=later)
    for _ in range(2):
        order({"coupon_leak"}, coupon_code="cora10", where="BR", country="br", occurred_at=later)
    # Dan's coupon-only orders, fewer than 3 x his click-attributed ones (6 in the day).
    for _ in range(2):
        order(set(), coupon_code="DAN20", where="IN", country="IN", occurred_at=later)
    Worker(settings, redis_client, ch, name="quality-world").drain()
    return world
