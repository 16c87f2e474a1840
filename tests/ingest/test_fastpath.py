"""The ingest fast path (raw stream reads, Arrow decoding) stores exactly what the row path stores.

Real Redis and chDB: entries go through the worker and the rows are read back
from ClickHouse, next to the rows ``enrich.decode_click`` makes of the same payloads.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from tests.ingest_helpers import expected, make_clicks, oracle, produce, produce_raw
from tracker.core import keys
from tracker.core.events import CLICK_COLUMNS, ClickEvent
from tracker.ingest import enrich
from tracker.ingest.worker import CLICKS, Entries, TableColumns, Worker, decode, range_token
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
    assert oracle(ch, expected(events)["ids"]) == []


def test_canonical_entries_take_the_arrow_path_and_others_the_row_path() -> None:
    canonical = [[f"1-{i}".encode(), [b"e", event(i).encode()]] for i in range(5)]
    rows, cols, poison = decode(CLICKS, Entries.from_raw(canonical))
    assert isinstance(cols, TableColumns) and not poison
    assert rows is None  # every entry is a row
    assert cols["click_id"] == [f"click-{i:06d}" for i in range(5)]
    escaped = [*canonical, [b"1-9", [b"e", event(9, user_agent='a "b"').encode()]]]
    rows, cols, poison = decode(CLICKS, Entries.from_raw(escaped))
    assert not isinstance(cols, TableColumns) and not poison
    assert rows is None and len(cols["click_id"]) == 6  # the column path
    bad = [*canonical, [b"1-8", [b"e", b"nope"]], [b"1-7", [b"x", b"1"]], [b"1-6", None]]
    rows, cols, poison = decode(CLICKS, Entries.from_raw(bad))
    assert rows == list(range(5)) and [p[0] for p in poison] == ["1-8", "1-7", "1-6"]
    good = CLICKS.arrow(decode(CLICKS, Entries.from_raw(canonical))[1])
    assert good.equals(CLICKS.arrow(decode(CLICKS, Entries.from_raw(bad))[1]))


@pytest.mark.parametrize(
    ("raw", "values", "plain"),
    [
        ([[b"1-0", [b"e", b"x"]], [b"1-1", [b"e", b"y"]]], [b"x", b"y"], True),
        ([[b"1-0", [b"e", b"x", b"r", b"1"]]], [[b"e", b"x", b"r", b"1"]], False),
        ([[b"1-0", [b"e", b"x"]], [b"1-1", [b"r", b"1", b"e", b"y"]]], [b"x", [b"r", b"1", b"e", b"y"]], False),
        ([[b"1-0", [b"x", b"1"]]], [[b"x", b"1"]], False),
        ([[b"1-0", None], [b"1-1", [b"e", b"y"]]], [[], b"y"], False),
        ([[b"1-0", []]], [[]], False),
    ],
)
def test_entries_keep_a_plain_entry_as_its_payload_and_any_other_as_its_fields(
    raw: list[Any], values: list[Any], plain: bool
) -> None:
    entries = Entries.from_raw(raw)
    assert entries.values == values
    assert entries.plain() is plain
    assert [entries.id(i) for i in range(len(entries))] == [e[0].decode() for e in raw]
    assert [entries.fields(i) for i in range(len(entries))] == [list(e[1] or []) for e in raw]


def test_the_raw_read_sees_replays_and_extra_fields(
    settings: Settings, ch: ClickHouse, redis_client: redis.Redis
) -> None:
    events = make_clicks(300)
    produce(redis_client, events[:200])
    w = Worker(settings, redis_client, ch, name="w1")
    w.drain()
    produce(redis_client, events[150:], replay=True)  # 50 already landed, 100 new
    redis_client.xadd(keys.CLICK_STREAM, {"e": events[0].encode(), "trace": "abc"})  # landed too: skipped
    w2 = Worker(settings, redis_client, ch, name="w2")
    assert w2.drain() == 101  # an entry with another field is no replay: its duplicate row folds (FINAL)
    assert ch.query("SELECT count() FROM clicks FINAL") == [(300,)]


def test_the_batch_token_names_the_ranges_and_nothing_else() -> None:
    """Equal ranges give equal tokens (a retried insert is dropped); any other range, another token."""
    from tracker.ingest.delivery import Range

    def rng(start: str, end: str, n: int = 10) -> Range:
        return Range(keys.CLICK_STREAM, start, end, end, n, "w1", "token-a")

    one = range_token(keys.CLICK_STREAM, [rng("1-0", "5-0"), rng("9-0", "12-0")])
    again = Range(keys.CLICK_STREAM, "1-0", "5-0", "5-0", 10, "w2", "token-b", attempts=3)  # owner is no part
    assert range_token(keys.CLICK_STREAM, [again, rng("9-0", "12-0")]) == one
    assert one.startswith(f"{keys.CLICK_STREAM}:5-0:20:")
    others = [
        range_token(keys.CLICK_STREAM, [rng("1-0", "5-0")]),
        range_token(keys.CLICK_STREAM, [rng("1-0", "5-1"), rng("9-0", "12-0")]),
        range_token(keys.CONVERSION_STREAM, [rng("1-0", "5-0"), rng("9-0", "12-0")]),
        range_token(keys.CLICK_STREAM, [], ["1-0", "5-0"]),
    ]
    assert len({one, *others}) == 5
