"""Outbound webhooks on the Redis Cluster: every outbox key in the ``{wh}`` slot, every outbox script
run on that slot's node, conversion events read from every conversion shard."""

from __future__ import annotations

from starlette.testclient import TestClient

from tests.redis_cluster import Cluster
from tests.waiting import wait_until
from tests.webhooks.conftest import SenderThread
from tests.webhooks.receiver import Receiver
from tests.webhooks.test_delivery import deliveries, postback, shop
from tracker import webhooks
from tracker.app import create_app
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse


def test_webhooks_on_the_cluster(cluster_settings: Settings, ch: ClickHouse, cluster: Cluster) -> None:
    settings = cluster_settings.with_(webhooks_allow_private=True, webhooks_retry_seconds=(0.2, 0.4, 0.6),
                                      webhooks_give_up_seconds=3.0, webhooks_timeout_seconds=2.0)
    receivers = [Receiver().start() for _ in range(3)]  # one per brand (each endpoint has its secret)
    try:
        with TestClient(create_app(settings)) as client:
            sender = SenderThread(settings, ch).start()
            try:
                worlds = [shop(client, r) for r in receivers]  # three brands: several conversion shards
                firsts = [postback(client, w, "O1", "100.00", "pending") for w in worlds]
                postback(client, worlds[0], "O1", "100.00", "approved")
                payout = {"id": "pay_1", "influencer_id": "inf_x", "amount": "15.00", "currency": "USD",
                          "status": "open"}
                assert client.portal is not None
                redis = client.app.state.services.redis  # type: ignore[attr-defined]
                client.portal.call(webhooks.emit, redis, worlds[0]["brand"]["id"], "payout.created", "pay_1", payout)
                wait_until(lambda: [len(r.got) for r in receivers] == [3, 1, 1], timeout=30,
                           message=lambda: f"got {[r.ids() for r in receivers]}")
                assert all(r.refused == [] for r in receivers)
                o1 = receivers[0].of(firsts[0]["conversion_id"])
                assert [(r.type, r.data["status"]) for r in o1] == [
                    ("conversion.created", "pending"), ("conversion.updated", "approved"),
                ]
                assert [r.of(f["conversion_id"])[0].type for r, f in zip(receivers[1:], firsts[1:], strict=True)] \
                    == ["conversion.created"] * 2
                logged = deliveries(client, worlds[0])
                assert len(logged) == 3 and {d["status"] for d in logged} == {"succeeded"}
            finally:
                sender.stop()
    finally:
        for r in receivers:
            r.stop()
