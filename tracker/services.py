"""The long-lived clients and components of one process, built in the app lifespan.

Nothing is created at import time. Route modules reach the services through
``services(request)``; components started in the lifespan implement
``Component`` (``start``/``stop``) and are stopped in reverse order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import redis.asyncio as aioredis
from starlette.requests import HTTPConnection

from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse


class Component(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class Services:
    settings: Settings
    redis: aioredis.Redis
    ch: ClickHouse
    components: list[Component] = field(default_factory=list)
    # Named components route modules look up (e.g. "links", "clicks", "ingest").
    named: dict[str, Any] = field(default_factory=dict)

    def get(self, name: str) -> Any:
        return self.named[name]


def services(conn: HTTPConnection) -> Services:
    svc: Services = conn.app.state.services
    return svc
