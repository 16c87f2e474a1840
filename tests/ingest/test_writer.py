"""Writing batches exactly once: deduplication tokens, tokens that outlived their part, settling
a retried insert, replays that landed before, conversions typed and deduplicated, the
conversions' views' tables filled in after a crash between their parts."""

from __future__ import annotations

import threading
import time
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
import redis

from tests.ingest_helpers import die_at, expected, make_clicks, oracle, pending, produce, ranges, worker
from tracker.core import keys
from tracker.core.errors import StorageUnavailable
from tracker.core.events import CLICK_COLUMNS, CONVERSION_COLUMNS, encode_conversion
from tracker.ingest import enrich
from tracker.ingest.batch import CONVERSIONS, Dependent
from tracker.ingest.worker import Worker
from tracker.ops import metrics
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse


def test_same_token_is_dropped_in_table_and_rollup(
    settings: Settings, ch: ClickHouse, redis_client: redis.Redis
) -> None:
    events = make_clicks(100)
    rows = [enrich.click_row(ev) for ev in events]
    token = "clicks:1-0:100:abc"
    ch.insert("clicks", rows, CLICK_COLUMNS, dedup_token=token)
    ch.insert("clicks", rows, CLICK_COLUMNS, dedup_token=token)
    assert oracle(ch, expected(events)) == []


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
    die_at(monkeypatch, w, Worker, "_finish", "after the insert, before the ranges are dropped")
    first = ch.query(f"SELECT count() FROM {table}")[0][0]
    assert first > 0
    # The part never was: its rows leave the table and the oracle's audit of inserts alike.
    for lost in (table, "clicks_inserted") if table == "clicks" else (table,):
        ch.command(f"ALTER TABLE {lost} DELETE WHERE 1 SETTINGS mutations_sync = 2")
    assert ch.query(f"SELECT count() FROM {table}")[0][0] == 0

    worker(settings, redis_client, ch, name="w1").drain()

    if table == "clicks":
        assert oracle(ch, expected(events)) == []
    else:
        rows = ch.query("SELECT order_id, count() FROM conversions GROUP BY order_id")
        assert sorted(rows) == sorted((f"o-{n}", 1) for n in range(40))
    assert pending(redis_client, stream) == 0
    assert ranges(redis_client, stream) == 0


def test_replayed_clicks_already_ingested_are_dropped(
    settings: Settings, ch: ClickHouse, redis_client: redis.Redis
) -> None:
    events = make_clicks(200)
    produce(redis_client, events[:150])
    worker(settings, redis_client, ch).drain()
    # The spool replays 100 clicks whose first XADD had landed, and 50 that never did.
    produce(redis_client, events[50:], replay=True)
    worker(settings, redis_client, ch).drain()
    assert oracle(ch, expected(events)) == []


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
    assert oracle(ch, expected(events)) == []
    assert pending(redis_client) == 0


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


def _repaired() -> float:
    return metrics.INGEST_REPAIRED.labels("clicks")._value.get()  # type: ignore[no-any-return]


def test_a_retried_insert_whose_token_outlived_its_part_is_repaired_and_counted(
    settings: Settings, ch: ClickHouse, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The settle path: an insert that timed out is retried with its token, which ClickHouse drops;
    the rows are checked by key, the missing ones inserted again under a repair token, and counted."""
    events = make_clicks(300)
    produce(redis_client, events)
    original = ch.insert_arrow
    calls = {"n": 0}

    def lost_after_landing(table: str, data: Any, **kw: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            # The part's token is recorded, its rows are not kept, and the client hears a timeout.
            original(table, data, **kw)
            for lost in ("clicks", "clicks_inserted"):
                ch.command(f"ALTER TABLE {lost} DELETE WHERE 1 SETTINGS mutations_sync = 2")
            raise StorageUnavailable("ClickHouse did not answer in time.")
        return original(table, data, **kw)

    monkeypatch.setattr(ch, "insert_arrow", lost_after_landing)
    before = _repaired()
    w = worker(settings, redis_client, ch)
    w.drain()
    assert calls["n"] == 3  # the insert, its retry (dropped as a duplicate), the repair
    assert _repaired() - before == 300
    assert oracle(ch, expected(events)) == []
    assert (pending(redis_client), ranges(redis_client)) == (0, 0)


def test_a_retried_insert_that_had_landed_is_not_repaired(
    settings: Settings, ch: ClickHouse, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = make_clicks(300)
    produce(redis_client, events)
    original = ch.insert_arrow
    calls = {"n": 0}

    def timed_out_after_landing(table: str, data: Any, **kw: Any) -> Any:
        calls["n"] += 1
        original(table, data, **kw)
        if calls["n"] == 1:
            raise StorageUnavailable("ClickHouse did not answer in time.")

    monkeypatch.setattr(ch, "insert_arrow", timed_out_after_landing)
    before = _repaired()
    worker(settings, redis_client, ch).drain()
    assert calls["n"] == 2  # the retry carried the token: ClickHouse dropped it, nothing was missing
    assert _repaired() == before
    assert oracle(ch, expected(events)) == []


def test_conversions_a_crash_left_out_of_their_views_tables_are_filled_in(
    settings: Settings, ch: ClickHouse, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A view commits its part after the table's: a worker killed in between leaves versions that
    ``conversions`` has and its views' tables (``conversion_versions``, ``conversion_ledger``,
    ``conversion_ledger_influencer``, and for re-attributed ones ``conversion_moves``) lack. The
    resumed batch finds them landed in ``conversions``, and puts them in the views' tables itself,
    once (in ``conversion_moves`` only the re-attributed ones, as its view)."""
    for order in range(40):
        row = _conversion(order)
        if order % 4 == 0:
            row["attribution"] = "manual"
        redis_client.xadd(keys.CONVERSION_STREAM, {"e": encode_conversion(row)})
    w = worker(settings, redis_client, ch, ingest_batch_size=1000)
    die_at(monkeypatch, w, Worker, "_finish", "after the insert, before the ranges are dropped")
    # The views' parts of half the orders never were.
    lost = [f"o-{n}" for n in range(0, 40, 2)]
    for table in ("conversion_versions", "conversion_ledger", "conversion_ledger_influencer", "conversion_moves"):
        ch.command(
            f"ALTER TABLE {table} DELETE WHERE order_id IN {{lost:Array(String)}} SETTINGS mutations_sync = 2",
            {"lost": lost},
        )
    before = metrics.INGEST_REPAIRED.labels("conversion_versions")._value.get()

    worker(settings, redis_client, ch, name="w1").drain()

    want = sorted((f"o-{n}", 1) for n in range(40))
    assert sorted(ch.query("SELECT order_id, count() FROM conversions GROUP BY order_id")) == want
    for table in ("conversion_ledger", "conversion_ledger_influencer"):
        assert sorted(ch.query(f"SELECT order_id, count() FROM {table} GROUP BY order_id")) == want
    assert sorted(ch.query("SELECT order_id, count() FROM conversion_moves GROUP BY order_id")) == sorted(
        (f"o-{n}", 1) for n in range(0, 40, 4))
    versions = ch.query(
        "SELECT order_id, version, conversion_id, commission, link_code, recorded_at > updated_at "
        "FROM conversion_versions ORDER BY order_id"
    )
    assert sorted((v[0], v[1]) for v in versions) == want
    assert {v[2] for v in versions} == {f"cnv_{n}" for n in range(40)}
    assert {v[3] for v in versions} == {Decimal("1.00")} and all(v[5] for v in versions)
    assert metrics.INGEST_REPAIRED.labels("conversion_versions")._value.get() - before == len(lost)
    assert (pending(redis_client, keys.CONVERSION_STREAM), ranges(redis_client, keys.CONVERSION_STREAM)) == (0, 0)


@pytest.mark.parametrize("dependent", CONVERSIONS.dependents, ids=lambda d: d.table)
def test_a_views_table_is_filled_with_every_column_its_view_writes(ch: ClickHouse, dependent: Dependent) -> None:
    """The writer fills a view's table with the columns the view selects: a column added to one
    and not the other would be left at its default on repaired rows."""
    columns = [row[0] for row in ch.query(f"DESCRIBE TABLE {dependent.table}")]
    assert sorted(columns) == sorted(dependent.columns + dependent.stamped)
    assert set(dependent.key_columns) <= set(dependent.columns)
    assert set(dependent.columns) <= set(CONVERSION_COLUMNS)
