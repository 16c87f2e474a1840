"""Platform events kept for later, in ClickHouse (``store_events``): held refunds and refusals.

- *held*: a refund whose order has not arrived. Redis keeps it (``keys.held_refunds``)
  for the order's first commit; this row is its durable copy, read back when Redis lost
  it (``held_for``).
- *refused*: an event answered 2xx to the platform (which would otherwise retry and then
  disable the endpoint) but not recorded for a business reason: no exchange rate, a
  status move that is not allowed. The row keeps the raw body so the brand can see why
  (``GET /api/v1/stores/{id}/events``) and re-drive it once fixed.

Rows are written synchronously (in a thread) before the platform is answered: if
ClickHouse cannot take one the answer is 503, and the platform retries.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from tracker.conversions.orders import Held, merge_refunds
from tracker.core.timeutil import now_utc
from tracker.storage.clickhouse import ClickHouse, run_sync

_COLUMNS = (
    "brand_id, store_id, id, kind, platform, topic, delivery_id, order_id, code, message, detail, body, status, "
    "received_at, updated_at, version"
)
LISTED = "id, kind, platform, topic, delivery_id, order_id, code, message, status, received_at, updated_at"


def event_id(store_id: str, kind: str, delivery_id: str, body: bytes) -> str:
    """One id per store, kind and delivery (the body's digest when there is no delivery id): a
    retried insert of the same event folds into one row."""
    basis = delivery_id.encode() if delivery_id else hashlib.sha256(body).digest()
    return "sev_" + hashlib.sha256(store_id.encode() + b"\x00" + kind.encode() + b"\x00" + basis).hexdigest()[:24]


async def keep(
    ch: ClickHouse,
    *,
    brand_id: str,
    store_id: str,
    kind: str,
    platform: str,
    topic: str,
    delivery_id: str,
    order_id: str,
    body: bytes,
    code: str = "",
    message: str = "",
    detail: str = "",
) -> str:
    now = now_utc()
    ident = event_id(store_id, kind, delivery_id, body)
    row: dict[str, Any] = {
        "brand_id": brand_id, "store_id": store_id, "id": ident, "kind": kind, "platform": platform,
        "topic": topic, "delivery_id": delivery_id, "order_id": order_id, "code": code, "message": message,
        "detail": detail, "body": body.decode("utf-8", "replace"), "status": "open", "received_at": now,
        "updated_at": now, "version": time.time_ns(),
    }
    columns = list(row)
    await run_sync(lambda: ch.insert("store_events", [[row[c] for c in columns]], columns))
    return ident


async def resolve(ch: ClickHouse, row: dict[str, Any], status: str) -> None:
    """A new version of a kept event with its new status (``redriven``)."""
    new = {**row, "status": status, "updated_at": now_utc(), "version": time.time_ns()}
    columns = [c.strip() for c in _COLUMNS.split(",")]
    await run_sync(lambda: ch.insert("store_events", [[new[c] for c in columns]], columns))


async def held_for(ch: ClickHouse, brand_id: str, order_id: str) -> Held | None:
    """The refunds held in ClickHouse for an order that has no state yet (Redis lost its copy)."""
    rows = await run_sync(lambda: ch.query(
        "SELECT detail FROM store_events FINAL WHERE brand_id = {b:String} AND kind = 'held' "
        "AND order_id = {o:String} ORDER BY received_at",
        {"b": brand_id, "o": order_id},
    ))
    held: Held | None = None
    for (detail,) in rows:
        part = Held.decode(detail)
        if held is None:
            held = part
        elif part.currency == held.currency:
            held = Held(held.currency, merge_refunds(held.refunds, part.refunds), part.total or held.total)
    return held


async def page(ch: ClickHouse, brand_id: str, store_id: str, status: str | None, limit: int) -> list[dict[str, Any]]:
    return await run_sync(lambda: ch.query_dicts(
        f"SELECT {LISTED} FROM store_events FINAL WHERE brand_id = {{b:String}} AND store_id = {{s:String}} "
        "AND ({st:String} = '' OR status = {st:String}) ORDER BY received_at DESC, id LIMIT {n:UInt32}",
        {"b": brand_id, "s": store_id, "st": status or "", "n": limit},
    ))


async def one(ch: ClickHouse, brand_id: str, store_id: str, ident: str) -> dict[str, Any] | None:
    rows = await run_sync(lambda: ch.query_dicts(
        f"SELECT {_COLUMNS} FROM store_events FINAL WHERE brand_id = {{b:String}} AND store_id = {{s:String}} "
        "AND id = {i:String} LIMIT 1",
        {"b": brand_id, "s": store_id, "i": ident},
    ))
    return rows[0] if rows else None
