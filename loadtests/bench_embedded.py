"""Embedded ``tracker serve --workers N`` against the production topology with N workers, in rounds.

    python -m loadtests.bench_embedded [--workers 2] [--rounds 3] [--duration 10] [--connections 64] [--json]

Each round measures three topologies with ``loadtests.bench_redirect`` (wrk
``-t1 -cC -dDs``, 16 links, durability check: clicks in the stream = 302s the
server counted):

- production: a separate Valkey, ``loadtests.chdb_http`` in front of chDB,
  ``tracker migrate``, ``tracker serve --workers N``; no ingest runs (the figure
  the README's production rows give);
- production+ingest: the same plus one ``tracker ingest`` process on the same
  box, so the clicks go on into ClickHouse as in embedded mode (the same work);
- embedded: ``tracker serve --workers N`` with no ``REDIS_URL``/``CLICKHOUSE_URL``:
  its main process runs Valkey, chDB and ingest (which moves the clicks into
  chDB during the measurement, at nice 10), N workers serve HTTP.

The order rotates by round, so a slow spell of the shared box does not always
fall on the same topology. Printed per run: req/s, p99, errors, server CPU per request
(all its processes, Valkey included; in microseconds and in units of wrk's own CPU
per request, which the host's varying CPU speed moves far less than req/s), and
the CPU other jobs used meanwhile; then the medians and embedded / production
(goal: at least 0.9). Nothing here asserts: it measures and reports.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from loadtests.bench_redirect import bench_tracker
from loadtests.wrk import Result

GOAL = 0.9


MODES = ("production", "production+ingest", "embedded")


def _one(mode: str, args: argparse.Namespace) -> tuple[Result, dict[str, Any]]:
    run = argparse.Namespace(duration=args.duration, connections=args.connections, workers=args.workers,
                             production=mode != "embedded", embedded=mode == "embedded",
                             with_ingest=mode == "production+ingest", flood=False)
    work = Path(tempfile.mkdtemp(prefix=f"bench-{mode}-"))
    try:
        return bench_tracker(run, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--workers", type=int, default=2, help="HTTP workers on both sides (default 2)")
    p.add_argument("--rounds", type=int, default=3, help="rounds, each measuring both (default 3)")
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    p.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    p.add_argument("--json", action="store_true", help="also print one JSON object")
    args = p.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    runs: dict[str, list[tuple[Result, dict[str, Any]]]] = {m: [] for m in MODES}
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"{'round':<6}{'topology':<19}{'req/s':>9}{'p99 ms':>8}{'errors':>8}{'CPU us/req':>12}{'x wrk':>7}"
          f"{'other jobs':>12}  durable")
    for n in range(args.rounds):
        for mode in MODES[n % 3:] + MODES[:n % 3]:
            result, durability = _one(mode, args)
            runs[mode].append((result, durability))
            cpu = sum(result.cpu_us_per_request.values())
            print(f"{n + 1:<6}{mode:<19}{result.rps:>9.0f}{result.p99_ms:>8.2f}{result.errors:>8}{cpu:>12.1f}"
                  f"{result.cpu_vs_wrk:>7.2f}{result.other_cpu_cores:>9.2f} cores  {durability['ok']}", flush=True)
    med = {m: statistics.median(r.rps for r, _ in rs) for m, rs in runs.items()}
    cost = {m: statistics.median(r.cpu_vs_wrk for r, _ in rs) for m, rs in runs.items()}
    ratio = med["embedded"] / med["production"] if med["production"] else float("nan")
    same_work = med["embedded"] / med["production+ingest"] if med["production+ingest"] else float("nan")
    print("\nmedian req/s: " + ", ".join(f"{m} {med[m]:.0f}" for m in MODES))
    print(f"embedded / production {ratio:.2f} (goal >= {GOAL}: {'met' if ratio >= GOAL else 'MISSED'}); "
          f"embedded / production+ingest {same_work:.2f}")
    print("median server CPU per request in wrk units: " + ", ".join(f"{m} {cost[m]:.2f}" for m in MODES))
    print(f"{args.rounds} rounds from {started}, {args.workers} workers, wrk -t1 -c{args.connections} "
          f"-d{args.duration}s, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"load average at the end {os.getloadavg()[0]:.2f}")
    if args.json:
        print(json.dumps({
            "benchmark": "embedded_vs_production", "started": started, "workers": args.workers,
            "rounds": args.rounds, "duration_s": args.duration, "connections": args.connections,
            "median_rps": med, "median_cpu_vs_wrk": cost, "ratio": ratio, "ratio_same_work": same_work,
            "goal": GOAL,
            "runs": {m: [{**asdict(r), "errors": r.errors, "durability": d} for r, d in rs] for m, rs in runs.items()},
        }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
