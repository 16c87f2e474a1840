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
from tracker.core.ids import new_id
from tracker.core.timeutil import now_utc
from tracker.registry.brands import BrandRecord
from tracker.registry.cache import Cache, Row
from tracker.registry.campaigns import Campaigns
from tracker.registry.fxrates import FxRates
from tracker.registry.influencers import Influencers

# money columns are Decimal(18, 4); money.parse_amount has the same bound
_MAX_AMOUNT = Decimal("1e13")


class Fees:
    def __init__(self, cache: Cache, campaigns: Campaigns, influencers: Influencers, fx: FxRates) -> None:
        self.cache = cache
        self.campaigns = campaigns
        self.influencers = influencers
        self.fx = fx

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
        rate = await self.fx.rate(brand_id, currency)
        if rate is None:
            raise Unprocessable(
                f"No exchange rate from {currency} to {brand['currency']}: set one with "
                f"PUT /api/v1/fx-rates/{currency} first.",
                code="missing_fx_rate",
            )
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

    async def all(
        self, brand_id: str, *, campaign_id: str | None = None, influencer_id: str | None = None
    ) -> list[Row]:
        return await self.cache.query(
            "SELECT id, campaign_id, influencer_id, amount, currency, original_amount, original_currency, "
            "fx_rate, date, note, created_at FROM fees FINAL WHERE brand_id = {b:String} "
            "AND ({c:String} = '' OR campaign_id = {c:String}) "
            "AND ({i:String} = '' OR influencer_id = {i:String}) ORDER BY date, created_at, id",
            {"b": brand_id, "c": campaign_id or "", "i": influencer_id or ""},
        )
