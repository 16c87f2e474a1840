"""Rebuilding a brand's known-orders filter and customer map after Redis lost them.

Runs in the background of one process (a Redis lock), started by the first read that
found the filter incomplete; until it finishes, reads ask ClickHouse exactly as before.
Order of the reads: the conversion stream first, then ClickHouse. An order accepted
before the stream was read is in the stream or, once ingested (ingest trims an entry
only after it is in ClickHouse), in ClickHouse when that is read; one accepted after is
added to the filter by its own commit. So the filter lacks no order when it is marked
complete.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tracker.conversions import customers
from tracker.conversions.customers import FirstOrder
from tracker.conversions.orderset import KEEP_EARLIEST, REBUILD_LOCK_SECONDS, OrderSet
from tracker.core import keys
from tracker.storage.clickhouse import ClickHouse, run_sync

log = logging.getLogger("tracker.conversions.rebuild")
_STREAM_CHUNK = 5000
_RETRY_SECONDS = 5.0


class Rebuilder:
    def __init__(self, redis: aioredis.Redis, ch: ClickHouse, orders: OrderSet) -> None:
        self.redis = redis
        self.ch = ch
        self.orders = orders
        self._keep_earliest = redis.register_script(KEEP_EARLIEST)
        self._last_try: dict[str, float] = {}
        self.completed = 0

    async def __call__(self, brand_id: str) -> None:
        # At most one try per brand every few seconds (another process may hold the lock).
        wait = self._last_try.get(brand_id, -_RETRY_SECONDS) + _RETRY_SECONDS - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        self._last_try[brand_id] = time.monotonic()
        token = secrets.token_hex(8)
        lock = keys.order_set_lock(brand_id)
        try:
            if not await self.redis.set(lock, token, nx=True, ex=REBUILD_LOCK_SECONDS):
                return
            try:
                await self._rebuild(brand_id)
            finally:
                if await self.redis.get(lock) in (token, token.encode()):
                    await self.redis.delete(lock)
        except (RedisError, OSError) as exc:
            log.warning("rebuilding the order filter of %s failed, retrying later: %s", brand_id, exc)
        except Exception:
            log.exception("rebuilding the order filter of %s failed", brand_id)

    async def _rebuild(self, brand_id: str) -> None:
        started = time.monotonic()
        orders: set[str] = set()
        mapping: dict[str, FirstOrder] = {}
        async for row in self._stream_rows(brand_id):
            orders.add(str(row["order_id"]))
            first = customers.mapping_of(row)
            if first is not None:
                _keep(mapping, str(row["customer_hash"]), first)
        stored = await run_sync(lambda: self.ch.query(
            "SELECT DISTINCT order_id FROM conversions WHERE brand_id = {b:String}", {"b": brand_id}
        ))
        orders.update(str(o) for (o,) in stored)
        for h, first in (await run_sync(customers.first_orders, self.ch, brand_id, [])).items():
            _keep(mapping, h, first)
        await self.orders.add_all(brand_id, sorted(orders))
        shards: dict[str, list[str]] = defaultdict(list)
        for h, first in mapping.items():
            shards[customers.shard_key(brand_id, h)] += [h, first.encode()]
        for shard, args in shards.items():
            for i in range(0, len(args), 2000):
                await self._keep_earliest(keys=[shard], args=args[i : i + 2000])
        await self.orders.mark_complete(brand_id)
        self.completed += 1
        log.info("order filter of %s rebuilt: %d orders, %d customers in %.1f s", brand_id, len(orders),
                 len(mapping), time.monotonic() - started)

    async def _stream_rows(self, brand_id: str) -> AsyncIterator[dict[str, Any]]:
        start = "-"
        while True:
            read = await self.redis.xrange(keys.conversion_stream(brand_id), min=start, count=_STREAM_CHUNK)
            entries: list[Any] = list(read or [])
            for _id, fields in entries:
                raw = fields.get(b"e") or fields.get("e")
                try:
                    row = json.loads(raw)
                except (TypeError, ValueError):
                    continue
                if isinstance(row, dict) and row.get("brand_id") == brand_id and row.get("order_id"):
                    yield row
            if len(entries) < _STREAM_CHUNK:
                return
            last = entries[-1][0]
            start = "(" + (last.decode() if isinstance(last, bytes) else str(last))


def _keep(mapping: dict[str, FirstOrder], customer_hash: str, first: FirstOrder) -> None:
    old = mapping.get(customer_hash)
    if old is None or first.first_ms < old.first_ms:
        mapping[customer_hash] = first
