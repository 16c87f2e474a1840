"""The embedded server's ingest thread and its readiness."""

from __future__ import annotations

from typing import Any

import redis

from tests.ingest_helpers import expected, make_clicks, oracle, produce, wait_until
from tracker.core import keys
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse


def test_embedded_app_ingests_in_the_background(settings: Settings, ch: ClickHouse, redis_client: redis.Redis) -> None:
    from starlette.testclient import TestClient

    from tracker.app import create_app

    events = make_clicks(500)
    app = create_app(settings.with_(embedded=True, ingest_batch_seconds=0.1))
    with TestClient(app) as client:
        produce(redis_client, events)
        wait_until(
            lambda: ch.query("SELECT sum(clicks) + sum(bot_clicks) FROM clicks_daily")[0][0] >= 500,
            what="clicks reaching the rollup",
        )

        def finished() -> Any:
            # The rows land a moment before the worker drops their ranges and counts them, and
            # /readyz reads the streams before the worker's counters (not one snapshot): wait for both.
            answer = client.get("/readyz")
            ingest = answer.json().get("checks", {}).get("ingest", {})
            pending = ingest.get("streams", {}).get(keys.CLICK_STREAM, {}).get("pending")
            return answer if ingest.get("worker", {}).get("rows_inserted") == 500 and pending == 0 else None

        ready = wait_until(finished, what="the batch finishing")
        assert ready.status_code == 200, ready.text
        ingest = ready.json()["checks"]["ingest"]
        assert ingest["streams"][keys.CLICK_STREAM]["pending"] == 0
        assert ingest["worker"]["rows_inserted"] == 500
        assert "problem" not in ingest
    assert oracle(ch, expected(events)) == []
