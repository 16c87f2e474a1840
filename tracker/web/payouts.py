"""``/dashboard/payouts``: the brand's payouts page (run payouts, see lines, download CSV, mark paid).

A self-contained page beside the dashboard (same key in the browser, same CSP, same
origin-only assets) that only calls ``/api/v1/payouts``: the brand app can link to it as is.
"""

from __future__ import annotations

from functools import cache

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute

from tracker.api.endpoints import Operation, api
from tracker.web.dashboard import HEADERS, STATIC


@cache
def _page() -> bytes:
    return (STATIC / "payouts.html").read_bytes()


async def payouts_page(request: Request) -> Response:
    return HTMLResponse(_page(), headers=HEADERS)


PAGE = api("GET", "/dashboard/payouts", Operation(
    "The brand's payouts page (run payouts, see lines, download CSV, mark paid) with a brand key.", "payouts",
    answers={200: None}, also={200: "text/html"},
))(payouts_page)


def routes() -> list[BaseRoute]:
    # Before the dashboard's static mount, which would otherwise answer /dashboard/payouts.
    return [PAGE]
