"""FX rates: units of the brand currency per unit of another currency.

Postbacks and fees in another currency than the brand's convert with the brand's
rate; the rates of a brand are cached as one Redis hash (currency -> rate).
"""

from __future__ import annotations

import time
from contextlib import suppress
from decimal import Decimal

from redis.exceptions import RedisError

from tracker.core import keys, money
from tracker.core.errors import Unprocessable
from tracker.core.timeutil import now_utc
from tracker.registry.brands import BrandRecord, Brands
from tracker.registry.cache import Cache, Row, text


class FxRates:
    def __init__(self, cache: Cache, brands: Brands) -> None:
        self.cache = cache
        self.brands = brands

    async def put(self, brand: BrandRecord, currency: str, rate: Decimal) -> Row:
        """Set the brand's rate for ``currency``; the row now in force."""
        if currency == brand["currency"]:
            raise Unprocessable(f"{currency} is the brand's own currency; its rate is always 1.", code="invalid_field")
        row: Row = {"brand_id": brand["id"], "currency": currency, "rate": rate, "updated_at": now_utc()}
        async with self.cache.lock("fx", f"{brand['id']}:{currency}"):
            await self.cache.write(self.cache.redis.hdel(keys.fx_rate(brand["id"]), currency))
            await self.cache.insert("fx_rates", {**row, "version": time.time_ns()})
            await self.cache.write(self.cache.redis.hset(keys.fx_rate(brand["id"]), currency, str(rate)))
        return row

    async def stored(self, brand_id: str, currency: str) -> Decimal | None:
        """The rate in ClickHouse, without trailing zeros; None when the brand has none."""
        row = await self.cache.first(
            "SELECT rate FROM fx_rates FINAL WHERE brand_id = {b:String} AND currency = {c:String} LIMIT 1",
            {"b": brand_id, "c": currency},
        )
        return None if row is None else money.plain(Decimal(row["rate"]))

    async def rate(self, brand_id: str, currency: str) -> Decimal | None:
        """Units of the brand currency per unit of ``currency``; 1 for the brand's own currency."""
        brand = await self.brands.get(brand_id)
        if brand is None or not money.is_currency(currency):
            return None
        if currency == brand["currency"]:
            return Decimal(1)
        try:
            raw = await self.cache.redis.hget(keys.fx_rate(brand_id), currency)
        except RedisError:
            raw = None
        if raw is not None:
            return Decimal(text(raw))
        rate = await self.stored(brand_id, currency)
        if rate is not None:
            with suppress(RedisError):
                await self.cache.redis.hsetnx(keys.fx_rate(brand_id), currency, str(rate))
        return rate

    async def all(self, brand_id: str) -> list[Row]:
        rows = await self.cache.query(
            "SELECT currency, rate, updated_at FROM fx_rates FINAL WHERE brand_id = {b:String} ORDER BY currency",
            {"b": brand_id},
        )
        return [{**r, "rate": money.plain(Decimal(r["rate"]))} for r in rows]

    async def rows_since(self, since_ms: int) -> list[Row]:
        """Rates changed at or after ``since_ms`` (epoch ms), for the reconciliation sweep."""
        return await self.cache.query(
            "SELECT brand_id, currency, rate FROM fx_rates FINAL "
            "WHERE updated_at >= fromUnixTimestamp64Milli({since:Int64})",
            {"since": since_ms},
        )
