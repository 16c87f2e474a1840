"""The conversion ledger: a brand's conversions with their commission status, reason and history.

Pages go newest first by ``(occurred_at, conversion_id)`` with a keyset cursor: a page never
repeats or skips a conversion that existed when the first page was read, whatever is
inserted meanwhile (a new order lands before the cursor or after it, never shifts the rest).
Rows come from ``conversion_ledger`` (migration 0073), sorted in that order, or for one
influencer from ``conversion_ledger_influencer`` (0076), sorted by influencer then that order.
A page reads its granules there, in two steps:

- the keys: the next candidates in page order, read without ``FINAL``, so the filters may match
  an older version too (a superset), and bloom filters skip the granules of other campaigns,
  stores or conversion ids;
- the rows: the candidates' last versions by key (``FINAL`` with the key in ``PREWHERE``, exact
  since all versions of a key share it), with ``commission_status`` computed in the query
  (``lifecycle.status_sql``, the paid lines looked up among the page's conversion ids only); by
  influencer, only rows of which ``conversion_moves`` (0080) has no later version under another
  influencer (older versions of a re-attributed conversion stay under its first influencer). Then
  the filters apply exactly, to last versions; candidates that fail them are dropped and more are
  read, in growing chunks.

The portal's page (``tracker.portal.ledger``) reads one influencer's rows the same way, its own
columns only; its commission by status folds the influencer's range of ``conversion_ledger_influencer``
with ``FINAL`` (the range on the sort key's prefix, in ``PREWHERE``), stale rows dropped likewise.

``flags`` are read from quality's ``conversion_flags`` for the page's orders. The history of one
conversion comes from ``conversion_versions`` (every version, kept after merges). Every value is
bound server-side.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from tracker.core import cursors, money
from tracker.core.timeutil import utc
from tracker.money.lifecycle import PAID_AMONG_SQL, PAID_IDS_SQL, payable_at, status_sql
from tracker.storage.clickhouse import ClickHouse

COLUMNS = (
    "conversion_id", "order_id", "status", "attributed", "attribution", "link_code", "influencer_id", "campaign_id",
    "store_id", "currency", "amount", "refunded_amount", "original_amount", "original_currency", "commission",
    "hold_days", "review", "reason", "occurred_at", "updated_at",
)
ORDER = "ORDER BY occurred_at DESC, conversion_id DESC"
LEDGER = "conversion_ledger"
BY_INFLUENCER = "conversion_ledger_influencer"
MOVES = "conversion_moves"
# The keys {occ} x {cids}: a conversion id has one occurred_at, so the pairs are exactly the keys. The
# instants narrow the primary key's ranges and are cheap to test before FINAL; the ids, strings, are
# tested after it, on the few rows left.
_AT = "occurred_at IN {occ:Array(DateTime64(3, 'UTC'))}"
_IDS = "conversion_id IN {cids:Array(String)}"
_STATUS = f"{status_sql('conversion_id IN (' + PAID_AMONG_SQL + ')')} AS commission_status"
ROWS = (
    f"SELECT {', '.join(COLUMNS)}, {_STATUS} FROM {LEDGER} FINAL PREWHERE brand_id = {{brand:String}} AND {_AT} "
    f"WHERE {_IDS} {ORDER}"
)


def _not_moved_away(ids: str) -> str:
    """Rows of ``BY_INFLUENCER`` no later version of which sits under another influencer (a version of a
    re-attributed conversion, in conversion_moves: stale are the pairs (id, v) with v below the newest
    there), the moves looked up among the conversions ``ids`` selects."""
    return (
        f"(conversion_id, version) NOT IN ("
        f"SELECT conversion_id, arrayJoin(range(max(version))) FROM {MOVES} PREWHERE brand_id = {{brand:String}} "
        f"AND {ids} WHERE influencer_id != {{influencer_id:String}} GROUP BY conversion_id)"
    )


def _rows_of_influencer(selected: str) -> str:
    return (
        f"SELECT {selected} FROM {BY_INFLUENCER} FINAL PREWHERE brand_id = {{brand:String}} "
        f"AND influencer_id = {{influencer_id:String}} AND {_AT} WHERE {_IDS} AND {_not_moved_away(_IDS)} {ORDER}"
    )


ROWS_BY_INFLUENCER = _rows_of_influencer(f"{', '.join(COLUMNS)}, {_STATUS}")
# One influencer's range folded by key (the sort key's prefix bounds what FINAL merges); stale rows dropped as in
# ROWS_BY_INFLUENCER, the moves looked up among the range's conversion ids only.
_RANGE = ("brand_id = {brand:String} AND influencer_id = {influencer_id:String} "
          "AND occurred_at >= {start:DateTime64(3, 'UTC')} AND occurred_at < {end:DateTime64(3, 'UTC')}")
BY_STATUS = (
    f"SELECT status, count() AS conversions, sum(commission) AS commission FROM {BY_INFLUENCER} FINAL "
    f"PREWHERE {_RANGE} WHERE attributed = 1 AND "
    f"{_not_moved_away(f'conversion_id IN (SELECT conversion_id FROM {BY_INFLUENCER} WHERE {_RANGE})')} "
    "GROUP BY status ORDER BY status"
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
    exact = {name: str(filters[name]) for name in _FILTERS if filters.get(name)}
    attribution = filters.get("attribution")
    if attribution:
        exact["attribution"] = "" if attribution == "none" else str(attribution)
    for name, value in exact.items():
        params[name] = value
        where.append(_candidate_filter(name))
    after = cursors.decode(cursor) if cursor else None
    found = _read(ch, brand_id, now, where, params, exact, after, limit)
    more = len(found) > limit
    found = found[:limit]
    next_cursor = cursors.encode(found[-1]["occurred_at"], found[-1]["conversion_id"]) if more and found else None
    return [item(r) for r in with_flags(ch, brand_id, found)], next_cursor


def _candidate_filter(name: str) -> str:
    if name != "commission_status":
        return f"{name} = {{{name}:String}}"
    # The brand's paid lines are read once per chunk of keys, where any of its conversions may be.
    return f"{status_sql('conversion_id IN (' + PAID_IDS_SQL + ')')} = {{commission_status:String}}"


def with_flags(ch: ClickHouse, brand_id: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows with the quality rules that flag them (``tracker.quality``; none when not flagged)."""
    if not rows:
        return rows
    flags = {
        str(f["order_id"]): list(f["flags"]) for f in ch.query_dicts(
            "SELECT order_id, flags FROM conversion_flags FINAL PREWHERE brand_id = {brand:String} "
            "AND order_id IN {orders:Array(String)}", {"brand": brand_id, "orders": [r["order_id"] for r in rows]})
    }
    return [{**r, "flags": flags.get(str(r["order_id"]), [])} for r in rows]


def rows_by_key(ch: ClickHouse, brand_id: str, now: datetime, keys: list[tuple[Any, ...]],
                influencer_id: str | None = None, sql: str | None = None) -> list[dict[str, Any]]:
    """The last versions of the conversions ``keys`` ((occurred_at, conversion_id) pairs), in page order;
    with ``influencer_id``, those of them that are this influencer's (read by ``sql`` when given)."""
    if not keys:
        return []
    params = {"brand": brand_id, "now": now, "occ": list(dict.fromkeys(k[0] for k in keys)),
              "cids": list(dict.fromkeys(str(k[1]) for k in keys))}
    if influencer_id is None:
        return ch.query_dicts(ROWS, params)
    return ch.query_dicts(sql or ROWS_BY_INFLUENCER, {**params, "influencer_id": influencer_id})


def influencer_rows(ch: ClickHouse, brand_id: str, influencer_id: str, start: datetime, end: datetime,
                    columns: tuple[str, ...], limit: int, after: tuple[datetime, str] | None) -> list[dict[str, Any]]:
    """Up to ``limit + 1`` of the influencer's attributed conversions occurred in [start, end), in page
    order after ``after``: last versions, a re-attributed conversion under its new influencer only.

    Only ``columns`` (some of ``COLUMNS``) are read, without ``commission_status``: the portal's page
    shows neither customer data nor the brand's review, and skips the paid lines' lookup."""
    unknown = set(columns) - set(COLUMNS)
    if unknown:
        raise ValueError(f"Columns {sorted(unknown)} are not the ledger's.")
    exact = {"influencer_id": influencer_id, "attributed": "1"}
    sql = _rows_of_influencer(", ".join(dict.fromkeys((*columns, *exact))))
    params: dict[str, Any] = {"brand": brand_id, "influencer_id": influencer_id, "start": start, "end": end}
    where = ["brand_id = {brand:String}", "influencer_id = {influencer_id:String}", "attributed = 1",
             "occurred_at >= {start:DateTime64(3, 'UTC')}", "occurred_at < {end:DateTime64(3, 'UTC')}"]
    # No commission status is computed, so no instant "now" matters.
    return _read(ch, brand_id, start, where, params, exact, after, limit, sql)


def influencer_by_status(ch: ClickHouse, brand_id: str, influencer_id: str, start: datetime,
                         end: datetime) -> list[dict[str, Any]]:
    """Conversions and summed commission per status of the influencer's attributed conversions occurred
    in [start, end), over last versions (those a re-attribution moved away excluded), by status."""
    return ch.query_dicts(BY_STATUS, {"brand": brand_id, "influencer_id": influencer_id, "start": start, "end": end})


def _read(ch: ClickHouse, brand_id: str, now: datetime, where: list[str], params: dict[str, Any],
          exact: dict[str, str], after: tuple[datetime, str] | None, limit: int,
          sql: str | None = None) -> list[dict[str, Any]]:
    """Up to ``limit + 1`` rows after ``after`` whose last version passes ``exact``."""
    influencer_id = exact.get("influencer_id")
    table = LEDGER if influencer_id is None else BY_INFLUENCER
    chunk = limit + 1
    found: list[dict[str, Any]] = []
    while len(found) <= limit:
        conds = list(where)
        if after is not None:
            params.update(c_at=after[0], c_id=after[1])
            # The first condition alone narrows the primary key's range; the tuple is the exact bound.
            conds += ["occurred_at <= {c_at:DateTime64(3, 'UTC')}",
                      "(occurred_at, conversion_id) < ({c_at:DateTime64(3, 'UTC')}, {c_id:String})"]
        keys = ch.query(f"SELECT occurred_at, conversion_id FROM {table} WHERE {' AND '.join(conds)} "
                        f"{ORDER} LIMIT {{n:UInt32}}", {**params, "n": chunk})
        if not keys:
            break
        found += [r for r in rows_by_key(ch, brand_id, now, keys, influencer_id, sql)
                  if all(str(r[name]) == value for name, value in exact.items())]
        after = (keys[-1][0], str(keys[-1][1]))
        if len(keys) < chunk:
            break
        chunk = min(chunk * 4, MAX_CHUNK)
    return found


def one(ch: ClickHouse, brand_id: str, conversion_id: str, now: datetime) -> dict[str, Any] | None:
    keys = ch.query("SELECT occurred_at, conversion_id FROM conversion_ledger WHERE brand_id = {brand:String} "
                    "AND conversion_id = {cid:String} LIMIT 1", {"brand": brand_id, "cid": conversion_id})
    rows = rows_by_key(ch, brand_id, now, keys)
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
