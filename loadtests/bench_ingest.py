"""Ingest throughput (stream -> ClickHouse) and click-to-report freshness, measured not asserted.

1. Throughput: fills the click stream with N realistic clicks (a few hundred
   distinct user agents, 1% HEAD requests, bots, referers, UTM tags), then one
   worker drains it into chDB with the production batch size. Prints rows/s
   (goal >= 150,000 with one worker process).
2. Freshness: the ingest loop runs as in embedded mode (default 1 s batches);
   clicks are XADDed one by one, as the redirect does, and each is timed until
   it is visible in ``clicks_daily``, what reports read (goal <= 2 s).

    python -m loadtests.bench_ingest [--n 1000000] [--agents 300] [--json] [--profile]

Redis is an embedded Valkey (AOF everysec, as in production) unless REDIS_URL is set.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis

from tests.ingest_helpers import make_clicks, produce
from tracker.core import keys
from tracker.ingest.agents import classify_agent
from tracker.ingest.worker import Worker
from tracker.settings import Settings
from tracker.storage import migrate
from tracker.storage.clickhouse import ClickHouse
from tracker.storage.embedded import EmbeddedRedis

GOAL_ROWS_PER_S = 150_000
GOAL_FRESHNESS_S = 2.0


def throughput(
    settings: Settings, r: redis.Redis, ch: ClickHouse, n: int, profile: bool, agents: int = 300
) -> dict[str, Any]:
    events = make_clicks(n, brands=20, links=2000, agents=agents, seed=7)
    t = time.perf_counter()
    produce(r, events, chunk=10_000)
    fill_s = time.perf_counter() - t
    # A real worker does not hold a million ClickEvents: drop them so the garbage
    # collector does not walk them during the drain.
    del events
    gc.collect()
    classify_agent.cache_clear()
    worker = Worker(settings, r, ch, name="bench")
    profiler = None
    if profile:
        from pyinstrument import Profiler

        profiler = Profiler()
        profiler.start()
    load_before = os.getloadavg()[0]
    redis_cpu = _redis_cpu(r)
    t = time.perf_counter()
    cpu = time.process_time()
    rows = worker.drain()
    took = time.perf_counter() - t
    cpu = time.process_time() - cpu
    redis_cpu = _redis_cpu(r) - redis_cpu
    if profiler is not None:
        profiler.stop()
        print(profiler.output_text(unicode=False, color=False, show_all=False))
    stored = ch.query("SELECT count() FROM clicks")[0][0]
    rollup = ch.query("SELECT sum(clicks) + sum(bot_clicks) FROM clicks_daily")[0][0]
    return {
        "clicks": n,
        "distinct_user_agents": agents + 7,
        "rows_inserted": rows,
        "rows_in_clickhouse": stored,
        "rows_in_rollup": rollup,
        "batches": worker.batches,
        "batch_size": settings.ingest_batch_size,
        "fill_seconds": round(fill_s, 2),
        "drain_seconds": round(took, 2),
        "rows_per_second": round(rows / took),
        # The box is shared: CPU seconds this process got (all its threads, chDB's too)
        # and the load average tell how much of the wall time was spent waiting for a core.
        "cpu_seconds": round(cpu, 2),
        "rows_per_cpu_second": round(rows / cpu),
        # Redis works for ingest too (the reads and their range records; an AOF rewrite if one
        # falls in the drain): worker and Redis CPU together are what one stream shard costs per click.
        "redis_cpu_seconds": round(redis_cpu, 2),
        "rows_per_cpu_second_with_redis": round(rows / (cpu + redis_cpu)),
        "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "goal_rows_per_second": GOAL_ROWS_PER_S,
        "ok": rows == n == stored == rollup and rows / took >= GOAL_ROWS_PER_S,
    }


def _redis_cpu(r: redis.Redis) -> float:
    """CPU seconds the Redis server has used: all its threads and its finished children (AOF rewrites)."""
    info: Any = r.info("cpu")
    return sum(float(info[k]) for k in ("used_cpu_user", "used_cpu_sys", "used_cpu_user_children",
                                        "used_cpu_sys_children"))


def freshness(settings: Settings, r: redis.Redis, ch: ClickHouse, samples: int) -> dict[str, Any]:
    worker = Worker(settings, r, ch, name="fresh")
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    waits = []
    try:
        for i, ev in enumerate(make_clicks(samples, seed=99, brands=1, links=1)):
            ev.brand_id = f"brd_fresh{i:06d}"
            ev.ts_ms = int(time.time() * 1000)
            time.sleep(0.3)  # clicks arrive at random moments of the batch window
            t = time.perf_counter()
            r.xadd(keys.CLICK_STREAM, {"e": ev.encode()})
            while not ch.query(
                "SELECT count() FROM clicks_daily WHERE brand_id = {b:String}", {"b": ev.brand_id}
            )[0][0]:
                time.sleep(0.01)
            waits.append(time.perf_counter() - t)
    finally:
        stop.set()
        thread.join(20)
    waits.sort()
    return {
        "samples": samples,
        "batch_seconds": settings.ingest_batch_seconds,
        "median_seconds": round(statistics.median(waits), 3),
        "p95_seconds": round(waits[int(0.95 * (len(waits) - 1))], 3),
        "max_seconds": round(waits[-1], 3),
        "goal_seconds": GOAL_FRESHNESS_S,
        "ok": waits[-1] <= GOAL_FRESHNESS_S,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="clicks to ingest (default 1,000,000)")
    parser.add_argument("--batch-size", type=int, default=50_000)
    parser.add_argument("--freshness-samples", type=int, default=20)
    parser.add_argument(
        "--agents", type=int, default=300,
        help="distinct user agents among the clicks (default 300; each new one costs a parse)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--profile", action="store_true", help="profile the drain with pyinstrument")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="tracker-bench-ingest-"))
    server = None
    url = os.environ.get("REDIS_URL")
    if not url:
        server = EmbeddedRedis(tmp)
        server.start()
        url = server.url
    settings = Settings(
        redis_url=url, clickhouse_url=f"chdb://{tmp / 'clickhouse'}", clickhouse_database="bench",
        ingest_batch_size=args.batch_size,
    )
    r = redis.Redis.from_url(url)
    r.delete(keys.CLICK_STREAM, keys.CONVERSION_STREAM)
    ch = ClickHouse.connect(settings)
    migrate.migrate(ch)
    try:
        result = {
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": "python -m loadtests.bench_ingest "
            + f"--n {args.n} --batch-size {args.batch_size} --agents {args.agents}",
            "machine": f"{platform.machine()} {os.cpu_count()} cpu, Python {platform.python_version()}",
            "throughput": throughput(settings, r, ch, args.n, args.profile, args.agents),
            "freshness": freshness(settings, r, ch, args.freshness_samples),
        }
    finally:
        r.close()
        if server is not None:
            server.stop()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        tp, fr = result["throughput"], result["freshness"]
        print(
            f"ingest: {tp['rows_per_second']:,} clicks/s ({tp['clicks']:,} clicks in {tp['drain_seconds']} s, "
            f"{tp['batches']} batches, {tp['distinct_user_agents']:,} distinct user agents; "
            f"goal {GOAL_ROWS_PER_S:,}) {'OK' if tp['ok'] else 'BELOW GOAL'}; "
            f"{tp['rows_per_cpu_second']:,} clicks per CPU second ({tp['rows_per_cpu_second_with_redis']:,} "
            f"counting Redis's {tp['redis_cpu_seconds']} s), load average {tp['load_average_1m']}"
        )
        print(
            f"freshness: median {fr['median_seconds']} s, p95 {fr['p95_seconds']} s, max {fr['max_seconds']} s "
            f"(goal <= {GOAL_FRESHNESS_S} s) {'OK' if fr['ok'] else 'ABOVE GOAL'}"
        )


if __name__ == "__main__":
    main()
