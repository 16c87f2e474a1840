"""Postback throughput and latency against an embedded `tracker serve`, then a reconciliation.

    /work/venv/bin/python -m loadtests.bench_postbacks [--orders 2000] [--concurrency 32] [--json]

Phases, each with `--concurrency` connections:
1. new orders: signed POST /api/v1/conversions with click ids taken from real
   redirects (each new order also reads ClickHouse once: Redis has no state yet);
2. replays of the same postbacks (answered `duplicate: true` from Redis);
3. partial refunds of every second order (a new version each).
Then it waits for the ingest worker and checks that ClickHouse, read through the
reports API, holds exactly the accepted conversions, revenue and commission.
Nothing here asserts on speed; the numbers are the output.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from loadtests.serve import EmbeddedServe, seed


def sign(secret: str, body: bytes) -> str:
    t = int(time.time())
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children so far (the embedded Valkey included)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pids = [pid]
    with contextlib.suppress(OSError):
        pids += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] if ordered else 0.0


async def phase(base: str, store: dict[str, Any], bodies: list[dict[str, Any]], concurrency: int) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    duplicates = 0
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal duplicates
        while not queue.empty():
            body = queue.get_nowait()
            raw = json.dumps(body, separators=(",", ":")).encode()
            headers = {"X-Store-Id": store["id"], "X-Signature": sign(store["secret"], raw),
                       "Content-Type": "application/json"}
            t0 = time.perf_counter()
            r = await client.post("/api/v1/conversions", content=raw, headers=headers)
            latencies.append(time.perf_counter() - t0)
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            if r.status_code == 202 and r.json()["duplicate"]:
                duplicates += 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return {
        "requests": len(bodies),
        "seconds": round(elapsed, 2),
        "rps": round(len(bodies) / elapsed, 1),
        "p50_ms": round(pct(latencies, 0.50) * 1000, 2),
        "p99_ms": round(pct(latencies, 0.99) * 1000, 2),
        "statuses": statuses,
        "duplicates": duplicates,
    }


def click_ids(base: str, code: str, n: int) -> list[str]:
    out = []
    with httpx.Client(base_url=base, timeout=30) as client:
        for _ in range(n):
            r = client.get(f"/{code}", headers={"User-Agent": "Mozilla/5.0 (iPhone) bench"})
            location = r.headers["location"]
            out.append(parse_qs(urlsplit(location).query)["click_id"][0])
    return out


def run(orders: int, concurrency: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-postbacks-") as tmp:
        env = {"TRACKER_POSTBACK_RATE_LIMIT": "10000000", "TRACKER_LOG_LEVEL": "WARNING"}
        with EmbeddedServe(Path(tmp) / "data", env=env) as serve:
            s = seed(serve.base, serve.admin_token, influencers=4, stores=1, commission="10")
            store = s.stores[0]
            links = s.links
            ids = click_ids(serve.base, links[0]["code"], 50)
            new = []
            for i in range(orders):
                body: dict[str, Any] = {"order_id": f"B-{i}", "amount": f"{10 + i % 90}.{i % 100:02d}",
                                        "currency": "USD"}
                if i % 3 == 0:
                    body["click_id"] = ids[i % len(ids)]
                elif i % 3 == 1:
                    body["coupon_code"] = links[i % len(links)]["coupon_code"]
                new.append(body)
            refunds = [
                {"order_id": b["order_id"], "amount": "5.00", "currency": "USD", "status": "refunded"}
                for b in new[::2]
            ]
            assert serve.proc is not None
            pid = serve.proc.pid
            result: dict[str, Any] = {}
            for name, bodies in (("new_orders", new), ("replays", new), ("partial_refunds", refunds)):
                cpu0 = cpu_seconds(pid)
                result[name] = asyncio.run(phase(serve.base, store, bodies, concurrency))
                # Server CPU per request: a number that holds on a box shared with other work.
                result[name]["server_cpu_ms_per_request"] = round((cpu_seconds(pid) - cpu0) * 1000 / len(bodies), 2)
            result["load_average"] = os.getloadavg()
            # Expected totals: attributed = click or coupon (2 of every 3 orders).
            revenue = Decimal(0)
            commission = Decimal(0)
            attributed = 0
            refunded = {r["order_id"] for r in refunds}
            for b in new:
                if "click_id" in b or "coupon_code" in b:
                    attributed += 1
                    net = Decimal(b["amount"]) - (Decimal("5.00") if b["order_id"] in refunded else 0)
                    revenue += net
                    commission += (net / 10).quantize(Decimal("0.01"), rounding="ROUND_HALF_UP")
            today = datetime.now(UTC).date().isoformat()
            api = httpx.Client(base_url=serve.base, headers={"Authorization": f"Bearer {s.brand['api_key']}"})
            t0 = time.monotonic()
            totals: dict[str, Any] = {}
            while time.monotonic() - t0 < 60:
                r = api.get("/api/v1/reports", params={"from": today, "to": today, "group_by": "influencer"})
                if r.status_code != 200:
                    totals = {"report_status": r.status_code}
                    time.sleep(1)
                    continue
                totals = r.json().get("totals", {})
                if (
                    totals.get("conversions") == attributed
                    and Decimal(str(totals.get("revenue", "0"))) == revenue
                    and Decimal(str(totals.get("commission", "0"))) == commission
                ):
                    break
                time.sleep(0.5)
            result["reconciled"] = {
                "expected": {"conversions": attributed, "revenue": str(revenue), "commission": str(commission),
                             "unattributed_conversions": orders - attributed},
                "report_totals": {k: totals.get(k) for k in ("conversions", "revenue", "commission",
                                                             "unattributed_conversions", "report_status")},
                "seconds_to_match": round(time.monotonic() - t0, 2),
            }
            api.close()
    result["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    result["date"] = datetime.now(UTC).isoformat(timespec="seconds")
    result["command"] = f"python -m loadtests.bench_postbacks --orders {orders} --concurrency {concurrency}"
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--orders", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--json", action="store_true", help="Print one JSON object.")
    args = p.parse_args()
    result = run(args.orders, args.concurrency)
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['date']}  {result['machine']}\n{result['command']}")
    for name in ("new_orders", "replays", "partial_refunds"):
        r = result[name]
        print(f"{name:16} {r['requests']:6} req  {r['rps']:8} req/s  p50 {r['p50_ms']:7} ms  p99 {r['p99_ms']:7} ms  "
              f"server CPU {r['server_cpu_ms_per_request']} ms/req  statuses {r['statuses']}  "
              f"duplicates {r['duplicates']}")
    print("load average during the run:", result["load_average"])
    print("reconciliation:", json.dumps(result["reconciled"]))


if __name__ == "__main__":
    main()
