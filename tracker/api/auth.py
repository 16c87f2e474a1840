"""Bearer credentials: the admin token, scoped API keys and the influencer portal session.

API keys are ``trk_<random>`` (256 random bits), shown once at creation and stored
only as their sha256 hex (``tracker.registry.apikeys``). Each has a scope:

- ``write``: every brand route (``brand_of``);
- ``read``: the brand routes that only read (GET, HEAD); anything else answers 403;
- ``influencer``: only ``/api/v1/me/*`` (``viewer_of``), for one influencer; brand routes 403.

The ``/api/v1/me`` routes also take the portal's session cookie (``tracker.api.sessions``);
brand routes take the brand app's session cookie (``tracker.api.brandsessions``) when no
``Authorization`` header is sent, with the CSRF header on every change.
The acting key's id is left on ``conn.state.key_id`` for the audit log (``actor``).
The admin token is compared in constant time.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

from starlette.requests import HTTPConnection

from tracker.api.brandsessions import COOKIE as APP_COOKIE
from tracker.api.brandsessions import CSRF_HEADER, SAFE_METHODS, csrf_ok
from tracker.api.sessions import COOKIE
from tracker.core.credentials import looks_like_api_key, token_hash
from tracker.core.errors import Forbidden, NotFound, Unauthorized
from tracker.registry.apikeys import Grant
from tracker.services import services

# The actor of changes made with the admin token (the audit log shows it).
ADMIN = "admin"

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="tracker"'}


class BearerRequired(Unauthorized):
    """401 with the Bearer challenge the HTTP spec asks for."""

    headers = _CHALLENGE


def bearer(conn: HTTPConnection) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    header = conn.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


def is_admin(conn: HTTPConnection, token: str | None = None) -> bool:
    expected = services(conn).settings.admin_token
    token = bearer(conn) if token is None else token
    if not expected or not token:
        return False
    return hmac.compare_digest(token.encode("utf-8"), expected.encode("utf-8"))


async def require_admin(conn: HTTPConnection) -> None:
    token = bearer(conn)
    if token is None:
        raise BearerRequired("This route needs the admin token: send Authorization: Bearer <token>.")
    if not is_admin(conn, token):
        # A valid brand key is authenticated but not allowed (403); anything else is unknown (401).
        if looks_like_api_key(token) and await services(conn).registry.brand_for_key(token) is not None:
            raise Forbidden("This route needs the admin token; a brand API key cannot use it.")
        raise BearerRequired("The bearer token is not the admin token.", code="invalid_token")


_BRAND = "a brand API key"
# Methods a read key may use.
_READING = frozenset({"GET", "HEAD"})


async def _session_grant(conn: HTTPConnection, cookie: str) -> Grant:
    """The grant of the key behind a brand app session (``tracker.api.brandsessions``), CSRF checked."""
    svc = services(conn)
    seat = await svc.app_sessions.read(cookie)
    grant = await svc.registry.apikeys.grant_for_digest(seat.key_hash) if seat is not None else None
    if seat is None or grant is None:
        raise BearerRequired("The app session is missing, expired or signed out (or its key was revoked); "
                             "sign in again at /app.", code="invalid_session")
    if conn.scope.get("method", "GET") not in SAFE_METHODS and not csrf_ok(seat, conn.headers.get(CSRF_HEADER)):
        raise Forbidden("This change needs the X-CSRF-Token header of the app session; reload /app.",
                        code="csrf_failed")
    return grant


async def _grant(conn: HTTPConnection, needs: str) -> Grant:
    token = bearer(conn)
    cookie = conn.cookies.get(APP_COOKIE) if token is None and needs == _BRAND else None
    if cookie:
        seated = await _session_grant(conn, cookie)
        conn.state.key_id = seated.key_id
        await services(conn).registry.apikeys.touch(seated.key_id)
        return seated
    if token is None:
        raise BearerRequired(f"This route needs {needs}: send Authorization: Bearer trk_....")
    grant = await services(conn).registry.apikeys.grant(token)
    if grant is None:
        if is_admin(conn, token):
            raise Forbidden("The admin token only creates and lists brands; use the brand's API key here.")
        raise BearerRequired("The API key is unknown or revoked.", code="invalid_token")
    conn.state.key_id = grant.key_id
    await services(conn).registry.apikeys.touch(grant.key_id)
    return grant


async def brand_of(conn: HTTPConnection) -> dict[str, Any]:
    """The brand whose API key authenticates this request, if its scope allows this route.

    401 when the key is missing or unknown; 403 for an influencer key (brand routes are not
    theirs) and for a read key on a route that changes something.
    """
    grant = await _grant(conn, _BRAND)
    if grant.scope == "influencer":
        raise Forbidden(
            "An influencer key reads only /api/v1/me and its sub-routes; brand routes need a read or write key.",
            code="insufficient_scope",
        )
    if grant.scope == "read" and conn.scope.get("method", "GET") not in _READING:
        raise Forbidden("This API key is read-only; changes need a write key.", code="insufficient_scope")
    brand: dict[str, Any] | None = await services(conn).registry.get_brand(grant.brand_id)
    if brand is None:
        raise BearerRequired("The API key is unknown or revoked.", code="invalid_token")
    return brand


@dataclass(frozen=True, slots=True)
class Viewer:
    """An influencer looking at their own data: through an influencer key or the portal session."""

    brand: dict[str, Any]
    influencer: dict[str, Any]
    via: str  # "key" or "session"

    @property
    def brand_id(self) -> str:
        return str(self.brand["id"])

    @property
    def influencer_id(self) -> str:
        return str(self.influencer["id"])


async def viewer_of(conn: HTTPConnection) -> Viewer:
    """The influencer of an ``influencer`` key, or of the portal session cookie; 401/403 otherwise."""
    svc = services(conn)
    if bearer(conn) is not None:
        grant = await _grant(conn, "an influencer key or the portal session")
        if grant.scope != "influencer":
            raise Forbidden(
                "The /api/v1/me routes are an influencer's view: use an influencer key or the portal session.",
                code="insufficient_scope",
            )
        brand_id, influencer_id, via = grant.brand_id, grant.influencer_id, "key"
    else:
        cookie = conn.cookies.get(COOKIE)
        seat = await svc.sessions.read(cookie) if cookie else None
        if seat is None:
            raise BearerRequired(
                "This route needs an influencer key (Authorization: Bearer trk_...) or a portal session; "
                "the session is missing, expired or signed out.",
                code="invalid_session" if cookie else "unauthorized",
            )
        brand_id, influencer_id, via = seat.brand_id, seat.influencer_id, "session"
    brand = await svc.registry.get_brand(brand_id)
    influencer = await svc.registry.get_influencer(brand_id, influencer_id) if brand else None
    if brand is None or influencer is None:
        raise NotFound("The influencer of this key or session no longer exists.")
    return Viewer(brand, {**influencer, "id": influencer_id}, via)


def key_id(token: str) -> str:
    """The public id of an API key: stable, derived from its hash, safe to show and log."""
    return "key_" + token_hash(token)[:16]


def actor(conn: HTTPConnection) -> str:
    """Who acts in this request, for the audit log: the key's id, or ``admin``."""
    acting: str | None = getattr(conn.state, "key_id", None)
    return acting if acting is not None else ADMIN
