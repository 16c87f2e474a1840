"""The ASGI application: routes, error handlers and the lifespan that owns the clients.

``create_app(settings)`` builds the app; nothing connects until the lifespan runs.
In embedded mode the lifespan also applies migrations and runs the ingest loop in
this process (chDB allows one owner process).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import BaseRoute

from tracker import startup
from tracker.api import http
from tracker.core.errors import TrackerError
from tracker.ops.obs import RequestIdMiddleware
from tracker.redirect.handler import TrackerStarlette
from tracker.services import Component, Services
from tracker.settings import Settings
from tracker.storage import redis_client
from tracker.storage.clickhouse import ClickHouse, run_sync
from tracker.storage.embedded import EmbeddedRedis

log = logging.getLogger("tracker.app")


def _postback_routes() -> list[BaseRoute]:
    from tracker.conversions import integrations, routes, storeroutes

    return [*routes.routes(), *integrations.routes(), *storeroutes.routes()]


def _routes() -> list[BaseRoute]:
    from tracker.api import openapi
    from tracker.money import meroutes, payoutroutes, statementroutes
    from tracker.money import routes as money_api
    from tracker.ops import deadletters, health, obs
    from tracker.portal import routes as portal_api
    from tracker.quality import routes as quality_api
    from tracker.registry import campaignroutes, editroutes, keyroutes
    from tracker.registry import routes as registry_api
    from tracker.reports import routes as reports_api
    from tracker.web import app as brand_app
    from tracker.web import carrier, portal, qr
    from tracker.webhooks import routes as webhooks_api

    routes: list[BaseRoute] = [
        health.HEALTHZ,
        health.READYZ,
        obs.METRICS,
        openapi.ROUTE,
        *registry_api.routes(),
        *campaignroutes.routes(),
        *editroutes.routes(),
        *keyroutes.routes(),
        *portal_api.routes(),
        *_postback_routes(),
        *reports_api.routes(),
        *money_api.routes(),
        *payoutroutes.routes(),
        *statementroutes.routes(),
        *meroutes.routes(),
        *quality_api.routes(),
        *brand_app.routes(),
        *qr.routes(),
        *portal.routes(),
        *webhooks_api.routes(),
        *deadletters.routes(),
        carrier.ROUTE,
    ]
    return routes


def build_services(
    settings: Settings, redis: aioredis.Redis, ch: ClickHouse, embedded_redis: EmbeddedRedis | None = None
) -> Services:
    """This process's services; components start in list order and stop in reverse."""
    from tracker.api.brandsessions import BrandSessions
    from tracker.api.proxies import TrustedProxies
    from tracker.api.sessions import Sessions
    from tracker.conversions.ratelimit import StoreRateLimit
    from tracker.conversions.recorder import Conversions
    from tracker.redirect.handler import Redirector
    from tracker.registry import Registry
    from tracker.registry.linkindex import LinkIndex

    registry = Registry(settings, ch, redis)
    secret_key = settings.secret_key
    assert secret_key is not None, "the start-up checks or prepare_data_dir set the secret key"
    ingest = None
    if settings.embedded:
        from tracker.ingest.component import IngestComponent

        ingest = IngestComponent(settings, ch)
    webhooks = None
    if settings.embedded:
        from tracker.webhooks.component import WebhookComponent

        webhooks = WebhookComponent(settings, ch)
    redirect = Redirector(settings, LinkIndex(ch, registry.link_by_code), registry.campaigns.fallback_url)
    svc = Services(
        settings=settings,
        redis=redis,
        ch=ch,
        registry=registry,
        trusted_proxies=TrustedProxies(settings.trusted_proxies),
        redirect=redirect,
        conversions=Conversions(settings, redis, ch, registry),
        postback_limit=StoreRateLimit(redis, settings.postback_rate_limit),
        sessions=Sessions(redis, secret_key, settings.portal_session_hours * 3600),
        app_sessions=BrandSessions(redis, secret_key, settings.app_session_hours * 3600),
        ingest=ingest,
        embedded_redis=embedded_redis,
    )
    # The registry's sweep repairs records a Redis restart rolled back. Ingest comes
    # before the redirect, so it stops after it (reverse order) and takes its last clicks.
    # The webhook sender (embedded: a thread of this process) reads what the recorder wrote.
    svc.components = [
        registry, *([ingest] if ingest else []), *([webhooks] if webhooks else []), redirect, svc.conversions,
    ]
    return svc


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    checked: bool = app.state.checked
    if not checked:
        startup.check_settings(settings)
    redis = redis_client.connect_async(settings)
    ch: ClickHouse | None = None
    started: list[Component] = []
    try:
        if not checked:
            await startup.check_redis(settings, redis)
        ch = await run_sync(ClickHouse.connect, settings)
        if not checked:
            await run_sync(startup.check_schema, settings, ch)
        svc = build_services(settings, redis, ch, app.state.embedded_redis)
        app.state.services = svc
        for component in svc.components:
            await component.start()
            started.append(component)
        if isinstance(app, TrackerStarlette):
            app.early_answer = svc.redirect.answer_early
        yield
    finally:
        if isinstance(app, TrackerStarlette):
            app.early_answer = None
        for component in reversed(started):
            try:
                await component.stop()
            except Exception:
                log.exception("stopping %r failed", component)
        await redis.aclose()
        if ch is not None:
            await run_sync(ch.close)


def create_app(
    settings: Settings, *, checked: bool = False, embedded_redis: EmbeddedRedis | None = None
) -> Starlette:
    """The app; ``checked`` when this process already ran the start-up checks (``tracker.startup``);
    ``embedded_redis``: the Valkey server `tracker serve` started and supervises (for /readyz)."""
    from tracker.conversions import fastpath

    app = TrackerStarlette(
        routes=_routes(),
        middleware=[Middleware(RequestIdMiddleware)],
        lifespan=lifespan,
        exception_handlers={
            TrackerError: http.tracker_error_handler,
            HTTPException: http.http_exception_handler,
            Exception: http.server_error_handler,
        },
    )
    app.fast_routes = fastpath.route
    app.state.settings = settings
    app.state.checked = checked
    app.state.embedded_redis = embedded_redis
    return app


def create_app_from_env() -> Starlette:
    """Factory for an ASGI server that imports the app itself; the lifespan runs the start-up checks."""
    return create_app(Settings.from_env())


def create_worker_app() -> Starlette:
    """Factory for the workers of ``tracker serve --workers N``, which ran the checks once before starting them.

    A worker stops when its main process dies, even by ``kill -9`` (``supervisor.die_with_parent``).
    """
    from tracker.supervisor import die_with_parent

    die_with_parent()
    return create_app(Settings.from_env(), checked=True)
