"""Request and response shapes of the quality routes (``tracker.quality.routes``)."""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

from pydantic import Field

from tracker.api.schema import Answer, Model, MoneyOut, Query, Timestamp
from tracker.quality.rules import FactorText
from tracker.registry.fields import Day

Flag = Literal["fast_click", "visitor_repeat", "self_referral", "coupon_leak"]


class ReviewIn(Model):
    decision: Literal["approve", "reject"] = Field(
        description="approve: the commission follows the conversion again; reject: it is void."
    )
    note: str = Field("", max_length=1000, description="Why (kept in the audit log).")


class Review(Answer):
    """A flagged conversion and its review decision (null while open)."""

    conversion_id: str
    order_id: str
    influencer_id: str
    campaign_id: str
    link_code: str
    attribution: str
    status: str
    currency: str
    amount: MoneyOut
    commission: MoneyOut
    occurred_at: Timestamp
    flags: list[Flag]
    evidence: dict[str, Any]
    review_status: Literal["open", "approved", "rejected"]
    note: str | None
    reviewed_at: Timestamp | None


class ReviewQueue(Answer):
    items: list[Review]


class ReviewQuery(Query):
    status: Literal["open", "decided", "all"] = Field("open", description="open: not decided yet.")
    limit: int = Field(100, ge=1, le=1000)


class CountryCount(Answer):
    country: str
    conversions: int


class CouponLeak(Answer):
    coupon_code: str
    link_code: str
    influencer_id: str
    campaign_id: str
    coupon_conversions: int = Field(description="Coupon-only conversions in the 7 days.")
    click_conversions: int = Field(description="The link's click-attributed conversions in the 7 days.")
    countries: list[CountryCount] = Field(description="Coupon-only conversions by the order's country.")
    link_click_countries: list[str] = Field(description="Countries of the link's non-bot clicks in the 7 days.")
    foreign_countries: list[str] = Field(description="Order countries where the link had no clicks.")
    first_order_at: Timestamp
    last_order_at: Timestamp
    reasons: list[Literal["factor", "country"]]


class CouponLeakList(Answer):
    model_config = Answer.model_config | {"serialize_by_alias": True, "validate_by_name": True}

    date_from: date = Field(alias="from")
    date_to: date = Field(alias="to")
    factor: FactorText
    items: list[CouponLeak]


class CouponLeakQuery(Query):
    to: Day | None = Field(None, description="Last UTC day of the 7-day window (default today).")
