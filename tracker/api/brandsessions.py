"""Brand app sessions: a brand key exchanged once for a signed, expiring, HttpOnly cookie.

``POST /app/signin`` checks a read or write key and opens a session: a random session id
whose sha256 keys a Redis record ``{key_hash, csrf, expires_ms}`` that expires with the
session, and a cookie ``<session id>.<expiry ms>.<HMAC>`` signed with a sub-key of
``TRACKER_SECRET_KEY`` (HttpOnly, SameSite=Strict, Secure on https). The key itself is
kept nowhere: the record holds its sha256, as the api_keys table does, so each request acts
with the key's current grant (a revoked key ends its sessions within the grant cache's 2 s;
a read key's session cannot write).

CSRF: every unsafe method (anything but GET, HEAD, OPTIONS) sent with the session cookie
must carry ``X-CSRF-Token``, the per-session token the page gets from ``/app/session``
(a header no other origin can set without CORS, which this server never grants). Sign-out
deletes the record, so a copied cookie stops working at once.
"""

from __future__ import annotations

import hmac
import json
import secrets
import time
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tracker.core import keys
from tracker.core.credentials import new_session_id, session_cookie, session_id_of, token_hash
from tracker.core.errors import StorageUnavailable

COOKIE = "trk_app"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_PURPOSE = "app-session"


@dataclass(frozen=True, slots=True)
class AppSeat:
    """A signed-in brand app session: the key it acts with (by hash) and its CSRF token."""

    key_hash: str
    csrf: str
    expires_ms: int


class BrandSessions:
    def __init__(self, redis: aioredis.Redis, secret_key: str, session_seconds: int) -> None:
        self.redis = redis
        self.secret_key = secret_key
        self.session_seconds = session_seconds

    async def open(self, key_hash: str, seconds: int | None = None) -> tuple[str, AppSeat]:
        """A new session for the key whose sha256 is ``key_hash``: (cookie value, seat)."""
        seconds = self.session_seconds if seconds is None else seconds
        sid = new_session_id()
        expires_ms = int(time.time() * 1000) + seconds * 1000
        seat = AppSeat(key_hash, secrets.token_urlsafe(24), expires_ms)
        record = json.dumps({"key_hash": key_hash, "csrf": seat.csrf, "expires_ms": expires_ms})
        try:
            await self.redis.set(keys.app_session(token_hash(sid)), record, px=seconds * 1000)
        except RedisError as exc:
            raise StorageUnavailable(f"Redis is unreachable: {exc}") from exc
        return session_cookie(self.secret_key, _PURPOSE, sid, expires_ms), seat

    def _parse(self, cookie: str) -> str | None:
        return session_id_of(self.secret_key, _PURPOSE, cookie)

    async def read(self, cookie: str) -> AppSeat | None:
        sid = self._parse(cookie)
        if sid is None:
            return None
        try:
            raw = await self.redis.get(keys.app_session(token_hash(sid)))
        except RedisError as exc:
            raise StorageUnavailable(f"Redis is unreachable: {exc}") from exc
        if not raw:
            return None
        data = json.loads(raw)
        return AppSeat(str(data["key_hash"]), str(data["csrf"]), int(data["expires_ms"]))

    async def close(self, cookie: str) -> None:
        """Sign out: the record goes, so this cookie is refused from now on, wherever it is replayed."""
        sid = self._parse(cookie)
        if sid is not None:
            try:
                await self.redis.delete(keys.app_session(token_hash(sid)))
            except RedisError as exc:
                raise StorageUnavailable(f"Redis is unreachable: {exc}") from exc


def csrf_ok(seat: AppSeat, sent: str | None) -> bool:
    return sent is not None and hmac.compare_digest(sent.encode(), seat.csrf.encode())
