"""Shopify order webhooks → ``OrderEvent``.

Signature: ``X-Shopify-Hmac-Sha256`` = base64(HMAC-SHA256(app secret, raw body)).
The topic comes in ``X-Shopify-Topic``; ``X-Shopify-Webhook-Id`` (the route's
concern) is the same on every re-delivery.

Figures, per https://shopify.dev/docs/api/admin-rest/latest/resources/order:

- The amount is ``subtotal_price``: line items after every discount (a discount
  code on the order is allocated onto its line items, so it is in there too),
  before shipping, duties and tips. Not ``current_subtotal_price``: that one
  already drops refunded and returned line items, and refunds are applied here as
  a share of the total (``event.refund_share``), so using it would take a returned
  item off twice. Both are equal until something is refunded or edited.
- Tax is excluded from the subtotal, except in a taxes-included shop (most of
  Europe, Japan, Australia: ``taxes_included: true``), where the subtotal carries
  the line items' tax; that tax (``line_items[].tax_lines[].price``) is taken off.
- The order total is ``total_price``; a refund's amount is the sum of its
  successful ``refund`` transactions.
- Figures are read in the presentment currency (what the customer paid in, from
  the ``*_set.presentment_money`` twins) because refund transactions are in that
  currency; for a shop selling in its own currency the two are the same.

The country is ``shipping_address.country_code``, else ``billing_address.country_code``.

Status from ``financial_status``; a cancelled order (``cancelled_at``) is
``rejected`` if nothing was paid, else ``refunded`` (its money goes back, and a
paid conversion may only move to refunded).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

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

HMAC_HEADER: Final = "X-Shopify-Hmac-Sha256"
TOPIC_HEADER: Final = "X-Shopify-Topic"
WEBHOOK_ID_HEADER: Final = "X-Shopify-Webhook-Id"

ORDER_TOPICS: Final = ("orders/create", "orders/paid", "orders/updated", "orders/cancelled")
TOPICS: Final = (*ORDER_TOPICS, "refunds/create")

# The cart attribute /t.js sets (it reaches the order as a note attribute).
CLICK_ID_ATTRIBUTE: Final = "click_id"

_STATUS: Final = {
    "paid": "approved",
    "partially_refunded": "approved",  # the refunds say how much
    "refunded": "refunded",
    "pending": "pending",
    "authorized": "pending",
    "partially_paid": "pending",
    "voided": "rejected",
    "expired": "rejected",
}
_MONEY_TAKEN: Final = frozenset({"paid", "partially_paid", "partially_refunded", "refunded"})


def verify(body: bytes, hmac_header: str | None, secret: str) -> None:
    """Raise Unauthorized unless ``hmac_header`` signs ``body`` with the store's ``secret``."""
    verify_base64_hmac(body, hmac_header, secret, HMAC_HEADER)


def parse(topic: str | None, body: bytes, *, click_id_param: str = "click_id") -> OrderEvent | None:
    """The event of a verified webhook; None for a topic not handled (answer 200, ignored).

    ``click_id_param`` is the campaign's click-id query parameter, looked for in
    the order's ``landing_site`` when the cart attribute is missing. Raises
    BadRequest for a body that is not a JSON object, Unprocessable naming the
    field for a payload missing a field or with one of the wrong type.
    """
    if topic not in TOPICS:
        return None
    return parse_payload(topic, load_json(body, "Shopify webhook"), click_id_param=click_id_param)


def parse_payload(
    topic: str | None, payload: Mapping[str, Any], *, click_id_param: str = "click_id"
) -> OrderEvent | None:
    """``parse`` for a body already decoded (``payload.load_json``)."""
    if topic == "refunds/create":
        return _refund_event(Fields(payload, f"Shopify {topic}"))
    if topic in ORDER_TOPICS:
        return _order_event(Fields(payload, f"Shopify {topic}"), click_id_param)
    return None


def _order_event(order: Fields, click_id_param: str) -> OrderEvent:
    order_id = order.need_ident("id")
    shop_currency = order.currency("currency")
    currency = order.currency("presentment_currency") if order.raw("presentment_currency") else shop_currency

    def figure(where: Fields, key: str) -> Decimal:
        return _presentment(where, key, currency, shop_currency)

    amount = figure(order, "subtotal_price")
    if order.flag("taxes_included"):
        taxes = (figure(tax, "price") for line in order.objects("line_items") for tax in line.objects("tax_lines"))
        amount -= sum(taxes, ZERO)
    refunds = {}
    for refund in order.objects("refunds"):
        refunds[refund.need_ident("id")] = _refunded(refund, currency)
    financial = order.need_text("financial_status")
    if financial not in _STATUS:
        raise order.fail("financial_status", f"one of {', '.join(_STATUS)}, got {financial!r}", show=False)
    if order.raw("cancelled_at"):
        status = "refunded" if financial in _MONEY_TAKEN else "rejected"
    else:
        status = _STATUS[financial]
    customer = order.obj("customer")
    return OrderEvent(
        platform="shopify",
        order_id=order_id,
        status=status,
        currency=currency,
        amount=round_money(max(amount, ZERO), currency),
        order_total=round_money(figure(order, "total_price"), currency),
        refunds=refunds,
        click_id=_click_id(order, click_id_param),
        coupon_code=_coupon(order),
        customer_id=customer.ident("id") if customer else None,
        occurred_at=order.iso_time("processed_at") or order.iso_time("created_at"),
        updated_at=order.iso_time("updated_at"),
        customer_email=email(order.text("email") or order.text("contact_email")),
        country=country(order, ("shipping_address", "country_code"), ("billing_address", "country_code")),
    )


def _refund_event(refund: Fields) -> OrderEvent | None:
    """A refund knows its order and its money, not the order's figures or state.

    None when no money moved (a restock-only refund, or one whose transaction is
    still pending: the ``orders/updated`` that follows its success carries it).
    """
    order_id = refund.need_ident("order_id")
    refund_id = refund.need_ident("id")
    moved = [t for t in refund.objects("transactions") if _is_refund(t)]
    if not moved:
        return None
    currency = moved[0].currency("currency")
    return OrderEvent(
        platform="shopify",
        order_id=order_id,
        status=None,
        currency=currency,
        amount=None,
        order_total=None,
        refunds={refund_id: _refunded(refund, currency)},
    )


def _is_refund(transaction: Fields) -> bool:
    return transaction.text("kind") == "refund" and transaction.text("status") == "success"


def _refunded(refund: Fields, currency: str) -> Decimal:
    """The money a refund gave back: its successful refund transactions, in ``currency``."""
    total = ZERO
    for transaction in refund.objects("transactions"):
        if not _is_refund(transaction):
            continue
        if transaction.currency("currency") != currency:
            raise transaction.fail("currency", f"{currency}, the order's presentment currency", show=False)
        total += transaction.need_decimal("amount")
    return round_money(total, currency)


def _presentment(where: Fields, key: str, currency: str, shop_currency: str) -> Decimal:
    """``key`` in the presentment currency: its ``<key>_set`` twin, else the shop-money field."""
    money_set = where.obj(f"{key}_set")
    if money_set is not None:
        presentment = money_set.need_obj("presentment_money")
        if presentment.currency("currency_code") != currency:
            raise presentment.fail("currency_code", f"{currency}, the order's presentment currency", show=False)
        return presentment.need_decimal("amount")
    if currency != shop_currency:
        raise where.fail(f"{key}_set", f"present when the order is paid in {currency}, not {shop_currency}", show=False)
    return where.need_decimal(key)


def _click_id(order: Fields, param: str) -> str | None:
    """The ``click_id`` cart attribute, else the campaign's parameter in the landing URL."""
    for attribute in order.objects("note_attributes"):
        if attribute.raw("name") == CLICK_ID_ATTRIBUTE:
            value = attribute.raw("value")
            found = short(value if isinstance(value, str) else None, MAX_CLICK_ID)
            if found:
                return found
    landing = order.text("landing_site")
    if landing:
        try:
            query = urlsplit(landing).query
        except ValueError:  # a garbled landing URL only means no click id from it
            return None
        for key, value in parse_qsl(query):
            if key == param and (found := short(value, MAX_CLICK_ID)):
                return found
    return None


def _coupon(order: Fields) -> str | None:
    for discount in order.objects("discount_codes"):
        if code := short(discount.text("code"), MAX_COUPON):
            return code
    return None
