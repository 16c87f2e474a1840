"""The link routes end to end (create, list, PATCH, brand isolation): TestClient, real Redis and chDB."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from starlette.testclient import TestClient

from tests.registry.helpers import (
    JSON,
    as_json,
    link_body,
    link_record,
    new_brand,
    new_campaign,
    new_influencer,
    registry,
)
from tracker.core import keys


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
    ({"campaign_id": "cmp_doesnotexist0001"}, 404, "cmp_doesnotexist0001"),
    ({"influencer_id": "inf_doesnotexist0001"}, 404, "inf_doesnotexist0001"),
    ({"campaign_id": "garbage"}, 404, "garbage"),
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
    # Ids named in a body are unknown in another brand: 404, as for a missing id (issue #13; the contract).
    oc, oi = new_campaign(client, other), new_influencer(client, other)
    for body in ({"campaign_id": c, "influencer_id": oi["id"]}, {"campaign_id": oc["id"], "influencer_id": i}):
        r = client.post("/api/v1/links", json={**body, "destination_url": "https://x.example/"}, headers=oh)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", r.text
        other_id = c if body["campaign_id"] == c else i
        assert other_id in r.json()["error"]["message"]
        r = client.post("/api/v1/fees", json={**body, "amount": "10"}, headers=oh)
        assert r.status_code == 404 and other_id in r.json()["error"]["message"], r.text
    # The link is untouched.
    rec = link_record(client, link["code"])
    assert rec is not None and not rec.disabled
    assert client.get(f"/api/v1/links/{link['code']}", headers=world["h"]).status_code == 200
