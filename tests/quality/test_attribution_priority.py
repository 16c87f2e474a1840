"""``attribution_priority`` per campaign, influencer emails and the postback country, through the API."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from starlette.testclient import TestClient

from tests.reports_world import ADMIN
from tracker.app import create_app
from tracker.conversions import signature
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse


@pytest.fixture
def client(ch: ClickHouse, settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), follow_redirects=False) as c:
        yield c


def _ok(resp: Any, status: int = 201) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    out: dict[str, Any] = resp.json()
    return out


@pytest.mark.parametrize(("priority", "winner"), [(None, "click"), ("click", "click"), ("coupon", "coupon")])
def test_a_coupon_first_campaign_wins_over_a_qualifying_click(
    client: TestClient, ch: ClickHouse, priority: str | None, winner: str
) -> None:
    brand = _ok(client.post("/api/v1/brands", json={"name": "P"}, headers=ADMIN))
    h = {"Authorization": f"Bearer {brand['api_key']}"}
    body: dict[str, Any] = {"name": "C", "commission": {"type": "percent", "value": "10"}}
    if priority:
        body["attribution_priority"] = priority
    podcast = _ok(client.post("/api/v1/campaigns", json=body, headers=h))
    assert podcast["attribution_priority"] == (priority or "click")
    social = _ok(client.post("/api/v1/campaigns", json={"name": "S", "commission": {"type": "flat", "value": "1"}},
                             headers=h))
    inf = _ok(client.post("/api/v1/influencers", json={"name": "I", "email": "i@x.example"}, headers=h))
    assert inf["has_email"] is True and "email" not in inf
    clicked = _ok(client.post("/api/v1/links", json={"campaign_id": social["id"], "influencer_id": inf["id"],
                                                      "destination_url": "https://s.example/"}, headers=h))
    coupon = _ok(client.post("/api/v1/links", json={"campaign_id": podcast["id"], "influencer_id": inf["id"],
                                                     "destination_url": "https://s.example/", "coupon_code": "POD"},
                             headers=h))
    location = client.get(f"/{clicked['code']}", headers={"User-Agent": "Mozilla/5.0 (X11; Linux) Firefox/130.0"})
    click_id = parse_qs(urlsplit(location.headers["location"]).query)["click_id"][0]
    store = _ok(client.post("/api/v1/stores", json={"name": "S"}, headers=h))
    raw = json.dumps({"order_id": "A1", "amount": "10.00", "currency": "USD", "click_id": click_id,
                      "coupon_code": "pod", "country": "fr"}).encode()
    sig = signature.sign(store["secret"], int(time.time()), raw)
    answer = _ok(client.post("/api/v1/conversions", content=raw, headers={
        "X-Store-Id": store["id"], "X-Signature": sig, "Content-Type": "application/json"}), 202)
    assert answer["attribution"] == winner
    assert answer["link_code"] == (coupon if winner == "coupon" else clicked)["code"]
    # The email is kept only as a keyed hash; the order's country upper-cased.
    [(email_hash,)] = ch.query("SELECT email_hash FROM influencers FINAL WHERE id = {i:String}", {"i": inf["id"]})
    assert len(email_hash) == 32 and "x.example" not in email_hash


def test_a_bad_country_or_priority_is_refused(client: TestClient) -> None:
    brand = _ok(client.post("/api/v1/brands", json={"name": "P"}, headers=ADMIN))
    h = {"Authorization": f"Bearer {brand['api_key']}"}
    r = client.post("/api/v1/campaigns", json={"name": "C", "commission": {"type": "flat", "value": "1"},
                                               "attribution_priority": "first"}, headers=h)
    assert r.status_code == 422
    r = client.post("/api/v1/influencers", json={"name": "I", "email": "not-an-email"}, headers=h)
    assert r.status_code == 422
    store = _ok(client.post("/api/v1/stores", json={"name": "S"}, headers=h))
    for country in ("FRA", "1A", 12):
        raw = json.dumps({"order_id": "B", "amount": "1.00", "currency": "USD", "country": country}).encode()
        sig = signature.sign(store["secret"], int(time.time()), raw)
        r = client.post("/api/v1/conversions", content=raw, headers={
            "X-Store-Id": store["id"], "X-Signature": sig, "Content-Type": "application/json"})
        assert r.status_code == 422, (country, r.text)
