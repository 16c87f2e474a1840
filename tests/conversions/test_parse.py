"""The postback request models, without a server: field checks, their answers, the GET aliases."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, get_args

import pytest
from starlette.datastructures import QueryParams

from tracker.api.schema import validate
from tracker.conversions.attribution import STATUSES
from tracker.conversions.parse import (
    GET_ALIASES,
    Postback,
    PostbackIn,
    PostbackQuery,
    Status,
    parse_occurred_at,
    resolve_aliases,
)
from tracker.core.errors import TrackerError

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC).timestamp()
OK = {"order_id": "A-1", "amount": "49.90", "currency": "USD"}


def body(**fields: Any) -> PostbackIn:
    return validate(PostbackIn, fields, {"now": NOW})


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (OK, {"order_id": "A-1", "amount": Decimal("49.90"), "currency": "USD", "status": "approved"}),
        ({**OK, "amount": "49.9"}, {"amount": Decimal("49.90")}),
        ({**OK, "currency": " usd "}, {"currency": "USD"}),
        ({**OK, "amount": "1005", "currency": "JPY"}, {"amount": Decimal("1005")}),
        ({**OK, "amount": "1.125", "currency": "KWD"}, {"amount": Decimal("1.125")}),
        ({**OK, "status": None}, {"status": "approved"}),
        ({**OK, "status": ""}, {"status": "approved"}),
        ({**OK, "click_id": "", "coupon_code": None, "occurred_at": ""},
         {"click_id": None, "coupon_code": None, "occurred_at": None}),
        ({"order_id": "A-1", "status": "refunded"}, {"amount": None, "currency": None}),  # the whole order
        ({"order_id": "A-1", "status": "refunded", "amount": ""}, {"amount": None}),
        ({**OK, "occurred_at": "2026-01-02T03:04:05.123456Z"},
         {"occurred_at": datetime(2026, 1, 2, 3, 4, 5, 123000, tzinfo=UTC)}),
        ({**OK, "coupon_code": "BOB5", "click_id": "c" * 256}, {"coupon_code": "BOB5", "click_id": "c" * 256}),
    ],
)
def test_good_bodies(fields: dict[str, Any], expected: dict[str, Any]) -> None:
    parsed = body(**fields)
    assert {k: getattr(parsed, k) for k in expected} == expected


@pytest.mark.parametrize(
    ("fields", "status", "code", "message"),
    [
        ({"amount": "1.00", "currency": "USD"}, 400, "invalid_field", "order_id is required."),
        ({**OK, "order_id": ""}, 400, "invalid_field", "order_id is required."),
        ({**OK, "order_id": None}, 400, "invalid_field", "order_id is required."),
        ({**OK, "order_id": 17}, 400, "invalid_field", "order_id must be a string, not int."),
        ({**OK, "order_id": " A-1"}, 400, "invalid_field", "surrounding spaces"),
        ({**OK, "order_id": "A\u00a01"}, 400, "invalid_field", "control characters"),  # not printable
        ({**OK, "click_id": ["a"]}, 400, "invalid_field", "click_id must be a string, not list."),
        ({**OK, "coupon_code": "C" * 65}, 400, "invalid_field", "coupon_code is longer than 64 characters."),
        ({**OK, "status": "Approved"}, 422, "invalid_status", "status 'Approved' is not one of"),
        ({**OK, "status": True}, 400, "invalid_field", "status must be a string, not bool."),
        ({**OK, "currency": "US"}, 422, "invalid_currency", "'US' is not an ISO 4217"),
        ({**OK, "currency": None}, 400, "invalid_field", "currency is required with an amount."),
        ({"order_id": "A-1", "currency": "USD", "status": "approved"}, 400, "invalid_field", "amount is required."),
        ({**OK, "amount": "NaN"}, 422, "invalid_amount", "not a decimal string"),
        ({**OK, "amount": Decimal("1.5")}, 422, "invalid_amount", "not a JSON number"),  # contract: strings only
        ({**OK, "amount": 7}, 422, "invalid_amount", "not a JSON number"),
        ({**OK, "amount": "10000000000000"}, 422, "invalid_amount", "too large"),
        ({**OK, "amount": 1.5}, 422, "invalid_amount", "not a JSON number"),
        ({**OK, "occurred_at": True}, 400, "invalid_field", "ISO 8601 time or unix seconds"),
        ({**OK, "occurred_at": [1]}, 400, "invalid_field", "ISO 8601 time or unix seconds"),
        ({**OK, "occurred_at": 10**20}, 422, "invalid_field", "not a valid unix time"),
        ({**OK, "extra": 1, "more": 2}, 400, "invalid_field", "Unknown field(s) extra, more; allowed: amount,"),
        # The first bad field in declaration order answers: order_id, status, currency, amount, ...
        ({"order_id": 1, "status": 1}, 400, "invalid_field", "order_id must be a string"),
        ({"order_id": "A", "status": "paid", "currency": "XYZ"}, 422, "invalid_status", "status"),
        ({"order_id": "A", "currency": "XYZ", "click_id": 5}, 422, "invalid_currency", "XYZ"),
        ({"order_id": "A", "currency": "USD", "click_id": 5}, 400, "invalid_field", "amount is required"),
        ({"order_id": "A", "status": "x", "bogus": 1}, 400, "invalid_field", "Unknown field(s) bogus"),
    ],
)
def test_bad_bodies(fields: dict[str, Any], status: int, code: str, message: str) -> None:
    with pytest.raises(TrackerError) as err:
        body(**fields)
    assert (err.value.status, err.value.code) == (status, code)
    assert message in err.value.message


NOON = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        (1_767_323_045, NOON),
        (Decimal("1767323045"), NOON),
        ("1767323045", NOON),
        (" 1767323045 ", NOON),
        ("2026-01-02T03:04:05Z", NOON),
        ("2026-01-02T04:04:05+01:00", NOON),
        ("2026-01-02T03:04:05", NOON),  # naive: UTC
        ("2026-01-02 03:04:05.999999", NOON.replace(microsecond=999_000)),  # kept to the millisecond
        (NOW + 299, datetime.fromtimestamp(int(NOW + 299), UTC)),  # inside the clock skew
    ],
)
def test_occurred_at_forms(value: Any, expected: datetime | None) -> None:
    if isinstance(value, float):
        value = int(value)
    assert parse_occurred_at(value, NOW) == expected


@pytest.mark.parametrize(
    ("value", "status", "message"),
    [
        (int(NOW) + 301, 422, "in the future"),
        ("2999-01-01T00:00:00Z", 422, "in the future"),
        ("1999-12-31T23:59:59Z", 422, "before 2000"),
        (0, 422, "before 2000"),
        ("yesterday", 422, "ISO 8601"),
        (False, 400, "unix seconds"),
        (1.5, 400, "unix seconds"),
    ],
)
def test_occurred_at_refused(value: Any, status: int, message: str) -> None:
    with pytest.raises(TrackerError) as err:
        parse_occurred_at(value, NOW)
    assert err.value.status == status and message in err.value.message


def test_status_type_is_the_status_list() -> None:
    assert get_args(Status) == STATUSES


# --- GET /postback ------------------------------------------------------------------------------


def query(text: str) -> PostbackQuery:
    return validate(PostbackQuery, QueryParams(text), {"now": NOW})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("order_id=G&amount=2.00&currency=USD", {"order_id": "G", "amount": Decimal("2.00")}),
        ("txid=G&payout=2&currency=usd", {"order_id": "G", "amount": Decimal("2.00"), "currency": "USD"}),
        ("transaction=G&sale_amount=2&currency=USD", {"order_id": "G"}),
        ("order_id=G&amount=2&currency=USD&clickid=c1", {"click_id": "c1"}),
        ("order_id=G&amount=2&currency=USD&cid=c1&subid=c1&transaction_id=c1", {"click_id": "c1"}),
        ("order_id=G&amount=2&currency=USD&coupon=BOB5", {"coupon_code": "BOB5"}),
        ("order_id=G&txid=&amount=2&currency=USD", {"order_id": "G"}),  # an empty alias says nothing
        ("order_id=G&order_id=G&amount=2&currency=USD", {"order_id": "G"}),
        ("order_id=G&amount=2&currency=USD&network_macro={x}&sub2=y", {"order_id": "G"}),  # ignored
        ("order_id=G&status=refunded&currency=USD", {"amount": None, "status": "refunded"}),
        ("order_id=G&amount=2&currency=USD&occurred_at=1767323045", {"occurred_at": NOON}),
    ],
)
def test_get_query(text: str, expected: dict[str, Any]) -> None:
    parsed = query(f"store_id=sto_1&token=pbt_1&{text}")
    assert {k: getattr(parsed, k) for k in expected} == expected
    assert (parsed.store_id, parsed.token) == ("sto_1", "pbt_1")
    assert parsed.txid is None and parsed.cid is None  # folded into their fields


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("order_id=G&txid=H", "The parameters order_id, txid give different values for order_id."),
        ("order_id=G&order_id=H", "The parameters order_id give different values for order_id."),
        ("amount=1&payout=2&sale_amount=",
         "The parameters amount, payout, sale_amount give different values for amount."),
        ("click_id=a&cid=b", "The parameters click_id, cid give different values for click_id."),
    ],
)
def test_get_aliases_must_agree(text: str, message: str) -> None:
    with pytest.raises(TrackerError) as err:
        resolve_aliases(QueryParams(text))
    assert (err.value.status, err.value.message) == (400, message)


def test_get_query_runs_the_body_checks() -> None:
    with pytest.raises(TrackerError) as err:
        query("store_id=s&token=t&txid=G&amount=1.001&currency=USD")
    assert (err.value.status, err.value.code) == (422, "invalid_amount")
    with pytest.raises(TrackerError) as err:
        query("store_id=s&token=t&amount=1&currency=USD")
    assert err.value.message == "order_id is required."


def test_the_models_document_what_they_take() -> None:
    body_schema = PostbackIn.model_json_schema()
    assert body_schema["required"] == ["order_id"]  # a refund needs neither amount nor currency
    assert body_schema["additionalProperties"] is False
    assert set(body_schema["properties"]) == set(Postback.model_fields)
    params = set(PostbackQuery.model_json_schema()["properties"])
    assert {alias for aliases in GET_ALIASES.values() for alias in aliases} | {"store_id", "token"} == params
