"""``kill -9`` of the embedded server with webhook events pending: after a restart every event
is delivered at least once, none lost, each order's events in order."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import httpx
import pytest

from loadtests.serve import EmbeddedServe, seed
from tests.waiting import wait_until
from tests.webhooks.receiver import Receiver
from tracker.conversions import signature

ORDERS = 20


@pytest.mark.slow(seconds=10)
def test_kill_9_with_events_pending_loses_nothing(tmp_path: Path) -> None:
    receiver = Receiver()  # not started: the brand's server is down at first
    env = {"TRACKER_WEBHOOKS_ALLOW_PRIVATE": "1", "TRACKER_WEBHOOKS_RETRY_SECONDS": "0.3,0.5",
           # A short request timeout makes the dead sender's leases short (2 x 2 + 2 s).
           "TRACKER_WEBHOOKS_TIMEOUT_SECONDS": "2"}
    serve = EmbeddedServe(tmp_path / "data", env=env).start()
    try:
        s = seed(serve.base, serve.admin_token)
        h = {"Authorization": f"Bearer {s.brand['api_key']}"}
        with httpx.Client(base_url=serve.base, timeout=30) as http:
            made = http.post("/api/v1/webhooks", headers=h, json={
                "url": receiver.url, "events": ["conversion.created", "conversion.updated"]})
            assert made.status_code == 201, made.text
            receiver.secret = made.json()["secret"]
            store = s.stores[0]

            def post(order: str, status: str) -> str:
                raw = json.dumps({"order_id": order, "amount": "20.00", "currency": "USD", "status": status,
                                  "coupon_code": s.links[0]["coupon_code"]}).encode()
                r = http.post("/api/v1/conversions", content=raw, headers={
                    "X-Store-Id": store["id"], "Content-Type": "application/json",
                    "X-Signature": signature.sign(store["secret"], int(time.time()), raw)})
                assert r.status_code == 202, r.text
                cid: str = r.json()["conversion_id"]
                return cid

            ids = {}
            for n in range(ORDERS // 2):
                ids[f"A{n}"] = post(f"A{n}", "pending")
                post(f"A{n}", "approved")
            ep = made.json()["id"]
            # Some deliveries have been tried and are waiting for their next attempt ...
            wait_until(lambda: any(d["attempts"] > 0 for d in http.get(
                f"/api/v1/webhooks/{ep}/deliveries", headers=h).json()["items"]), timeout=30)
            # ... and the last events were accepted a moment before the kill.
            for n in range(ORDERS // 2, ORDERS):
                ids[f"A{n}"] = post(f"A{n}", "pending")
                post(f"A{n}", "approved")
        serve.stop(signal.SIGKILL)

        receiver.start()
        serve.start()
        wait_until(lambda: len({r.id for r in receiver.got}) >= 2 * ORDERS, timeout=90,
                   message=lambda: f"{len(receiver.got)} of {2 * ORDERS} events arrived")
        assert receiver.refused == []
        for order, cid in ids.items():
            got = receiver.of(cid)
            kinds = list(dict.fromkeys((r.type, r.data["version"]) for r in got))
            assert kinds == [("conversion.created", 1), ("conversion.updated", 2)], (order, kinds)
    finally:
        serve.stop()
        receiver.stop()
