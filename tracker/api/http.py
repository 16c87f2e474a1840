"""HTTP helpers shared by the route modules: JSON in and out, error bodies.

Money travels as decimal strings (``Decimal`` is encoded with ``str``), counts as
integers. Every error answers ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from tracker.api.schema import parse_json
from tracker.core.errors import PayloadTooLarge, TrackerError
from tracker.core.text import clip

MAX_JSON_BYTES = 64 * 1024
MAX_MESSAGE = 500
MAX_ECHOED_PATH = 100

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    410: "gone",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "rate_limited",
    503: "unavailable",
}


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(data: Any) -> bytes:
    return json.dumps(data, default=_default, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps(content)


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    # A message may quote what the client sent (a code, a field's value): never echo much of it.
    message = clip(message, MAX_MESSAGE)
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


async def tracker_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TrackerError)
    headers = {"Retry-After": "1"} if exc.status in (429, 503) else None
    # An error may name its own headers (401 answers carry WWW-Authenticate, RFC 9110 §11.6.1).
    extra: dict[str, str] | None = getattr(exc, "headers", None)
    if extra:
        headers = {**(headers or {}), **extra}
    return error_response(exc.status, exc.code, exc.message, headers)


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "error")
    message = exc.detail if isinstance(exc.detail, str) and exc.detail else code.replace("_", " ").capitalize()
    path = clip(request.url.path, MAX_ECHOED_PATH)
    if exc.status_code == 404:
        message = f"No route matches {request.method} {path}."
    elif exc.status_code == 405:
        message = f"Method {request.method} is not allowed on {path}."
    return error_response(exc.status_code, code, message, dict(exc.headers) if exc.headers else None)


async def server_error_handler(request: Request, exc: Exception) -> Response:
    return error_response(500, "internal_error", "The server failed to handle the request; it was logged.")


async def read_body(request: Request, limit: int = MAX_JSON_BYTES) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


# The routes that are not ApiRoutes yet call the one body parser by this name.
parse_json_object = parse_json


async def read_json(request: Request, limit: int = MAX_JSON_BYTES) -> dict[str, Any]:
    """The body as a JSON object; floats are parsed as Decimal so money stays exact."""
    return parse_json(await read_body(request, limit))
