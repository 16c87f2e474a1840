"""``POST /api/v1/integrations/{shopify|woocommerce|stripe}/{store_id}``: platform webhooks in.

Each route checks the platform's own signature with the store's webhook secret (or the
previous one, for a day after a rotation), parses the event with its connector
(``tracker.conversions.connectors``) and records it (``tracker.conversions.platform``).

What a platform is answered, since it retries any non-2xx and disables an endpoint
after repeated failures:

- 401 only for a signature that does not verify; an unknown store id, or a store on
  another platform, answers the same 401, so ids cannot be probed;
- 200 ``{"ignored": true}`` for a topic or event type not handled (and WooCommerce's
  unsigned ping, sent when a webhook is saved, which must get a 200 to activate it);
- 200 with the conversion for an event recorded, re-delivered (a no-op) or held;
- 200 with ``refused`` for an event refused for a business reason (no exchange rate, a
  status move not allowed): counted, logged and kept with its body (``store_events``) so
  the brand sees it and can re-drive it (``tracker.conversions.storeroutes``);
- 400/422 for a signed body that is not the platform's JSON (nothing is stored; the
  platform's retries re-deliver it once the cause is fixed), 413 above 4 MiB, 503 when
  Redis or ClickHouse is down (nothing acknowledged: the platform retries).
"""

from __future__ import annotations

import functools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import Field
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from tracker.api import http
from tracker.api.endpoints import Operation, api
from tracker.api.schema import Answer, ErrorDetail
from tracker.conversions import storeevents
from tracker.conversions.connectors import shopify, stripe_, woocommerce
from tracker.conversions.connectors.event import OrderEvent
from tracker.conversions.connectors.payload import load_json
from tracker.conversions.platform import Delivery, PlatformEvents, Recorded
from tracker.conversions.state import Conversion
from tracker.core import ids
from tracker.core.credentials import open_webhook_secret
from tracker.core.errors import StorageUnavailable, TrackerError, Unauthorized
from tracker.ops.metrics import WEBHOOKS
from tracker.services import Services, services

log = logging.getLogger("tracker.conversions.integrations")

# Shopify orders run to hundreds of KB (line items, fulfillments, metafields): generous, but bounded.
MAX_WEBHOOK_BYTES = 4 * 1024 * 1024
PREVIOUS_SECRET_GRACE_MS = 24 * 3600 * 1000
_NOBODYS_SECRET = "whsec_" + secrets.token_urlsafe(32)
BAD_WEBHOOK = (
    "The webhook signature does not verify for this URL: check that the URL and the signing secret come from "
    "the same tracker store (docs/STORES.md)."
)


class WebhookAnswer(Answer):
    """What a platform webhook is answered (always 200 when accepted or deliberately not recorded)."""

    ignored: bool = Field(
        default=False, description="True for a topic, event type or order state not handled (and pings)."
    )
    reason: str | None = Field(default=None, description="Why the event was ignored.")
    conversion: Conversion | None = Field(default=None, description="The order's conversion after this event.")
    held: bool = Field(
        default=False, description="A refund of an order not recorded yet: applied when the order arrives."
    )
    redelivered: bool = Field(default=False, description="This delivery was applied before: nothing changed.")
    refused: ErrorDetail | None = Field(
        default=None,
        description="Not recorded for a business reason; kept for the brand (GET /api/v1/stores/{id}/events).",
    )
    event_id: str | None = Field(default=None, description="The kept event's id, when refused.")


def _ignored(platform: str, reason: str) -> Response:
    WEBHOOKS.labels(platform, "ignored").inc()
    return http.JSONResponse(WebhookAnswer(ignored=True, reason=reason).dump())


@functools.lru_cache(maxsize=4096)  # an AES-GCM open and a key derivation on every webhook otherwise
def _opened(secret_key: str, store_id: str, sealed: str) -> str | None:
    return open_webhook_secret(secret_key, store_id, sealed)


def secrets_of(svc: Services, store: dict[str, Any], now_ms: int) -> list[str]:
    """The webhook secrets that verify now: the current one, and the previous one for a day after a rotation."""
    key = svc.settings.secret_key
    assert key is not None
    out = []
    current = _opened(key, str(store["id"]), str(store.get("webhook_secret") or ""))
    if current:
        out.append(current)
    if store.get("previous_webhook_secret") and now_ms - int(store.get("rotated_ms") or 0) < PREVIOUS_SECRET_GRACE_MS:
        previous = _opened(key, str(store["id"]), str(store["previous_webhook_secret"]))
        if previous:
            out.append(previous)
    return out


async def _verified_store(
    request: Request, platform: str, body: bytes, check: Callable[[str], None]
) -> dict[str, Any]:
    svc = services(request)
    store_id = request.path_params["store_id"]
    store = await svc.conversions.lookups.store(store_id) if ids.looks_like("store", store_id) else None
    known = store is not None and store.get("platform") == platform
    # An unknown store (or one on another platform) is checked against a secret nobody has, so it
    # fails exactly as a wrong signature does, with the same message: ids cannot be probed.
    candidates = secrets_of(svc, store, int(time.time() * 1000)) if known and store else []
    failure: Unauthorized | None = None
    for secret in candidates or [_NOBODYS_SECRET]:
        try:
            check(secret)
        except Unauthorized as exc:
            failure = failure or exc
            continue
        if candidates and store is not None:
            return dict(store)
    # The platform's own reason (missing header, stale timestamp) helps whoever reads its delivery log.
    raise failure or Unauthorized(BAD_WEBHOOK, code="bad_signature")


async def _record(
    request: Request, store: dict[str, Any], event: OrderEvent, topic: str, delivery_id: str, body: bytes
) -> Response:
    svc = services(request)
    platform = event.platform
    events = PlatformEvents(svc.conversions)
    try:
        recorded: Recorded = await events.record(store, event, Delivery(topic, delivery_id, body))
    except TrackerError as exc:
        if exc.status not in (409, 422):
            raise
        ident = await storeevents.keep(
            svc.ch, brand_id=str(store["brand_id"]), store_id=str(store["id"]), kind="refused", platform=platform,
            topic=topic, delivery_id=delivery_id, order_id=event.order_id, body=body, code=exc.code,
            message=exc.message,
        )
        WEBHOOKS.labels(platform, "refused").inc()
        log.warning("%s event %s (order %s) of store %s refused and kept as %s: %s", platform, topic,
                    event.order_id, store["id"], ident, exc.message)
        refused = ErrorDetail(code=exc.code, message=exc.message)
        return http.JSONResponse(WebhookAnswer(ignored=False, refused=refused, event_id=ident).dump())
    outcome = "redelivered" if recorded.redelivered else "held" if recorded.held else (
        "duplicate" if recorded.conversion is not None and recorded.conversion.duplicate else "accepted")
    WEBHOOKS.labels(platform, outcome).inc()
    answer = WebhookAnswer(ignored=False, conversion=recorded.conversion, held=recorded.held,
                           redelivered=recorded.redelivered)
    return http.JSONResponse(answer.dump())


Handler = Callable[[Request], Awaitable[Response]]


def _counted(platform: str, handler: Handler) -> Handler:
    async def counted(request: Request) -> Response:
        try:
            try:
                return await handler(request)
            except (RedisConnectionError, RedisTimeoutError) as exc:
                raise StorageUnavailable(f"Redis is unreachable, the event was not recorded; retry: {exc}") from exc
        except TrackerError as exc:
            outcome = "unauthorized" if exc.status == 401 else "unavailable" if exc.status >= 500 else "invalid"
            WEBHOOKS.labels(platform, outcome).inc()
            raise

    counted.__name__ = handler.__name__
    return counted


async def shopify_webhook(request: Request) -> Response:
    body = await http.read_body(request, MAX_WEBHOOK_BYTES)
    header = request.headers.get(shopify.HMAC_HEADER)
    store = await _verified_store(request, "shopify", body, lambda secret: shopify.verify(body, header, secret))
    topic = request.headers.get(shopify.TOPIC_HEADER, "")
    if topic not in shopify.TOPICS:
        return _ignored("shopify", f"Topic {topic[:100]!r} is not one tracker records.")
    event = shopify.parse(topic, body)
    if event is None:
        return _ignored("shopify", "The refund moved no money yet.")
    return await _record(request, store, event, topic, request.headers.get(shopify.WEBHOOK_ID_HEADER, ""), body)


async def woocommerce_webhook(request: Request) -> Response:
    body = await http.read_body(request, MAX_WEBHOOK_BYTES)
    if woocommerce.is_ping(body):
        # Unsigned, sent when the webhook is saved; WooCommerce activates it only on a 200.
        return _ignored("woocommerce", "ping")
    header = request.headers.get(woocommerce.SIGNATURE_HEADER)
    store = await _verified_store(
        request, "woocommerce", body, lambda secret: woocommerce.verify(body, header, secret)
    )
    topic = request.headers.get(woocommerce.TOPIC_HEADER, "")
    if topic not in woocommerce.TOPICS:
        return _ignored("woocommerce", f"Topic {topic[:100]!r} is not one tracker records.")
    event = woocommerce.parse(topic, body)
    if event is None:
        return _ignored("woocommerce", "The order's status is not one tracker can tell the state of.")
    delivery = request.headers.get(woocommerce.DELIVERY_ID_HEADER, "")
    return await _record(request, store, event, topic, delivery, body)


async def stripe_webhook(request: Request) -> Response:
    body = await http.read_body(request, MAX_WEBHOOK_BYTES)
    header = request.headers.get(stripe_.SIGNATURE_HEADER)
    now = time.time()
    store = await _verified_store(
        request, "stripe", body, lambda secret: stripe_.verify(body, header, secret, now=now)
    )
    payload = load_json(body, "Stripe event")
    kind = str(payload.get("type") or "")
    event = stripe_.parse_event(payload)
    if event is None:
        return _ignored("stripe", f"Event type {kind[:100]!r} is not one tracker records.")
    return await _record(request, store, event, kind, stripe_.event_id(payload), body)


_PATH = {"store_id": {"type": "string", "description": "The store's id (from its webhook_url)."}}


def _operation(platform: str, verified_by: str, events: str) -> Operation:
    return Operation(
        f"{platform} webhook endpoint of a store (paste the store's webhook_url into {platform}).",
        "integrations",
        security=("store_signature",),
        answers={200: WebhookAnswer},
        errors=(400, 401, 413, 422, 503),
        description=f"Verified by {verified_by}; records {events}. Other events answer 200 `{{\"ignored\": true}}`. "
        "A re-delivery is a no-op; an event refused for a business reason answers 200 with `refused`.",
        path_params=_PATH,
    )


SHOPIFY = api("POST", "/api/v1/integrations/shopify/{store_id}", _operation(
    "Shopify", "`X-Shopify-Hmac-Sha256` (base64 HMAC-SHA256 of the body)", ", ".join(shopify.TOPICS),
))(_counted("shopify", shopify_webhook))
WOOCOMMERCE = api("POST", "/api/v1/integrations/woocommerce/{store_id}", _operation(
    "WooCommerce", "`X-WC-Webhook-Signature` (base64 HMAC-SHA256 of the body)", ", ".join(woocommerce.TOPICS),
))(_counted("woocommerce", woocommerce_webhook))
STRIPE = api("POST", "/api/v1/integrations/stripe/{store_id}", _operation(
    "Stripe", "`Stripe-Signature` (t=..., v1=hex HMAC-SHA256 of t.body, within 300 s)", ", ".join(stripe_.TYPES),
))(_counted("stripe", stripe_webhook))


def routes() -> list[BaseRoute]:
    return [SHOPIFY, WOOCOMMERCE, STRIPE]
