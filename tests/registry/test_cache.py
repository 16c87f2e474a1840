"""The cache layer against real Redis and chDB: rebuilds never overwrite, row locks, Redis down."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis

from tracker.core import keys
from tracker.core.errors import Conflict, StorageUnavailable
from tracker.registry import cache as cache_module
from tracker.registry.cache import Cache
from tracker.settings import Settings
from tracker.storage import redis_client as rc
from tracker.storage.clickhouse import ClickHouse

pytestmark = pytest.mark.anyio


@pytest.fixture
async def cache(settings: Settings, ch: ClickHouse) -> AsyncIterator[Cache]:
    client = rc.connect_async(settings)
    try:
        yield Cache(ch, client)
    finally:
        await client.aclose()


@pytest.fixture
async def down(settings: Settings, ch: ClickHouse) -> AsyncIterator[Cache]:
    """A cache whose Redis cannot be reached."""
    client = rc.connect_async(settings.with_(redis_url="redis://127.0.0.1:1/0"), socket_connect_timeout=0.2)
    try:
        yield Cache(ch, client)
    finally:
        await client.aclose()


async def test_fill_never_overwrites_a_newer_record(cache: Cache, redis_client: redis.Redis) -> None:
    await cache.fill("trk:test:a", b"rebuilt")
    assert redis_client.get("trk:test:a") == b"rebuilt"
    redis_client.set("trk:test:a", b"newer")
    await cache.fill("trk:test:a", b"rebuilt")
    assert await cache.get("trk:test:a") == b"newer"


async def test_a_missing_row_is_remembered_briefly(cache: Cache, redis_client: redis.Redis) -> None:
    await cache.fill_missing("trk:test:gone")
    assert redis_client.get("trk:test:gone") == b""
    assert 0 < int(redis_client.ttl("trk:test:gone")) <= cache_module.NEGATIVE_SECONDS


async def test_reads_fall_back_and_writes_fail_when_redis_is_down(down: Cache) -> None:
    assert await down.get("trk:test:a") is None
    await down.fill("trk:test:a", b"x")  # logged, not raised
    with pytest.raises(StorageUnavailable):
        await down.write(down.redis.set("trk:test:a", b"x"))
    with pytest.raises(StorageUnavailable):
        async with down.lock("link", "abc123"):
            pass


async def test_the_lock_serialises_and_is_released(cache: Cache, redis_client: redis.Redis) -> None:
    order: list[str] = []

    async def change(name: str) -> None:
        async with cache.lock("link", "abc123"):
            order.append(f"{name} in")
            await asyncio.sleep(0)  # let the other one try while this one holds the lock
            order.append(f"{name} out")

    await asyncio.gather(change("a"), change("b"))
    assert order in (["a in", "a out", "b in", "b out"], ["b in", "b out", "a in", "a out"])
    assert not redis_client.exists(keys.registry_lock("link", "abc123"))


async def test_a_lock_held_too_long_answers_409(cache: Cache, redis_client: redis.Redis,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache_module, "LOCK_SECONDS", 0.1)
    redis_client.set(keys.registry_lock("fx", "brd_x:EUR"), "another process", px=60_000)
    with pytest.raises(Conflict, match="being changed by another request"):
        async with cache.lock("fx", "brd_x:EUR"):
            pass
    assert redis_client.get(keys.registry_lock("fx", "brd_x:EUR")) == b"another process"


async def test_a_lock_that_expired_meanwhile_is_left_alone(cache: Cache, redis_client: redis.Redis) -> None:
    async with cache.lock("link", "abc123"):
        redis_client.delete(keys.registry_lock("link", "abc123"))  # expired, then another writer took it
        redis_client.set(keys.registry_lock("link", "abc123"), "theirs")
    assert redis_client.get(keys.registry_lock("link", "abc123")) == b"theirs"
