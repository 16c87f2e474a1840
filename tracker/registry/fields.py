"""Field types of the registry's request and answer models: their rules, and their JSON schema.

A rule that needs no storage lives here, once: the model validates it and the
OpenAPI document shows it. Errors name the field (``tracker.api.schema``); a text
is trimmed before its limits apply, as the registry has always stored it.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, PlainSerializer, ValidationInfo, WithJsonSchema

from tracker.api.schema import Text, invalid
from tracker.core import money
from tracker.core.codes import VANITY
from tracker.registry.destinations import MAX_URL_LENGTH, destination_problem, normalize_domain

MAX_LIST = 100
MAX_PAGE = 10_000
MAX_OFFSET = 10**9
_VALUE_MAX = Decimal("1e13")  # money columns are Decimal(18, 4)
# Reports start at 2000-01-01 (a day before could never be shown); ClickHouse's Date ends at 2149-06-06.
_FIRST_DAY, _LAST_DAY = date(2000, 1, 1), date(2149, 6, 6)
_LAST_INSTANT = datetime(2299, 12, 31, tzinfo=UTC)  # the end of ClickHouse's DateTime64 range
_CLICK_ID_PARAM = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
_COUPON = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{1,63}$")
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DECIMAL_TEXT = money.DECIMAL_PATTERN
_NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"
_SOME_TEXT = r"^[^\x00-\x1f\x7f]*\S[^\x00-\x1f\x7f]*$"


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, Decimal | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


# --- request fields ------------------------------------------------------------------------------


def _trimmed(max_len: int, *, nonempty: bool = False) -> BeforeValidator:
    """Surrounding whitespace dropped, then the length limits (a non-string is left to the type)."""

    def trim(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        value = value.strip()
        if nonempty and not value:
            raise invalid("invalid_field", "must not be empty")
        if len(value) > max_len:
            raise invalid("invalid_field", f"is {len(value)} characters long; the limit is {max_len}")
        return value

    return BeforeValidator(trim)


def _text_schema(max_len: int, *, nonempty: bool = False) -> WithJsonSchema:
    schema = {"type": "string", "maxLength": max_len, "pattern": _SOME_TEXT if nonempty else _NO_CONTROL}
    return WithJsonSchema({**schema, "minLength": 1} if nonempty else schema)


Name = Annotated[Text, _trimmed(200, nonempty=True), _text_schema(200, nonempty=True)]
# An id named in a body, read as text: an unknown one (another brand's too) answers 422 naming it.
Ref = Name
Handle = Annotated[Text, _trimmed(100), _text_schema(100)]
Platform = Annotated[Text, _trimmed(50), _text_schema(50)]
Note = Annotated[Text, _trimmed(500), _text_schema(500)]


def _coupon(value: str) -> str:
    if value and not _COUPON.match(value):
        raise invalid(
            "invalid_field",
            f"value {value!r} is not valid: use 2 to 64 letters, digits, '-' or '_', starting with a letter or digit",
        )
    return value


# Empty means none. Coupons are unique within a brand, ignoring case.
CouponCode = Annotated[Text, _trimmed(64), AfterValidator(_coupon), WithJsonSchema(
    {"type": "string", "pattern": _COUPON.pattern, "description": "Unique within the brand, ignoring case."})]
# Empty means a generated code. Further rules (reserved paths, the shape of a generated
# code, uniqueness) need the code alphabet and storage: the link store applies them.
VanityCode = Annotated[Text, _trimmed(64), WithJsonSchema(
    {"type": "string", "pattern": VANITY.pattern, "description": "A custom short code, unique across brands."})]


def _click_id_param(value: str) -> str:
    if not _CLICK_ID_PARAM.match(value):
        raise invalid(
            "invalid_field",
            f"value {value!r} is not a safe query parameter name "
            "(letters, digits, '_', '-', '.'; starting with a letter or '_')",
        )
    return value


ClickIdParam = Annotated[Text, _trimmed(64), AfterValidator(_click_id_param),
                         WithJsonSchema({"type": "string", "pattern": _CLICK_ID_PARAM.pattern})]


def _destination(value: str) -> str:
    problem = destination_problem(value)
    if problem is not None:
        raise invalid(problem.code, problem.problem)
    return value


# An absolute http(s) URL; a campaign's allowed_domains are checked by the link store.
Destination = Annotated[str, AfterValidator(_destination), WithJsonSchema(
    {"type": "string", "format": "uri", "maxLength": MAX_URL_LENGTH, "pattern": "^https?://[^\\s/@\\\\]+"})]


def _fallback(value: str) -> str:
    if value:
        problem = destination_problem(value)
        if problem is not None:
            raise invalid(problem.code, problem.problem)
    return value


# An absolute http(s) URL like a destination (any domain: it is the brand's own page), or "" for none.
FallbackUrl = Annotated[str, AfterValidator(_fallback), WithJsonSchema({
    "type": "string", "maxLength": MAX_URL_LENGTH, "pattern": "^(https?://[^\\s/@\\\\]+.*)?$",
    "description": "Where followers of a disabled or expired link of this campaign are sent; \"\" for none "
    "(they get an HTML 410 page).",
})]


def _listed_text(value: Any) -> str:
    """An entry of a list of strings (domains, addresses), trimmed."""
    if not isinstance(value, str) or not value.strip() or len(value) > 255:
        raise invalid("invalid_field", f"must hold non-empty strings, got {value!r}")
    return value.strip()


def _domain(value: Any) -> str:
    domain = normalize_domain(_listed_text(value))
    if domain is None:
        raise invalid("invalid_field", f"entry {value!r} is not a domain name such as shop.example.com")
    return domain


def valid_ip_or_network(value: str) -> str:
    """Normalised IP ("203.0.113.7") or CIDR ("203.0.113.0/24") text; ValueError otherwise."""
    net = ipaddress.ip_network(value.strip(), strict=False)
    return str(net.network_address) if net.num_addresses == 1 else str(net)


def _ip_or_network(value: Any) -> str:
    text = _listed_text(value)
    if len(text) > 64:
        raise invalid("invalid_field", f"must hold non-empty strings, got {value!r}")
    try:
        return valid_ip_or_network(text)
    except ValueError:
        raise invalid("invalid_field", f"entry {value!r} is not an IP address or CIDR block") from None


def _distinct(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


# Subdomains included; "*.shop.example" means the same as "shop.example"; IDNs in any form.
Domain = Annotated[str, BeforeValidator(_domain), WithJsonSchema(
    {"type": "string", "maxLength": 255, "pattern": r"^(\*\.)?[^\s./]+(\.[^\s./]+)+\.?$",
     "description": "A domain name (internationalised ones too); its subdomains are included."})]
Domains = Annotated[list[Domain], Field(max_length=MAX_LIST), AfterValidator(_distinct)]
IpOrNetwork = Annotated[str, BeforeValidator(_ip_or_network), WithJsonSchema(
    {"type": "string", "maxLength": 64, "pattern": r"^[0-9A-Fa-f:.]+(/[0-9]{1,3})?$",
     "description": "An IPv4 or IPv6 address, or a CIDR block (203.0.113.0/24, 2001:db8::/32)."})]
IpList = Annotated[list[IpOrNetwork], Field(max_length=MAX_LIST), AfterValidator(_distinct)]


def _currency(value: Any) -> str:
    if not money.is_currency(value):
        raise invalid(
            "invalid_currency",
            f"value {value!r} is not an ISO 4217 currency code (use upper case, e.g. USD, EUR, JPY)",
        )
    assert isinstance(value, str)
    return value


CURRENCY_SCHEMA: dict[str, Any] = {"type": "string", "enum": sorted(money.MINOR_UNITS), "description": "ISO 4217 code."}
Currency = Annotated[str, BeforeValidator(_currency), WithJsonSchema(CURRENCY_SCHEMA)]


def _decimal(value: Any) -> Decimal:
    """A Decimal from a decimal string of the contract (``money.DECIMAL_TEXT``); JSON numbers are refused."""
    if not isinstance(value, str):
        raise invalid("invalid_field", f'must be a decimal string such as "12.5", got {_kind(value)}')
    try:
        return money.parse_decimal_text(value, "")
    except ValueError:
        shown = value if len(value) <= 40 else value[:40] + "..."
        raise invalid(
            "invalid_field",
            f'value {shown!r} is not a decimal string such as "12.5" (digits, an optional "-" and fraction)',
        ) from None


def bounded(number: Decimal, max_places: int) -> Decimal:
    exponent = number.as_tuple().exponent
    assert isinstance(exponent, int)
    if -exponent > max_places:
        raise invalid("invalid_field", f"value {number} has more than {max_places} decimal places")
    if abs(number) >= _VALUE_MAX:
        raise invalid("invalid_field", f"value {number} is too large")
    return number


_DECIMAL_SCHEMA = {"type": "string", "pattern": _DECIMAL_TEXT,
                   "description": 'A decimal string such as "12.5" (JSON numbers are refused).'}
DecimalIn = Annotated[Decimal, BeforeValidator(_decimal), WithJsonSchema(_DECIMAL_SCHEMA)]
# Converted by the model that knows the currency (``money.parse_amount``); 3 decimals is
# the most any currency has (KWD), the currency's own count applies.
MoneyIn = Annotated[Decimal, WithJsonSchema(
    {"type": "string", "pattern": r"^0*([1-9][0-9]{0,12}(\.[0-9]{1,3})?|0\.[0-9]{0,2}[1-9])$",
     "description": 'A positive decimal string such as "49.90", with at most the currency\'s decimals, '
     "below 10^13."})]


def money_in(value: Any, info: ValidationInfo) -> Decimal:
    """A ``MoneyIn`` field's value in the decimals of the model's ``currency`` field, else of the
    validation context's currency (the brand's, or the edited row's own)."""
    currency = info.data.get("currency") or (info.context or {}).get("currency", "USD")
    try:
        return money.parse_amount(value, currency, field="")
    except ValueError as exc:
        raise invalid("invalid_field", str(exc).strip().rstrip(".")) from None


# An exchange rate: above 0, below 10^10, at most 8 decimals (checked by FxRateIn).
RateIn = Annotated[Decimal, BeforeValidator(_decimal), WithJsonSchema(
    {"type": "string", "pattern": r"^0*([1-9][0-9]{0,9}(\.[0-9]{1,8})?|0\.[0-9]{0,7}[1-9])$",
     "description": "Units of the brand currency per unit of this currency: a decimal string above 0, "
     "below 10^10, at most 8 decimals."})]


def _future_instant(value: Any) -> datetime:
    if not isinstance(value, str):
        raise invalid("invalid_field", f"must be an ISO 8601 date-time string, got {_kind(value)}")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        raise invalid("invalid_field", f"value {value!r} is not an ISO 8601 date-time") from None
    if parsed.tzinfo is None:
        raise invalid("invalid_field", f"value {value!r} needs a time zone, e.g. 2026-12-31T23:59:00Z")
    try:
        when = parsed.astimezone(UTC)
    except OverflowError:
        raise invalid("invalid_field", f"value {value!r} is out of range") from None
    if when <= datetime.now(UTC):
        raise invalid("invalid_field", f"value {value!r} is in the past")
    if when >= _LAST_INSTANT:
        raise invalid("invalid_field", f"value {value!r} is too far in the future (before 2299-12-31)")
    return when


FutureInstant = Annotated[datetime, BeforeValidator(_future_instant), WithJsonSchema(
    {"type": "string", "format": "date-time", "description": "A future instant with a time zone."})]


def _calendar_day(value: Any) -> date:
    if not isinstance(value, str) or not _DAY.fullmatch(value):
        raise invalid("invalid_field", f"must be a YYYY-MM-DD string, got {value!r}")
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise invalid("invalid_field", f"value {value!r} is not a calendar date") from None
    if not _FIRST_DAY <= day <= _LAST_DAY:
        raise invalid("invalid_field", f"value {value!r} is out of range ({_FIRST_DAY} to {_LAST_DAY})")
    return day


Day = Annotated[date, BeforeValidator(_calendar_day), WithJsonSchema(
    {"type": "string", "format": "date", "pattern": r"^(20[0-9]{2}|21[0-4][0-9])-[0-9]{2}-[0-9]{2}$",
     "description": "A calendar date, YYYY-MM-DD, 2000-01-01 (where reports start) to 2149-06-06 "
     "(the end of ClickHouse's Date)."})]


def digits(value: Any) -> Any:
    # int() would take " 10", "+5" and "1_000"; a page number is plain digits.
    if isinstance(value, str):
        if not (value.isascii() and value.isdigit()):
            raise invalid("invalid_field", f"must be an integer, got {value!r}")
        return int(value)
    return value


# --- answer fields -------------------------------------------------------------------------------

# A decimal as a string, without storage padding ("10", "12.5", "1.0825").
DecimalOut = Annotated[Decimal, PlainSerializer(str, return_type=str),
                       WithJsonSchema({"type": "string", "description": "A decimal number as a string."})]
CurrencyOut = Annotated[str, WithJsonSchema({"type": "string", "pattern": "^[A-Z]{3}$"})]
