"""/readyz with Redis down answers 503 naming the reason, never 500 (issue 13, finding 7)."""

from __future__ import annotations

from pathlib import Path

from starlette.testclient import TestClient

from tracker.app import create_app
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse
from tracker.storage.embedded import EmbeddedRedis


def test_readyz_names_redis_when_it_is_down(
    settings: Settings, ch: ClickHouse, own_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    # Embedded-style settings: the in-process ingest's status is read from Redis too.
    settings = settings.with_(redis_url=own_redis.url, spool_dir=tmp_path / "spool", embedded=True)
    with TestClient(create_app(settings)) as client:
        assert client.get("/readyz").status_code == 200
        own_redis.stop()
        down = client.get("/readyz")
        assert down.status_code == 503, down.text
        body = down.json()
        assert body["status"] == "unavailable"
        assert body["checks"]["redis"] == "unreachable"
        assert body["checks"]["clickhouse"] == "ok"
        assert body["error"]["message"].startswith("Redis is unreachable: ")
        own_redis.start()
        assert client.get("/readyz").status_code == 200
