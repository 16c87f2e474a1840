"""Links as the redirect reads them: the redirect's ``LinkSource`` (``tracker.redirect.linkcache``).

- ``link_by_code``: the registry's usual read (Redis, else rebuilt from ClickHouse and
  written back).
- ``stored_link``: ClickHouse only, the system of record, for while Redis is down (the
  registry's own reads try Redis first, and its client waits out several retries).
- ``codes_since``: the codes of links created since a time (all of them without one), for
  the redirect's set of existing codes, so an unknown code costs it no lookup.

Reads only the ``links`` and ``campaigns`` tables (ReplacingMergeTree, read with FINAL),
with no cache of its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from tracker.core.records import LinkRecord
from tracker.storage.clickhouse import ClickHouse, run_sync

# What a link whose campaign row is missing redirects with (the registry's defaults).
DEFAULT_CLICK_ID_PARAM = "click_id"
DEFAULT_WINDOW_DAYS = 30

_LINK = (
    "SELECT id, code, brand_id, campaign_id, influencer_id, destination_url, coupon_code, disabled, expires_at "
    "FROM links FINAL WHERE code = {c:String} LIMIT 1"
)
_CAMPAIGN = (
    "SELECT click_id_param, attribution_window_days FROM campaigns FINAL "
    "WHERE brand_id = {b:String} AND id = {id:String} LIMIT 1"
)


class LinkIndex:
    def __init__(self, ch: ClickHouse, link_by_code: Callable[[str], Awaitable[LinkRecord | None]]) -> None:
        self.ch = ch
        self._link_by_code = link_by_code

    async def link_by_code(self, code: str) -> LinkRecord | None:
        return await self._link_by_code(code)

    async def _rows(self, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        return await run_sync(lambda: self.ch.query_dicts(sql, params))

    async def stored_link(self, code: str) -> LinkRecord | None:
        links = await self._rows(_LINK, {"c": code})
        if not links:
            return None
        row = links[0]
        campaigns = await self._rows(_CAMPAIGN, {"b": row["brand_id"], "id": row["campaign_id"]})
        campaign = campaigns[0] if campaigns else {}
        expires: datetime | None = row["expires_at"]
        if expires is not None and expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        return LinkRecord(
            id=int(row["id"]),
            code=str(row["code"]),
            brand_id=str(row["brand_id"]),
            campaign_id=str(row["campaign_id"]),
            influencer_id=str(row["influencer_id"]),
            destination_url=str(row["destination_url"]),
            coupon_code=str(row["coupon_code"]),
            disabled=bool(row["disabled"]),
            expires_at_ms=None if expires is None else int(expires.timestamp() * 1000),
            click_id_param=str(campaign.get("click_id_param") or DEFAULT_CLICK_ID_PARAM),
            attribution_window_days=int(campaign.get("attribution_window_days") or DEFAULT_WINDOW_DAYS),
        )

    async def codes_since(self, since_ms: int | None) -> list[str]:
        """Codes of the links created at or after ``since_ms`` (every code when None); may repeat."""
        if since_ms is None:
            rows = await run_sync(lambda: self.ch.query("SELECT code FROM links"))
        else:
            rows = await run_sync(
                lambda: self.ch.query(
                    "SELECT code FROM links WHERE toUnixTimestamp64Milli(created_at) >= {since:Int64}",
                    {"since": since_ms},
                )
            )
        return [str(row[0]) for row in rows]
