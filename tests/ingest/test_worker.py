"""Ingest worker against real Redis and chDB: batches, duplicates, poison, recovery, trimming."""

from __future__ import annotations

import threading
import time
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
import redis

from tests.ingest_helpers import expected, make_clicks, oracle, produce, produce_raw
from tracker.core import keys
from tracker.core.events import CONVERSION_COLUMNS, encode_conversion
from tracker.ingest import delivery
from tracker.ingest.worker import Worker, stream_stats
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse


def worker(settings: Settings, redis_client: redis.Redis, ch: ClickHouse, name: str = "w1", **kw: Any) -> Worker:
    return Worker(settings.with_(**kw) if kw else settings, redis_client, ch, name=name)


def pending(r: redis.Redis, stream: str = keys.CLICK_STREAM) -> int:
    """Entries read by a worker and not yet in ClickHouse (held in ranges, or legacy pending)."""
    return int(stream_stats(r, stream)["pending"])


def ranges(r: redis.Redis, stream: str = keys.CLICK_STREAM) -> int:
    return len(delivery.ranges(r, stream))


def test_drain_inserts_every_click_once(settings: Settings, ch: ClickHouse, redis_client: redis.Redis) -> None:
    events = make_clicks(3000)
    produce(redis_client, events)
    w = worker(settings, redis_client, ch, ingest_batch_size=1000)
    assert w.drain() == 3000
    assert w.batches == 3
    assert oracle(ch, expected(events)["ids"]) == []
    exp = expected(events)
    assert ch.query("SELECT sum(clicks), sum(bot_clicks) FROM clicks_daily")[0] == (exp["clicks"], exp["bot_clicks"])
    assert pending(redis_client) == 0
    assert ranges(redis_client) == 0


def test_oracle_sees_a_double_delivery(settings: Settings, ch: ClickHouse, redis_client: redis.Redis) -> None:
    """The oracle can fail: the same clicks inserted again under another token are counted twice."""
    from tracker.core.events import CLICK_COLUMNS
    from tracker.ingest import enrich

    events = make_clicks(200)
    produce(redis_client, events)
    worker(settings, redis_client, ch).drain()
    ids = expected(events)["ids"]
    assert oracle(ch, ids) == []
    ch.insert("clicks", [enrich.click_row(ev) for ev in events[:50]], CLICK_COLUMNS, dedup_token="another")
    problems = oracle(ch, ids)
    assert any("250 rows" in p for p in problems)
    assert any("duplicate" in p for p in problems)


def test_same_token_is_dropped_in_table_and_rollup(
    settings: Settings, ch: ClickHouse, redis_client: redis.Redis
) -> None:
    from tracker.core.events import CLICK_COLUMNS
    from tracker.ingest import enrich

    events = make_clicks(100)
    rows = [enrich.click_row(ev) for ev in events]
    token = "clicks:1-0:100:abc"
    ch.insert("clicks", rows, CLICK_COLUMNS, dedup_token=token)
    ch.insert("clicks", rows, CLICK_COLUMNS, dedup_token=token)
    assert oracle(ch, expected(events)["ids"]) == []


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
    assert oracle(ch, expected(events)["ids"]) == []
    dead = redis_client.xrange(keys.DEAD_LETTER_STREAM)
    assert len(dead) == 1
    fields = dead[0][1]
    assert fields[b"id"].decode() == bad_id
    assert fields[b"stream"].decode() == keys.CLICK_STREAM
    assert reason in fields[b"reason"].decode()
    assert fields[b"e"] == payload
    assert pending(redis_client) == 0
    assert w.dead_lettered == 1


def test_duplicates_inside_a_batch_count_once(settings: Settings, ch: ClickHouse, redis_client: redis.Redis) -> None:
    events = make_clicks(300)
    produce(redis_client, events)
    produce(redis_client, events[:100])  # the same clicks again (a redirect retried its XADD)
    worker(settings, redis_client, ch).drain()
    assert oracle(ch, expected(events)["ids"]) == []
    assert pending(redis_client) == 0


def test_replayed_clicks_already_ingested_are_dropped(
    settings: Settings, ch: ClickHouse, redis_client: redis.Redis
) -> None:
    events = make_clicks(200)
    produce(redis_client, events[:150])
    worker(settings, redis_client, ch).drain()
    # The spool replays 100 clicks whose first XADD had landed, and 50 that never did.
    produce(redis_client, events[50:], replay=True)
    worker(settings, redis_client, ch).drain()
    assert oracle(ch, expected(events)["ids"]) == []


class Crash(BaseException):  # not caught by the worker, like a kill
    pass


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
    assert oracle(ch, expected(events)["ids"]) == []
    assert pending(redis_client) == 0
    assert ranges(redis_client) == 0


def _conversion(order: int) -> dict[str, Any]:
    row: dict[str, Any] = {c: "" for c in CONVERSION_COLUMNS}
    row.update(
        brand_id="brd_x", order_id=f"o-{order}", version=1, conversion_id=f"cnv_{order}", status="approved",
        currency="EUR", amount=Decimal("10.00"), refunded_amount=Decimal(0), original_currency="EUR",
        original_amount=Decimal("10.00"), original_refunded_amount=Decimal(0), fx_rate=Decimal(1),
        commission=Decimal("1.00"), attributed=1, attribution="coupon", link_id=order,
        occurred_at="2026-11-20T10:00:00+00:00", created_at="2026-11-20T10:00:01+00:00",
        updated_at="2026-11-20T10:00:01+00:00",
    )
    return row


@pytest.mark.parametrize("stream", [keys.CLICK_STREAM, keys.CONVERSION_STREAM])
def test_a_token_that_outlived_its_part_does_not_lose_the_batch(
    settings: Settings, ch: ClickHouse, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch, stream: str
) -> None:
    """A non-replicated MergeTree records an insert's token before it commits the part.

    A process killed in between (embedded chDB) keeps the token and loses the rows, so a
    retry with the same token would be dropped. Here the first batch lands, the worker dies
    before it drops its ranges, and the batch's rows are then deleted (the token stays in the
    deduplication log): the successor must find them missing by key and insert them again, once.
    """
    table = "clicks" if stream == keys.CLICK_STREAM else "conversions"
    if table == "clicks":
        events = make_clicks(2500)
        produce(redis_client, events)
    else:
        for order in range(40):
            redis_client.xadd(keys.CONVERSION_STREAM, {"e": encode_conversion(_conversion(order))})
    w = worker(settings, redis_client, ch, ingest_batch_size=1000)

    def dying(*args: Any, **kw: Any) -> Any:
        raise Crash("after the insert, before the ranges are dropped")

    monkeypatch.setattr(Worker, "_finish", dying)
    with pytest.raises(Crash):
        w.drain()
    w._close_pool()
    monkeypatch.undo()
    first = ch.query(f"SELECT count() FROM {table}")[0][0]
    assert first > 0
    ch.command(f"ALTER TABLE {table} DELETE WHERE 1 SETTINGS mutations_sync = 2")
    assert ch.query(f"SELECT count() FROM {table}")[0][0] == 0

    worker(settings, redis_client, ch, name="w1").drain()

    if table == "clicks":
        assert oracle(ch, expected(events)["ids"]) == []
    else:
        rows = ch.query("SELECT order_id, count() FROM conversions GROUP BY order_id")
        assert sorted(rows) == sorted((f"o-{n}", 1) for n in range(40))
    assert pending(redis_client, stream) == 0
    assert ranges(redis_client, stream) == 0


def test_entries_of_a_dead_worker_are_claimed(
    settings: Settings, ch: ClickHouse, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = make_clicks(1500)
    produce(redis_client, events)
    dead = worker(settings, redis_client, ch, name="dead", ingest_batch_size=1000)
    original = Worker._finish

    def dying(self: Worker, batch: Any) -> None:
        raise Crash("after insert")

    monkeypatch.setattr(Worker, "_finish", dying)
    with pytest.raises(Crash):
        dead.drain()
    dead._close_pool()
    monkeypatch.setattr(Worker, "_finish", original)
    time.sleep(0.25)
    live = worker(settings, redis_client, ch, name="other", ingest_claim_idle_seconds=0.2)
    live.drain()
    assert pending(redis_client) == 1500  # the lease of "dead" has not expired: it may still be working
    redis_client.delete(keys.heartbeat("dead"))  # now it has
    other = worker(settings, redis_client, ch, name="other", ingest_claim_idle_seconds=0.2)
    other.drain()
    assert oracle(ch, expected(events)["ids"]) == []
    assert pending(redis_client) == 0


def test_a_restarted_worker_takes_its_dead_predecessors_name(
    settings: Settings, ch: ClickHouse, redis_client: redis.Redis
) -> None:
    first = Worker(settings, redis_client, ch)
    first.start()
    # Same process: the holder's pid is ours, so the name counts as left by a dead process.
    second = Worker(settings, redis_client, ch)
    second.start()
    assert second.name == first.name
    # A name held by a live other process is not taken.
    import os
    import socket

    redis_client.set(keys.heartbeat(f"{socket.gethostname()}-0"), f"{os.getppid()}:x", ex=30)
    third = Worker(settings, redis_client, ch)
    third.start()
    assert third.name == f"{socket.gethostname()}-1"


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
    assert oracle(ch, expected(events)["ids"]) == []
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
    assert oracle(ch, expected(events)["ids"]) == []


def test_conversions_are_typed_and_versions_deduplicated(
    settings: Settings, ch: ClickHouse, redis_client: redis.Redis
) -> None:
    base = {c: "" for c in CONVERSION_COLUMNS}
    base.update(
        brand_id="brd_x", order_id="o-1", version=1, conversion_id="cnv_1", status="approved", currency="EUR",
        amount=Decimal("49.90"), refunded_amount=Decimal(0), original_currency="USD",
        original_amount=Decimal("54.00"), original_refunded_amount=Decimal(0), fx_rate=Decimal("0.92407407"),
        commission=Decimal("4.99"), attributed=1, attribution="click", link_id=7,
        occurred_at="2026-11-20T10:00:00+00:00", created_at="2026-11-20T10:00:01+00:00",
        updated_at="2026-11-20T10:00:01+00:00",
    )
    refunded = {**base, "version": 2, "status": "refunded", "refunded_amount": Decimal("49.90"),
                "commission": Decimal(0)}
    cols = "version, status, amount, refunded_amount, fx_rate, commission, occurred_at"
    for row in (base, base):  # the first version delivered twice
        redis_client.xadd(keys.CONVERSION_STREAM, {"e": encode_conversion(row)})
    worker(settings, redis_client, ch).drain()
    assert ch.query(f"SELECT {cols} FROM conversions") == [
        (1, "approved", Decimal("49.90"), Decimal(0), Decimal("0.92407407"), Decimal("4.99"),
         datetime(2026, 11, 20, 10)),
    ]
    redis_client.xadd(keys.CONVERSION_STREAM, {"e": encode_conversion(refunded)})
    worker(settings, redis_client, ch).drain()
    assert ch.query(f"SELECT {cols} FROM conversions FINAL") == [
        (2, "refunded", Decimal("49.90"), Decimal("49.90"), Decimal("0.92407407"), Decimal(0),
         datetime(2026, 11, 20, 10)),
    ]
    assert pending(redis_client, keys.CONVERSION_STREAM) == 0


def test_run_loop_ingests_until_stopped(settings: Settings, ch: ClickHouse, redis_client: redis.Redis) -> None:
    events = make_clicks(2000)
    w = worker(settings, redis_client, ch, ingest_batch_size=500)
    stop = threading.Event()
    thread = threading.Thread(target=w.run, args=(stop,))
    thread.start()
    try:
        produce(redis_client, events[:1000])
        deadline = time.monotonic() + 20
        while ch.query("SELECT count() FROM clicks")[0][0] < 1000 and time.monotonic() < deadline:
            time.sleep(0.05)
        produce(redis_client, events[1000:])
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    # Stopping flushes and acknowledges what was read; a drain picks up anything not yet read.
    worker(settings, redis_client, ch).drain()
    assert oracle(ch, expected(events)["ids"]) == []
    assert pending(redis_client) == 0


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


def test_embedded_app_ingests_in_the_background(settings: Settings, ch: ClickHouse, redis_client: redis.Redis) -> None:
    from starlette.testclient import TestClient

    from tracker.app import create_app

    events = make_clicks(500)
    app = create_app(settings.with_(embedded=True, ingest_batch_seconds=0.1))
    with TestClient(app) as client:
        produce(redis_client, events)
        deadline = time.monotonic() + 20
        while ch.query("SELECT sum(clicks) + sum(bot_clicks) FROM clicks_daily")[0][0] < 500:
            assert time.monotonic() < deadline, "clicks did not reach the rollup"
            time.sleep(0.05)
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        ingest = ready.json()["checks"]["ingest"]
        assert ingest["streams"][keys.CLICK_STREAM]["pending"] == 0
        assert ingest["worker"]["rows_inserted"] == 500
        assert "problem" not in ingest
    assert oracle(ch, expected(events)["ids"]) == []


def test_a_replay_waits_for_an_older_entry_another_worker_holds(
    settings: Settings, ch: ClickHouse, redis_client: redis.Redis
) -> None:
    """The original XADD of a replayed click is in another worker's unfinished batch."""
    events = make_clicks(50)
    produce(redis_client, events)
    redis_client.xgroup_create(keys.CLICK_STREAM, keys.INGEST_GROUP, id="0", mkstream=True)
    slow = worker(settings, redis_client, ch, name="slow")
    slow.start()
    slow._read(block_ms=None)  # holds all 50 originals, not inserted yet
    produce(redis_client, events[:10], replay=True)
    fast = worker(settings, redis_client, ch, name="fast")
    done = threading.Event()

    def replay() -> None:
        fast.drain()
        done.set()

    thread = threading.Thread(target=replay, daemon=True)
    thread.start()
    time.sleep(0.5)
    assert not done.is_set()  # waiting for the slow worker's older entries
    slow._flush(force=True)
    slow._wait_inflight()
    thread.join(20)
    assert done.is_set()
    assert oracle(ch, expected(events)["ids"]) == []
    assert pending(redis_client) == 0


def test_a_worker_whose_lease_lapsed_does_not_insert(
    settings: Settings, ch: ClickHouse, redis_client: redis.Redis
) -> None:
    """A stall past the heartbeat: others may claim the entries, so the stalled worker backs out."""
    from tracker.ingest.worker import LeaseLost

    events = make_clicks(300)
    produce(redis_client, events)
    stalled = worker(settings, redis_client, ch, name="stalled")
    stalled.start()
    stalled._read(block_ms=None)
    redis_client.delete(keys.heartbeat("stalled"))  # its lease expired during the stall
    stalled._flush(force=True)
    with pytest.raises(LeaseLost):
        stalled._wait_inflight()
    assert ch.query("SELECT count() FROM clicks")[0][0] == 0
    assert pending(redis_client) == 300
    time.sleep(0.25)
    worker(settings, redis_client, ch, name="other", ingest_claim_idle_seconds=0.2).drain()
    assert oracle(ch, expected(events)["ids"]) == []
    assert pending(redis_client) == 0


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
    assert (held.consumer, held.owner, held.attempts) == ("w1", w._token, 0)
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


def test_a_dead_lettered_entry_is_not_sent_twice_when_its_range_is_resumed(
    settings: Settings, ch: ClickHouse, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = make_clicks(60)
    produce(redis_client, events[:30])
    [bad] = produce_raw(redis_client, [b"not json"])
    produce(redis_client, events[30:])
    w = worker(settings, redis_client, ch)

    def dying(*args: Any, **kw: Any) -> Any:
        raise Crash("before the insert")

    monkeypatch.setattr(ch, "insert_arrow", dying)
    with pytest.raises(Crash):
        w.drain()
    w._close_pool()
    monkeypatch.undo()
    [held] = delivery.ranges(redis_client, keys.CLICK_STREAM)
    assert held.skip == {bad}
    worker(settings, redis_client, ch).drain()
    assert oracle(ch, expected(events)["ids"]) == []
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
    good = expected(events)["ids"] - {bad}
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
    assert oracle(ch, expected(events)["ids"] - {bad}) == []
    [dead] = redis_client.xrange(keys.DEAD_LETTER_STREAM)
    assert dead[1][b"id"].decode() == ids[7]
    assert (pending(redis_client), ranges(redis_client)) == (0, 0)


def test_entries_pending_from_the_ingest_before_ranges_are_finished_once(
    settings: Settings, ch: ClickHouse, redis_client: redis.Redis
) -> None:
    """An upgrade mid-flight: entries an old worker read (pending list) and may have inserted."""
    from tracker.core.events import CLICK_COLUMNS
    from tracker.ingest import enrich

    events = make_clicks(300)
    produce(redis_client, events)
    redis_client.xgroup_create(keys.CLICK_STREAM, keys.INGEST_GROUP, id="0", mkstream=True)
    old = redis_client.xreadgroup(keys.INGEST_GROUP, "old-1", {keys.CLICK_STREAM: ">"}, count=100)
    assert len(old[0][1]) == 100
    # It inserted half of them before it died, and left its manifest behind.
    ch.insert("clicks", [enrich.click_row(ev) for ev in events[:50]], CLICK_COLUMNS, dedup_token="old")
    redis_client.sadd(keys.legacy_ingest_batches(keys.CLICK_STREAM), "1-0")
    redis_client.hset(keys.legacy_ingest_batch(keys.CLICK_STREAM, "1-0"), "rows", "1-0")
    w = worker(settings, redis_client, ch, ingest_claim_idle_seconds=0.1)
    time.sleep(0.2)
    w.drain()
    assert oracle(ch, expected(events)["ids"]) == []
    assert redis_client.xpending(keys.CLICK_STREAM, keys.INGEST_GROUP)["pending"] == 0
    assert not redis_client.exists(keys.legacy_ingest_batches(keys.CLICK_STREAM))
    assert not redis_client.exists(keys.legacy_ingest_batch(keys.CLICK_STREAM, "1-0"))


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
    assert oracle(ch, expected(events)["ids"]) == []
    assert (pending(redis_client), ranges(redis_client)) == (0, 0)


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
        deadline = time.monotonic() + 20
        while ch.query("SELECT count() FROM clicks")[0][0] < 500 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(30)
    assert refusals["n"] == 3
    assert oracle(ch, expected(events)["ids"]) == []
