"""PATCH bodies of the registry's edit routes (``tracker.registry.editroutes``).

Only the fields sent change; an empty body is refused (nothing to change). Each is strict
like every registry body (``models.Body``): an unknown field answers 422 naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from pydantic import ConfigDict, ValidationInfo, field_validator, model_validator

from tracker.api.schema import invalid
from tracker.core import money
from tracker.registry.fields import Currency, Day, Handle, MoneyIn, Name, Note, Platform
from tracker.registry.models import Body, patch_schema


class Patch(Body):
    model_config = ConfigDict(json_schema_extra=patch_schema)

    @model_validator(mode="before")
    @classmethod
    def _a_change(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and not data:
            raise invalid("invalid_field", f"Send at least one of {', '.join(cls.model_fields)}")
        return data


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
        currency = info.data.get("currency") or (info.context or {}).get("currency", "USD")
        try:
            return money.parse_amount(value, currency, field="")
        except ValueError as exc:
            raise invalid("invalid_field", str(exc).strip().rstrip(".")) from None
