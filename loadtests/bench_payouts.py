"""Payout run and ledger page latency on chDB (DESIGN.md wave 2: 10,000 influencers, 1M conversions).

Generates the conversions once into a chDB directory (reused on later runs; payout tables are
emptied before each run), then times, through the same functions the routes call:

- one payout run of the whole brand (every conversion payable: 1M commission lines, 10,000
  payouts), goal <= 10 s; then a second run that finds nothing new;
- ledger pages of 100 (``GET /api/v1/conversions``): the first page, pages further down by
  cursor, and an influencer's page, goal p95 <= 50 ms;
- the portal's page (``GET /api/v1/me/conversions``): one influencer's first page of 100 over
  90 days and its commission by status, both as the route reads them.

    python -m loadtests.bench_payouts [--json] [--conversions 1000000] [--influencers 10000] [--n 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from loadtests import gen_data
from loadtests.stats import percentile
from tracker.core.events import CONVERSION_COLUMNS, CONVERSION_DEFAULTS
from tracker.money import ledger, payouts
from tracker.portal import ledger as portal_ledger
from tracker.storage.clickhouse import ClickHouse
from tracker.storage.embedded import EmbeddedRedis

BRAND = "brd_benchPayouts0001"
RUN_GOAL_S = 10.0
PAGE_GOAL_MS = 50.0
BATCH = 200_000
PORTAL_DAYS = 90


def generate(ch: ClickHouse, conversions: int, influencers: int) -> float:
    rng = random.Random(15)
    now = datetime.now(UTC).replace(microsecond=0)
    t = time.perf_counter()
    for start in range(0, conversions, BATCH):
        rows = []
        for n in range(start, min(start + BATCH, conversions)):
            cents = rng.randint(500, 50_000)
            amount = Decimal(cents) / 100
            occurred = now - timedelta(days=40 + rng.randint(0, 50), seconds=rng.randint(0, 86_399))
            inf = n % influencers
            row = {**CONVERSION_DEFAULTS, "brand_id": BRAND, "order_id": f"B-{n}", "version": 1,
                   "conversion_id": f"cnv_{n:016d}", "store_id": "sto_bench", "status": "approved",
                   "currency": "USD", "amount": amount, "refunded_amount": Decimal(0), "original_currency": "USD",
                   "original_amount": amount, "original_refunded_amount": Decimal(0), "fx_rate": Decimal(1),
                   "commission": (amount / 10).quantize(Decimal("0.01")), "attributed": 1, "attribution": "coupon",
                   "click_id": "", "link_id": inf + 1, "link_code": f"l{inf}", "campaign_id": "cmp_bench",
                   "influencer_id": f"inf_{inf:012d}", "coupon_code": f"C{inf}", "occurred_at": occurred,
                   "created_at": occurred, "updated_at": occurred, "commission_rule": "percent:10",
                   "hold_days": 30, "reason": "Attributed by coupon."}
            rows.append([row[c] for c in CONVERSION_COLUMNS])
        ch.insert("conversions", rows, list(CONVERSION_COLUMNS))
    ch.command("OPTIMIZE TABLE conversions FINAL")
    return time.perf_counter() - t


def ensure_data(path: str, conversions: int, influencers: int) -> tuple[ClickHouse, float | None]:
    ch = gen_data.open_clickhouse(path, database="bench_payouts")
    have = ch.query("SELECT count() FROM conversions FINAL WHERE brand_id = {b:String}", {"b": BRAND})[0][0]
    took = None
    if have != conversions:
        for table in ("conversions", "conversion_versions"):
            ch.command(f"TRUNCATE TABLE {table}")
        took = generate(ch, conversions, influencers)
    for table in ("payout_lines", "payout_events"):
        ch.command(f"TRUNCATE TABLE {table}")
    return ch, took


async def time_runs(ch: ClickHouse, redis_url: str) -> dict[str, Any]:
    r = aioredis.Redis.from_url(redis_url)
    try:
        brand = {"id": BRAND, "currency": "USD"}
        t = time.perf_counter()
        made = await payouts.run(ch, r, brand, date.today())
        first = time.perf_counter() - t
        t = time.perf_counter()
        again = await payouts.run(ch, r, brand, date.today())
        second = time.perf_counter() - t
    finally:
        await r.aclose()
    lines = ch.query("SELECT count(), sum(amount) FROM payout_lines FINAL WHERE brand_id = {b:String}", {"b": BRAND})
    return {"run_s": round(first, 3), "payouts": len(made), "lines": int(lines[0][0]), "amount": str(lines[0][1]),
            "rerun_s": round(second, 3), "rerun_payouts": len(again)}


def time_pages(ch: ClickHouse, n: int, influencers: int) -> dict[str, Any]:
    now = datetime.now(UTC)
    rng = random.Random(7)
    # The portal's range as the route makes it: whole UTC days, the last one today.
    end = datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)
    start = end - timedelta(days=PORTAL_DAYS)
    cases: dict[str, list[float]] = {"first page": [], "by cursor": [], "one influencer": [],
                                     "portal page, one influencer": []}
    cursor = None
    for _ in range(n):
        t = time.perf_counter()
        ledger.page(ch, BRAND, {}, now, 100, None)
        cases["first page"].append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        _items, cursor = ledger.page(ch, BRAND, {}, now, 100, cursor)
        cases["by cursor"].append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        ledger.page(ch, BRAND, {"influencer_id": f"inf_{rng.randrange(influencers):012d}"}, now, 100, None)
        cases["one influencer"].append((time.perf_counter() - t) * 1000)
        influencer = f"inf_{rng.randrange(influencers):012d}"
        t = time.perf_counter()
        portal_ledger.page(ch, BRAND, influencer, start, end, 100, None)
        portal_ledger.commission_by_status(ch, BRAND, influencer, start, end, "USD")
        cases["portal page, one influencer"].append((time.perf_counter() - t) * 1000)
    return {name: {"p50_ms": round(statistics.median(v), 1), "p95_ms": round(percentile(v, 0.95), 1)}
            for name, v in cases.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--path", default=os.path.join(tempfile.gettempdir(), "tracker-bench-payouts"))
    p.add_argument("--conversions", type=int, default=1_000_000)
    p.add_argument("--influencers", type=int, default=10_000)
    p.add_argument("--n", type=int, default=60, help="ledger pages timed per case")
    p.add_argument("--redis", default="", help="Redis URL (default: an embedded Valkey)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    ch, generated = ensure_data(args.path, args.conversions, args.influencers)
    valkey = None
    redis_url = args.redis
    if not redis_url:
        valkey = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="bench-payouts-valkey-")))
        valkey.start()
        redis_url = valkey.url
    try:
        runs = asyncio.run(time_runs(ch, redis_url))
        pages = time_pages(ch, args.n, args.influencers)
    finally:
        if valkey is not None:
            valkey.stop()
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": f"{platform.machine()}, "
        f"{os.cpu_count()} cpus, Python {platform.python_version()}", "conversions": args.conversions,
        "influencers": args.influencers, "generated_s": None if generated is None else round(generated, 1),
        **runs, "run_goal_s": RUN_GOAL_S, "ledger": pages, "page_goal_ms": PAGE_GOAL_MS,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"payout run: {runs['run_s']} s for {runs['payouts']} payouts, {runs['lines']} lines "
          f"(goal <= {RUN_GOAL_S} s); again: {runs['rerun_s']} s, {runs['rerun_payouts']} new")
    for name, v in pages.items():
        label = f"{name} (page of 100 and commission by status)" if name.startswith("portal") else \
            f"ledger page of 100, {name}"
        print(f"{label}: p50 {v['p50_ms']} ms, p95 {v['p95_ms']} ms (goal p95 <= {PAGE_GOAL_MS})")


if __name__ == "__main__":
    main()
