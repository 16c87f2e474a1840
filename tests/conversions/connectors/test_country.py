"""The order's country from each platform's payload: shipping address first, then billing; a missing or
malformed one is no country (never a refused order)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conversions.connectors.samples import data
from tracker.conversions.connectors import shopify, stripe_, woocommerce


def _shopify(**fields: Any) -> str | None:
    order: dict[str, Any] = data("shopify", "orders_create_usd.json")
    order.update(fields)
    event = shopify.parse("orders/create", json.dumps(order).encode())
    assert event is not None
    return event.country


def _woo(**fields: Any) -> str | None:
    order: dict[str, Any] = data("woocommerce", "order_created_processing_usd.json")
    order.update(fields)
    event = woocommerce.parse("order.created", json.dumps(order).encode())
    assert event is not None
    return event.country


def _stripe(name: str, **fields: Any) -> str | None:
    envelope: dict[str, Any] = data("stripe", name)
    envelope["data"]["object"].update(fields)
    event = stripe_.parse(json.dumps(envelope).encode())
    assert event is not None
    return event.country


def test_shopify_shipping_address_then_billing() -> None:
    assert _shopify() == "US"  # the fixture ships to the US, bills to Canada
    assert _shopify(shipping_address=None) == "CA"
    assert _shopify(shipping_address={"country_code": ""}) == "CA"
    assert _shopify(shipping_address=None, billing_address=None) is None
    assert _shopify(shipping_address={"country_code": "gb"}) == "GB"


def test_woocommerce_shipping_then_billing() -> None:
    assert _woo() == "US"
    assert _woo(shipping={"country": "IE"}, billing={"country": "US"}) == "IE"
    assert _woo(shipping={"country": ""}) == "US"  # a virtual product: no shipping address
    assert _woo(shipping=None, billing={"country": ""}) is None


def test_stripe_session_invoice_and_charge() -> None:
    assert _stripe("checkout_session_completed_usd.json") == "US"  # customer_details.address.country
    assert _stripe("checkout_session_completed_usd.json", shipping_details={"address": {"country": "FR"}}) == "FR"
    assert _stripe("checkout_session_completed_usd.json", customer_details=None) is None
    assert _stripe("invoice_paid_kwd.json") == "KW"  # customer_address.country
    assert _stripe("invoice_paid_kwd.json", customer_shipping={"address": {"country": "BH"}}) == "BH"
    assert _stripe("invoice_paid_subscription_cycle.json") is None  # no customer address in that sample
    assert _stripe("charge_refunded_partial_usd.json", billing_details={"address": {"country": "NL"}}) == "NL"


@pytest.mark.parametrize("value", ["USA", "U", "1A", 12, ["US"], {"code": "US"}, "Ü1", "  "])
def test_a_malformed_country_is_none_and_the_order_still_counts(value: Any) -> None:
    assert _shopify(shipping_address={"country_code": value}, billing_address=None) is None
    assert _woo(shipping={"country": value}, billing={"country": value}) is None
    assert _stripe("checkout_session_completed_usd.json", customer_details={"address": {"country": value}}) is None
