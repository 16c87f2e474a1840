"""The order-state store: the Redis state and its stream entry, concurrent copies, rebuilds from ClickHouse."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from starlette.testclient import TestClient

from tests.conversions.world import World, make_world, order, stream_rows
from tracker.app import create_app
from tracker.conversions import signature
from tracker.conversions.answer import answer_json
from tracker.conversions.orderset import OrderSet
from tracker.conversions.state import (
    STATE_TTL_SECONDS,
    OrderStates,
    Snapshot,
    StateLookups,
    load_from_clickhouse,
)
from tracker.conversions.staterow import decode_replay, decode_state, normalize_row
from tracker.core import keys
from tracker.core.events import CONVERSION_COLUMNS, encode_conversion
from tracker.ingest.worker import Worker
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse


def test_ingest_drain_stores_exactly_the_current_states(
    world: World, redis_client: redis.Redis, ch: ClickHouse, settings: Settings
) -> None:
    """Through the real ingest worker: every version lands, FINAL reads the current state."""
    world.call(world.registry.set_fx_rate, world.brand, "EUR", Decimal("1.25"))
    posts = [
        {"order_id": "I-1", "amount": "10.00", "currency": "USD", "coupon_code": "bob5",
         "occurred_at": "2026-01-02T03:04:05Z"},
        {"order_id": "I-2", "amount": "80.00", "currency": "EUR", "click_id": world.click(world.link),
         "status": "pending"},
        {"order_id": "I-2", "amount": "80.00", "currency": "EUR", "status": "approved"},
        {"order_id": "I-2", "amount": "20.00", "currency": "EUR", "status": "refunded"},
        {"order_id": "I-3", "amount": "5.00", "currency": "USD"},
        {"order_id": "I-3", "currency": "USD", "status": "refunded"},
        {"order_id": "I-3", "currency": "USD", "status": "refunded"},  # duplicate: no entry
    ]
    for body in posts:
        assert world.post(body).status_code == 202
    assert redis_client.xlen(keys.CONVERSION_STREAM) == 6
    assert Worker(settings, redis_client, ch, name="t-postbacks").drain() == 6
    stored = ch.query_dicts(
        f"SELECT {', '.join(CONVERSION_COLUMNS)} FROM conversions FINAL WHERE brand_id = {{b:String}} "
        "ORDER BY order_id",
        {"b": world.brand["id"]},
    )
    current = {
        o: decode_state(redis_client.get(keys.conversion(world.brand["id"], o)) or b"") for o in ("I-1", "I-2", "I-3")
    }
    assert [normalize_row(row) for row in stored] == [current["I-1"], current["I-2"], current["I-3"]]
    assert current["I-1"]["occurred_at"] == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert current["I-1"]["attribution"] == "coupon" and current["I-1"]["link_code"] == world.coupon_link["code"]
    i2 = current["I-2"]
    assert (i2["version"], i2["status"], i2["amount"], i2["refunded_amount"], i2["commission"]) == (
        3, "approved", Decimal("100.00"), Decimal("25.00"), Decimal("7.50"),
    )
    assert (i2["original_currency"], i2["original_amount"], i2["fx_rate"]) == ("EUR", Decimal("80.00"), Decimal("1.25"))
    assert (current["I-3"]["status"], current["I-3"]["commission"]) == ("refunded", Decimal("0.00"))


def test_fifty_concurrent_copies_on_two_workers_make_one_conversion(
    ch: ClickHouse, settings: Settings, redis_client: redis.Redis
) -> None:
    with TestClient(create_app(settings)) as one, TestClient(create_app(settings)) as two:
        world = make_world(one, settings)
        body = {"order_id": "C-1", "amount": "99.99", "currency": "USD", "click_id": world.click(world.link)}
        raw = json.dumps(body).encode()
        results: list[tuple[int, dict[str, Any]]] = []
        lock = threading.Lock()
        start = threading.Barrier(50)

        def send(i: int) -> None:
            client = one if i % 2 else two
            headers = {"X-Store-Id": world.store_id, "Content-Type": "application/json",
                       "X-Signature": signature.sign(world.secret, int(time.time()), raw)}
            start.wait()
            r = client.post("/api/v1/conversions", content=raw, headers=headers)
            with lock:
                results.append((r.status_code, r.json()))

        threads = [threading.Thread(target=send, args=(i,)) for i in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert [s for s, _ in results] == [202] * 50, results
    assert sum(1 for _, b in results if not b["duplicate"]) == 1
    assert len({b["conversion_id"] for _, b in results}) == 1
    assert {b["commission"] for _, b in results} == {"10.00"}
    assert redis_client.xlen(keys.CONVERSION_STREAM) == 1


# --- Redis lost the state --------------------------------------------------------------------------------------


def test_state_rebuilt_from_clickhouse_when_redis_lost_it(
    world: World, redis_client: redis.Redis, ch: ClickHouse, settings: Settings
) -> None:
    body = {"order_id": "L-1", "amount": "80.00", "currency": "USD", "coupon_code": "ANNA10"}
    first = world.post(body).json()
    # Ingest moved the row to ClickHouse; then Redis lost the order's state.
    assert Worker(settings, redis_client, ch, name="t-postbacks").drain() == 1
    redis_client.delete(keys.conversion(world.brand["id"], "L-1"))

    again = world.post(body).json()
    assert again["duplicate"] is True and again["conversion_id"] == first["conversion_id"]
    assert redis_client.xlen(keys.CONVERSION_STREAM) == 1
    redis_client.delete(keys.conversion(world.brand["id"], "L-1"))
    refund = world.post({**body, "amount": "20.00", "status": "refunded"}).json()
    assert (refund["duplicate"], refund["refunded_amount"], refund["commission"]) == (False, "20.00", "6.00")
    assert refund["conversion_id"] == first["conversion_id"]
    assert stream_rows(redis_client)[-1]["version"] == 2


def test_concurrent_state_lookups_share_one_clickhouse_query(
    world: World, redis_client: redis.Redis, ch: ClickHouse, settings: Settings
) -> None:
    for i in range(3):
        world.post({"order_id": order(i), "amount": "1.00", "currency": "USD"})
    assert Worker(settings, redis_client, ch, name="t-postbacks").drain() == 3
    brand = world.brand["id"]
    wanted = [(brand, order(i)) for i in (0, 1, 2, 1, 7)] + [("brd_" + "N" * 16, order(0))]

    async def lookups() -> tuple[list[Any], int]:
        states = StateLookups(ch)
        found = await asyncio.gather(*(states.get(b, o) for b, o in wanted))
        return found, states.queries

    found, queries = asyncio.run(lookups())
    assert queries == 1
    assert [None if f is None else f["order_id"] for f in found] == [order(0), order(1), order(2), order(1), None, None]
    assert found[1] == found[3] and found[1] is not found[3]
    assert found[0] == load_from_clickhouse(ch, brand, order(0))


# --- rows and the compare-and-write ---------------------------------------------------------------


ROW: dict[str, Any] = {
    "brand_id": "brd_stateTest000001", "order_id": "O-1", "version": 1, "conversion_id": "cnv_1",
    "store_id": "sto_1", "status": "approved", "currency": "USD", "amount": Decimal("12.50"),
    "refunded_amount": Decimal("0.00"), "original_currency": "JPY", "original_amount": Decimal("1800"),
    "original_refunded_amount": Decimal("0"), "fx_rate": Decimal("0.00694444"), "commission": Decimal("1.25"),
    "attributed": 1, "attribution": "coupon", "click_id": "", "link_id": 7, "link_code": "abc123",
    "campaign_id": "cmp_1", "influencer_id": "inf_1", "coupon_code": "BOB5",
    "occurred_at": datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
    "created_at": datetime(2026, 1, 2, 3, 4, 6, tzinfo=UTC), "updated_at": datetime(2026, 1, 2, 3, 4, 6, tzinfo=UTC),
    "customer_hash": "", "email_hash": "", "platform_state": "", "country": "",
    "commission_rule": "percent:10", "hold_days": 30, "review": 0, "change": "created", "reason": "",
}
# The same row as ClickHouse returns it: naive UTC times, Decimal columns at their scale.
FROM_CLICKHOUSE = {
    **ROW, "amount": Decimal("12.5000"), "commission": Decimal("1.2500"), "original_amount": Decimal("1800.0000"),
    "fx_rate": Decimal("0.00694444"), "link_id": 7, "occurred_at": datetime(2026, 1, 2, 3, 4, 5, 678000),
    "created_at": datetime(2026, 1, 2, 3, 4, 6), "updated_at": datetime(2026, 1, 2, 3, 4, 6),
}


@pytest.mark.parametrize(
    "source",
    [ROW, FROM_CLICKHOUSE, json.loads(encode_conversion(ROW)), {**ROW, "version": "1", "link_id": "7"}],
    ids=["row", "clickhouse", "redis json", "strings"],
)
def test_every_source_normalizes_to_one_row(source: dict[str, Any]) -> None:
    row = normalize_row(source)
    assert row == {**ROW, "fx_rate": Decimal("0.00694444")}
    assert str(row["amount"]) == "12.50" and str(row["original_amount"]) == "1800"
    assert [type(row[c]) for c in ("version", "link_id", "occurred_at")] == [int, int, datetime]
    assert row["occurred_at"].tzinfo is not None
    assert decode_state(encode_conversion(row)) == row


@pytest.mark.parametrize(
    "text",
    ["Zoë's café", "\U0001f600 emoji", "\ud800 lone surrogate", 'quote " and \\ backslash', "tab\tnewline\n"],
)
def test_a_state_decodes_as_json_loads_reads_it(text: str) -> None:
    # decode_state reads with msgspec, falling back on json.loads for what msgspec refuses (a lone surrogate).
    raw = encode_conversion({**ROW, "coupon_code": text, "reason": text, "link_id": 2**62 + 1})
    row = decode_state(raw)
    assert row == normalize_row(json.loads(raw))
    assert row["coupon_code"] == text and row["link_id"] == 2**62 + 1
    assert [str(row[c]) for c in ("amount", "commission", "fx_rate")] == ["12.50", "1.25", "0.00694444"]


def test_a_state_from_before_later_columns_reads_their_defaults() -> None:
    older = {k: v for k, v in json.loads(encode_conversion(ROW)).items() if k not in ("country", "hold_days", "review")}
    row = decode_state(json.dumps(older))
    assert (row["country"], row["hold_days"], row["review"]) == ("", 30, 0)
    assert row == {**ROW, "fx_rate": Decimal("0.00694444")}
    with pytest.raises(KeyError):  # a column every state has is not made up
        normalize_row({k: v for k, v in older.items() if k != "amount"})


# The columns a replay is decided and answered on (``decode_replay``).
REPLAY_COLUMNS = {
    "conversion_id", "order_id", "status", "attributed", "attribution", "link_code", "influencer_id", "campaign_id",
    "commission", "amount", "refunded_amount", "currency", "original_amount", "original_refunded_amount",
    "original_currency", "fx_rate",
}


@pytest.mark.parametrize(
    "state",
    [
        encode_conversion(ROW),
        encode_conversion({**ROW, "attribution": "", "link_code": "", "campaign_id": "", "influencer_id": "",
                           "attributed": 0, "commission": Decimal("0"), "status": "refunded"}),
        # Unscaled amounts, a rate of 10 (normalized to 1E+1), text columns of other types, three currencies.
        json.dumps({**json.loads(encode_conversion(ROW)), "amount": "12.5", "original_amount": 1800,
                    "fx_rate": "10", "currency": "KWD", "attributed": "1", "conversion_id": 12,
                    "influencer_id": "Zoë \U0001f600 \" quote"}).encode(),
        json.dumps({**json.loads(encode_conversion(ROW)), "original_currency": "EUR", "original_amount": "7",
                    "refunded_amount": 3.999, "fx_rate": 1.25}),
    ],
    ids=["row", "unattributed refund", "odd types", "floats"],
)
def test_a_replay_reads_its_columns_as_decode_state_does(state: bytes | str) -> None:
    view = decode_replay(state)
    full = decode_state(state)
    assert view is not None and set(view) == REPLAY_COLUMNS
    assert view == {c: full[c] for c in REPLAY_COLUMNS}
    assert [type(view[c]) for c in sorted(REPLAY_COLUMNS)] == [type(full[c]) for c in sorted(REPLAY_COLUMNS)]
    for duplicate in (False, True):
        assert answer_json(view, duplicate) == answer_json(full, duplicate)


def test_a_state_the_replay_decode_cannot_read_is_left_to_decode_state() -> None:
    # A lone surrogate (msgspec refuses it; json.loads reads it) and a state without an answer column.
    surrogate = encode_conversion({**ROW, "link_code": "\ud800"})
    assert decode_replay(surrogate) is None and decode_state(surrogate)["link_code"] == "\ud800"
    lacking = json.dumps({k: v for k, v in json.loads(encode_conversion(ROW)).items() if k != "fx_rate"})
    assert decode_replay(lacking) is None
    with pytest.raises(KeyError):
        decode_state(lacking)


async def _no_rebuild(brand_id: str) -> None:
    return None


def test_a_write_on_a_stale_state_is_refused(redis_url: str, redis_client: redis.Redis, ch: ClickHouse) -> None:
    key = keys.conversion(ROW["brand_id"], ROW["order_id"])

    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis_url)
        states = OrderStates(client, ch, OrderSet(client, "test-secret-key-0123456789abcdefghijklmnop"), _no_rebuild)
        try:
            empty = await states.read(ROW["brand_id"], ROW["order_id"])
            assert empty == Snapshot(None, None)  # neither in Redis nor in ClickHouse
            assert await states.write(empty, ROW) is None
            won = await states.write(empty, ROW)  # another copy wrote first: the winner's state comes back
            assert won is not None and won.row == ROW
            seen = await states.read(ROW["brand_id"], ROW["order_id"])
            assert seen.raw == encode_conversion(ROW) and seen.row == ROW
            assert await states.write(seen, {**ROW, "version": 2}) is None
            assert await states.write(seen, {**ROW, "version": 3}) is not None  # decided on version 1
            await states.restore({**ROW, "version": 9})  # only where Redis has nothing
        finally:
            await client.aclose()

    asyncio.run(scenario())
    assert [row["version"] for row in stream_rows(redis_client)] == [1, 2]
    assert json.loads(redis_client.get(key) or b"")["version"] == 2
    assert 0 < redis_client.ttl(key) <= STATE_TTL_SECONDS
