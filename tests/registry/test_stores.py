"""Stores: the secret is derived, never stored; the record postbacks read survives Redis loss."""

from __future__ import annotations

import pytest
import redis

from tracker.core.credentials import store_secret, token_hash
from tracker.registry import Registry
from tracker.settings import Settings

pytestmark = pytest.mark.anyio


async def test_store_secret_derivation(reg: Registry, settings: Settings, redis_client: redis.Redis) -> None:
    brand, _ = await reg.create_brand("Acme", "USD")
    new = await reg.create_store(str(brand["id"]), name="Shop", allowed_ips=["203.0.113.7"])
    store = await reg.get_store(str(new.store["id"]))
    assert store is not None
    assert store["brand_id"] == brand["id"]
    assert store_secret(str(settings.secret_key), store["secret_nonce"]) == new.secret
    assert store["token_hash"] == token_hash(new.postback_token)
    assert new.secret not in str(store) and new.postback_token not in str(store)
    redis_client.flushall()
    assert await reg.get_store(str(new.store["id"])) == store

