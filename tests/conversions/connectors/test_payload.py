"""Reading a webhook body: base64 HMAC, JSON, typed fields with named errors."""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from tests.conversions.connectors.samples import b64_hmac
from tracker.conversions.connectors.payload import Fields, load_json, short, verify_base64_hmac
from tracker.core.errors import BadRequest, Unauthorized, Unprocessable

SECRET = "shpss_0123456789abcdef0123456789abcdef"
BODY = b'{"id":820982911946154508,"total_price":"403.00"}'


def test_base64_hmac_good() -> None:
    verify_base64_hmac(BODY, b64_hmac(SECRET, BODY), SECRET, "X-Test-Hmac")
    verify_base64_hmac(BODY, f"  {b64_hmac(SECRET, BODY)}\t", SECRET, "X-Test-Hmac")  # header whitespace


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "header is missing"),
        ("", "header is missing"),
        ("   ", "header is missing"),
        (b64_hmac("another-store-secret", BODY), "does not match"),
        (b64_hmac(SECRET, BODY + b" "), "does not match"),
        (b64_hmac(SECRET, BODY)[:-4], "does not match"),
        (b64_hmac(SECRET, BODY).lower(), "does not match"),
        (hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest(), "does not match"),  # hex, not base64
        ("é" * 44, "does not match"),  # non-ASCII: a mismatch, not an exception
    ],
)
def test_base64_hmac_bad(header: str | None, message: str) -> None:
    with pytest.raises(Unauthorized, match=message) as caught:
        verify_base64_hmac(BODY, header, SECRET, "X-Test-Hmac")
    assert caught.value.status == 401
    assert "X-Test-Hmac" in caught.value.message or "secret" in caught.value.message


def test_base64_hmac_without_a_secret_is_refused() -> None:
    with pytest.raises(Unauthorized, match="no webhook secret"):
        verify_base64_hmac(BODY, b64_hmac("", BODY), "", "X-Test-Hmac")


def test_load_json_reads_fractions_as_decimal() -> None:
    data = load_json(b'{"a": 49.90, "b": 3, "c": "x"}', "test")
    assert data == {"a": Decimal("49.90"), "b": 3, "c": "x"}
    assert isinstance(data["a"], Decimal)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "empty"),
        (b"  \n", "empty"),
        (b"{", "not valid JSON"),
        (b'{"a": 1,}', "not valid JSON"),
        (b"\xff\xfe{}", "not valid JSON"),
        (b'{"a": NaN}', "not valid JSON"),
        (b'{"a": -Infinity}', "not valid JSON"),
        (b"[1, 2]", "must be a JSON object, not an array"),
        (b'"text"', "must be a JSON object, not a string"),
        (b"null", "must be a JSON object, not null"),
        (b"[" * 100_000 + b"]" * 100_000, "JSON"),
        (b"webhook_id=17", "not valid JSON"),
    ],
)
def test_load_json_refuses_anything_but_one_object(body: bytes, message: str) -> None:
    with pytest.raises(BadRequest, match=message) as caught:
        load_json(body, "test webhook")
    assert caught.value.status == 400
    assert "test webhook" in caught.value.message


def fields(**data: Any) -> Fields:
    return Fields(data, "Test order.created", "order")


@pytest.mark.parametrize(
    ("read", "data", "message"),
    [
        (lambda f: f.need_ident("id"), {}, "order.id must be an id (a string or an integer), not null"),
        (lambda f: f.need_ident("id"), {"id": True}, "order.id must be an id (a string or an integer), not a boolean"),
        (lambda f: f.need_ident("id"), {"id": Decimal("1.5")}, "not a number"),
        (lambda f: f.need_ident("id"), {"id": "x" * 129}, "at most 128 printable characters"),
        (lambda f: f.need_ident("id"), {"id": " 12"}, "printable"),
        (lambda f: f.need_text("status"), {"status": 3}, "order.status must be a string, not a number"),
        (lambda f: f.need_text("status"), {"status": ""}, "order.status must be a non-empty string"),
        (lambda f: f.text("note"), {"note": ["a"]}, "order.note must be a string, not an array"),
        (lambda f: f.need_decimal("total"), {"total": "12,50"}, 'order.total must be a decimal amount such as "49.90"'),
        (lambda f: f.need_decimal("total"), {"total": "NaN"}, "decimal amount"),
        (lambda f: f.need_decimal("total"), {"total": "Infinity"}, "decimal amount"),
        (lambda f: f.need_decimal("total"), {"total": True}, "not a boolean"),
        (lambda f: f.need_decimal("total"), {"total": None}, "not null"),
        (lambda f: f.need_decimal("total"), {"total": "-1.00"}, "an amount of 0 or more, got -1.00"),
        (lambda f: f.need_minor("amount"), {"amount": "100"}, "integer amount in minor units, not a string"),
        (lambda f: f.need_minor("amount"), {"amount": Decimal("1.5")}, "integer amount in minor units, not a number"),
        (lambda f: f.need_minor("amount"), {"amount": -5}, "0 or more"),
        (lambda f: f.need_obj("data"), {"data": []}, "order.data must be an object, not an array"),
        (lambda f: f.need_obj("data"), {}, "order.data must be an object, not null"),
        (lambda f: f.objects("lines"), {"lines": {}}, "order.lines must be an array, not an object"),
        (lambda f: f.objects("lines"), {"lines": [{}, 3]}, "order.lines[1] must be an object, not a number"),
        (lambda f: f.flag("paid"), {"paid": "yes"}, "order.paid must be true or false, not a string"),
        (lambda f: f.unix_time("created"), {"created": "1764000000"}, "unix time in seconds, not a string"),
        (lambda f: f.iso_time("date"), {"date": "yesterday"}, "ISO 8601 time, got 'yesterday'"),
        (lambda f: f.currency("currency"), {"currency": None}, "ISO 4217 currency code, not null"),
        (lambda f: f.currency("currency"), {"currency": "XBT"}, "ISO 4217 currency this server knows, got 'XBT'"),
    ],
)
def test_fields_name_the_bad_field(read: Any, data: dict[str, Any], message: str) -> None:
    with pytest.raises(Unprocessable, match=re.escape(message)) as caught:
        read(Fields(data, "Test order.created", "order"))
    assert caught.value.status == 422
    assert caught.value.message.startswith("Test order.created: order.")


def test_fields_reads() -> None:
    f = fields(
        id=820982911946154508,
        guest=0,
        total="49.90",
        refund="-10.00",
        minor=4990,
        currency="usd",
        at="2026-11-24T14:03:10-05:00",
        gmt="2026-11-24T19:28:02",
        unix=1764000000,
        lines=[{"code": "A"}],
    )
    assert f.need_ident("id") == "820982911946154508"
    assert f.ident("guest", zero_is_none=True) is None
    assert f.ident("guest") == "0"
    assert f.ident("missing") is None
    assert f.need_decimal("total") == Decimal("49.90")
    assert f.need_decimal("refund", signed=True) == Decimal("-10.00")
    assert f.need_minor("minor") == 4990
    assert f.currency("currency") == "USD"
    assert f.iso_time("at") == datetime(2026, 11, 24, 19, 3, 10, tzinfo=UTC)
    assert f.iso_time("gmt") == datetime(2026, 11, 24, 19, 28, 2, tzinfo=UTC)
    assert f.unix_time("unix") == datetime.fromtimestamp(1764000000, UTC)
    assert [line.need_text("code") for line in f.objects("lines")] == ["A"]
    assert f.objects("missing") == []
    assert f.obj("missing") is None
    assert f.flag("missing") is False


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Ab3dEf6hJk9mNp2Q", "Ab3dEf6hJk9mNp2Q"),
        ("  ANNA10 ", "ANNA10"),
        ("", None),
        ("   ", None),
        (None, None),
        ("x" * 65, None),
        ("bad\nvalue", None),
    ],
)
def test_short_drops_what_cannot_be_a_code(value: str | None, expected: str | None) -> None:
    assert short(value, 64) == expected
