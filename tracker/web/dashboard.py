"""``/dashboard``: one static page a brand opens with its API key; it reads ``/api/v1/reports``.

The page, its script and its style ship in ``tracker/static`` (package data) and are served
from this origin only: no CDN, no outside fonts, and a Content-Security-Policy that lets the
page talk to nothing but its own server. The key stays in the browser (localStorage) and
travels only as the ``Authorization`` header of the report requests.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from tracker.api.endpoints import Operation, api

STATIC = Path(__file__).resolve().parent / "static"

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@cache
def _page() -> bytes:
    return (STATIC / "dashboard.html").read_bytes()


async def dashboard(request: Request) -> Response:
    return HTMLResponse(_page(), headers=HEADERS)


PAGE = api(
    "GET",
    "/dashboard",
    Operation(
        "The brand dashboard (a page that reads the reports API with a brand key).",
        "reports",
        answers={200: None},
        also={200: "text/html"},
    ),
)(dashboard)


def routes() -> list[BaseRoute]:
    # The page at /dashboard, its assets under /dashboard/ (same origin, same prefix).
    return [
        PAGE,
        Mount("/dashboard", app=StaticFiles(directory=STATIC), name="dashboard_static"),
    ]
