"""Shopify webhooks → OrderEvent, on payloads shaped like Shopify's own samples."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from tests.conversions.connectors.samples import b64_hmac, body, data, raw
from tracker.conversions.connectors import OrderEvent, RefundShare, refund_share, shopify
from tracker.core.errors import BadRequest, Unauthorized, Unprocessable

D = Decimal
SECRET = "c4e1b0f9a7d3e2f1c0b9a8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7"

USD_ORDER = OrderEvent(
    platform="shopify",
    country="US",
    order_id="5822061346982",
    status="approved",
    currency="USD",
    amount=D("127.80"),  # 142.00 of line items - 14.20 (ANNA10, 10 %); shipping 9.90 and tax 10.23 out
    order_total=D("147.93"),
    refunds={},
    click_id="Ab3dEf6hJk9mNp2Q",  # the cart attribute wins over the landing URL's
    coupon_code="ANNA10",
    customer_id="7391048213670",
    occurred_at=datetime(2026, 11, 24, 19, 3, 10, tzinfo=UTC),
)

EXPECTED: list[tuple[str, str, OrderEvent | None, RefundShare]] = [
    ("orders_create_usd.json", "orders/create", USD_ORDER, RefundShare(False, D("0.00"))),
    (
        "orders_paid_jpy_taxes_included.json",
        "orders/paid",
        OrderEvent(
            platform="shopify",
            country="JP",
            order_id="5931700486401",
            status="approved",
            currency="JPY",
            # Taxes included: 18900 subtotal (after SAKURA500) less the line items' tax 1118 + 600.
            amount=D("17182"),
            order_total=D("19700"),
            refunds={},
            click_id="Jp8Hk2LmQ4rS6tUv",  # no cart attribute: from landing_site
            coupon_code="SAKURA500",
            customer_id="8102265192449",
            occurred_at=datetime(2026, 11, 25, 1, 15, 41, tzinfo=UTC),
        ),
        RefundShare(False, D("0")),
    ),
    (
        "orders_updated_partial_refund_eur.json",
        "orders/updated",
        OrderEvent(
            platform="shopify",
            order_id="5940013187226",
            status="approved",  # partially_refunded
            currency="EUR",  # presentment: the shop books USD, the customer paid EUR
            amount=D("75.00"),  # 90.00 VAT included, less 15.00 VAT on the line
            order_total=D("96.00"),
            refunds={"1014418981094": D("30.00")},  # the failed attempt is not money back
            click_id="Fr5Gt7Hy9Ju2Ki4L",
            coupon_code=None,
            customer_id=None,  # guest checkout
            occurred_at=datetime(2026, 11, 20, 17, 42, 4, tzinfo=UTC),
        ),
        RefundShare(False, D("23.44")),  # 30/96 of 75.00 = 23.4375
    ),
    (
        "refunds_create_usd.json",
        "refunds/create",
        OrderEvent(
            platform="shopify",
            order_id="5822061346982",
            status=None,
            currency="USD",
            amount=None,
            order_total=None,
            refunds={"1015022534822": D("23.33")},
        ),
        RefundShare(False, None),  # against the order's figures once merged (below)
    ),
    (
        "orders_cancelled_kwd_voided.json",
        "orders/cancelled",
        OrderEvent(
            platform="shopify",
            order_id="5955102228651",
            status="rejected",  # cancelled before any money was taken
            currency="KWD",
            amount=D("17.812"),
            order_total=D("19.312"),
            refunds={},
            click_id=None,
            coupon_code="NOUR5",
            customer_id="8120457396395",
            occurred_at=datetime(2026, 11, 25, 19, 4, 50, tzinfo=UTC),
        ),
        RefundShare(False, D("0.000")),
    ),
    (
        "orders_cancelled_usd_refunded.json",
        "orders/cancelled",
        OrderEvent(
            platform="shopify",
            order_id="5822061346982",
            status="refunded",  # cancelled after payment: the money went back
            currency="USD",
            amount=D("127.80"),
            order_total=D("147.93"),
            refunds={"1015022534822": D("23.33"), "1015130456230": D("124.60")},
            click_id="Ab3dEf6hJk9mNp2Q",
            coupon_code="ANNA10",
            customer_id="7391048213670",
            occurred_at=datetime(2026, 11, 24, 19, 3, 10, tzinfo=UTC),
        ),
        RefundShare(True, D("127.80")),
    ),
]


@pytest.mark.parametrize(("name", "topic", "expected", "refunded"), EXPECTED, ids=[row[0] for row in EXPECTED])
def test_fixture(name: str, topic: str, expected: OrderEvent, refunded: RefundShare) -> None:
    payload = raw("shopify", name)
    shopify.verify(payload, b64_hmac(SECRET, payload), SECRET)
    event = shopify.parse(topic, payload)
    assert event is not None and replace(event, updated_at=None, customer_email=None) == expected
    assert event is not None
    assert refund_share(event.amount, event.order_total, event.refunds, event.currency) == refunded


def test_refund_merged_into_its_order() -> None:
    # refunds/create carries only its refund; merged with the order's figures it is a share.
    order = shopify.parse("orders/create", raw("shopify", "orders_create_usd.json"))
    refund = shopify.parse("refunds/create", raw("shopify", "refunds_create_usd.json"))
    assert order is not None and refund is not None
    merged = {**order.refunds, **refund.refunds}
    assert refund_share(order.amount, order.order_total, merged, order.currency) == RefundShare(False, D("20.16"))
    # A re-delivery merges to the same map: nothing is counted twice.
    assert {**merged, **refund.refunds} == merged


@pytest.mark.parametrize("topic", [None, "", "orders/delete", "products/update", "app/uninstalled", "ORDERS/CREATE"])
def test_other_topics_are_ignored_without_reading_the_body(topic: str | None) -> None:
    assert shopify.parse(topic, b"not even json") is None


def test_good_signature_on_every_fixture_and_bad_ones_refused() -> None:
    payload = raw("shopify", "orders_create_usd.json")
    shopify.verify(payload, b64_hmac(SECRET, payload), SECRET)
    for header in (
        None, "", b64_hmac("another-store", payload), b64_hmac(SECRET, payload + b"\n"), b64_hmac(SECRET, payload)[1:]
    ):
        with pytest.raises(Unauthorized) as caught:
            shopify.verify(payload, header, SECRET)
        assert caught.value.status == 401
        assert "X-Shopify-Hmac-Sha256" in caught.value.message


def test_landing_site_with_the_campaigns_own_parameter() -> None:
    order = data("shopify", "orders_create_usd.json")
    order["note_attributes"] = [{"name": "gift_wrap", "value": "no"}]
    order["landing_site"] = "/products/linen-shirt?ref=ig&cid=Zz9Yy8Xx7Ww6Vv5U&click_id=not-this-one"
    event = shopify.parse("orders/create", body(order), click_id_param="cid")
    assert event is not None and event.click_id == "Zz9Yy8Xx7Ww6Vv5U"
    assert shopify.parse("orders/create", body(order)) == shopify.parse(
        "orders/create", body(order), click_id_param="click_id"
    )


@pytest.mark.parametrize(
    ("attributes", "landing_site", "expected"),
    [
        ([{"name": "click_id", "value": "Ab3dEf6hJk9mNp2Q"}], "/?click_id=Other", "Ab3dEf6hJk9mNp2Q"),
        ([{"name": "click_id", "value": ""}], "/?click_id=FromUrl1", "FromUrl1"),
        ([{"name": "click_id", "value": 5}], "/?click_id=FromUrl2", "FromUrl2"),  # garbled: not an error
        ([{"name": "Click_Id", "value": "NotOurs"}], None, None),
        ([], "https://shop.example.com/?click_id=Full%20Url", "Full Url"),
        ([], "/?utm_source=ig", None),
        ([], "http://[broken", None),
        ([], "/?click_id=" + "x" * 300, None),  # too long to be ours: dropped, the order still counts
        (None, None, None),
    ],
)
def test_click_id_sources(attributes: Any, landing_site: str | None, expected: str | None) -> None:
    order = data("shopify", "orders_create_usd.json")
    order["note_attributes"] = attributes
    order["landing_site"] = landing_site
    event = shopify.parse("orders/create", body(order))
    assert event is not None and event.click_id == expected


@pytest.mark.parametrize(
    ("financial_status", "cancelled", "status"),
    [
        ("paid", False, "approved"),
        ("partially_refunded", False, "approved"),
        ("refunded", False, "refunded"),
        ("pending", False, "pending"),
        ("authorized", False, "pending"),
        ("partially_paid", False, "pending"),
        ("voided", False, "rejected"),
        ("expired", False, "rejected"),
        ("paid", True, "refunded"),
        ("partially_paid", True, "refunded"),
        ("refunded", True, "refunded"),
        ("pending", True, "rejected"),
        ("authorized", True, "rejected"),
        ("voided", True, "rejected"),
    ],
)
def test_status_mapping(financial_status: str, cancelled: bool, status: str) -> None:
    order = data("shopify", "orders_create_usd.json")
    order["financial_status"] = financial_status
    order["cancelled_at"] = "2026-11-25T09:00:00-05:00" if cancelled else None
    event = shopify.parse("orders/updated", body(order))
    assert event is not None and event.status == status


def test_a_refund_with_no_money_moved_is_ignored() -> None:
    refund = data("shopify", "refunds_create_usd.json")
    refund["transactions"][0]["status"] = "pending"
    assert shopify.parse("refunds/create", body(refund)) is None
    refund["transactions"] = []
    assert shopify.parse("refunds/create", body(refund)) is None


def mutated(*changes: tuple[str, Any]) -> bytes:
    """The USD order with fields set (``("a.b.0.c", value)``); a value of ``...`` deletes the field."""
    order = data("shopify", "orders_create_usd.json")
    for path, value in changes:
        *parents, last = path.split(".")
        target: Any = order
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if value is ...:
            del target[last]
        else:
            target[int(last) if isinstance(target, list) else last] = value
    return body(order)


REFUND_IN_CAD = [{"id": 1, "transactions": [{"kind": "refund", "status": "success", "currency": "CAD", "amount": "1"}]}]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (mutated(("id", ...)), "Shopify orders/paid: id must be an id (a string or an integer), not null."),
        (mutated(("id", [1])), "id must be an id (a string or an integer), not an array"),
        (mutated(("currency", "ZZZ")), "currency must be an ISO 4217 currency this server knows, got 'ZZZ'"),
        (mutated(("financial_status", ...)), "financial_status must be a non-empty string, not null"),
        (mutated(("financial_status", "settled")), "financial_status must be one of paid,"),
        (mutated(("subtotal_price_set.presentment_money.amount", "12,80")), "subtotal_price_set.presentment_money"),
        (
            mutated(("presentment_currency", "EUR"), ("subtotal_price_set", ...)),
            "subtotal_price_set must be present when the order is paid in EUR, not USD",
        ),
        (
            mutated(("presentment_currency", "EUR")),
            "subtotal_price_set.presentment_money.currency_code must be EUR, the order's presentment currency",
        ),
        (mutated(("total_price_set", "147.93")), "total_price_set must be an object, not a string"),
        (mutated(("taxes_included", True), ("line_items", {"id": 1})), "line_items must be an array, not an object"),
        (mutated(("taxes_included", "yes")), "taxes_included must be true or false, not a string"),
        (mutated(("refunds", [{"id": 1, "transactions": "none"}])), "refunds[0].transactions must be an array"),
        (mutated(("refunds", [{"transactions": []}])), "refunds[0].id must be an id"),
        (mutated(("refunds", REFUND_IN_CAD)), "refunds[0].transactions[0].currency must be USD, the order's"),
        (mutated(("customer", "7391048213670")), "customer must be an object, not a string"),
        (mutated(("processed_at", "24/11/2026")), "processed_at must be an ISO 8601 time"),
    ],
)
def test_malformed_payloads_name_the_field(payload: bytes, message: str) -> None:
    with pytest.raises(Unprocessable, match=re.escape(message)) as caught:
        shopify.parse("orders/paid", payload)
    assert caught.value.status == 422
    assert caught.value.code == "invalid_payload"


@pytest.mark.parametrize("payload", [b"", b"{", b"[]", b'{"id": NaN}', b"\x00\x01"])
def test_malformed_json_is_a_bad_request(payload: bytes) -> None:
    with pytest.raises(BadRequest, match="Shopify webhook body") as caught:
        shopify.parse("orders/create", payload)
    assert caught.value.status == 400
