"""One influencer's conversions, newest first, without customer data; commission by status.

Reads ``conversions FINAL`` (the last version of each order) for one brand and one
influencer in a half-open UTC range, every value bound server-side. Only attributed
conversions are an influencer's. The columns are listed one by one: whatever customer
data a conversion carries (hashed customer ids, emails) never leaves this module.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from tracker.core import cursors, money
from tracker.core.timeutil import utc
from tracker.storage.clickhouse import ClickHouse

COLUMNS = (
    "conversion_id", "order_id", "status", "attribution", "link_code", "campaign_id", "currency", "amount",
    "refunded_amount", "commission", "occurred_at", "updated_at",
)
_SCOPE = (
    "brand_id = {brand:String} AND influencer_id = {influencer:String} AND attributed = 1 "
    "AND occurred_at >= {start:DateTime64(3, 'UTC')} AND occurred_at < {end:DateTime64(3, 'UTC')}"
)


def page(
    ch: ClickHouse, brand_id: str, influencer_id: str, start: datetime, end: datetime, limit: int,
    cursor: str | None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Up to ``limit`` conversions occurred in [start, end), newest first, after ``cursor``."""
    params: dict[str, Any] = {"brand": brand_id, "influencer": influencer_id, "start": start, "end": end,
                              "n": limit + 1}
    after = ""
    if cursor:
        at, cid = cursors.decode(cursor)
        params.update(c_at=at, c_id=cid)
        after = "AND (occurred_at, conversion_id) < ({c_at:DateTime64(3, 'UTC')}, {c_id:String})"
    rows = ch.query_dicts(
        f"SELECT {', '.join(COLUMNS)} FROM conversions FINAL WHERE {_SCOPE} {after} "
        "ORDER BY occurred_at DESC, conversion_id DESC LIMIT {n:UInt32}",
        params,
    )
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
    rows = ch.query_dicts(
        f"SELECT status, count() AS conversions, sum(commission) AS commission FROM conversions FINAL "
        f"WHERE {_SCOPE} GROUP BY status ORDER BY status",
        {"brand": brand_id, "influencer": influencer_id, "start": start, "end": end},
    )
    return [
        {"status": str(r["status"]), "conversions": int(r["conversions"]),
         "commission": money.round_money(Decimal(r["commission"]), currency)}
        for r in rows
    ]
