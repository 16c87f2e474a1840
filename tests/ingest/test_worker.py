"""The ingest loop against real Redis and chDB: drain, run until stopped, trimming, Redis refusing commands."""

from __future__ import annotations

import threading

import pytest
import redis

from tests.ingest_helpers import expected, make_clicks, oracle, pending, produce, ranges, wait_until, worker
from tracker.core import keys
from tracker.ingest.worker import Worker, stream_stats
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse


def test_drain_inserts_every_click_once(settings: Settings, ch: ClickHouse, redis_client: redis.Redis) -> None:
    events = make_clicks(3000)
    produce(redis_client, events)
    w = worker(settings, redis_client, ch, ingest_batch_size=1000)
    assert w.drain() == 3000
    assert w.batches == 3
    assert oracle(ch, expected(events)) == []
    exp = expected(events)
    assert ch.query("SELECT sum(clicks), sum(bot_clicks) FROM clicks_daily")[0] == (exp["clicks"], exp["bot_clicks"])
    assert pending(redis_client) == 0
    assert ranges(redis_client) == 0


def test_duplicates_inside_a_batch_count_once(settings: Settings, ch: ClickHouse, redis_client: redis.Redis) -> None:
    events = make_clicks(300)
    produce(redis_client, events)
    produce(redis_client, events[:100])  # the same clicks again (a redirect retried its XADD)
    worker(settings, redis_client, ch).drain()
    assert oracle(ch, expected(events)) == []
    assert pending(redis_client) == 0


def test_stream_is_trimmed_below_what_is_still_needed(
    settings: Settings, ch: ClickHouse, redis_client: redis.Redis
) -> None:
    events = make_clicks(3000)
    produce(redis_client, events[:2000])
    # Another worker holds the first 10 entries, not inserted yet: they and everything after stay.
    slow = worker(settings, redis_client, ch, name="slow", ingest_batch_size=10)
    slow.start()
    slow._read(block_ms=None)
    w = worker(settings, redis_client, ch)
    w.drain()
    assert redis_client.xlen(keys.CLICK_STREAM) == 2000
    slow._shutdown()  # finishes what it holds (its full buffer sent the next read ahead: that too)
    produce(redis_client, events[2000:])
    w.drain()
    assert oracle(ch, expected(events)) == []
    assert redis_client.xlen(keys.CLICK_STREAM) < 1000
    st = stream_stats(redis_client, keys.CLICK_STREAM)
    assert st["pending"] == 0
    assert st["lag"] == 0


def test_entries_another_group_still_needs_are_not_trimmed(
    settings: Settings, ch: ClickHouse, redis_client: redis.Redis
) -> None:
    events = make_clicks(2000)
    produce(redis_client, events)
    redis_client.xgroup_create(keys.CLICK_STREAM, "audit", id="0")
    held = redis_client.xreadgroup("audit", "a1", {keys.CLICK_STREAM: ">"}, count=10)
    worker(settings, redis_client, ch).drain()
    assert redis_client.xlen(keys.CLICK_STREAM) == 2000  # "audit" holds entries: nothing goes
    redis_client.xack(keys.CLICK_STREAM, "audit", *[i for i, _ in held[0][1]])
    more = redis_client.xreadgroup("audit", "a1", {keys.CLICK_STREAM: ">"}, count=1500)
    redis_client.xack(keys.CLICK_STREAM, "audit", *[i for i, _ in more[0][1]])
    worker(settings, redis_client, ch).drain()
    # Below what "audit" has read and acknowledged only (approximate trimming: whole nodes).
    assert 490 <= redis_client.xlen(keys.CLICK_STREAM) < 1000
    assert oracle(ch, expected(events)) == []


def test_run_loop_ingests_until_stopped(settings: Settings, ch: ClickHouse, redis_client: redis.Redis) -> None:
    events = make_clicks(2000)
    w = worker(settings, redis_client, ch, ingest_batch_size=500)
    stop = threading.Event()
    thread = threading.Thread(target=w.run, args=(stop,))
    thread.start()
    try:
        produce(redis_client, events[:1000])
        wait_until(lambda: ch.query("SELECT count() FROM clicks")[0][0] >= 1000, what="the first clicks landing")
        produce(redis_client, events[1000:])
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    # Stopping flushes and acknowledges what was read; a drain picks up anything not yet read.
    worker(settings, redis_client, ch).drain()
    assert oracle(ch, expected(events)) == []
    assert pending(redis_client) == 0


def test_the_run_loop_outlives_a_refused_command(
    settings: Settings, ch: ClickHouse, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tracker.ingest import worker as ingest

    monkeypatch.setattr(ingest, "BACKOFF_MAX_SECONDS", 0.05)
    events = make_clicks(500)
    w = worker(settings, redis_client, ch)
    original = Worker._read
    refusals = {"n": 0}

    def refusing(self: Worker, block_ms: int | None) -> int:
        if refusals["n"] < 3:
            refusals["n"] += 1
            raise redis.ResponseError("OOM command not allowed when used memory > 'maxmemory'.")
        return original(self, block_ms)

    monkeypatch.setattr(Worker, "_read", refusing)
    stop = threading.Event()
    thread = threading.Thread(target=w.run, args=(stop,))
    thread.start()
    try:
        produce(redis_client, events)
        wait_until(lambda: ch.query("SELECT count() FROM clicks")[0][0] >= 500, what="ingest after the refusals")
    finally:
        stop.set()
        thread.join(30)
    assert refusals["n"] == 3
    assert oracle(ch, expected(events)) == []


@pytest.mark.parametrize("months", [13, 1, 25])
def test_click_retention_is_applied_after_migrations(ch: ClickHouse, months: int) -> None:
    from tracker.storage import migrate

    # The daily rollup is a projection of clicks: it expires with its rows.
    tables = ("clicks", "report_daily_uniques")
    assert migrate.retention(ch) == dict.fromkeys(tables, 13)
    changed = migrate.migrate(ch, retention_months=months)
    assert changed == []  # no migration pending; only the TTL may change
    assert migrate.retention(ch) == dict.fromkeys(tables, months)
    assert migrate.apply_retention(ch, months) == []  # unchanged: no ALTER
    engine = ch.query("SELECT engine_full FROM system.tables WHERE database = {d:String} AND name = 'conversions'",
                      {"d": ch.database})[0][0]
    assert "TTL" not in engine  # conversions are never expired
