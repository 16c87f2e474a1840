"""The postback fast path (``tracker.api.fast``) answers exactly as the middleware stack did.

Each case is sent twice to one app: through the fast path, then with the fast path switched
off (``app.fast_routes = None``: Starlette's middleware, router and exception handlers), and
the two answers must match: status, body, headers (the request id's value aside).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
import redis
from starlette.testclient import TestClient

from tests.conversions.platforms import SECRETS, Shops, b64_hmac, fixture_bytes, make_shops, shopify_order
from tests.conversions.world import World, make_world, order
from tracker.app import create_app
from tracker.conversions import fastpath, signature
from tracker.conversions.answer import answer_json
from tracker.conversions.state import Conversion
from tracker.core import keys
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse

BODY = {"order_id": "FP-1", "amount": "49.90", "currency": "USD"}


def both(client: TestClient, send: Callable[[], httpx.Response]) -> tuple[httpx.Response, httpx.Response]:
    """``send()`` through the fast path, then through the middleware stack."""
    app: Any = client.app
    saved = app.fast_routes
    fast = send()
    app.fast_routes = None
    try:
        slow = send()
    finally:
        app.fast_routes = saved
    return fast, slow


def assert_same(fast: httpx.Response, slow: httpx.Response, *, body: bool = True) -> None:
    assert fast.status_code == slow.status_code, (fast.text, slow.text)
    if body:
        assert fast.content == slow.content
    assert ("x-request-id" in fast.headers) == ("x-request-id" in slow.headers)
    strip = {"x-request-id"} if body else {"x-request-id", "content-length"}
    assert {k: v for k, v in fast.headers.items() if k not in strip} == {
        k: v for k, v in slow.headers.items() if k not in strip
    }


def signed(world: World, raw: bytes, **headers: str) -> dict[str, str]:
    return {"X-Store-Id": world.store_id, "X-Signature": signature.sign(world.secret, int(time.time()), raw),
            "Content-Type": "application/json", **headers}


def _post(world: World, raw: bytes, headers: dict[str, str]) -> httpx.Response:
    return world.client.post("/api/v1/conversions", content=raw, headers=headers)


def _raw(body: Any) -> bytes:
    return json.dumps(body).encode()


CASES: list[tuple[str, Callable[[World], httpx.Response], int]] = [
    ("wrong content type", lambda w: _post(w, _raw(BODY), signed(w, _raw(BODY), **{"Content-Type": "text/plain"})),
     415),
    ("form content type", lambda w: _post(w, b"order_id=1", signed(
        w, b"order_id=1", **{"Content-Type": "application/x-www-form-urlencoded"})), 415),
    ("json with parameters", lambda w: _post(w, _raw(BODY), signed(
        w, _raw(BODY), **{"Content-Type": "Application/JSON; charset=utf-8"})), 202),
    ("oversized body", lambda w: _post(w, _raw({**BODY, "coupon_code": "x" * 20_000}),
                                       signed(w, _raw({**BODY, "coupon_code": "x" * 20_000}))), 413),
    ("bad signature", lambda w: _post(w, _raw(BODY), {**signed(w, _raw(BODY) + b" ")}), 401),
    ("missing signature", lambda w: _post(w, _raw(BODY), {"X-Store-Id": w.store_id,
                                                          "Content-Type": "application/json"}), 401),
    ("stale timestamp", lambda w: _post(w, _raw(BODY), {
        **signed(w, _raw(BODY)), "X-Signature": signature.sign(w.secret, int(time.time()) - 400, _raw(BODY))}), 401),
    ("unknown store", lambda w: _post(w, _raw(BODY), {**signed(w, _raw(BODY)), "X-Store-Id": "st_nobody"}), 401),
    ("other store's secret", lambda w: _post(w, _raw(BODY), {
        **signed(w, _raw(BODY)), "X-Signature": signature.sign("not-the-secret", int(time.time()), _raw(BODY))}),
     401),
    ("bad json", lambda w: _post(w, b"{not json", signed(w, b"{not json")), 400),
    ("not an object", lambda w: _post(w, b"[1,2]", signed(w, b"[1,2]")), 400),
    ("empty body", lambda w: _post(w, b"", signed(w, b"")), 400),
    ("unknown field", lambda w: _post(w, _raw({**BODY, "clickid": "x"}), signed(w, _raw({**BODY, "clickid": "x"}))),
     400),
    ("bad currency", lambda w: _post(w, _raw({**BODY, "currency": "XYZ"}),
                                     signed(w, _raw({**BODY, "currency": "XYZ"}))), 422),
    ("other currency than recorded", lambda w: _post(w, _raw({**BODY, "currency": "EUR"}),
                                                     signed(w, _raw({**BODY, "currency": "EUR"}))), 422),
    ("status move not allowed", lambda w: _post(w, _raw({**BODY, "status": "pending"}),
                                                signed(w, _raw({**BODY, "status": "pending"}))), 409),
    ("proxy request id", lambda w: _post(w, _raw(BODY), signed(w, _raw(BODY), **{"X-Request-Id": "proxy-42"})), 202),
]


@pytest.mark.parametrize(("case", "send", "status"), CASES, ids=[c[0] for c in CASES])
def test_postback_answers_match_the_middleware_stack(
    world: World, redis_client: redis.Redis, case: str, send: Callable[[World], httpx.Response], status: int
) -> None:
    world.post(BODY)  # FP-1 exists: the cases that get through answer it as a duplicate
    entries = redis_client.xlen(keys.CONVERSION_STREAM)
    fast, slow = both(world.client, lambda: send(world))
    assert fast.status_code == status, fast.text
    assert_same(fast, slow)
    if status != 202 or case == "proxy request id":
        assert redis_client.xlen(keys.CONVERSION_STREAM) == entries, "nothing is recorded"
    if case == "proxy request id":
        assert fast.headers["x-request-id"] == slow.headers["x-request-id"] == "proxy-42"


def test_a_new_order_answers_as_before(world: World) -> None:
    n = iter(range(2))
    fast, slow = both(world.client, lambda: world.post({**BODY, "order_id": order(next(n)),
                                                        "click_id": world.click(world.link)}))
    assert_same(fast, slow, body=False)
    a, b = fast.json(), slow.json()
    assert a.keys() == b.keys()
    assert {k: v for k, v in a.items() if k not in ("conversion_id", "order_id")} == {
        k: v for k, v in b.items() if k not in ("conversion_id", "order_id")
    }
    assert a["status"] == "approved" and a["attribution"] == "click" and a["duplicate"] is False


@pytest.fixture
def limited(ch: ClickHouse, settings: Settings) -> Iterator[World]:
    with TestClient(create_app(settings.with_(postback_rate_limit=2))) as client:
        yield make_world(client, settings)


def test_rate_limited_answers_match(limited: World) -> None:
    assert limited.post(BODY).status_code == 202
    assert limited.post(BODY).status_code == 202
    fast, slow = both(limited.client, lambda: limited.post(BODY))
    assert fast.status_code == 429
    # The message names the seconds left, which may tick between the two requests.
    assert_same(fast, slow, body=False)
    assert fast.json()["error"]["code"] == slow.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(fast.headers["retry-after"]) <= 60
    # A refused body counts too and still answers 429 first.
    fast, slow = both(limited.client, lambda: limited.post(b"{not json"))
    assert fast.status_code == slow.status_code == 429


@pytest.fixture
def shops(world: World) -> Shops:
    return make_shops(world)


def _shopify(shops: Shops, body: bytes, **headers: str) -> httpx.Response:
    base = {"Content-Type": "application/json", "X-Shopify-Hmac-Sha256": b64_hmac(SECRETS["shopify"], body),
            "X-Shopify-Topic": "orders/create", "X-Shopify-Webhook-Id": "wh-1"}
    return shops.client.post(shops.url("shopify"), content=body, headers={**base, **headers})


WEBHOOK_CASES: list[tuple[str, Callable[[Shops], httpx.Response], int]] = [
    ("bad signature", lambda s: _shopify(s, b"{}", **{"X-Shopify-Hmac-Sha256": "AAAA"}), 401),
    ("missing signature", lambda s: s.client.post(s.url("shopify"), content=b"{}",
                                                  headers={"X-Shopify-Topic": "orders/create"}), 401),
    ("unknown store", lambda s: s.send("shopify", b"{}", store_id="st_nobody"), 401),
    ("store of another platform", lambda s: s.send("shopify", b"{}", store_id=s.stores["stripe"]), 401),
    ("unknown topic", lambda s: s.send("shopify", b"{}", topic="products/create"), 200),
    ("woocommerce ping", lambda s: s.client.post(s.url("woocommerce"), content=b"webhook_id=12",
                                                 headers={"Content-Type": "application/x-www-form-urlencoded"}), 200),
    ("bad json", lambda s: s.send("shopify", b"{not json"), 400),
    ("5 MB body", lambda s: s.send("shopify", b"{" + b" " * (5 * 1024 * 1024) + b"}"), 413),
    ("stripe stale timestamp", lambda s: s.send(
        "stripe", fixture_bytes("stripe", "checkout_session_completed_usd.json"), ts=int(time.time()) - 1000), 401),
    ("redelivery", lambda s: s.send("shopify", json.dumps(shopify_order(s.world, 4242)).encode(), delivery="d-1"),
     200),
]


@pytest.mark.parametrize(("case", "send", "status"), WEBHOOK_CASES, ids=[c[0] for c in WEBHOOK_CASES])
def test_webhook_answers_match_the_middleware_stack(
    shops: Shops, case: str, send: Callable[[Shops], httpx.Response], status: int
) -> None:
    fast, slow = both(shops.client, lambda: send(shops))
    assert fast.status_code == status, fast.text
    if case == "redelivery":  # the first recorded the order; the second is a no-op re-delivery
        assert_same(fast, slow, body=False)
        assert slow.json()["redelivered"] is True
        return
    assert_same(fast, slow)


@pytest.mark.parametrize(
    ("method", "path", "fast"),
    [
        ("POST", "/api/v1/conversions", True),
        ("GET", "/api/v1/conversions", False),
        ("PUT", "/api/v1/conversions", False),
        ("POST", "/api/v1/conversions/", False),
        ("POST", "/api/v1/integrations/shopify/st_1", True),
        ("POST", "/api/v1/integrations/stripe/st_1", True),
        ("POST", "/api/v1/integrations/woocommerce/st_1", True),
        ("POST", "/api/v1/integrations/magento/st_1", False),
        ("POST", "/api/v1/integrations/shopify/", False),
        ("POST", "/api/v1/integrations/shopify/st_1/x", False),
        ("GET", "/api/v1/integrations/shopify/st_1", False),
    ],
)
def test_only_the_postback_routes_take_the_fast_path(world: World, method: str, path: str, fast: bool) -> None:
    assert (fastpath.route(method, path) is not None) is fast
    if not fast:  # the normal stack answers (404, 405, the slash redirect) as it always did
        a, b = both(world.client, lambda: world.client.request(method, path, follow_redirects=False))
        assert_same(a, b)


def test_an_unexpected_error_is_logged_and_answered_500(
    world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    svc: Any = world.client.app.state.services  # type: ignore[attr-defined]
    monkeypatch.setattr(svc.conversions, "record", broken)
    with caplog.at_level(logging.INFO):
        r = world.post(BODY)
    assert r.status_code == 500
    assert r.json() == {"error": {"code": "internal_error",
                                  "message": "The server failed to handle the request; it was logged."}}
    assert any(rec.exc_info and "boom" in str(rec.exc_info[1]) for rec in caplog.records)
    assert any(rec.name == "tracker.request" and getattr(rec, "status", None) == 500 for rec in caplog.records)


def _row(**over: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "conversion_id": "cv_1", "order_id": "Ö-1 \"quoted\" \\ é", "status": "approved", "attributed": 1,
        "attribution": "click", "link_code": "abc", "influencer_id": "inf_1", "campaign_id": "cmp_1",
        "commission": Decimal("4.99"), "amount": Decimal("49.90"), "refunded_amount": Decimal("0.00"),
        "currency": "USD", "original_amount": Decimal("5000"), "original_refunded_amount": Decimal("0"),
        "original_currency": "JPY", "fx_rate": Decimal("0.009980"),
        "occurred_at": datetime(2026, 1, 1, tzinfo=UTC),
    }
    return {**row, **over}


@pytest.mark.parametrize(
    "row",
    [
        _row(),
        _row(attributed=0, attribution="", link_code="", influencer_id="", campaign_id="", commission=Decimal("0.00")),
        _row(fx_rate=Decimal("1E+1")),
        _row(fx_rate=Decimal("10.000")),
        _row(fx_rate=Decimal("1")),
        _row(status="refunded", refunded_amount=Decimal("49.90"), order_id="\u2028\x7f<tag>"),
        _row(amount=Decimal("12345678901234.5678"), currency="BHD", commission=Decimal("0.123")),
    ],
)
@pytest.mark.parametrize("duplicate", [False, True])
def test_the_answer_is_the_conversion_models_json(row: dict[str, Any], duplicate: bool) -> None:
    from tracker.api.http import dumps

    assert answer_json(row, duplicate) == dumps(Conversion.of(row, duplicate).dump())
