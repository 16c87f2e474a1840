"""Link cache: query merging into the Location header, and the cache over Redis and the registry."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from tests.waiting import wait_until_async
from tracker.core import keys
from tracker.core.errors import StorageUnavailable
from tracker.core.records import LinkRecord
from tracker.redirect.linkcache import LinkCache, Target, parse_query
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse
from tracker.storage.redis_client import connect_async


def record(destination: str = "https://shop.example/p", param: str = "click_id", **kw: Any) -> LinkRecord:
    fields: dict[str, Any] = {
        "id": 7, "code": "abc123", "brand_id": "brd_1", "campaign_id": "cmp_1", "influencer_id": "inf_1",
        "destination_url": destination, "coupon_code": "", "disabled": False, "expires_at_ms": None,
        "click_id_param": param, "attribution_window_days": 30,
    }
    fields.update(kw)
    return LinkRecord(**fields)


@pytest.mark.parametrize(
    ("destination", "param", "visitor_query", "expected"),
    [
        # destination query kept, click id added last
        ("https://s.example/p", "click_id", b"", "https://s.example/p?click_id=CID"),
        ("https://s.example/p?a=1&b=2", "click_id", b"", "https://s.example/p?a=1&b=2&click_id=CID"),
        # visitor parameters forwarded after the destination's
        ("https://s.example/p?a=1", "click_id", b"utm_source=ig&x=y", "https://s.example/p?a=1&utm_source=ig&x=y&click_id=CID"),
        # a clash: the visitor wins (every destination occurrence goes)
        ("https://s.example/p?a=1&a=2&b=2", "click_id", b"a=9", "https://s.example/p?b=2&a=9&click_id=CID"),
        # keys compare decoded: a%5Fb is a_b, + is a space
        ("https://s.example/p?a_b=1&c+d=1", "click_id", b"a%5Fb=2&c%20d=2", "https://s.example/p?a%5Fb=2&c%20d=2&click_id=CID"),
        # the click-id parameter is the server's: dropped from the visitor and from the destination
        ("https://s.example/p?click_id=old&a=1", "click_id", b"click_id=forged&b=2", "https://s.example/p?a=1&b=2&click_id=CID"),
        ("https://s.example/p", "clid", b"clid=x&click_id=kept", "https://s.example/p?click_id=kept&clid=CID"),
        ("https://s.example/p", "click_id", b"click%5Fid=forged", "https://s.example/p?click_id=CID"),
        # fragments stay at the end
        ("https://s.example/p?a=1#top", "click_id", b"", "https://s.example/p?a=1&click_id=CID#top"),
        ("https://s.example/p#/route?x=1", "click_id", b"v=1", "https://s.example/p?v=1&click_id=CID#/route?x=1"),
        # repeated visitor keys and blank values are forwarded as sent
        ("https://s.example/p", "click_id", b"t=1&t=2&flag&e=", "https://s.example/p?t=1&t=2&flag&e=&click_id=CID"),
        ("https://s.example/p", "click_id", b"&&a=1&", "https://s.example/p?a=1&click_id=CID"),
        # unsafe bytes are re-encoded, never passed through into the header
        ("https://s.example/p", "click_id", b"q=a b&r=<x>", "https://s.example/p?q=a%20b&r=%3Cx%3E&click_id=CID"),
        ("https://s.example/p", "click_id", "q=\u00e9".encode(), "https://s.example/p?q=%C3%A9&click_id=CID"),
        ("https://s.example/p", "click_id", b"q=%zz", "https://s.example/p?q=%25zz&click_id=CID"),
        ("https://s.example/p", "click_id", b"q=%C3%A9&s=a+b", "https://s.example/p?q=%C3%A9&s=a+b&click_id=CID"),
        # a destination with an empty query
        ("https://s.example/p?", "click_id", b"", "https://s.example/p?click_id=CID"),
        # control characters and spaces never reach the header
        ("https://s.example/a b?x=1\r\nSet-Cookie: y", "click_id", b"", "https://s.example/a%20b?x=1%0D%0ASet-Cookie:%20y&click_id=CID"),
        # IRIs become URIs
        ("https://bücher.example/straße?q=ü", "click_id", b"", "https://xn--bcher-kva.example/stra%C3%9Fe?q=%C3%BC&click_id=CID"),
    ],
)
def test_location(destination: str, param: str, visitor_query: bytes, expected: str) -> None:
    target = Target(record(destination, param))
    assert target.location("CID", parse_query(visitor_query)).decode("ascii") == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (b"", []),
        (b"a=1", [("a", b"a=1")]),
        (b"a+b=1", [("a b", b"a+b=1")]),
        (b"%E2%9C%93=1", [("\u2713", b"%E2%9C%93=1")]),
        (b"x", [("x", b"x")]),
        (b"a=1&&b", [("a", b"a=1"), ("b", b"b")]),
    ],
)
def test_parse_query(query: bytes, expected: list[tuple[str, bytes]]) -> None:
    assert parse_query(query) == expected


def run(coro_fn: Callable[[Any], Any], settings: Settings, **cache_kw: Any) -> Any:
    async def main() -> Any:
        r = connect_async(settings)
        cache = LinkCache(r, **{"ttl": 2.0, **cache_kw})
        try:
            return await coro_fn(cache)
        finally:
            await cache.stop()
            await r.aclose()

    return asyncio.run(main())


def test_reads_redis_once_then_serves_from_memory(settings: Settings, redis_client: redis.Redis) -> None:
    redis_client.set(keys.link("abc123"), record().encode())

    async def scenario(cache: LinkCache) -> tuple[Any, Any, Any]:
        first = await cache.get("abc123")
        redis_client.delete(keys.link("abc123"))  # gone from Redis: the fresh entry still answers
        second = await cache.get("abc123")
        unknown = await cache.get("zzz999")
        return first, second, unknown

    first, second, unknown = run(scenario, settings)
    assert first is not None and first.record == record()
    assert second is first
    assert unknown is None


def test_a_change_reaches_the_cache_within_its_lifetime(settings: Settings, redis_client: redis.Redis) -> None:
    redis_client.set(keys.link("abc123"), record("https://a.example/").encode())

    async def scenario(cache: LinkCache) -> tuple[str, str, float]:
        before = (await cache.get("abc123")).record.destination_url  # type: ignore[union-attr]
        redis_client.set(keys.link("abc123"), record("https://b.example/").encode())
        changed = time.monotonic()

        async def changed_target() -> Target | None:
            target = await cache.get("abc123")
            assert target is not None
            return target if target.record.destination_url != before else None

        target = await wait_until_async(changed_target, interval=0.01, message="the change never reached the cache")
        return before, target.record.destination_url, time.monotonic() - changed

    before, after, waited = run(scenario, settings, ttl=0.3)
    assert (before, after) == ("https://a.example/", "https://b.example/")
    assert waited < 5  # the contract: a PATCH takes effect on redirects within 5 s


def test_stale_entries_are_served_while_redis_is_down(settings: Settings, redis_client: redis.Redis) -> None:
    redis_client.set(keys.link("abc123"), record().encode())

    async def scenario(cache: LinkCache) -> tuple[Any, Exception | None]:
        await cache.get("abc123")
        cache._redis = connect_async(settings.with_(redis_url="redis://127.0.0.1:1/0"), socket_connect_timeout=0.2)
        cache._ttl = 0.0
        for entry in cache._entries.values():
            entry.expires = 0.0  # long expired: a normal read is due
        try:
            stale = await cache.get("abc123")
            error: Exception | None = None
            try:
                await cache.get("neverseen")
            except StorageUnavailable as exc:
                error = exc
            return stale, error
        finally:
            await cache._redis.aclose()

    stale, error = run(scenario, settings)
    assert stale is not None and stale.record.code == "abc123"
    assert isinstance(error, StorageUnavailable)
    assert "neverseen" in error.message


def test_concurrent_misses_share_one_read(settings: Settings, redis_client: redis.Redis) -> None:
    redis_client.set(keys.link("abc123"), record().encode())
    redis_client.config_resetstat()

    async def scenario(cache: LinkCache) -> list[Any]:
        return await asyncio.gather(*(cache.get("abc123") for _ in range(50)))

    results = run(scenario, settings)
    assert all(r is results[0] for r in results)
    stats = redis_client.info("commandstats")
    assert stats["cmdstat_get"]["calls"] == 1


def test_lost_records_are_rebuilt_from_clickhouse(
    settings: Settings, ch: ClickHouse, redis_client: redis.Redis
) -> None:
    from decimal import Decimal

    from tracker.registry import Registry
    from tracker.registry.linkindex import LinkIndex

    async def scenario() -> tuple[Any, Any, Any]:
        r = connect_async(settings)
        registry = Registry(settings, ch, r)
        try:
            brand, _ = await registry.create_brand("B", "USD")
            camp = await registry.create_campaign(
                brand["id"], name="C", commission_type="percent", commission_value=Decimal("10"), click_id_param="cid"
            )
            inf = await registry.create_influencer(brand["id"], name="I")
            link = await registry.create_link(
                brand["id"], campaign_id=camp["id"], influencer_id=inf["id"], destination_url="https://shop.example/x"
            )
            redis_client.delete(keys.link(link["code"]))  # Redis lost it
            cache = LinkCache(r, 2.0, registry=LinkIndex(ch, registry.link_by_code))
            target = await cache.get(link["code"])
            return link, target, redis_client.get(keys.link(link["code"]))
        finally:
            await r.aclose()

    link, target, written_back = asyncio.run(scenario())
    assert target is not None
    assert target.record.destination_url == "https://shop.example/x"
    assert target.record.click_id_param == "cid"
    assert target.record.id == link["id"]
    assert written_back is not None and LinkRecord.decode(written_back) == target.record


def test_a_code_redirects_as_soon_as_its_link_exists_before_the_code_set_is_loaded(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """No negative entry: an unknown code asked for a moment before its link is created
    (here while the set of codes cannot be loaded) finds the link at once."""

    class NoCodes:
        async def link_by_code(self, code: str) -> LinkRecord | None:
            return None

        async def stored_link(self, code: str) -> LinkRecord | None:
            return None

        async def codes_since(self, since_ms: int | None) -> list[str]:
            raise StorageUnavailable("ClickHouse is unreachable.")

    async def scenario(cache: LinkCache) -> tuple[Any, Any]:
        before = await cache.get("spring-sale")
        redis_client.set(keys.link("spring-sale"), record(code="spring-sale").encode())
        return before, await cache.get("spring-sale")

    before, after = run(scenario, settings, registry=NoCodes())
    assert before is None
    assert after is not None and after.record.code == "spring-sale"
