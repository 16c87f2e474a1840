"""Keys and webhooks across processes: two `tracker serve` processes and `tracker webhooks`.

A revoked key stops working on the other server within 5 s (each process caches keys it
looked up for 2 s); `tracker webhooks`, a process of its own, delivers what the servers record.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from loadtests.serve import free_port
from tests.test_production import ADMIN, _run, stack  # noqa: F401
from tests.waiting import wait_until
from tests.webhooks.receiver import Receiver
from tracker.conversions import signature

pytestmark = pytest.mark.slow(seconds=10)


@contextmanager
def process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tracker.cli", *args], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def ready(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    def up() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(up, timeout=60, interval=0.2, message="the server did not become ready")


def test_revocation_reaches_the_other_process_and_tracker_webhooks_delivers(
    stack: dict[str, str], tmp_path: Path  # noqa: F811
) -> None:
    env = {**stack, "TRACKER_WEBHOOKS_ALLOW_PRIVATE": "1", "TRACKER_WEBHOOKS_RETRY_SECONDS": "0.3"}
    assert _run(["migrate"], env).returncode == 0
    a, b = free_port(), free_port()
    receiver = Receiver().start()
    with process(["serve", "--port", str(a)], env, tmp_path / "a.log") as pa, \
            process(["serve", "--port", str(b)], env, tmp_path / "b.log") as pb, \
            process(["webhooks"], env, tmp_path / "webhooks.log") as pw:
        ready(f"http://127.0.0.1:{a}", pa, tmp_path / "a.log")
        ready(f"http://127.0.0.1:{b}", pb, tmp_path / "b.log")
        with httpx.Client(base_url=f"http://127.0.0.1:{a}", timeout=30) as on_a, \
                httpx.Client(base_url=f"http://127.0.0.1:{b}", timeout=30) as on_b:
            brand = on_a.post("/api/v1/brands", json={"name": "Acme"}, headers={"Authorization": f"Bearer {ADMIN}"})
            h = {"Authorization": f"Bearer {brand.json()['api_key']}"}
            read = on_a.post("/api/v1/keys", json={"name": "dashboards", "scope": "read"}, headers=h).json()
            ro = {"Authorization": f"Bearer {read['key']}"}
            assert on_b.get("/api/v1/campaigns", headers=ro).status_code == 200  # B now caches the key
            assert on_b.post("/api/v1/campaigns", headers=ro, json={}).status_code == 403
            assert on_a.delete(f"/api/v1/keys/{read['id']}", headers=h).status_code == 204
            revoked = time.monotonic()
            wait_until(lambda: on_b.get("/api/v1/campaigns", headers=ro).status_code == 401, timeout=5,
                       message="the revoked key still works on the other process after 5 s")
            assert time.monotonic() - revoked < 5

            hook = on_b.post("/api/v1/webhooks", headers=h, json={"url": receiver.url,
                                                                   "events": ["conversion.created"]})
            assert hook.status_code == 201, hook.text
            receiver.secret = hook.json()["secret"]
            store = on_a.post("/api/v1/stores", headers=h, json={"name": "Shop"}).json()
            raw = json.dumps({"order_id": "o-1", "amount": "80.00", "currency": "USD"}).encode()
            conv = on_a.post("/api/v1/conversions", content=raw, headers={
                "Content-Type": "application/json", "X-Store-Id": store["id"],
                "X-Signature": signature.sign(store["secret"], int(time.time()), raw)})
            assert conv.status_code == 202, conv.text
            wait_until(lambda: len(receiver.got) == 1, timeout=30,
                       message=lambda: (tmp_path / "webhooks.log").read_text()[-2000:])
            assert pw.poll() is None
            (got,) = receiver.got
            assert got.type == "conversion.created" and got.data["conversion_id"] == conv.json()["conversion_id"]
            assert receiver.refused == []
    receiver.stop()
