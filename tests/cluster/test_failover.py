"""``kill -9`` of a Redis Cluster primary under click traffic: the replica is promoted, and the
clicks in ClickHouse are counted against the 302s that were sent.

With ``TRACKER_REDIS_WAIT_REPLICAS=1`` a batch is answered only once a replica holds it (or
it is in the spool), so nothing is lost. Without it, the clicks the primary acknowledged
but had not yet sent to its replica are lost; the test measures that number (on loopback
replication is fast, so it is usually 0 and at most the last batch on the killed primary).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.cluster.test_cluster import _get, drain
from tests.conversions.world import make_world
from tests.redis_cluster import Cluster
from tests.waiting import wait_until
from tracker.app import create_app
from tracker.core import keys
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse

pytestmark = pytest.mark.slow(seconds=30)

WAVE = 40


async def traffic(app: Any, code: str, waves: int, kill: Any = None) -> int:
    """``waves`` waves of WAVE concurrent clicks; ``kill`` runs while the middle wave is in flight."""
    ok = 0
    for i in range(waves):
        tasks = [asyncio.create_task(_get(app, "/" + code)) for _ in range(WAVE)]
        if kill is not None and i == waves // 2:
            await asyncio.sleep(0)  # the wave's requests are in the click log's batch
            kill()
        ok += sum(1 for status in await asyncio.gather(*tasks) if status == 302)
    return ok


@pytest.mark.parametrize("wait_replicas", [1, 0])
def test_failover_under_click_traffic(
    cluster_settings: Settings, ch: ClickHouse, cluster: Cluster, tmp_path: Path, wait_replicas: int,
    record_property: Any,
) -> None:
    settings = cluster_settings.with_(redis_wait_replicas=wait_replicas, spool_dir=tmp_path / "spool")
    killed = 0
    with TestClient(create_app(settings), follow_redirects=False) as client:
        world = make_world(client, settings)
        code = world.link["code"]
        clicklog = client.app.state.services.redirect.clicklog  # type: ignore[attr-defined]
        assert client.portal is not None

        def kill() -> None:
            nonlocal killed
            killed = cluster.kill_primary_of(keys.click_stream(0, 3))

        sent = client.portal.call(traffic, client.app, code, 10, kill)
        started = time.monotonic()

        def clicking_until(done: Callable[[], bool]) -> Callable[[], bool]:
            def wave_then_check() -> bool:  # one more wave of followers every 0.1 s meanwhile
                nonlocal sent
                sent += client.portal.call(traffic, client.app, code, 1)
                return done()
            return wave_then_check

        # Clicks go on through the failover (spooled meanwhile) until the replica is promoted ...
        wait_until(clicking_until(lambda: killed not in cluster.primaries() and len(cluster.primaries()) == 3),
                   timeout=30, interval=0.1, message="the cluster did not promote the replica")
        promoted = time.monotonic() - started
        # ... the killed node comes back as the promoted one's replica (until then, a WAIT 1 on
        # that shard cannot be satisfied: its batches stay in the spool) ...
        cluster.restart(killed)
        # ... and the click log has replayed its spool into the cluster.
        wait_until(clicking_until(lambda: clicklog.redis_up and not list((tmp_path / "spool").glob("*.jsonl"))),
                   timeout=30, interval=0.1, message="the click log did not recover from the failover")
        sent += client.portal.call(traffic, client.app, code, 3)
    assert sent >= 15 * WAVE  # every follower was redirected, failover or not
    wait_until(lambda: drain(settings, ch) == 0, timeout=30, message="ingest did not drain the cluster")
    stored = ch.query_dicts("SELECT count() AS n, uniqExact(click_id) AS u FROM clicks")[0]
    lost = sent - int(stored["u"])
    record_property("failover", {"wait_replicas": wait_replicas, "sent": sent, "stored": stored["u"],
                                 "lost": lost, "promoted_s": round(promoted, 2)})
    print(f"failover wait_replicas={wait_replicas}: 302s={sent} stored={stored['u']} lost={lost} "
          f"replica promoted after {promoted:.1f}s")
    assert stored["n"] == stored["u"]  # a replayed click is stored once
    if wait_replicas:
        assert lost == 0
    else:
        # Only what the killed primary had acknowledged and not replicated: at most the
        # wave in flight when it died (one group-commit batch).
        assert 0 <= lost <= WAVE
