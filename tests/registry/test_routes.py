"""The registry API end to end (brands, campaigns, influencers, stores, fees, rates), real Redis and chDB."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import redis
from starlette.testclient import TestClient

from tests.conftest import ADMIN_TOKEN
from tests.registry.helpers import ADMIN, JSON, as_json, new_brand, new_campaign, registry
from tracker.core.credentials import store_secret
from tracker.settings import Settings


def test_brand_creation_needs_the_admin_token(client: TestClient) -> None:
    r = client.post("/api/v1/brands", json={"name": "Acme"})
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert r.json()["error"]["code"] == "unauthorized"
    r = client.post("/api/v1/brands", json={"name": "Acme"}, headers={"Authorization": "Bearer nope-nope-nope"})
    assert r.status_code == 401
    brand = new_brand(client)
    r = client.post("/api/v1/brands", json={"name": "Evil"}, headers=brand["headers"])
    assert r.status_code == 403


def test_brand_answer_and_key_shown_once(client: TestClient, redis_client: redis.Redis) -> None:
    r = client.post("/api/v1/brands", json={"name": "Acme"}, headers=ADMIN)
    assert r.status_code == 201
    body = r.json()
    assert set(body) == {"id", "name", "currency", "created_at", "api_key"}
    assert body["currency"] == "USD" and body["id"].startswith("brd_") and body["api_key"].startswith("trk_")
    brand = {**body, "headers": {"Authorization": f"Bearer {body['api_key']}"}}
    other = new_brand(client, "EUR", "Other")
    listed = client.get("/api/v1/brands", headers=ADMIN).json()["items"]
    assert [b["id"] for b in listed] == [brand["id"], other["id"]]
    assert all("api_key" not in b for b in listed)
    own = client.get("/api/v1/brands", headers=brand["headers"]).json()["items"]
    assert [b["id"] for b in own] == [brand["id"]]
    # The key works after Redis lost everything (hash looked up in ClickHouse).
    redis_client.flushall()
    assert client.get("/api/v1/campaigns", headers=brand["headers"]).status_code == 200


@pytest.mark.parametrize(
    "header",
    [None, "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer trk_unknownunknownunknownunknown", "Token abc",
     f"Bearer {ADMIN_TOKEN}"],
)
def test_brand_routes_refuse_bad_credentials(client: TestClient, header: str | None) -> None:
    headers = {"Authorization": header} if header is not None else {}
    r = client.get("/api/v1/links", headers=headers)
    assert r.status_code == (403 if header == f"Bearer {ADMIN_TOKEN}" else 401)
    if r.status_code == 401:
        assert "Bearer" in r.headers["www-authenticate"]


BAD_BRANDS = [
    ({"name": "A", "currency": "usd"}, 422, "invalid_currency"),
    ({"name": "A", "currency": "XYZ"}, 422, "invalid_currency"),
    ({"name": "A", "currency": 840}, 422, "invalid_currency"),
    ({"currency": "USD"}, 422, "missing_field"),
    ({"name": ""}, 422, "invalid_field"),
    ({"name": 12}, 422, "invalid_field"),
    ({"name": "A" * 201}, 422, "invalid_field"),
    ({"name": "A\nB"}, 422, "invalid_field"),
    ({"name": "A", "colour": "red"}, 422, "invalid_field"),
    ({"name": "A\ud800"}, 422, "invalid_field"),
]


@pytest.mark.parametrize(("body", "status", "code"), BAD_BRANDS)
def test_bad_brand_bodies(client: TestClient, body: dict[str, Any], status: int, code: str) -> None:
    r = client.post("/api/v1/brands", content=as_json(body), headers={**ADMIN, **JSON})
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code


@pytest.mark.parametrize(
    ("raw", "status"),
    [(b"", 400), (b"{", 400), (b"[1,2]", 400), (b'"x"', 400), (b"null", 400), (b"[" * 60_000, 400),
     (b'{"name": "\xff"}', 400)],
)
def test_non_object_bodies(client: TestClient, raw: bytes, status: int) -> None:
    r = client.post("/api/v1/brands", content=raw, headers={**ADMIN, "Content-Type": "application/json"})
    assert r.status_code == status
    assert r.json()["error"]["code"] == "invalid_json"


BAD_CAMPAIGNS = [
    ({"attribution_window_days": "30"}, "attribution_window_days"),
    ({"attribution_window_days": 0}, "attribution_window_days"),
    ({"attribution_window_days": 366}, "attribution_window_days"),
    ({"attribution_window_days": True}, "attribution_window_days"),
    ({"attribution_window_days": 7.5}, "attribution_window_days"),
    ({"commission": None}, "commission"),
    ({"commission": "10%"}, "commission"),
    ({"commission": {"type": "bounty", "value": "1"}}, "commission.type"),
    ({"commission": {"type": "percent"}}, "commission.value"),
    ({"commission": {"type": "percent", "value": "101"}}, "commission.value"),
    ({"commission": {"type": "percent", "value": "-1"}}, "commission.value"),
    ({"commission": {"type": "flat", "value": "-0.01"}}, "commission.value"),
    ({"commission": {"type": "flat", "value": "1.001"}}, "commission.value"),
    ({"commission": {"type": "flat", "value": "abc"}}, "commission.value"),
    ({"commission": {"type": "flat", "value": "NaN"}}, "commission.value"),
    ({"commission": {"type": "flat", "value": True}}, "commission.value"),
    ({"commission": {"type": "flat", "value": "1", "cap": "5"}}, "commission"),
    ({"click_id_param": "a&b"}, "click_id_param"),
    ({"click_id_param": "click id"}, "click_id_param"),
    ({"click_id_param": "1abc"}, "click_id_param"),
    ({"click_id_param": 5}, "click_id_param"),
    ({"allowed_domains": "shop.example"}, "allowed_domains"),
    ({"allowed_domains": [1]}, "allowed_domains"),
    ({"allowed_domains": ["not a domain"]}, "allowed_domains"),
    ({"allowed_domains": ["localhost"]}, "allowed_domains"),
    ({"allowed_domains": ["https://shop.example/"]}, "allowed_domains"),
    ({"name": None}, "name"),
    ({"budget": 5}, "budget"),
]


@pytest.mark.parametrize(("fields", "named"), BAD_CAMPAIGNS)
def test_bad_campaign_bodies(client: TestClient, fields: dict[str, Any], named: str) -> None:
    brand = new_brand(client)
    body = {"name": "Spring", "commission": {"type": "percent", "value": "10"}, **fields}
    r = client.post("/api/v1/campaigns", json=body, headers=brand["headers"])
    assert r.status_code == 422, r.text
    assert named in r.json()["error"]["message"]
    assert client.get("/api/v1/campaigns", headers=brand["headers"]).json() == {"items": []}


def test_campaign_defaults_and_answer(client: TestClient) -> None:
    brand = new_brand(client, "JPY")
    c = new_campaign(client, brand, allowed_domains=["Shop.Example", "*.other.example", "shop.example"])
    assert c["attribution_window_days"] == 30 and c["click_id_param"] == "click_id"
    assert c["commission"] == {"type": "percent", "value": "10"}
    assert c["allowed_domains"] == ["shop.example", "other.example"]
    idn = new_campaign(client, brand, allowed_domains=["Bücher.example"])
    assert idn["allowed_domains"] == ["xn--bcher-kva.example"]
    flat = new_campaign(client, brand, commission={"type": "flat", "value": "500"}, click_id_param="subid",
                        attribution_window_days=365)
    assert flat["commission"] == {"type": "flat", "value": "500"}
    # JPY has no minor unit: a flat commission with decimals is refused.
    r = client.post("/api/v1/campaigns", json={"name": "x", "commission": {"type": "flat", "value": "1.5"}},
                    headers=brand["headers"])
    assert r.status_code == 422
    items = client.get("/api/v1/campaigns", headers=brand["headers"]).json()["items"]
    assert [i["id"] for i in items] == [c["id"], idn["id"], flat["id"]]
    assert client.get(f"/api/v1/campaigns/{c['id']}", headers=brand["headers"]).json() == c


def test_influencers(client: TestClient) -> None:
    brand = new_brand(client)
    r = client.post("/api/v1/influencers", json={"name": "Bo"}, headers=brand["headers"])
    assert r.status_code == 201
    bo = r.json()
    assert bo["handle"] is None and bo["platform"] is None and bo["id"].startswith("inf_")
    r = client.post("/api/v1/influencers", json={"name": "Cy", "handle": "@cy", "platform": "tiktok"},
                    headers=brand["headers"])
    cy = r.json()
    assert (cy["handle"], cy["platform"]) == ("@cy", "tiktok")
    assert client.get("/api/v1/influencers", headers=brand["headers"]).json()["items"] == [bo, cy]
    assert client.post("/api/v1/influencers", json={"name": "D", "handle": 5},
                       headers=brand["headers"]).status_code == 422


def test_store_secret_shown_once(client: TestClient, world: dict[str, Any], settings: Settings) -> None:
    r = client.post("/api/v1/stores", json={"name": "Shop", "allowed_ips": ["203.0.113.7", "10.1.0.0/16"]},
                    headers=world["h"])
    assert r.status_code == 201, r.text
    store = r.json()
    assert set(store) == {"id", "name", "secret", "postback_token", "allowed_ips", "platform", "webhook_url",
                          "webhook_secret_rotated_at", "created_at"}
    assert store["allowed_ips"] == ["203.0.113.7", "10.1.0.0/16"]
    assert (store["platform"], store["webhook_url"]) == ("custom", None)
    listed = client.get("/api/v1/stores", headers=world["h"]).json()["items"]
    assert listed == [{k: v for k, v in store.items() if k not in ("secret", "postback_token")}]
    one = client.get(f"/api/v1/stores/{store['id']}", headers=world["h"]).json()
    assert "secret" not in one and "postback_token" not in one
    assert client.portal is not None
    rec = client.portal.call(registry(client).get_store, store["id"])
    assert rec is not None and rec["brand_id"] == world["brand"]["id"]
    assert store_secret(str(settings.secret_key), rec["secret_nonce"]) == store["secret"]


@pytest.mark.parametrize(
    "body",
    [{}, {"name": ""}, {"name": "S", "allowed_ips": "1.2.3.4"}, {"name": "S", "allowed_ips": ["1.2.3"]},
     {"name": "S", "allowed_ips": ["example.com"]}, {"name": "S", "secret": "mine"}],
)
def test_bad_store_bodies(client: TestClient, world: dict[str, Any], body: dict[str, Any]) -> None:
    assert client.post("/api/v1/stores", json=body, headers=world["h"]).status_code == 422


def test_fees_default_date_and_brand_currency(client: TestClient, world: dict[str, Any]) -> None:
    body = {"campaign_id": world["campaign"]["id"], "influencer_id": world["influencer"]["id"], "amount": "250.00",
            "note": "Story"}
    r = client.post("/api/v1/fees", json=body, headers=world["h"])
    assert r.status_code == 201, r.text
    fee = r.json()
    assert fee["date"] == datetime.now(UTC).date().isoformat()
    assert (fee["amount"], fee["currency"], fee["note"]) == ("250.00", "USD", "Story")
    assert fee["id"].startswith("fee_")
    assert client.get("/api/v1/fees", headers=world["h"]).json()["items"] == [fee]


def test_fee_in_another_currency_needs_a_rate(client: TestClient, world: dict[str, Any]) -> None:
    body = {"campaign_id": world["campaign"]["id"], "influencer_id": world["influencer"]["id"], "amount": "100",
            "currency": "EUR", "date": "2026-11-01"}
    r = client.post("/api/v1/fees", json=body, headers=world["h"])
    assert r.status_code == 422 and "EUR" in r.json()["error"]["message"]
    r = client.put("/api/v1/fx-rates/EUR", json={"rate": "1.0825"}, headers=world["h"])
    assert r.status_code == 200, r.text
    assert r.json()["rate"] == "1.0825" and r.json()["base"] == "USD"
    r = client.post("/api/v1/fees", json=body, headers=world["h"])
    assert r.status_code == 201, r.text
    fee = r.json()
    assert (fee["amount"], fee["currency"], fee["original_amount"], fee["original_currency"]) == (
        "108.25", "USD", "100.00", "EUR")
    assert fee["date"] == "2026-11-01"
    # A new rate replaces the old one.
    client.put("/api/v1/fx-rates/EUR", json={"rate": "1.1"}, headers=world["h"])
    rates = client.get("/api/v1/fx-rates", headers=world["h"]).json()["items"]
    assert [(x["currency"], x["rate"]) for x in rates] == [("EUR", "1.1")]
    assert client.portal is not None
    assert client.portal.call(registry(client).fx_rate, world["brand"]["id"], "EUR") == Decimal("1.1")


BAD_FEES: list[tuple[dict[str, Any], str]] = [
    ({"amount": None}, "amount"),
    ({"amount": "0"}, "amount"),
    ({"amount": "-5"}, "amount"),
    ({"amount": "1.234"}, "amount"),
    ({"amount": "ten"}, "amount"),
    ({"amount": True}, "amount"),
    ({"amount": "10", "currency": "usd"}, "currency"),
    ({"amount": "10", "currency": "EURO"}, "currency"),
    ({"amount": "10.5", "currency": "JPY"}, "amount"),
    ({"amount": "10", "date": "2026-13-01"}, "date"),
    ({"amount": "10", "date": "01/11/2026"}, "date"),
    ({"amount": "10", "date": 20261101}, "date"),
    ({"amount": "10", "note": 5}, "note"),
    ({"amount": "10", "campaign_id": None}, "campaign_id"),
    ({"amount": "10", "paid": True}, "paid"),
]


@pytest.mark.parametrize(("fields", "named"), BAD_FEES)
def test_bad_fee_bodies(client: TestClient, world: dict[str, Any], fields: dict[str, Any], named: str) -> None:
    body = {"campaign_id": world["campaign"]["id"], "influencer_id": world["influencer"]["id"], **fields}
    r = client.post("/api/v1/fees", json=body, headers=world["h"])
    assert r.status_code == 422, r.text
    assert named in r.json()["error"]["message"]


def test_a_fee_for_an_unknown_influencer_is_not_found(client: TestClient, world: dict[str, Any]) -> None:
    body = {"campaign_id": world["campaign"]["id"], "influencer_id": "inf_unknownunknown01", "amount": "10"}
    r = client.post("/api/v1/fees", json=body, headers=world["h"])
    assert r.status_code == 404, r.text
    assert "inf_unknownunknown01" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("currency", "body"),
    [("usd", {"rate": "1"}), ("XXX", {"rate": "1"}), ("EUR", {"rate": "0"}), ("EUR", {"rate": "-1"}),
     ("EUR", {"rate": "abc"}), ("EUR", {"rate": "1.123456789"}), ("EUR", {}), ("EUR", {"rate": True}),
     ("USD", {"rate": "1"})],
)
def test_bad_fx_rates(client: TestClient, world: dict[str, Any], currency: str, body: dict[str, Any]) -> None:
    r = client.put(f"/api/v1/fx-rates/{currency}", json=body, headers=world["h"])
    assert r.status_code == 422, r.text
    assert client.get("/api/v1/fx-rates", headers=world["h"]).json() == {"items": []}
