"""Brands and their API keys.

A brand record (``{id, name, currency, created_at}``) is cached in Redis for every
API request; an API key is kept only as its hash, mapped to its brand (an unknown
key is remembered as unknown for a while).
"""

from __future__ import annotations

import json
import time
from typing import Any

from tracker.core import keys
from tracker.core.ids import looks_like, new_id
from tracker.core.timeutil import iso, now_utc
from tracker.registry.apikeys import BRAND_KEY_NAME, ApiKeys
from tracker.registry.cache import Cache, Row

BrandRecord = dict[str, Any]
_COLUMNS = "id, name, currency, created_at"


def _record(row: Row) -> BrandRecord:
    return {"id": row["id"], "name": row["name"], "currency": row["currency"], "created_at": iso(row["created_at"])}


class Brands:
    def __init__(self, cache: Cache, apikeys: ApiKeys) -> None:
        self.cache = cache
        self.apikeys = apikeys

    async def create(self, name: str, currency: str) -> tuple[BrandRecord, str]:
        """The new brand and its API key (shown this once; only its hash is kept)."""
        row: Row = {"id": new_id("brand"), "name": name, "currency": currency, "created_at": now_utc()}
        await self.cache.insert("brands", {**row, "version": time.time_ns()})
        brand = _record(row)
        await self.cache.write(self.cache.redis.set(keys.brand(brand["id"]), json.dumps(brand)))
        # The brand key is a write key like any other (listed, revocable, rotatable).
        new = await self.apikeys.create(row["id"], name=BRAND_KEY_NAME, scope="write", created_at=row["created_at"])
        return brand, new.key

    async def get(self, brand_id: str) -> BrandRecord | None:
        if not looks_like("brand", brand_id):
            return None
        raw = await self.cache.get(keys.brand(brand_id))
        if raw is not None:
            cached: BrandRecord = json.loads(raw)
            return cached
        row = await self.cache.first(
            f"SELECT {_COLUMNS} FROM brands FINAL WHERE id = {{id:String}} LIMIT 1", {"id": brand_id}
        )
        if row is None:
            return None
        brand = _record(row)
        await self.cache.fill(keys.brand(brand_id), json.dumps(brand))
        return brand

    async def all(self) -> list[BrandRecord]:
        rows = await self.cache.query(f"SELECT {_COLUMNS} FROM brands FINAL ORDER BY created_at, version, id")
        return [_record(r) for r in rows]

    async def for_key(self, api_key: str) -> BrandRecord | None:
        """The brand an API key belongs to; None for an unknown or revoked key."""
        grant = await self.apikeys.grant(api_key)
        return await self.get(grant.brand_id) if grant is not None else None
