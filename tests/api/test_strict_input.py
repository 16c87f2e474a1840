"""Input the contract does not allow is refused the same way on every route (issue #13, item 7).

Amounts, rates and commission values are decimal strings matching ``^-?[0-9]+(\\.[0-9]+)?$``
(ASCII digits only): no JSON numbers, no ``1_000``, full-width digits, exponents, NaN or
Infinity, no surrounding spaces. Each is answered 422 with ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.conftest import ADMIN_TOKEN
from tests.conversions.platforms import make_shops
from tests.conversions.world import World, make_world
from tracker.app import create_app
from tracker.conversions import signature
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse

# Each is a decimal to Python (or JSON) but not a decimal string of the contract.
NOT_DECIMAL_STRINGS: list[Any] = [
    "1_000", "\uff11\uff12\uff13", "1E+2", "1e2", "NaN", "nan", "Infinity", "-Infinity", "inf",
    " 10", "10 ", "+10", ".5", "5.",
    "0x10", "10,5", "", "\u0661\u0662", 100, 10.5, True, None, [], {},
]
GOOD = ["10", "10.5", "0010.50"]


@pytest.fixture
def world(ch: ClickHouse, settings: Settings) -> Iterator[World]:
    with TestClient(create_app(settings)) as client:
        yield make_world(client, settings)


def _headers(world: World) -> dict[str, str]:
    return {"Authorization": f"Bearer {world.brand['api_key']}"}


def _postback(world: World, value: Any) -> Any:
    body: dict[str, Any] = {"order_id": "O-1", "currency": "USD"}
    if value is not None:
        body["amount"] = value
    return world.post(json.dumps(body).encode())


def _postback_get(world: World, value: Any) -> Any:
    return world.get(order_id="O-1", currency="USD", amount=str(value))


def _fee(world: World, value: Any) -> Any:
    body = {"campaign_id": world.campaign_id, "influencer_id": world.influencer_id, "amount": value}
    return world.client.post("/api/v1/fees", content=json.dumps(body), headers={
        **_headers(world), "Content-Type": "application/json"})


def _rate(world: World, value: Any) -> Any:
    return world.client.put("/api/v1/fx-rates/EUR", content=json.dumps({"rate": value}), headers={
        **_headers(world), "Content-Type": "application/json"})


def _commission(world: World, value: Any) -> Any:
    body = {"name": "C", "commission": {"type": "percent", "value": value}}
    return world.client.post("/api/v1/campaigns", content=json.dumps(body), headers={
        **_headers(world), "Content-Type": "application/json"})


ROUTES = {"postback": _postback, "fee": _fee, "rate": _rate, "commission": _commission}


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_decimal_strings_only(world: World, route: str) -> None:
    send = ROUTES[route]
    for value in NOT_DECIMAL_STRINGS:
        if route == "postback" and value in (None, ""):
            continue  # a postback without an amount is a missing field (400), tested with the postbacks
        r = send(world, value)
        assert r.status_code == 422, (route, value, r.status_code, r.text)
        assert set(r.json()["error"]) == {"code", "message"}
    for value in GOOD:
        r = send(world, value)
        assert r.status_code in (200, 201, 202), (route, value, r.text)


@pytest.mark.parametrize("value", [v for v in NOT_DECIMAL_STRINGS if isinstance(v, str) and v and v.strip()])
def test_decimal_strings_only_on_get_postback(world: World, value: str) -> None:
    r = _postback_get(world, value)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_amount"


# --- Content-Type: a JSON body is declared as JSON (415 otherwise) ---------------------------------

NOT_JSON_TYPES = [
    "application/x-www-form-urlencoded",  # what `curl -d` sends
    "text/plain",
    "multipart/form-data; boundary=x",
    "application/xml",
    "application/jsonp",
    "text/json",
    None,  # no Content-Type at all
]
JSON_TYPES = ["application/json", "application/json; charset=utf-8", "Application/JSON", "application/merchant+json"]


def _send_typed(world: World, route: str, content_type: str | None) -> Any:
    headers = {**_headers(world)}
    if content_type is not None:
        headers["Content-Type"] = content_type
    if route == "postback":
        raw = json.dumps({"order_id": "CT-1", "amount": "10", "currency": "USD"}).encode()
        headers = {"X-Store-Id": world.store_id, "X-Signature": signature.sign(world.secret, int(time.time()), raw)}
        if content_type is not None:
            headers["Content-Type"] = content_type
        return world.client.post("/api/v1/conversions", content=raw, headers=headers)
    if route == "influencer":
        return world.client.post("/api/v1/influencers", content=b'{"name": "Zed"}', headers=headers)
    if route == "rate":
        return world.client.put("/api/v1/fx-rates/EUR", content=b'{"rate": "1.1"}', headers=headers)
    if route == "link":
        body = {"campaign_id": world.campaign_id, "influencer_id": world.influencer_id,
                "destination_url": "https://shop.example/x"}
        return world.client.post("/api/v1/links", content=json.dumps(body).encode(), headers=headers)
    if route == "brand":
        headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
        return world.client.post("/api/v1/brands", content=b'{"name": "Other"}', headers=headers)
    raise AssertionError(route)


TYPED_ROUTES = ["postback", "influencer", "rate", "link", "brand"]


@pytest.mark.parametrize("route", TYPED_ROUTES)
def test_a_json_body_must_say_so(world: World, route: str) -> None:
    for content_type in NOT_JSON_TYPES:
        r = _send_typed(world, route, content_type)
        assert r.status_code == 415, (route, content_type, r.status_code, r.text)
        assert r.json()["error"]["code"] == "unsupported_media_type"
        assert "application/json" in r.json()["error"]["message"]
    for content_type in JSON_TYPES:
        r = _send_typed(world, route, content_type)
        assert r.status_code in (200, 201, 202), (route, content_type, r.text)


def test_platform_bodies_and_bodiless_posts_are_not_checked(world: World) -> None:
    # WooCommerce pings a new webhook with a form body and must get a 200.
    shops = make_shops(world)
    r = world.client.post(shops.url("woocommerce"), content=b"webhook_id=7",
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200, r.text
    # A POST that takes no body needs no Content-Type.
    r = world.client.post(f"/api/v1/influencers/{world.influencer_id}/portal-link", headers=_headers(world))
    assert r.status_code in (200, 201), r.text


# --- fee dates: what reports can show (2000-01-01 on), exactly YYYY-MM-DD ---------------------------


@pytest.mark.parametrize(
    ("day", "status"),
    [
        ("1999-12-31", 422),  # reports start at 2000: a fee before could never be shown
        ("1970-01-01", 422),
        ("2000-01-01", 201),
        ("2149-06-06", 201),  # the last day of ClickHouse's Date
        ("2149-06-07", 422),
        ("2026-W49-1", 422),
        ("20261205", 422),
        ("2026-339", 422),
        ("\uff12\uff10\uff12\uff16-\uff11\uff12-\uff10\uff15", 422),
        ("2026-02-29", 422),
    ],
)
def test_fee_dates(world: World, day: str, status: int) -> None:
    body = {"campaign_id": world.campaign_id, "influencer_id": world.influencer_id, "amount": "10", "date": day}
    r = world.client.post("/api/v1/fees", json=body, headers=_headers(world))
    assert r.status_code == status, r.text
    if status == 201:
        assert r.json()["date"] == day
    else:
        assert r.json()["error"]["code"] == "invalid_field" and "date" in r.json()["error"]["message"]


# --- every accepted value fits the ClickHouse column it lands in (issue #13, item 2) ---------------
# fees.amount / campaigns.commission_value: Decimal(18, 4); fx_rates.rate: Decimal(18, 8).

BOUNDS = [
    ("rate", "9999999999.99999999", 200),
    ("rate", "10000000000", 422),
    ("rate", "0.00000001", 200),
    ("rate", "0.000000001", 422),
    ("flat", "9999999999999.99", 201),
    ("flat", "10000000000000", 422),
    ("percent", "100", 201),
    ("percent", "100.0001", 422),
    ("fee", "9999999999999.99", 201),
    ("fee", "10000000000000", 422),
    # At 999,999,999.99999999 USD per EUR: 999,999,999,999.99 USD fits; 10,000 EUR rounds to 10^13 USD, refused.
    ("fee_eur", "1000.00", 201),
    ("fee_eur", "10000.00", 422),
]


@pytest.mark.parametrize(("what", "value", "status"), BOUNDS)
def test_accepted_values_fit_their_columns(world: World, ch: ClickHouse, what: str, value: str, status: int) -> None:
    h = _headers(world)
    if what == "rate":
        r = world.client.put("/api/v1/fx-rates/EUR", json={"rate": value}, headers=h)
        stored = "SELECT toString(rate) FROM fx_rates FINAL WHERE brand_id = {b:String}"
    elif what in ("flat", "percent"):
        r = world.client.post("/api/v1/campaigns", json={"name": "B", "commission": {"type": what, "value": value}},
                              headers=h)
        stored = ("SELECT toString(commission_value) FROM campaigns FINAL WHERE brand_id = {b:String} "
                  "AND name = 'B'")
    else:
        currency = "USD"
        if what == "fee_eur":
            currency = "EUR"
            assert world.client.put("/api/v1/fx-rates/EUR", json={"rate": "999999999.99999999"},
                                    headers=h).status_code == 200
        body = {"campaign_id": world.campaign_id, "influencer_id": world.influencer_id, "amount": value,
                "currency": currency}
        r = world.client.post("/api/v1/fees", json=body, headers=h)
        stored = "SELECT toString(original_amount) FROM fees FINAL WHERE brand_id = {b:String}"
    assert r.status_code == status, r.text
    rows = ch.query(stored, {"b": world.brand["id"]})
    if status == 422:
        assert set(r.json()["error"]) == {"code", "message"}
        assert rows == []
        return
    assert [Decimal(x) for (x,) in rows] == [Decimal(value)]
