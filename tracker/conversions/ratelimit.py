"""The per-store postback limit: at most N postbacks a store in a fixed one-minute window.

The window opens at a store's first postback (the counter's INCR sets its 60 s expiry),
as the ``limits`` library's fixed window did. The counter (``keys.postback_rate``) sits in
the slot of the store's brand, so the record script (``orderset.RECORD``) counts a postback
in the same Redis call that reads and writes its order: a postback costs one round trip.
``StoreRateLimit.check`` counts one alone, for a postback refused before it is recorded
(an invalid body still counts, and answers 429 rather than 422 once over the limit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from tracker.core import keys
from tracker.core.errors import RateLimited

WINDOW_SECONDS = 60

# KEYS: 1 counter. ARGV: 1 limit, 2 window seconds. Returns -1 when under the limit, else the
# counter's time to live in ms (when the window resets). RECORD inlines the same lines.
HIT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2])) end
if n <= tonumber(ARGV[1]) then return -1 end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
  ttl = tonumber(ARGV[2]) * 1000
end
return ttl
"""


@dataclass(frozen=True, slots=True)
class Quota:
    """One store's limit: its counter key and how many postbacks a minute it may send."""

    key: str
    store_id: str
    per_minute: int

    def exceeded(self, ttl_ms: int) -> RateLimited:
        wait = max(1, math.ceil(ttl_ms / 1000))
        return RateLimited(
            f"Store {self.store_id} sent more than {self.per_minute} postbacks this minute; "
            f"retry in {wait} seconds.",
            retry_after=wait,
        )


class StoreRateLimit:
    """The quota of each store, and a hit counted on its own (one Lua call, on the app's client)."""

    def __init__(self, redis: aioredis.Redis, per_minute: int) -> None:
        self.per_minute = per_minute
        self._hit: AsyncScript = redis.register_script(HIT)

    def quota(self, store: dict[str, Any]) -> Quota:
        store_id = str(store["id"])
        return Quota(keys.postback_rate(str(store["brand_id"]), store_id), store_id, self.per_minute)

    async def check(self, quota: Quota) -> None:
        """Count one postback; RateLimited (429, Retry-After) over the limit."""
        ttl = int(await self._hit(keys=[quota.key], args=[quota.per_minute, WINDOW_SECONDS]))
        if ttl >= 0:
            raise quota.exceeded(ttl)
