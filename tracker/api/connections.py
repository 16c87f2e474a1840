"""The HTTP/1.1 protocol `tracker serve` runs: uvicorn's httptools protocol with the bounds it lacks.

uvicorn closes an idle keep-alive connection after ``timeout_keep_alive``, but only once
a response has been sent: a connection that never sends a request, or sends its headers
a line at a time (slowloris), is held for ever, and enough of them exhaust the process's
file descriptors, after which the server accepts nothing and says nothing. uvicorn has
no header-read timeout, and its ``limit_concurrency`` answers 503 to every new request
while the slow connections hold the slots, so it would turn a slowloris into an outage
for followers. This protocol adds:

- A header deadline (``TRACKER_HEADER_TIMEOUT_SECONDS``, default 10): a request's headers
  must be complete that long after the connection opened or its previous response was
  sent, else the connection is closed. No timer per request (a redirect costs a few tens
  of microseconds; a timer armed and cancelled per request would be a noticeable share):
  connections waiting for headers sit in one insertion-ordered dict, which a sweep every
  ``SWEEP_SECONDS`` walks from the oldest until the first that is still in time.
- A header size bound (64 KiB): past it the answer is 431 and the connection is closed
  (llhttp itself bounds nothing).
- A connection cap (``TRACKER_MAX_CONNECTIONS``; by default half the descriptor limit, at
  most 10,000): a connection beyond it makes room by closing the connection that has
  waited longest without a request in progress (idle keep-alive, or headers still
  arriving: what a slowloris holds; a follower's request completes its headers within
  milliseconds and is never the one closed), or, when every connection has a request in
  progress, is itself closed. A WARNING line (at most one every 10 s) says so, and
  ``tracker_http_connections_closed_total{reason}`` counts every connection closed here.

The protocol also answers some requests without the app (``api.early``).

State shared by a loop's connections (the waiting dict, its sweep, the early answers due)
is kept per event loop, so servers on several loops of one process (tests) stay apart.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
import weakref
from dataclasses import dataclass
from typing import Any, ClassVar

from tracker.api.early import EarlyAnswering
from tracker.ops.metrics import HTTP_CONNECTIONS, HTTP_CONNECTIONS_CLOSED
from tracker.settings import Settings

log = logging.getLogger("tracker.api.connections")

MAX_HEADER_BYTES = 64 * 1024
DEFAULT_MAX_CONNECTIONS = 10_000
WARN_EVERY_SECONDS = 10.0
SWEEP_SECONDS = 0.5
_431_BODY = (
    b'{"error":{"code":"headers_too_large","message":"The request headers are larger than %d bytes."}}'
    % MAX_HEADER_BYTES
)
_431 = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(_431_BODY), _431_BODY)
)


@dataclass(frozen=True)
class Limits:
    header_timeout: float
    max_connections: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        cap = settings.max_connections or default_max_connections()
        return cls(header_timeout=settings.header_timeout_seconds, max_connections=cap)


def default_max_connections() -> int:
    """Half the descriptor limit (the rest is Redis, ClickHouse, chDB's files, the spool), at most 10,000."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return DEFAULT_MAX_CONNECTIONS
    return max(16, min(DEFAULT_MAX_CONNECTIONS, soft // 2))


def raise_descriptor_limit() -> tuple[int, int]:
    """Raise the soft descriptor limit to the hard one (at most 65,536), as servers do; the limits after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 65_536 if hard == resource.RLIM_INFINITY else min(hard, 65_536)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft, hard
        return target, hard
    return soft, hard


class _Waiting:
    """A loop's connections with no request in progress (just opened, or idle after a
    response), with the loop time they started waiting, oldest first (a dict keeps
    insertion order), and whether a sweep is scheduled."""

    __slots__ = ("conns", "sweeping")

    def __init__(self) -> None:
        self.conns: dict[GuardedHttpToolsProtocol, float] = {}
        self.sweeping = False


_waiting_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Waiting] = weakref.WeakKeyDictionary()


class GuardedHttpToolsProtocol(EarlyAnswering):
    limits: ClassVar[Limits | None] = None
    _warned_at: ClassVar[float] = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_bytes = 0
        self._in_headers = False  # the same as ``self in _waiting``, cheaper to ask per read
        state = _waiting_by_loop.get(self.loop)
        if state is None:
            state = _waiting_by_loop[self.loop] = _Waiting()
        self._state = state
        self._waiting = state.conns

    @classmethod
    def configure(cls, settings: Settings) -> None:
        cls.limits = Limits.from_settings(settings)

    @classmethod
    def _limits(cls) -> Limits:
        if cls.limits is None:  # a worker process started by uvicorn: the environment has it all
            cls.limits = Limits.from_settings(Settings.from_env())
        return cls.limits

    # --- connection lifecycle ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        HTTP_CONNECTIONS.set(len(self.connections))
        limits = self._limits()
        if len(self.connections) > limits.max_connections:
            self._make_room(limits.max_connections)
            if self.transport.is_closing():
                return
        self._wait()

    def connection_lost(self, exc: Exception | None) -> None:
        self._in_headers = False
        self._waiting.pop(self, None)
        super().connection_lost(exc)
        HTTP_CONNECTIONS.set(len(self.connections))

    def data_received(self, data: bytes) -> None:
        if self._in_headers:  # still reading a request's headers
            self._header_bytes += len(data)
            if self._header_bytes > MAX_HEADER_BYTES:
                HTTP_CONNECTIONS_CLOSED.labels("headers_too_large").inc()
                self._in_headers = False
                self._waiting.pop(self, None)
                self.transport.write(_431)
                self.transport.close()
                return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._waiting.pop(self, None)  # a request is in progress: no deadline, never closed to make room
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._header_bytes = 0
            self._wait()

    def _wait(self) -> None:
        """Waiting for a request's headers from now on (at the end of the dict: the newest)."""
        self._in_headers = True
        self._waiting[self] = self.loop.time()
        if not self._state.sweeping:
            self._state.sweeping = True
            self.loop.call_later(min(SWEEP_SECONDS, self._limits().header_timeout), _sweep, self.loop, self._state)

    # --- bounds ----------------------------------------------------------------------------------

    def _make_room(self, cap: int) -> None:
        # Connections closed a moment ago stay in the set until their connection_lost runs.
        excess = sum(1 for c in self.connections if not c.transport.is_closing()) - cap
        if excess <= 0:
            return
        closed = 0
        while closed < excess and self._waiting:
            victim = next(iter(self._waiting))
            del self._waiting[victim]
            victim._in_headers = False
            victim.transport.abort()
            closed += 1
        if closed:
            HTTP_CONNECTIONS_CLOSED.labels("limit_waiting").inc(closed)
        if closed < excess:  # every other connection has a request in progress
            HTTP_CONNECTIONS_CLOSED.labels("limit_new").inc()
            self.transport.abort()
        now = time.monotonic()
        if now - GuardedHttpToolsProtocol._warned_at >= WARN_EVERY_SECONDS:
            GuardedHttpToolsProtocol._warned_at = now
            log.warning(
                "connection limit reached: %d open, TRACKER_MAX_CONNECTIONS=%d; closing the connections that have "
                "waited longest without a request (slow or idle clients), or new ones when none is idle",
                len(self.connections), cap,
            )


def _sweep(loop: asyncio.AbstractEventLoop, state: _Waiting) -> None:
    """Close the connections whose headers are overdue; runs every ``SWEEP_SECONDS`` while any is open."""
    limits = GuardedHttpToolsProtocol._limits()
    deadline = loop.time() - limits.header_timeout
    waiting = state.conns
    overdue = []
    for conn, since in waiting.items():
        if since > deadline:
            break  # the rest came later
        overdue.append(conn)
    for conn in overdue:
        del waiting[conn]
        conn._in_headers = False
        if not conn.transport.is_closing():
            HTTP_CONNECTIONS_CLOSED.labels("header_timeout").inc()
            conn.transport.close()
    if waiting:
        loop.call_later(min(SWEEP_SECONDS, limits.header_timeout), _sweep, loop, state)
    else:
        state.sweeping = False  # the next connection to wait starts it again
