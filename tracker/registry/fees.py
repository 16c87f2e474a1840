"""Fees: flat amounts paid to an influencer for a campaign, kept in the brand currency.

A fee in another currency is converted with the brand's rate when it is recorded;
the original amount, currency and rate are kept beside it. Reports add fees to cost.
"""

from __future__ import annotations

import time
from datetime import date
from decimal import Decimal

from tracker.core import money
from tracker.core.errors import NotFound, Unprocessable
from tracker.core.ids import looks_like, new_id
from tracker.core.timeutil import now_utc
from tracker.registry.brands import BrandRecord
from tracker.registry.cache import Cache, Row
from tracker.registry.campaigns import Campaigns
from tracker.registry.fxrates import FxRates
from tracker.registry.influencers import Influencers

# money columns are Decimal(18, 4); money.parse_amount has the same bound
_MAX_AMOUNT = Decimal("1e13")
_COLUMNS = (
    "id, campaign_id, influencer_id, amount, currency, original_amount, original_currency, fx_rate, date, note, "
    "created_at"
)


class Fees:
    def __init__(self, cache: Cache, campaigns: Campaigns, influencers: Influencers, fx: FxRates) -> None:
        self.cache = cache
        self.campaigns = campaigns
        self.influencers = influencers
        self.fx = fx

    async def _rate(self, brand: BrandRecord, currency: str) -> Decimal:
        rate = await self.fx.rate(brand["id"], currency)
        if rate is None:
            raise Unprocessable(
                f"No exchange rate from {currency} to {brand['currency']}: set one with "
                f"PUT /api/v1/fx-rates/{currency} first.",
                code="missing_fx_rate",
            )
        return rate

    @staticmethod
    def _convert(brand: BrandRecord, amount: Decimal, currency: str, rate: Decimal) -> Decimal:
        converted = money.round_money(amount * rate, brand["currency"])
        if converted >= _MAX_AMOUNT:
            raise Unprocessable(
                f"amount {amount} {currency} is {converted} {brand['currency']} at the rate {rate}: too large.",
                code="invalid_field",
            )
        if converted <= 0:
            raise Unprocessable(
                f"amount {amount} {currency} rounds to 0 {brand['currency']} at the rate {rate}.",
                code="invalid_field",
            )
        return converted

    async def create(
        self,
        brand: BrandRecord,
        *,
        campaign_id: str,
        influencer_id: str,
        amount: Decimal,
        currency: str,
        day: date,
        note: str = "",
    ) -> Row:
        """Record a flat fee, converted to the brand currency with the brand's FX rate; its row."""
        brand_id = brand["id"]
        if await self.campaigns.get(brand_id, campaign_id) is None:
            raise NotFound(f"Campaign {campaign_id!r} does not exist.")  # another brand's id too
        if await self.influencers.get(brand_id, influencer_id) is None:
            raise NotFound(f"Influencer {influencer_id!r} does not exist.")
        rate = await self._rate(brand, currency)
        converted = self._convert(brand, amount, currency, rate)
        row: Row = {
            "brand_id": brand_id,
            "id": new_id("fee"),
            "campaign_id": campaign_id,
            "influencer_id": influencer_id,
            "amount": converted,
            "currency": brand["currency"],
            "original_amount": amount,
            "original_currency": currency,
            "fx_rate": rate,
            "date": day,
            "note": note,
            "created_at": now_utc(),
            "version": time.time_ns(),
        }
        await self.cache.insert("fees", row)
        return row

    async def row(self, brand_id: str, fee_id: str) -> Row | None:
        """The fee's current row (None when unknown, deleted or another brand's)."""
        if not looks_like("fee", fee_id) or not looks_like("brand", brand_id):
            return None
        return await self.cache.first(
            f"SELECT {_COLUMNS}, version FROM fees FINAL WHERE brand_id = {{b:String}} AND id = {{id:String}} "
            "AND deleted = 0 LIMIT 1",
            {"b": brand_id, "id": fee_id},
        )

    async def update(
        self, brand: BrandRecord, fee_id: str, *, amount: Decimal | None = None, currency: str | None = None,
        day: date | None = None, note: str | None = None,
    ) -> Row | None:
        """Change a fee's amount (and currency: converted again at today's rate), date or note."""
        brand_id = brand["id"]
        async with self.cache.lock("fee", fee_id):
            row = await self.row(brand_id, fee_id)
            if row is None:
                return None
            if amount is not None or currency is not None:
                original = amount if amount is not None else Decimal(row["original_amount"])
                cur = currency or row["original_currency"]
                rate = Decimal(row["fx_rate"]) if cur == row["original_currency"] else await self._rate(brand, cur)
                row.update(amount=self._convert(brand, original, cur, rate), original_amount=original,
                           original_currency=cur, fx_rate=rate)
            if day is not None:
                row["date"] = day
            if note is not None:
                row["note"] = note
            row.update(brand_id=brand_id, deleted=0, version=max(int(row["version"]) + 1, time.time_ns()))
            await self.cache.insert("fees", row)
            return row

    async def delete(self, brand_id: str, fee_id: str) -> Row | None:
        """Delete a fee: a new version with amount 0 and ``deleted`` set; its last row, or None."""
        async with self.cache.lock("fee", fee_id):
            row = await self.row(brand_id, fee_id)
            if row is None:
                return None
            gone = {**row, "brand_id": brand_id, "amount": Decimal(0), "deleted": 1,
                    "version": max(int(row["version"]) + 1, time.time_ns())}
            await self.cache.insert("fees", gone)
            return row

    async def all(
        self, brand_id: str, *, campaign_id: str | None = None, influencer_id: str | None = None
    ) -> list[Row]:
        return await self.cache.query(
            f"SELECT {_COLUMNS} FROM fees FINAL WHERE brand_id = {{b:String}} AND deleted = 0 "
            "AND ({c:String} = '' OR campaign_id = {c:String}) "
            "AND ({i:String} = '' OR influencer_id = {i:String}) ORDER BY date, created_at, id",
            {"b": brand_id, "c": campaign_id or "", "i": influencer_id or ""},
        )
