"""The start-up checks run once per process start: in `tracker serve` before uvicorn, else in the lifespan."""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import pytest
import redis.asyncio as aioredis
from starlette.testclient import TestClient

from tracker import app as app_module
from tracker import cli, startup
from tracker.conversions import seen
from tracker.core.errors import SettingsError
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    counted: Counter[str] = Counter()
    real_redis, real_schema = startup.check_redis, startup.check_schema

    async def check_redis(settings: Settings, redis: aioredis.Redis) -> None:
        counted["redis"] += 1
        await real_redis(settings, redis)

    def check_schema(settings: Settings, ch: ClickHouse) -> None:
        counted["schema"] += 1
        real_schema(settings, ch)

    monkeypatch.setattr(startup, "check_redis", check_redis)
    monkeypatch.setattr(startup, "check_schema", check_schema)
    return counted


def test_an_app_built_for_another_server_checks_in_its_lifespan(
    ch: ClickHouse, settings: Settings, calls: Counter[str]
) -> None:
    with TestClient(app_module.create_app(settings)) as client:
        assert client.get("/healthz").status_code == 200
    assert calls == {"redis": 1, "schema": 1}


def test_an_app_whose_process_checked_does_not_check_again(
    ch: ClickHouse, settings: Settings, calls: Counter[str]
) -> None:
    with TestClient(app_module.create_app(settings, checked=True)) as client:
        assert client.get("/healthz").status_code == 200
    assert calls == {}


def test_the_lifespan_refuses_a_server_without_a_secret(ch: ClickHouse, settings: Settings) -> None:
    with pytest.raises(SettingsError, match="TRACKER_SECRET_KEY"), TestClient(
        app_module.create_app(settings.with_(secret_key=None))
    ):
        pass


def test_serve_with_workers_checks_once_and_its_workers_skip_the_checks(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    checked: list[Settings] = []
    started: list[tuple[Any, dict[str, Any]]] = []
    monkeypatch.setattr(startup, "run_checks", checked.append)
    monkeypatch.setattr("uvicorn.run", lambda target, **kw: started.append((target, kw)))
    monkeypatch.setattr("tracker.ops.logs.setup", lambda level: {})
    for name, value in {
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "CLICKHOUSE_URL": f"chdb://{tmp_path}/ch",
        "TRACKER_SECRET_KEY": "s" * 40,
        "TRACKER_ADMIN_TOKEN": "a" * 40,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        "TRACKER_PUBLIC_URL": "http://127.0.0.1:8000",
        seen.ENV: "",  # serve names the workers' seen-orders table here: undone after the test
    }.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["serve", "--workers", "3"]) == 0
    # The workers' seen-orders table, made before them in the directory they share for metrics.
    assert os.environ[seen.ENV] == str(tmp_path / "metrics" / seen.FILE_NAME)
    assert os.path.getsize(os.environ[seen.ENV]) == seen.SLOTS * 4
    assert len(checked) == 1
    [(target, kw)] = started
    assert kw["workers"] == 3 and kw["factory"] is True
    module, _, factory = target.partition(":")
    assert module == "tracker.app"
    assert getattr(app_module, factory)().state.checked is True
