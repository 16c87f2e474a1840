"""A brand's day sent through the public API, and the report figures worked out by hand.

Shared by the reports API test and the dashboard test. Everything goes in the way it does
in production: registry routes, clicks through the redirect ``GET /{code}``, conversions
through signed postbacks, fees through the fees route, then the ingest worker drains the
streams into ClickHouse.

The day (all clicks from one address, so user agents tell visitors apart):
- link A1 (Spring 10 %, Anna): visitor v1 x3, v2 x1, Googlebot x2
- link B1 (Spring 10 %, Bob, coupon BOBSPRING): v1 x1, v3 x2, facebookexternalhit x1
- link A2 (Flat 2.50, Anna): v4 x2
- orders: O1 100.00 via A1; O2 50.00 via A1 then 20.00 refunded; O3 80.00 via B1 then fully
  refunded; O4 40.00 pending via A2; O5 25.00 with no click or coupon; O6 60.00 with
  coupon BOBSPRING
- fees today: Anna/Spring 15.00, Bob/Spring 5.50; a fee of 2020 (outside any range here)
"""

from __future__ import annotations

import json
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import redis
from starlette.testclient import TestClient

from tracker.conversions import signature
from tracker.ingest.worker import Worker
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse

ADMIN = {"Authorization": "Bearer tka_test_admin_token_0123456789"}


def _ua(n: int) -> str:
    return f"Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/12{n}.0 Mobile"


GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
FACEBOOK = "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)"

# Hand-computed figures (recent orders: all commission is pending, inside the 30-day hold).
# Ratios: roi = (revenue - cost) / cost, conversion_rate =
# conversions / clicks, epc = commission / clicks, aov = revenue / conversions.
EXPECTED_INFLUENCERS = {
    "Anna": {
        "clicks": 6, "bot_clicks": 2, "unique_clicks": 3, "conversions": 3, "revenue": "170.00",
        "commission": "15.50", "pending_commission": "15.50", "payable_commission": "0.00",
        "paid_commission": "0.00", "fees": "15.00", "cost": "30.50", "roi": "4.573770",
        "conversion_rate": "0.500000", "epc": "2.583333", "aov": "56.666667",
    },
    "Bob": {
        "clicks": 3, "bot_clicks": 1, "unique_clicks": 2, "conversions": 1, "revenue": "60.00",
        "commission": "6.00", "pending_commission": "6.00", "payable_commission": "0.00",
        "paid_commission": "0.00", "fees": "5.50", "cost": "11.50", "roi": "4.217391",
        "conversion_rate": "0.333333", "epc": "2.000000", "aov": "60.000000",
    },
}
EXPECTED_CAMPAIGNS = {
    "Spring": {
        "clicks": 7, "bot_clicks": 3, "unique_clicks": 4, "conversions": 3, "revenue": "190.00",
        "commission": "19.00", "pending_commission": "19.00", "payable_commission": "0.00",
        "paid_commission": "0.00", "fees": "20.50", "cost": "39.50", "roi": "3.810127",
        "conversion_rate": "0.428571", "epc": "2.714286", "aov": "63.333333",
    },
    "Flat": {
        "clicks": 2, "bot_clicks": 0, "unique_clicks": 1, "conversions": 1, "revenue": "40.00",
        "commission": "2.50", "pending_commission": "2.50", "payable_commission": "0.00",
        "paid_commission": "0.00", "fees": "0.00", "cost": "2.50", "roi": "15.000000",
        "conversion_rate": "0.500000", "epc": "1.250000", "aov": "40.000000",
    },
}
EXPECTED_TOTALS = {
    "clicks": 9, "bot_clicks": 3, "unique_clicks": 5, "conversions": 4, "revenue": "230.00",
    "commission": "21.50", "pending_commission": "21.50", "payable_commission": "0.00",
        "paid_commission": "0.00", "fees": "20.50", "cost": "42.00", "roi": "4.476190",
    "conversion_rate": "0.444444", "epc": "2.388889", "aov": "57.500000",
    "unattributed_conversions": 1, "unattributed_revenue": "25.00",
}


def _ok(resp: Any, status: int = 201) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    out: dict[str, Any] = resp.json()
    return out


def build(client: TestClient, redis_client: redis.Redis, ch: ClickHouse, settings: Settings) -> dict[str, Any]:
    """Send the day through the API; returns the brand (with ``headers``), ids and codes."""
    brand = _ok(client.post("/api/v1/brands", json={"name": "Acme", "currency": "USD"}, headers=ADMIN))
    h = {"Authorization": f"Bearer {brand['api_key']}"}
    spring = _ok(client.post("/api/v1/campaigns", json={"name": "Spring",
                                                          "commission": {"type": "percent", "value": "10"}}, headers=h))
    flat = _ok(client.post("/api/v1/campaigns", json={"name": "Flat",
                                                       "commission": {"type": "flat", "value": "2.50"}}, headers=h))
    anna = _ok(client.post("/api/v1/influencers", json={"name": "Anna"}, headers=h))
    bob = _ok(client.post("/api/v1/influencers", json={"name": "Bob"}, headers=h))

    def link(campaign: dict[str, Any], influencer: dict[str, Any], coupon: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"campaign_id": campaign["id"], "influencer_id": influencer["id"],
                                "destination_url": "https://shop.example/p"}
        if coupon:
            body["coupon_code"] = coupon
        return _ok(client.post("/api/v1/links", json=body, headers=h))

    a1, b1, a2 = link(spring, anna), link(spring, bob, "BOBSPRING"), link(flat, anna)
    store = _ok(client.post("/api/v1/stores", json={"name": "Shop"}, headers=h))

    def click(code: str, ua: str) -> str | None:
        resp = client.get(f"/{code}", headers={"User-Agent": ua}, follow_redirects=False)
        assert resp.status_code == 302, resp.text
        return parse_qs(urlsplit(resp.headers["location"]).query).get("click_id", [None])[0]

    clicks: dict[str, list[str | None]] = {}
    for code, agents in (
        (a1["code"], [_ua(1), _ua(1), _ua(1), _ua(2), GOOGLEBOT, GOOGLEBOT]),
        (b1["code"], [_ua(1), _ua(3), _ua(3), FACEBOOK]),
        (a2["code"], [_ua(4), _ua(4)]),
    ):
        clicks[code] = [click(code, ua) for ua in agents]

    def post(body: dict[str, Any]) -> dict[str, Any]:
        raw = json.dumps(body).encode()
        headers = {"X-Store-Id": store["id"], "X-Signature": signature.sign(store["secret"], int(time.time()), raw),
                   "Content-Type": "application/json"}
        return _ok(client.post("/api/v1/conversions", content=raw, headers=headers), 202)

    cid = {code: ids[0] for code, ids in clicks.items()}
    post({"order_id": "O1", "amount": "100.00", "currency": "USD", "click_id": cid[a1["code"]]})
    post({"order_id": "O2", "amount": "50.00", "currency": "USD", "click_id": clicks[a1["code"]][1]})
    post({"order_id": "O2", "amount": "20.00", "currency": "USD", "status": "refunded"})
    post({"order_id": "O3", "amount": "80.00", "currency": "USD", "click_id": cid[b1["code"]]})
    post({"order_id": "O3", "currency": "USD", "status": "refunded"})
    post({"order_id": "O4", "amount": "40.00", "currency": "USD", "click_id": cid[a2["code"]], "status": "pending"})
    assert post({"order_id": "O5", "amount": "25.00", "currency": "USD"})["attributed"] is False
    assert post({"order_id": "O6", "amount": "60.00", "currency": "USD", "coupon_code": "bobspring"})[
        "attribution"] == "coupon"

    for campaign, influencer, amount, day in (
        (spring, anna, "15.00", None), (spring, bob, "5.50", None), (flat, anna, "100.00", "2020-01-01"),
    ):
        body = {"campaign_id": campaign["id"], "influencer_id": influencer["id"], "amount": amount}
        if day:
            body["date"] = day
        _ok(client.post("/api/v1/fees", json=body, headers=h))

    worker = Worker(settings, redis_client, ch, name="reports-world")
    worker.drain()
    today = datetime.now(UTC).date()
    return {
        "brand": brand, "headers": h, "today": today,
        "from": today - timedelta(days=1), "to": today + timedelta(days=1),
        "campaigns": {"Spring": spring["id"], "Flat": flat["id"]},
        "influencers": {"Anna": anna["id"], "Bob": bob["id"]},
        "links": {"A1": a1["code"], "B1": b1["code"], "A2": a2["code"]},
    }


def iso(d: date) -> str:
    return d.isoformat()
