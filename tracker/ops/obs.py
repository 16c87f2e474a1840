"""Operations surface: ``/metrics`` (Prometheus text) and the request-id middleware.

``/metrics`` renders the series of ``tracker.ops.metrics``. With several HTTP workers
(``PROMETHEUS_MULTIPROC_DIR`` set by ``tracker serve --workers N``) it aggregates
every worker's files; a single process renders the default registry. The stream
gauges (length, lag, pending, oldest pending age) are read from Redis at scrape
time, so they are right even when ingest runs in other processes or hosts.

The request-id middleware is pure ASGI. On the redirect hot path it only reads
``X-Request-Id`` when a proxy sent one; every other request gets an id (the
header's, or a new one), echoes it in the response and logs one line for it
without the query string (``/postback`` carries the store token there).
"""

from __future__ import annotations

import logging
import os
import time

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tracker.api.endpoints import Operation, api
from tracker.core import ids, keys
from tracker.core.codes import is_redirect_path
from tracker.ingest import delivery
from tracker.ops import metrics
from tracker.ops.logs import REQUEST_ID, incoming_id, log_request
from tracker.services import services

log = logging.getLogger("tracker.request")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

_REQUEST_ID_HEADER = b"x-request-id"


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = incoming_id(scope)
        if is_redirect_path(scope["path"]):
            if incoming is None:
                await self.app(scope, receive, send)
                return
            token = REQUEST_ID.set(incoming)
            try:
                await self.app(scope, receive, send)
            finally:
                REQUEST_ID.reset(token)
            return

        request_id = incoming or ids.request_id()
        header = (_REQUEST_ID_HEADER, request_id.encode("latin-1"))
        status = 500  # what the client sees when the app raises before answering

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        token = REQUEST_ID.set(request_id)
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            log_request(scope["method"], scope["path"], status, started)
            REQUEST_ID.reset(token)


def _stream_names(shards: int) -> list[tuple[str, str]]:
    """(label, key) of every stream an operator watches."""
    names = [(key, key) for key in keys.click_streams(shards)]
    names.extend((key, key) for key in keys.conversion_streams())
    names.append((keys.DEAD_LETTER_STREAM, keys.DEAD_LETTER_STREAM))
    return names


async def refresh_stream_gauges(request: Request) -> None:
    """Set the stream gauges from Redis (one pipeline); a Redis outage leaves them as they were."""
    svc = services(request)
    streams = _stream_names(svc.settings.stream_shards)
    try:
        async with svc.redis.pipeline(transaction=False) as pipe:
            for label, key in streams:
                if label == keys.DEAD_LETTER_STREAM:
                    pipe.xlen(key)
                else:
                    delivery.queue_stats(pipe, key, keys.INGEST_GROUP)
            results = await pipe.execute(raise_on_error=False)
    except Exception as exc:
        log.warning("stream gauges not refreshed: Redis is unreachable (%s)", type(exc).__name__)
        return
    for (label, _), result in zip(streams, results, strict=True):
        if isinstance(result, Exception):
            continue
        if label == keys.DEAD_LETTER_STREAM:
            # Nobody consumes the dead letters: their length is the signal.
            metrics.STREAM_LENGTH.labels(label).set(result)
            continue
        metrics.set_stream_gauges(label, delivery.gauges(delivery.summarize(result)))


def render_metrics() -> bytes:
    """Prometheus text of this process, or of every worker in multiprocess mode."""
    path = os.environ.get(MULTIPROC_ENV)
    if path:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)


async def metrics_endpoint(request: Request) -> Response:
    await refresh_stream_gauges(request)
    return Response(render_metrics(), media_type=CONTENT_TYPE_LATEST)


METRICS = api(
    "GET",
    "/metrics",
    Operation(
        "Prometheus text exposition of every stage.",
        "operations",
        answers={200: None},
        also={200: "text/plain"},
        operation_id="metrics",
    ),
)(metrics_endpoint)
