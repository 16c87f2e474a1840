"""Redis connections (async for the HTTP app, sync for the ingest worker).

The one place that knows how to reach Redis and how to judge whether it keeps
data across a restart: clicks live there until ingest moves them, so a server
without AOF or RDB would lose them.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis

from tracker.core.errors import SettingsError, StorageUnavailable
from tracker.settings import Settings


def _url(settings: Settings) -> str:
    if settings.redis_url is None:
        raise StorageUnavailable("No Redis URL: embedded Redis is not started yet.")
    return settings.redis_url


def connect_async(settings: Settings, **kw: Any) -> aioredis.Redis:
    opts: dict[str, Any] = {"socket_connect_timeout": 2, "socket_timeout": 5, "health_check_interval": 30}
    opts.update(kw)
    return aioredis.Redis.from_url(_url(settings), **opts)


def connect_sync(settings: Settings, **kw: Any) -> redis.Redis:
    opts: dict[str, Any] = {"socket_connect_timeout": 2, "socket_timeout": 30, "health_check_interval": 30}
    opts.update(kw)
    return redis.Redis.from_url(_url(settings), **opts)


def persistence(info: dict[str, Any], config: dict[str, str] | None) -> tuple[bool, str]:
    """Decide from INFO persistence (and CONFIG GET when allowed) whether data survives a restart."""
    if int(info.get("aof_enabled", 0)) == 1:
        return True, "AOF"
    if config is not None:
        if config.get("appendonly", "no") == "yes":
            return True, "AOF"
        if config.get("save", "").strip():
            return True, "RDB snapshots (clicks since the last snapshot are lost on a crash)"
        return False, "appendonly no and no RDB save points"
    return False, "AOF is off and CONFIG GET is not allowed, so RDB save points cannot be checked"


async def check_persistence(client: aioredis.Redis, settings: Settings) -> str:
    """Raise SettingsError when Redis would lose clicks on a restart (unless allowed)."""
    info = await client.info("persistence")
    config: dict[str, str] | None
    try:
        raw = {**await client.config_get("appendonly"), **await client.config_get("save")}
        config = {_text(k): _text(v) for k, v in raw.items()}
    except redis.ResponseError:
        config = None
    durable, how = persistence(info, config)
    if not durable and not settings.allow_volatile_redis:
        raise SettingsError(
            f"REDIS_URL points to a Redis without persistence ({how}): clicks would be lost on a restart. "
            "Enable AOF (appendonly yes) or set TRACKER_ALLOW_VOLATILE_REDIS=1."
        )
    return how


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
