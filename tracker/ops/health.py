"""``/healthz`` (the process answers) and ``/readyz`` (Redis and ClickHouse answer, ingest keeps up)."""

from __future__ import annotations

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
    "entries per stream and the in-process worker's state."
)


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
    svc = services(request)
    checks: dict[str, Any] = {}
    problems: list[str] = []
    try:
        await svc.redis.ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = "unreachable"
        problems.append(f"Redis is unreachable: {exc}")
    if await run_sync(svc.ch.ping):
        checks["clickhouse"] = "ok"
    else:
        checks["clickhouse"] = "unreachable"
        problems.append(f"ClickHouse at {describe(svc.settings)} is unreachable.")
    if svc.ingest is not None:
        from tracker.ingest.component import ingest_status

        status = await ingest_status(svc.settings, svc.redis, svc.ingest)
        checks["ingest"] = status
        if status.get("problem"):
            problems.append(str(status["problem"]))
    if problems:
        error = ErrorDetail(code="not_ready", message=" ".join(problems))
        return http.JSONResponse(NotReady(checks=checks, error=error).dump(), status_code=503)
    return http.JSONResponse(Ready(checks=checks).dump())


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
