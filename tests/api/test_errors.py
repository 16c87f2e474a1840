"""Error answers echo at most a short piece of what the client sent (issue 13, finding 7)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from tests.conftest import ADMIN_TOKEN
from tracker.app import create_app
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse

LONG = "x" * 10_000


@pytest.fixture(scope="module")
def paths() -> list[str]:
    return [f"/{LONG}", f"/api/v1/{LONG}", f"/api/v1/links/{LONG}", f"/a/{LONG}", f"/api/v1/campaigns/{LONG}"]


@pytest.fixture
def client(settings: Settings, ch: ClickHouse) -> Iterator[tuple[TestClient, dict[str, str]]]:
    with TestClient(create_app(settings), follow_redirects=False) as c:
        brand = c.post("/api/v1/brands", json={"name": "B"}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        yield c, {"Authorization": f"Bearer {brand.json()['api_key']}"}


def test_a_long_path_or_code_is_not_echoed_back(client: tuple[TestClient, dict[str, str]], paths: list[str]) -> None:
    c, auth = client
    for path in paths:
        for method in ("GET", "PATCH", "DELETE"):
            resp = c.request(method, path, headers=auth)
            assert 400 <= resp.status_code < 500, (method, path[:30], resp.status_code)
            message = resp.json()["error"]["message"]
            assert len(resp.content) < 700, (method, path[:30], resp.status_code, len(resp.content))
            assert LONG[:600] not in message
