"""A brand's quality rules: the model of ``PUT/GET /api/v1/rules`` and their storage.

Defaults are DESIGN.md's; ``coupon_leak_factor`` is the brand-set factor of the coupon-leak
detector (``tracker.quality.leaks``). A brand that never set rules has the defaults.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated

from pydantic import Field, WithJsonSchema, field_validator

from tracker.api.schema import Answer, Model, Timestamp, invalid
from tracker.core.timeutil import now_utc
from tracker.storage.clickhouse import ClickHouse

FactorText = Annotated[
    str,
    WithJsonSchema({"type": "string", "pattern": r"^[0-9]+(\.[0-9]{1,2})?$", "examples": ["3"]}),
]
_FACTOR = re.compile(r"^[0-9]{1,4}(\.[0-9]{1,2})?$")


class RulesIn(Model):
    """``PUT /api/v1/rules``: every rule; a field left out takes its default."""

    min_click_seconds: int = Field(
        10, ge=0, le=86_400,
        description="fast_click: a click-attributed conversion less than this many seconds after its click (0: off).",
    )
    max_conversions_per_visitor_day: int = Field(
        3, ge=0, le=10_000,
        description="visitor_repeat: every conversion of a visitor (by click) with more than this many conversions "
        "in a UTC day (0: off).",
    )
    self_referral: bool = Field(
        True, description="self_referral: the order's customer email is the influencer's own (keyed hashes)."
    )
    coupon_leak: bool = Field(True, description="coupon_leak: coupon-only conversions of a suspect coupon.")
    coupon_leak_factor: FactorText = Field(
        "3",
        description="A coupon is suspect when its coupon-only conversions in 7 days exceed this factor times "
        "its link's click-attributed ones (at least 1). A decimal string from 1 to 1000.",
    )

    @field_validator("coupon_leak_factor", mode="before")
    @classmethod
    def _factor(cls, value: object) -> str:
        text = str(value).strip() if isinstance(value, str | int) and not isinstance(value, bool) else ""
        if not _FACTOR.match(text) or not 1 <= Decimal(text) <= 1000:
            raise invalid("invalid_field", "coupon_leak_factor is not a decimal string from 1 to 1000 such as \"3\"")
        return f"{Decimal(text).normalize():f}"


class Rules(Answer):
    """The brand's rules as stored; ``updated_at`` null while the defaults apply."""

    min_click_seconds: int = 10
    max_conversions_per_visitor_day: int = 3
    self_referral: bool = True
    coupon_leak: bool = True
    coupon_leak_factor: FactorText = "3"
    updated_at: Timestamp | None = None

    @property
    def factor(self) -> Decimal:
        return Decimal(self.coupon_leak_factor)


DEFAULTS = Rules()
_COLUMNS = (
    "brand_id", "min_click_seconds", "max_conversions_per_visitor_day", "self_referral", "coupon_leak",
    "coupon_leak_factor", "updated_at",
)


def load(ch: ClickHouse, brand_id: str) -> Rules:
    rows = ch.query_dicts(
        f"SELECT {', '.join(_COLUMNS[1:])} FROM quality_rules FINAL WHERE brand_id = {{b:String}} LIMIT 1",
        {"b": brand_id},
    )
    if not rows:
        return DEFAULTS
    r = rows[0]
    return Rules(
        min_click_seconds=int(r["min_click_seconds"]),
        max_conversions_per_visitor_day=int(r["max_conversions_per_visitor_day"]),
        self_referral=bool(r["self_referral"]),
        coupon_leak=bool(r["coupon_leak"]),
        coupon_leak_factor=f"{Decimal(r['coupon_leak_factor']).normalize():f}",
        updated_at=r["updated_at"],
    )


def save(ch: ClickHouse, brand_id: str, rules: RulesIn) -> Rules:
    at = now_utc()
    ch.insert(
        "quality_rules",
        [[brand_id, rules.min_click_seconds, rules.max_conversions_per_visitor_day, int(rules.self_referral),
          int(rules.coupon_leak), Decimal(rules.coupon_leak_factor), at]],
        _COLUMNS,
    )
    return load(ch, brand_id)
