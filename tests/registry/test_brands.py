"""Brands and API keys against real Redis and chDB: write-through, rebuilt after Redis loss."""

from __future__ import annotations

import pytest
import redis

from tracker.core import keys
from tracker.core.credentials import token_hash
from tracker.registry import Registry
from tracker.registry.apikeys import Grant

pytestmark = pytest.mark.anyio


async def test_brand_and_api_key_round_trip(reg: Registry, redis_client: redis.Redis) -> None:
    brand, api_key = await reg.create_brand("Acme", "EUR")
    assert api_key.startswith("trk_") and len(api_key) > 40
    assert await reg.brand_for_key(api_key) == brand
    assert await reg.get_brand(str(brand["id"])) == brand
    # Only the hash is stored.
    record = redis_client.get(keys.api_key(token_hash(api_key)))
    assert record is not None
    assert Grant.decode("key_x", record.decode()) == Grant("key_x", str(brand["id"]), "write")
    assert all(api_key not in str(k) for k in redis_client.keys("*"))
    redis_client.flushall()
    reg.apikeys.clear_cache()
    assert await reg.brand_for_key(api_key) == brand  # rebuilt from ClickHouse
    assert await reg.brand_for_key(api_key + "x") is None
    assert await reg.brand_for_key("nonsense") is None
    assert await reg.list_brands() == [brand]

