"""API keys with scopes: created, listed, revoked, rotated, looked up on every API request.

A key is ``trk_<random>`` (256 bits), shown once and kept only as its sha256 hex in
``api_keys`` (ClickHouse, the record) and ``keys.api_key(hash)`` (Redis, what requests
read). Its public id is ``key_`` + the first 16 hex digits of that hash
(``tracker.api.auth.key_id``): derived, never stored, so the brand keys made before
scopes keep the id the audit log already shows.

Scopes: ``write`` (every brand route; the brand key of ``POST /api/v1/brands`` is one),
``read`` (the brand's GET routes only) and ``influencer`` (only ``/api/v1/me/*``, for one
influencer). ``tracker.api.auth`` enforces them.

Revocation reaches every process within ``GRANT_CACHE_SECONDS`` + one request: the
ClickHouse row is marked revoked first, then the Redis record is overwritten with the
empty "unknown key" value (a rebuild racing it writes with ``SET NX`` and cannot bring the
key back), and the in-process cache of grants lives ``GRANT_CACHE_SECONDS``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Literal

from tracker.core import keys
from tracker.core.credentials import looks_like_api_key, new_api_key, token_hash
from tracker.core.errors import Conflict, NotFound
from tracker.core.timeutil import from_ms, now_utc
from tracker.registry.cache import Cache, Row, text
from tracker.storage import redis_client

Scope = Literal["read", "write", "influencer"]
SCOPES: tuple[Scope, ...] = ("read", "write", "influencer")
BRAND_KEY_NAME = "Brand key"
# In-process life of a looked-up grant: revocation must reach every worker within 5 s.
GRANT_CACHE_SECONDS = 2.0
# last_used_at is written at most this often per key and process.
TOUCH_SECONDS = 60.0
_CACHE_MAX = 10_000
_COLUMNS = "key_hash, brand_id, prefix, name, scope, influencer_id, created_at"


def public_id(digest: str) -> str:
    """The public id of the key whose sha256 hex is ``digest``."""
    return "key_" + digest[:16]


@dataclass(frozen=True, slots=True)
class Grant:
    """What a valid key may do: its brand, scope and (influencer keys) influencer."""

    key_id: str
    brand_id: str
    scope: Scope
    influencer_id: str = ""

    def encode(self) -> str:
        return json.dumps({"b": self.brand_id, "s": self.scope, "i": self.influencer_id}, separators=(",", ":"))

    @classmethod
    def decode(cls, key_id: str, raw: str) -> Grant:
        # A record written before scopes holds the brand id alone: a write key.
        if not raw.startswith("{"):
            return cls(key_id, raw, "write")
        data: dict[str, Any] = json.loads(raw)
        scope = data.get("s", "write")
        return cls(key_id, str(data["b"]), scope if scope in SCOPES else "read", str(data.get("i") or ""))


@dataclass(frozen=True, slots=True)
class NewKey:
    record: Row
    key: str


def _record(row: Row, last_used_ms: int | None) -> Row:
    return {
        "id": public_id(row["key_hash"]),
        "name": row["name"] or BRAND_KEY_NAME,
        "scope": row["scope"] or "write",
        "influencer_id": row["influencer_id"] or None,
        "prefix": row["prefix"],
        "created_at": row["created_at"],
        "last_used_at": from_ms(last_used_ms) if last_used_ms else None,
    }


class ApiKeys:
    def __init__(self, cache: Cache) -> None:
        self.cache = cache
        self._grants: dict[str, tuple[float, Grant | None]] = {}
        self._touched: dict[str, float] = {}

    # ------------------------------------------------------------------ writes

    async def create(
        self, brand_id: str, *, name: str, scope: Scope, influencer_id: str = "", created_at: Any = None
    ) -> NewKey:
        key = new_api_key()
        digest = token_hash(key)
        row: Row = {
            "key_hash": digest,
            "brand_id": brand_id,
            "prefix": key[:8],
            "name": name,
            "scope": scope,
            "influencer_id": influencer_id,
            "revoked": 0,
            "created_at": created_at or now_utc(),
            "version": time.time_ns(),
        }
        await self.cache.insert("api_keys", row)
        grant = Grant(public_id(digest), brand_id, scope, influencer_id)
        await self.cache.write(self.cache.redis.set(keys.api_key(digest), grant.encode()))
        return NewKey(_record(row, None), key)

    async def revoke(self, brand_id: str, key_id: str, *, keep_a_write_key: bool = True) -> Row:
        """Revoke a key of the brand; the record as it was. 404 for another brand's or an unknown id."""
        async with self.cache.lock("api-keys", brand_id):
            rows = await self._active(brand_id)
            row = next((r for r in rows if public_id(r["key_hash"]) == key_id), None)
            if row is None:
                raise NotFound(f"API key {key_id!r} does not exist or is already revoked.")
            writers = [r for r in rows if (r["scope"] or "write") == "write"]
            if keep_a_write_key and writers == [row]:
                raise Conflict(
                    f"API key {key_id!r} is the brand's last write key: create another write key before "
                    "revoking it, or nobody could manage the brand any more."
                )
            await self.cache.insert("api_keys", {**row, "revoked": 1, "version": time.time_ns()})
            # After the row: a rebuild that read the old row writes back with NX and loses to this.
            await self.cache.write(self.cache.redis.set(keys.api_key(row["key_hash"]), b""))
            self._grants.pop(row["key_hash"], None)
            return _record(row, await self._last_used(key_id))

    async def rotate(self, brand_id: str, key_id: str) -> tuple[Row, NewKey]:
        """A new secret for the key's name, scope and influencer; the old key is revoked. (old, new)."""
        rows = await self._active(brand_id)
        row = next((r for r in rows if public_id(r["key_hash"]) == key_id), None)
        if row is None:
            raise NotFound(f"API key {key_id!r} does not exist or is already revoked.")
        new = await self.create(
            brand_id, name=row["name"] or BRAND_KEY_NAME, scope=row["scope"] or "write",
            influencer_id=row["influencer_id"],
        )
        old = await self.revoke(brand_id, key_id, keep_a_write_key=False)
        return old, new

    # ------------------------------------------------------------------- reads

    async def _active(self, brand_id: str) -> list[Row]:
        return await self.cache.query(
            f"SELECT {_COLUMNS} FROM api_keys FINAL WHERE brand_id = {{b:String}} AND revoked = 0 "
            "ORDER BY created_at, key_hash",
            {"b": brand_id},
        )

    async def all(self, brand_id: str) -> list[Row]:
        """The brand's keys that work, oldest first, with their last use (no secrets, no hashes)."""
        rows = await self._active(brand_id)
        if not rows:
            return []
        ids = [public_id(r["key_hash"]) for r in rows]
        used = await redis_client.mget_async(self.cache.redis, [keys.key_used(i) for i in ids])
        return [_record(r, int(u) if u else None) for r, u in zip(rows, used, strict=True)]

    async def _last_used(self, key_id: str) -> int | None:
        raw = await self.cache.redis.get(keys.key_used(key_id))
        return int(raw) if raw else None

    async def grant(self, token: str) -> Grant | None:
        """What ``token`` may do; None for an unknown or revoked key. Cached in process for 2 s."""
        if not looks_like_api_key(token):
            return None
        return await self.grant_for_digest(token_hash(token))

    async def grant_for_digest(self, digest: str) -> Grant | None:
        """``grant`` by the key's sha256 hex (what a brand app session keeps instead of the key)."""
        now = time.monotonic()
        hit = self._grants.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        grant = await self._grant(digest)
        if len(self._grants) >= _CACHE_MAX:
            self._grants.clear()
        self._grants[digest] = (now + GRANT_CACHE_SECONDS, grant)
        return grant

    async def _grant(self, digest: str) -> Grant | None:
        key_id = public_id(digest)
        raw = await self.cache.get(keys.api_key(digest))
        if raw is not None:
            return Grant.decode(key_id, text(raw)) if raw else None
        row = await self.cache.first(
            "SELECT brand_id, scope, influencer_id FROM api_keys FINAL "
            "WHERE key_hash = {h:String} AND revoked = 0 LIMIT 1",
            {"h": digest},
        )
        if row is None:
            await self.cache.fill_missing(keys.api_key(digest))
            return None
        grant = Grant(key_id, str(row["brand_id"]), row["scope"] or "write", row["influencer_id"] or "")
        await self.cache.fill(keys.api_key(digest), grant.encode())
        return grant

    def clear_cache(self) -> None:
        """Forget the grants this process cached (the next lookups read Redis)."""
        self._grants.clear()

    async def touch(self, key_id: str) -> None:
        """Note that the key was used now: one Redis write per key and minute in this process."""
        now = time.monotonic()
        if self._touched.get(key_id, 0.0) > now:
            return
        if len(self._touched) >= _CACHE_MAX:
            self._touched.clear()
        self._touched[key_id] = now + TOUCH_SECONDS
        await self.cache.note(keys.key_used(key_id), str(int(time.time() * 1000)))
