"""A brand with campaigns, links, coupons and a store, created through the registry, for postback tests."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import redis
from starlette.testclient import TestClient

from tracker.conversions import signature
from tracker.core import keys
from tracker.core.clickid import ClickIds
from tracker.settings import Settings


@dataclass
class World:
    client: TestClient
    brand: dict[str, Any]
    store_id: str
    secret: str
    token: str
    campaign_id: str
    flat_campaign_id: str
    influencer_id: str
    link: dict[str, Any]  # percent 10 %, coupon ANNA10
    coupon_link: dict[str, Any]  # percent 10 %, coupon BOB5, another influencer
    flat_link: dict[str, Any]  # flat 2.50, coupon FLAT
    click_ids: ClickIds

    def call(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        return self.client.portal.call(functools.partial(fn, *args, **kw))

    @property
    def registry(self) -> Any:
        return self.client.app.state.services.registry  # type: ignore[attr-defined]

    def click(self, link: dict[str, Any], ts_ms: int | None = None) -> str:
        return self.click_ids.mint(int(link["id"]), ts_ms if ts_ms is not None else int(time.time() * 1000))

    def post(
        self,
        body: dict[str, Any] | bytes,
        *,
        secret: str | None = None,
        store_id: str | None = None,
        ts: int | None = None,
        client: TestClient | None = None,
    ) -> Any:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        t = int(time.time()) if ts is None else ts
        headers = {
            "X-Store-Id": self.store_id if store_id is None else store_id,
            "X-Signature": signature.sign(self.secret if secret is None else secret, t, raw),
            "Content-Type": "application/json",
        }
        return (client or self.client).post("/api/v1/conversions", content=raw, headers=headers)

    def get(self, **params: str) -> Any:
        query = {"store_id": self.store_id, "token": self.token, **params}
        return self.client.get("/postback", params=query)


def make_world(client: TestClient, settings: Settings, currency: str = "USD") -> World:
    svc = client.app.state.services  # type: ignore[attr-defined]
    reg = svc.registry

    def call(fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        return client.portal.call(functools.partial(fn, *args, **kw))

    brand, key = call(reg.create_brand, "Acme", currency)
    brand = {**brand, "api_key": key}
    pct = call(reg.create_campaign, brand["id"], name="Spring", commission_type="percent",
               commission_value=Decimal("10"), attribution_window_days=30)
    flat = call(reg.create_campaign, brand["id"], name="Flat", commission_type="flat",
                commission_value=Decimal("2.50"), attribution_window_days=7)
    anna = call(reg.create_influencer, brand["id"], name="Anna")
    bob = call(reg.create_influencer, brand["id"], name="Bob")
    link = call(reg.create_link, brand["id"], campaign_id=pct["id"], influencer_id=anna["id"],
                destination_url="https://shop.example/p", coupon_code="ANNA10")
    coupon_link = call(reg.create_link, brand["id"], campaign_id=pct["id"], influencer_id=bob["id"],
                       destination_url="https://shop.example/q", coupon_code="BOB5")
    flat_link = call(reg.create_link, brand["id"], campaign_id=flat["id"], influencer_id=anna["id"],
                     destination_url="https://shop.example/f", coupon_code="FLAT")
    store = call(reg.create_store, brand["id"], name="Shop", allowed_ips=[])
    assert settings.secret_key is not None
    return World(
        client=client, brand=brand, store_id=store.store["id"], secret=store.secret, token=store.postback_token,
        campaign_id=pct["id"], flat_campaign_id=flat["id"], influencer_id=anna["id"], link=link,
        coupon_link=coupon_link, flat_link=flat_link, click_ids=ClickIds(settings.secret_key),
    )



def stream_rows(redis_client: redis.Redis) -> list[dict[str, Any]]:
    entries = redis_client.xrange(keys.CONVERSION_STREAM)
    return [json.loads(fields[b"e"]) for _id, fields in entries]


def order(n: int | str) -> str:
    return f"ORD-{n}"

