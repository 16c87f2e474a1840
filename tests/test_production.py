"""Production topology end to end, as separate processes over real protocols.

A ClickHouse HTTP endpoint (`loadtests.chdb_http`, the real engine behind it),
the test Redis, `tracker migrate`, `tracker serve --workers 2` and
`tracker ingest --once`, all configured only through REDIS_URL and
CLICKHOUSE_URL=http://...: the same client code a ClickHouse server would see.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import redis

from loadtests.serve import free_port
from tests.chdb_server import ChdbHttpServer
from tests.waiting import wait_until

pytestmark = pytest.mark.slow(seconds=10)

ADMIN = "tka_production_admin_token_0123456789"
SECRET = "production-secret-key-0123456789abcdefghij"



@pytest.fixture
def stack(tmp_path: Path, redis_url: str, redis_client: redis.Redis) -> Iterator[dict[str, str]]:
    ch = ChdbHttpServer(tmp_path / "ch")
    ch.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "CLICKHOUSE_", "TRACKER_"))}
    env.update(
        REDIS_URL=redis_url,
        CLICKHOUSE_URL=f"{ch.url}/prod",
        TRACKER_SECRET_KEY=SECRET,
        TRACKER_ADMIN_TOKEN=ADMIN,
        TRACKER_SPOOL_DIR=str(tmp_path / "spool"),
        TRACKER_INGEST_BATCH_SECONDS="0.2",
    )
    try:
        yield env
    finally:
        ch.stop()


def _run(args: list[str], env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tracker.cli", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def test_two_http_workers_and_a_separate_ingest(stack: dict[str, str], tmp_path: Path) -> None:
    env = stack
    refused = _run(["serve", "--port", str(free_port())], env, timeout=60)
    assert refused.returncode == 2
    assert "tracker migrate" in refused.stderr

    migrated = _run(["migrate"], env)
    assert migrated.returncode == 0, migrated.stderr
    assert "0009_clicks.sql" in migrated.stdout

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with open(tmp_path / "serve.log", "wb") as log:
        serve = subprocess.Popen(
            [sys.executable, "-m", "tracker.cli", "serve", "--port", str(port), "--workers", "2"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:

        def ready() -> bool:
            assert serve.poll() is None, (tmp_path / "serve.log").read_text()
            return httpx.get(f"{base}/readyz", timeout=2).status_code == 200

        wait_until(ready, timeout=60, interval=0.1, ignoring=(httpx.HTTPError,),
                   message="serve --workers 2 never became ready")

        with httpx.Client(base_url=base, timeout=30) as api:
            brand = api.post("/api/v1/brands", json={"name": "Acme", "currency": "USD"},
                             headers={"Authorization": f"Bearer {ADMIN}"})
            assert brand.status_code == 201, brand.text
            auth = {"Authorization": f"Bearer {brand.json()['api_key']}"}
            campaign = api.post("/api/v1/campaigns", headers=auth, json={
                "name": "Spring", "commission": {"type": "percent", "value": "10"}}).json()
            influencer = api.post("/api/v1/influencers", headers=auth, json={"name": "Ana"}).json()
            link = api.post("/api/v1/links", headers=auth, json={
                "campaign_id": campaign["id"], "influencer_id": influencer["id"],
                "destination_url": "https://shop.example/p?x=1"}).json()
            store = api.post("/api/v1/stores", headers=auth, json={"name": "Shop"}).json()

            # Fresh connections, so the kernel spreads them over both workers.
            click_ids = []
            for i in range(40):
                r = httpx.get(f"{base}/{link['code']}?utm_source=ig&n={i}",
                              headers={"User-Agent": f"Mozilla/5.0 (iPhone) Mobile/15E148 Instagram {i}"})
                assert r.status_code == 302, r.text
                click_ids.append(r.headers["location"].split("click_id=")[1])
            assert len(set(click_ids)) == 40
            bot = httpx.get(f"{base}/{link['code']}", headers={"User-Agent": "Googlebot/2.1"})
            assert bot.status_code == 302

            body = json.dumps({"order_id": "o-1", "amount": "80.00", "currency": "USD",
                               "click_id": click_ids[0]}).encode()
            t = int(time.time())
            sig = hmac.new(store["secret"].encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
            conv = api.post("/api/v1/conversions", content=body, headers={
                "Content-Type": "application/json", "X-Store-Id": store["id"], "X-Signature": f"t={t},v1={sig}"})
            assert conv.status_code == 202, conv.text
            assert conv.json()["attribution"] == "click"
            assert conv.json()["commission"] == "8.00"

            drained = _run(["ingest", "--once"], env)
            assert drained.returncode == 0, drained.stderr

            today = datetime.now(UTC).date().isoformat()
            report = api.get("/api/v1/reports", headers=auth,
                             params={"from": today, "to": today, "group_by": "influencer"})
            assert report.status_code == 200, report.text
            totals = report.json()["totals"]
            assert totals["clicks"] == 40
            assert totals["bot_clicks"] == 1
            assert totals["conversions"] == 1
            assert totals["revenue"] == "80.00"
            assert totals["commission"] == "8.00"
            [row] = report.json()["rows"]
            assert row["influencer_name"] == "Ana"

            metrics = api.get("/metrics").text
            assert 'tracker_redirects_total{status="302"} 41.0' in metrics
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(30)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait(5)
    assert serve.returncode == 0, (tmp_path / "serve.log").read_text()[-2000:]
