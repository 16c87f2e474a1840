"""``/dashboard/quality``: the review queue and the coupon-leak list, one static page a brand opens with its key.

Like ``/dashboard`` (same style sheet, same key in the browser's storage): served from this
origin only under a strict Content-Security-Policy; its script reads
``/api/v1/rules/review-queue`` and ``/api/v1/rules/coupon-leaks`` and posts review decisions.
"""

from __future__ import annotations

from functools import cache

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute

from tracker.api.endpoints import Operation, api
from tracker.web.app import HEADERS, STATIC


@cache
def _page() -> bytes:
    return (STATIC / "quality.html").read_bytes()


async def quality_page(request: Request) -> Response:
    return HTMLResponse(_page(), headers=HEADERS)


PAGE = api(
    "GET",
    "/dashboard/quality",
    Operation(
        "The review queue and the coupon-leak list (a page that reads the quality API with a brand key).",
        "quality",
        answers={200: None},
        also={200: "text/html"},
    ),
)(quality_page)


def routes() -> list[BaseRoute]:
    # Under /dashboard (a reserved first segment, never a short code); its script and style come
    # from /dashboard/ (the same static directory). Listed before the /dashboard mount.
    return [PAGE]
