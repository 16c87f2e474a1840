"""Campaigns: the commission rule, the attribution window and the click-id parameter.

Postbacks read a campaign for every attributed conversion, so its record is cached
in Redis (the commission value as a decimal string in JSON, a Decimal in Python).
"""

from __future__ import annotations

import json
import logging
import time
from decimal import Decimal
from typing import Any

from tracker.core import keys
from tracker.core.ids import looks_like, new_id
from tracker.core.money import plain
from tracker.core.timeutil import iso, now_utc
from tracker.registry.cache import Cache, Row

log = logging.getLogger("tracker.registry")

CampaignRecord = dict[str, Any]
DEFAULT_CLICK_ID_PARAM = "click_id"
DEFAULT_WINDOW_DAYS = 30
DEFAULT_RECURRING_MONTHS = 12
DEFAULT_HOLD_DAYS = 30
_COLUMNS = (
    "id, name, attribution_window_days, commission_type, commission_value, click_id_param, "
    "allowed_domains, recurring_months, hold_days, rules, fallback_url, archived, created_at, version"
)


def _rules(row: Row) -> list[dict[str, Any]]:
    """The rule history (oldest first); a campaign from before the history has one rule since ever."""
    raw = row.get("rules") or ""
    if raw:
        loaded: list[dict[str, Any]] = json.loads(raw)
        return loaded
    return [{"from_ms": 0, "type": row["commission_type"], "value": str(plain(Decimal(row["commission_value"]))),
             "hold_days": int(row.get("hold_days", DEFAULT_HOLD_DAYS))}]


def rule_at(campaign: CampaignRecord, at_ms: int) -> dict[str, Any]:
    """The rule ({type, value: Decimal, hold_days}) in force at ``at_ms``: the last one that started by then,
    else the first (an order dated before the campaign existed is priced by its first rule)."""
    rules = campaign.get("rules") or [{"from_ms": 0, "type": campaign["commission"]["type"],
                                        "value": str(campaign["commission"]["value"]),
                                        "hold_days": campaign.get("hold_days", DEFAULT_HOLD_DAYS)}]
    chosen = rules[0]
    for r in rules:
        if int(r["from_ms"]) <= at_ms:
            chosen = r
    return {"type": chosen["type"], "value": Decimal(str(chosen["value"])), "hold_days": int(chosen["hold_days"])}


def _record(row: Row) -> CampaignRecord:
    return {
        "id": row["id"],
        "name": row["name"],
        "attribution_window_days": int(row["attribution_window_days"]),
        "commission": {"type": row["commission_type"], "value": plain(Decimal(row["commission_value"]))},
        "click_id_param": row["click_id_param"],
        "allowed_domains": list(row["allowed_domains"]),
        "recurring_months": int(row.get("recurring_months", DEFAULT_RECURRING_MONTHS)),
        "hold_days": int(row.get("hold_days", DEFAULT_HOLD_DAYS)),
        "rules": _rules(row),
        "fallback_url": str(row.get("fallback_url") or ""),
        "archived": bool(row.get("archived", 0)),
        "created_at": iso(row["created_at"]),
    }


def _encode(c: CampaignRecord) -> bytes:
    data = {**c, "commission": {"type": c["commission"]["type"], "value": str(c["commission"]["value"])}}
    return json.dumps(data, separators=(",", ":")).encode()


def _decode(raw: bytes) -> CampaignRecord:
    data: CampaignRecord = json.loads(raw)
    data["commission"]["value"] = Decimal(data["commission"]["value"])
    data.setdefault("recurring_months", DEFAULT_RECURRING_MONTHS)  # a record cached before the field
    data.setdefault("hold_days", DEFAULT_HOLD_DAYS)
    data.setdefault("fallback_url", "")
    data.setdefault("archived", False)
    if "rules" not in data:
        data["rules"] = _rules({"commission_type": data["commission"]["type"],
                                "commission_value": data["commission"]["value"], "hold_days": data["hold_days"]})
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
        hold_days: int = DEFAULT_HOLD_DAYS,
        fallback_url: str = "",
    ) -> CampaignRecord:
        rules = [{"from_ms": 0, "type": commission_type, "value": str(plain(commission_value)),
                  "hold_days": hold_days}]
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
            "hold_days": hold_days,
            "rules": json.dumps(rules, separators=(",", ":")),
            "fallback_url": fallback_url,
            "archived": 0,
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
        row = await self._row(brand_id, campaign_id)
        if row is None:
            return None
        campaign = _record(row)
        await self.cache.fill(keys.campaign(brand_id, campaign_id), _encode(campaign))
        return campaign

    async def _row(self, brand_id: str, campaign_id: str) -> Row | None:
        return await self.cache.first(
            f"SELECT {_COLUMNS} FROM campaigns FINAL WHERE brand_id = {{b:String}} AND id = {{id:String}} LIMIT 1",
            {"b": brand_id, "id": campaign_id},
        )

    async def update(self, brand_id: str, campaign_id: str, changes: dict[str, Any]) -> CampaignRecord | None:
        """Apply a PATCH (``name``, ``attribution_window_days``, ``recurring_months``, ``fallback_url``,
        ``archived``, ``commission`` {type, value}, ``hold_days``); None for an unknown campaign. A new
        commission or hold starts a new rule in the history, in force from now: orders that occurred
        before keep the old one."""
        if not looks_like("campaign", campaign_id) or not looks_like("brand", brand_id):
            return None
        async with self.cache.lock("campaign", campaign_id):
            row = await self._row(brand_id, campaign_id)
            if row is None:
                return None
            rules = _rules(row)
            for field in ("name", "attribution_window_days", "recurring_months", "fallback_url"):
                if field in changes:
                    row[field] = changes[field]
            if "archived" in changes:
                row["archived"] = int(bool(changes["archived"]))
            if "commission" in changes or "hold_days" in changes:
                last = rules[-1]
                commission = changes.get("commission") or {"type": last["type"], "value": Decimal(last["value"])}
                hold = int(changes.get("hold_days", last["hold_days"]))
                row["commission_type"], row["commission_value"], row["hold_days"] = (
                    commission["type"], commission["value"], hold)
                rules.append({"from_ms": int(time.time() * 1000), "type": commission["type"],
                              "value": str(plain(Decimal(commission["value"]))), "hold_days": hold})
            row["rules"] = json.dumps(rules, separators=(",", ":"))
            row["brand_id"] = brand_id
            row["version"] = max(int(row["version"]) + 1, time.time_ns())
            await self.cache.insert("campaigns", row)
            campaign = _record(row)
            await self.cache.write(self.cache.redis.set(keys.campaign(brand_id, campaign_id), _encode(campaign)))
            return campaign

    async def fallback_url(self, brand_id: str, campaign_id: str) -> str:
        """The campaign's fallback URL for followers of a dead link; "" for none or when storage is down."""
        try:
            campaign = await self.get(brand_id, campaign_id)
        except Exception:  # the follower gets the 410 page instead; never an error page
            log.warning("fallback URL of campaign %s unavailable", campaign_id, exc_info=True)
            return ""
        return str(campaign.get("fallback_url") or "") if campaign else ""

    async def all(self, brand_id: str) -> list[CampaignRecord]:
        rows = await self.cache.query(
            f"SELECT {_COLUMNS} FROM campaigns FINAL WHERE brand_id = {{b:String}} ORDER BY created_at, version, id",
            {"b": brand_id},
        )
        return [_record(r) for r in rows]
