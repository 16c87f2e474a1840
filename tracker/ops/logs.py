"""Logging: one JSON object a line (time, level, event, logger, and any extras).

No secrets or raw IPs are ever passed to the logger; request ids come from the
``X-Request-Id`` header when a proxy sets one.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from tracker.core.text import REQUEST_ID as REQUEST_ID_PATTERN

# Set per request by ``tracker.ops.obs.RequestIdMiddleware``; every line logged while
# the request runs carries it.
REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)

# The access log (``log_request``): one line a request.
access_log = logging.getLogger("tracker.request")
# Scrapes and probes are frequent and uninteresting: logged at DEBUG.
_QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            entry["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def setup(level: str = "INFO") -> dict[str, Any]:
    """Configure the root logger; return a uvicorn ``log_config`` that uses the same format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "tracker.ops.logs.JSONFormatter"}},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": level, "propagate": False},
            "uvicorn.error": {"handlers": ["default"], "level": level, "propagate": False},
            "uvicorn.access": {"handlers": ["default"], "level": "WARNING", "propagate": False},
        },
    }


def incoming_id(scope: Any) -> str | None:
    """A proxy's ``X-Request-Id`` (an ASGI scope's header) when it is a short, plain token: it is
    echoed into logs and headers."""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text: str = value.decode("latin-1")
            return text if REQUEST_ID_PATTERN.fullmatch(text) else None
    return None


def log_request(method: str, path: str, status: int, started: float) -> None:
    """The one access-log line of a request (never its query string: ``/postback`` carries a token there)."""
    level = logging.DEBUG if path in _QUIET_PATHS and status < 500 else logging.INFO
    if status >= 500:
        level = logging.WARNING
    if access_log.isEnabledFor(level):
        access_log.log(
            level,
            "request",
            extra={
                "method": method,
                "path": path,
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            },
        )
