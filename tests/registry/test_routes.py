"""The registry API end to end: TestClient, real Redis and chDB."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import redis
from starlette.testclient import TestClient

from tests.conftest import ADMIN_TOKEN
from tracker.app import create_app
from tracker.core import keys
from tracker.core.credentials import store_secret
from tracker.core.records import LinkRecord
from tracker.registry.store import Registry
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
JSON = {"Content-Type": "application/json"}


def as_json(body: dict[str, Any]) -> bytes:
    """ASCII JSON, so lone surrogates travel as escapes the way a hostile client sends them."""
    return json.dumps(body).encode()


@pytest.fixture
def client(ch: ClickHouse, settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def new_brand(client: TestClient, currency: str = "USD", name: str = "Acme") -> dict[str, Any]:
    r = client.post("/api/v1/brands", json={"name": name, "currency": currency}, headers=ADMIN)
    assert r.status_code == 201, r.text
    brand: dict[str, Any] = r.json()
    brand["headers"] = {"Authorization": f"Bearer {brand['api_key']}"}
    return brand


def new_campaign(client: TestClient, brand: dict[str, Any], **fields: Any) -> dict[str, Any]:
    body = {"name": "Spring", "commission": {"type": "percent", "value": "10"}, **fields}
    r = client.post("/api/v1/campaigns", json=body, headers=brand["headers"])
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


def new_influencer(client: TestClient, brand: dict[str, Any], name: str = "Ann") -> dict[str, Any]:
    r = client.post("/api/v1/influencers", json={"name": name, "handle": "@ann"}, headers=brand["headers"])
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


@pytest.fixture
def world(client: TestClient) -> dict[str, Any]:
    brand = new_brand(client)
    campaign = new_campaign(client, brand, allowed_domains=["shop.example"])
    influencer = new_influencer(client, brand)
    return {"brand": brand, "h": brand["headers"], "campaign": campaign, "influencer": influencer}


def link_body(world: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "campaign_id": world["campaign"]["id"],
        "influencer_id": world["influencer"]["id"],
        "destination_url": "https://shop.example/p/1?ref=x",
        **fields,
    }


def registry(client: TestClient) -> Registry:
    reg: Registry = client.app.state.services.registry  # type: ignore[attr-defined]
    return reg


def link_record(client: TestClient, code: str) -> LinkRecord | None:
    assert client.portal is not None
    return client.portal.call(registry(client).link_by_code, code)


# ----------------------------------------------------------------------- auth


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


# ---------------------------------------------------------------- bad bodies

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
    flat = new_campaign(client, brand, commission={"type": "flat", "value": 500}, click_id_param="subid",
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


# --------------------------------------------------------------------- links


def test_link_creation_answer_and_record(client: TestClient, world: dict[str, Any]) -> None:
    r = client.post("/api/v1/links", json=link_body(world, coupon_code="ANN10"), headers=world["h"])
    assert r.status_code == 201, r.text
    link = r.json()
    assert set(link) == {"id", "code", "short_url", "destination_url", "coupon_code", "campaign_id",
                         "influencer_id", "disabled", "expires_at", "created_at"}
    assert link["short_url"] == f"http://testserver/{link['code']}"
    assert len(link["code"]) >= 6 and registry(client).codes.decode(link["code"]) == link["id"]
    assert (link["coupon_code"], link["disabled"], link["expires_at"]) == ("ANN10", False, None)
    rec = link_record(client, link["code"])
    assert rec is not None and rec.destination_url == link["destination_url"] and rec.click_id_param == "click_id"
    assert client.get(f"/api/v1/links/{link['code']}", headers=world["h"]).json() == link


def test_link_list_filters(client: TestClient, world: dict[str, Any]) -> None:
    other_inf = new_influencer(client, world["brand"], "Bo")
    other_cmp = new_campaign(client, world["brand"])
    a = client.post("/api/v1/links", json=link_body(world), headers=world["h"]).json()
    b = client.post("/api/v1/links", json=link_body(world, influencer_id=other_inf["id"]), headers=world["h"]).json()
    c = client.post("/api/v1/links", json=link_body(world, campaign_id=other_cmp["id"]), headers=world["h"]).json()

    def codes(query: str) -> list[str]:
        r = client.get(f"/api/v1/links{query}", headers=world["h"])
        assert r.status_code == 200, r.text
        return [i["code"] for i in r.json()["items"]]

    assert codes("") == [a["code"], b["code"], c["code"]]
    assert codes(f"?influencer_id={other_inf['id']}") == [b["code"]]
    assert codes(f"?campaign_id={other_cmp['id']}") == [c["code"]]
    assert codes(f"?campaign_id={world['campaign']['id']}&influencer_id={world['influencer']['id']}") == [a["code"]]
    assert codes("?limit=1&offset=1") == [b["code"]]
    for bad in ("abc", "0", "-1", "10001", "\u00b2", "1.5"):
        assert client.get("/api/v1/links", params={"limit": bad}, headers=world["h"]).status_code == 422, bad


BAD_DESTINATIONS = [
    "ftp://shop.example/file",
    "javascript:alert(1)",
    "data:text/html,hi",
    "shop.example/p",
    "//shop.example/p",
    "https://",
    "https://user:pass@shop.example/",
    "https://shop.example/\r\nLocation: https://evil.test/",
    "https://shop.example/%0d%0a ok",
    "https://shop.example/\tx",
    "https://evil.test/",
    "https://shop.example.evil.test/",
    "https://notshop.example/",
    "https://shop.example:70000/",
    "",
]


@pytest.mark.parametrize("url", BAD_DESTINATIONS)
def test_bad_destinations(client: TestClient, world: dict[str, Any], url: str) -> None:
    r = client.post("/api/v1/links", json=link_body(world, destination_url=url), headers=world["h"])
    assert r.status_code == 422, r.text
    assert "destination_url" in r.json()["error"]["message"]


@pytest.mark.parametrize("url", ["https://shop.example/", "http://www.shop.example/a?b=1#c", "https://SHOP.example"])
def test_allowed_destinations(client: TestClient, world: dict[str, Any], url: str) -> None:
    r = client.post("/api/v1/links", json=link_body(world, destination_url=url), headers=world["h"])
    assert r.status_code == 201, r.text


BAD_LINKS: list[tuple[dict[str, Any], int, str]] = [
    ({"campaign_id": "cmp_doesnotexist0001"}, 422, "cmp_doesnotexist0001"),
    ({"influencer_id": "inf_doesnotexist0001"}, 422, "inf_doesnotexist0001"),
    ({"campaign_id": "garbage"}, 422, "garbage"),
    ({"campaign_id": 12}, 422, "campaign_id"),
    ({"destination_url": 12}, 422, "destination_url"),
    ({"destination_url": None}, 422, "destination_url"),
    ({"coupon_code": "a"}, 422, "coupon_code"),
    ({"coupon_code": "SAVE 10"}, 422, "coupon_code"),
    ({"coupon_code": 10}, 422, "coupon_code"),
    ({"code": "api"}, 422, "api"),
    ({"code": "healthz"}, 422, "healthz"),
    ({"code": "Dashboard"}, 422, "Dashboard"),
    ({"code": "ab"}, 422, "ab"),
    ({"code": "has space"}, 422, "has space"),
    ({"code": "../etc"}, 422, "../etc"),
    ({"expires_at": "2020-01-01T00:00:00Z"}, 422, "expires_at"),
    ({"expires_at": "2099-01-01T00:00:00"}, 422, "expires_at"),
    ({"expires_at": "tomorrow"}, 422, "expires_at"),
    ({"expires_at": "9999-01-01T00:00:00Z"}, 422, "expires_at"),
    ({"expires_at": "9999-12-31T23:59:59-01:00"}, 422, "expires_at"),
    ({"expires_at": "0001-01-01T00:00:00+01:00"}, 422, "expires_at"),
    ({"destination_url": "https://shop.example/\ud800"}, 422, "destination_url"),
    ({"expires_at": 4102444800}, 422, "expires_at"),
    ({"disabled": True}, 422, "disabled"),
]


@pytest.mark.parametrize(("fields", "status", "named"), BAD_LINKS)
def test_bad_link_bodies(client: TestClient, world: dict[str, Any], fields: dict[str, Any], status: int,
                         named: str) -> None:
    r = client.post("/api/v1/links", content=as_json(link_body(world, **fields)), headers={**world["h"], **JSON})
    assert r.status_code == status, r.text
    assert named in r.json()["error"]["message"]
    assert client.get("/api/v1/links", headers=world["h"]).json() == {"items": []}


def test_vanity_codes(client: TestClient, world: dict[str, Any]) -> None:
    r = client.post("/api/v1/links", json=link_body(world, code="ann-spring"), headers=world["h"])
    assert r.status_code == 201, r.text
    link = r.json()
    assert link["code"] == "ann-spring" and link["short_url"].endswith("/ann-spring")
    rec = link_record(client, "ann-spring")
    assert rec is not None and rec.id == link["id"]
    assert client.portal is not None
    assert client.portal.call(registry(client).link_by_id, link["id"]) == rec
    # Globally unique: another brand cannot take it either.
    other = new_brand(client, name="Other")
    oc, oi = new_campaign(client, other), new_influencer(client, other)
    body = {"campaign_id": oc["id"], "influencer_id": oi["id"], "destination_url": "https://x.example/",
            "code": "ann-spring"}
    r = client.post("/api/v1/links", json=body, headers=other["headers"])
    assert r.status_code == 409 and "ann-spring" in r.json()["error"]["message"]
    # A code shaped like a generated one is refused (it could shadow a future link).
    generated = registry(client).codes.encode(10_000)
    r = client.post("/api/v1/links", json=link_body(world, code=generated), headers=world["h"])
    assert r.status_code == 422


def test_vanity_code_unique_after_redis_loss(client: TestClient, world: dict[str, Any],
                                             redis_client: redis.Redis) -> None:
    assert client.post("/api/v1/links", json=link_body(world, code="promo"), headers=world["h"]).status_code == 201
    redis_client.flushall()
    r = client.post("/api/v1/links", json=link_body(world, code="promo"), headers=world["h"])
    assert r.status_code == 409
    assert client.portal is not None
    rec = client.portal.call(registry(client).link_by_id, 1)
    assert rec is not None and rec.code == "promo"


@pytest.mark.parametrize(("first", "second"), [("SAVE10", "SAVE10"), ("SAVE10", "save10"), ("ann-20", "ANN-20")])
def test_duplicate_coupons_conflict(client: TestClient, world: dict[str, Any], first: str, second: str) -> None:
    assert client.post("/api/v1/links", json=link_body(world, coupon_code=first), headers=world["h"]).status_code == 201
    r = client.post("/api/v1/links", json=link_body(world, coupon_code=second), headers=world["h"])
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "coupon_taken" and second in r.json()["error"]["message"]
    # Another brand may use the same coupon.
    other = new_brand(client, name="Other")
    oc, oi = new_campaign(client, other), new_influencer(client, other)
    body = {"campaign_id": oc["id"], "influencer_id": oi["id"], "destination_url": "https://x.example/",
            "coupon_code": second}
    assert client.post("/api/v1/links", json=body, headers=other["headers"]).status_code == 201


def test_codes_never_reused_after_flushall(client: TestClient, world: dict[str, Any],
                                           redis_client: redis.Redis) -> None:
    seen = [client.post("/api/v1/links", json=link_body(world), headers=world["h"]).json() for _ in range(3)]
    redis_client.flushall()
    assert not redis_client.exists(keys.LINK_SEQUENCE)
    seen += [client.post("/api/v1/links", json=link_body(world), headers=world["h"]).json() for _ in range(2)]
    codes = [link["code"] for link in seen]
    assert len(set(codes)) == 5
    assert [link["id"] for link in seen] == sorted(link["id"] for link in seen)
    # Old links still resolve (rebuilt from ClickHouse).
    rec = link_record(client, codes[0])
    assert rec is not None and rec.id == seen[0]["id"]


# --------------------------------------------------------------------- PATCH


def test_patch_reflected_in_link_by_code_at_once(client: TestClient, world: dict[str, Any]) -> None:
    link = client.post("/api/v1/links", json=link_body(world), headers=world["h"]).json()
    code = link["code"]
    assert link_record(client, code) is not None  # warm the cache
    r = client.patch(f"/api/v1/links/{code}", json={"disabled": True}, headers=world["h"])
    assert r.status_code == 200 and r.json()["disabled"] is True
    rec = link_record(client, code)
    assert rec is not None and rec.disabled
    r = client.patch(f"/api/v1/links/{code}", json={"disabled": False, "destination_url": "https://www.shop.example/new"},
                     headers=world["h"])
    assert r.status_code == 200
    rec = link_record(client, code)
    assert rec is not None and not rec.disabled and rec.destination_url == "https://www.shop.example/new"
    expires = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    r = client.patch(f"/api/v1/links/{code}", json={"expires_at": expires.isoformat()}, headers=world["h"])
    assert r.json()["expires_at"] == expires.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    rec = link_record(client, code)
    assert rec is not None and rec.expires_at_ms == int(expires.timestamp()) * 1000
    r = client.patch(f"/api/v1/links/{code}", json={"expires_at": None}, headers=world["h"])
    assert r.json()["expires_at"] is None
    rec = link_record(client, code)
    assert rec is not None and rec.expires_at_ms is None
    assert client.get(f"/api/v1/links/{code}", headers=world["h"]).json()["destination_url"] == (
        "https://www.shop.example/new"
    )


@pytest.mark.parametrize(
    "body",
    [{}, {"disabled": "yes"}, {"disabled": 1}, {"destination_url": "https://evil.test/"},
     {"destination_url": None}, {"expires_at": "2001-01-01T00:00:00Z"}, {"coupon_code": "X"}],
)
def test_bad_patches(client: TestClient, world: dict[str, Any], body: dict[str, Any]) -> None:
    link = client.post("/api/v1/links", json=link_body(world), headers=world["h"]).json()
    r = client.patch(f"/api/v1/links/{link['code']}", json=body, headers=world["h"])
    assert r.status_code == 422, r.text
    assert client.get(f"/api/v1/links/{link['code']}", headers=world["h"]).json() == link


@pytest.mark.parametrize("code", ["zzzzzz", "nope", "a" * 80, "Y3kK3M"])
def test_unknown_codes_404(client: TestClient, world: dict[str, Any], code: str) -> None:
    assert client.get(f"/api/v1/links/{code}", headers=world["h"]).status_code == 404
    assert client.patch(f"/api/v1/links/{code}", json={"disabled": True}, headers=world["h"]).status_code == 404


# ---------------------------------------------------------- brand isolation


def test_another_brands_ids_answer_404_everywhere(client: TestClient, world: dict[str, Any]) -> None:
    link = client.post("/api/v1/links", json=link_body(world, coupon_code="MINE1"), headers=world["h"]).json()
    store = client.post("/api/v1/stores", json={"name": "Shop"}, headers=world["h"]).json()
    other = new_brand(client, name="Other")
    oh = other["headers"]
    c, i = world["campaign"]["id"], world["influencer"]["id"]
    assert client.get(f"/api/v1/links/{link['code']}", headers=oh).status_code == 404
    assert client.patch(f"/api/v1/links/{link['code']}", json={"disabled": True}, headers=oh).status_code == 404
    assert client.get(f"/api/v1/campaigns/{c}", headers=oh).status_code == 404
    assert client.get(f"/api/v1/influencers/{i}", headers=oh).status_code == 404
    assert client.get(f"/api/v1/stores/{store['id']}", headers=oh).status_code == 404
    # Lists show nothing of the first brand, filters by its ids included.
    for path in ("/api/v1/campaigns", "/api/v1/influencers", "/api/v1/links", "/api/v1/stores", "/api/v1/fees",
                 "/api/v1/fx-rates", f"/api/v1/links?campaign_id={c}", f"/api/v1/fees?influencer_id={i}"):
        r = client.get(path, headers=oh)
        assert r.status_code == 200 and r.json() == {"items": []}, path
    # Ids named in a body are unknown in another brand (422 that says so, like a missing id).
    oc, oi = new_campaign(client, other), new_influencer(client, other)
    body = {"campaign_id": c, "influencer_id": oi["id"], "destination_url": "https://x.example/"}
    r = client.post("/api/v1/links", json=body, headers=oh)
    assert r.status_code == 422 and c in r.json()["error"]["message"]
    body = {"campaign_id": oc["id"], "influencer_id": i, "amount": "10"}
    r = client.post("/api/v1/fees", json=body, headers=oh)
    assert r.status_code == 422 and i in r.json()["error"]["message"]
    # The link is untouched.
    rec = link_record(client, link["code"])
    assert rec is not None and not rec.disabled
    assert client.get(f"/api/v1/links/{link['code']}", headers=world["h"]).status_code == 200


# -------------------------------------------------------------------- stores


def test_store_secret_shown_once(client: TestClient, world: dict[str, Any], settings: Settings) -> None:
    r = client.post("/api/v1/stores", json={"name": "Shop", "allowed_ips": ["203.0.113.7", "10.1.0.0/16"]},
                    headers=world["h"])
    assert r.status_code == 201, r.text
    store = r.json()
    assert set(store) == {"id", "name", "secret", "postback_token", "allowed_ips", "created_at"}
    assert store["allowed_ips"] == ["203.0.113.7", "10.1.0.0/16"]
    listed = client.get("/api/v1/stores", headers=world["h"]).json()["items"]
    assert listed == [{k: store[k] for k in ("id", "name", "allowed_ips", "created_at")}]
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


# ----------------------------------------------------------- fees and rates


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
    client.put("/api/v1/fx-rates/EUR", json={"rate": 1.1}, headers=world["h"])
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
    ({"amount": "10", "influencer_id": "inf_unknownunknown01"}, "inf_unknownunknown01"),
    ({"amount": "10", "paid": True}, "paid"),
]


@pytest.mark.parametrize(("fields", "named"), BAD_FEES)
def test_bad_fee_bodies(client: TestClient, world: dict[str, Any], fields: dict[str, Any], named: str) -> None:
    body = {"campaign_id": world["campaign"]["id"], "influencer_id": world["influencer"]["id"], **fields}
    r = client.post("/api/v1/fees", json=body, headers=world["h"])
    assert r.status_code == 422, r.text
    assert named in r.json()["error"]["message"]


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
