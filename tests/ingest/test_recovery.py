"""Recovery: batches cut short, dead workers' ranges, poison entries, rows that keep failing."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from tests.ingest_helpers import (
    Crash,
    die_at,
    expected,
    make_clicks,
    oracle,
    pending,
    produce,
    produce_raw,
    ranges,
    worker,
)
from tracker.core import keys
from tracker.ingest import delivery
from tracker.ingest.worker import Worker
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "not JSON"),
        (b'{"a": 1}', "wrong shape"),
        (b"[2]", "wrong shape"),
        (b'[1,"",1,"b","c","i",1,"L",1,"US","ua","",  "","","","","",""]', "bad click id"),
        (b'[1,"cid",1,"b","c","i",1,"L",-1,"US","ua","","","","","","",""]', "bad visitor hash"),
        (b'[1,"cid",5,"b","c","i",1,"L",1,"US","ua","","","","","","",""]', "outside the years"),
        (b'[1,"cid",1700000000000,"b","c","i",1,"L",1,"US",7,"","","","","","",""]', "non-string"),
    ],
)
def test_poison_entries_are_dead_lettered_and_the_rest_delivered(
    settings: Settings, ch: ClickHouse, redis_client: redis.Redis, payload: bytes, reason: str
) -> None:
    events = make_clicks(100)
    produce(redis_client, events[:50])
    [bad_id] = produce_raw(redis_client, [payload])
    produce(redis_client, events[50:])
    w = worker(settings, redis_client, ch, ingest_batch_size=40)
    w.drain()
    assert oracle(ch, expected(events)) == []
    dead = redis_client.xrange(keys.DEAD_LETTER_STREAM)
    assert len(dead) == 1
    fields = dead[0][1]
    assert fields[b"id"].decode() == bad_id
    assert fields[b"stream"].decode() == keys.CLICK_STREAM
    assert reason in fields[b"reason"].decode()
    assert fields[b"e"] == payload
    assert pending(redis_client) == 0
    assert w.dead_lettered == 1


@pytest.mark.parametrize("where", ["before_decode", "before_insert", "after_insert"])
def test_a_batch_cut_short_is_finished_exactly_once(
    settings: Settings, ch: ClickHouse, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """A worker that dies at a step leaves its ranges held; its successor finishes them, each row once."""
    events = make_clicks(2500)
    produce(redis_client, events)
    w = worker(settings, redis_client, ch, ingest_batch_size=1000)
    calls = {"n": 0}
    if where == "before_decode":
        target, method = Worker, "_process"
    elif where == "before_insert":
        target, method = ch, "insert_arrow"
    else:
        target, method = Worker, "_finish"
    original = getattr(target, method)

    def dying(*args: Any, **kw: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:  # the second batch dies at this step
            raise Crash(where)
        return original(*args, **kw)

    monkeypatch.setattr(target, method, dying)
    with pytest.raises(Crash):
        w.drain()
    # A dead process has no threads left: let the batch the dead worker was inserting in the
    # background finish before the successor starts, as it would have before the death. Left
    # running, it finishes ranges under the successor's feet, which no real crash can do.
    w._close_pool()
    monkeypatch.setattr(target, method, original)
    assert pending(redis_client) >= 1000
    # The successor takes the same consumer name (a restarted worker) and finishes its ranges first.
    worker(settings, redis_client, ch, name="w1").drain()
    assert oracle(ch, expected(events)) == []
    assert pending(redis_client) == 0
    assert ranges(redis_client) == 0


def test_entries_of_a_dead_worker_are_claimed(
    settings: Settings, ch: ClickHouse, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = make_clicks(1500)
    produce(redis_client, events)
    dead = worker(settings, redis_client, ch, name="dead", ingest_batch_size=1000)
    die_at(monkeypatch, dead, Worker, "_finish", "after insert")
    time.sleep(0.25)
    live = worker(settings, redis_client, ch, name="other", ingest_claim_idle_seconds=0.2)
    live.drain()
    assert pending(redis_client) == 1500  # the lease of "dead" has not expired: it may still be working
    redis_client.delete(keys.heartbeat("dead"))  # now it has
    other = worker(settings, redis_client, ch, name="other", ingest_claim_idle_seconds=0.2)
    other.drain()
    assert oracle(ch, expected(events)) == []
    assert pending(redis_client) == 0


def test_a_dead_lettered_entry_is_not_sent_twice_when_its_range_is_resumed(
    settings: Settings, ch: ClickHouse, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = make_clicks(60)
    produce(redis_client, events[:30])
    [bad] = produce_raw(redis_client, [b"not json"])
    produce(redis_client, events[30:])
    w = worker(settings, redis_client, ch)
    die_at(monkeypatch, w, ch, "insert_arrow", "before the insert")
    [held] = delivery.ranges(redis_client, keys.CLICK_STREAM)
    assert held.skip == {bad}
    worker(settings, redis_client, ch).drain()
    assert oracle(ch, expected(events)) == []
    assert [f[b"id"].decode() for _, f in redis_client.xrange(keys.DEAD_LETTER_STREAM)] == [bad]
    assert ranges(redis_client) == 0


def test_a_row_clickhouse_keeps_refusing_is_isolated_and_dead_lettered(
    settings: Settings, ch: ClickHouse, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One bad row never stalls the others: the batch is split until it is alone, then dead-lettered."""
    events = make_clicks(200)
    ids = produce(redis_client, events)
    bad = events[123].click_id
    original = ch.insert_arrow

    def refusing(table: str, data: Any, **kw: Any) -> Any:
        if table == "clicks" and bad in data.column("click_id").to_pylist():
            raise ValueError(f"cannot encode click {bad}")
        return original(table, data, **kw)

    monkeypatch.setattr(ch, "insert_arrow", refusing)
    w = worker(settings, redis_client, ch, ingest_max_deliveries=2)
    w.drain()
    good = expected(ev for ev in events if ev.click_id != bad)
    assert oracle(ch, good) == []
    [dead] = redis_client.xrange(keys.DEAD_LETTER_STREAM)
    assert dead[1][b"id"].decode() == ids[123]
    assert b"cannot encode" in dead[1][b"reason"]
    assert w.dead_lettered == 1
    assert (pending(redis_client), ranges(redis_client)) == (0, 0)


def test_a_range_that_crashes_every_worker_is_isolated_after_the_delivery_limit(
    settings: Settings, ch: ClickHouse, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row that kills the process at each insert: each restart counts an attempt, then the range is split."""
    events = make_clicks(40)
    ids = produce(redis_client, events)
    bad = events[7].click_id
    original = ch.insert_arrow

    def killing(table: str, data: Any, **kw: Any) -> Any:
        if bad in data.column("click_id").to_pylist():
            raise Crash("the insert took the process down")
        return original(table, data, **kw)

    monkeypatch.setattr(ch, "insert_arrow", killing)
    crashes = 0
    for _ in range(60):  # a crash loop: each restart resumes the range and counts an attempt
        w = worker(settings, redis_client, ch, ingest_max_deliveries=2)
        try:
            w.drain()
            break
        except Crash:
            crashes += 1
        finally:
            w._close_pool()
    # Three deliveries of the whole range, then of each half holding the row, down to the row alone.
    assert 3 <= crashes < 60
    assert oracle(ch, expected(ev for ev in events if ev.click_id != bad)) == []
    [dead] = redis_client.xrange(keys.DEAD_LETTER_STREAM)
    assert dead[1][b"id"].decode() == ids[7]
    assert (pending(redis_client), ranges(redis_client)) == (0, 0)
