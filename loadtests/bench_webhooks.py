"""Webhook delivery latency and throughput to a local receiver, measured not asserted.

The sender runs as in ``tracker serve`` (its own thread and event loop), against an
embedded Valkey (AOF everysec) and chDB. Conversion rows are appended to the conversion
stream the way the recorder's commit script does; a receiver in another process verifies
every delivery with the ``standardwebhooks`` package and notes when it arrived.

1. Latency: ``--paced`` events at ``--rate`` per second, each one a new order; the time
   from the stream append to the receiver having verified it, p50/p95/p99.
2. Throughput: ``--burst`` events appended at once (distinct orders, so nothing waits for
   an earlier event of its order); events/s from the first append to the last receipt.

    python -m loadtests.bench_webhooks [--paced 500] [--rate 50] [--burst 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import redis

from loadtests.serve import free_port
from tracker.core import keys
from tracker.core.events import CONVERSION_COLUMNS, encode_conversion
from tracker.registry.cache import Cache
from tracker.settings import Settings
from tracker.storage import migrate, redis_client
from tracker.storage.clickhouse import ClickHouse
from tracker.storage.embedded import EmbeddedRedis
from tracker.webhooks import component, events
from tracker.webhooks.endpoints import Endpoints
from tracker.webhooks.sender import ensure_groups

SECRET_KEY = "bench-webhooks-secret-key-0123456789abcdef"


def receiver_main(port: int, secret: str) -> None:
    """The receiving side: verify, note the arrival time of each webhook-id, answer 204."""
    import uvicorn
    from standardwebhooks.webhooks import Webhook
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    hook = Webhook(secret)
    seen: dict[str, float] = {}
    posts = [0]

    async def receive(request: Request) -> Response:
        body = await request.body()
        hook.verify(body, dict(request.headers))
        seen.setdefault(request.headers["webhook-id"], time.time())
        posts[0] += 1
        return Response(status_code=204)

    async def stats(request: Request) -> Response:
        return JSONResponse(seen if "posts" not in request.query_params else {"posts": posts[0]})

    app = Starlette(routes=[Route("/hook", receive, methods=["POST"]), Route("/stats", stats)])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", loop="uvloop", http="httptools")


def row(brand: str, n: int) -> bytes:
    now = datetime.now(UTC)
    values: dict[str, Any] = {c: "" for c in CONVERSION_COLUMNS}
    values.update(brand_id=brand, order_id=f"B{n}", version=1, conversion_id=f"cnv_bench{n:010d}", status="approved",
                  currency="USD", amount=Decimal("49.90"), refunded_amount=Decimal(0), commission=Decimal("4.99"),
                  original_currency="USD", original_amount=Decimal("49.90"), original_refunded_amount=Decimal(0),
                  fx_rate=Decimal(1), attributed=1, attribution="click", link_id=1, link_code="Y3kK3M",
                  occurred_at=now, created_at=now, updated_at=now)
    return encode_conversion(values)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--paced", type=int, default=500)
    ap.add_argument("--rate", type=float, default=50.0)
    ap.add_argument("--burst", type=int, default=5000)
    ap.add_argument("--receiver", nargs=2, metavar=("PORT", "SECRET"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.receiver:
        receiver_main(int(args.receiver[0]), args.receiver[1])
        return

    tmp = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    valkey = EmbeddedRedis(tmp)
    valkey.start()
    settings = Settings(redis_url=valkey.url, clickhouse_url=f"chdb://{tmp / 'ch'}", secret_key=SECRET_KEY,
                        admin_token="bench-admin-token-0123456789", webhooks_allow_private=True)
    ch = ClickHouse.connect(settings)
    migrate.migrate(ch)
    r = redis.Redis.from_url(valkey.url)
    port = free_port()
    brand = "brd_benchbenchbench1"

    async def setup() -> str:
        ar = redis_client.connect_async(settings)
        try:
            await ensure_groups(ar)
            _, secret = await Endpoints(Cache(ch, ar), SECRET_KEY).create(
                brand, f"http://127.0.0.1:{port}/hook", ["conversion.created"])
            return secret
        finally:
            await ar.aclose()

    secret = asyncio.run(setup())
    receiver = subprocess.Popen([sys.executable, "-m", "loadtests.bench_webhooks", "--receiver", str(port), secret])
    stop: dict[str, Any] = {}

    def sender() -> None:
        async def run() -> None:
            stop["loop"], stop["event"] = asyncio.get_running_loop(), asyncio.Event()
            await component.run(settings, ch, stop["event"])

        asyncio.run(run())

    thread = threading.Thread(target=sender, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/stats", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the receiver did not start"
                time.sleep(0.1)

        def wait_for(ids: dict[str, float], timeout: float) -> dict[str, float]:
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                seen: dict[str, float] = httpx.get(f"http://127.0.0.1:{port}/stats", timeout=10).json()
                if all(i in seen for i in ids):
                    return seen
                time.sleep(0.05 if len(ids) < 1000 else 0.5)  # a big answer costs the receiver's CPU
            raise SystemExit(f"only {sum(i in seen for i in ids)} of {len(ids)} events arrived")

        sent: dict[str, float] = {}
        for n in range(args.paced):
            raw = row(brand, n)
            sent[events.from_conversion(raw).id] = time.time()
            r.xadd(keys.CONVERSION_STREAM, {"e": raw})
            time.sleep(1 / args.rate)
        seen = wait_for(sent, 60)
        lat = sorted((seen[i] - t) * 1000 for i, t in sent.items())

        burst = {}
        rows = [row(brand, args.paced + n) for n in range(args.burst)]
        cpu0 = os.times()
        start = time.time()
        pipe = r.pipeline(transaction=False)
        for raw in rows:
            burst[events.from_conversion(raw).id] = start
            pipe.xadd(keys.CONVERSION_STREAM, {"e": raw})
        pipe.execute()
        seen = wait_for(burst, 600)
        last = max(seen[i] for i in burst)
        cpu1 = os.times()
        rate = args.burst / (last - start)
        # CPU of this process (the sender thread, and this loop polling the receiver) per event: steadier than
        # events/s on a shared box, where the sender gets whatever share of the cores other jobs leave it.
        cpu_ms = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) * 1000 / args.burst
        received = httpx.get(f"http://127.0.0.1:{port}/stats?posts=1", timeout=10).json()["posts"]
        attempts: dict[int, int] = {}
        errors: dict[str, int] = {}
        for k in r.scan_iter(keys.webhook_delivery("*"), count=1000):
            d = r.hgetall(k)
            n = int(d.get(b"attempts", 0))
            attempts[n] = attempts.get(n, 0) + 1
            if d.get(b"error"):
                errors[d[b"error"].decode()[:80]] = errors.get(d[b"error"].decode()[:80], 0) + 1
    finally:
        if "loop" in stop:
            stop["loop"].call_soon_threadsafe(stop["event"].set)
        thread.join(30)
        receiver.terminate()
        receiver.wait(10)
        ch.close()
        valkey.stop()

    q = statistics.quantiles(lat, n=100)
    load = os.getloadavg()
    result = {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "box": f"{platform.machine()}, {os.cpu_count()} CPUs, load average before/after ~{load[0]:.1f}",
        "latency_ms": {"p50": round(q[49], 1), "p95": round(q[94], 1), "p99": round(q[98], 1),
                       "events": args.paced, "rate_per_s": args.rate},
        "throughput_events_per_s": round(rate),
        "sender_cpu_ms_per_event": round(cpu_ms, 2),
        "burst": args.burst,
        "attempts_per_delivery": dict(sorted(attempts.items())),
        "posts_received": received,
        "last_errors": errors,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
