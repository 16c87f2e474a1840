"""Which requests take the postback fast path (``tracker.api.fast``): the two hot POST routes.

``POST /api/v1/conversions`` and ``POST /api/v1/integrations/{platform}/{store_id}`` for the
three platforms are answered by their routes' own endpoints (the same functions, with the
415 check a JSON route has), without the middleware stack and the router. Any other method,
platform or path shape (a trailing slash, an empty store id) returns None, so the normal stack
answers it exactly as before (405, 404, the slash redirect).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from tracker.conversions import integrations
from tracker.conversions.routes import CONVERSIONS_PATH, POST_CONVERSION_ROUTE

Endpoint = Callable[[Request], Awaitable[Response]]

_INTEGRATIONS = "/api/v1/integrations/"
_PLATFORMS: dict[str, Endpoint] = {
    "shopify": integrations.SHOPIFY.endpoint,
    "woocommerce": integrations.WOOCOMMERCE.endpoint,
    "stripe": integrations.STRIPE.endpoint,
}
_NO_PARAMS: dict[str, str] = {}


def route(method: str, path: str) -> tuple[Endpoint, dict[str, str]] | None:
    """The endpoint and path parameters of a fast-path request; None for any other request."""
    if method != "POST":
        return None
    if path == CONVERSIONS_PATH:
        return POST_CONVERSION_ROUTE.endpoint, _NO_PARAMS
    if path.startswith(_INTEGRATIONS):
        platform, _, store_id = path[len(_INTEGRATIONS):].partition("/")
        endpoint = _PLATFORMS.get(platform)
        # Starlette's {store_id} is one non-empty segment.
        if endpoint is not None and store_id and "/" not in store_id:
            return endpoint, {"store_id": store_id}
    return None
