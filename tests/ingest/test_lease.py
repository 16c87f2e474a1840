"""Consumer names and heartbeat leases: a restarted worker's name, a stalled worker backing out."""

from __future__ import annotations

import os
import socket
import time

import pytest
import redis

from tests.ingest_helpers import expected, make_clicks, oracle, pending, produce, worker
from tracker.core import keys
from tracker.ingest.lease import LeaseLost
from tracker.ingest.worker import Worker
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse


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
    redis_client.set(keys.heartbeat(f"{socket.gethostname()}-0"), f"{os.getppid()}:x", ex=30)
    third = Worker(settings, redis_client, ch)
    third.start()
    assert third.name == f"{socket.gethostname()}-1"


def test_a_worker_whose_lease_lapsed_does_not_insert(
    settings: Settings, ch: ClickHouse, redis_client: redis.Redis
) -> None:
    """A stall past the heartbeat: others may claim the entries, so the stalled worker backs out."""
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
    time.sleep(0.25)  # the ranges must be idle for the claim time (0.2 s) before another worker takes them
    worker(settings, redis_client, ch, name="other", ingest_claim_idle_seconds=0.2).drain()
    assert oracle(ch, expected(events)) == []
    assert pending(redis_client) == 0
