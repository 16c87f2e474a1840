"""One influencer's conversions, newest first, without customer data; commission by status.

For one brand and one influencer in a half-open UTC range, read through the ledger's table
sorted by influencer (``tracker.money.ledger``): last versions only, a re-attributed
conversion under its new influencer only, every value bound server-side. Only attributed
conversions are an influencer's. The columns are listed one by one and only they are read:
whatever customer data a conversion carries (hashed customer ids, emails) never leaves
ClickHouse here.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from tracker.core import cursors, money
from tracker.core.timeutil import utc
from tracker.money import ledger
from tracker.storage.clickhouse import ClickHouse

COLUMNS = (
    "conversion_id", "order_id", "status", "attribution", "link_code", "campaign_id", "currency", "amount",
    "refunded_amount", "commission", "occurred_at", "updated_at",
)


def page(
    ch: ClickHouse, brand_id: str, influencer_id: str, start: datetime, end: datetime, limit: int,
    cursor: str | None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Up to ``limit`` conversions occurred in [start, end), newest first, after ``cursor``."""
    after = cursors.decode(cursor) if cursor else None
    rows = ledger.influencer_rows(ch, brand_id, influencer_id, start, end, COLUMNS, limit, after)
    more = len(rows) > limit
    rows = rows[:limit]
    items = []
    for r in rows:
        cur = str(r["currency"])
        items.append({
            **{c: r[c] for c in ("conversion_id", "order_id", "status", "link_code", "campaign_id")},
            "attribution": r["attribution"] or None,
            "currency": cur,
            "amount": money.round_money(Decimal(r["amount"]), cur),
            "refunded_amount": money.round_money(Decimal(r["refunded_amount"]), cur),
            "commission": money.round_money(Decimal(r["commission"]), cur),
            "occurred_at": utc(r["occurred_at"]),
            "updated_at": utc(r["updated_at"]),
        })
    next_cursor = cursors.encode(rows[-1]["occurred_at"], rows[-1]["conversion_id"]) if more and rows else None
    return items, next_cursor


def commission_by_status(
    ch: ClickHouse, brand_id: str, influencer_id: str, start: datetime, end: datetime, currency: str
) -> list[dict[str, Any]]:
    """Conversions and commission per conversion status in [start, end).

    Each conversion's commission was rounded half-up to the currency when it was recorded,
    so the sums add rounded values, as reports do.
    """
    rows = ledger.influencer_by_status(ch, brand_id, influencer_id, start, end)
    return [
        {"status": str(r["status"]), "conversions": int(r["conversions"]),
         "commission": money.round_money(Decimal(r["commission"]), currency)}
        for r in rows
    ]
