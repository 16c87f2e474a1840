"""Dead letters are visible (metric, log, admin route) and re-driven once the cause is fixed (issue #13, item 2)."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import redis
from starlette.testclient import TestClient

from tests.conftest import ADMIN_TOKEN
from tests.ingest_helpers import worker
from tracker.app import create_app
from tracker.core import keys
from tracker.core.events import CONVERSION_COLUMNS, encode_conversion
from tracker.ops import metrics
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def client(ch: ClickHouse, settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def conversion_row(order_id: str, amount: str) -> dict[str, Any]:
    """A conversion as an older server streamed it (before amounts were checked against the columns)."""
    now = datetime.now(UTC)
    row: dict[str, Any] = dict.fromkeys(CONVERSION_COLUMNS, "")
    row.update(
        brand_id="brd_dead", order_id=order_id, version=1, conversion_id=f"cnv_{order_id}", store_id="sto_x",
        status="approved", currency="VND", amount=Decimal(amount), refunded_amount=Decimal(0),
        original_currency="USD", original_amount=Decimal("4000000000.00"), original_refunded_amount=Decimal(0),
        fx_rate=Decimal(25000), commission=Decimal(0), attributed=0, link_id=0, occurred_at=now,
        created_at=now, updated_at=now,
    )
    return row


def dead_count() -> float:
    value = metrics.INGEST_DEAD_LETTERS.labels("conversions")._value.get()  # type: ignore[attr-defined]
    return float(value)


def test_a_dead_lettered_conversion_is_listed_and_redriven_after_the_fix(
    client: TestClient, settings: Settings, redis_client: redis.Redis, ch: ClickHouse,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The cause here is a release whose decoder refuses one valid row (a bug, injected on this worker's
    conversion kind); the fix is the next release (a worker with the real decoder)."""
    for order_id in ("OK-1", "BUG-1"):
        redis_client.xadd(keys.CONVERSION_STREAM, {"e": encode_conversion(conversion_row(order_id, "10"))})
    before = dead_count()
    buggy = worker(settings, redis_client, ch, name="t-dead")
    kind = buggy.kinds[keys.CONVERSION_STREAM]

    def decode(payload: bytes) -> list[Any]:
        if b'"BUG-1"' in payload:
            raise ValueError("conversion BUG-1 trips a decoder bug")
        return kind.decode(payload)

    buggy.kinds[keys.CONVERSION_STREAM] = dataclasses.replace(kind, decode=decode, decode_many=None,
                                                               decode_table=None)
    with caplog.at_level(logging.WARNING, logger="tracker.ingest.worker"):
        buggy.drain()
    assert buggy.dead_lettered == 1
    assert dead_count() == before + 1
    assert any("dead-lettered entry" in r.getMessage() and "decoder bug" in r.getMessage() for r in caplog.records)
    assert ch.query("SELECT order_id FROM conversions FINAL") == [("OK-1",)]

    listed = client.get("/api/v1/admin/dead-letters", headers=ADMIN)
    assert listed.status_code == 200, listed.text
    [item] = listed.json()["items"]
    assert (item["stream"], item["redrivable"], item["fields"]["e"]["order_id"]) == (
        keys.CONVERSION_STREAM, True, "BUG-1")
    assert "decoder bug" in item["reason"]
    assert listed.json()["next_cursor"] is None
    # The gauge an operator alerts on.
    assert 'tracker_stream_length{stream="trk:stream:dead"} 1.0' in client.get("/metrics").text

    # Re-driven before the fix: it comes back as a new dead letter, nothing lost.
    again = client.post(f"/api/v1/admin/dead-letters/{item['id']}/redrive", headers=ADMIN)
    assert again.status_code == 200, again.text
    assert client.post(f"/api/v1/admin/dead-letters/{item['id']}/redrive", headers=ADMIN).status_code == 404
    buggy.drain()
    [retried] = client.get("/api/v1/admin/dead-letters", headers=ADMIN).json()["items"]
    assert retried["id"] != item["id"] and retried["fields"] == item["fields"]

    # The fixed release re-drives it: the row lands once, the list empties.
    fixed = worker(settings, redis_client, ch, name="t-dead")
    redriven = client.post(f"/api/v1/admin/dead-letters/{retried['id']}/redrive", headers=ADMIN)
    assert redriven.status_code == 200, redriven.text
    assert redriven.json()["stream"] == keys.CONVERSION_STREAM
    fixed.drain()
    assert fixed.dead_lettered == 0
    assert sorted(ch.query("SELECT order_id, toString(amount) FROM conversions")) == [
        ("BUG-1", "10"), ("OK-1", "10")]
    assert client.get("/api/v1/admin/dead-letters", headers=ADMIN).json()["items"] == []


def test_a_redrive_whose_cause_remains_comes_back(
    client: TestClient, settings: Settings, redis_client: redis.Redis, ch: ClickHouse
) -> None:
    # A row an older server streamed before amounts were checked: 10^14 VND fits no Decimal(18, 4).
    redis_client.xadd(keys.CONVERSION_STREAM, {"e": encode_conversion(conversion_row("BIG-1", "100000000000000"))})
    w = worker(settings, redis_client, ch, name="t-dead")
    w.drain()
    [item] = client.get("/api/v1/admin/dead-letters", headers=ADMIN).json()["items"]
    assert "out of range" in item["reason"]
    assert client.post(f"/api/v1/admin/dead-letters/{item['id']}/redrive", headers=ADMIN).status_code == 200
    w.drain()
    [back] = client.get("/api/v1/admin/dead-letters", headers=ADMIN).json()["items"]
    assert back["fields"] == item["fields"] and back["id"] != item["id"]
    assert ch.query("SELECT count() FROM conversions") == [(0,)]


def test_pages_and_a_letter_from_elsewhere(client: TestClient, redis_client: redis.Redis) -> None:
    ids = [redis_client.xadd(keys.DEAD_LETTER_STREAM, {"stream": keys.CLICK_STREAM, "id": f"1-{i}",
                                                       "reason": "bad", "e": json.dumps([i])}) for i in range(3)]
    other = redis_client.xadd(keys.DEAD_LETTER_STREAM, {"stream": keys.WEBHOOK_STREAM, "id": "9-9", "reason": "x"})
    first = client.get("/api/v1/admin/dead-letters?limit=2", headers=ADMIN).json()
    assert [i["id"] for i in first["items"]] == [ids[0].decode(), ids[1].decode()]
    rest = client.get(f"/api/v1/admin/dead-letters?limit=2&cursor={first['next_cursor']}", headers=ADMIN).json()
    assert [i["id"] for i in rest["items"]] == [ids[2].decode(), other.decode()]
    assert rest["next_cursor"] is None
    assert rest["items"][1]["redrivable"] is False
    r = client.post(f"/api/v1/admin/dead-letters/{other.decode()}/redrive", headers=ADMIN)
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("GET", "/api/v1/admin/dead-letters", {}, 401),
        ("GET", "/api/v1/admin/dead-letters", {"Authorization": "Bearer wrong"}, 401),
        ("POST", "/api/v1/admin/dead-letters/1-0/redrive", {}, 401),
        ("POST", "/api/v1/admin/dead-letters/1-0/redrive", ADMIN, 404),
        ("POST", "/api/v1/admin/dead-letters/not-an-id/redrive", ADMIN, 404),
        ("GET", "/api/v1/admin/dead-letters?limit=0", ADMIN, 422),
        ("GET", "/api/v1/admin/dead-letters?limit=1001", ADMIN, 422),
        ("GET", "/api/v1/admin/dead-letters?cursor=abc", ADMIN, 422),
    ],
)
def test_admin_only_and_bounded(client: TestClient, method: str, path: str, headers: dict[str, str],
                                status: int) -> None:
    r = client.request(method, path, headers=headers)
    assert r.status_code == status, r.text
    assert set(r.json()["error"]) == {"code", "message"}


def test_a_brand_key_is_refused(client: TestClient) -> None:
    created = client.post("/api/v1/brands", json={"name": "Acme"}, headers=ADMIN).json()
    r = client.get("/api/v1/admin/dead-letters", headers={"Authorization": f"Bearer {created['api_key']}"})
    assert r.status_code == 403
