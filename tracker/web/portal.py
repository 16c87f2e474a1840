"""``/portal``: the influencer's page, its sign-in link and sign-out.

- ``GET /portal/signin?token=...`` redeems a one-time sign-in link (``tracker.api.sessions``):
  it opens a session, sets the cookie (HttpOnly, SameSite=Lax, Secure on https, expiring)
  and redirects to ``/portal`` (303). Link-preview fetchers (chat apps, mail scanners), HEAD
  requests and prefetches (and anything crawlerdetect takes for a robot) get a page that does
  not use the link up, so a preview cannot burn an influencer's one-time link; its form,
  submitted at once by a script (previewers run none), signs a person in
  (``POST /portal/signin``). A used, expired or unknown link gets a 410 page.
- ``GET /portal``: the page (``static/portal.*``: HTML, one script, one stylesheet, from this
  origin only) when signed in; a page saying how to sign in otherwise (401).
- ``POST /portal/signout``: the session record is deleted (the cookie is refused from then
  on, wherever it is replayed) and the cookie cleared. SameSite=Lax keeps other sites from
  signing an influencer out; a foreign ``Origin`` is refused too.

The page reads ``/api/v1/me/*`` with the session cookie and draws everything itself
(figures, an inline SVG chart, QR codes as images of ``/api/v1/me/links/{code}/qr``).
"""

from __future__ import annotations

import html
from functools import cache
from typing import Any
from urllib.parse import parse_qs, urlsplit

from crawlerdetect import CrawlerDetect
from pydantic import Field
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from tracker.api import http
from tracker.api.endpoints import Operation, api
from tracker.api.schema import Query
from tracker.api.sessions import COOKIE
from tracker.services import services
from tracker.web.pages import HEADERS, STATIC

TAG = "portal"
_PREVIEW_WORDS = ("preview", "slackbot", "discordbot", "whatsapp", "telegrambot", "skypeuripreview", "bingpreview")


@cache
def _crawlers() -> CrawlerDetect:
    return CrawlerDetect()


@cache
def _page(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")


def _message_page(title: str, text: str, status: int) -> HTMLResponse:
    body = _page("portal_message.html").replace("{title}", html.escape(title)).replace("{text}", html.escape(text))
    return HTMLResponse(body, status_code=status, headers=HEADERS)


def _secure(request: Request) -> bool:
    public = services(request).settings.public_url or ""
    return request.url.scheme == "https" or public.startswith("https://")


def _is_preview(request: Request) -> bool:
    """A fetch that is not a person opening the link: HEAD, a prefetch, a crawler or link previewer."""
    if request.method == "HEAD":
        return True
    if "prefetch" in (request.headers.get("sec-purpose", "") + request.headers.get("purpose", "")).lower():
        return True
    agent = request.headers.get("user-agent", "")
    if not agent or any(w in agent.lower() for w in _PREVIEW_WORDS):
        return True
    return bool(_crawlers().isCrawler(agent))


async def signin(request: Request) -> Response:
    token = request.query_params.get("token", "")
    if _is_preview(request):
        # A page that does not use the link up: its form (sent at once by a script, which link
        # previewers do not run) signs a person in.
        page = _page("portal_signin.html").replace("{token}", html.escape(token[:100], quote=True))
        return HTMLResponse(page, headers=HEADERS)
    return await _redeem(request, token)


async def signin_form(request: Request) -> Response:
    if not _same_origin(request):
        return _message_page("Not signed in", "Open the sign-in link itself.", 403)
    # A urlencoded form of one field, read without a multipart parser (bounded like any body).
    raw = (await http.read_body(request, 4096)).decode("utf-8", "replace")
    token = parse_qs(raw).get("token", [""])[0]
    return await _redeem(request, token)


async def _redeem(request: Request, token: str) -> Response:
    svc = services(request)
    seat = await svc.sessions.redeem(token) if token else None
    if seat is None:
        return _message_page(
            "This sign-in link no longer works",
            "Sign-in links work once and for 7 days. Ask the brand for a new one.",
            410,
        )
    session = await svc.sessions.open(seat)
    response = RedirectResponse("/portal", status_code=303, headers=HEADERS)
    response.set_cookie(
        COOKIE, session.cookie, max_age=session.max_age, expires=session.max_age, path="/",
        secure=_secure(request), httponly=True, samesite="lax",
    )
    return response


async def portal(request: Request) -> Response:
    cookie = request.cookies.get(COOKIE)
    seat = await services(request).sessions.read(cookie) if cookie else None
    if seat is None:
        return _message_page(
            "Your influencer portal",
            "You are signed out. Open the sign-in link the brand sent you to see your links, clicks and earnings.",
            401,
        )
    return HTMLResponse(_page("portal.html"), headers=HEADERS)


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    host = request.headers.get("host", "")
    return urlsplit(origin).netloc == host


async def signout(request: Request) -> Response:
    if not _same_origin(request):
        return _message_page("Not signed out", "Sign out from the portal page itself.", 403)
    cookie = request.cookies.get(COOKIE)
    if cookie:
        await services(request).sessions.close(cookie)
    response = RedirectResponse("/portal", status_code=303, headers=HEADERS)
    response.delete_cookie(COOKIE, path="/", secure=_secure(request), httponly=True, samesite="lax")
    return response


class SigninQuery(Query):
    token: str = Field(description="The one-time token of the link (pst_...).", max_length=200)


def _html(summary: str, *statuses: int, **more: Any) -> Operation:
    """An operation whose answers are pages (303s carry none)."""
    return Operation(summary, TAG, answers={s: None for s in statuses},
                     also={s: "text/html" for s in statuses if s != 303}, **more)


SIGNIN = api("GET", "/portal/signin", _html(
    "Redeem a one-time portal sign-in link: sets the session cookie and redirects to /portal.", 303, 200, 410,
    query=SigninQuery, headers={303: {"Set-Cookie": {"type": "string"}, "Location": {"type": "string"}}},
    description="A link preview (HEAD, prefetch, a crawler) gets a 200 page that does not use the link up.",
))(signin)
SIGNIN_FORM = api("POST", "/portal/signin", _html(
    "Redeem a sign-in link from its confirmation page (the form a link preview shows).", 303, 403, 410,
))(signin_form)
PAGE = api("GET", "/portal", _html("The influencer portal (a page; 401 with a sign-in hint when signed out).",
                                   200, 401))(portal)
SIGNOUT = api("POST", "/portal/signout", _html(
    "Sign out of the portal: the session ends everywhere it was copied.", 303, 403, security=("session",),
))(signout)


def routes() -> list[BaseRoute]:
    # The page's routes first; its script and style under the same prefix (/portal/portal.js).
    static = Mount("/portal", app=StaticFiles(directory=STATIC), name="portal_static")
    return [SIGNIN, SIGNIN_FORM, PAGE, SIGNOUT, static]
