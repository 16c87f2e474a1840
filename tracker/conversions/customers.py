"""Returning customers: the link that brought a customer's first attributed order.

Kept in Redis per brand, in 4096 hash shards (``keys.customer_shard``, small hashes stay
compact), field = the customer's keyed hash, value = ``"<link_id>:<first order ms>"``;
the commit script of an attributed order writes it when the customer has none or an
earlier one arrives. When the brand's order filter is not complete (Redis lost its data,
``orderset``), the mapping is read from ClickHouse instead (``first_orders``), and the
rebuild puts every customer's mapping back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tracker.core import keys
from tracker.core.timeutil import utc
from tracker.storage.clickhouse import ClickHouse

# Statuses whose attributed order makes its customer one of the link's.
_BRINGING = ("pending", "approved", "refunded")


@dataclass(frozen=True, slots=True)
class FirstOrder:
    link_id: int
    first_ms: int

    def encode(self) -> str:
        return f"{self.link_id}:{self.first_ms}"

    @classmethod
    def decode(cls, raw: str | bytes | None) -> FirstOrder | None:
        if not raw:
            return None
        text = raw.decode() if isinstance(raw, bytes) else raw
        link, _, ms = text.partition(":")
        if not link.isdigit() or not ms.isdigit():
            return None
        return cls(int(link), int(ms))


def shard_key(brand_id: str, customer_hash: str) -> str:
    return keys.customer_shard(brand_id, customer_hash[:3])


def first_orders(ch: ClickHouse, brand_id: str, hashes: list[str]) -> dict[str, FirstOrder]:
    """Each customer's first attributed order, read from ClickHouse (``hashes`` empty: every customer)."""
    rows = ch.query(
        "SELECT customer_hash, argMin(link_id, occurred_at), toUnixTimestamp64Milli(min(occurred_at)) "
        "FROM conversions FINAL WHERE brand_id = {b:String} AND attributed = 1 AND customer_hash != '' "
        "AND status IN {s:Array(String)} AND (empty({h:Array(String)}) OR has({h:Array(String)}, customer_hash)) "
        "GROUP BY customer_hash",
        {"b": brand_id, "s": list(_BRINGING), "h": hashes},
    )
    return {str(h): FirstOrder(int(link), int(ms)) for h, link, ms in rows if int(link) > 0}


def mapping_of(row: dict[str, Any]) -> FirstOrder | None:
    """The mapping an order row gives its customer (attributed, bringing status), or None."""
    if not row.get("customer_hash") or not int(row.get("attributed") or 0) or int(row.get("link_id") or 0) <= 0:
        return None
    if row.get("status") not in _BRINGING:
        return None
    occurred = row["occurred_at"]
    if isinstance(occurred, str):  # a stream entry's JSON
        occurred = utc(datetime.fromisoformat(occurred))
    ms = occurred if isinstance(occurred, int) else int(utc(occurred).timestamp() * 1000)
    return FirstOrder(int(row["link_id"]), ms)
