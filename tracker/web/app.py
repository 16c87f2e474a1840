"""``/app``: the brand's web app, its session sign-in and sign-out; ``GET /`` leads to it.

- ``GET /app``: the page (``static/app.html``, ES modules ``static/app*.js``, ``app.css``:
  this origin only, no inline script). It asks ``GET /app/session`` who is signed in and
  shows the sign-in form or the app; everything else goes through ``/api/v1`` with the
  session cookie (and ``X-CSRF-Token`` on changes). No key is kept in the browser.
- ``POST /app/signin`` (JSON ``{key}`` or a form field ``key``): a read or write key of a
  brand is exchanged for the session cookie (``tracker.api.brandsessions``); the answer
  carries the CSRF token. A form post is answered 303 to ``/app``.
- ``POST /app/signout``: the session record is deleted and the cookie cleared.
- ``GET /`` → 302 ``/app``; ``GET /dashboard`` → 302 ``/app#reports``, ``/dashboard/payouts`` →
  ``/app#payouts``, ``/dashboard/quality`` → ``/app#review`` (those views are part of the app; the old
  pages kept their key in localStorage).
"""

from __future__ import annotations

from functools import cache
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pydantic import Field
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from tracker.api import http
from tracker.api.brandsessions import COOKIE, CSRF_HEADER, AppSeat, csrf_ok
from tracker.api.endpoints import Operation, api
from tracker.api.schema import Answer, Model, Timestamp, parse_body
from tracker.core.credentials import looks_like_api_key, token_hash
from tracker.core.errors import Forbidden, Unauthorized
from tracker.core.timeutil import from_ms
from tracker.services import services
from tracker.web.pages import HEADERS, STATIC

TAG = "app"


class SigninIn(Model):
    key: str = Field(min_length=1, max_length=200, description="A read or write API key of the brand (trk_...).")


class SessionBrand(Answer):
    id: str
    name: str
    currency: str


class AppSession(Answer):
    brand: SessionBrand
    key_id: str = Field(description="The id of the key the session acts with (the audit log's key_id).")
    scope: str = Field(description="read or write: what the session may do.")
    csrf_token: str = Field(description="Send as X-CSRF-Token on every change made with the session.")
    expires_at: Timestamp


@cache
def _page() -> bytes:
    return (STATIC / "app.html").read_bytes()


def _secure(request: Request) -> bool:
    public = services(request).settings.public_url or ""
    return request.url.scheme == "https" or public.startswith("https://")


def _same_origin(request: Request) -> bool:
    """No Origin (a same-origin GET, curl) or this server's own; "null" and other sites are refused."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return origin != "null" and urlsplit(origin).netloc == request.headers.get("host", "")


async def _answer(request: Request, seat: AppSeat) -> AppSession:
    svc = services(request)
    grant = await svc.registry.apikeys.grant_for_digest(seat.key_hash)
    brand = await svc.registry.get_brand(grant.brand_id) if grant is not None else None
    if grant is None or brand is None:
        raise Unauthorized("The key of this session was revoked; sign in again.", code="invalid_session")
    return AppSession(
        brand=SessionBrand(id=brand["id"], name=brand["name"], currency=brand["currency"]),
        key_id=grant.key_id, scope=grant.scope, csrf_token=seat.csrf, expires_at=from_ms(seat.expires_ms),
    )


async def app_page(request: Request) -> Response:
    return HTMLResponse(_page(), headers=HEADERS)


async def app_signin(request: Request) -> Response:
    if not _same_origin(request):
        raise Forbidden("Sign in from this server's own /app page.", code="csrf_failed")
    raw = await http.read_body(request, 4096)
    is_form = request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded")
    if is_form:
        key = parse_qs(raw.decode("utf-8", "replace")).get("key", [""])[0].strip()
    else:
        key = parse_body(SigninIn, raw).key.strip()
    svc = services(request)
    grant = await svc.registry.apikeys.grant(key) if looks_like_api_key(key) else None
    if grant is None:
        raise Unauthorized("This API key is unknown or revoked. Paste a brand key (trk_...).", code="invalid_key")
    if grant.scope == "influencer":
        raise Forbidden("An influencer key opens the influencer portal, not the brand app.",
                        code="insufficient_scope")
    cookie, seat = await svc.app_sessions.open(token_hash(key))
    body = await _answer(request, seat)
    response: Response = (
        RedirectResponse("/app", status_code=303, headers=HEADERS) if is_form
        else http.JSONResponse(body.dump(), headers=HEADERS)
    )
    max_age = svc.app_sessions.session_seconds
    response.set_cookie(COOKIE, cookie, max_age=max_age, expires=max_age, path="/", secure=_secure(request),
                        httponly=True, samesite="strict")
    return response


async def _seat(request: Request) -> AppSeat:
    cookie = request.cookies.get(COOKIE)
    seat = await services(request).app_sessions.read(cookie) if cookie else None
    if seat is None:
        raise Unauthorized("Not signed in (or the session expired): sign in with a brand key.",
                           code="invalid_session" if cookie else "unauthorized")
    return seat


async def app_session(request: Request) -> Response:
    seat = await _seat(request)
    return http.JSONResponse((await _answer(request, seat)).dump(), headers={"Cache-Control": "no-store"})


async def app_signout(request: Request) -> Response:
    seat = await _seat(request)
    if not csrf_ok(seat, request.headers.get(CSRF_HEADER)):
        raise Forbidden("Signing out needs the X-CSRF-Token header of the session.", code="csrf_failed")
    await services(request).app_sessions.close(request.cookies[COOKIE])
    response = Response(status_code=204, headers={"Cache-Control": "no-store"})
    response.delete_cookie(COOKIE, path="/", secure=_secure(request), httponly=True, samesite="strict")
    return response


async def root(request: Request) -> Response:
    return RedirectResponse("/app", status_code=302)


async def dashboard(request: Request) -> Response:
    return RedirectResponse("/app#reports", status_code=302)


async def dashboard_payouts(request: Request) -> Response:
    return RedirectResponse("/app#payouts", status_code=302)


async def dashboard_quality(request: Request) -> Response:
    return RedirectResponse("/app#review", status_code=302)


def _op(summary: str, answers: dict[int, Any], errors: tuple[int, ...] = (), **more: Any) -> Operation:
    return Operation(summary, TAG, answers=answers, errors=errors, **more)


_LOCATION = {"Location": {"type": "string"}}
PAGE = api("GET", "/app", _op("The brand app (a page).", {200: None}, also={200: "text/html"}))(app_page)
SIGNIN = api("POST", "/app/signin", _op(
    "Exchange a brand key (read or write) for an app session cookie; answers the session with its CSRF token.",
    {200: AppSession, 303: None}, (400, 401, 403, 413, 422, 503), body=SigninIn, form_too=True,
    headers={200: {"Set-Cookie": {"type": "string"}}, 303: {"Set-Cookie": {"type": "string"}, **_LOCATION}},
    description="JSON `{key}`, or a form field `key` (answered 303 to /app). The cookie is HttpOnly, "
    "SameSite=Strict; every change made with it needs the `X-CSRF-Token` header.",
))(app_signin)
SESSION = api("GET", "/app/session", _op(
    "The signed-in brand app session (brand, scope, CSRF token).", {200: AppSession}, (401, 503),
    security=("app_session",),
))(app_session)
SIGNOUT = api("POST", "/app/signout", _op(
    "Sign out of the brand app: the session ends everywhere it was copied.", {204: None}, (401, 403, 503),
    security=("app_session",),
))(app_signout)
ROOT = api("GET", "/", _op("Leads to the brand app.", {302: None}, headers={302: _LOCATION}))(root)
DASHBOARD = api("GET", "/dashboard", _op(
    "The old report page: now the Reports view of the brand app.", {302: None}, headers={302: _LOCATION},
))(dashboard)
DASHBOARD_PAYOUTS = api("GET", "/dashboard/payouts", _op(
    "The old payouts page: now the Payouts view of the brand app.", {302: None}, headers={302: _LOCATION},
))(dashboard_payouts)
DASHBOARD_QUALITY = api("GET", "/dashboard/quality", _op(
    "The old review and coupon-leak page: now the Review view of the brand app.", {302: None},
    headers={302: _LOCATION},
))(dashboard_quality)


def routes() -> list[BaseRoute]:
    # The page's routes first; its scripts and style under the same prefix (/app/app.js).
    static = Mount("/app", app=StaticFiles(directory=STATIC), name="app_static")
    return [ROOT, DASHBOARD, DASHBOARD_PAYOUTS, DASHBOARD_QUALITY, PAGE, SIGNIN, SESSION, SIGNOUT, static]
