"""The embedded Valkey is supervised: `kill -9` of it under click traffic costs no redirect and
no click, `/readyz` says what is wrong meanwhile, and it comes back by itself (issue 13,
finding 1)."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from loadtests.serve import EmbeddedServe, Seed, seed
from tests.ingest_helpers import audit_url
from tests.test_shutdown import Traffic, _counter, stored, wait_drained
from tests.waiting import wait_until

pytestmark = pytest.mark.slow(seconds=12)


def postback(serve: EmbeddedServe, s: Seed, order_id: str) -> httpx.Response:
    store = s.stores[0]
    raw = json.dumps({"order_id": order_id, "amount": "25.00", "currency": "USD",
                      "coupon_code": s.links[0]["coupon_code"]}).encode()
    t = int(time.time())
    mac = hmac.new(store["secret"].encode(), f"{t}.".encode() + raw, hashlib.sha256).hexdigest()
    return httpx.post(
        f"{serve.base}/api/v1/conversions", content=raw, timeout=30,
        headers={"Content-Type": "application/json", "X-Store-Id": store["id"], "X-Signature": f"t={t},v1={mac}"},
    )


def valkey_pid(serve: EmbeddedServe) -> int:
    return int((serve.data_dir / "redis" / "valkey.pid").read_text().strip())


def zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False  # gone (reaped)


def readyz_until(serve: EmbeddedServe, condition: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Poll /readyz (never a 500) until its answer meets the condition."""
    deadline = time.monotonic() + 30
    while True:
        r = httpx.get(f"{serve.base}/readyz", timeout=10)
        assert r.status_code in (200, 503), r.text
        answer: dict[str, Any] = r.json()
        if condition(answer):
            return answer
        assert time.monotonic() < deadline, f"/readyz kept answering {answer}"
        time.sleep(0.05)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[EmbeddedServe, Seed]]:
    audit_url(f"chdb://{(tmp_path / 'data' / 'clickhouse').resolve()}")  # every insert counted from the start
    serve = EmbeddedServe(tmp_path / "data").start()
    try:
        yield serve, seed(serve.base, serve.admin_token)
    finally:
        serve.stop(signal.SIGKILL)


def test_kill_9_of_the_embedded_valkey_under_traffic(served: tuple[EmbeddedServe, Seed]) -> None:
    serve, s = served
    assert postback(serve, s, "order-before").status_code == 202
    log_path = serve.data_dir / "redis" / "valkey.log"
    with Traffic(serve.base, s.links[0]["code"]) as traffic:
        traffic.wait_for(200)
        # The next start of the server fails until we say so (its log file cannot be opened),
        # so the outage lasts long enough to look at.
        log_path.rename(log_path.with_suffix(".kept"))
        log_path.mkdir()
        dead = valkey_pid(serve)
        os.kill(dead, signal.SIGKILL)

        answer = readyz_until(serve, lambda a: "could not be restarted" in a.get("error", {}).get("message", ""))
        assert answer["checks"]["redis"] == "unreachable"
        assert "exited (killed by SIGKILL)" in answer["error"]["message"]
        assert not zombie(dead)
        during = len(traffic.answers)
        traffic.wait_for(during + 100)  # followers are still redirected (clicks go to the spool)
        assert postback(serve, s, "order-during").status_code == 503

        log_path.rmdir()  # the next attempt succeeds (backoff: within a few seconds)
        log_path.with_suffix(".kept").rename(log_path)
        readyz_until(serve, lambda a: a["status"] == "ready")
        assert valkey_pid(serve) != dead
        after = len(traffic.answers)
        traffic.wait_for(after + 100)
    assert postback(serve, s, "order-after").status_code == 202

    metrics = httpx.get(f"{serve.base}/metrics", timeout=10).text
    assert _counter(metrics, "tracker_embedded_redis_restarts_total") == 1
    assert _counter(metrics, "tracker_clicks_spooled_total") > 0

    def replayed() -> bool:
        text = httpx.get(f"{serve.base}/metrics", timeout=10).text
        return _counter(text, "tracker_clicks_replayed_total") >= _counter(text, "tracker_clicks_spooled_total")

    wait_until(replayed, timeout=30, message="the spool was not replayed")
    wait_drained(serve)
    assert serve.stop() == 0
    assert "the embedded Valkey server exited (killed by SIGKILL)" in serve.output()
    assert "the embedded Valkey server is back" in serve.output()

    statuses = {status for status, _ in traffic.answers}
    assert statuses == {302}, statuses
    sent = {cid for _, cid in traffic.answers if cid}
    assert len(sent) == len(traffic.answers)
    got = stored(serve.data_dir)
    missing = sent - set(got["stored"])
    assert not missing, f"{len(missing)} of {len(sent)} clicks that got a 302 are not in ClickHouse"
    assert all(got["clicks"][cid] == 1 for cid in sent)  # inserted once (the audit: merges fold nothing)
    assert got["raw_rows"] == len(got["clicks"]) == len(got["stored"])
    assert {"order-before", "order-after"} <= set(got["orders"])
