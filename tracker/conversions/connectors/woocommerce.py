"""WooCommerce order webhooks → ``OrderEvent``.

Signature: ``X-WC-Webhook-Signature`` = base64(HMAC-SHA256(secret, raw body)), as
``WC_Webhook::generate_signature`` computes it over the body it sends. The topic
comes in ``X-WC-Webhook-Topic``; ``X-WC-Webhook-Delivery-ID`` names a delivery.
When a webhook is saved, WooCommerce first sends an unsigned form-encoded ping,
``webhook_id=N``, and activates the webhook only if the answer is exactly 200:
``is_ping`` recognises it so the route can answer that.

The payload is the REST API's order (https://woocommerce.github.io/woocommerce-rest-api-docs/#orders):

- amount = ``total - total_tax - shipping_total`` (after discounts, before shipping
  and every tax; fees stay in), order total = ``total``;
- refunds: ``refunds[]``, ``{id, total: "-10.00"}``, each against ``total``;
- status: ``pending`` and ``on-hold`` (awaiting payment) → pending, ``processing``
  and ``completed`` (paid) → approved, ``failed`` → rejected, ``refunded`` →
  refunded, ``cancelled`` → rejected, or refunded when it had been paid
  (``date_paid_gmt``: a paid conversion may only move to refunded). Drafts, the
  trash and statuses added by plugins are not orders one can tell the state of:
  ignored (None), and the next ``order.updated`` with a known status counts;
- click id: the order meta ``trk_click_id`` (``_trk_click_id`` also read: the
  leading underscore hides it in the admin), copied from the /t.js cookie by the
  store's snippet; coupon: the first ``coupon_lines[].code``; customer:
  ``customer_id`` (0 is a guest: none); country: ``shipping.country``, else
  ``billing.country`` (a virtual product has no shipping address).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from tracker.conversions.connectors.event import OrderEvent
from tracker.conversions.connectors.payload import (
    MAX_CLICK_ID,
    MAX_COUPON,
    Fields,
    country,
    email,
    load_json,
    short,
    verify_base64_hmac,
)
from tracker.core.money import ZERO, round_money

SIGNATURE_HEADER: Final = "X-WC-Webhook-Signature"
TOPIC_HEADER: Final = "X-WC-Webhook-Topic"
DELIVERY_ID_HEADER: Final = "X-WC-Webhook-Delivery-ID"

TOPICS: Final = ("order.created", "order.updated")
CLICK_ID_META: Final = ("trk_click_id", "_trk_click_id")

_STATUS: Final = {
    "pending": "pending",
    "on-hold": "pending",
    "processing": "approved",
    "completed": "approved",
    "failed": "rejected",
    "refunded": "refunded",
}
_PING = re.compile(rb"webhook_id=[0-9]{1,20}")


def is_ping(body: bytes) -> bool:
    """The form-encoded ``webhook_id=N`` WooCommerce sends when a webhook is created (unsigned)."""
    return _PING.fullmatch(body.strip()) is not None


def verify(body: bytes, signature_header: str | None, secret: str) -> None:
    """Raise Unauthorized unless ``signature_header`` signs ``body`` with the store's ``secret``."""
    verify_base64_hmac(body, signature_header, secret, SIGNATURE_HEADER)


def parse(topic: str | None, body: bytes) -> OrderEvent | None:
    """The event of a verified webhook; None for a topic or an order status not handled.

    Raises BadRequest for a body that is not a JSON object, Unprocessable naming
    the field for a payload missing a field or with one of the wrong type.
    """
    if topic not in TOPICS:
        return None
    return parse_payload(topic, load_json(body, "WooCommerce webhook"))


def parse_payload(topic: str | None, payload: Mapping[str, Any]) -> OrderEvent | None:
    """``parse`` for a body already decoded (``payload.load_json``)."""
    if topic not in TOPICS:
        return None
    order = Fields(payload, f"WooCommerce {topic}")
    order_id = order.need_ident("id")
    woo_status = order.need_text("status")
    if woo_status == "cancelled":
        status = "refunded" if order.raw("date_paid_gmt") else "rejected"
    elif woo_status in _STATUS:
        status = _STATUS[woo_status]
    else:
        return None
    currency = order.currency("currency")
    total = order.need_decimal("total")
    amount = total - order.need_decimal("total_tax") - order.need_decimal("shipping_total")
    refunds = {}
    for refund in order.objects("refunds"):
        refunds[refund.need_ident("id")] = round_money(abs(refund.need_decimal("total", signed=True)), currency)
    return OrderEvent(
        platform="woocommerce",
        order_id=order_id,
        status=status,
        currency=currency,
        amount=round_money(max(amount, ZERO), currency),
        order_total=round_money(total, currency),
        refunds=refunds,
        click_id=_click_id(order),
        coupon_code=_coupon(order),
        customer_id=order.ident("customer_id", zero_is_none=True),
        occurred_at=order.iso_time("date_created_gmt"),
        updated_at=order.iso_time("date_modified_gmt"),
        customer_email=_billing_email(order),
        country=country(order, ("shipping", "country"), ("billing", "country")),
    )


def _click_id(order: Fields) -> str | None:
    for meta in order.objects("meta_data"):
        if meta.raw("key") in CLICK_ID_META:
            value = meta.raw("value")
            if found := short(value if isinstance(value, str) else None, MAX_CLICK_ID):
                return found
    return None


def _billing_email(order: Fields) -> str | None:
    billing = order.obj("billing")
    return email(billing.text("email") if billing else None)


def _coupon(order: Fields) -> str | None:
    for line in order.objects("coupon_lines"):
        if code := short(line.text("code"), MAX_COUPON):
            return code
    return None
