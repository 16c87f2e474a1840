"""Bearer credentials: the admin token and brand API keys.

Brand API keys are ``trk_<random>`` (256 random bits), shown once at creation
and stored only as their sha256 hex (``tracker.core.credentials``; the
``api_keys`` table, cached in Redis under ``keys.api_key(hash)``). The admin
token is compared in constant time.
"""

from __future__ import annotations

import hmac
from typing import Any

from starlette.requests import HTTPConnection

from tracker.core.credentials import looks_like_api_key, token_hash
from tracker.core.errors import Forbidden, Unauthorized
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


async def brand_of(conn: HTTPConnection) -> dict[str, Any]:
    """The brand whose API key authenticates this request; 401 when missing or unknown."""
    token = bearer(conn)
    if token is None:
        raise BearerRequired("This route needs a brand API key: send Authorization: Bearer trk_....")
    brand: dict[str, Any] | None = await services(conn).registry.brand_for_key(token)
    if brand is None:
        if is_admin(conn, token):
            raise Forbidden("The admin token only creates and lists brands; use the brand's API key here.")
        raise BearerRequired("The API key is unknown or revoked.", code="invalid_token")
    conn.state.key_id = key_id(token)
    return brand


def key_id(token: str) -> str:
    """The public id of an API key: stable, derived from its hash, safe to show and log."""
    return "key_" + token_hash(token)[:16]


def actor(conn: HTTPConnection) -> str:
    """Who acts in this request, for the audit log: the key's id, or ``admin``."""
    acting: str | None = getattr(conn.state, "key_id", None)
    return acting if acting is not None else ADMIN
