"""Registry records for postbacks, cached in this process for a few seconds, as the redirect does.

A postback reads its store, brand, exchange rate, link (by click id or coupon) and
campaign; each is a Redis round trip through the registry. Here each answer (a miss
too) is kept ``ttl`` seconds in a dict, and concurrent misses of one key share one
registry call. A change in the registry therefore reaches postbacks within ``ttl``
(``TRACKER_LINK_CACHE_SECONDS``, 2 s by default, at most 5 s); a missing exchange rate is
not kept, so setting one takes effect at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from decimal import Decimal
from typing import Any, TypeVar

from tracker.core.records import LinkRecord
from tracker.registry import Registry

T = TypeVar("T")
MAX_ENTRIES = 50_000


class TtlCache:
    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[Hashable, tuple[float, Any]] = {}
        self._loading: dict[Hashable, asyncio.Future[Any]] = {}

    async def get(self, key: Hashable, load: Callable[[], Awaitable[T]], *, keep_none: bool = True) -> T:
        now = time.monotonic()
        hit = self._entries.get(key)
        if hit is not None and hit[0] > now:
            value: T = hit[1]
            return value
        pending = self._loading.get(key)
        if pending is not None:
            shared: T = await asyncio.shield(pending)
            return shared
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            loaded = await load()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        finally:
            self._loading.pop(key, None)
        future.set_result(loaded)
        if self.ttl > 0 and (loaded is not None or keep_none):
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[key] = (time.monotonic() + self.ttl, loaded)
        return loaded

    def forget(self, key: Hashable) -> None:
        self._entries.pop(key, None)


class Lookups:
    """The registry reads of a postback, through one short-lived cache."""

    def __init__(self, registry: Registry, ttl: float) -> None:
        self.registry = registry
        self.cache = TtlCache(ttl)

    async def store(self, store_id: str) -> dict[str, Any] | None:
        return await self.cache.get(("store", store_id), lambda: self.registry.get_store(store_id))

    async def brand(self, brand_id: str) -> dict[str, Any] | None:
        return await self.cache.get(("brand", brand_id), lambda: self.registry.get_brand(brand_id))

    async def campaign(self, brand_id: str, campaign_id: str) -> dict[str, Any] | None:
        return await self.cache.get(
            ("campaign", brand_id, campaign_id), lambda: self.registry.get_campaign(brand_id, campaign_id)
        )

    async def link_by_id(self, link_id: int) -> LinkRecord | None:
        return await self.cache.get(("link", link_id), lambda: self.registry.link_by_id(link_id))

    async def link_by_coupon(self, brand_id: str, coupon: str) -> LinkRecord | None:
        return await self.cache.get(
            ("coupon", brand_id, coupon.upper()), lambda: self.registry.link_by_coupon(brand_id, coupon)
        )

    async def fx_rate(self, brand_id: str, currency: str) -> Decimal | None:
        # A missing rate is not kept: the postback after PUT /api/v1/fx-rates must find it.
        return await self.cache.get(
            ("fx", brand_id, currency), lambda: self.registry.fx_rate(brand_id, currency), keep_none=False
        )
