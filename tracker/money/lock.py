"""The brand's money lock: payout runs, marking paid and re-attribution of one brand take turns.

A Redis lock (redis-py's, released and extended by Lua on the holder's token) with a
time-to-live renewed while held: a process killed mid-run (kill -9) holds it at most
``seconds`` more, and nothing it did not commit is visible (a run commits with one
insert). Before committing, the holder checks it still owns the lock (``held``): a process
paused past the time-to-live (a frozen VM) does not commit over a newer holder's run.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from redis.asyncio.lock import Lock
from redis.exceptions import LockError

from tracker.core import keys
from tracker.core.errors import Conflict, StorageUnavailable

LOCK_SECONDS = 30.0
WAIT_SECONDS = 60.0


@contextlib.asynccontextmanager
async def brand_lock(redis: aioredis.Redis, brand_id: str, *, seconds: float = LOCK_SECONDS,
                     wait: float = WAIT_SECONDS) -> AsyncIterator[Lock]:
    lock = redis.lock(keys.registry_lock("money", brand_id), timeout=seconds, sleep=0.05,
                      blocking_timeout=wait, thread_local=False)
    if not await lock.acquire():
        raise Conflict("Another payout action of this brand is running; retry in a moment.", code="busy")

    async def renew() -> None:
        while True:
            await asyncio.sleep(seconds / 3)
            with contextlib.suppress(LockError):
                await lock.reacquire()

    task = asyncio.get_running_loop().create_task(renew())
    try:
        yield lock
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with contextlib.suppress(LockError):
            await lock.release()


async def held(lock: Lock) -> None:
    """Raise unless this process still holds ``lock`` (checked right before a commit)."""
    if not await lock.owned():
        raise StorageUnavailable("The payout lock expired before the run could commit; nothing was written. Retry.")
