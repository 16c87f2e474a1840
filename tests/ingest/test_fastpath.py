"""The ingest fast path (raw stream reads, Arrow decoding) stores exactly what the row path stores.

Real Redis and chDB: entries go through the worker and the rows are read back
from ClickHouse, next to the rows ``enrich.decode_click`` makes of the same payloads.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from tests.ingest_helpers import expected, oracle, produce, produce_raw
from tracker.core import keys
from tracker.core.events import CLICK_COLUMNS, ClickEvent
from tracker.ingest import enrich
from tracker.ingest.worker import Worker
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse

UNICODE_UA = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148 Ünïcödé ☃ 😀 中文"


def event(i: int, **kw: Any) -> ClickEvent:
    base: dict[str, Any] = {
        "click_id": f"click-{i:06d}", "ts_ms": 1_764_000_000_000 + i, "brand_id": "brd_1", "campaign_id": "cmp_1",
        "influencer_id": "inf_1", "link_id": 7, "link_code": "abc", "visitor_hash": i, "country": "DE",
        "user_agent": UNICODE_UA, "referer": "https://www.instagram.com/", "utm": ("ig", "", "", "", ""), "hint": "",
    }
    base.update(kw)
    return ClickEvent(**base)


# Every kind of value the fast path must carry unchanged, and ones it leaves to the row path.
TRICKY: list[dict[str, Any]] = [
    {},
    {"user_agent": "", "referer": "", "country": "", "utm": ("", "", "", "", "")},
    {"user_agent": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"},
    {"user_agent": "facebookexternalhit/1.1"},
    {"hint": "head"},
    {"hint": "prefetch"},
    {"visitor_hash": 2**64 - 1, "link_id": 2**64 - 1},
    {"utm": ("😀 émoji", "a,b", "[x]", "q=1&r=2", "x y")},
    {"referer": "https://User:pw@Example.ORG:8443/p?q=1"},
    {"referer": "l.facebook.com/l.php?u=x"},
    {"brand_id": "brd_é", "link_code": "ÄÖ"},
    # Escaped by the encoder: the batch holding them goes through the row path.
    {"user_agent": 'Mozilla/5.0 "quoted" \\backslash\\'},
    {"utm": ('say "hi"', "back\\slash", "tab\tand\nnewline", "", "")},
    {"referer": "https://a.example/\x00"},
]


def stored_rows(ch: ClickHouse) -> list[tuple[Any, ...]]:
    """Every stored click, its time in epoch milliseconds."""
    columns = ", ".join("toUnixTimestamp64Milli(ts)" if c == "ts" else c for c in CLICK_COLUMNS)
    return ch.query(f"SELECT {columns} FROM clicks ORDER BY click_id")


def row_path_rows(events: list[ClickEvent]) -> list[tuple[Any, ...]]:
    """The rows the row path makes of these events, its time in epoch milliseconds."""
    rows = []
    for ev in events:
        row = enrich.click_row(ev)
        row[1] = (row[1] - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
        rows.append(tuple(row))
    return sorted(rows)


@pytest.mark.parametrize("batch_size", [1, 3, 1000])
def test_the_worker_stores_the_row_paths_rows(
    settings: Settings, ch: ClickHouse, redis_client: redis.Redis, batch_size: int
) -> None:
    events = [event(i, **kw) for i, kw in enumerate(TRICKY * 3)]
    produce(redis_client, events[:20])
    poison = produce_raw(redis_client, [b"not json", b'[1,"",1,"b","c","i",1,"L",1,"US","ua","","","","","","",""]'])
    produce(redis_client, events[20:])
    if batch_size > len(events):
        produce(redis_client, events[5:9])  # the same clicks again in the batch: stored once
    w = Worker(settings.with_(ingest_batch_size=batch_size), redis_client, ch, name="w1")
    assert w.drain() == len(events)
    got = stored_rows(ch)
    want = row_path_rows(events)
    assert [r[0] for r in got] == [r[0] for r in want]
    for g, e in zip(got, want, strict=True):
        assert g == e
    dead = [f[b"id"].decode() for _, f in redis_client.xrange(keys.DEAD_LETTER_STREAM)]
    assert dead == poison
    assert oracle(ch, expected(events)) == []
