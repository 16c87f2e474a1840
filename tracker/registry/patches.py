"""PATCH bodies of the registry's edit routes (``tracker.registry.editroutes``).

Only the fields sent change; an empty body is refused (nothing to change). Each is strict
like every registry body (``models.Body``): an unknown field answers 422 naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from tracker.api.schema import invalid
from tracker.registry.fields import Currency, Day, FallbackUrl, Handle, MoneyIn, Name, Note, Platform, money_in
from tracker.registry.models import Body, CommissionIn, patch_schema


class Patch(Body):
    model_config = ConfigDict(json_schema_extra=patch_schema)

    @model_validator(mode="before")
    @classmethod
    def _a_change(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and not data:
            raise invalid("invalid_field", f"Send at least one of {', '.join(cls.model_fields)}")
        return data


class CampaignPatch(Patch):
    """A new `commission` or `hold_days` applies to orders that occur from now on; `fallback_url: ""` removes
    the fallback (followers of a disabled link then get a 410 page)."""

    # Validated with context={"currency": <brand currency>}: a flat commission's decimals.
    name: Name | None = None
    attribution_window_days: int | None = Field(default=None, ge=1, le=365)
    commission: CommissionIn | None = None
    hold_days: int | None = Field(default=None, ge=0, le=365)
    recurring_months: int | None = Field(default=None, ge=0, le=120)
    fallback_url: FallbackUrl | None = None
    archived: bool | None = None
    attribution_priority: Literal["click", "coupon"] | None = None


class InfluencerPatch(Patch):
    name: Name | None = None
    handle: Handle | None = None
    platform: Platform | None = None
    archived: bool | None = None


class FeePatch(Patch):
    """A new `amount` (with `currency`, or the fee's own) is converted again at the brand's current rate when
    the currency changes."""

    currency: Currency | None = None
    amount: MoneyIn | None = None
    date: Day | None = None
    note: Note | None = None

    @field_validator("amount", mode="before")
    @classmethod
    def _amount(cls, value: Any, info: ValidationInfo) -> Decimal:
        return money_in(value, info)
