"""Reading ranges: a read and its record land together, raw replies, reads whose range was not recorded."""

from __future__ import annotations

import pytest
import redis

from tests.ingest_helpers import expected, make_clicks, oracle, pending, produce, ranges, worker
from tracker.core import keys
from tracker.ingest import delivery
from tracker.ingest.worker import Worker, stream_stats
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse


def test_a_read_and_its_range_are_recorded_together_without_a_pending_list(
    settings: Settings, ch: ClickHouse, redis_client: redis.Redis
) -> None:
    ids = produce(redis_client, make_clicks(120))
    w = worker(settings, redis_client, ch, ingest_batch_size=50)
    w.start()
    assert w._read(block_ms=None) == 50
    # The buffer is full: the next read was sent ahead (its range is recorded, its reply unread).
    held, ahead = delivery.ranges(redis_client, keys.CLICK_STREAM)
    assert (held.start, held.first, held.end, held.n) == ("0-0", ids[0], ids[49], 50)
    assert (held.consumer, held.owner, held.attempts) == ("w1", w.lease.token, 0)
    assert (ahead.start, ahead.first, ahead.end, ahead.n) == (ids[49], ids[50], ids[99], 50)
    # NOACK: Redis keeps no per-entry pending list; the ranges are what is held.
    assert redis_client.xpending(keys.CLICK_STREAM, keys.INGEST_GROUP)["pending"] == 0
    st = stream_stats(redis_client, keys.CLICK_STREAM)
    assert (st["pending"], st["lag"], st["trim_below"]) == (100, 20, None)
    w._flush(force=True)
    w._wait_inflight()
    assert [r.start for r in delivery.ranges(redis_client, keys.CLICK_STREAM)] == [ids[49]]
    assert stream_stats(redis_client, keys.CLICK_STREAM)["trim_below"] == ids[49]
    assert w._read(block_ms=None) == 50  # the reply of the read sent ahead (which sends the next)
    w._flush(force=True)
    w._wait_inflight()
    assert w._read(block_ms=None) == 20
    w._flush(force=True)
    w._wait_inflight()
    assert (pending(redis_client), ranges(redis_client)) == (0, 0)
    assert ch.query("SELECT uniqExact(click_id), count() FROM clicks") == [(120, 120)]


def test_entries_read_without_a_recorded_range_are_finished_at_once(
    settings: Settings, ch: ClickHouse, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should the script that records a range fail after the read, nobody else could find its entries."""
    events = make_clicks(300)
    produce(redis_client, events)
    monkeypatch.setattr(delivery, "SEAL", "return redis.error_reply('ERR the range script failed')")
    w = worker(settings, redis_client, ch, ingest_batch_size=100)
    w.drain()
    monkeypatch.undo()
    assert oracle(ch, expected(events)) == []
    assert (pending(redis_client), ranges(redis_client)) == (0, 0)


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
