"""Stripe events → OrderEvent; signatures made and checked by the official ``stripe`` library."""

from __future__ import annotations

import re
import time
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import stripe

from tests.conversions.connectors.samples import body, data, raw
from tracker.conversions.connectors import OrderEvent, stripe_
from tracker.conversions.connectors.payload import load_json
from tracker.core.errors import BadRequest, Unauthorized, Unprocessable

D = Decimal
SECRET = "whsec_7kQ2mN9pR4sT6vX8zB1cD3fG5hJ7kL9m"
NOW = 1_795_000_000


def at(iso: str) -> datetime:
    return datetime.fromisoformat(iso).replace(tzinfo=UTC)


def header(payload: bytes, timestamp: int = NOW, secret: str = SECRET) -> str:
    """The Stripe-Signature header as Stripe makes it (the library's own helper)."""
    return stripe.WebhookSignature.generate_signature_header(payload.decode(), secret, timestamp=timestamp)


def v1(payload: bytes, timestamp: int, secret: str) -> str:
    return stripe.WebhookSignature._compute_signature(f"{timestamp}.{payload.decode()}", secret)


EXPECTED: list[tuple[str, OrderEvent | None]] = [
    (
        "checkout_session_completed_usd.json",
        OrderEvent(
            platform="stripe",
            country="US",
            order_id="pi_3QLa2bLmR8sT2vXy0c4D5e6F",
            status="approved",
            currency="USD",
            amount=D("75.65"),  # amount_subtotal 8900 - amount_discount 1335; shipping 500, tax 624 out
            order_total=D("86.89"),
            refunds={},
            click_id="St3Ri5Pe7Ch9Ec1K",  # client_reference_id
            coupon_code="LUCAS15",  # metadata.coupon_code beats the promotion code id
            customer_id="cus_R5tYu7Io9Pa1Sd",
            occurred_at=at("2026-11-24T20:15:31"),
        ),
    ),
    (
        "checkout_session_completed_jpy.json",
        OrderEvent(
            platform="stripe",
            country="JP",
            order_id="pi_3QLgGzLmR8sT2vXy1JpYn002",
            status="approved",
            currency="JPY",
            amount=D("14220"),  # zero-decimal: 15800 - 1580 yen, not 142.20
            order_total=D("14220"),
            refunds={},
            click_id="Jp2Ws4Ed6Rf8Tg0Y",  # metadata.click_id
            coupon_code="promo_1QLfA1LmR8sT2vXyREN10JP",  # the session's discount
            customer_id=None,
            occurred_at=at("2026-11-25T03:44:09"),
        ),
    ),
    (
        "checkout_session_completed_subscription.json",
        OrderEvent(
            platform="stripe",
            country="US",
            order_id="in_1QLsub0LmR8sT2vXyInv00001",  # the first invoice, so invoice.paid lands here
            status="approved",
            currency="USD",
            amount=D("29.00"),
            order_total=D("29.00"),
            refunds={},
            click_id="Sb1Sc2Ri3Pt4Io5N",
            coupon_code=None,
            customer_id="cus_R7sUbScRiBeR01",
            occurred_at=at("2026-11-26T17:02:47"),
            subscription_id="sub_1QLsub0LmR8sT2vXyAvaPro1",
        ),
    ),
    (
        "invoice_paid_subscription_cycle.json",
        OrderEvent(
            platform="stripe",
            order_id="in_1QXren0LmR8sT2vXyInv00002",
            status="approved",
            currency="USD",
            amount=D("29.00"),
            order_total=D("29.00"),
            refunds={},
            click_id=None,  # a renewal carries none: the recorder attributes it by customer
            coupon_code=None,
            customer_id="cus_R7sUbScRiBeR01",
            occurred_at=at("2026-12-26T17:03:03"),  # status_transitions.paid_at
            subscription_id="sub_1QLsub0LmR8sT2vXyAvaPro1",  # basil: parent.subscription_details
        ),
    ),
    (
        "invoice_paid_kwd.json",
        OrderEvent(
            platform="stripe",
            country="KW",
            order_id="in_1QLkwd0LmR8sT2vXyInvKwd01",
            status="approved",
            currency="KWD",
            amount=D("13.500"),  # three-decimal: total_excluding_tax 13500 fils
            order_total=D("13.500"),
            refunds={},
            click_id="Kd3Fg5Hj7Kl9Zx1C",  # subscription_details.metadata, copied onto every invoice
            coupon_code="NOUR10",
            customer_id="cus_R9kWdMeMbEr001",
            occurred_at=at("2026-11-27T09:29:59"),
            subscription_id="sub_1QLkwd0LmR8sT2vXySalem01",
        ),
    ),
    (
        "charge_refunded_partial_usd.json",
        OrderEvent(
            platform="stripe",
            order_id="pi_3QLa2bLmR8sT2vXy0c4D5e6F",  # the USD session's order
            status="approved",
            currency="USD",
            amount=None,
            order_total=D("86.89"),
            refunds={"ch_3QLa2bLmR8sT2vXy0dChUsd1": D("30.00")},  # cumulative amount_refunded
            click_id=None,
            coupon_code=None,
            customer_id="cus_R5tYu7Io9Pa1Sd",
            occurred_at=at("2026-11-24T20:15:28"),
        ),
    ),
    (
        "charge_refunded_full_jpy.json",
        OrderEvent(
            platform="stripe",
            order_id="pi_3QLgGzLmR8sT2vXy1JpYn002",
            status="refunded",
            currency="JPY",
            amount=None,
            order_total=D("14220"),
            refunds={"ch_3QLgGzLmR8sT2vXy1fChJpy1": D("14220")},
            click_id=None,
            coupon_code=None,
            customer_id=None,
            occurred_at=at("2026-11-25T03:44:07"),
        ),
    ),
    (
        "checkout_session_completed_eur_unpaid.json",
        OrderEvent(
            platform="stripe",
            country="DE",
            order_id="pi_3QLsepaLmR8sT2vXy2SepaPi1",
            status="pending",  # SEPA Direct Debit: not paid yet
            currency="EUR",
            amount=D("120.00"),
            order_total=D("120.00"),
            refunds={},
            click_id="Eu9Se7Pa5Db3Gf1H",
            coupon_code=None,
            customer_id="cus_R2eUrOsEpA0001",
            occurred_at=at("2026-11-23T08:05:40"),
        ),
    ),
    (
        "checkout_session_async_payment_succeeded_eur.json",
        OrderEvent(
            platform="stripe",
            country="DE",
            order_id="pi_3QLsepaLmR8sT2vXy2SepaPi1",
            status="approved",
            currency="EUR",
            amount=D("120.00"),
            order_total=D("120.00"),
            refunds={},
            click_id="Eu9Se7Pa5Db3Gf1H",
            coupon_code=None,
            customer_id="cus_R2eUrOsEpA0001",
            occurred_at=None,  # the debit settling days later is not when the order was placed
        ),
    ),
    ("customer_created.json", None),
]


@pytest.mark.parametrize(("name", "expected"), EXPECTED, ids=[row[0] for row in EXPECTED])
def test_fixture(name: str, expected: OrderEvent | None) -> None:
    payload = raw("stripe", name)
    stripe_.verify(payload, header(payload), SECRET, now=NOW)
    event = stripe_.parse(payload)
    assert (replace(event, updated_at=None, customer_email=None) if event else None) == expected


@pytest.mark.parametrize("name", [row[0] for row in EXPECTED])
def test_the_stripe_library_accepts_what_we_accept(name: str) -> None:
    payload = raw("stripe", name)
    now = int(time.time())  # construct_event reads the real clock
    signed = header(payload, now)
    stripe_.verify(payload, signed, SECRET, now=now)
    event = stripe.Webhook.construct_event(payload, signed, SECRET)
    decoded = load_json(payload, "Stripe event")
    assert (event.id, event.type) == (stripe_.event_id(decoded), decoded["type"])
    assert stripe_.parse_event(decoded) == stripe_.parse(payload)


def test_the_subscription_signup_and_its_first_invoice_are_one_order() -> None:
    signup = stripe_.parse(raw("stripe", "checkout_session_completed_subscription.json"))
    first_invoice = data("stripe", "invoice_paid_subscription_cycle.json")
    first_invoice["data"]["object"]["id"] = "in_1QLsub0LmR8sT2vXyInv00001"
    first_invoice["data"]["object"]["billing_reason"] = "subscription_create"
    paid = stripe_.parse(body(first_invoice))
    assert signup is not None and paid is not None
    assert (signup.order_id, signup.amount, signup.subscription_id) == (
        paid.order_id,
        paid.amount,
        paid.subscription_id,
    )


@pytest.mark.parametrize("skew", [-300, -1, 0, 1, 300])
def test_timestamp_within_300_seconds_either_side(skew: int) -> None:
    payload = raw("stripe", "checkout_session_completed_usd.json")
    stripe_.verify(payload, header(payload, NOW + skew), SECRET, now=NOW)


@pytest.mark.parametrize("skew", [-301, 301, -86400])
def test_stale_or_future_timestamp_is_refused(skew: int) -> None:
    payload = raw("stripe", "checkout_session_completed_usd.json")
    with pytest.raises(Unauthorized, match="more than 300 seconds from the server time") as caught:
        stripe_.verify(payload, header(payload, NOW + skew), SECRET, now=NOW)
    assert caught.value.code == "stale_signature"


def test_the_library_refuses_the_stale_one_too() -> None:
    payload = raw("stripe", "checkout_session_completed_usd.json")
    stale = header(payload, int(time.time()) - 301)
    with pytest.raises(stripe.SignatureVerificationError, match="tolerance"):
        stripe.Webhook.construct_event(payload, stale, SECRET)
    with pytest.raises(Unauthorized):
        stripe_.verify(payload, stale, SECRET, now=time.time())


def test_any_v1_may_match_while_a_secret_rotates() -> None:
    payload = raw("stripe", "invoice_paid_kwd.json")
    old, new = v1(payload, NOW, "whsec_the_old_secret"), v1(payload, NOW, SECRET)
    both = f"t={NOW},v1={old},v1={new},v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39"
    stripe_.verify(payload, both, SECRET, now=NOW)
    stripe_.verify(payload, both, "whsec_the_old_secret", now=NOW)
    with pytest.raises(Unauthorized):
        stripe_.verify(payload, both, "whsec_a_third_secret", now=NOW)


@pytest.mark.parametrize(
    ("signature", "message"),
    [
        (None, "Stripe-Signature header is missing"),
        ("", "Stripe-Signature header is missing"),
        ("t=1795000000", "No signatures found with expected scheme v1"),
        (f"t={NOW},v0={'0' * 64}", "No signatures found with expected scheme v1"),
        ("v1=" + "0" * 64, "Unable to extract timestamp"),
        (f"t=soon,v1={'0' * 64}", "Unable to extract timestamp"),
        ("garbage", "Unable to extract timestamp"),
        (f"t={NOW},v1={'é' * 64}", "header is malformed"),
        (f"t={NOW},v1=" + "a" * 5000, "header is malformed"),
    ],
)
def test_malformed_headers_are_refused(signature: str | None, message: str) -> None:
    payload = raw("stripe", "charge_refunded_full_jpy.json")
    with pytest.raises(Unauthorized, match=message) as caught:
        stripe_.verify(payload, signature, SECRET, now=NOW)
    assert caught.value.status == 401


def test_other_secret_and_tampered_body_are_refused() -> None:
    payload = raw("stripe", "charge_refunded_partial_usd.json")
    for signed, secret in ((header(payload, secret="whsec_another_store"), SECRET), (header(payload), "")):
        with pytest.raises(Unauthorized, match="Stripe-Signature") as caught:
            stripe_.verify(payload, signed, secret, now=NOW)
        assert caught.value.code == "bad_signature"
    tampered = payload.replace(b'"amount_refunded": 3000', b'"amount_refunded": 300')
    assert tampered != payload
    with pytest.raises(Unauthorized, match="No signatures found matching"):
        stripe_.verify(tampered, header(payload), SECRET, now=NOW)
    with pytest.raises(Unauthorized, match="not UTF-8"):
        stripe_.verify(b"\xff" + payload, header(payload), SECRET, now=NOW)


@pytest.mark.parametrize(
    ("units", "currency", "expected"),
    [
        (1000, "USD", "10.00"),
        (1, "USD", "0.01"),
        (0, "USD", "0.00"),
        (500, "JPY", "500"),
        (14220, "JPY", "14220"),
        (990, "KRW", "990"),
        (5120, "KWD", "5.120"),
        (1000, "BHD", "1.000"),
        (50000, "ISK", "500"),  # two-decimal in Stripe's API, whole kronur in ISO
        (5000, "MGA", "5000.00"),  # zero-decimal at Stripe, two digits in ISO
        (100000, "HUF", "1000.00"),
        (250000, "UGX", "250000"),
    ],
)
def test_from_minor_uses_stripes_exponent(units: int, currency: str, expected: str) -> None:
    value = stripe_.from_minor(units, currency)
    assert value == D(expected)
    assert str(value) == expected  # exactly the currency's ISO digits


def event(kind: str, obj: dict[str, Any], **envelope: Any) -> bytes:
    return body({"id": "evt_1", "object": "event", "created": NOW, "type": kind, "data": {"object": obj}, **envelope})


def session(**fields: Any) -> dict[str, Any]:
    obj: dict[str, Any] = data("stripe", "checkout_session_completed_usd.json")["data"]["object"]
    obj.update(fields)
    return obj


def test_a_setup_session_sells_nothing() -> None:
    assert stripe_.parse(event("checkout.session.completed", session(mode="setup", amount_subtotal=None))) is None


def test_a_free_order_without_a_payment_intent_is_the_session() -> None:
    free = session(payment_intent=None, payment_status="no_payment_required", amount_subtotal=0, amount_total=0)
    parsed = stripe_.parse(event("checkout.session.completed", free))
    assert parsed is not None
    assert (parsed.order_id, parsed.status, parsed.amount) == (free["id"], "approved", D("0.00"))


def test_an_async_failure_rejects_the_order() -> None:
    parsed = stripe_.parse(event("checkout.session.async_payment_failed", session(payment_status="unpaid")))
    assert parsed is not None and parsed.status == "rejected"


def test_an_expanded_promotion_code_gives_its_code() -> None:
    promo = {"id": "promo_1", "object": "promotion_code", "code": "LUCAS15", "coupon": {"id": "Q8xY"}}
    parsed = stripe_.parse(
        event("checkout.session.completed", session(metadata={}, discounts=[{"promotion_code": promo}]))
    )
    assert parsed is not None and parsed.coupon_code == "LUCAS15"
    coupon_only = session(metadata={}, discounts=[{"coupon": "SPRING24", "promotion_code": None}])
    parsed = stripe_.parse(event("checkout.session.completed", coupon_only))
    assert parsed is not None and parsed.coupon_code == "SPRING24"


def test_an_old_invoice_without_total_excluding_tax() -> None:
    invoice: dict[str, Any] = data("stripe", "invoice_paid_kwd.json")["data"]["object"]
    del invoice["total_excluding_tax"]
    parsed = stripe_.parse(event("invoice.paid", invoice))
    assert parsed is not None and parsed.amount == D("13.500")  # subtotal 15000 - discounts 1500


def test_invoice_shipping_is_not_commissionable() -> None:
    invoice: dict[str, Any] = data("stripe", "invoice_paid_subscription_cycle.json")["data"]["object"]
    invoice.update(total_excluding_tax=3400, total=3400, shipping_cost={"amount_subtotal": 500, "amount_total": 500})
    parsed = stripe_.parse(event("invoice.paid", invoice))
    assert parsed is not None and (parsed.amount, parsed.order_total) == (D("29.00"), D("34.00"))


def test_a_charge_of_an_invoice_refunds_that_invoice() -> None:
    charge: dict[str, Any] = data("stripe", "charge_refunded_partial_usd.json")["data"]["object"]
    charge["invoice"] = "in_1QLsub0LmR8sT2vXyInv00001"
    parsed = stripe_.parse(event("charge.refunded", charge))
    assert parsed is not None and parsed.order_id == "in_1QLsub0LmR8sT2vXyInv00001"


@pytest.mark.parametrize(
    "kind",
    ["customer.created", "payment_intent.succeeded", "invoice.payment_failed", "charge.succeeded", "v2.core.event"],
)
def test_other_event_types_are_ignored(kind: str) -> None:
    assert stripe_.parse(event(kind, {"id": "x"})) is None


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (body({"id": "evt_1", "data": {}}), "Stripe event: type must be a non-empty string, not null."),
        (event("invoice.paid", []), "Stripe invoice.paid: data.object must be an object, not an array."),
        (body({"type": "charge.refunded", "data": None}), "Stripe charge.refunded: data must be an object, not null."),
        (event("checkout.session.completed", session(amount_subtotal="8900")), "data.object.amount_subtotal must be"),
        (event("checkout.session.completed", session(currency="usdc")), "data.object.currency must be an ISO 4217"),
        (event("checkout.session.completed", session(payment_status=None)), "data.object.payment_status must be"),
        (event("checkout.session.completed", session(total_details=[])), "data.object.total_details must be an object"),
        (event("checkout.session.completed", session(payment_intent={"id": 1})), "data.object.payment_intent must be"),
        (event("checkout.session.completed", session(id=None, payment_intent=None)), "data.object.id must be an id"),
        (event("charge.refunded", {"id": "ch_1", "currency": "usd", "amount": 100}), "amount_refunded must be"),
        (event("charge.refunded", {"id": "ch_1", "currency": "usd", "amount": -1, "amount_refunded": 0}), "0 or more"),
        (event("charge.refunded", {"id": "ch_1", "currency": "usd", "amount": 1.5, "amount_refunded": 0}), "integer"),
        (event("invoice.paid", {"id": "in_1", "currency": "usd", "total": 100}), "data.object.subtotal must be"),
        (event("checkout.session.completed", session(), created="yesterday"), "Stripe event: created must be a unix"),
    ],
)
def test_malformed_events_name_the_field(payload: bytes, message: str) -> None:
    with pytest.raises(Unprocessable, match=re.escape(message)) as caught:
        stripe_.parse(payload)
    assert caught.value.status == 422


@pytest.mark.parametrize("payload", [b"", b"{", b"[]", b'"evt"', b'{"amount": NaN}'])
def test_malformed_json_is_a_bad_request(payload: bytes) -> None:
    with pytest.raises(BadRequest, match="Stripe event body") as caught:
        stripe_.parse(payload)
    assert caught.value.status == 400
