"""OrderEvent and refund_share: the commissionable side of a platform's refunds."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from tracker.conversions.connectors import OrderEvent, RefundShare, refund_share

D = Decimal


def share(amount: str | None, total: str | None, refunds: list[str], currency: str) -> RefundShare:
    return refund_share(
        None if amount is None else D(amount),
        None if total is None else D(total),
        {f"r{i}": D(value) for i, value in enumerate(refunds)},
        currency,
    )


@pytest.mark.parametrize(
    ("amount", "total", "refunds", "currency", "full", "refunded"),
    [
        # Nothing refunded: zero at the currency's digits, whatever else is unknown.
        ("100.00", "121.00", [], "USD", False, "0.00"),
        ("100.00", "121.00", ["0.00"], "USD", False, "0.00"),
        (None, None, [], "USD", False, "0.00"),
        ("1000", "1100", [], "JPY", False, "0"),
        ("10.000", "11.000", [], "KWD", False, "0.000"),
        # The refunded share of the total, applied to the amount.
        ("100.00", "121.00", ["60.50"], "USD", False, "50.00"),
        ("100.00", "121.00", ["30.25", "30.25"], "USD", False, "50.00"),  # cumulative over refunds
        ("75.00", "96.00", ["30.00"], "EUR", False, "23.44"),  # 23.4375 half-up
        ("127.80", "147.93", ["23.33"], "USD", False, "20.16"),  # 20.1553...
        # Half-up exactly at the half (no float, no intermediate rounding).
        ("0.05", "10.00", ["1.00"], "USD", False, "0.01"),  # 0.005 -> 0.01
        ("10.00", "8.00", ["0.01"], "USD", False, "0.01"),  # 0.0125 -> 0.01
        ("0.03", "2.00", ["1.00"], "USD", False, "0.02"),  # 0.015 -> 0.02
        ("1.00", "3.00", ["1.00"], "USD", False, "0.33"),  # a third: 0.333... -> 0.33
        ("2.00", "3.00", ["1.00"], "USD", False, "0.67"),  # 0.666... -> 0.67
        # Zero-decimal JPY: whole yen.
        ("17182", "19700", ["5000"], "JPY", False, "4361"),  # 4360.91...
        ("8000", "8800", ["4400"], "JPY", False, "4000"),
        ("3", "6", ["1"], "JPY", False, "1"),  # 0.5 -> 1
        # Three-decimal KWD.
        ("17.812", "19.312", ["5.000"], "KWD", False, "4.612"),  # 4.61164...
        ("13.500", "13.500", ["0.001"], "KWD", False, "0.001"),
        # A full refund: the whole total, or more (a goodwill extra), caps at the amount.
        ("100.00", "121.00", ["121.00"], "USD", True, "100.00"),
        ("100.00", "121.00", ["100.00", "21.00"], "USD", True, "100.00"),
        ("100.00", "121.00", ["150.00"], "USD", True, "100.00"),
        ("8000", "8800", ["8800"], "JPY", True, "8000"),
        ("22.050", "24.050", ["24.050"], "KWD", True, "22.050"),
        # A partial refund that rounds to the whole (non-zero) amount leaves nothing: full.
        ("1", "1000", ["999"], "JPY", True, "1"),
        ("0.01", "100.00", ["99.99"], "USD", True, "0.01"),
        # A free order (nothing commissionable): a partial refund of its shipping is not "full".
        ("0.00", "9.90", ["4.95"], "USD", False, "0.00"),
        ("0.00", "0.00", ["0.00"], "USD", False, "0.00"),
        # A total of 0 with something refunded anyway: everything went back.
        ("0.00", "0.00", ["1.00"], "USD", True, "0.00"),
        # Unknown figures: not computable yet (refunds kept until the order arrives).
        (None, "121.00", ["60.50"], "USD", False, None),
        ("100.00", None, ["60.50"], "USD", False, None),
        (None, None, ["60.50"], "USD", False, None),
        # ... except a refund of the whole known total is full even with no amount.
        (None, "121.00", ["121.00"], "USD", True, None),
    ],
)
def test_refund_share(
    amount: str | None, total: str | None, refunds: list[str], currency: str, full: bool, refunded: str | None
) -> None:
    result = share(amount, total, refunds, currency)
    assert result == RefundShare(full=full, amount=None if refunded is None else D(refunded))
    if result.amount is not None:  # exactly the currency's digits, as the model stores money
        assert result.amount.as_tuple().exponent == D(refunded or "0").as_tuple().exponent


def test_the_smallest_kwd_refund_of_a_tiny_amount_rounds_to_all_of_it() -> None:
    # 0.001 KWD amount, half the total refunded: 0.0005 rounds half-up to 0.001, the whole.
    assert share("0.001", "2.000", ["1.000"], "KWD") == RefundShare(full=True, amount=D("0.001"))


def test_refund_share_refuses_negative_refunds() -> None:
    with pytest.raises(ValueError, match="negative"):
        refund_share(D("10.00"), D("12.00"), {"a": D("5.00"), "b": D("-1.00")}, "USD")


def event(**changes: object) -> OrderEvent:
    fields: dict[str, object] = {
        "platform": "shopify",
        "order_id": "1",
        "status": "approved",
        "currency": "USD",
        "amount": D("10.00"),
        "order_total": D("12.00"),
        "refunds": {"r1": D("2.00"), "r2": D("3.50")},
        "occurred_at": datetime(2026, 11, 24, tzinfo=UTC),
    }
    fields.update(changes)
    return OrderEvent(**fields)  # type: ignore[arg-type]


def test_order_event_is_frozen_all_the_way_down() -> None:
    refunds = {"r1": D("2.00")}
    e = event(refunds=refunds)
    refunds["r2"] = D("1.00")  # the caller's dict is copied
    assert dict(e.refunds) == {"r1": D("2.00")}
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.status = "refunded"  # type: ignore[misc]
    with pytest.raises(TypeError):
        e.refunds["r3"] = D("1.00")  # type: ignore[index]


def test_order_event_equality_and_refunded_total() -> None:
    assert event() == event(refunds={"r2": D("3.50"), "r1": D("2.00")})
    assert event().refunded_total == D("5.50")
    assert event(refunds={}).refunded_total == D("0")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"platform": "magento"}, "platform"),
        ({"status": "paid"}, "status"),
        ({"occurred_at": datetime(2026, 11, 24)}, "timezone-aware"),
        ({"refunds": {"r1": D("-1.00")}}, "negative"),
    ],
)
def test_order_event_refuses_what_no_connector_may_produce(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        event(**changes)


def test_status_may_be_unknown() -> None:
    assert event(status=None).status is None


# --- when the platform last changed the order, and the customer's email (hashed by the recorder) --------


@pytest.mark.parametrize(
    ("platform", "name", "topic", "updated", "email"),
    [
        ("shopify", "orders_create_usd.json", "orders/create", "2026-11-24T19:03:13+00:00", "mia.rossi@example.com"),
        ("woocommerce", "order_created_processing_usd.json", "order.created", "2026-11-24T19:28:08+00:00",
         "noah.keller@example.com"),
        ("stripe", "invoice_paid_subscription_cycle.json", None, None, "ava.brooks@example.com"),
        ("stripe", "charge_refunded_partial_usd.json", None, None, "lucas.meyer@example.com"),
    ],
)
def test_updated_at_and_email(platform: str, name: str, topic: str | None, updated: str | None, email: str) -> None:
    from datetime import datetime

    from tests.conversions.connectors.samples import data, raw
    from tracker.conversions.connectors import shopify, stripe_, woocommerce

    payload = raw(platform, name)
    if platform == "shopify":
        event = shopify.parse(topic, payload)
    elif platform == "woocommerce":
        event = woocommerce.parse(topic, payload)
    else:
        event = stripe_.parse(payload)
        updated = datetime.fromtimestamp(data(platform, name)["created"], UTC).isoformat()
    assert event is not None
    assert event.updated_at == datetime.fromisoformat(str(updated))
    assert event.customer_email == email
