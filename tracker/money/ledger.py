"""The conversion ledger: a brand's conversions with their commission status, reason and history.

Pages go newest first by ``(occurred_at, conversion_id)`` with a keyset cursor: a page never
repeats or skips a conversion that existed when the first page was read, whatever is
inserted meanwhile (a new order lands before the cursor or after it, never shifts the rest).
A page is two reads: the next candidates in that order from ``conversion_order`` (sorted by
it, so only the page's granules are read), then their last versions from ``conversions
FINAL`` by primary key, where the filters apply exactly (status, influencer, ... change with
new versions). With a filter on what versions change (status, influencer, ...) a page is one
read of ``conversions FINAL`` with the filter instead.
``commission_status`` is computed in the query (``lifecycle.status_sql``), ``flags`` read from
quality's ``conversion_flags`` for the page's orders. The history of
one conversion comes from ``conversion_versions`` (every version, kept after merges). Every
value is bound server-side.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from tracker.core import cursors, money
from tracker.core.timeutil import utc
from tracker.money.lifecycle import PAID_IDS_SQL, payable_at, status_sql
from tracker.storage.clickhouse import ClickHouse

COLUMNS = (
    "conversion_id", "order_id", "status", "attributed", "attribution", "link_code", "influencer_id", "campaign_id",
    "store_id", "currency", "amount", "refunded_amount", "original_amount", "original_currency", "commission",
    "hold_days", "review", "reason", "occurred_at", "updated_at",
)
SELECT = (
    f"SELECT {', '.join(COLUMNS)}, {status_sql('conversion_id IN (' + PAID_IDS_SQL + ')')} AS commission_status "
    "FROM conversions FINAL"
)
# The same for the orders of one page: the paid lines looked up by the page's conversion ids.
_PAGE_PAID = PAID_IDS_SQL.replace(
    "AND kind = 'commission'", "AND conversion_id IN {cids:Array(String)} AND kind = 'commission'")
SELECT_PAGE = (
    f"SELECT {', '.join(COLUMNS)}, {status_sql('conversion_id IN (' + _PAGE_PAID + ')')} AS commission_status "
    "FROM conversions FINAL WHERE brand_id = {brand:String} AND order_id IN {orders:Array(String)}"
)
MAX_CHUNK = 200_000
_FILTERS = ("status", "influencer_id", "campaign_id", "store_id", "commission_status")
_HISTORY_FIELDS = ("status", "amount", "refunded_amount", "commission", "attribution", "link_code", "influencer_id",
                   "campaign_id", "review")


def item(r: dict[str, Any]) -> dict[str, Any]:
    """A ledger row as the API shows it (money at the currency's scale, "" as null)."""
    cur, orig = str(r["currency"]), str(r["original_currency"])
    status = r["commission_status"] or None
    return {
        "conversion_id": r["conversion_id"], "order_id": r["order_id"], "status": r["status"],
        "attributed": bool(int(r["attributed"])), "attribution": r["attribution"] or None,
        "link_code": r["link_code"] or None, "influencer_id": r["influencer_id"] or None,
        "campaign_id": r["campaign_id"] or None, "store_id": r["store_id"], "currency": cur,
        "amount": money.round_money(Decimal(r["amount"]), cur),
        "refunded_amount": money.round_money(Decimal(r["refunded_amount"]), cur),
        "original_amount": money.round_money(Decimal(r["original_amount"]), orig), "original_currency": orig,
        "commission": money.round_money(Decimal(r["commission"]), cur),
        "commission_status": status,
        "payable_at": payable_at(r) if status in ("pending", "payable") else None,
        "hold_days": int(r["hold_days"]), "reason": r["reason"], "flags": list(r.get("flags") or []),
        "occurred_at": utc(r["occurred_at"]), "updated_at": utc(r["updated_at"]),
    }


def page(ch: ClickHouse, brand_id: str, filters: dict[str, Any], now: datetime, limit: int,
         cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
    """Up to ``limit`` conversions, newest first, after ``cursor``; the next cursor or None at the end."""
    params: dict[str, Any] = {"brand": brand_id, "now": now}
    where = ["brand_id = {brand:String}"]
    start: date | None = filters.get("from")
    end: date | None = filters.get("to")
    if start is not None:
        params["start"] = datetime(start.year, start.month, start.day)
        where.append("occurred_at >= {start:DateTime64(3, 'UTC')}")
    if end is not None:
        params["end"] = datetime(end.year, end.month, end.day) + timedelta(days=1)
        where.append("occurred_at < {end:DateTime64(3, 'UTC')}")
    exact: list[str] = []
    for name in _FILTERS:
        if filters.get(name):
            params[name] = filters[name]
            exact.append(f"{name} = {{{name}:String}}")
    attribution = filters.get("attribution")
    if attribution:
        params["attribution"] = "" if attribution == "none" else attribution
        exact.append("attribution = {attribution:String}")
    after = cursors.decode(cursor) if cursor else None
    if exact:
        found = _filtered(ch, [*where, *exact], params, after, limit)
    else:
        found = _unfiltered(ch, where, params, after, limit)
    more = len(found) > limit
    found = found[:limit]
    next_cursor = cursors.encode(found[-1]["occurred_at"], found[-1]["conversion_id"]) if more and found else None
    return [item(r) for r in with_flags(ch, brand_id, found)], next_cursor


def with_flags(ch: ClickHouse, brand_id: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows with the quality rules that flag them (``tracker.quality``; none when not flagged)."""
    if not rows:
        return rows
    flags = {
        str(f["order_id"]): list(f["flags"]) for f in ch.query_dicts(
            "SELECT order_id, flags FROM conversion_flags FINAL WHERE brand_id = {brand:String} "
            "AND order_id IN {orders:Array(String)}", {"brand": brand_id, "orders": [r["order_id"] for r in rows]})
    }
    return [{**r, "flags": flags.get(str(r["order_id"]), [])} for r in rows]


def _filtered(ch: ClickHouse, where: list[str], params: dict[str, Any], after: tuple[datetime, str] | None,
              limit: int) -> list[dict[str, Any]]:
    """With filters on what versions change: one read of ``conversions FINAL`` with them."""
    if after is not None:
        params.update(c_at=after[0], c_id=after[1])
        where = [*where, "(occurred_at, conversion_id) < ({c_at:DateTime64(3, 'UTC')}, {c_id:String})"]
    return ch.query_dicts(
        f"{SELECT} WHERE {' AND '.join(where)} ORDER BY occurred_at DESC, conversion_id DESC LIMIT {{n:UInt32}}",
        {**params, "n": limit + 1},
    )


def _unfiltered(ch: ClickHouse, where: list[str], params: dict[str, Any], after: tuple[datetime, str] | None,
                limit: int) -> list[dict[str, Any]]:
    """Without: the page's orders from ``conversion_order``, then their last versions by key."""
    chunk = limit + 1
    found: list[dict[str, Any]] = []
    while len(found) <= limit:
        conds = list(where)
        if after is not None:
            params.update(c_at=after[0], c_id=after[1])
            conds.append("(occurred_at, conversion_id) < ({c_at:DateTime64(3, 'UTC')}, {c_id:String})")
        candidates = ch.query(
            f"SELECT occurred_at, conversion_id, order_id FROM conversion_order WHERE {' AND '.join(conds)} "
            f"ORDER BY occurred_at DESC, conversion_id DESC LIMIT {{n:UInt32}}", {**params, "n": chunk},
        )
        if not candidates:
            break
        orders = list(dict.fromkeys(str(c[2]) for c in candidates))
        cids = list(dict.fromkeys(str(c[1]) for c in candidates))
        rows = ch.query_dicts(
            SELECT_PAGE + " ORDER BY occurred_at DESC, conversion_id DESC",
            {**params, "orders": orders, "cids": cids},
        )
        found += rows
        after = (candidates[-1][0], str(candidates[-1][1]))
        if len(candidates) < chunk:
            break
        chunk = min(chunk * 4, MAX_CHUNK)
    return found


def one(ch: ClickHouse, brand_id: str, conversion_id: str, now: datetime) -> dict[str, Any] | None:
    rows = ch.query_dicts(
        f"{SELECT} WHERE brand_id = {{brand:String}} AND conversion_id = {{cid:String}} LIMIT 1",
        {"brand": brand_id, "cid": conversion_id, "now": now},
    )
    return item(with_flags(ch, brand_id, rows)[0]) if rows else None


def history(ch: ClickHouse, brand_id: str, order_id: str) -> list[dict[str, Any]]:
    """Every version of an order, oldest first, with what changed it and the fields it changed."""
    rows = ch.query_dicts(
        "SELECT version, any(change) AS change, any(status) AS status, any(currency) AS currency, "
        "any(amount) AS amount, any(refunded_amount) AS refunded_amount, any(commission) AS commission, "
        "any(attribution) AS attribution, any(link_code) AS link_code, any(influencer_id) AS influencer_id, "
        "any(campaign_id) AS campaign_id, any(review) AS review, any(updated_at) AS updated_at, "
        "min(recorded_at) AS recorded_at FROM conversion_versions "
        "WHERE brand_id = {brand:String} AND order_id = {order:String} GROUP BY version ORDER BY version",
        {"brand": brand_id, "order": order_id},
    )
    out: list[dict[str, Any]] = []
    before: dict[str, Any] | None = None
    for r in rows:
        cur = str(r["currency"])
        for c in ("amount", "refunded_amount", "commission"):
            r[c] = money.round_money(Decimal(r[c]), cur)
        changed = [f for f in _HISTORY_FIELDS if before is not None and before[f] != r[f]]
        out.append({
            "version": int(r["version"]), "change": r["change"] or ("created" if before is None else "changed"),
            "changed": changed if before is not None else list(_HISTORY_FIELDS[:4]),
            "status": r["status"], "amount": r["amount"], "refunded_amount": r["refunded_amount"],
            "commission": r["commission"], "attribution": r["attribution"] or None,
            "link_code": r["link_code"] or None, "influencer_id": r["influencer_id"] or None,
            "campaign_id": r["campaign_id"] or None, "updated_at": utc(r["updated_at"]),
            "recorded_at": utc(r["recorded_at"]),
        })
        before = r
    return out
