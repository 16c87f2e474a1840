"""Where the click log's packed XADDs go: one route per Redis primary and the click streams it holds.

With one Redis there is one route (every stream shard, the app's own client). On a Redis
Cluster each primary holding a shard is a route with a plain client of that node, and the
group-commit batches go to the routes in turn, one pipeline each: the shards are
hash-tagged keys (``keys.click_stream``), spread over the slots and so over the primaries.
The map is rebuilt from the cluster's slot map after a failure (a failover moves slots).

Each route holds one connection for live batches (the flusher's, see ``ClickLog``): made
once and held across batches, checked before each the way redis-py's pool checks the
connection it hands out, and never reused after a failed batch (replies may be left on it).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError

from tracker.storage import redis_client


def command_head(stream: bytes, argc: int) -> bytes:
    """RESP of ``XADD <stream> * e`` up to the value: the part every click shares."""
    return b"*%d\r\n$4\r\nXADD\r\n$%d\r\n%s\r\n$1\r\n*\r\n$1\r\ne\r\n" % (argc, len(stream), stream)


@dataclass(eq=False)
class Route:
    """One primary: its client, the heads of the streams it holds, the flusher's held connection."""

    client: aioredis.Redis
    heads: list[bytes]
    replay_heads: list[bytes]
    own_client: bool = False
    conn: AbstractConnection | None = None
    rr: int = field(default=0)

    async def held_connection(self, io_timeout: float) -> AbstractConnection:
        conn = self.conn
        if conn is not None:
            try:
                if not await conn.can_read():
                    return conn
            except (RedisError, OSError):
                pass
            await self.drop_connection()
        # ``send`` puts one deadline on the whole batch.
        async with asyncio.timeout(io_timeout):
            self.conn = conn = await redis_client.connected(redis_client.unpooled(self.client))
        return conn

    async def drop_connection(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            await conn.disconnect()

    async def close(self) -> None:
        await self.drop_connection()
        if self.own_client:
            await self.client.aclose()


async def send(conn: AbstractConnection, payload: bytes, replies: int, io_timeout: float) -> list[object]:
    """Write packed commands and read every reply, under one deadline for the whole batch
    (instead of redis-py's timeout context per reply). An error reply raises ``ResponseError``."""
    out = []
    async with asyncio.timeout(io_timeout):
        await conn.send_packed_command(payload, check_health=False)
        for _ in range(replies):
            out.append(await conn.read_response(timeout=math.inf))
    return out


async def build(client: aioredis.Redis, streams: list[str]) -> list[Route]:
    """The routes of ``streams``: one (the app's client) on a single Redis, one per primary on a cluster."""
    if not redis_client.is_cluster(client):
        return [Route(client, [command_head(s.encode(), 5) for s in streams],
                      [command_head(s.encode(), 7) for s in streams])]
    by_node: dict[tuple[str, int], list[str]] = {}
    for stream in streams:
        by_node.setdefault(await redis_client.primary_async(client, stream), []).append(stream)
    return [
        Route(redis_client.node_async(client, host, port), [command_head(s.encode(), 5) for s in held],
              [command_head(s.encode(), 7) for s in held], own_client=True)
        for (host, port), held in sorted(by_node.items())
    ]


async def refresh(client: aioredis.Redis) -> None:
    """Re-read a cluster's slot map (after a failover); nothing on a single Redis."""
    if redis_client.is_cluster(client):
        await client.nodes_manager.initialize()  # type: ignore[attr-defined]
