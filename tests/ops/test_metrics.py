"""/metrics (single and multi-process), stream gauges, request ids and what logs may not contain."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from tests.conftest import ADMIN_TOKEN, SECRET_KEY
from tracker.app import create_app
from tracker.core import keys
from tracker.ingest import delivery
from tracker.ingest.worker import Worker
from tracker.ops import metrics
from tracker.ops.logs import JSONFormatter
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse


@pytest.fixture
def client(ch: ClickHouse, settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_is_prometheus_text_with_every_stage(client: TestClient) -> None:
    metrics.POSTBACKS.labels("accepted").inc()
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    names = {f.name for f in text_string_to_metric_families(r.text)}
    for expected in (
        "tracker_redirects",
        "tracker_redirect_seconds",
        "tracker_clicks_enqueued",
        "tracker_clicks_spooled",
        "tracker_clicks_replayed",
        "tracker_postbacks",
        "tracker_ingest_rows",
        "tracker_ingest_dead_letters",
        "tracker_stream_length",
        "tracker_stream_lag",
        "tracker_stream_pending",
        "tracker_stream_oldest_pending_seconds",
    ):
        assert expected in names


def test_stream_gauges_are_read_from_redis_at_scrape(
    client: TestClient, redis_client: redis.Redis, settings: Settings, ch: ClickHouse
) -> None:
    stream = keys.CLICK_STREAM
    # 2 of 5 entries read and not finished: 2 held, 3 never delivered.
    for i in range(2):
        redis_client.xadd(stream, {"e": f"[{i}]"})
    worker = Worker(settings, redis_client, ch, name="w1")
    worker.start()
    assert worker._read(block_ms=None) == 2
    for i in range(2, 5):
        redis_client.xadd(stream, {"e": f"[{i}]"})
    redis_client.xadd(keys.DEAD_LETTER_STREAM, {"e": "x", "reason": "bad"})
    redis_client.xadd(keys.CONVERSION_STREAM, {"e": "{}"})

    s = _samples(client.get("/metrics").text)
    label = (("stream", stream),)
    assert s[("tracker_stream_length", label)] == 5
    assert s[("tracker_stream_pending", label)] == 2
    assert s[("tracker_stream_lag", label)] == 3
    assert s[("tracker_stream_oldest_pending_seconds", label)] >= 0
    assert s[("tracker_stream_length", (("stream", keys.DEAD_LETTER_STREAM),))] == 1
    # No consumer group on the conversion stream yet: all of it is lag.
    assert s[("tracker_stream_lag", (("stream", keys.CONVERSION_STREAM),))] == 1

    with redis_client.pipeline(transaction=True) as p:
        delivery.finish(p, delivery.ranges(redis_client, stream))
        p.execute()
    s = _samples(client.get("/metrics").text)
    assert s[("tracker_stream_pending", label)] == 0
    assert s[("tracker_stream_oldest_pending_seconds", label)] == 0


_WORKER = """
import sys
from tracker.ops import metrics
metrics.REDIRECTS.labels("302").inc(int(sys.argv[1]))
metrics.STREAM_LAG.labels("s").set(float(sys.argv[1]))
"""

_RENDER = """
import sys
from tracker.ops.obs import render_metrics
sys.stdout.write(render_metrics().decode())
"""


def test_multiprocess_mode_sums_counters_across_workers(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for n in ("3", "4"):
        subprocess.run([sys.executable, "-c", _WORKER, n], env=env, check=True, timeout=60)
    out = subprocess.run(
        [sys.executable, "-c", _RENDER], env=env, check=True, timeout=60, capture_output=True, text=True
    ).stdout
    s = _samples(out)
    assert s[("tracker_redirects_total", (("status", "302"),))] == 7
    # Gauges report the most recent value written by any worker, not a stale maximum.
    assert s[("tracker_stream_lag", (("stream", "s"),))] == 4


@pytest.mark.parametrize(
    ("sent", "echoed"),
    [
        ("abc-123", "abc-123"),
        ("0f1e2d3c4b5a6978", "0f1e2d3c4b5a6978"),
        ("trace:span.1_x", "trace:span.1_x"),
        ("x" * 129, None),  # too long: replaced
        ("has space", None),
        ("semi;colon", None),
        ("", None),
    ],
)
def test_request_id_is_echoed_or_generated(client: TestClient, sent: str, echoed: str | None) -> None:
    r = client.get("/healthz", headers={"X-Request-Id": sent})
    got = r.headers["x-request-id"]
    if echoed is None:
        assert got != sent
        assert len(got) == 16
        int(got, 16)
    else:
        assert got == echoed


def test_request_id_is_new_per_request(client: TestClient) -> None:
    a = client.get("/healthz").headers["x-request-id"]
    b = client.get("/healthz").headers["x-request-id"]
    assert a != b


def test_redirect_path_gets_no_request_id_header(client: TestClient) -> None:
    r = client.get("/nosuchcode1", follow_redirects=False)
    assert "x-request-id" not in r.headers


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(JSONFormatter())
    # The test client logs the URLs it requests itself; only the server's lines count.
    handler.addFilter(lambda r: not r.name.startswith(("httpx", "httpcore")))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield buf
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def test_logs_carry_request_id_and_no_secret_or_ip(client: TestClient, log_lines: io.StringIO) -> None:
    ip = "203.0.113.77"
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}", "X-Forwarded-For": ip}
    brand = client.post(
        "/api/v1/brands", json={"name": "Acme", "currency": "USD"}, headers={**admin, "X-Request-Id": "req-1"}
    ).json()
    key = {"Authorization": f"Bearer {brand['api_key']}", "X-Forwarded-For": ip}
    campaign = client.post(
        "/api/v1/campaigns", json={"name": "C", "commission": {"type": "percent", "value": "10"}}, headers=key
    ).json()
    influencer = client.post("/api/v1/influencers", json={"name": "I"}, headers=key).json()
    link = client.post(
        "/api/v1/links",
        json={"campaign_id": campaign["id"], "influencer_id": influencer["id"],
              "destination_url": "https://shop.example.com/p", "coupon_code": "SAVE10"},
        headers=key,
    ).json()
    store = client.post("/api/v1/stores", json={"name": "S"}, headers=key).json()
    redirect = client.get(f"/{link['code']}", headers={"X-Forwarded-For": ip}, follow_redirects=False)
    assert redirect.status_code == 302
    raw = b'{"order_id":"o1","amount":"10.00","currency":"USD","coupon_code":"SAVE10"}'
    t = int(time.time())
    mac = hmac.new(store["secret"].encode(), f"{t}.".encode() + raw, hashlib.sha256).hexdigest()
    posted = client.post(
        "/api/v1/conversions",
        content=raw,
        headers={"X-Store-Id": store["id"], "X-Signature": f"t={t},v1={mac}", "Content-Type": "application/json",
                 "X-Forwarded-For": ip},
    )
    assert posted.status_code == 202
    client.get(
        f"/postback?store_id={store['id']}&token={store['postback_token']}&order_id=o2&amount=1&currency=USD",
        headers={"X-Forwarded-For": ip, "X-Request-Id": "req-2"},
    )
    client.get("/api/v1/campaigns", headers={"Authorization": "Bearer brk_wrong_key_0000", "X-Real-Ip": ip})
    client.get("/healthz", headers={"X-Forwarded-For": ip})

    text = log_lines.getvalue()
    entries = [json.loads(line) for line in text.splitlines()]
    requests = [e for e in entries if e["event"] == "request"]
    assert {e["request_id"] for e in requests} >= {"req-1", "req-2"}
    assert {e["path"] for e in requests} >= {"/api/v1/brands", "/api/v1/conversions", "/postback"}
    for e in requests:
        assert {"time", "level", "event", "request_id", "method", "path", "status"} <= e.keys()
        assert "?" not in e["path"]
    secrets = (ADMIN_TOKEN, SECRET_KEY, brand["api_key"], store["secret"], store["postback_token"], mac,
               "brk_wrong_key_0000", ip, "testclient")
    for secret in secrets:
        assert secret not in text


def test_serve_workers_empties_a_configured_metrics_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tracker.cli import _multiprocess_metrics_dir

    stale = tmp_path / "counter_123.db"
    stale.write_bytes(b"old run")
    keep = tmp_path / "notes.txt"
    keep.write_text("not ours")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    assert _multiprocess_metrics_dir() == tmp_path
    assert not stale.exists()
    assert keep.exists()


def test_serve_workers_creates_a_metrics_dir_when_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    from tracker.cli import _multiprocess_metrics_dir

    # setenv first, so the teardown removes the variable the function sets.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    path = _multiprocess_metrics_dir()
    try:
        assert path.is_dir()
        assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(path)
        assert list(path.iterdir()) == []
    finally:
        path.rmdir()
