"""The batched Redis read of codes the set lacks (``redirect.probe``), against a real Redis.

Every key asked in one turn of the loop goes out as one MGET and each asker hears its own
value; a reply that fails does not cost the others theirs; when Redis cannot answer, or
the probe stops, every asker hears an error instead of waiting for ever.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from loadtests.serve import free_port
from tracker.redirect.probe import Probe


def mget_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats").get("cmdstat_mget")
    return int(stats["calls"]) if stats else 0


def test_one_turn_of_asks_is_one_mget_and_each_hears_its_own(
    redis_url: str, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    redis_client.mset({"k1": b"one", "k3": b"three"})
    redis_client.config_resetstat()
    heard: dict[str, bytes | BaseException | None] = {}

    def reply(key: str) -> object:
        def settle(value: bytes | BaseException | None) -> None:
            if key == "k2":
                raise RuntimeError("this asker's own bug")
            heard[key] = value
        return settle

    async def scenario() -> bytes | None:
        probe = Probe(aioredis.Redis.from_url(redis_url))
        try:
            for key in ("k1", "k2", "k3", "k4"):
                probe.ask(key, reply(key))  # type: ignore[arg-type]
            return await probe.get("k3")  # a coroutine's ask, in the same batch
        finally:
            await probe.stop()

    with caplog.at_level(logging.ERROR, logger="tracker.redirect.probe"):
        assert asyncio.run(scenario()) == b"three"
    assert heard == {"k1": b"one", "k3": b"three", "k4": None}
    assert "a link probe's reply failed" in caplog.text
    assert mget_calls(redis_client) == 1


def test_every_asker_hears_an_error_when_redis_cannot_answer() -> None:
    heard: list[bytes | BaseException | None] = []

    async def scenario() -> None:
        probe = Probe(aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0"))  # nothing listens there
        try:
            for i in range(3):
                probe.ask(f"k{i}", heard.append)
            with pytest.raises((RedisError, OSError)):
                await probe.get("k9")
        finally:
            await probe.stop()

    asyncio.run(scenario())
    assert len(heard) == 3 and all(isinstance(v, RedisError | OSError) for v in heard)


def test_stopping_answers_the_askers_still_waiting(redis_url: str) -> None:
    heard: list[bytes | BaseException | None] = []

    async def scenario() -> None:
        probe = Probe(aioredis.Redis.from_url(redis_url))
        probe.ask("k1", heard.append)  # the sender task has not run yet
        await probe.stop()

    asyncio.run(scenario())
    assert len(heard) == 1 and isinstance(heard[0], OSError)
