"""Event bodies, ids and signatures, checked against the ``standardwebhooks`` package."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from standardwebhooks.webhooks import Webhook

from tracker.core.events import CONVERSION_COLUMNS, encode_conversion
from tracker.webhooks import events
from tracker.webhooks.endpoints import secret_text
from tracker.webhooks.sender import signature


def row(version: int, status: str = "approved") -> bytes:
    now = datetime(2026, 12, 4, 10, 0, 0, 123000, tzinfo=UTC)
    values = {c: "" for c in CONVERSION_COLUMNS}
    values.update(brand_id="brd_1", order_id="O1", version=version, conversion_id="cnv_1", status=status,
                  currency="USD", amount=Decimal("100.00"), refunded_amount=Decimal("0.00"),
                  commission=Decimal("10.00"),
                  original_currency="USD", original_amount=Decimal("100.00"), original_refunded_amount=Decimal("0.00"),
                  fx_rate=Decimal(1), attributed=1, attribution="click", link_id=7, link_code="Y3kK3M",
                  click_id="secret-click", occurred_at=now, created_at=now, updated_at=now)
    return encode_conversion(values)


@pytest.mark.parametrize(("version", "kind"), [(1, "conversion.created"), (2, "conversion.updated"),
                                               (9, "conversion.updated")])
def test_conversion_events(version: int, kind: str) -> None:
    e = events.from_conversion(row(version))
    assert e.type == kind and e.object_id == "cnv_1" and e.brand_id == "brd_1"
    assert e.id == events.from_conversion(row(version)).id  # the same fact, the same id
    assert e.id.startswith("msg_") and "." not in e.id
    body = json.loads(e.body)
    assert body["type"] == kind and body["timestamp"] == "2026-12-04T10:00:00.123Z"
    data = body["data"]
    assert data["amount"] == "100.00" and data["attributed"] is True and data["version"] == version
    assert data["coupon_code"] is None and "click_id" not in data and "link_id" not in data


def test_versions_have_distinct_ids() -> None:
    assert len({events.from_conversion(row(v)).id for v in (1, 2, 3)}) == 3


def test_other_events_need_a_known_type() -> None:
    with pytest.raises(ValueError, match="not a webhook event type"):
        events.of("brd_1", "payout.exploded", "pay_1", {})
    a = events.of("brd_1", "payout.paid", "pay_1", {"id": "pay_1"})
    assert a.id == events.of("brd_1", "payout.paid", "pay_1", {"id": "pay_1", "x": 1}).id
    assert a.id != events.of("brd_1", "payout.created", "pay_1", {}).id


@pytest.mark.parametrize("size", [24, 32])
def test_signature_verifies_with_standardwebhooks(size: int) -> None:
    secret = bytes(range(size))
    text = secret_text(secret)
    assert text.startswith("whsec_") and base64.b64decode(text[6:]) == secret
    e = events.from_conversion(row(1))
    stamp = int(time.time())
    headers = {"webhook-id": e.id, "webhook-timestamp": str(stamp), "webhook-signature": signature(secret, e.id, stamp,
                                                                                                   e.body)}
    assert Webhook(text).verify(e.body, headers)["type"] == "conversion.created"
    assert signature(secret, e.id, stamp, e.body) == Webhook(text).sign(e.id, datetime.fromtimestamp(stamp, UTC),
                                                                          e.body)


def _status(version: int = 1, paid: bool = False, **fields: object) -> object:
    raw = json.loads(row(version))
    raw.update(fields)
    return json.loads(events.from_conversion(json.dumps(raw), paid).body)["data"]["commission_status"]


@pytest.mark.parametrize(("fields", "paid", "expected"), [
    ({}, False, "payable"),  # approved, occurred at updated_at, hold 0 days: over at once
    ({"hold_days": 30}, False, "pending"),
    ({"hold_days": ""}, False, "pending"),  # a row from before hold_days: the default 30
    ({"status": "pending"}, False, "pending"),
    ({"status": "rejected"}, False, "void"),
    ({"status": "refunded"}, False, "void"),
    ({"review": 1}, False, "review"),
    ({"review": 2}, False, "void"),
    ({"status": "refunded"}, True, "paid"),  # a refund after payment: a clawback, the commission stays paid
    ({"attributed": 0}, False, None),
])
def test_conversion_events_carry_the_commission_status_as_of_the_version(
    fields: dict[str, object], paid: bool, expected: str | None
) -> None:
    assert _status(2, paid, **{"hold_days": 0, **fields}) == expected
