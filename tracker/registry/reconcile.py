"""Reconciliation: repair Redis records that a Redis restart rolled back.

Redis may come back from a restart without its last writes (AOF everysec, or RDB
snapshots), i.e. with an older record of a link or rate changed just before. A
sweep compares the rows changed recently in ClickHouse with their Redis records
and rewrites those that differ, under the row's lock (an update in flight wins).
A missing record is left alone: the next read rebuilds it.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress
from decimal import Decimal

from tracker.core import keys
from tracker.core.records import LinkRecord
from tracker.core.timeutil import now_utc, to_ms
from tracker.registry.cache import Cache, text
from tracker.registry.campaigns import CampaignRecord
from tracker.registry.fxrates import FxRates
from tracker.registry.links import Links, record
from tracker.storage import redis_client

log = logging.getLogger("tracker.registry")

EVERY_SECONDS = 30.0
WINDOW_SECONDS = 15 * 60.0
# The first sweep after a start looks further back: the restart may be what rolled Redis back.
FIRST_WINDOW_SECONDS = 24 * 3600.0
_CHUNK = 500


class Sweep:
    """The background task that runs ``reconcile`` every ``EVERY_SECONDS``."""

    def __init__(self, cache: Cache, links: Links, fx: FxRates) -> None:
        self.cache = cache
        self.links = links
        self.fx = fx
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self._loop(), name="registry-reconcile")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with suppress(asyncio.CancelledError):
                await self.task
            self.task = None

    async def _loop(self) -> None:
        window = FIRST_WINDOW_SECONDS
        while True:
            try:
                fixed = await self.reconcile(window)
                if fixed:
                    log.warning("repaired %d Redis registry records that were older than ClickHouse", fixed)
                window = WINDOW_SECONDS
            except Exception as exc:  # storage down: try again on the next round
                log.warning("registry reconciliation failed: %s", exc)
            await asyncio.sleep(EVERY_SECONDS)

    async def reconcile(self, window_seconds: float) -> int:
        """Repair the records of links and FX rates changed within the window; how many were repaired."""
        since_ms = to_ms(now_utc()) - int(window_seconds * 1000)
        return await self._links(since_ms) + await self._rates(since_ms)

    async def _links(self, since_ms: int) -> int:
        fixed = 0
        rows = await self.links.rows_since(since_ms)
        campaigns: dict[tuple[str, str], CampaignRecord | None] = {}
        for start in range(0, len(rows), _CHUNK):
            chunk = rows[start : start + _CHUNK]
            cached = await redis_client.mget_async(self.cache.redis, [keys.link(r["code"]) for r in chunk])
            for row, raw in zip(chunk, cached, strict=True):
                if raw is None:
                    continue
                ref = (row["brand_id"], row["campaign_id"])
                if ref not in campaigns:
                    campaigns[ref] = await self.links.campaigns.get(*ref)
                try:
                    same = LinkRecord.decode(raw) == record(row, campaigns[ref])
                except (ValueError, TypeError):
                    same = False
                if same:
                    continue
                async with self.cache.lock("link", row["code"]):
                    fresh = await self.links.row(row["code"])
                    if fresh is not None:
                        rec = record(fresh, campaigns[ref])
                        await self.cache.write(self.cache.redis.set(keys.link(row["code"]), rec.encode()))
                        fixed += 1
        return fixed

    async def _rates(self, since_ms: int) -> int:
        fixed = 0
        for r in await self.fx.rows_since(since_ms):
            key = keys.fx_rate(r["brand_id"])
            raw = await self.cache.redis.hget(key, r["currency"])
            if raw is None or Decimal(text(raw)) == Decimal(r["rate"]):
                continue
            async with self.cache.lock("fx", f"{r['brand_id']}:{r['currency']}"):
                rate = await self.fx.stored(r["brand_id"], r["currency"])
                if rate is not None:
                    await self.cache.write(self.cache.redis.hset(key, r["currency"], str(rate)))
                    fixed += 1
        return fixed
