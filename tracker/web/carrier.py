"""``GET /t.js``: the click-id carrier a store adds to its pages (``static/t.js``).

Served with a strong ETag (a digest of the file) and ``Cache-Control: public,
max-age=3600``: browsers and CDNs keep it an hour, then revalidate (304 when
unchanged), so an update reaches stores within the hour. A script tag needs no CORS.
"""

from __future__ import annotations

import hashlib
from functools import cache

from starlette.requests import Request
from starlette.responses import Response

from tracker.api.endpoints import Operation, api
from tracker.web.pages import STATIC

MAX_AGE_SECONDS = 3600


@cache
def script() -> tuple[bytes, str]:
    body = (STATIC / "t.js").read_bytes()
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    tags = {t.strip().removeprefix("W/") for t in header.split(",")}
    return "*" in tags or etag in tags


async def carrier(request: Request) -> Response:
    body, etag = script()
    headers = {
        "ETag": etag,
        "Cache-Control": f"public, max-age={MAX_AGE_SECONDS}",
        "X-Content-Type-Options": "nosniff",
    }
    if _matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="text/javascript; charset=utf-8", headers=headers)


ROUTE = api(
    "GET",
    "/t.js",
    Operation(
        "The click-id carrier script for store pages (cookie trk_click_id, window.trk.clickId(), Shopify cart).",
        "integrations",
        answers={200: None, 304: None},
        also={200: "text/javascript"},
        description='Add `<script src="<public-url>/t.js" data-param="click_id" async></script>` to every page '
        "of the store. Cacheable (ETag, max-age 3600).",
    ),
)(carrier)
