"""Request and answer shapes of the money routes: the ledger, re-attribution, payouts, statements."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from tracker.api.schema import Answer, Model, MoneyOut, Query, Timestamp
from tracker.registry.fields import Day, digits

CommissionStatusName = Literal["pending", "payable", "paid", "void", "review"]
Ref = Annotated[str, Field(min_length=1, max_length=64)]


class LedgerQuery(Query):
    from_: Annotated[date | None, Field(alias="from", description="First day of occurred_at (UTC), inclusive.")] = None
    to: Annotated[date | None, Field(description="Last day of occurred_at (UTC), inclusive.")] = None
    status: Literal["pending", "approved", "rejected", "refunded"] | None = None
    commission_status: CommissionStatusName | None = None
    influencer_id: Ref | None = None
    campaign_id: Ref | None = None
    store_id: Ref | None = None
    attribution: Literal["click", "coupon", "customer", "manual", "none"] | None = Field(
        None, description="`none`: unattributed conversions.")
    limit: Annotated[int, Field(ge=1, le=1000), BeforeValidator(digits)] = 100
    cursor: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    format: Literal["json", "csv"] = "json"


class FormatQuery(Query):
    format: Literal["json", "csv"] = "json"


class LedgerConversion(Answer):
    conversion_id: str
    order_id: str
    status: str
    attributed: bool
    attribution: str | None
    link_code: str | None
    influencer_id: str | None
    campaign_id: str | None
    store_id: str
    currency: str
    amount: MoneyOut
    refunded_amount: MoneyOut
    original_amount: MoneyOut
    original_currency: str
    commission: MoneyOut
    commission_status: CommissionStatusName | None = Field(
        description="null for an unattributed conversion (it earns no commission).")
    payable_at: Timestamp | None = Field(description="When the hold ends (approved or pending conversions).")
    hold_days: int
    reason: str = Field(description="Why it was attributed (or not), in words.")
    flags: list[str]
    duplicate: bool = False
    occurred_at: Timestamp
    updated_at: Timestamp


class LedgerPage(Answer):
    items: list[LedgerConversion]
    next_cursor: str | None


class Version(Answer):
    version: int
    change: str = Field(description="What made this version, in words.")
    changed: list[str] = Field(description="The fields that differ from the version before.")
    status: str
    amount: MoneyOut
    refunded_amount: MoneyOut
    commission: MoneyOut
    attribution: str | None
    link_code: str | None
    influencer_id: str | None
    campaign_id: str | None
    updated_at: Timestamp
    recorded_at: Timestamp


class LedgerDetail(LedgerConversion):
    history: list[Version]


class AttributionIn(Model):
    link_code: Annotated[str, Field(min_length=1, max_length=64)] | None
    note: Annotated[str, Field(max_length=500)] = ""


class PayoutIn(Model):
    period_end: Day | None = Field(None, description="Commission that occurred on or before this day (UTC); "
                                    "default today.")
    influencer_id: Ref | None = None


class PaidIn(Model):
    reference: Annotated[str, Field(max_length=200)] = ""


class PayoutQuery(Query):
    status: Literal["open", "paid"] | None = None
    influencer_id: Ref | None = None


class PayoutLine(Answer):
    conversion_id: str
    order_id: str
    kind: Literal["commission", "clawback"]
    amount: MoneyOut


class Payout(Answer):
    id: str
    influencer_id: str
    influencer_name: str
    currency: str
    amount: MoneyOut
    lines: list[PayoutLine]
    status: Literal["open", "paid"]
    reference: str | None
    period_end: date
    created_at: Timestamp
    paid_at: Timestamp | None


class PayoutList(Answer):
    items: list[Payout]


class StatementQuery(Query):
    from_: Annotated[date | None, Field(alias="from", description="First day (UTC) of entries shown.")] = None
    to: Annotated[date | None, Field(description="Last day (UTC) of entries shown, inclusive.")] = None
    format: Literal["json", "csv"] = "json"


class StatementEntry(Answer):
    seq: int
    at: str
    kind: str
    object_id: str
    order_id: str
    detail: str
    amount: str
    balance: str
    prev_hash: str
    hash: str


class StatementTotals(Answer):
    earned: MoneyOut
    clawed_back: MoneyOut
    paid: MoneyOut
    in_open_payouts: MoneyOut
    balance: MoneyOut


class Statement(Answer):
    influencer_id: str
    currency: str
    entries: list[StatementEntry]
    head_hash: str
    first_prev_hash: str
    totals: StatementTotals


def dump_rows(items: list[Any]) -> list[dict[str, Any]]:
    return [i.dump() for i in items]
