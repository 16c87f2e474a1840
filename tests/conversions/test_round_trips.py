"""A postback is one Redis call (``orderset.RECORD``): rate limit, read, and a new order's write.

Counted on the real Redis with ``INFO commandstats``; the cases the one call cannot settle
(an order to change, a known customer, a filter that cannot tell) still answer as before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import key_slot
from starlette.testclient import TestClient

from tests.conversions.world import World, make_world, stream_rows
from tests.waiting import wait_until
from tracker.app import create_app
from tracker.conversions import seen
from tracker.core import keys
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse


def _filter_complete(world: World, redis_client: redis.Redis) -> None:
    # A new brand's filter is rebuilt in the background after its first unknown order.
    world.post({"order_id": "WARM-1", "amount": "1.00", "currency": "USD"})
    wait_until(lambda: redis_client.hget(keys.order_set(world.brand["id"]), "complete") == b"1",
               message="the brand's order filter was not rebuilt")


# What one run of orderset.RECORD calls inside Redis (commandstats counts a script's commands too).
_IN_SCRIPT = {"incr", "expire", "pttl", "get", "hget", "hmget", "getbit", "set", "xadd", "setbit", "hset", "hincrby"}


def _calls(redis_client: redis.Redis, post: Any) -> tuple[Any, dict[str, int]]:
    """The answer of ``post()`` and the Redis commands it caused, by name."""
    redis_client.config_resetstat()
    answer = post()
    stats = redis_client.info("commandstats")
    calls = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}
    return answer, {k: v for k, v in calls.items() if k not in ("info", "config|resetstat", "config")}


def _quiet(redis_client: redis.Redis, post: Any, expected: Any) -> tuple[Any, dict[str, int]]:
    """``_calls`` of the first of up to three tries whose count ``expected(calls)`` accepts: the test
    apps' background work (filter rebuilds, record refreshes) shares the Redis and may add commands to
    one count. ``post`` must be safe to repeat. The last try's answer and calls otherwise."""
    for _ in range(3):
        answer, calls = _calls(redis_client, post)
        if expected(answer, calls):
            break
    return answer, calls


def _one_call(calls: dict[str, int], gets: int) -> bool:
    """One EVALSHA and nothing but its own commands: ``gets`` GETs are the script's (state, held)."""
    return calls.get("evalsha") == 1 and calls.get("get") == gets and set(calls) <= _IN_SCRIPT | {"evalsha"}


def _cached(settings: Settings) -> Settings:
    """Records stay in the process's cache for the whole test (a loaded box may take seconds)."""
    return settings.with_(link_cache_seconds=600.0)


def test_a_new_order_and_its_replay_are_one_redis_call_each(
    ch: ClickHouse, settings: Settings, redis_client: redis.Redis
) -> None:
    with TestClient(create_app(_cached(settings))) as client:
        _one_call_each(make_world(client, settings), redis_client)


def _one_call_each(world: World, redis_client: redis.Redis) -> None:
    _filter_complete(world, redis_client)
    body = {"order_id": "ONE-1", "amount": "20.00", "currency": "USD", "click_id": world.click(world.link)}
    warm = {"order_id": "ONE-0", "amount": "1.00", "currency": "USD", "click_id": world.click(world.link)}
    world.post(warm)  # the link and campaign caches
    fresh = iter(range(1, 4))

    def post_new() -> Any:
        return world.post({**body, "order_id": f"ONE-{next(fresh)}"})

    def is_new(r: Any, calls: dict[str, int]) -> bool:
        return _one_call(calls, gets=2) and calls["xadd"] == 1 and calls["incr"] == 1

    new, calls = _quiet(redis_client, post_new, is_new)
    assert new.status_code == 202 and not new.json()["duplicate"] and new.json()["attribution"] == "click"
    assert is_new(new, calls), calls
    order_id = new.json()["order_id"]
    again, calls = _quiet(redis_client, lambda: world.post({**body, "order_id": order_id}),
                          lambda r, c: c == {"evalsha": 1, "incr": 1, "get": 1})
    assert again.status_code == 202 and again.json() == {**new.json(), "duplicate": True}
    assert calls == {"evalsha": 1, "incr": 1, "get": 1}, calls
    rows = [r for r in stream_rows(redis_client) if r["order_id"] == order_id]
    assert len(rows) == 1 and rows[0]["conversion_id"] == new.json()["conversion_id"]


def test_a_replay_on_another_process_is_answered_by_the_same_call(
    ch: ClickHouse, settings: Settings, world: World, redis_client: redis.Redis
) -> None:
    """A process that never saw the order sends its first version along; Redis answers the stored one."""
    _filter_complete(world, redis_client)
    bodies = [{"order_id": f"TWO-{i}", "amount": "30.00", "currency": "USD", "coupon_code": "ANNA10"}
              for i in (1, 2, 3)]
    firsts = {b["order_id"]: world.post(b).json() for b in bodies}
    # Each try replays an order the other process has not seen (a seen one would only be read).
    unseen = iter(bodies)
    with TestClient(create_app(_cached(settings))) as other:
        warm = {"order_id": "TWO-0", "amount": "1.00", "currency": "USD", "coupon_code": "ANNA10"}
        world.post(warm, client=other)  # the link and campaign caches
        again, calls = _quiet(redis_client, lambda: world.post(next(unseen), client=other),
                              lambda r, c: c == {"evalsha": 1, "incr": 1, "get": 1})
    assert again.json() == {**firsts[again.json()["order_id"]], "duplicate": True}
    assert calls == {"evalsha": 1, "incr": 1, "get": 1}, calls
    orders = [r["order_id"] for r in stream_rows(redis_client)]
    assert all(orders.count(b["order_id"]) == 1 for b in bodies)


def test_workers_sharing_the_seen_table_read_a_replay_without_deciding_it(
    ch: ClickHouse, settings: Settings, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With ``tracker serve --workers N`` every worker maps one table of the orders seen lately: a replay
    reaching a worker that did not record the order is only read, no first version decided in vain."""
    monkeypatch.setenv(seen.ENV, "")  # restored (removed) after the test, whatever the code under test sets
    seen.share_across_workers(tmp_path)
    with TestClient(create_app(_cached(settings))) as one, TestClient(create_app(_cached(settings))) as two:
        world = make_world(one, settings)
        _filter_complete(world, redis_client)
        body = {"order_id": "SH-1", "amount": "30.00", "currency": "USD", "coupon_code": "ANNA10"}
        first = world.post(body)
        assert first.status_code == 202 and not first.json()["duplicate"]
        decided: list[str] = []
        conversions = two.app.state.services.conversions  # type: ignore[attr-defined]
        decide = conversions.first_version

        async def counted(store: Any, new: Any, snap: Any) -> Any:
            decided.append(new.order_id)
            return await decide(store, new, snap)

        monkeypatch.setattr(conversions, "first_version", counted)
        again = world.post(body, client=two)
        assert again.json() == {**first.json(), "duplicate": True}
        assert decided == []
        fresh = world.post({**body, "order_id": "SH-2"}, client=two)  # a new order is still decided first
        assert fresh.status_code == 202 and not fresh.json()["duplicate"] and decided == ["SH-2"]


def test_a_status_change_after_the_one_call_is_written_by_the_commit(world: World, redis_client: redis.Redis) -> None:
    _filter_complete(world, redis_client)
    pending = world.post({"order_id": "CH-1", "amount": "10.00", "currency": "USD", "status": "pending"})
    assert pending.status_code == 202
    r = world.post({"order_id": "CH-1", "amount": "10.00", "currency": "USD", "status": "approved"})
    assert r.status_code == 202 and r.json()["status"] == "approved" and not r.json()["duplicate"]
    assert [row["version"] for row in stream_rows(redis_client) if row["order_id"] == "CH-1"] == [1, 2]


def test_a_returning_customer_is_not_written_by_the_guess(world: World, redis_client: redis.Redis) -> None:
    """The first version guessed before the read assumes no earlier order of the customer: Redis refuses
    it when there is one, and the order is attributed to the customer's influencer."""
    _filter_complete(world, redis_client)
    first = world.post({"order_id": "CU-1", "amount": "10.00", "currency": "USD", "customer_id": "c-42",
                        "click_id": world.click(world.link)})
    assert first.json()["attribution"] == "click"
    second = world.post({"order_id": "CU-2", "amount": "12.00", "currency": "USD", "customer_id": "c-42"})
    assert second.status_code == 202, second.text
    assert second.json()["attribution"] == "customer"
    assert second.json()["influencer_id"] == world.influencer_id


def test_refused_postbacks_count_against_the_limit(ch: ClickHouse, settings: Settings) -> None:
    with TestClient(create_app(settings.with_(postback_rate_limit=2))) as client:
        world = make_world(client, settings)
        assert world.post({"order_id": "RL-1", "amount": "oops", "currency": "USD"}).status_code == 422
        assert world.post({"order_id": "RL-2", "amount": "1.00", "currency": "USD"}).status_code == 202
        over = world.post({"order_id": "RL-3", "amount": "oops", "currency": "USD"})
        assert over.status_code == 429 and int(over.headers["Retry-After"]) > 30
        assert world.post({"order_id": "RL-4", "amount": "1.00", "currency": "USD"}).status_code == 429


def test_the_rate_counter_shares_the_slot_of_its_brands_orders() -> None:
    keys.use_layout(cluster=True, conversion_shards=3)
    try:
        for brand in ("brd_1", "brd_Zx9", "b" * 40):
            counter = keys.postback_rate(brand, "sto_abc")
            assert counter.startswith(keys.RATE_LIMITS + ":") and "sto_abc" in counter
            assert key_slot(counter.encode()) == key_slot(keys.conversion_stream(brand).encode())
    finally:
        keys.use_layout(cluster=False, conversion_shards=1)
    assert keys.postback_rate("brd_1", "sto_abc") == "trk:rl:postback/sto_abc"
