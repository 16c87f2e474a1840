"""The redirect's answers that log no click, each built once as ``(status, headers, body)``.

Two roads take them out, with the same bytes: the ASGI ``send`` of ``handler.Redirector``,
and the HTTP protocol's early write (``tracker.api.connections``), which answers an
unknown code before uvicorn starts an ASGI task for it, the cheap road a flood of unknown
codes takes (``handler.Redirector.answer_early``).

404s are rate-limited per client IP in process memory rather than in Redis, so the
limiter costs no storage access itself and keeps working while Redis is down; with N
workers the effective limit is N times the per-process one, still a hard bound. Only
unknown codes count and only they are refused (a link always redirects).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from json.encoder import encode_basestring as _json_string  # C-accelerated, ensure_ascii=False

from starlette.types import Send

from tracker.api.early import EarlyAnswer
from tracker.ops.metrics import REDIRECTS
from tracker.web import follower

Headers = Sequence[tuple[bytes, bytes]]
# status, headers (content-length included), body (sent for GET, dropped for HEAD)
Answer = EarlyAnswer

NOT_FOUND_LIMIT = 30
NOT_FOUND_WINDOW_SECONDS = 60.0

_JSON = (b"content-type", b"application/json")
_NO_STORE = (b"cache-control", b"no-store")
_R404 = REDIRECTS.labels("404")
_R429 = REDIRECTS.labels("429")


def error(status: int, code: str, message: str, extra: Headers = ()) -> Answer:
    """A JSON error, ``{"error": {"code", "message"}}`` byte for byte as ``api.http.dumps`` writes it."""
    body = f'{{"error":{{"code":{_json_string(code)},"message":{_json_string(message)}}}}}'.encode()
    return status, (_JSON, (b"content-length", str(len(body)).encode()), _NO_STORE, *extra), body


def page(status: int) -> Answer:
    """The follower's HTML page for 404 or 410 (``web.follower``)."""
    body, headers = follower.page(status)
    return status, headers, body


TOO_MANY = error(
    429, "rate_limited", f"Too many unknown links from this address: at most {NOT_FOUND_LIMIT} a minute.",
    ((b"retry-after", b"60"),),
)


async def send_answer(send: Send, answer: Answer) -> None:
    status, headers, body = answer
    await send({"type": "http.response.start", "status": status, "headers": list(headers)})
    await send({"type": "http.response.body", "body": body})


class NotFoundLimiter:
    """Fixed one-minute windows of 404 counts per client IP (keyed by Python's per-process
    SipHash of the IP, so no raw IP is kept even in memory)."""

    def __init__(self, limit: int = NOT_FOUND_LIMIT, window: float = NOT_FOUND_WINDOW_SECONDS) -> None:
        self.limit = limit
        self.window = window
        self._counts: dict[int, int] = {}
        self._window_no = 0

    def _roll(self) -> None:
        current = int(time.monotonic() // self.window)
        if current != self._window_no:
            self._window_no = current
            self._counts.clear()

    def hit(self, ip: str) -> bool:
        """Count a 404; True when the IP is now over the limit."""
        self._roll()
        key = hash(ip)
        count = self._counts.get(key, 0) + 1
        if len(self._counts) > 200_000:  # bounded memory under a distributed scan
            self._counts.clear()
        self._counts[key] = count
        return count > self.limit


def not_found(limiter: NotFoundLimiter, headers: Headers, ip: str, message: str) -> Answer:
    """The answer to an unknown code: 404 (a page for a browser, else JSON), or 429 once the
    address is over the limit; counted in ``tracker_redirects_total``."""
    if limiter.hit(ip):
        _R429.inc()
        return TOO_MANY
    _R404.inc()
    return for_follower(headers, 404, "not_found", message)


def for_follower(headers: Headers, status: int, code: str, message: str) -> Answer:
    """A short link that leads nowhere (404, 410): the follower's page for a browser, else the JSON error."""
    return page(status) if follower.wants_html(headers) else error(status, code, message)
