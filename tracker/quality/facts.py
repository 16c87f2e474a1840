"""The click behind each click-attributed conversion, copied into ``conversion_clicks``.

A postback is attributed from its click id alone (the click may not be ingested yet), so
the click's country, device, referer, UTM values, visitor and time reach the conversion
later: ``fill`` finds the click-attributed conversions of a brand whose click is not copied
yet and copies the clicks that ClickHouse has. The click id carries its link and time, so
the lookup reads only the days and links of those clicks (the sort key of ``clicks``).
A click not ingested yet stays missing and is tried again on the next fill.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tracker.core.clickid import ClickIds
from tracker.storage.clickhouse import ClickHouse

# Bound parameters travel in the URL of an HTTP ClickHouse: ids go in slices.
IDS_PER_QUERY = 2000
COLUMNS = (
    "brand_id", "click_id", "ts", "link_id", "visitor_hash", "country", "device", "referer_host", "utm_source",
    "utm_medium", "utm_campaign",
)

_MISSING = (
    "SELECT click_id, link_id, occurred_at FROM conversions FINAL WHERE brand_id = {b:String} "
    "AND attribution = 'click' AND click_id != '' "
    "AND click_id NOT IN (SELECT click_id FROM conversion_clicks WHERE brand_id = {b:String})"
)
_COPY = (
    f"INSERT INTO conversion_clicks ({', '.join(COLUMNS)}) "
    f"SELECT {', '.join(COLUMNS)} FROM clicks WHERE brand_id = {{b:String}} "
    "AND ts >= {t0:DateTime64(3, 'UTC')} AND ts <= {t1:DateTime64(3, 'UTC')} "
    "AND link_id IN {links:Array(UInt64)} AND click_id IN {ids:Array(String)} LIMIT 1 BY click_id"
)
_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
_LATEST = datetime(2199, 12, 31, tzinfo=UTC)


def _time(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


@dataclass(frozen=True)
class Filled:
    missing: int  # click-attributed conversions whose click is still not in ClickHouse
    earliest: datetime | None  # the earliest occurred_at among the conversions looked up


def fill(ch: ClickHouse, click_ids: ClickIds, brand_id: str) -> Filled:
    """Copy the clicks of the brand's click-attributed conversions that have none yet."""
    missing = ch.query_dicts(_MISSING, {"b": brand_id})
    if not missing:
        return Filled(0, None)
    for i in range(0, len(missing), IDS_PER_QUERY):
        part = missing[i : i + IDS_PER_QUERY]
        times: list[datetime] = []
        for row in part:
            ref = click_ids.parse(row["click_id"])
            if ref is None:  # not one of ours (imported data): look in the whole range
                times = [_EARLIEST, _LATEST]
                break
            times.append(datetime.fromtimestamp(ref.ts_ms / 1000, UTC))
        params: dict[str, Any] = {
            "b": brand_id,
            "t0": _time(min(times) - timedelta(seconds=1)),
            "t1": _time(max(times) + timedelta(seconds=1)),
            "links": sorted({int(r["link_id"]) for r in part}),
            "ids": [str(r["click_id"]) for r in part],
        }
        ch.command(_COPY, params)
    return Filled(len(ch.query_dicts(_MISSING, {"b": brand_id})), min(r["occurred_at"] for r in missing))
