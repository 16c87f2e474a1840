"""Recording a postback: decide the change to its order, attribute a new order, price the commission.

The pure rules live in ``tracker.conversions.attribution``; this module looks their inputs up
(the order's state, links, the campaign's rule, the brand's exchange rate) and writes the new
version through ``tracker.conversions.state``. The answer is sent only after the write: an
accepted conversion is in Redis (AOF) and reaches ClickHouse through the ingest worker.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import redis.asyncio as aioredis

from tracker.conversions.attribution import (
    REFUNDED,
    Change,
    CommissionRule,
    OrderState,
    apply,
    attribute,
    click_qualifies,
    commission,
)
from tracker.conversions.parse import Postback
from tracker.conversions.state import Conversion, OrderStates
from tracker.core import ids, money
from tracker.core.clickid import ClickIds
from tracker.core.errors import StorageUnavailable, Unauthorized, Unprocessable
from tracker.core.timeutil import now_ms_precision, to_ms
from tracker.registry import Registry
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse

log = logging.getLogger("tracker.conversions.recorder")

# Rounds of (read the state, decide, compare-and-write) before giving up on a busy order.
_MAX_ATTEMPTS = 8

BAD_STORE_SIGNATURE = "The store id or the X-Signature is not valid."


class Conversions:
    """Records postbacks for one process."""

    def __init__(self, settings: Settings, redis: aioredis.Redis, ch: ClickHouse, registry: Registry) -> None:
        assert settings.secret_key is not None
        self.settings = settings
        self.registry = registry
        self.click_ids = ClickIds(settings.secret_key)
        self.states = OrderStates(redis, ch)

    async def record(self, store: Mapping[str, Any], pb: Postback) -> Conversion:
        """Apply one postback to its order; the order's state after it, and whether it was a duplicate."""
        brand_id = str(store["brand_id"])
        brand: dict[str, Any] | None = None  # read only for a new order (its currency)
        for _ in range(_MAX_ATTEMPTS):
            seen = await self.states.read(brand_id, pb.order_id)
            current = seen.row
            if current is None:
                brand = brand or await self.registry.get_brand(brand_id)
                if brand is None:
                    # The store outlived its brand: answer as for an unknown store.
                    raise Unauthorized(BAD_STORE_SIGNATURE, code="invalid_signature")
                row = await self._first_version(brand, store, pb)
            else:
                change = self._change(current, pb)
                if change.duplicate:
                    if seen.raw is None:
                        # Redis lost this order: put the rebuilt state back for the next postback.
                        await self.states.restore(current)
                    return Conversion.of(current, duplicate=True)
                row = await self._next_version(current, change)
            if await self.states.write(seen, row):
                return Conversion.of(row, duplicate=False)
            # Another copy or status change won the race: decide again on the new state.
        raise StorageUnavailable(f"Order {pb.order_id!r} is changing too often right now; retry the postback.")

    def _change(self, current: Mapping[str, Any], pb: Postback) -> Change:
        original_currency = current["original_currency"]
        if pb.currency is not None and pb.currency != original_currency:
            raise Unprocessable(
                f"Order {pb.order_id!r} was recorded in {original_currency}; "
                f"send its status changes in {original_currency}, not {pb.currency}.",
                code="invalid_currency",
            )
        state = OrderState(current["status"], current["original_amount"], current["original_refunded_amount"])
        return apply(pb.order_id, state, pb.status, pb.amount)

    async def _rule(self, brand_id: str, campaign_id: str) -> CommissionRule | None:
        if not campaign_id:
            return None
        campaign = await self.registry.get_campaign(brand_id, campaign_id)
        if campaign is None:
            log.warning("campaign %s of brand %s is gone; commission 0", campaign_id, brand_id)
            return None
        return CommissionRule.of(campaign["commission"])

    async def _rate(self, brand_id: str, brand_currency: str, currency: str) -> Decimal:
        if currency == brand_currency:
            return Decimal(1)
        rate = await self.registry.fx_rate(brand_id, currency)
        if rate is None or rate <= 0:
            raise Unprocessable(
                f"The amount is in {currency} but the brand's currency is {brand_currency}, and the brand "
                f"has no exchange rate for {currency}: set one with PUT /api/v1/fx-rates/{currency}.",
                code="missing_fx_rate",
            )
        return Decimal(rate)

    async def _first_version(
        self, brand: Mapping[str, Any], store: Mapping[str, Any], pb: Postback
    ) -> dict[str, Any]:
        brand_id = str(brand["id"])
        brand_currency = str(brand["currency"])
        change = apply(pb.order_id, None, pb.status, pb.amount)
        assert pb.currency is not None  # an amount (required here) comes with its currency
        rate = await self._rate(brand_id, brand_currency, pb.currency)
        now = now_ms_precision()
        occurred = pb.occurred_at or now
        occurred_ms = to_ms(occurred)

        ref = self.click_ids.parse(pb.click_id) if pb.click_id else None
        click_link = await self.registry.link_by_id(ref.link_id) if ref is not None else None
        coupon_link = None
        if pb.coupon_code and not click_qualifies(brand_id, occurred_ms, ref, click_link):
            coupon_link = await self.registry.link_by_coupon(brand_id, pb.coupon_code)
        result = attribute(brand_id, occurred_ms, ref, click_link, coupon_link)
        link = result.link
        rule = await self._rule(brand_id, link.campaign_id) if link is not None else None

        amount = money.round_money(change.amount * rate, brand_currency)
        return {
            "brand_id": brand_id,
            "order_id": pb.order_id,
            "version": 1,
            "conversion_id": ids.new_id("conversion"),
            "store_id": str(store["id"]),
            "status": change.status,
            "currency": brand_currency,
            "amount": amount,
            "refunded_amount": money.round_money(money.ZERO, brand_currency),
            "original_currency": pb.currency,
            "original_amount": change.amount,
            "original_refunded_amount": money.round_money(money.ZERO, pb.currency),
            "fx_rate": rate,
            "commission": commission(rule, change.status, amount, brand_currency),
            "attributed": 1 if result.attributed else 0,
            "attribution": result.kind or "",
            "click_id": pb.click_id or "",
            "link_id": link.id if link is not None else 0,
            "link_code": link.code if link is not None else "",
            "campaign_id": link.campaign_id if link is not None else "",
            "influencer_id": link.influencer_id if link is not None else "",
            "coupon_code": pb.coupon_code or "",
            "occurred_at": occurred,
            "created_at": now,
            "updated_at": now,
        }

    async def _next_version(self, current: Mapping[str, Any], change: Change) -> dict[str, Any]:
        brand_currency = current["currency"]
        rate: Decimal = current["fx_rate"]  # the rate of the first version, so refunds match the sale
        amount = money.round_money(change.amount * rate, brand_currency)
        refunded = amount if change.status == REFUNDED else money.round_money(change.refunded * rate, brand_currency)
        rule = await self._rule(current["brand_id"], current["campaign_id"])
        row = dict(current)
        row.update(
            version=int(current["version"]) + 1,
            status=change.status,
            amount=amount,
            refunded_amount=refunded,
            original_amount=change.amount,
            original_refunded_amount=change.refunded,
            commission=commission(rule, change.status, amount - refunded, brand_currency),
            updated_at=now_ms_precision(),
        )
        return row
