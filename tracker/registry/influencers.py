"""Influencers: read from ClickHouse only (no hot path reads them)."""

from __future__ import annotations

import time

from tracker.core.ids import looks_like, new_id
from tracker.core.timeutil import now_utc
from tracker.registry.cache import Cache, Row

_COLUMNS = "id, name, handle, platform, email_hash, created_at"


class Influencers:
    def __init__(self, cache: Cache) -> None:
        self.cache = cache

    async def create(
        self, brand_id: str, *, name: str, handle: str = "", platform: str = "", email_hash: str = ""
    ) -> Row:
        row: Row = {
            "brand_id": brand_id,
            "id": new_id("influencer"),
            "name": name,
            "handle": handle,
            "platform": platform,
            "email_hash": email_hash,
            "created_at": now_utc(),
            "version": time.time_ns(),
        }
        await self.cache.insert("influencers", row)
        return row

    async def get(self, brand_id: str, influencer_id: str) -> Row | None:
        if not looks_like("influencer", influencer_id) or not looks_like("brand", brand_id):
            return None
        return await self.cache.first(
            f"SELECT {_COLUMNS} FROM influencers FINAL WHERE brand_id = {{b:String}} AND id = {{id:String}} LIMIT 1",
            {"b": brand_id, "id": influencer_id},
        )

    async def all(self, brand_id: str) -> list[Row]:
        return await self.cache.query(
            f"SELECT {_COLUMNS} FROM influencers FINAL WHERE brand_id = {{b:String}} ORDER BY created_at, version, id",
            {"b": brand_id},
        )
