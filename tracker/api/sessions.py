"""Influencer portal sign-in: one-time links and the session cookie.

A brand asks for a sign-in link (``POST /api/v1/influencers/{id}/portal-link``): a random
token valid ``SIGNIN_SECONDS`` (7 days), kept in Redis only as its sha256 and taken with
``GETDEL``, so it works once. Redeeming it opens a session: a random session id whose
sha256 keys a Redis record that expires with the session, and a cookie
``<session id>.<expiry ms>.<HMAC>`` signed with a sub-key of ``TRACKER_SECRET_KEY``.

A cookie is accepted only while its signature matches, its expiry is ahead and its Redis
record exists: signing out deletes the record, so a copied or replayed cookie stops working
at once, and an expired one is refused even if its record outlived it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tracker.core import keys
from tracker.core.credentials import (
    PORTAL_TOKEN_PREFIX,
    new_portal_token,
    new_session_id,
    session_cookie,
    session_id_of,
    token_hash,
)
from tracker.core.errors import StorageUnavailable
from tracker.core.timeutil import from_ms

COOKIE = "trk_portal"
SIGNIN_SECONDS = 7 * 86_400
_PURPOSE = "portal-session"


@dataclass(frozen=True, slots=True)
class Seat:
    """Who a sign-in token or a session is for."""

    brand_id: str
    influencer_id: str

    def encode(self, **more: object) -> str:
        return json.dumps({"brand_id": self.brand_id, "influencer_id": self.influencer_id, **more})

    @classmethod
    def decode(cls, raw: bytes | str) -> Seat:
        data = json.loads(raw)
        return cls(str(data["brand_id"]), str(data["influencer_id"]))


@dataclass(frozen=True, slots=True)
class Session:
    cookie: str
    expires_at: datetime
    max_age: int


class Sessions:
    def __init__(self, redis: aioredis.Redis, secret_key: str, session_seconds: int) -> None:
        self.redis = redis
        self.secret_key = secret_key
        self.session_seconds = session_seconds

    async def _call(self, op: object) -> object:
        try:
            return await op  # type: ignore[misc]
        except RedisError as exc:
            raise StorageUnavailable(f"Redis is unreachable: {exc}") from exc

    # ------------------------------------------------------------------ sign-in links

    async def new_signin(self, seat: Seat, seconds: int = SIGNIN_SECONDS) -> tuple[str, datetime]:
        """A one-time sign-in token for ``seat`` and when it expires."""
        token = new_portal_token()
        expires_ms = int(time.time() * 1000) + seconds * 1000
        await self._call(self.redis.set(keys.portal_signin(token_hash(token)), seat.encode(), ex=seconds))
        return token, from_ms(expires_ms)

    async def redeem(self, token: str) -> Seat | None:
        """The seat of a sign-in token, which is gone afterwards; None if unknown, used or expired."""
        if not token.startswith(PORTAL_TOKEN_PREFIX) or len(token) > 100:
            return None
        raw = await self._call(self.redis.getdel(keys.portal_signin(token_hash(token))))
        return Seat.decode(raw) if isinstance(raw, bytes | str) and raw else None

    # ---------------------------------------------------------------------- sessions

    async def open(self, seat: Seat, seconds: int | None = None) -> Session:
        seconds = self.session_seconds if seconds is None else seconds
        sid = new_session_id()
        expires_ms = int(time.time() * 1000) + seconds * 1000
        record = seat.encode(expires_ms=expires_ms)
        await self._call(self.redis.set(keys.portal_session(token_hash(sid)), record, px=seconds * 1000))
        return Session(session_cookie(self.secret_key, _PURPOSE, sid, expires_ms), from_ms(expires_ms), seconds)

    def _parse(self, cookie: str) -> str | None:
        return session_id_of(self.secret_key, _PURPOSE, cookie)

    async def read(self, cookie: str) -> Seat | None:
        sid = self._parse(cookie)
        if sid is None:
            return None
        raw = await self._call(self.redis.get(keys.portal_session(token_hash(sid))))
        return Seat.decode(raw) if isinstance(raw, bytes | str) and raw else None

    async def close(self, cookie: str) -> None:
        """Sign out: the record goes, so this cookie is refused from now on, wherever it is replayed."""
        sid = self._parse(cookie)
        if sid is not None:
            await self._call(self.redis.delete(keys.portal_session(token_hash(sid))))
