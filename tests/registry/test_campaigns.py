"""Campaign records: cached in Redis for postbacks, rebuilt from ClickHouse."""

from __future__ import annotations

from decimal import Decimal

import pytest
import redis

from tests.registry.helpers import setup
from tracker.core import keys
from tracker.registry import Registry

pytestmark = pytest.mark.anyio


async def test_campaign_cached_and_rebuilt(reg: Registry, redis_client: redis.Redis) -> None:
    brand, c, _ = await setup(reg, commission_value="12.5", allowed_domains=["shop.example"])
    got = await reg.get_campaign(str(brand["id"]), str(c["id"]))
    assert got == c
    assert got is not None and got["commission"] == {"type": "percent", "value": Decimal("12.5")}
    redis_client.flushall()
    assert await reg.get_campaign(str(brand["id"]), str(c["id"])) == c
    assert redis_client.exists(keys.campaign(str(brand["id"]), str(c["id"])))
    other, _ = await reg.create_brand("Other", "USD")
    assert await reg.get_campaign(str(other["id"]), str(c["id"])) is None

