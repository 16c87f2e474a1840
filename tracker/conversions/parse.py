"""Postback requests: the signed JSON body and the ``GET /postback`` query, one ``Postback`` each.

Both forms share the field checks. A missing or mistyped field answers 400, a well-formed
value the server cannot take (an unknown currency, too many decimals, a time in the future)
422, as stores have always been answered; the validators raise those errors themselves
(pydantic lets exceptions other than its own pass), so each message names its field.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, ValidationInfo, WithJsonSchema, field_validator, model_validator

from tracker.api.schema import Model
from tracker.conversions.attribution import REFUNDED, STATUSES
from tracker.core import money
from tracker.core.errors import BadRequest, Unprocessable
from tracker.core.timeutil import now_utc, truncate_ms, utc

MAX_ORDER_ID = 128
MAX_CLICK_ID = 256
MAX_COUPON = 64
MAX_CUSTOMER = 128
MAX_EMAIL = 320
# How far in the future occurred_at may lie (store clocks drift).
CLOCK_SKEW_SECONDS = 300
_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)

# The statuses of ``attribution.STATUSES``, as a type (a test keeps the two equal).
Status = Literal["pending", "approved", "rejected", "refunded"]

# GET /postback: the names affiliate networks use for our fields.
GET_ALIASES: dict[str, tuple[str, ...]] = {
    "order_id": ("order_id", "txid", "transaction"),
    "amount": ("amount", "payout", "sale_amount"),
    "currency": ("currency",),
    "click_id": ("click_id", "clickid", "cid", "subid", "transaction_id"),
    "coupon_code": ("coupon_code", "coupon"),
    "status": ("status",),
    "occurred_at": ("occurred_at",),
    "customer_id": ("customer_id",),
    "customer_email": ("customer_email",),
    "country": ("country",),
}

_TEXT_LIMITS = {
    "order_id": MAX_ORDER_ID, "click_id": MAX_CLICK_ID, "coupon_code": MAX_COUPON, "customer_id": MAX_CUSTOMER,
    "customer_email": MAX_EMAIL,
}

_AMOUNT_SCHEMA = WithJsonSchema(
    {
        "type": "string",
        "pattern": r"^[0-9]+(\.[0-9]+)?$",
        "description": 'The order amount in `currency` as a decimal string, e.g. "49.90" (JSON numbers, '
        "exponents, digit separators and spaces are refused), with at most the currency's decimals; "
        "for a refund the cumulative refunded amount, left out for a refund of the whole order.",
    }
)
_OCCURRED_SCHEMA = WithJsonSchema(
    {
        "anyOf": [
            {"type": "string", "format": "date-time"},
            {"type": "integer", "minimum": 946_684_800},
            {"type": "string", "pattern": "^[0-9]+$"},
        ],
        "description": "When the order happened: ISO 8601 (without an offset: UTC) or unix seconds; "
        "at most 5 minutes ahead of the server, not before 2000. Default: now.",
    }
)


def text_field(value: object, field: str, limit: int, *, required: bool) -> str | None:
    if value is None or value == "":
        if required:
            raise BadRequest(f"{field} is required.", code="invalid_field")
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{field} must be a string, not {type(value).__name__}.", code="invalid_field")
    if len(value) > limit:
        raise BadRequest(f"{field} is longer than {limit} characters.", code="invalid_field")
    if not value.isprintable() or value != value.strip():
        raise BadRequest(f"{field} {value!r} has control characters or surrounding spaces.", code="invalid_field")
    return value


def parse_occurred_at(value: object, now: float) -> datetime | None:
    """ISO 8601 (naive means UTC) or unix seconds; not in the future beyond the clock skew."""
    if value is None or value == "":
        return None
    when: datetime
    if isinstance(value, bool):
        raise BadRequest("occurred_at must be an ISO 8601 time or unix seconds.", code="invalid_field")
    if isinstance(value, int | Decimal) or (isinstance(value, str) and value.strip().isdigit()):
        try:
            when = datetime.fromtimestamp(float(value), UTC)
        except (ValueError, OverflowError, OSError, InvalidOperation):
            raise Unprocessable(f"occurred_at {value} is not a valid unix time.", code="invalid_field") from None
    elif isinstance(value, str):
        try:
            when = utc(datetime.fromisoformat(value.strip()))
        except ValueError:
            raise Unprocessable(
                f"occurred_at {value!r} is not an ISO 8601 time (2026-11-25T14:03:00Z) or unix seconds.",
                code="invalid_field",
            ) from None
    else:
        raise BadRequest("occurred_at must be an ISO 8601 time or unix seconds.", code="invalid_field")
    if when.timestamp() > now + CLOCK_SKEW_SECONDS:
        raise Unprocessable(
            f"occurred_at {when.isoformat()} is in the future (server time "
            f"{datetime.fromtimestamp(now, UTC).isoformat()}).",
            code="invalid_field",
        )
    if when < _EARLIEST:
        raise Unprocessable(f"occurred_at {when.isoformat()} is before 2000.", code="invalid_field")
    # Milliseconds, as the DateTime64(3) columns keep them: the state equals the stored row.
    return truncate_ms(when)


def status_of(value: object) -> str:
    if value is None or value == "":
        return "approved"
    if not isinstance(value, str):
        raise BadRequest(f"status must be a string, not {type(value).__name__}.", code="invalid_field")
    if value not in STATUSES:
        raise Unprocessable(f"status {value!r} is not one of {', '.join(STATUSES)}.", code="invalid_status")
    return value


def currency_of(value: object) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadRequest('currency must be a string such as "USD".', code="invalid_field")
    currency = value.strip().upper()
    if not money.is_currency(currency):
        raise Unprocessable(f"currency {value!r} is not an ISO 4217 currency code.", code="invalid_currency")
    return currency


def amount_of(value: object, status: str | None, currency: str | None) -> Decimal | None:
    """The amount, given the postback's status and currency as checked before it."""
    if value is None or value == "":
        # Only a refund may leave the amount out (it then refunds the whole order).
        if status != REFUNDED:
            raise BadRequest("amount is required.", code="invalid_field")
        return None
    if currency is None:
        raise BadRequest("currency is required with an amount.", code="invalid_field")
    try:
        # Quantized to the minor unit so "49.9" and 49.90 are one amount ("49.90").
        return money.round_money(money.parse_amount(value, currency), currency)
    except ValueError as exc:
        raise Unprocessable(str(exc), code="invalid_amount") from None


def email_of(value: object) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise BadRequest(f"customer_email must be a string, not {type(value).__name__}.", code="invalid_field")
    email = value.strip()
    if len(email) > MAX_EMAIL or "@" not in email or not email.isprintable() or " " in email:
        raise Unprocessable("customer_email is not an email address.", code="invalid_field")
    return email


def country_of(value: object) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value.strip()) != 2 or not value.strip().isascii() \
            or not value.strip().isalpha():
        raise Unprocessable("country is not an ISO 3166 alpha-2 code such as US.", code="invalid_field")
    return value.strip().upper()


class Postback(Model):
    """One order event from a store, in either form. Fields are checked in this order."""

    order_id: str = Field(min_length=1, max_length=MAX_ORDER_ID, description="The store's order id.")
    status: Status = Field("approved", description="pending, approved, rejected or refunded.")
    currency: str | None = Field(
        None, description="ISO 4217 code of the amount (any case); required with an amount.", examples=["USD"]
    )
    amount: Annotated[Decimal | None, _AMOUNT_SCHEMA] = Field(None, validate_default=True)
    click_id: str | None = Field(None, max_length=MAX_CLICK_ID, description="The click id the redirect appended.")
    coupon_code: str | None = Field(None, max_length=MAX_COUPON, description="A coupon code used on the order.")
    occurred_at: Annotated[datetime | None, _OCCURRED_SCHEMA] = None
    customer_id: str | None = Field(
        None, max_length=MAX_CUSTOMER,
        description="The store's id of the customer (stored only as a keyed hash): a later order of the customer "
        "without a click id is credited to the link that brought the customer's first attributed order, "
        "within the campaign's recurring_months.",
    )
    customer_email: str | None = Field(
        None, max_length=MAX_EMAIL,
        description="The customer's email (trimmed, lower-cased, stored only as a keyed hash).",
    )
    country: str | None = Field(
        None, description="The order's country (ISO 3166 alpha-2, e.g. the shipping country): coupon-only "
        "conversions are compared with the countries of the link's clicks (coupon-leak detector).",
        examples=["US"],
    )

    @field_validator("country", mode="before")
    @classmethod
    def _country(cls, value: object) -> str | None:
        return country_of(value)

    @field_validator("order_id", "click_id", "coupon_code", "customer_id", mode="before")
    @classmethod
    def _text(cls, value: object, info: ValidationInfo) -> str | None:
        name = str(info.field_name)
        return text_field(value, name, _TEXT_LIMITS[name], required=name == "order_id")

    @field_validator("customer_email", mode="before")
    @classmethod
    def _email(cls, value: object) -> str | None:
        return email_of(value)

    @field_validator("status", mode="before")
    @classmethod
    def _status(cls, value: object) -> str:
        return status_of(value)

    @field_validator("currency", mode="before")
    @classmethod
    def _currency(cls, value: object) -> str | None:
        return currency_of(value)

    @field_validator("amount", mode="before")
    @classmethod
    def _amount(cls, value: object, info: ValidationInfo) -> Decimal | None:
        return amount_of(value, info.data.get("status"), info.data.get("currency"))

    @field_validator("occurred_at", mode="before")
    @classmethod
    def _occurred_at(cls, value: object, info: ValidationInfo) -> datetime | None:
        now = info.context.get("now") if info.context else None
        return parse_occurred_at(value, now if now is not None else now_utc().timestamp())


# Postback's field names, for every signed postback's check (``model_fields`` is a property now).
_FIELDS = frozenset(Postback.model_fields)


class PostbackIn(Postback):
    """``POST /api/v1/conversions``: the JSON body, signed with the store secret."""

    @model_validator(mode="before")
    @classmethod
    def _known_fields(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            _check_known(data)
            # A missing order_id gets this route's own message, not pydantic's.
            return {"order_id": None, **data}
        return data


def _check_known(data: Mapping[str, Any]) -> None:
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise BadRequest(
            f"Unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_FIELDS))}.", code="invalid_field"
        )


def _text_in(data: Mapping[str, Any], name: str) -> str | None:
    return text_field(data[name], name, _TEXT_LIMITS[name], required=False) if name in data else None


def postback_in(data: Mapping[str, Any], now: float) -> PostbackIn:
    """``validate(PostbackIn, data, {"now": now})`` for a JSON object (``parse_json``'s), without pydantic.

    Every signed postback is parsed so: pydantic's work around the checks is ~2 µs in a tight
    loop but was ~12 µs of a replay in the server (in-process A/B in
    loadtests/results/postbacks-replays2-ab-2026-12-06.txt). The model's checks never fail
    themselves: each field's validator above returns a value of its type or raises our error,
    which pydantic lets through. So running the same validators in the model's order gives the
    same postback or the same first error, as pydantic does: a field's validator runs only when
    the field is given (the amount's always, ``validate_default``; the order id's always,
    ``_known_fields`` gives it), defaults otherwise.
    tests/conversions/test_postback_in.py compares the two on generated bodies.
    """
    _check_known(data)
    order_id = text_field(data.get("order_id"), "order_id", MAX_ORDER_ID, required=True)
    status = status_of(data["status"]) if "status" in data else "approved"
    currency = currency_of(data["currency"]) if "currency" in data else None
    # A dict display evaluates in order: the model's field order, so the first error is the model's.
    values = {
        "order_id": order_id,
        "status": status,
        "currency": currency,
        "amount": amount_of(data.get("amount"), status, currency),
        "click_id": _text_in(data, "click_id"),
        "coupon_code": _text_in(data, "coupon_code"),
        "occurred_at": parse_occurred_at(data["occurred_at"], now) if "occurred_at" in data else None,
        "customer_id": _text_in(data, "customer_id"),
        "customer_email": email_of(data["customer_email"]) if "customer_email" in data else None,
        "country": country_of(data["country"]) if "country" in data else None,
    }
    # pydantic's own constructor for values already validated (a direct __dict__ write saves ~2 µs more
    # but leans on pydantic's internals); the test compares the instance with a validation's.
    return PostbackIn.model_construct(_fields_set=set(data), **values)


def _values(params: Mapping[str, Any], name: str) -> list[Any]:
    getlist = getattr(params, "getlist", None)
    if getlist is not None:
        return list(getlist(name))
    return [params[name]] if name in params else []


def resolve_aliases(params: Mapping[str, Any]) -> dict[str, Any]:
    """Query parameters under our names; two names (or a repeated name) for one field must agree."""
    out: dict[str, Any] = {}
    for name, aliases in GET_ALIASES.items():
        values = {v for alias in aliases for v in _values(params, alias) if v != ""}
        if len(values) > 1:
            given = ", ".join(a for a in aliases if _values(params, a))
            raise BadRequest(f"The parameters {given} give different values for {name}.", code="invalid_field")
        if values:
            out[name] = values.pop()
    return out


def _alias(of: str) -> Any:
    return Field(None, description=f"Same as {of} (the name some affiliate networks use).")


class PostbackQuery(Postback):
    """``GET /postback``: the same postback as query parameters, for platforms that only fire URLs.

    Parameters this route does not know (network macros) are ignored; aliases are folded into
    their field before validation, so they read None here.
    """

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True, hide_input_in_errors=True)

    store_id: str = Field(description="The store's id.")
    token: str = Field(description="The store's postback_token.")
    txid: str | None = _alias("order_id")
    transaction: str | None = _alias("order_id")
    payout: str | None = _alias("amount")
    sale_amount: str | None = _alias("amount")
    clickid: str | None = _alias("click_id")
    cid: str | None = _alias("click_id")
    subid: str | None = _alias("click_id")
    transaction_id: str | None = _alias("click_id")
    coupon: str | None = _alias("coupon_code")

    @model_validator(mode="before")
    @classmethod
    def _fold_aliases(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        credentials = {k: data[k] for k in ("store_id", "token") if k in data}
        return {"order_id": None, **resolve_aliases(data), **credentials}
