"""The start-up checks of a server process, run once before it serves.

``tracker serve`` runs them in its own process before uvicorn starts, so a
problem reads as one line and an exit code, and ``--workers N`` does not repeat
them in every worker (those are built by ``app.create_worker_app``, which skips
them). An app built by ``app.create_app(settings)`` for a test or another ASGI
server runs them in its lifespan instead.
"""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis

from tracker.core.errors import SettingsError, StorageUnavailable
from tracker.settings import Settings
from tracker.storage import migrate, redis_client, version
from tracker.storage.clickhouse import ClickHouse, describe

log = logging.getLogger("tracker.startup")


def check_settings(settings: Settings) -> None:
    """The secrets a server needs (embedded mode generates them before this runs)."""
    if settings.secret_key is None:
        raise SettingsError(
            "TRACKER_SECRET_KEY is not set: production mode needs one secret (>= 32 chars) shared by all workers."
        )
    if settings.admin_token is None and not settings.embedded:
        raise SettingsError("TRACKER_ADMIN_TOKEN is not set: production mode needs an admin token.")


async def check_redis(settings: Settings, redis: aioredis.Redis) -> None:
    """Redis answers and keeps its data across a restart (or volatile Redis was allowed)."""
    try:
        how = await redis_client.check_persistence(redis, settings)
    except SettingsError:
        raise
    except Exception as exc:
        raise StorageUnavailable(f"Redis at REDIS_URL is unreachable: {exc}") from exc
    log.info("redis persistence: %s", how)


def check_schema(settings: Settings, ch: ClickHouse) -> None:
    """A server new enough for the schema; embedded: apply the migrations; production: refuse a
    ClickHouse that lacks some (`tracker migrate` applies them)."""
    version.require(ch)
    if settings.embedded:
        applied = migrate.migrate(ch, retention_months=settings.click_retention_months)
        if applied:
            log.info("applied migrations: %s", ", ".join(applied))
        return
    pending = migrate.missing(ch)
    if pending:
        raise SettingsError(
            f"ClickHouse at {describe(settings)} lacks migrations {', '.join(pending)}: run `tracker migrate`."
        )


def run_checks(settings: Settings) -> None:
    """Every check, with connections of its own (for the CLI, before the server starts)."""
    check_settings(settings)

    async def redis_check() -> None:
        client = redis_client.connect_async(settings)
        try:
            await check_redis(settings, client)
        finally:
            await client.aclose()

    asyncio.run(redis_check())
    ch = ClickHouse.connect(settings)
    try:
        check_schema(settings, ch)
    finally:
        ch.close()
