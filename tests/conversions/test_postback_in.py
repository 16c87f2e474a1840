"""``postback_in`` (the signed route's body parser) answers as ``PostbackIn``'s validation does.

The same postback (values, field order, fields set) or the same first error (class, status, code,
message), on generated bodies and on the cases tests/conversions/test_parse.py pins for the model.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from tracker.api.schema import validate
from tracker.conversions.parse import MAX_CLICK_ID, MAX_ORDER_ID, PostbackIn, postback_in
from tracker.core.errors import TrackerError

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC).timestamp()
FIELDS = ("order_id", "status", "currency", "amount", "click_id", "coupon_code", "occurred_at", "customer_id",
          "customer_email", "country")


def outcome(parse: Any, data: dict[str, Any]) -> tuple[Any, ...]:
    try:
        pb = parse(data)
    except TrackerError as exc:
        return ("error", type(exc), exc.status, exc.code, exc.message)
    except Exception as exc:  # what escapes the checks (a 500) must escape both alike
        return ("exception", type(exc), str(exc))
    return ("postback", type(pb), list(pb.__dict__.items()), pb.model_fields_set, pb.__pydantic_extra__,
            pb.__pydantic_private__)


def assert_same(data: dict[str, Any]) -> tuple[Any, ...]:
    by_model = outcome(lambda d: validate(PostbackIn, d, {"now": NOW}), dict(data))
    assert outcome(lambda d: postback_in(d, NOW), dict(data)) == by_model
    return by_model


# Values of every kind a JSON body gives (and a Decimal, as parse_json reads JSON numbers), good and bad.
VALUES: tuple[Any, ...] = (
    None, "", " ", "x", " x", "A\u00a01", "tab\t", "c" * MAX_CLICK_ID, "c" * (MAX_CLICK_ID + 1), "o" * MAX_ORDER_ID,
    "o" * (MAX_ORDER_ID + 1), "C" * 65, True, False, 0, 7, -3, 10**20, 1764072000, Decimal("1.5"),
    Decimal("1764072000.5"), 1.5, float("nan"), [1], {"a": 1},
    "pending", "approved", "rejected", "refunded", "Approved", "paid",
    "USD", " usd ", "JPY", "KWD", "US", "XYZ",
    "49.90", "49.9", "0", "-1", "1.125", "1.0001", "1e3", "10000000000000", " 5", "NaN",
    "2026-01-02T03:04:05Z", "2026-11-25T12:00", "1999-12-31T23:59:59Z", "2030-01-01T00:00:00Z", "1764072000",
    "946684799", "not a time", "0001-01-01T00:00:00+01:00", "\u00b2",
    "a@b.example", " A@B.example ", "no-at", "a b@c", "x@" + "y" * 330,
    "us", " FR ", "USA", "1A", "\u00e91",
)


# Values each field takes, mostly: enough bodies are accepted to compare postbacks too.
FITTING: dict[str, tuple[Any, ...]] = {
    "order_id": ("B-1", "A" * MAX_ORDER_ID), "status": ("pending", "approved", "refunded", None, ""),
    "currency": ("USD", " usd ", "JPY", "KWD"), "amount": ("49.90", "49.9", "1005", "1.125", ""),
    "click_id": ("c-1", "", None), "coupon_code": ("BOB5", ""), "customer_id": ("cu-1", None),
    "occurred_at": ("2026-01-02T03:04:05.123456Z", "1764072000", 1764072000, Decimal("1764072000.5"), ""),
    "customer_email": ("a@b.example", " A@B.example ", " "), "country": ("us", " FR ", ""), "extra": (1,),
}


def generated(seed: int, count: int, *, with_order_id: bool) -> list[dict[str, Any]]:
    """Bodies of up to 7 fields (an unknown one now and then), values mostly fitting, else any of VALUES."""
    rng = random.Random(seed)
    names = (*FIELDS, "extra") if not with_order_id else FIELDS[1:]
    bodies = []
    for _ in range(count):
        body = {name: rng.choice(FITTING[name] if rng.random() < 0.85 else VALUES)
                for name in rng.sample(names, rng.randint(0, 7))}
        if with_order_id:
            body = {"order_id": rng.choice(("B-1", "A" * MAX_ORDER_ID)), **body}
        bodies.append(body)
    return bodies


def test_generated_bodies() -> None:
    answers = [assert_same(data)[0] for data in generated(14, 3000, with_order_id=False)]
    assert {"postback", "error"} <= set(answers)  # both kinds of outcome were compared


def test_generated_bodies_with_an_order_id() -> None:
    answers = [assert_same(data)[0] for data in generated(15, 3000, with_order_id=True)]
    assert answers.count("postback") > 100


OK = {"order_id": "A-1", "amount": "49.90", "currency": "USD"}


@pytest.mark.parametrize(
    "data",
    [
        OK, {**OK, "status": None}, {"order_id": "A-1", "status": "refunded"}, {**OK, "currency": " usd "},
        {**OK, "click_id": "", "coupon_code": None, "occurred_at": "", "customer_email": " ", "country": ""},
        {**OK, "occurred_at": "2026-01-02T03:04:05.123456Z", "customer_id": "c-1", "customer_email": "A@B.example",
         "country": " us ", "coupon_code": "BOB5", "click_id": "c" * MAX_CLICK_ID, "status": "pending"},
        {**OK, "occurred_at": 1764072000}, {**OK, "occurred_at": Decimal("1764072000.5")},
        {"amount": "1.00", "currency": "USD"}, {**OK, "order_id": 17}, {**OK, "amount": Decimal("1.5")},
        {**OK, "extra": 1, "more": 2}, {"order_id": 1, "status": 1},
        {"order_id": "A", "currency": "USD", "click_id": 5},
        {**OK, "occurred_at": "0001-01-01T00:00:00+01:00"}, {**OK, "occurred_at": 10**20}, {**OK, "amount": "1.001"},
    ],
)
def test_pinned_bodies(data: dict[str, Any]) -> None:
    assert_same(data)


def test_an_accepted_body_is_the_models_postback() -> None:
    kind, cls, items, fields_set, *_ = assert_same({**OK, "click_id": "c-1"})
    assert (kind, cls) == ("postback", PostbackIn)
    assert [k for k, _ in items] == list(FIELDS) and fields_set == {"order_id", "amount", "currency", "click_id"}
    assert postback_in({**OK, "click_id": "c-1"}, NOW) == validate(PostbackIn, {**OK, "click_id": "c-1"}, {"now": NOW})
