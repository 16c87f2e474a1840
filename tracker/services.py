"""The long-lived clients and components of one process, built once in the app lifespan.

Nothing is created at import time, and nothing is added while serving requests.
Route modules reach the services through ``services(request)``; components
started in the lifespan implement ``Component`` (``start``/``stop``) and are
stopped in reverse order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import redis.asyncio as aioredis
from starlette.requests import HTTPConnection

from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse

if TYPE_CHECKING:  # the types only: the stages import this module, not the other way round
    from tracker.api.brandsessions import BrandSessions
    from tracker.api.proxies import TrustedProxies
    from tracker.api.sessions import Sessions
    from tracker.conversions.ratelimit import StoreRateLimit
    from tracker.conversions.recorder import Conversions
    from tracker.ingest.component import IngestComponent
    from tracker.redirect.handler import Redirector
    from tracker.registry import Registry
    from tracker.storage.embedded import EmbeddedRedis


class Component(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class Services:
    settings: Settings
    redis: aioredis.Redis
    ch: ClickHouse
    registry: Registry
    trusted_proxies: TrustedProxies
    redirect: Redirector
    conversions: Conversions
    postback_limit: StoreRateLimit
    # Portal sign-in links and sessions.
    sessions: Sessions
    # Brand app sessions (``/app``).
    app_sessions: BrandSessions
    # The in-process ingest worker of the embedded mode (None in production).
    ingest: IngestComponent | None = None
    # The supervised Valkey server `tracker serve` started (embedded mode), for /readyz.
    embedded_redis: EmbeddedRedis | None = None
    components: list[Component] = field(default_factory=list)


def services(conn: HTTPConnection) -> Services:
    svc: Services = conn.app.state.services
    return svc
