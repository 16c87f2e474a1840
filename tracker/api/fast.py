"""Raw ASGI answers for the busiest API routes, taken before Starlette's middleware and router.

The postback and platform-webhook routes (``tracker.conversions.fastpath``) answer thousands of
requests a second, and Starlette's middleware stack (server-error, request-id and exception
middlewares, each with its own coroutine frame and wrapped ``send``), its router (a regex per
route) and ``request_response`` cost about a quarter of each. ``serve`` runs the route's own
endpoint and does, in one frame, what that stack does around it, so the answers are the same:

- the request id (a proxy's plain ``X-Request-Id`` or a new one) is on every log line of the
  request and echoed in the answer's ``x-request-id`` header;
- one access-log line (``tracker.ops.logs.log_request``);
- a ``TrackerError`` is answered as ``tracker.api.http.tracker_error_handler`` answers it (JSON
  body, ``Retry-After`` on 429 and 503), an ``HTTPException`` as ``http_exception_handler`` does;
- an unexpected error is logged with its traceback and answered with the JSON 500, without a
  request id header (the server-error middleware, outside the request-id one, sends it so).

``TrackerStarlette`` (``tracker.redirect.handler``) asks the app's ``FastRoutes`` for each
request and hands the ones it names here; the rest, and everything before the lifespan has
started, take the normal stack.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from tracker.api import http
from tracker.core import ids
from tracker.core.errors import TrackerError
from tracker.ops.logs import REQUEST_ID, incoming_id, log_request

log = logging.getLogger("tracker.api.fast")

Endpoint = Callable[[Request], Awaitable[Response]]
# (method, path) -> the route's endpoint and its path parameters; None: the normal stack answers.
FastRoutes = Callable[[str, str], "tuple[Endpoint, dict[str, str]] | None"]

_REQUEST_ID = b"x-request-id"


async def serve(endpoint: Endpoint, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer one request with ``endpoint`` as the middleware stack would (see the module's doc)."""
    started = time.perf_counter()
    request_id = incoming_id(scope) or ids.request_id()
    token = REQUEST_ID.set(request_id)
    status = 500  # what the access log says when the endpoint raises something unexpected
    request = Request(scope, receive)
    try:
        try:
            response = await endpoint(request)
        except TrackerError as exc:
            response = await http.tracker_error_handler(request, exc)
        except HTTPException as exc:
            response = await http.http_exception_handler(request, exc)
        except Exception:
            log.exception("%s %s failed", scope["method"], scope["path"][:100])
            failed = await http.server_error_handler(request, Exception())
            await send({"type": "http.response.start", "status": 500, "headers": failed.raw_headers})
            await send({"type": "http.response.body", "body": failed.body})
            return
        status = response.status_code
        headers = [*response.raw_headers, (_REQUEST_ID, request_id.encode("latin-1"))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})
    finally:
        log_request(scope["method"], scope["path"], status, started)
        REQUEST_ID.reset(token)
