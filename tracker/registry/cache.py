"""The registry's storage: ClickHouse rows, Redis records written through and rebuilt.

ClickHouse is the system of record: every write inserts a new row version into a
``ReplacingMergeTree(version)`` table and reads use ``FINAL``. Redis holds the
records the hot paths need (links for the redirect; brands, API keys, campaigns,
stores, coupons and rates for the API and postbacks), written through on every
change and rebuilt from ClickHouse when Redis lost them.

Write-through order for an update: delete the Redis record, insert the new row,
then set the record. A crash or a Redis outage in between leaves no stale record
behind, only a missing one, which the next read rebuilds from ClickHouse.
Rebuilds write back with ``SET NX`` (``fill``) so they never overwrite a newer update.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager, suppress
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tracker.core import keys
from tracker.core.errors import Conflict, StorageUnavailable
from tracker.storage.clickhouse import ClickHouse, run_sync

log = logging.getLogger("tracker.registry")

T = TypeVar("T")
# How long a row lock is held at most, and how long a writer waits for one.
LOCK_SECONDS = 5.0
_LOCK_POLL_SECONDS = 0.02
# A record found nowhere (an unknown API key) is remembered this long as an empty
# value, so guessing does not reach ClickHouse on every try.
NEGATIVE_SECONDS = 30

Row = dict[str, Any]


def text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class Cache:
    """ClickHouse reads and inserts (in a thread), Redis records, row locks."""

    def __init__(self, ch: ClickHouse, redis: aioredis.Redis) -> None:
        self.ch = ch
        self.redis = redis

    async def query(self, sql: str, params: dict[str, Any] | None = None) -> list[Row]:
        return await run_sync(lambda: self.ch.query_dicts(sql, params or {}))

    async def first(self, sql: str, params: dict[str, Any]) -> Row | None:
        rows = await self.query(sql, params)
        return rows[0] if rows else None

    async def insert(self, table: str, row: Row) -> None:
        columns = list(row)
        await run_sync(lambda: self.ch.insert(table, [[row[c] for c in columns]], columns))

    async def get(self, key: str) -> bytes | None:
        """A cached record, or None when missing or when Redis is unreachable (reads fall back)."""
        try:
            raw = await self.redis.get(key)
            return raw.encode() if isinstance(raw, str) else raw
        except RedisError as exc:
            log.warning("redis read of %s failed, reading ClickHouse: %s", key, exc)
            return None

    async def fill(self, key: str, value: bytes | str, ex: int | None = None) -> None:
        """Write back a record rebuilt from ClickHouse, never over a newer one."""
        try:
            await self.redis.set(key, value, nx=True, ex=ex)
        except RedisError as exc:
            log.warning("redis write-back of %s failed: %s", key, exc)

    async def note(self, key: str, value: bytes | str) -> None:
        """A best-effort record (a key's last use): a Redis error is logged, never raised."""
        try:
            await self.redis.set(key, value)
        except RedisError as exc:
            log.warning("redis write of %s failed: %s", key, exc)

    async def fill_missing(self, key: str) -> None:
        """Remember that ClickHouse has no row for this key (an empty record)."""
        await self.fill(key, b"", ex=NEGATIVE_SECONDS)

    async def write(self, op: Awaitable[T]) -> T:
        """A write-through Redis call: failing it fails the request (503, safe to retry)."""
        try:
            return await op
        except RedisError as exc:
            raise StorageUnavailable(f"Redis is unreachable: {exc}") from exc

    @asynccontextmanager
    async def lock(self, kind: str, ident: str) -> AsyncIterator[None]:
        """Serialise read-modify-write of one row across processes; 409 when it stays taken."""
        lock = self.redis.lock(
            keys.registry_lock(kind, ident),
            timeout=LOCK_SECONDS,
            sleep=_LOCK_POLL_SECONDS,
            blocking_timeout=LOCK_SECONDS,
            thread_local=False,
        )
        if not await self.write(lock.acquire()):
            raise Conflict(f"The {kind} {ident!r} is being changed by another request; retry.")
        try:
            yield
        finally:
            with suppress(RedisError):  # an unreleased lock expires on its own
                await lock.release()
