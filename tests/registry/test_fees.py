"""Fees in the brand currency, converted with the brand's FX rate."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
import redis

from tests.registry.helpers import setup
from tracker.core.errors import Unprocessable
from tracker.registry import Registry
from tracker.registry.models import Fee

pytestmark = pytest.mark.anyio


async def test_fx_rates_and_fee_conversion(reg: Registry, redis_client: redis.Redis) -> None:
    brand, c, i = await setup(reg)
    assert await reg.fx_rate(str(brand["id"]), "USD") == Decimal(1)
    assert await reg.fx_rate(str(brand["id"]), "EUR") is None
    with pytest.raises(Unprocessable):
        await reg.create_fee(brand, campaign_id=str(c["id"]), influencer_id=str(i["id"]),
                             amount=Decimal("100"), currency="EUR", day=date(2026, 11, 1))
    await reg.set_fx_rate(brand, "EUR", Decimal("1.08"))
    assert await reg.fx_rate(str(brand["id"]), "EUR") == Decimal("1.08")
    redis_client.flushall()
    assert await reg.fx_rate(str(brand["id"]), "EUR") == Decimal("1.08")
    fee = await reg.create_fee(brand, campaign_id=str(c["id"]), influencer_id=str(i["id"]),
                               amount=Decimal("99.99"), currency="EUR", day=date(2026, 11, 1), note="story")
    assert fee["amount"] == Decimal("107.99") and fee["currency"] == "USD"
    assert fee["original_amount"] == Decimal("99.99") and fee["original_currency"] == "EUR"
    listed = [Fee.from_row(r).dump() for r in await reg.list_fees(str(brand["id"]))]
    assert listed == [Fee.from_row(fee).dump()]


@pytest.mark.parametrize(("amount", "rate"), [("9999999999", "9999"), ("0.01", "0.0001")])
async def test_fee_conversion_bounds(reg: Registry, amount: str, rate: str) -> None:
    brand, c, i = await setup(reg)
    await reg.set_fx_rate(brand, "EUR", Decimal(rate))
    with pytest.raises(Unprocessable, match=amount):
        await reg.create_fee(brand, campaign_id=str(c["id"]), influencer_id=str(i["id"]),
                             amount=Decimal(amount), currency="EUR", day=date(2026, 11, 1))
    assert await reg.list_fees(str(brand["id"])) == []

