"""Who clicked, as far as the redirect needs to know: client IP, country, visitor hash.

The raw IP lives only for the duration of a request: it is turned into a country
and into ``visitor_hash`` (a keyed hash of IP and user agent under a random salt
of the UTC day) and then dropped. Salts live in Redis (``keys.visitor_salt``,
``SET NX`` + expiry of two days) so every worker of a day agrees on them; once
a salt has expired nobody, not even the server's owner, can recompute which IP
was behind a hash (the scheme Plausible uses for unique visitors).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from datetime import UTC, datetime

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tracker.core import keys
from tracker.core.timeutil import DAY_MS

log = logging.getLogger("tracker.redirect.visitor")

SALT_TTL_SECONDS = 48 * 3600
_SALT_BYTES = 32
# Salts of today and tomorrow are fetched ahead, so the UTC midnight never waits on Redis.
_SALT_REFRESH_SECONDS = 300.0
_PREFIX_CACHE_SIZE = 65_536


def day_of(ts_ms: int) -> int:
    """Days since the Unix epoch (UTC) of a millisecond timestamp."""
    return ts_ms // DAY_MS


def day_key(day: int) -> str:
    """YYYYMMDD of an epoch day, as used in the salt key."""
    return datetime.fromtimestamp(day * 86_400, UTC).strftime("%Y%m%d")


class Countries:
    """IP -> ISO country code from geoip2fast's bundled data (loaded once, ~0.1 s); "" when unknown."""

    def __init__(self) -> None:
        from geoip2fast import GeoIP2Fast

        self._geo = GeoIP2Fast()
        # Answers cached per IPv4 /24 (country data is practically never finer), so the cache
        # holds network prefixes, not visitors' addresses. IPv6 is looked up every time.
        self._by_prefix: dict[str, str] = {}

    def lookup(self, ip: str) -> str:
        prefix, dot, _ = ip.rpartition(".")
        if dot:
            hit = self._by_prefix.get(prefix)
            if hit is not None:
                return hit
        try:
            code = self._geo.lookup(ip).country_code
        except Exception:  # the library raises assorted errors on odd input; unknown is the answer
            code = ""
        country = code if isinstance(code, str) and len(code) == 2 and code.isalpha() else ""
        if dot and prefix.count(".") == 2 and prefix.replace(".", "").isdigit():
            if len(self._by_prefix) >= _PREFIX_CACHE_SIZE:
                self._by_prefix.clear()
            self._by_prefix[prefix] = country
        return country


def normalize_country(value: str) -> str:
    """A country header value (e.g. CF-IPCountry) as an ISO code; "" for XX, T1 and garbage."""
    value = value.strip().upper()
    if len(value) == 2 and value.isalpha() and value != "XX":
        return value
    return ""


class VisitorHasher:
    """visitor_hash = blake2b(ip, user agent; key = salt of the UTC day) as UInt64."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._salts: dict[int, bytes] = {}
        # Keyed blake2b states per day: copying one skips the key setup per click.
        self._states: dict[int, hashlib.blake2b] = {}
        self._local_days: set[int] = set()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        today = day_of(int(time.time() * 1000))
        for day in (today, today + 1):
            with contextlib.suppress(RedisError, OSError):
                await self.load(day)
        self._task = asyncio.create_task(self._refresh_loop(), name="visitor-salts")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def load(self, day: int) -> bytes:
        """The shared salt of a day: ours if we are first (SET NX), else the one already there."""
        candidate = self._salts[day] if day in self._local_days else os.urandom(_SALT_BYTES)
        key = keys.visitor_salt(day_key(day))
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(key, candidate.hex(), nx=True, ex=SALT_TTL_SECONDS)
            pipe.get(key)
            _, stored = await pipe.execute()
        salt = bytes.fromhex(stored.decode() if isinstance(stored, bytes) else stored)
        self._set(day, salt)
        self._local_days.discard(day)
        return salt

    def _set(self, day: int, salt: bytes) -> None:
        self._salts[day] = salt
        self._states[day] = hashlib.blake2b(key=salt, digest_size=8)
        for old in [d for d in self._salts if d < day - 2]:
            del self._salts[old]
            self._states.pop(old, None)
            self._local_days.discard(old)

    def hash_now(self, day: int, ip: str, user_agent: str) -> int | None:
        """The hash when the day's salt is loaded (the common case), else None."""
        state = self._states.get(day)
        if state is None:
            return None
        h = state.copy()
        # One update of ip NUL user agent (an IP is ASCII, so this is their bytes joined).
        h.update(f"{ip}\x00{user_agent}".encode("utf-8", "surrogateescape"))
        return int.from_bytes(h.digest(), "big")

    async def hash(self, day: int, ip: str, user_agent: str) -> int:
        value = self.hash_now(day, ip, user_agent)
        if value is not None:
            return value
        try:
            await self.load(day)
        except (RedisError, OSError) as exc:
            # Redis is down at a day's first click: a random salt of this process keeps the
            # privacy promise; it may count a visitor once per process that day (unique_clicks
            # over-counts slightly) until Redis is back and the salt is shared again.
            log.warning("visitor salt of day %s not in Redis (%s); using a local one", day_key(day), exc)
            self._set(day, os.urandom(_SALT_BYTES))
            self._local_days.add(day)
        value = self.hash_now(day, ip, user_agent)
        assert value is not None
        return value

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(_SALT_REFRESH_SECONDS if not self._local_days else 1.0)
            today = day_of(int(time.time() * 1000))
            for day in (today, today + 1):
                if day in self._salts and day not in self._local_days:
                    continue
                try:
                    await self.load(day)
                except (RedisError, OSError) as exc:
                    log.debug("visitor salt refresh failed: %s", exc)
