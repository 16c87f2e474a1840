"""Request and answer shapes of the registry routes, one pydantic model per shape.

Request bodies are strict (``tracker.api.schema.Model``): a string where an integer
belongs, a float where money belongs, or an unknown field answers 422 naming the
field. A field sent as ``null`` counts as absent (a required one is then missing)
unless the model gives null a meaning. Answers are built from the registry's rows
and records (``from_row``, ``model_validate``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from tracker.api.schema import Answer, Model, MoneyOut, Query, Timestamp, invalid
from tracker.core import money
from tracker.registry.campaigns import (
    DEFAULT_CLICK_ID_PARAM,
    DEFAULT_HOLD_DAYS,
    DEFAULT_RECURRING_MONTHS,
    DEFAULT_WINDOW_DAYS,
)
from tracker.registry.fields import (
    MAX_OFFSET,
    MAX_PAGE,
    ClickIdParam,
    CouponCode,
    Currency,
    CurrencyOut,
    Day,
    DecimalIn,
    DecimalOut,
    Destination,
    Domains,
    FallbackUrl,
    FutureInstant,
    Handle,
    MoneyIn,
    Name,
    Note,
    Platform,
    RateIn,
    Ref,
    VanityCode,
    bounded,
    digits,
    money_in,
)

_PERCENT_MAX = Decimal(100)
_RATE_MAX = Decimal("1e10")


# --- request bodies -------------------------------------------------------------------------------


def _nullable_optionals(schema: dict[str, Any], model: type[Any]) -> None:
    """In the JSON schema too, an optional field may be null (it then counts as absent)."""
    keep = set(schema.get("required", ())) | getattr(model, "null_is_value", set())
    for name, prop in schema.get("properties", {}).items():
        if name not in keep and "anyOf" not in prop:
            outer = {k: prop.pop(k) for k in ("title", "description", "default") if k in prop}
            schema["properties"][name] = {**outer, "anyOf": [prop, {"type": "null"}]}


class Body(Model):
    """A registry request body."""

    model_config = ConfigDict(json_schema_extra=_nullable_optionals)
    # Fields whose null is a value of its own, validated as such (not dropped).
    null_is_value: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _prepare(cls, data: Any) -> Any:
        """Unknown fields refused first (pydantic would name them last), then nulls dropped."""
        if isinstance(data, Mapping):
            unknown = sorted(set(data) - set(cls.model_fields))
            if unknown:
                raise invalid("invalid_field", cls.unknown_field(unknown, data))
            return {k: v for k, v in data.items() if v is not None or k in cls.null_is_value}
        return data

    @classmethod
    def unknown_field(cls, unknown: list[str], data: Mapping[str, Any]) -> str:
        return f"Unknown field {unknown[0]!r}; this route accepts {', '.join(cls.model_fields)}"


class BrandIn(Body):
    null_is_value = frozenset({"currency"})

    name: Name
    currency: Currency = "USD"


class CommissionIn(Body):
    """`percent`: a share of net revenue, 0 to 100 (4 decimals); `flat`: an amount per conversion in the brand
    currency (its decimals, at most 4)."""

    # A missing type is a wrong one ("percent" or "flat"), named before a missing value.
    null_is_value = frozenset({"type"})

    type: Literal["percent", "flat"]
    value: DecimalIn

    @model_validator(mode="before")
    @classmethod
    def _typed(cls, data: Any) -> Any:
        return {"type": None, **data} if isinstance(data, Mapping) else data

    @classmethod
    def unknown_field(cls, unknown: list[str], data: Mapping[str, Any]) -> str:
        return f"accepts only type and value, got {sorted(data)}"

    @field_validator("value")
    @classmethod
    def _in_range(cls, value: Decimal, info: ValidationInfo) -> Decimal:
        kind = info.data.get("type")
        if kind is None:
            return value  # the type was refused; that error is reported
        currency = (info.context or {}).get("currency", "USD")
        bounded(value, 4 if kind == "percent" else min(4, money.minor_units(currency)))
        if value < 0 or (kind == "percent" and value > _PERCENT_MAX):
            bounds = "0 to 100" if kind == "percent" else "0 or more"
            raise invalid("invalid_field", f"value {value} is out of range: a {kind} commission is {bounds}")
        return value


class CampaignIn(Body):
    # Validated with context={"currency": <brand currency>}: a flat commission's decimals.

    name: Name
    attribution_window_days: int = Field(default=DEFAULT_WINDOW_DAYS, ge=1, le=365)
    commission: CommissionIn
    click_id_param: ClickIdParam = DEFAULT_CLICK_ID_PARAM
    allowed_domains: Domains = []
    recurring_months: int = Field(
        default=DEFAULT_RECURRING_MONTHS, ge=0, le=120,
        description="Months after a customer's first attributed order during which the customer's later orders "
        "(and subscription renewals) without a click id of their own are credited to the same link; 0: never.",
    )
    hold_days: int = Field(
        default=DEFAULT_HOLD_DAYS, ge=0, le=365,
        description="Days after an approved order occurred before its commission is payable.",
    )
    fallback_url: FallbackUrl = ""
    attribution_priority: Literal["click", "coupon"] = Field(
        default="click",
        description="When an order carries a qualifying click id and a coupon of this campaign's links: `click` "
        "credits the click's link, `coupon` the coupon's link.",
    )


class InfluencerIn(Body):
    name: Name
    handle: Handle = ""
    platform: Platform = ""
    email: str | None = Field(
        None, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$",
        description="Stored only as a keyed hash: an order whose customer email is the influencer's own is "
        "flagged self_referral.",
    )


class LinkIn(Body):
    campaign_id: Ref
    influencer_id: Ref
    destination_url: Destination
    coupon_code: CouponCode | None = None
    code: VanityCode | None = None
    expires_at: FutureInstant | None = None

    @field_validator("coupon_code", "code")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None


def patch_schema(schema: dict[str, Any], model: type[Any]) -> None:
    _nullable_optionals(schema, model)
    schema["minProperties"] = 1  # an empty PATCH changes nothing: refused


class LinkPatch(Body):
    """Only the fields sent change; `expires_at: null` removes the expiry."""

    model_config = ConfigDict(json_schema_extra=patch_schema)
    null_is_value = frozenset({"disabled", "destination_url", "expires_at"})

    disabled: bool | None = None
    destination_url: Destination | None = None
    expires_at: FutureInstant | None = None

    @model_validator(mode="before")
    @classmethod
    def _a_change(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            if not data:
                raise invalid("invalid_field", "Send at least one of disabled, destination_url, expires_at")
            if "destination_url" in data and data["destination_url"] is None:
                raise invalid("missing_field", "Field 'destination_url' is required")
        return data


class FeeIn(Body):
    """`currency` defaults to the brand's, `date` to today (UTC). Another currency needs the brand's rate."""

    # Validated with context={"currency": <brand currency>}, the default currency.
    campaign_id: Ref
    influencer_id: Ref
    currency: Currency | None = None
    amount: MoneyIn
    date: Day = Field(default_factory=lambda: datetime.now(UTC).date())
    note: Note = ""

    @field_validator("amount", mode="before")
    @classmethod
    def _amount(cls, value: Any, info: ValidationInfo) -> Decimal:
        return money_in(value, info)


class FxRateIn(Body):
    rate: RateIn

    @field_validator("rate")
    @classmethod
    def _in_range(cls, value: Decimal) -> Decimal:
        bounded(value, 8)
        if value <= 0 or value >= _RATE_MAX:
            raise invalid("invalid_field", f"must be greater than 0 and below {_RATE_MAX:f}, got {value}")
        return value


class FxRatePath(Model):
    currency: Currency


# --- query strings --------------------------------------------------------------------------------


class ByIds(Query):
    """Only the items of this campaign and/or influencer (empty or absent: any)."""

    campaign_id: str | None = None
    influencer_id: str | None = None


class FeeQuery(ByIds):
    pass


class LinkQuery(ByIds):
    limit: Annotated[int, Field(ge=1, le=MAX_PAGE), BeforeValidator(digits)] = 1000
    offset: Annotated[int, Field(ge=0, le=MAX_OFFSET), BeforeValidator(digits)] = 0


# --- answers -------------------------------------------------------------------------------------


class Brand(Answer):
    id: str
    name: str
    currency: CurrencyOut
    created_at: Timestamp


class NewBrand(Brand):
    api_key: str = Field(description="Shown this once; stored hashed.")


class Commission(Answer):
    type: Literal["percent", "flat"]
    value: DecimalOut


class Campaign(Answer):
    id: str
    name: str
    attribution_window_days: int
    commission: Commission
    click_id_param: str
    allowed_domains: list[str]
    recurring_months: int
    hold_days: int
    fallback_url: str | None = Field(default=None, description="Where followers of a disabled or expired link are "
                                     "sent (null: an HTML 410 page).")
    archived: bool = False
    attribution_priority: Literal["click", "coupon"] = "click"
    created_at: Timestamp

    @model_validator(mode="before")
    @classmethod
    def _without_history(cls, data: Any) -> Any:
        # The registry record carries the rule history (for pricing orders); the answer does not.
        return {k: v for k, v in data.items() if k != "rules"} if isinstance(data, Mapping) else data

    @field_validator("fallback_url", mode="before")
    @classmethod
    def _none(cls, value: Any) -> Any:
        return value or None


class Influencer(Answer):
    id: str
    name: str
    handle: str | None
    platform: str | None
    archived: bool = False
    has_email: bool = Field(False, description="Whether an email (kept only as a keyed hash) is on file.")
    created_at: Timestamp

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Influencer:
        return cls(id=row["id"], name=row["name"], handle=row["handle"] or None, platform=row["platform"] or None,
                   archived=bool(row.get("archived", 0)), has_email=bool(row.get("email_hash")),
                   created_at=row["created_at"])


class Link(Answer):
    id: int
    code: str
    short_url: str
    destination_url: str
    coupon_code: str | None
    campaign_id: str
    influencer_id: str
    disabled: bool
    expires_at: Timestamp | None
    created_at: Timestamp

    @classmethod
    def from_row(cls, row: Mapping[str, Any], base_url: str) -> Link:
        """``base_url``: the public URL short links start with."""
        return cls(
            id=int(row["id"]),
            code=row["code"],
            short_url=f"{base_url.rstrip('/')}/{row['code']}",
            destination_url=row["destination_url"],
            coupon_code=row["coupon_code"] or None,
            campaign_id=row["campaign_id"],
            influencer_id=row["influencer_id"],
            disabled=bool(row["disabled"]),
            expires_at=row["expires_at"],
            created_at=row["created_at"],
        )


class Fee(Answer):
    id: str
    campaign_id: str
    influencer_id: str
    amount: MoneyOut
    currency: CurrencyOut
    original_amount: MoneyOut
    original_currency: CurrencyOut
    fx_rate: DecimalOut
    date: date
    note: str | None
    created_at: Timestamp

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Fee:
        currency, original = row["currency"], row["original_currency"]
        return cls(
            id=row["id"],
            campaign_id=row["campaign_id"],
            influencer_id=row["influencer_id"],
            amount=money.round_money(Decimal(row["amount"]), currency),
            currency=currency,
            original_amount=money.round_money(Decimal(row["original_amount"]), original),
            original_currency=original,
            fx_rate=money.plain(Decimal(row["fx_rate"])),
            date=row["date"],
            note=row["note"] or None,
            created_at=row["created_at"],
        )


class FxRate(Answer):
    currency: CurrencyOut
    rate: DecimalOut
    base: CurrencyOut = Field(description="The brand currency.")
    updated_at: Timestamp

    @classmethod
    def from_row(cls, row: Mapping[str, Any], base: str) -> FxRate:
        return cls(currency=row["currency"], rate=row["rate"], base=base, updated_at=row["updated_at"])


class BrandList(Answer):
    items: list[Brand]


class CampaignList(Answer):
    items: list[Campaign]


class InfluencerList(Answer):
    items: list[Influencer]


class LinkList(Answer):
    items: list[Link]


class FeeList(Answer):
    items: list[Fee]


class FxRateList(Answer):
    items: list[FxRate]


# --- the audit log -------------------------------------------------------------------------------


class AuditQuery(Query):
    limit: Annotated[int, Field(ge=1, le=1000), BeforeValidator(digits)] = 100
    cursor: Annotated[str, Field(min_length=1, max_length=200)] | None = None


class AuditEntry(Answer):
    at: Timestamp
    key_id: str = Field(description='The acting key\'s id, or "admin".')
    action: str = Field(description="What changed, e.g. campaign.create, link.update, payout.paid.")
    object_id: str
    before: dict[str, Any] | None = Field(description="The object before the change (null for a creation).")
    after: dict[str, Any] | None = Field(description="The object after the change (null for a deletion).")


class AuditPage(Answer):
    items: list[AuditEntry]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next (older) page; null at the end.")
