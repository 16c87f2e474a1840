"""A brand with one store per platform, and webhooks signed as each platform signs them."""

from __future__ import annotations

import copy
import hashlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import stripe
from starlette.testclient import TestClient

from tests.conversions.connectors.samples import b64_hmac, data, raw
from tests.conversions.connectors.samples import body as compact
from tests.conversions.world import World
from tracker.conversions.connectors import shopify, stripe_, woocommerce

SECRETS = {
    "shopify": "shpss_test_webhook_secret_0123",
    "woocommerce": "wc-test-webhook-secret-4567",
    "stripe": "whsec_test_webhook_secret_89ab",
}


def stripe_header(secret: str, body: bytes, ts: int | None = None) -> str:
    t = int(time.time()) if ts is None else ts
    # The official library's own computation (stripe.WebhookSignature), as Stripe signs.
    return f"t={t},v1={stripe.WebhookSignature._compute_signature(f'{t}.{body.decode()}', secret)}"


@dataclass
class Shops:
    world: World
    stores: dict[str, str]

    @property
    def client(self) -> TestClient:
        return self.world.client

    def url(self, platform: str, store_id: str | None = None) -> str:
        return f"/api/v1/integrations/{platform}/{store_id or self.stores[platform]}"

    def send(
        self,
        platform: str,
        payload: dict[str, Any] | bytes,
        *,
        topic: str | None = None,
        delivery: str | None = None,
        secret: str | None = None,
        store_id: str | None = None,
        ts: int | None = None,
        client: TestClient | None = None,
    ) -> Any:
        body = payload if isinstance(payload, bytes) else compact(payload)
        key = SECRETS[platform] if secret is None else secret
        headers = {"Content-Type": "application/json"}
        if platform == "shopify":
            headers |= {shopify.HMAC_HEADER: b64_hmac(key, body), shopify.TOPIC_HEADER: topic or "orders/create",
                        shopify.WEBHOOK_ID_HEADER: delivery or hashlib.sha1(body).hexdigest()}
        elif platform == "woocommerce":
            headers |= {woocommerce.SIGNATURE_HEADER: b64_hmac(key, body),
                        woocommerce.TOPIC_HEADER: topic or "order.created",
                        woocommerce.DELIVERY_ID_HEADER: delivery or hashlib.sha1(body).hexdigest()[:12]}
        else:
            headers |= {stripe_.SIGNATURE_HEADER: stripe_header(key, body, ts)}
        return (client or self.client).post(self.url(platform, store_id), content=body, headers=headers)


def make_shops(world: World) -> Shops:
    stores = {}
    for platform, secret in SECRETS.items():
        created = world.call(world.registry.create_store, world.brand["id"], name=platform, platform=platform,
                             webhook_secret=secret)
        stores[platform] = created.store["id"]
    return Shops(world, stores)


def fixture(platform: str, name: str) -> dict[str, Any]:
    return copy.deepcopy(data(platform, name))


def fixture_bytes(platform: str, name: str) -> bytes:
    return raw(platform, name)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def shopify_order(world: World, order_id: int, *, click_link: dict[str, Any] | None = None,
                  customer: int | None = 7391048213670, coupon: str | None = None,
                  when: str | None = None) -> dict[str, Any]:
    """The orders/create fixture as a new order placed now (or ``when``), with the carrier's click id."""
    order = fixture("shopify", "orders_create_usd.json")
    order["id"] = order_id
    order["processed_at"] = order["created_at"] = order["updated_at"] = when or now_iso()
    order["note_attributes"] = [{"name": "click_id", "value": world.click(click_link)}] if click_link else []
    order["landing_site"] = "/products/linen-shirt"
    order["discount_codes"] = [{"code": coupon, "amount": "1.00", "type": "fixed_amount"}] if coupon else []
    order["customer"] = {"id": customer} if customer else None
    return order
