"""Registry latency: link creation, PATCH, and the lookups the redirect and postbacks make.

Runs the ``Registry`` against an embedded Valkey and chDB in a temporary directory,
with a links table padded to ``--links`` rows (bulk-inserted, as if a brand had minted
that many), and times each operation N times, one at a time:

- ``create_link`` (Redis sequence + reservations + one ClickHouse insert),
- ``update_link`` (lock, read FINAL, insert, write-through),
- ``link_by_code`` warm (Redis hit) and cold (Redis lost the record: rebuilt from
  ClickHouse with FINAL, then written back), and for a never-issued code,
- ``brand_for_key`` warm and cold.

    python -m loadtests.bench_registry [--links 100000] [--n 300] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio

from loadtests.stats import percentile
from tracker.core import keys
from tracker.registry import Registry
from tracker.settings import Settings
from tracker.storage import migrate, redis_client
from tracker.storage.clickhouse import ClickHouse, run_sync
from tracker.storage.embedded import EmbeddedRedis


async def timed(n: int, op: Callable[[int], Awaitable[Any]]) -> dict[str, float]:
    samples: list[float] = []
    for i in range(n):
        t = time.perf_counter()
        await op(i)
        samples.append((time.perf_counter() - t) * 1000)
    return {
        "n": n,
        "ops_per_s": round(n / (sum(samples) / 1000), 1),
        "p50_ms": round(statistics.median(samples), 3),
        "p99_ms": round(percentile(samples, 0.99), 3),
    }


def pad_links(ch: ClickHouse, reg: Registry, brand_id: str, campaign_id: str, influencer_id: str, count: int,
              first_id: int) -> None:
    """Insert ``count`` links straight into ClickHouse (ids from ``first_id``), in blocks."""
    now = datetime.now(UTC)
    columns = ["brand_id", "id", "code", "campaign_id", "influencer_id", "destination_url", "coupon_code",
               "disabled", "expires_at", "created_at", "updated_at", "version"]
    block: list[list[Any]] = []
    for link_id in range(first_id, first_id + count):
        block.append([brand_id, link_id, reg.codes.encode(link_id), campaign_id, influencer_id,
                      f"https://shop.example/p/{link_id}", "", 0, None, now, now, 1])
        if len(block) == 50_000:
            ch.insert("links", block, columns)
            block = []
    if block:
        ch.insert("links", block, columns)


async def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    server = EmbeddedRedis(work)
    server.start()
    try:
        settings = Settings(
            redis_url=server.url,
            clickhouse_url=f"chdb://{work / 'clickhouse'}",
            clickhouse_database="bench",
            data_dir=work,
            admin_token="bench-admin-token-0123456789",
            secret_key="bench-secret-key-0123456789abcdefghijklmnop",
            public_url="http://127.0.0.1:8000",
        )
        ch = await run_sync(ClickHouse.connect, settings)
        await run_sync(migrate.migrate, ch)
        redis = redis_client.connect_async(settings)
        reg = Registry(settings, ch, redis)
        brand, api_key = await reg.create_brand("Bench", "USD")
        campaign = await reg.create_campaign(brand["id"], name="C", commission_type="percent",
                                             commission_value=Decimal("10"))
        influencer = await reg.create_influencer(brand["id"], name="I")
        b, c, i = brand["id"], campaign["id"], influencer["id"]

        t = time.perf_counter()
        await run_sync(pad_links, ch, reg, b, c, i, args.links, 1)
        pad_seconds = time.perf_counter() - t
        results: dict[str, Any] = {"padded_links": args.links, "pad_seconds": round(pad_seconds, 2)}

        created: list[str] = []

        async def create(n: int) -> None:
            row = await reg.create_link(b, campaign_id=c, influencer_id=i,
                                        destination_url=f"https://shop.example/new/{n}")
            created.append(row["code"])

        results["create_link"] = await timed(args.n, create)
        results["update_link"] = await timed(
            args.n, lambda n: reg.update_link(b, created[n % len(created)], disabled=bool(n % 2))
        )
        sample = [reg.codes.encode(random.randint(1, args.links)) for _ in range(args.n)]

        async def cold(n: int) -> None:
            await redis.delete(keys.link(sample[n]))
            assert await reg.link_by_code(sample[n]) is not None

        results["link_by_code_cold"] = await timed(args.n, cold)
        results["link_by_code_warm"] = await timed(args.n, lambda n: reg.link_by_code(sample[n]))
        never = [reg.codes.encode(10**12 + n) for n in range(args.n)]
        results["link_by_code_unknown"] = await timed(args.n, lambda n: reg.link_by_code(never[n]))
        results["brand_for_key_warm"] = await timed(args.n, lambda n: reg.brand_for_key(api_key))

        async def key_cold(n: int) -> None:
            await redis.flushdb()
            assert await reg.brand_for_key(api_key) is not None

        results["brand_for_key_cold"] = await timed(min(args.n, 100), key_cold)
        await redis.aclose()
        return results
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--links", type=int, default=100_000, help="links in the table before timing")
    parser.add_argument("--n", type=int, default=300, help="operations per case")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tracker-bench-registry-") as tmp:
        results = anyio.run(run, args, Path(tmp))
    results["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    results["date"] = datetime.now(UTC).isoformat(timespec="seconds")
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"registry bench, {results['padded_links']} links padded in {results['pad_seconds']} s")
    print(f"{'case':24} {'ops/s':>10} {'p50 ms':>9} {'p99 ms':>9}")
    for name, r in results.items():
        if isinstance(r, dict) and "p50_ms" in r:
            print(f"{name:24} {r['ops_per_s']:>10} {r['p50_ms']:>9} {r['p99_ms']:>9}")
    print(json.dumps({k: v for k, v in results.items() if k in ("machine", "date")}))


if __name__ == "__main__":
    main()
