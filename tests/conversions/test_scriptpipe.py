"""``ScriptPipe``: concurrent EVALSHAs grouped on one connection, answering each as redis-py did."""

from __future__ import annotations

import asyncio
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from tracker.conversions.scriptpipe import ScriptPipe

# Echo ARGV[1] after INCR on KEYS[1]; ARGV[1] == 'fail' raises a script error.
SCRIPT = """
if ARGV[1] == 'fail' then return redis.error_reply('ERR asked to fail') end
redis.call('INCR', KEYS[1])
return {ARGV[1], redis.call('GET', KEYS[1])}
"""


def run(redis_url: str, scenario: Any, **client_kw: Any) -> Any:
    async def main() -> Any:
        client = aioredis.Redis.from_url(redis_url, **client_kw)
        pipe = ScriptPipe(client, SCRIPT)
        try:
            return await scenario(pipe, client)
        finally:
            await pipe.close()
            await client.aclose()

    return asyncio.run(main())


def test_concurrent_calls_share_batches_and_each_gets_its_reply(redis_url: str, redis_client: redis.Redis) -> None:
    async def scenario(pipe: ScriptPipe, client: aioredis.Redis) -> Any:
        replies = await asyncio.gather(*(pipe(["n"], [f"a{i}"]) for i in range(200)))
        return replies, pipe.batches

    replies, batches = run(redis_url, scenario)
    assert [r[0] for r in replies] == [f"a{i}".encode() for i in range(200)]
    assert sorted(int(r[1]) for r in replies) == list(range(1, 201))
    assert batches < 200  # grouped: the first call goes alone, the rest wait together
    assert redis_client.get("n") == b"200"


def test_an_error_reply_fails_only_its_own_call(redis_url: str, redis_client: redis.Redis) -> None:
    async def scenario(pipe: ScriptPipe, client: aioredis.Redis) -> Any:
        return await asyncio.gather(pipe(["n"], ["x"]), pipe(["n"], ["fail"]), pipe(["n"], ["y"]),
                                    return_exceptions=True)

    a, failed, b = run(redis_url, scenario)
    assert isinstance(failed, ResponseError) and "asked to fail" in str(failed)
    assert (a[0], b[0]) == (b"x", b"y")
    assert redis_client.get("n") == b"2"


def test_a_flushed_script_is_loaded_again(redis_url: str, redis_client: redis.Redis) -> None:
    async def scenario(pipe: ScriptPipe, client: aioredis.Redis) -> Any:
        first = await pipe(["n"], ["one"])
        await client.script_flush()  # as a restarted Redis: NOSCRIPT for the next calls
        rest = await asyncio.gather(*(pipe(["n"], [f"r{i}"]) for i in range(5)))
        return first, rest

    first, rest = run(redis_url, scenario)
    assert first[0] == b"one"
    assert [r[0] for r in rest] == [f"r{i}".encode() for i in range(5)]
    assert redis_client.get("n") == b"6"


def test_a_killed_connection_is_replaced(redis_url: str, redis_client: redis.Redis) -> None:
    async def scenario(pipe: ScriptPipe, client: aioredis.Redis) -> Any:
        await pipe(["n"], ["before"])
        await client.client_kill_filter(_type="normal", skipme=True)  # the pipe's held connection too
        return await pipe(["n"], ["after"])

    after = run(redis_url, scenario)
    assert after[0] == b"after"
    assert redis_client.get("n") == b"2"


def test_an_unreachable_redis_fails_every_call_after_the_retries(redis_url: str) -> None:
    async def scenario(pipe: ScriptPipe, client: aioredis.Redis) -> Any:
        return await asyncio.gather(*(pipe(["n"], [str(i)]) for i in range(3)), return_exceptions=True)

    # A port nothing listens on (the discard port), with the client's own retry policy: two retries.
    replies = run("redis://127.0.0.1:9/0", scenario, retry=Retry(NoBackoff(), 2), socket_connect_timeout=1)
    assert all(isinstance(r, RedisConnectionError) for r in replies), replies


def test_a_hung_redis_is_a_timeout_not_a_hang() -> None:
    async def main() -> Any:
        accepted: list[asyncio.StreamWriter] = []

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.append(writer)
            await reader.read(-1)  # accepts, reads, never answers

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = aioredis.Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_timeout=0.2,
                                         retry=Retry(NoBackoff(), 0))
        pipe = ScriptPipe(client, SCRIPT)
        try:
            return await asyncio.gather(pipe(["n"], ["late"]), return_exceptions=True)
        finally:
            await pipe.close()
            await client.aclose()
            server.close()
            for writer in accepted:
                writer.close()
            await server.wait_closed()

    (reply,) = asyncio.run(main())
    assert isinstance(reply, redis.exceptions.TimeoutError), reply


def test_commands_are_packed_as_redis_py_packs_them(redis_url: str) -> None:
    # What the postback scripts take: keys and text (non-ASCII too), bytes (a state's JSON), integers.
    command = ("EVALSHA", "0" * 40, 3, "conv:br_1:B-1", "oset:br_1", "cust:br_1:ümlaut", 4_294_967_295, 1, -7, 0,
               "", b"", b'{"order_id":"\\u00e9"}', "h\u00e9", 604_800, "123:1700000000000")
    client = aioredis.Redis.from_url(redis_url)
    pipe = ScriptPipe(client, SCRIPT)
    assert pipe._pack(command) == b"".join(pipe._packer.pack_command(*command))
    latin = ScriptPipe(aioredis.Redis.from_url(redis_url, encoding="latin-1"), SCRIPT)
    assert latin._pack(("EVALSHA", "é")) == b"".join(latin._packer.pack_command("EVALSHA", "é"))
    assert latin._pack(("EVALSHA", "é")) != pipe._pack(("EVALSHA", "é"))  # the client's encoding, not UTF-8
