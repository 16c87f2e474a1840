"""Stripe events → ``OrderEvent``. (Named ``stripe_`` so it never shadows the ``stripe`` package.)

Signature: ``Stripe-Signature: t=…,v1=…``, hex HMAC-SHA256(secret, f"{t}.{raw body}"),
checked by the official ``stripe`` library (so the scheme is Stripe's, not our
reading of it); any ``v1`` may match (secret rotation). The library only refuses
old timestamps; the window here is ±300 s of our clock, like the postbacks'.
The event type is in the body; Stripe re-delivers an event with the same ``id``.

Events, amounts from minor units by Stripe's exponent of the currency:

- ``checkout.session.completed``: the order is the payment intent (``mode``
  payment), or the subscription's first invoice (``mode`` subscription, so that its
  ``invoice.paid`` lands on the same order and the session's click id with it).
  Amount ``amount_subtotal - total_details.amount_discount``, total
  ``amount_total``; ``payment_status`` paid or no_payment_required → approved,
  unpaid (a delayed method such as a bank debit) → pending, settled later by
  ``checkout.session.async_payment_succeeded`` (approved) or ``…_failed`` (rejected).
  With tax-inclusive prices ``amount_subtotal`` carries the tax, and the webhook has
  no breakdown to take it out (``total_details.breakdown`` needs an API call).
- ``invoice.paid``: each paid invoice is an order (a subscription's renewals too),
  ``subscription_id`` set. Amount ``total_excluding_tax`` (after discounts, before
  tax) less any invoice shipping, total ``total``.
- ``charge.refunded``: ``amount_refunded`` is cumulative, so the refund is keyed by
  the charge id and each event replaces the last figure; the charge is fully
  refunded when ``refunded`` is true. Its order: the charge's ``invoice`` when it
  has one (API versions before 2025-03-31), else its payment intent.

Click id: ``client_reference_id``, else ``metadata.click_id`` (on an invoice, also
the subscription's metadata as the invoice copies it). Coupon: ``metadata.coupon_code``,
else the first discount's promotion code (or coupon) id. Country: a session's shipping address,
else ``customer_details.address.country``; an invoice's ``customer_shipping``, else
``customer_address``; a charge's shipping, else ``billing_details`` address.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

import stripe

from tracker.conversions.connectors.event import OrderEvent
from tracker.conversions.connectors.payload import MAX_CLICK_ID, MAX_COUPON, Fields, country, email, load_json, short
from tracker.core.errors import Unauthorized
from tracker.core.money import MINOR_UNITS, round_money

SIGNATURE_HEADER: Final = "Stripe-Signature"
TOLERANCE_SECONDS: Final = 300

TYPES: Final = (
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "invoice.paid",
    "charge.refunded",
)

# https://docs.stripe.com/currencies#zero-decimal and #special-cases. Stripe's minor
# units differ from ISO 4217 for a few: MGA is zero-decimal at Stripe (2 in ISO),
# ISK stays two-decimal in the API (0 in ISO; amounts are multiples of 100).
STRIPE_ZERO_DECIMAL: Final = frozenset(
    {"BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF"}
)
STRIPE_TWO_DECIMAL: Final = frozenset({"ISK"})


def verify(
    body: bytes, signature_header: str | None, secret: str, *, now: float, tolerance: int = TOLERANCE_SECONDS
) -> None:
    """Raise Unauthorized unless ``signature_header`` signs ``body`` with ``secret``, dated within
    ±``tolerance`` seconds of ``now`` (unix seconds, the caller's clock)."""
    if signature_header is None or not signature_header.strip():
        raise Unauthorized(f"The {SIGNATURE_HEADER} header is missing; the event is not signed.", code="bad_signature")
    if len(signature_header) > 4096 or not signature_header.isascii():
        raise Unauthorized(f"The {SIGNATURE_HEADER} header is malformed.", code="bad_signature")
    try:
        # tolerance=None: the library checks the signature only; the window is ours (both sides).
        stripe.WebhookSignature.verify_header(body, signature_header, secret, tolerance=None)
    except stripe.SignatureVerificationError as exc:
        raise Unauthorized(
            f"The {SIGNATURE_HEADER} does not verify with this store's signing secret: {exc}", code="bad_signature"
        ) from None
    except UnicodeDecodeError:
        raise Unauthorized(
            "The Stripe event body is not UTF-8, so Stripe did not sign it.", code="bad_signature"
        ) from None
    timestamp = _timestamp(signature_header)
    if abs(now - timestamp) > tolerance:
        raise Unauthorized(
            f"The {SIGNATURE_HEADER} timestamp t={timestamp} is more than {tolerance} seconds from the server "
            f"time {int(now)}: a replayed event, or a clock out of sync.",
            code="stale_signature",
        )


def _timestamp(header: str) -> int:
    # The library has read the header already; take its first t= as it does.
    for part in header.split(","):
        key, _, value = part.partition("=")
        if key == "t":
            return int(value)
    raise Unauthorized(f"The {SIGNATURE_HEADER} header has no timestamp.", code="bad_signature")


def parse(body: bytes) -> OrderEvent | None:
    """The event of a verified body; None for an event type not handled (answer 200, ignored).

    Raises BadRequest for a body that is not a JSON object, Unprocessable naming
    the field for an event missing a field or with one of the wrong type.
    """
    return parse_event(load_json(body, "Stripe event"))


def event_id(event: Mapping[str, Any]) -> str:
    """The event's ``id`` (``evt_…``), the same on every re-delivery."""
    return Fields(event, "Stripe event").need_ident("id")


def parse_event(event: Mapping[str, Any]) -> OrderEvent | None:
    """``parse`` for a body already decoded (``payload.load_json``)."""
    envelope = Fields(event, "Stripe event")
    kind = envelope.need_text("type")
    if kind not in TYPES:
        return None
    data = Fields(event, f"Stripe {kind}").need_obj("data").need_obj("object")
    if kind == "invoice.paid":
        return _invoice(data, envelope)
    if kind == "charge.refunded":
        return _charge(data, envelope)
    return _session(data, envelope, kind)


def from_minor(units: int, currency: str) -> Decimal:
    """A Stripe integer amount in ``currency`` as a Decimal with the currency's ISO digits."""
    if currency in STRIPE_ZERO_DECIMAL:
        exponent = 0
    elif currency in STRIPE_TWO_DECIMAL:
        exponent = 2
    else:
        exponent = MINOR_UNITS[currency]
    return round_money(Decimal(units).scaleb(-exponent), currency)


def _session(session: Fields, envelope: Fields, kind: str) -> OrderEvent | None:
    mode = session.text("mode")
    if mode == "setup":  # saves a payment method, sells nothing
        return None
    currency = session.currency("currency")
    order_id = (session.ident("invoice") if mode == "subscription" else session.ident("payment_intent")) or (
        session.need_ident("id")  # no payment taken (a free order), or an old API version
    )
    if kind == "checkout.session.async_payment_failed":
        status = "rejected"
    elif kind == "checkout.session.async_payment_succeeded":
        status = "approved"
    else:
        payment = session.need_text("payment_status")
        status = "pending" if payment == "unpaid" else "approved"
    details = session.obj("total_details")
    discount = details.minor("amount_discount") if details else None
    amount = session.need_minor("amount_subtotal") - (discount or 0)
    metadata = session.obj("metadata")
    return OrderEvent(
        platform="stripe",
        order_id=order_id,
        status=status,
        currency=currency,
        amount=from_minor(max(amount, 0), currency),
        order_total=from_minor(session.need_minor("amount_total"), currency),
        click_id=short(session.text("client_reference_id"), MAX_CLICK_ID) or _meta(metadata, "click_id", MAX_CLICK_ID),
        coupon_code=_meta(metadata, "coupon_code", MAX_COUPON) or _discount_code(session),
        customer_id=session.ident("customer"),
        # Completion is when the order was placed; an async payment settling days later is not.
        occurred_at=envelope.unix_time("created") if kind == "checkout.session.completed" else None,
        subscription_id=session.ident("subscription"),
        updated_at=envelope.unix_time("created"),
        customer_email=email((session.obj("customer_details") or session).text("email")),
        country=country(session, ("shipping_details", "address", "country"),
                        ("collected_information", "shipping_details", "address", "country"),
                        ("customer_details", "address", "country")),
    )


def _invoice(invoice: Fields, envelope: Fields) -> OrderEvent:
    currency = invoice.currency("currency")
    # Since API 2025-03-31 the subscription sits under parent.subscription_details.
    parent = invoice.obj("parent")
    details = (parent.obj("subscription_details") if parent else None) or invoice.obj("subscription_details")
    subscription = invoice.ident("subscription") or (details.ident("subscription") if details else None)
    excluding_tax = invoice.minor("total_excluding_tax")
    if excluding_tax is None:  # API versions before 2022-08-01
        discounts = sum(d.need_minor("amount") for d in invoice.objects("total_discount_amounts"))
        excluding_tax = invoice.need_minor("subtotal") - discounts
    shipping = invoice.obj("shipping_cost")
    if shipping is not None:
        excluding_tax -= shipping.minor("amount_subtotal") or 0
    metadata = invoice.obj("metadata")
    sub_metadata = details.obj("metadata") if details else None
    transitions = invoice.obj("status_transitions")
    return OrderEvent(
        platform="stripe",
        order_id=invoice.need_ident("id"),
        status="approved",
        currency=currency,
        amount=from_minor(max(excluding_tax, 0), currency),
        order_total=from_minor(invoice.need_minor("total"), currency),
        click_id=_meta(metadata, "click_id", MAX_CLICK_ID) or _meta(sub_metadata, "click_id", MAX_CLICK_ID),
        coupon_code=_meta(metadata, "coupon_code", MAX_COUPON) or _meta(sub_metadata, "coupon_code", MAX_COUPON),
        customer_id=invoice.ident("customer"),
        occurred_at=(transitions.unix_time("paid_at") if transitions else None)
        or envelope.unix_time("created")
        or invoice.unix_time("created"),
        subscription_id=subscription,
        updated_at=envelope.unix_time("created"),
        customer_email=email(invoice.text("customer_email")),
        country=country(invoice, ("customer_shipping", "address", "country"), ("customer_address", "country")),
    )


def _charge(charge: Fields, envelope: Fields) -> OrderEvent:
    currency = charge.currency("currency")
    charge_id = charge.need_ident("id")
    order_id = charge.ident("invoice") or charge.ident("payment_intent") or charge_id
    refunded = from_minor(charge.need_minor("amount_refunded"), currency)
    metadata = charge.obj("metadata")
    return OrderEvent(
        platform="stripe",
        order_id=order_id,
        status="refunded" if charge.flag("refunded") else "approved",
        currency=currency,
        amount=None,
        order_total=from_minor(charge.need_minor("amount"), currency),
        refunds={charge_id: refunded},
        click_id=_meta(metadata, "click_id", MAX_CLICK_ID),
        coupon_code=_meta(metadata, "coupon_code", MAX_COUPON),
        customer_id=charge.ident("customer"),
        occurred_at=charge.unix_time("created"),
        updated_at=envelope.unix_time("created"),
        customer_email=email(charge.text("receipt_email")),
        country=country(charge, ("shipping", "address", "country"), ("billing_details", "address", "country")),
    )


def _meta(metadata: Fields | None, key: str, limit: int) -> str | None:
    return short(metadata.text(key), limit) if metadata else None


def _discount_code(session: Fields) -> str | None:
    """The first discount's promotion code (its ``code`` when expanded, else its id), else its coupon."""
    for discount in session.objects("discounts"):
        for key in ("promotion_code", "coupon"):
            value = discount.raw(key)
            if isinstance(value, dict):
                value = value.get("code") if key == "promotion_code" else value.get("id")
            if found := short(value if isinstance(value, str) else None, MAX_COUPON):
                return found
    return None
