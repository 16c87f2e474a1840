"""Bad query parameters of the quality routes answer 422 with our error body, never a 500
(found by schemathesis: a year-735 date reached ClickHouse)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from tests.reports_world import ADMIN
from tracker.app import create_app
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse


@pytest.fixture
def client(ch: ClickHouse, settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), follow_redirects=False) as c:
        yield c


@pytest.fixture
def headers(client: TestClient) -> dict[str, str]:
    r = client.post("/api/v1/brands", json={"name": "Q", "currency": "USD"},
                    headers=ADMIN)
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['api_key']}"}


@pytest.mark.parametrize(("path", "query", "needle"), [
    ("/api/v1/rules/coupon-leaks", "to=0735-08-10", "out of range"),
    ("/api/v1/rules/coupon-leaks", "to=AAA", "YYYY-MM-DD"),
    ("/api/v1/rules/coupon-leaks", "to=2026-W49-1", "YYYY-MM-DD"),
    ("/api/v1/rules/coupon-leaks", "to=2026-02-30", "not a calendar date"),
    ("/api/v1/rules/review-queue", "status=open&colour=red", "colour"),
])
def test_bad_query_answers_422(client: TestClient, headers: dict[str, str], path: str, query: str,
                               needle: str) -> None:
    r = client.get(f"{path}?{query}", headers=headers)
    assert r.status_code == 422, r.text
    assert needle in r.json()["error"]["message"]


def test_a_good_day_is_taken(client: TestClient, headers: dict[str, str]) -> None:
    r = client.get("/api/v1/rules/coupon-leaks?to=2026-12-01", headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["to"] == "2026-12-01"
