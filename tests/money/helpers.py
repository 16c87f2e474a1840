"""Shared steps of the money tests: brand calls, draining conversions into ClickHouse."""

from __future__ import annotations

from typing import Any

import redis

from tests.conversions.world import World
from tracker.ingest.worker import Worker
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse


def auth(world: World) -> dict[str, str]:
    return {"Authorization": f"Bearer {world.brand['api_key']}"}


def api(world: World, method: str, path: str, **kw: Any) -> Any:
    return world.client.request(method, path, headers=auth(world), **kw)


def drain(settings: Settings, redis_client: redis.Redis, ch: ClickHouse) -> int:
    """Move every streamed conversion version into ClickHouse (what the ingest worker does)."""
    return Worker(settings, redis_client, ch, name="t-money").drain()
