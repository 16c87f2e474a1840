"""WooCommerce webhooks → OrderEvent, on payloads shaped like the REST API's orders."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from tests.conversions.connectors.samples import b64_hmac, body, data, raw
from tracker.conversions.connectors import OrderEvent, RefundShare, refund_share, woocommerce
from tracker.core.errors import BadRequest, Unauthorized, Unprocessable

D = Decimal
SECRET = "wc_9X]p&Qm2;vL7@rT4"  # WooCommerce secrets are free text

KWD_ORDER = OrderEvent(
    platform="woocommerce",
    country="KW",
    order_id="5310",
    status="pending",  # on-hold: waiting for the bank transfer
    currency="KWD",
    amount=D("22.050"),  # 24.050 - 0.000 tax - 2.000 shipping
    order_total=D("24.050"),
    refunds={},
    click_id="Kw1Qa3Ws5Ed7Rf9T",
    coupon_code="ramadan10",
    customer_id="341",
    occurred_at=datetime(2026, 11, 27, 18, 40, 13, tzinfo=UTC),
)

EXPECTED: list[tuple[str, str, OrderEvent, RefundShare]] = [
    (
        "order_created_processing_usd.json",
        "order.created",
        OrderEvent(
            platform="woocommerce",
            country="US",
            order_id="4127",
            status="approved",  # processing: paid
            currency="USD",
            amount=D("51.00"),  # 65.58 - 4.58 tax - 10.00 shipping (after the mia15 coupon)
            order_total=D("65.58"),
            refunds={},
            click_id="Wc4Rt6Yh8Uj1Ik3O",
            coupon_code="mia15",
            customer_id="26",
            occurred_at=datetime(2026, 11, 24, 19, 28, 2, tzinfo=UTC),
        ),
        RefundShare(False, D("0.00")),
    ),
    (
        "order_updated_partial_refund_gbp.json",
        "order.updated",
        OrderEvent(
            platform="woocommerce",
            country="GB",
            order_id="4133",
            status="approved",  # completed, partly refunded
            currency="GBP",
            amount=D("41.67"),  # 54.96 - 9.16 VAT - 4.13 shipping
            order_total=D("54.96"),
            refunds={"4140": D("25.00")},
            click_id="Gb2Nm4Kl6Jh8Gf0D",  # from the hidden _trk_click_id meta
            coupon_code=None,
            customer_id=None,  # a guest: customer_id 0
            occurred_at=datetime(2026, 11, 21, 9, 2, 44, tzinfo=UTC),
        ),
        RefundShare(False, D("18.95")),  # 25.00/54.96 of 41.67 = 18.954...
    ),
    (
        "order_updated_refunded_jpy.json",
        "order.updated",
        OrderEvent(
            platform="woocommerce",
            country="JP",
            order_id="8802",
            status="refunded",
            currency="JPY",
            amount=D("8000"),
            order_total=D("8800"),
            refunds={"8810": D("8800")},
            click_id="Jp0Ok9Ij8Uh7Yg6T",
            coupon_code=None,
            customer_id="112",
            occurred_at=datetime(2026, 11, 22, 11, 11, 5, tzinfo=UTC),
        ),
        RefundShare(True, D("8000")),
    ),
    ("order_created_on_hold_kwd.json", "order.created", KWD_ORDER, RefundShare(False, D("0.000"))),
    (
        "order_updated_cancelled_kwd.json",
        "order.updated",
        dataclasses.replace(KWD_ORDER, status="rejected"),  # cancelled, never paid
        RefundShare(False, D("0.000")),
    ),
]


@pytest.mark.parametrize(("name", "topic", "expected", "refunded"), EXPECTED, ids=[row[0] for row in EXPECTED])
def test_fixture(name: str, topic: str, expected: OrderEvent, refunded: RefundShare) -> None:
    payload = raw("woocommerce", name)
    woocommerce.verify(payload, b64_hmac(SECRET, payload), SECRET)
    assert not woocommerce.is_ping(payload)
    event = woocommerce.parse(topic, payload)
    assert event is not None and replace(event, updated_at=None, customer_email=None) == expected
    assert event is not None
    assert refund_share(event.amount, event.order_total, event.refunds, event.currency) == refunded


def test_the_creation_ping() -> None:
    ping = raw("woocommerce", "ping.txt")
    assert ping == b"webhook_id=17"
    assert woocommerce.is_ping(ping)
    assert woocommerce.is_ping(b"webhook_id=123456\n")
    for other in (b"", b"webhook_id=", b"webhook_id=12&x=1", b"webhook_id=abc", b'{"webhook_id":17}', b"id=17"):
        assert not woocommerce.is_ping(other)


def test_signatures() -> None:
    payload = raw("woocommerce", "order_created_processing_usd.json")
    woocommerce.verify(payload, b64_hmac(SECRET, payload), SECRET)
    for header in (None, "", b64_hmac("another-store", payload), b64_hmac(SECRET, payload.replace(b"65.58", b"99.99"))):
        with pytest.raises(Unauthorized, match="X-WC-Webhook-Signature") as caught:
            woocommerce.verify(payload, header, SECRET)
        assert caught.value.status == 401


@pytest.mark.parametrize(
    "topic", [None, "", "order.deleted", "order.restored", "product.updated", "action.woocommerce_add_to_cart"]
)
def test_other_topics_are_ignored_without_reading_the_body(topic: str | None) -> None:
    assert woocommerce.parse(topic, b"webhook_id=17") is None


@pytest.mark.parametrize(
    ("woo_status", "paid", "status"),
    [
        ("pending", False, "pending"),
        ("on-hold", False, "pending"),
        ("processing", True, "approved"),
        ("completed", True, "approved"),
        ("failed", False, "rejected"),
        ("refunded", True, "refunded"),
        ("cancelled", False, "rejected"),
        ("cancelled", True, "refunded"),  # cancelled after payment: a paid conversion can only be refunded
        ("checkout-draft", False, None),  # not placed yet
        ("trash", True, None),
        ("shipped", True, None),  # a plugin's own status: ignored until a known one arrives
    ],
)
def test_status_mapping(woo_status: str, paid: bool, status: str | None) -> None:
    order = data("woocommerce", "order_created_processing_usd.json")
    order["status"] = woo_status
    order["date_paid_gmt"] = "2026-11-24T19:28:08" if paid else None
    event = woocommerce.parse("order.updated", body(order))
    assert (event.status if event else None) == status


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        ([{"id": 1, "key": "trk_click_id", "value": "A1b2C3d4"}], "A1b2C3d4"),
        ([{"id": 1, "key": "_trk_click_id", "value": "A1b2C3d4"}], "A1b2C3d4"),
        ([{"id": 1, "key": "trk_click_id", "value": ""}, {"id": 2, "key": "_trk_click_id", "value": "Z9"}], "Z9"),
        ([{"id": 1, "key": "trk_click_id", "value": {"nested": "x"}}], None),  # garbled: not an error
        ([{"id": 1, "key": "click_id", "value": "NotOurKey"}], None),
        ([], None),
        (None, None),
    ],
)
def test_click_id_from_order_meta(meta: Any, expected: str | None) -> None:
    order = data("woocommerce", "order_created_processing_usd.json")
    order["meta_data"] = meta
    event = woocommerce.parse("order.created", body(order))
    assert event is not None and event.click_id == expected


def test_numbers_as_json_numbers_are_read_exactly() -> None:
    # Plugins that rewrite the payload sometimes send numbers, not strings: Decimal, never float.
    payload = raw("woocommerce", "order_created_processing_usd.json")
    payload = payload.replace(b'"total": "65.58"', b'"total": 65.58')
    payload = payload.replace(b'"total_tax": "4.58"', b'"total_tax": 4.58')
    event = woocommerce.parse("order.created", payload)
    assert event is not None and (event.amount, event.order_total) == (D("51.00"), D("65.58"))


def changed(**fields: Any) -> bytes:
    order = data("woocommerce", "order_created_processing_usd.json")
    for key, value in fields.items():
        if value is ...:
            del order[key]
        else:
            order[key] = value
    return body(order)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (changed(id=...), "WooCommerce order.created: id must be an id (a string or an integer), not null."),
        (changed(status=1), "status must be a string, not a number"),
        (changed(currency="dollars"), "currency must be an ISO 4217 currency this server knows, got 'dollars'"),
        (changed(total=...), 'total must be a decimal amount such as "49.90", not null'),
        (changed(total="sixty"), 'total must be a decimal amount such as "49.90", not a string'),
        (changed(total_tax=False), "total_tax must be a decimal amount"),
        (changed(shipping_total="-1.00"), "shipping_total must be an amount of 0 or more"),
        (changed(refunds=[{"id": 7, "total": "ten"}]), "refunds[0].total must be a decimal amount"),
        (changed(refunds=[{"total": "-1.00"}]), "refunds[0].id must be an id"),
        (changed(refunds="none"), "refunds must be an array, not a string"),
        (changed(meta_data=[3]), "meta_data[0] must be an object, not a number"),
        (changed(coupon_lines=[{"code": 10}]), "coupon_lines[0].code must be a string, not a number"),
        (changed(customer_id="26 "), "customer_id must be an id of at most 128 printable characters"),
        (changed(date_created_gmt="yesterday"), "date_created_gmt must be an ISO 8601 time"),
    ],
)
def test_malformed_payloads_name_the_field(payload: bytes, message: str) -> None:
    with pytest.raises(Unprocessable, match=re.escape(message)) as caught:
        woocommerce.parse("order.created", payload)
    assert caught.value.status == 422


@pytest.mark.parametrize("payload", [b"webhook_id=17", b"", b"{", b"[{}]", b'{"id": Infinity}'])
def test_malformed_json_is_a_bad_request(payload: bytes) -> None:
    with pytest.raises(BadRequest, match="WooCommerce webhook body") as caught:
        woocommerce.parse("order.updated", payload)
    assert caught.value.status == 400
