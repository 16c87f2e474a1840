"""Influencers: read from ClickHouse only (no hot path reads them)."""

from __future__ import annotations

import time
from typing import Any

from tracker.core.ids import looks_like, new_id
from tracker.core.timeutil import now_utc
from tracker.registry.cache import Cache, Row

_COLUMNS = "id, name, handle, platform, archived, email_hash, created_at"


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
            "archived": 0,
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

    async def update(self, brand_id: str, influencer_id: str, changes: dict[str, Any]) -> Row | None:
        """Apply a PATCH (column -> value) as a new row version; None when unknown or another brand's."""
        if not looks_like("influencer", influencer_id) or not looks_like("brand", brand_id):
            return None
        async with self.cache.lock("influencer", influencer_id):
            row = await self.cache.first(
                f"SELECT {_COLUMNS}, version FROM influencers FINAL WHERE brand_id = {{b:String}} "
                "AND id = {id:String} LIMIT 1",
                {"b": brand_id, "id": influencer_id},
            )
            if row is None:
                return None
            row = {**row, **changes, "brand_id": brand_id}
            row["version"] = max(int(row["version"]) + 1, time.time_ns())
            await self.cache.insert("influencers", row)
            return row

    async def all(self, brand_id: str) -> list[Row]:
        return await self.cache.query(
            f"SELECT {_COLUMNS} FROM influencers FINAL WHERE brand_id = {{b:String}} ORDER BY created_at, version, id",
            {"b": brand_id},
        )
