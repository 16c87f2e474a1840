"""Request and answer shapes of the influencer routes (``/api/v1/me/*``, portal links)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, field_validator

from tracker.api.schema import Answer, MoneyOut, Query, Timestamp, invalid
from tracker.registry.fields import digits

ME_GROUPS = ("day", "link", "campaign")


class PortalLink(Answer):
    url: str = Field(description="One-time sign-in link to /portal; works once, until expires_at.")
    expires_at: Timestamp


class MeInfluencer(Answer):
    id: str
    name: str
    handle: str | None
    platform: str | None


class MeBrand(Answer):
    id: str
    name: str
    currency: str


class Me(Answer):
    influencer: MeInfluencer
    brand: MeBrand
    via: Literal["key", "session"] = Field(description="How this request is signed in.")


class MeLink(Answer):
    code: str
    short_url: str
    destination_url: str
    coupon_code: str | None
    campaign_id: str
    campaign_name: str
    disabled: bool
    expires_at: Timestamp | None
    created_at: Timestamp
    qr_svg: str = Field(description="Path of the link's QR code as SVG (same credentials).")
    qr_png: str = Field(description="Path of the link's QR code as PNG (same credentials).")


class MeLinkList(Answer):
    items: list[MeLink]


class Range(Query):
    from_: Annotated[date, Field(alias="from", description="First day, inclusive (YYYY-MM-DD).")]
    to: Annotated[date, Field(description="Last day, inclusive (YYYY-MM-DD).")]


class MeReportQuery(Range):
    group_by: str = Field("day", description="Comma-separated: day, link, campaign (empty: totals only).")
    tz: str = Field("UTC", description="IANA time zone of the dates and of `day`.")
    format: Literal["json", "csv"] = "json"

    @field_validator("group_by")
    @classmethod
    def _groups(cls, value: str) -> str:
        keys = [k.strip().lower() for k in value.split(",") if k.strip()]
        bad = [k for k in keys if k not in ME_GROUPS]
        if bad:
            raise invalid("bad_group_by", f"has {bad[0]!r}; an influencer's report groups by day, link or campaign")
        return ",".join(dict.fromkeys(keys))


class MeConversionsQuery(Range):
    limit: Annotated[int, Field(ge=1, le=500), BeforeValidator(digits)] = 100
    cursor: Annotated[str, Field(min_length=1, max_length=200)] | None = None


class MeConversion(Answer):
    conversion_id: str
    order_id: str
    status: str
    attribution: str | None
    link_code: str
    campaign_id: str
    currency: str
    amount: MoneyOut
    refunded_amount: MoneyOut
    commission: MoneyOut
    occurred_at: Timestamp
    updated_at: Timestamp


class CommissionByStatus(Answer):
    status: str = Field(description="The conversion's status: pending, approved, refunded or rejected.")
    conversions: int
    commission: MoneyOut


class MeConversionList(Answer):
    items: list[MeConversion]
    next_cursor: str | None
    commission_by_status: list[CommissionByStatus] = Field(
        description="Over the whole range (not only this page)."
    )

