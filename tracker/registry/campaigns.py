"""Campaigns: the commission rule, the attribution window and the click-id parameter.

Postbacks read a campaign for every attributed conversion, so its record is cached
in Redis (the commission value as a decimal string in JSON, a Decimal in Python).
"""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

from tracker.core import keys
from tracker.core.ids import looks_like, new_id
from tracker.core.money import plain
from tracker.core.timeutil import iso, now_utc
from tracker.registry.cache import Cache, Row

CampaignRecord = dict[str, Any]
DEFAULT_CLICK_ID_PARAM = "click_id"
DEFAULT_WINDOW_DAYS = 30
DEFAULT_RECURRING_MONTHS = 12
DEFAULT_ATTRIBUTION_PRIORITY = "click"
_COLUMNS = (
    "id, name, attribution_window_days, commission_type, commission_value, click_id_param, "
    "allowed_domains, recurring_months, attribution_priority, created_at"
)


def _record(row: Row) -> CampaignRecord:
    return {
        "id": row["id"],
        "name": row["name"],
        "attribution_window_days": int(row["attribution_window_days"]),
        "commission": {"type": row["commission_type"], "value": plain(Decimal(row["commission_value"]))},
        "click_id_param": row["click_id_param"],
        "allowed_domains": list(row["allowed_domains"]),
        "recurring_months": int(row.get("recurring_months", DEFAULT_RECURRING_MONTHS)),
        "attribution_priority": str(row.get("attribution_priority") or DEFAULT_ATTRIBUTION_PRIORITY),
        "created_at": iso(row["created_at"]),
    }


def _encode(c: CampaignRecord) -> bytes:
    data = {**c, "commission": {"type": c["commission"]["type"], "value": str(c["commission"]["value"])}}
    return json.dumps(data, separators=(",", ":")).encode()


def _decode(raw: bytes) -> CampaignRecord:
    data: CampaignRecord = json.loads(raw)
    data["commission"]["value"] = Decimal(data["commission"]["value"])
    data.setdefault("recurring_months", DEFAULT_RECURRING_MONTHS)  # a record cached before the field
    data.setdefault("attribution_priority", DEFAULT_ATTRIBUTION_PRIORITY)
    return data


class Campaigns:
    def __init__(self, cache: Cache) -> None:
        self.cache = cache

    async def create(
        self,
        brand_id: str,
        *,
        name: str,
        attribution_window_days: int = DEFAULT_WINDOW_DAYS,
        commission_type: str,
        commission_value: Decimal,
        click_id_param: str = DEFAULT_CLICK_ID_PARAM,
        allowed_domains: list[str] | None = None,
        recurring_months: int = DEFAULT_RECURRING_MONTHS,
        attribution_priority: str = DEFAULT_ATTRIBUTION_PRIORITY,
    ) -> CampaignRecord:
        row: Row = {
            "brand_id": brand_id,
            "id": new_id("campaign"),
            "name": name,
            "attribution_window_days": attribution_window_days,
            "commission_type": commission_type,
            "commission_value": commission_value,
            "click_id_param": click_id_param,
            "allowed_domains": list(allowed_domains or []),
            "recurring_months": recurring_months,
            "attribution_priority": attribution_priority,
            "created_at": now_utc(),
            "version": time.time_ns(),
        }
        await self.cache.insert("campaigns", row)
        campaign = _record(row)
        await self.cache.write(self.cache.redis.set(keys.campaign(brand_id, campaign["id"]), _encode(campaign)))
        return campaign

    async def get(self, brand_id: str, campaign_id: str) -> CampaignRecord | None:
        if not looks_like("campaign", campaign_id) or not looks_like("brand", brand_id):
            return None
        raw = await self.cache.get(keys.campaign(brand_id, campaign_id))
        if raw is not None:
            return _decode(raw)
        row = await self.cache.first(
            f"SELECT {_COLUMNS} FROM campaigns FINAL WHERE brand_id = {{b:String}} AND id = {{id:String}} LIMIT 1",
            {"b": brand_id, "id": campaign_id},
        )
        if row is None:
            return None
        campaign = _record(row)
        await self.cache.fill(keys.campaign(brand_id, campaign_id), _encode(campaign))
        return campaign

    async def all(self, brand_id: str) -> list[CampaignRecord]:
        rows = await self.cache.query(
            f"SELECT {_COLUMNS} FROM campaigns FINAL WHERE brand_id = {{b:String}} ORDER BY created_at, version, id",
            {"b": brand_id},
        )
        return [_record(r) for r in rows]
