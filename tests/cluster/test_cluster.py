"""Tracker on a real Redis Cluster (3 primaries, 3 replicas): redirects, ingest, postbacks, WAIT.

The same code paths as on one Redis, through ``REDIS_URL=redis+cluster://...``; the key
layout tests check what makes that possible (every script's keys in one slot).
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client import REGISTRY
from redis.crc import key_slot
from starlette.testclient import TestClient

from tests.conversions.world import World, make_world
from tests.ingest_helpers import make_clicks
from tests.redis_cluster import Cluster
from tests.waiting import wait_until
from tracker.app import create_app
from tracker.core import keys
from tracker.core.errors import SettingsError
from tracker.ingest import delivery
from tracker.ingest.worker import Worker
from tracker.settings import Settings
from tracker.storage import redis_client
from tracker.storage.clickhouse import ClickHouse


def sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


async def _get(app: Any, path: str) -> int:
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0")],
        "client": ("198.51.100.7", 40000), "server": ("testserver", 80),
    }
    await app(scope, receive, send)
    return status


def clicks(client: TestClient, code: str, n: int) -> int:
    """``n`` concurrent redirects of ``code`` straight into the ASGI app; how many answered 302."""
    async def wave() -> list[int]:
        return await asyncio.gather(*(_get(client.app, "/" + code) for _ in range(n)))

    assert client.portal is not None
    return sum(1 for status in client.portal.call(wave) if status == 302)


def drain(settings: Settings, ch: ClickHouse) -> int:
    r = redis_client.connect_sync(settings)
    try:
        return Worker(settings, r, ch).drain(threading.Event())
    finally:
        r.close()


# --- settings and key layout -------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "nodes"), [
    ("redis+cluster://10.0.0.1:7001", [("10.0.0.1", 7001)]),
    ("redis+cluster://a:7001,b:7002,c", [("a", 7001), ("b", 7002), ("c", 6379)]),
    ("rediss+cluster://user:pw@a:7001,b:7002", [("a", 7001), ("b", 7002)]),
])
def test_cluster_urls(url: str, nodes: list[tuple[str, int]]) -> None:
    assert Settings(redis_url=url, clickhouse_url="chdb:///tmp/x").redis_url == url
    assert redis_client.is_cluster_url(url)
    assert redis_client.cluster_nodes(url) == nodes


@pytest.mark.parametrize("url", ["redis+cluster://", "cluster://a:1", "redis+sentinel://a:1"])
def test_bad_redis_urls_are_refused(url: str) -> None:
    with pytest.raises(SettingsError, match="REDIS_URL"):
        Settings.from_env({"REDIS_URL": url, "CLICKHOUSE_URL": "chdb:///tmp/x"})


def test_plain_layout_keeps_the_key_names_of_one_redis() -> None:
    keys.use_layout(cluster=False, conversion_shards=1)
    assert keys.conversion("b_1", "o_1") == "trk:conv:b_1:o_1"
    assert keys.order_set("b_1") == "trk:orders:b_1"
    assert keys.held_refunds("b_1", "o_1") == "trk:held:b_1:o_1"
    assert keys.customer_shard("b_1", "abc") == "trk:cust:b_1:abc"
    assert keys.conversion_stream("b_1") == keys.CONVERSION_STREAM == "trk:stream:conversions"
    assert keys.conversion_streams() == ["trk:stream:conversions"]
    assert keys.webhook_stream() == keys.WEBHOOK_STREAM and keys.webhook_due() == keys.WEBHOOK_DUE
    assert keys.webhook_queue("ep", "obj") == "trk:wh:q:ep:obj"


@pytest.mark.parametrize("brand", ["brd_1", "brd_Zx9", "b" * 40])
def test_tagged_layout_puts_every_key_of_a_brands_scripts_in_its_streams_slot(brand: str) -> None:
    keys.use_layout(cluster=True, conversion_shards=3)
    stream = keys.conversion_stream(brand)
    assert stream in keys.conversion_streams() and keys.is_conversion_stream(stream)
    # the keys of orderset.READ / COMMIT / HOLD, rebuild and the customer shards
    brand_keys = [
        keys.conversion(brand, "o:1"), keys.order_set(brand), keys.order_set_generation(brand, 3),
        keys.held_refunds(brand, "o:1"), keys.delivery(brand, "st_1", "d_1"), keys.customer_shard(brand, "f0a"),
        keys.order_set_lock(brand),
    ]
    assert {key_slot(k.encode()) for k in brand_keys} == {key_slot(stream.encode())}
    webhook_keys = [
        keys.webhook_stream(), keys.webhook_due(), keys.webhook_queue("ep", "o"), keys.webhook_delivery("d"),
        keys.webhook_log("ep"), keys.webhook_queues("ep"), keys.webhook_endpoint("ep"), keys.webhook_endpoints(brand),
        keys.webhook_health("ep"),
    ]
    assert len({key_slot(k.encode()) for k in webhook_keys}) == 1
    assert keys.webhook_prefix() == "trk:{wh}:"


def test_shards_spread_over_the_primaries(cluster: Cluster) -> None:
    """Three click shards and three conversion shards land on three different primaries."""
    keys.use_layout(cluster=True, conversion_shards=3)
    ranges = cluster.primaries()

    def owner(key: str) -> int:
        slot = key_slot(key.encode())
        return next(p for p, rs in ranges.items() if any(a <= slot <= b for a, b in rs))

    assert len({owner(k) for k in keys.click_streams(3)}) == 3
    assert len({owner(k) for k in keys.conversion_streams()}) == 3


# --- the app on the cluster --------------------------------------------------------------------------


def test_redirects_and_ingest_on_the_cluster(cluster_settings: Settings, ch: ClickHouse, cluster: Cluster) -> None:
    batches_before = sample("tracker_group_commit_size_count")
    with TestClient(create_app(cluster_settings), follow_redirects=False) as client:
        world = make_world(client, cluster_settings)
        sent = sum(clicks(client, world.link["code"], 150) for _ in range(4))
        assert sent == 600
        assert sample("tracker_group_commit_size_count") - batches_before < 600  # grouped, not one by one
        r = redis_client.connect_sync(cluster_settings)
        lengths = {s: r.xlen(s) for s in keys.click_streams(3)}
        r.close()
        assert sum(lengths.values()) == 600 and all(n > 0 for n in lengths.values()), lengths
        assert drain(cluster_settings, ch) == 600
        assert client.get("/readyz").status_code == 200
        metrics = client.get("/metrics").text  # the stream gauges, read from every primary
        assert all(f'tracker_stream_lag{{stream="{s}"}} 0.0' in metrics for s in keys.click_streams(3)), metrics
    assert ch.query_dicts("SELECT count() AS n, uniqExact(click_id) AS u FROM clicks") == [{"n": 600, "u": 600}]
    # every shard trimmed up to what is stored (no range left open)
    r = redis_client.connect_sync(cluster_settings)
    try:
        for stream in keys.click_streams(3):
            assert r.scard(delivery.ranges_key(stream)) == 0
    finally:
        r.close()


def _post(world: World, order: str, amount: str, **kw: str) -> dict[str, Any]:
    response = world.post({"order_id": order, "amount": amount, "currency": "USD", **kw})
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


def test_postbacks_on_the_cluster(cluster_settings: Settings, ch: ClickHouse, cluster: Cluster) -> None:
    with TestClient(create_app(cluster_settings), follow_redirects=False) as client:
        worlds = [make_world(client, cluster_settings) for _ in range(3)]
        for i, world in enumerate(worlds):
            first = _post(world, f"o-{i}", "100.00", click_id=world.click(world.link))
            assert first["attribution"] == "click" and not first["duplicate"]
            again = _post(world, f"o-{i}", "100.00", click_id=world.click(world.link))
            assert again["duplicate"] and again["conversion_id"] == first["conversion_id"]
            coupon = _post(world, f"c-{i}", "50.00", coupon_code="BOB5")
            assert coupon["attribution"] == "coupon"
            refunded = _post(world, f"o-{i}", "100.00", status="refunded")
            assert refunded["status"] == "refunded"
            assert world.post({"order_id": f"o-{i}", "amount": "100.00", "currency": "USD",
                               "status": "approved"}).status_code == 409
        brands = {w.brand["id"] for w in worlds}
        r = redis_client.connect_sync(cluster_settings)
        try:
            for brand in brands:
                state = keys.conversion(brand, "o-0" if brand == worlds[0].brand["id"] else "x")
                assert key_slot(state.encode()) == key_slot(keys.conversion_stream(brand).encode())
            assert sum(r.xlen(s) for s in keys.conversion_streams()) == 9  # 3 brands x (new, coupon, refund)
        finally:
            r.close()
        assert drain(cluster_settings, ch) == 9
    rows = ch.query_dicts(
        "SELECT brand_id, order_id, status, attribution FROM conversions FINAL ORDER BY brand_id, order_id"
    )
    assert len(rows) == 6 and {r["brand_id"] for r in rows} == brands
    assert sorted((r["order_id"][0], r["status"]) for r in rows) == [("c", "approved")] * 3 + [("o", "refunded")] * 3


def test_wait_replicas_on_the_cluster(cluster_settings: Settings, ch: ClickHouse, cluster: Cluster) -> None:
    """TRACKER_REDIS_WAIT_REPLICAS=1: a batch goes whole to one primary and ends with WAIT there, the
    primaries holding a click shard take batches in turn, and replicas acknowledged every batch."""
    settings = cluster_settings.with_(redis_wait_replicas=1)
    spooled = sample("tracker_clicks_spooled_total")
    batches = sample("tracker_group_commit_size_count")
    primaries = cluster.primaries()
    waits_before = {p: _calls(cluster, p, "wait") for p in primaries}
    with TestClient(create_app(settings), follow_redirects=False) as client:
        world = make_world(client, settings)
        assert sum(clicks(client, world.link["code"], 15) for _ in range(6)) == 90
    batches = sample("tracker_group_commit_size_count") - batches
    waits = {p: _calls(cluster, p, "wait") - waits_before[p] for p in primaries}
    holders = {
        p for p, ranges in primaries.items()
        for stream in keys.click_streams(settings.stream_shards)
        if any(lo <= key_slot(stream.encode()) <= hi for lo, hi in ranges)
    }
    assert batches >= 6 and sum(waits.values()) == batches, (batches, waits)
    assert {p for p, n in waits.items() if n} == holders, (waits, holders)
    assert max(waits.values()) - min(waits[p] for p in holders) <= 1  # in turn
    assert sample("tracker_clicks_spooled_total") == spooled
    assert drain(settings, ch) == 90


def _calls(cluster: Cluster, port: int, command: str) -> int:
    stats = cluster.node(port).info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


def test_wait_without_a_replica_spools_the_batch(
    settings: Settings, ch: ClickHouse, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """One Redis with no replica cannot satisfy WAIT 1: the batch is spooled (the follower is still
    redirected) rather than answered as if a replica held it."""
    settings = settings.with_(redis_wait_replicas=1, redis_wait_ms=20, spool_dir=tmp_path / "spool")
    spooled = sample("tracker_clicks_spooled_total")
    with TestClient(create_app(settings), follow_redirects=False) as client:
        world = make_world(client, settings)
        assert clicks(client, world.link["code"], 20) == 20
        wait_until(lambda: sample("tracker_clicks_spooled_total") - spooled >= 20,
                   message="the unreplicated batch was not spooled")
        assert not client.app.state.services.redirect.clicklog.redis_up  # type: ignore[attr-defined]


def test_poison_clicks_are_dead_lettered_on_the_cluster(cluster_settings: Settings, ch: ClickHouse) -> None:
    """The dead-letter stream is in another slot than a shard's ranges: still every good click is
    stored, the bad ones are dead-lettered once, and no range is left open."""
    events = make_clicks(60)
    r = redis_client.connect_sync(cluster_settings)
    try:
        shards = keys.click_streams(3)
        bad = []
        for i, event in enumerate(events):
            r.xadd(shards[i % 3], {"e": event.encode()})
            if i % 20 == 0:
                bad.append((shards[i % 3], r.xadd(shards[i % 3], {"e": b"not json"}).decode()))
        assert Worker(cluster_settings.with_(ingest_batch_size=7), r, ch).drain(threading.Event()) == 60
        dead = [(f[b"stream"].decode(), f[b"id"].decode()) for _, f in r.xrange(keys.DEAD_LETTER_STREAM)]
        assert sorted(dead) == sorted(bad)
        assert all(r.scard(delivery.ranges_key(s)) == 0 for s in shards)
    finally:
        r.close()
    assert ch.query_dicts("SELECT uniqExact(click_id) AS u, count() AS n FROM clicks") == [{"u": 60, "n": 60}]


def test_conversion_shards_on_one_redis(settings: Settings, ch: ClickHouse, redis_client: redis.Redis) -> None:
    """TRACKER_CONVERSION_SHARDS > 1 on a single Redis: the tagged layout, every shard ingested."""
    settings = settings.with_(conversion_shards=3)
    with TestClient(create_app(settings), follow_redirects=False) as client:
        worlds = [make_world(client, settings) for _ in range(4)]
        for i, world in enumerate(worlds):
            _post(world, f"o-{i}", "10.00", click_id=world.click(world.link))
            assert _post(world, f"o-{i}", "10.00")["duplicate"]
        assert keys.tagged() and redis_client.exists(keys.CONVERSION_STREAM) == 0
        lengths = [redis_client.xlen(s) for s in keys.conversion_streams()]
        assert sum(lengths) == 4
        assert drain(settings, ch) == 4
    assert ch.query_dicts("SELECT count() AS n FROM conversions FINAL") == [{"n": 4}]
