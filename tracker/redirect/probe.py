"""Batched Redis reads of link records, for the codes the code set (``codeset``) lacks.

A flood of unknown codes makes one of these per request, so it is built like the click
log's group commit: requests append their key and a reply (a callback, or a future's
setter); one sender task sends every key waiting as a single ``MGET`` over a connection
it holds (taking a connection from redis-py's pool and running its command machinery
costs more than a click's whole redirect), and keys that arrive while one is in flight
go in the next. One deadline
covers a batch; a batch that fails on the held connection is sent once more on a new one
(Redis may have restarted), and one that fails again fails its waiters (the link cache
then treats Redis as down for a second).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError

from tracker.storage import redis_client

IO_TIMEOUT_SECONDS = 1.0

log = logging.getLogger("tracker.redirect.probe")


# Called once with the key's value (None: no such key) or with the error that failed Redis.
Reply = Callable[[bytes | BaseException | None], None]


class Probe:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._cluster = redis_client.is_cluster(redis)
        self._batch: list[tuple[bytes, Reply]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._conn: AbstractConnection | None = None

    async def get(self, key: str) -> bytes | None:
        """The value of ``key``; raises ``RedisError`` or ``OSError`` when Redis failed."""
        fut: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self.ask(key, functools.partial(_settle, fut))
        return await fut

    def ask(self, key: str, reply: Reply) -> None:
        """Have ``reply`` called with ``key``'s value from the sender task: no future, no task
        switch per key, for callers that answer from a callback (``handler.answer_early``)."""
        self._batch.append((key.encode(), reply))
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="redirect-probe")
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        batch, self._batch = self._batch, []
        _answer(batch, None, OSError("the redirect is stopping"))  # nobody waits for ever
        await self._drop()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._batch = self._batch, []
            if not batch:
                continue
            try:
                values = await self._mget([key for key, _ in batch])
            except asyncio.CancelledError:
                _answer(batch, None, OSError("the redirect is stopping"))
                raise
            except (RedisError, OSError, TimeoutError) as exc:
                await self._drop()  # replies may be left unread on it
                error = exc if not isinstance(exc, TimeoutError) else OSError("Redis did not answer in time")
                _answer(batch, None, error)
                continue
            _answer(batch, values, None)

    async def _mget(self, keys: list[bytes]) -> list[bytes | None]:
        if self._cluster:
            # The keys fall in many slots: redis-py's MGET per slot (no held connection on a cluster).
            async with asyncio.timeout(IO_TIMEOUT_SECONDS):
                return await redis_client.mget_async(self._redis, [k.decode() for k in keys])
        parts = [b"*%d\r\n$4\r\nMGET\r\n" % (len(keys) + 1)]
        parts.extend(b"$%d\r\n%s\r\n" % (len(key), key) for key in keys)
        payload = b"".join(parts)
        async with asyncio.timeout(IO_TIMEOUT_SECONDS):
            while True:
                held = self._conn is not None
                conn = await self._connection()
                try:
                    await conn.send_packed_command(payload, check_health=False)
                    reply = await conn.read_response(timeout=math.inf)
                    break
                except (RedisError, OSError):
                    await self._drop()
                    if not held:
                        raise
                    # The held connection went away (Redis restarted): once more on a new one.
        if not isinstance(reply, list) or len(reply) != len(keys):
            raise RedisError(f"MGET answered {type(reply).__name__}")
        return [v.encode() if isinstance(v, str) else v for v in reply]

    async def _connection(self) -> AbstractConnection:
        """Held across batches and not checked before each (that check costs a read with a
        timeout, a sizeable share of a small batch): a failure on it is retried once on a new
        connection (``_mget``)."""
        if self._conn is not None:
            return self._conn
        self._conn = conn = await redis_client.connected(redis_client.unpooled(self._redis))
        return conn

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(RedisError, OSError):
                await conn.disconnect()


def _answer(batch: list[tuple[bytes, Reply]], values: list[bytes | None] | None, error: BaseException | None) -> None:
    """Each waiter its value, or the error; one waiter's failure is logged, not the others' loss."""
    for i, (_, reply) in enumerate(batch):
        try:
            reply(error if values is None else values[i])
        except Exception:
            log.exception("a link probe's reply failed")


def _settle(fut: asyncio.Future[bytes | None], value: bytes | BaseException | None) -> None:
    if fut.done():  # its waiter went away
        return
    if isinstance(value, BaseException):
        fut.set_exception(value)
        fut.exception()  # retrieved: a waiter that went away leaves no warning
    else:
        fut.set_result(value)
