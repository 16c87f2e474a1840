"""QR codes of short links (``segno``): SVG or PNG, cacheable.

``GET /api/v1/links/{code}/qr`` (a brand's read or write key) and
``GET /api/v1/me/links/{code}/qr`` (the influencer's own links, ``tracker.portal.routes``)
answer the link's short URL as a QR code. The image depends only on the short URL, the
format and the size, so it carries a strong ETag and ``Cache-Control: private,
max-age=86400`` (private: the route needs credentials). Error correction level M (15 %)
survives a scuffed print or a logo sticker; the quiet zone is the standard 4 modules.
"""

from __future__ import annotations

import hashlib
import io
from typing import Annotated, Literal

import segno
from pydantic import BeforeValidator, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from tracker.api import auth
from tracker.api.endpoints import Operation, Security, api
from tracker.api.schema import Query, parse_query
from tracker.core.errors import NotFound
from tracker.registry.fields import digits
from tracker.services import services

BORDER = 4
MIN_SIZE, MAX_SIZE, DEFAULT_SIZE = 64, 2048, 512
MEDIA = {"svg": "image/svg+xml", "png": "image/png"}
CACHE = "private, max-age=86400"


class QrQuery(Query):
    format: Literal["svg", "png"] = "svg"
    size: Annotated[int, Field(ge=MIN_SIZE, le=MAX_SIZE, description="Width in pixels (approximate: a whole "
                                                                        "number of pixels per module)."),
                    BeforeValidator(digits)] = DEFAULT_SIZE


def render(url: str, fmt: str, size: int) -> bytes:
    """The QR code of ``url`` about ``size`` pixels wide (at least one pixel per module)."""
    code = segno.make(url, error="m", micro=False)
    width, _ = code.symbol_size(scale=1, border=BORDER)
    scale = max(1, size // width)
    out = io.BytesIO()
    if fmt == "svg":
        code.save(out, kind="svg", scale=scale, border=BORDER, xmldecl=False, title=url, dark="#111")
    else:
        code.save(out, kind="png", scale=scale, border=BORDER)
    return out.getvalue()


def answer(request: Request, url: str) -> Response:
    """The QR image of ``url`` per the query (``format``, ``size``), or 304 when the client has it."""
    q = parse_query(QrQuery, request.query_params)
    etag = '"' + hashlib.sha256(f"{url}\n{q.format}\n{q.size}".encode()).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "Cache-Control": CACHE, "X-Content-Type-Options": "nosniff"}
    if etag in (t.strip() for t in request.headers.get("if-none-match", "").split(",")):
        return Response(status_code=304, headers=headers)
    return Response(render(url, q.format, q.size), media_type=MEDIA[q.format], headers=headers)


def short_url(request: Request, code: str) -> str:
    base = services(request).settings.public_url or str(request.base_url)
    return f"{base.rstrip('/')}/{code}"


def operation(summary: str, tag: str, security: tuple[Security, ...]) -> Operation:
    return Operation(
        summary, tag, security, query=QrQuery, answers={200: None, 304: None}, also={200: "image/*"},
        errors=(401, 403, 404, 422, 503),
        path_params={"code": {"type": "string", "description": "The link's short code."}},
        description="image/svg+xml, or image/png with `format=png`. A strong ETag: send If-None-Match to get 304.",
    )


@api("GET", "/api/v1/links/{code}/qr", operation(
    "The link's short URL as a QR code (SVG or PNG).", "registry", ("brand",)
))
async def link_qr(request: Request) -> Response:
    brand = await auth.brand_of(request)
    code = request.path_params["code"]
    if await services(request).registry.get_link(brand["id"], code) is None:
        raise NotFound(f"Link {code!r} does not exist.")
    return answer(request, short_url(request, code))


def routes() -> list[BaseRoute]:
    return [link_qr]
