"""Reading a platform webhook: its base64 HMAC, its JSON, its fields by type.

Shared by the three connectors so that every malformed payload fails the same
way: BadRequest (400) when the body is not one JSON object, Unprocessable (422)
naming the field when a field is missing or of the wrong type, Unauthorized (401)
when the signature does not match. Numbers with a fraction are read as Decimal,
never float, so money stays exact from the first byte.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from tracker.core.errors import BadRequest, Unauthorized, Unprocessable
from tracker.core.money import MINOR_UNITS

# The postback limits (tracker.postbacks). An order id longer than this is a malformed
# payload; an over-long click id or coupon is only a useless one and is dropped (see
# ``short``), since a garbled click id must never cost the store its conversion.
MAX_ID: Final = 128
MAX_CLICK_ID: Final = 256
MAX_COUPON: Final = 64
_LARGEST: Final = Decimal("1e40")


def verify_base64_hmac(body: bytes, header: str | None, secret: str, header_name: str) -> None:
    """``header`` must be base64(HMAC-SHA256(secret, body)): Shopify's and WooCommerce's scheme.

    Raises Unauthorized otherwise. Constant-time, on bytes: a garbled or non-ASCII
    header is a mismatch, never an exception.
    """
    if header is None or not header.strip():
        raise Unauthorized(f"The {header_name} header is missing; the webhook is not signed.", code="bad_signature")
    if not secret:
        raise Unauthorized("This store has no webhook secret to check the signature with.", code="bad_signature")
    expected = base64.b64encode(hmac.new(secret.encode("utf-8"), body, hashlib.sha256).digest())
    if not hmac.compare_digest(expected, header.strip().encode("utf-8", "replace")):
        raise Unauthorized(
            f"The {header_name} signature does not match the body and this store's webhook secret.",
            code="bad_signature",
        )


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def load_json(body: bytes, what: str) -> dict[str, Any]:
    """The body as one JSON object (floats as Decimal; NaN and Infinity refused).

    Raises BadRequest naming ``what`` ("The Shopify webhook body ...") otherwise.
    """
    if not body.strip():
        raise BadRequest(f"The {what} body is empty; expected a JSON object.", code="invalid_json")
    try:
        data = json.loads(body, parse_float=Decimal, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"The {what} body is not valid JSON: {exc}.", code="invalid_json") from None
    except RecursionError:
        raise BadRequest(f"The {what} body nests JSON too deeply.", code="invalid_json") from None
    if not isinstance(data, dict):
        raise BadRequest(f"The {what} body must be a JSON object, not {kind(data)}.", code="invalid_json")
    return data


def kind(value: object) -> str:
    """How an error message names a JSON value's type."""
    if value is None:
        return "null"
    names = {bool: "a boolean", int: "a number", Decimal: "a number", str: "a string", list: "an array"}
    return names.get(type(value), "an object" if isinstance(value, dict) else type(value).__name__)


def to_decimal(value: object) -> Decimal | None:
    """A finite Decimal from a decimal string or a JSON number, None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, str):
        text = value.strip()
        if not text or len(text) > 40:
            return None
        try:
            value = Decimal(text)
        except InvalidOperation:
            return None
    # Beyond 10^40 no figure is an amount (and none can be rounded exactly): a malformed payload.
    if isinstance(value, Decimal) and value.is_finite() and abs(value) < _LARGEST:
        return value
    return None


def short(value: str | None, limit: int) -> str | None:
    """A click id or coupon as carried, or None when blank or too long to be one."""
    if value is None:
        return None
    value = value.strip()
    if not value or len(value) > limit or not value.isprintable():
        return None
    return value


def email(value: str | None) -> str | None:
    """An email worth hashing (one with an @, at most 320 characters), stripped; else None."""
    return value.strip() if value and "@" in value and len(value) <= 320 else None


def country(where: Fields, *paths: tuple[str, ...]) -> str | None:
    """The order's country: the first ISO 3166 alpha-2 code found at one of ``paths`` (keys into
    nested objects), upper-cased. A missing or malformed one is only no country, never a refused
    order (the coupon-leak detector then has nothing to compare)."""
    for path in paths:
        value: Any = where.data
        for key in path:
            value = value.get(key) if isinstance(value, Mapping) else None
        if isinstance(value, str):
            text = value.strip()
            if len(text) == 2 and text.isascii() and text.isalpha():
                return text.upper()
    return None


class Fields:
    """Typed reads from one JSON object, with errors that name the field.

    ``what`` names the payload ("Shopify orders/paid"), ``path`` the object inside
    it ("refunds[0]"), so that an error reads: ``Shopify orders/paid: refunds[0].id
    must be an id (a string or an integer), not null.`` Errors are Unprocessable.
    """

    __slots__ = ("data", "path", "what")

    def __init__(self, data: Mapping[str, Any], what: str, path: str = "") -> None:
        self.data = data
        self.what = what
        self.path = path

    def name(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def fail(self, key: str, expected: str, value: object = None, *, show: bool = True) -> Unprocessable:
        got = f", not {kind(value)}" if show else ""
        return Unprocessable(f"{self.what}: {self.name(key)} must be {expected}{got}.", code="invalid_payload")

    def raw(self, key: str) -> Any:
        return self.data.get(key)

    def obj(self, key: str) -> Fields | None:
        """A nested object; missing or null is None."""
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self.fail(key, "an object", value)
        return Fields(value, self.what, self.name(key))

    def need_obj(self, key: str) -> Fields:
        found = self.obj(key)
        if found is None:
            raise self.fail(key, "an object", None)
        return found

    def objects(self, key: str) -> list[Fields]:
        """A list of objects; missing or null is empty."""
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(key, "an array", value)
        out = []
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                raise self.fail(f"{key}[{i}]", "an object", item)
            out.append(Fields(item, self.what, f"{self.name(key)}[{i}]"))
        return out

    def text(self, key: str) -> str | None:
        """A string; missing, null or empty is None."""
        value = self.data.get(key)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise self.fail(key, "a string", value)
        return value

    def need_text(self, key: str) -> str:
        found = self.text(key)
        if found is None:
            raise self.fail(key, "a non-empty string", self.data.get(key))
        return found

    def ident(self, key: str, *, zero_is_none: bool = False) -> str | None:
        """A platform id: a string, or an integer as platforms number their objects.

        ``zero_is_none``: 0 means "no one" (WooCommerce's guest customer).
        """
        value = self.data.get(key)
        if value is None or value == "" or (zero_is_none and value == 0 and not isinstance(value, bool)):
            return None
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise self.fail(key, "an id (a string or an integer)", value)
        text = str(value)
        if len(text) > MAX_ID or not text.isprintable() or text != text.strip():
            raise self.fail(key, f"an id of at most {MAX_ID} printable characters", show=False)
        return text

    def need_ident(self, key: str) -> str:
        found = self.ident(key)
        if found is None:
            raise self.fail(key, "an id (a string or an integer)", self.data.get(key))
        return found

    def decimal(self, key: str, *, signed: bool = False) -> Decimal | None:
        """An amount as a decimal string ("49.90") or a JSON number; missing or null is None.

        Negative amounts are refused unless ``signed`` (WooCommerce writes refunds as "-10.00").
        """
        value = self.data.get(key)
        if value is None:
            return None
        number = to_decimal(value)
        if number is None:
            raise self.fail(key, 'a decimal amount such as "49.90"', value)
        if number < 0 and not signed:
            raise self.fail(key, f"an amount of 0 or more, got {number}", show=False)
        return number

    def need_decimal(self, key: str, *, signed: bool = False) -> Decimal:
        found = self.decimal(key, signed=signed)
        if found is None:
            raise self.fail(key, 'a decimal amount such as "49.90"', None)
        return found

    def minor(self, key: str) -> int | None:
        """An integer amount in a currency's minor unit (Stripe's cents), 0 or more; null is None."""
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, "an integer amount in minor units", value)
        if value < 0:
            raise self.fail(key, f"an amount of 0 or more, got {value}", show=False)
        return value

    def need_minor(self, key: str) -> int:
        found = self.minor(key)
        if found is None:
            raise self.fail(key, "an integer amount in minor units", None)
        return found

    def flag(self, key: str) -> bool:
        """A boolean; missing or null is False."""
        value = self.data.get(key)
        if value is None:
            return False
        if not isinstance(value, bool):
            raise self.fail(key, "true or false", value)
        return value

    def unix_time(self, key: str) -> datetime | None:
        """Unix seconds as a UTC time; missing or null is None."""
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 10**11:
            raise self.fail(key, "a unix time in seconds", value)
        return datetime.fromtimestamp(value, UTC)

    def iso_time(self, key: str) -> datetime | None:
        """An ISO 8601 time as UTC (a naive one is UTC: WooCommerce's ``*_gmt``); missing is None."""
        value = self.text(key)
        if value is None:
            return None
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            raise self.fail(key, f"an ISO 8601 time, got {value!r}", show=False) from None
        return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)

    def currency(self, key: str) -> str:
        """An ISO 4217 code whose minor unit we know, upper-cased ("usd" → "USD")."""
        value = self.data.get(key)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, "an ISO 4217 currency code", value)
        code = value.strip().upper()
        if code not in MINOR_UNITS:
            raise self.fail(key, f"an ISO 4217 currency this server knows, got {value!r}", show=False)
        return code
