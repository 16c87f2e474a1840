"""``/healthz`` (the process answers) and ``/readyz`` (Redis and ClickHouse answer, ingest keeps up)."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response

from tracker.api import http
from tracker.api.endpoints import Operation, api
from tracker.api.schema import Answer, ErrorDetail
from tracker.services import services
from tracker.storage.clickhouse import describe, run_sync

_CHECKS = (
    "`redis` and `clickhouse`: `ok` or `unreachable`; `ingest` (embedded mode only): lag and pending "
    "entries per stream and the in-process worker's state; `redis_server` (embedded mode only): the "
    "supervised Valkey server's `status` (`running`, `restarting`), a `message` and its `restarts`."
)
READY_CHECK_SECONDS = 1.0


class Alive(Answer):
    status: Literal["ok"] = "ok"


class Ready(Answer):
    status: Literal["ready"] = "ready"
    checks: dict[str, Any] = Field(description=_CHECKS)


class NotReady(Answer):
    status: Literal["unavailable"] = "unavailable"
    checks: dict[str, Any] = Field(description=_CHECKS)
    error: ErrorDetail = Field(description="`not_ready`, with every failing dependency named.")


async def healthz(request: Request) -> Response:
    return http.JSONResponse(Alive().dump())


async def readyz(request: Request) -> Response:
    """Every check is bounded in time and turned into a reason: a probe gets an answer it can act
    on within about a second, never a 500 or a wait on a client's retries."""
    svc = services(request)
    checks: dict[str, Any] = {}
    problems: list[str] = []
    redis_ok = False
    server = svc.embedded_redis.state() if svc.embedded_redis is not None else None
    if server is not None:
        checks["redis_server"] = server
    if server is not None and server["status"] != "running":
        checks["redis"] = "unreachable"  # no ping: the client's retries would outlast a quick restart
        problems.append(str(server["message"]))
    else:
        try:
            async with asyncio.timeout(READY_CHECK_SECONDS):
                await svc.redis.ping()
            checks["redis"] = "ok"
            redis_ok = True
        except Exception as exc:
            checks["redis"] = "unreachable"
            problems.append(f"Redis is unreachable: {_reason(exc)}.")
    if await run_sync(svc.ch.ping):
        checks["clickhouse"] = "ok"
    else:
        checks["clickhouse"] = "unreachable"
        problems.append(f"ClickHouse at {describe(svc.settings)} is unreachable.")
    if svc.ingest is not None and redis_ok:
        from tracker.ingest.component import ingest_status

        try:
            async with asyncio.timeout(READY_CHECK_SECONDS):
                status = await ingest_status(svc.settings, svc.redis, svc.ingest)
        except Exception as exc:
            status = {"problem": f"Ingest status cannot be read from Redis: {_reason(exc)}."}
        checks["ingest"] = status
        if status.get("problem"):
            problems.append(str(status["problem"]))
    if problems:
        error = ErrorDetail(code="not_ready", message=" ".join(problems))
        return http.JSONResponse(NotReady(checks=checks, error=error).dump(), status_code=503)
    return http.JSONResponse(Ready(checks=checks).dump())


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {READY_CHECK_SECONDS:g} s"
    return (str(exc) or type(exc).__name__).rstrip(".")


HEALTHZ = api("GET", "/healthz", Operation("Liveness: the process answers.", "operations", answers={200: Alive}))(
    healthz
)
READYZ = api(
    "GET",
    "/readyz",
    Operation(
        "Readiness: Redis and ClickHouse reachable, ingest keeping up.",
        "operations",
        answers={200: Ready, 503: NotReady},
    ),
)(readyz)
