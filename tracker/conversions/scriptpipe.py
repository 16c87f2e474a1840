"""One Lua script's calls from concurrent requests, written together on one held connection.

Every postback is one ``EVALSHA`` of ``orderset.RECORD``. Through redis-py each call takes a
pooled connection, packs, writes and reads on its own (with a timeout context per read):
about a sixth of a postback's cost, and one socket write and read for Redis per postback.
``ScriptPipe`` groups the calls that arrive while a batch is out (a group commit, as the click
log does): one write of all their packed commands, then their replies in order. An idle
server pays one event-loop tick; under load N calls cost about one round trip.

What redis-py did is kept: an error reply fails only its own call; ``NOSCRIPT`` (a Redis that
restarted or flushed its scripts) loads the script and sends those calls again; a connection
failure drops the connection and the batch is retried with the client's own ``Retry`` policy
(so the answers to a Redis outage stay what they were: 503 once the retries are spent), under
one deadline of the client's ``socket_timeout`` per attempt. Single Redis only: on a Redis
Cluster each call must go to its slot's node, so ``OrderStates`` keeps the plain script there.

Commands are packed by hiredis's C ``pack_command`` (a dependency: ``redis[hiredis]``), the same
bytes as redis-py's packer (a test compares them) for what these scripts take (text, bytes and
integers) at a tenth of the cost: redis-py encodes each of a postback's ~20 arguments in Python.
A client with another encoding than strict UTF-8 keeps redis-py's packer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
from collections.abc import Callable, Sequence
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tracker.storage import redis_client

Call = tuple[bytes, "asyncio.Future[Any]"]


class ScriptPipe:
    def __init__(self, client: aioredis.Redis, script: str) -> None:
        self.client = client
        self.script = script
        self.sha = hashlib.sha1(script.encode()).hexdigest()  # noqa: S324 - the script's name in Redis
        self._timeout = float(client.connection_pool.connection_kwargs.get("socket_timeout") or 5.0)
        self._retry = client.get_retry() or Retry(NoBackoff(), 0)
        self._packer = redis_client.unpooled(client)  # never connected: packs commands
        self._pack = _packer(client, self._packer)
        self._conn: AbstractConnection | None = None
        self._pending: list[Call] = []
        self._task: asyncio.Task[None] | None = None
        self.batches = 0

    async def __call__(self, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        packed = self._pack(("EVALSHA", self.sha, len(keys), *keys, *args))
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((packed, future))
        if self._task is None:
            self._task = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                self.batches += 1
                try:
                    replies = await self._send_with_retry(batch)
                except BaseException as exc:
                    for _, f in batch:
                        if not f.done():
                            f.set_exception(exc if isinstance(exc, Exception) else RedisError(str(exc)))
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for (_, f), reply in zip(batch, replies, strict=True):
                    if f.done():
                        continue
                    if isinstance(reply, Exception):
                        f.set_exception(reply)
                    else:
                        f.set_result(reply)
        finally:
            self._task = None

    async def _send_with_retry(self, batch: list[Call]) -> list[Any]:
        async def attempt() -> list[Any]:
            return await self._send(batch)

        async def failed(_: BaseException) -> None:
            await self._drop()

        replies: list[Any] = await self._retry.call_with_retry(attempt, failed)
        missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
        if missing:
            await self.client.script_load(self.script)
            again = await self._retry.call_with_retry(lambda: self._send([batch[i] for i in missing]), failed)
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        return replies

    async def _send(self, batch: list[Call]) -> list[Any]:
        out: list[Any] = []
        try:
            async with asyncio.timeout(self._timeout):
                conn = await self._connection()  # its handshake too: the connection has no timeout of its own
                await conn.send_packed_command(b"".join(p for p, _ in batch), check_health=False)
                for _ in batch:
                    try:
                        out.append(await conn.read_response(timeout=math.inf))
                    except ResponseError as exc:  # read whole: the next reply follows
                        out.append(exc)
        except TimeoutError:
            await self._drop()  # replies may be left on it
            raise RedisTimeoutError(f"Redis did not answer {len(batch)} calls within {self._timeout} s") from None
        except BaseException:
            await self._drop()
            raise
        return out

    async def _connection(self) -> AbstractConnection:
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(RedisError, OSError):
                if not await conn.can_read():  # nothing unread, not closed by the server
                    return conn
            await self._drop()
        self._conn = conn = await redis_client.connected(redis_client.unpooled(self.client))
        return conn

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(RedisError, OSError):
                await conn.disconnect()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, RedisError):
                await self._task
        await self._drop()


def _packer(client: aioredis.Redis, conn: AbstractConnection) -> Callable[[tuple[Any, ...]], bytes]:
    """hiredis's packer when it encodes as the client would (strict UTF-8), else redis-py's."""
    kwargs = client.connection_pool.connection_kwargs
    encoding = str(kwargs.get("encoding", "utf-8")).lower().replace("_", "-")
    if encoding in ("utf-8", "utf8") and kwargs.get("encoding_errors", "strict") == "strict":
        pack: Callable[[tuple[Any, ...]], bytes] = hiredis.pack_command
        return pack
    return lambda command: b"".join(conn.pack_command(*command))
