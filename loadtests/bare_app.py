"""The baseline of the redirect benchmark: a bare Starlette app answering 302 from memory.

No storage, no click logging: what Starlette on uvicorn (uvloop + httptools) costs
per redirect on this machine, measured in the same run as tracker.

    uvicorn loadtests.bare_app:app --loop uvloop --http httptools --no-access-log
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

DESTINATIONS = {f"bench{i:02d}": f"https://shop.example/product/{i}?ref=bench" for i in range(16)}


async def redirect(request: Request) -> Response:
    url = DESTINATIONS.get(request.path_params["code"])
    if url is None:
        return JSONResponse({"error": {"code": "not_found", "message": "No such link."}}, status_code=404)
    return Response(status_code=302, headers={"location": url + "&click_id=x", "cache-control": "no-store"})


app = Starlette(routes=[Route("/{code}", redirect, methods=["GET", "HEAD"])])
