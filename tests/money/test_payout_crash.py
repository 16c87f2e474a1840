"""``kill -9`` of the embedded server right after a payout run or a payment committed: after a
restart the audit log has each payout's ``payout.create`` and ``payout.paid`` entry once, naming
the key that acted (recorded by the recovery that finishes the action, ``tracker.money.payoutoutbox``).

The kill is injected by the test-only ``tests.money.faults_plugin``: the server kills itself at the
step, between the commit in ClickHouse and the route's audit entries.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from loadtests.serve import EmbeddedServe, seed
from tests.waiting import wait_until
from tracker.conversions import signature

pytestmark = pytest.mark.slow(seconds=12)
ROOT = Path(__file__).resolve().parents[2]
# The dead process's money lock lapses and the restarted webhook sender settles what it left owed in
# its next round: 30 s each in production, 3 s and 2 s under the plugin's quick timers.
RECOVERY_SECONDS = 60


def _serve(serve: EmbeddedServe, crash_at: str = "") -> None:
    serve.module = "tests.money.faults_plugin"
    serve.env = {"PYTHONPATH": str(ROOT), "MONEY_CRASH_AT": crash_at}
    serve.start()


def _killed(serve: EmbeddedServe, http: httpx.Client, method: str, path: str, **kw: Any) -> None:
    """Send the request the server is killed in the middle of, and reap the server."""
    with pytest.raises(httpx.TransportError):
        http.request(method, path, **kw)
    assert serve.proc is not None
    assert serve.proc.wait(30) == -9, serve.output()[-3000:]


def _entries(http: httpx.Client, action: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = http.get("/api/v1/audit", params={"limit": 1000}).json()["items"]
    return [e for e in items if e["action"] == action]


def test_audit_entries_of_payout_actions_killed_after_their_commit(tmp_path: Path) -> None:
    serve = EmbeddedServe(tmp_path / "data")
    _serve(serve, "after_run")
    try:
        s = seed(serve.base, serve.admin_token, influencers=2)
        brand = {"Authorization": f"Bearer {s.brand['api_key']}"}
        with httpx.Client(base_url=serve.base, headers=brand, timeout=30) as owner:
            # Every order comes with a coupon in one instant: not a leaked coupon here.
            r = owner.put("/api/v1/rules", json={"min_click_seconds": 0, "max_conversions_per_visitor_day": 0,
                                                 "self_referral": False, "coupon_leak": False})
            assert r.status_code == 200, r.text
            made = owner.post("/api/v1/keys", json={"name": "Finance", "scope": "write"})
            assert made.status_code == 201, made.text
            finance_key, finance_id = made.json()["key"], made.json()["id"]
            store = s.stores[0]
            occurred = (datetime.now(UTC) - timedelta(days=40)).isoformat()  # past the 30-day hold
            for n in range(6):
                raw = json.dumps({"order_id": f"K-{n}", "amount": "50.00", "currency": "USD", "occurred_at": occurred,
                                  "coupon_code": s.links[n % 2]["coupon_code"]}).encode()
                r = httpx.post(f"{serve.base}/api/v1/conversions", content=raw, timeout=30, headers={
                    "X-Store-Id": store["id"], "Content-Type": "application/json",
                    "X-Signature": signature.sign(store["secret"], int(time.time()), raw)})
                assert r.status_code == 202, r.text
            wait_until(lambda: len(owner.get("/api/v1/conversions").json()["items"]) == 6, timeout=30,
                       message="the orders did not reach the ledger")

        finance = httpx.Client(base_url=serve.base, headers={"Authorization": f"Bearer {finance_key}"}, timeout=30)
        with finance:
            _killed(serve, finance, "POST", "/api/v1/payouts", json={})
            _serve(serve, "after_paid")
            payouts = finance.get("/api/v1/payouts").json()["items"]
            assert len(payouts) == 2  # committed before the kill
            created = wait_until(lambda: len(_entries(finance, "payout.create")) == 2 and _entries(
                finance, "payout.create"), timeout=RECOVERY_SECONDS, message="the run's entries were not recorded")
            by_payout = {e["object_id"]: e for e in created}
            assert set(by_payout) == {p["id"] for p in payouts}
            for p in payouts:
                entry = by_payout[p["id"]]
                assert (entry["key_id"], entry["before"], entry["after"]) == (finance_id, None, p)
                assert entry["at"] == p["created_at"]

            paid = payouts[0]
            _killed(serve, finance, "POST", f"/api/v1/payouts/{paid['id']}/paid", json={"reference": "SEPA-9"})
            _serve(serve)
            now = finance.get(f"/api/v1/payouts/{paid['id']}").json()
            assert (now["status"], now["reference"]) == ("paid", "SEPA-9")  # committed before the kill
            [entry] = wait_until(lambda: _entries(finance, "payout.paid"), timeout=RECOVERY_SECONDS,
                                 message="the payment's entry was not recorded")
            assert (entry["object_id"], entry["key_id"], entry["after"]) == (paid["id"], finance_id, now)
            assert entry["at"] == now["paid_at"]
            # Each entry once, whatever later rounds of the recovery find.
            assert len(_entries(finance, "payout.create")) == 2 and len(_entries(finance, "payout.paid")) == 1
    finally:
        serve.stop()
