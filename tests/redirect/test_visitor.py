"""Country, and the salted daily visitor hash."""

from __future__ import annotations

import asyncio

import pytest
import redis

from tracker.core import keys
from tracker.redirect.visitor import (
    SALT_TTL_SECONDS,
    Countries,
    VisitorHasher,
    day_key,
    day_of,
    normalize_country,
)
from tracker.settings import Settings
from tracker.storage.redis_client import connect_async


@pytest.mark.parametrize(
    ("value", "expected"),
    [("DE", "DE"), ("de", "DE"), (" fr ", "FR"), ("XX", ""), ("T1", ""), ("", ""), ("USA", ""), ("1A", "")],
)
def test_normalize_country_header(value: str, expected: str) -> None:
    assert normalize_country(value) == expected


@pytest.fixture(scope="module")
def countries() -> Countries:
    return Countries()


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("8.8.8.8", "US"),
        ("81.2.69.160", "GB"),
        ("127.0.0.1", ""),
        ("10.1.2.3", ""),
        ("192.168.0.1", ""),
        ("not-an-ip", ""),
        ("", ""),
        ("testclient", ""),
    ],
)
def test_country_lookup(countries: Countries, ip: str, expected: str) -> None:
    assert countries.lookup(ip) == expected


@pytest.mark.parametrize(
    ("ts_ms", "key"),
    [(0, "19700101"), (86_399_999, "19700101"), (86_400_000, "19700102"), (1_795_000_000_000, "20261118")],
)
def test_day_key(ts_ms: int, key: str) -> None:
    assert day_key(day_of(ts_ms)) == key


def test_hashes_are_shared_across_processes_and_rotate_daily(settings: Settings, redis_client: redis.Redis) -> None:
    async def scenario() -> tuple[int, int, int, int, int, int | None]:
        r1, r2 = connect_async(settings), connect_async(settings)
        a, b = VisitorHasher(r1), VisitorHasher(r2)  # two workers
        day = 20_000
        try:
            h_a = await a.hash(day, "198.51.100.1", "Mozilla/5.0")
            h_b = await b.hash(day, "198.51.100.1", "Mozilla/5.0")
            other_ua = await a.hash(day, "198.51.100.1", "curl/8")
            other_ip = await a.hash(day, "198.51.100.2", "Mozilla/5.0")
            next_day = await a.hash(day + 1, "198.51.100.1", "Mozilla/5.0")
            cold = VisitorHasher(r1).hash_now(day, "198.51.100.1", "Mozilla/5.0")  # salt not loaded yet
            return h_a, h_b, other_ua, other_ip, next_day, cold
        finally:
            await r1.aclose()
            await r2.aclose()

    h_a, h_b, other_ua, other_ip, next_day, cold = asyncio.run(scenario())
    assert h_a == h_b
    assert len({h_a, other_ua, other_ip, next_day}) == 4
    assert all(0 <= h < 2**64 for h in (h_a, other_ua, other_ip, next_day))
    assert cold is None
    key = keys.visitor_salt(day_key(20_000))
    assert 0 < redis_client.ttl(key) <= SALT_TTL_SECONDS
    # Only salts are stored: no IP, no user agent anywhere in Redis.
    for k in redis_client.keys("*"):
        assert b"198.51.100" not in k
        assert b"198.51.100" not in (redis_client.get(k) or b"")


def test_an_existing_salt_is_never_replaced(settings: Settings, redis_client: redis.Redis) -> None:
    key = keys.visitor_salt(day_key(20_001))
    redis_client.set(key, "ab" * 32)

    async def scenario() -> int:
        r = connect_async(settings)
        try:
            return await VisitorHasher(r).hash(20_001, "198.51.100.1", "UA")
        finally:
            await r.aclose()

    first = asyncio.run(scenario())
    assert redis_client.get(key) == b"ab" * 32
    assert asyncio.run(scenario()) == first


def test_redis_down_at_the_first_click_of_a_day_uses_a_local_salt(settings: Settings) -> None:
    async def scenario() -> tuple[int, int]:
        r = connect_async(settings.with_(redis_url="redis://127.0.0.1:1/0"), socket_connect_timeout=0.2)
        try:
            hasher = VisitorHasher(r)
            return await hasher.hash(20_002, "198.51.100.1", "UA"), await hasher.hash(20_002, "198.51.100.1", "UA")
        finally:
            await r.aclose()

    first, again = asyncio.run(scenario())
    assert first == again  # stable within the process for the day
