"""The known-orders filter: no false "new", few false "maybe", growth by generations, positions in range."""

from __future__ import annotations

import asyncio

import redis
import redis.asyncio as aioredis

from tracker.conversions.orderset import CAPACITY0, READ, OrderSet, capacity
from tracker.core import keys

SECRET = "test-secret-key-0123456789abcdefghijklmnop"
BRAND = "brd_orderSetTest0001"


async def _verdicts(client: aioredis.Redis, orders: OrderSet, ids: list[str]) -> list[str]:
    read = client.register_script(READ)
    out = []
    for order_id in ids:
        h1, h2 = orders.positions(order_id)
        state = keys.conversion(BRAND, order_id)
        reply = await read(
            keys=[state, keys.order_set(BRAND), keys.held_refunds(BRAND, order_id), keys.order_set(BRAND), state,
                  *orders.generation_keys(BRAND)],
            args=[h1, h2, "", orders.generations(BRAND), "0"],
        )
        out.append(reply[1].decode())
    return out


def test_a_filled_filter_never_calls_a_known_order_new(redis_url: str, redis_client: redis.Redis) -> None:
    known = [f"K-{i}" for i in range(3 * CAPACITY0)]
    unknown = [f"U-{i}" for i in range(2000)]

    async def scenario() -> tuple[list[str], list[str], int]:
        client = aioredis.Redis.from_url(redis_url)
        try:
            orders = OrderSet(client, SECRET)
            assert await _verdicts(client, orders, ["K-0"]) == ["incomplete"]
            await orders.add_all(BRAND, known)
            await orders.mark_complete(BRAND)
            return (await _verdicts(client, orders, known), await _verdicts(client, orders, unknown),
                    orders.generations(BRAND))
        finally:
            await client.aclose()

    on_known, on_unknown, generations = asyncio.run(scenario())
    assert set(on_known) == {"maybe"}  # no false negative, ever
    assert on_unknown.count("maybe") < len(on_unknown) * 0.03  # false positives are rare
    assert generations == 2 and capacity(1) >= 3 * CAPACITY0 - CAPACITY0
    meta = redis_client.hgetall(keys.order_set(BRAND))
    assert meta[b"complete"] == b"1" and int(meta[b"gens"]) == 2


def test_positions_are_two_32_bit_halves() -> None:
    orders = OrderSet(aioredis.Redis(), SECRET)
    h1, h2 = orders.positions("A-1")
    assert 0 <= h1 < 2**32 and 0 < h2 < 2**32 and h2 % 2 == 1
    assert orders.positions("A-1") == (h1, h2) != orders.positions("A-2")
    assert OrderSet(aioredis.Redis(), SECRET.replace("0", "1")).positions("A-1") != (h1, h2)  # keyed
