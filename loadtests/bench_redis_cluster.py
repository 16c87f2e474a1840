"""Redirects on a 3-primary Redis Cluster against a single Redis, same HTTP workers.

    python -m loadtests.bench_redis_cluster [--rounds 3] [--duration 10] [--connections 64] [--workers 2]
                                            [--wait-replicas 0] [--json]

Both setups run production ``tracker serve --workers N`` with ClickHouse over HTTP
(``loadtests.chdb_http``) and ``TRACKER_STREAM_SHARDS=3``; no ingest runs (the streams
grow). The Redis side is Debian's ``redis-server`` either way, AOF on (``appendfsync
everysec``), on loopback TCP:

- *single*: one server;
- *cluster*: 6 nodes (3 primaries, 3 replicas; ``tests.redis_cluster``), ``REDIS_URL=redis+cluster://``;
  ``--replicas 0``: the 3 primaries alone (what the cluster client costs, without the replicas'
  CPU, which on this 2-core box competes with the server for the same cores).

The two alternate for ``--rounds`` rounds (the box is shared: alternating spreads other
jobs over both), each ``wrk -t1 -cC -dDs`` over 16 links, 127.0.0.1 only. Durability check
per run: the clicks added to every shard (``XINFO STREAM`` entries-added, summed over the
shards, on whichever primary holds them) equal the server's 302s. Prints the median
req/s and p99 of each and their ratio, and the CPU per redirect of the server's processes
and every Redis node (``loadtests.cpu``): on a box shared with other jobs req/s swings by
a factor of several between runs, the CPU a redirect costs much less. Nothing here
asserts: it measures and reports.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from loadtests.cpu import sum_cpu
from loadtests.serve import free_port
from loadtests.servers import PY, TRACKER, create_links, redirects_302, server_env, stop, wait_http
from loadtests.wrk import Result, codes_script, measured_run, run_wrk
from tests.redis_cluster import Cluster, start_cluster
from tracker.core import keys

SHARDS = 3


def _single_redis(work: Path) -> tuple[str, subprocess.Popen[bytes] | None, int]:
    port = free_port()
    d = work / "single"
    d.mkdir()
    subprocess.run(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(d), "--daemonize", "yes",
         "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--pidfile", str(d / "redis.pid"),
         "--logfile", str(d / "redis.log")],
        check=True,
    )
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    client.close()
    return f"redis://127.0.0.1:{port}/0", None, int((d / "redis.pid").read_text())


def _clicks_added(url: str) -> int:
    """Entries ever added to the click shards (ingest trimming does not lower it)."""
    if url.startswith("redis+cluster://"):
        client: Any = redis.RedisCluster.from_url(url.replace("redis+cluster://", "redis://").split(",")[0])
    else:
        client = redis.Redis.from_url(url)
    total = 0
    try:
        for stream in keys.click_streams(SHARDS):
            with contextlib.suppress(redis.ResponseError):  # no stream yet
                total += int(client.xinfo_stream(stream)["entries-added"])
    finally:
        client.close()
    return total


def run_one(
    name: str, redis_url: str, redis_pids: list[int], args: argparse.Namespace, work: Path
) -> tuple[Result, dict[str, Any]]:
    port, ch_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(work / f"{name}.log", "ab")  # noqa: SIM115 - closed in finally
    procs: list[subprocess.Popen[bytes]] = []
    try:
        clickhouse = subprocess.Popen(
            [PY, "-m", "loadtests.chdb_http", "--path", str(work / f"ch-{name}-{port}"), "--port", str(ch_port)],
            stdout=log, stderr=log,
        )
        procs.append(clickhouse)
        env = server_env({
            "REDIS_URL": redis_url, "CLICKHOUSE_URL": f"http://127.0.0.1:{ch_port}/bench",
            "TRACKER_STREAM_SHARDS": str(SHARDS), "TRACKER_REDIS_WAIT_REPLICAS": str(args.wait_replicas),
        })
        deadline = time.monotonic() + 60
        while subprocess.run([*TRACKER, "migrate"], env=env, stdout=log, stderr=log).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"tracker migrate kept failing; see {work / name}.log")
            time.sleep(0.5)
        server = subprocess.Popen([*TRACKER, "serve", "--port", str(port), "--workers", str(args.workers)],
                                  env=env, stdout=log, stderr=log)
        procs.append(server)
        wait_http(base + "/healthz", 90, server)
        codes, _ = create_links(base, redis_url)
        script = codes_script(codes, work)
        run_wrk("warm-up", port, script, args.connections, 2)
        time.sleep(0.5)
        added0, served0 = _clicks_added(redis_url), redirects_302(base)
        # CPU per redirect of the server's processes and every Redis node (replicas included):
        # the cost, which the other jobs on a shared box do not move the way they move req/s.
        def cpu() -> dict[str, float]:
            return {"server": sum(sum_cpu([server.pid]).values()), "redis": sum(sum_cpu(redis_pids).values())}

        result = measured_run(name, port, script, args.connections, args.duration, cpu)
        time.sleep(0.5)
        added, served = _clicks_added(redis_url) - added0, redirects_302(base) - served0
        return result, {"stream_clicks_added": added, "server_302s": served, "ok": added == served}
    finally:
        for proc in reversed(procs):
            stop(proc)
        log.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--workers", type=int, default=2, help="tracker serve --workers (default 2)")
    p.add_argument("--wait-replicas", type=int, default=0, help="TRACKER_REDIS_WAIT_REPLICAS (cluster runs only)")
    p.add_argument("--replicas", type=int, default=1, help="replicas per primary in the cluster (default 1)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if shutil.which("wrk") is None or shutil.which("redis-server") is None:
        print("wrk and redis-server are needed (apt-get install wrk redis-server)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="bench-rcluster-"))
    cluster: Cluster | None = None
    single_pid = 0
    runs: dict[str, list[tuple[Result, dict[str, Any]]]] = {"single": [], "cluster": []}
    try:
        single_url, _, single_pid = _single_redis(work)
        cluster = start_cluster(work / "cluster", replicas=args.replicas)
        wait = args.wait_replicas
        for _ in range(args.rounds):
            args.wait_replicas = 0  # one Redis has no replica to wait for
            runs["single"].append(run_one("single", single_url, [single_pid], args, work))
            args.wait_replicas = wait
            runs["cluster"].append(run_one("cluster", cluster.url, list(cluster.pids.values()), args, work))
    finally:
        if cluster is not None:
            cluster.stop()
        if single_pid:
            os.kill(single_pid, 15)
        shutil.rmtree(work, ignore_errors=True)
    med = {k: statistics.median(r.rps for r, _ in v) for k, v in runs.items()}
    cpu = {k: statistics.median(sum(r.cpu_us_per_request.values()) for r, _ in v) for k, v in runs.items()}
    redis_cpu = {k: statistics.median(r.cpu_us_per_request.get("redis", 0.0) for r, _ in v)
                 for k, v in runs.items()}
    p99 = {k: statistics.median(r.p99_ms for r, _ in v) for k, v in runs.items()}
    ratio = med["cluster"] / med["single"] if med["single"] else float("nan")
    print(f"\nRedirects, production serve --workers {args.workers}, {SHARDS} click shards, wrk -t1 "
          f"-c{args.connections} -d{args.duration}s, {args.rounds} alternating rounds, {os.cpu_count()} CPUs, "
          f"cluster of 3 primaries x {args.replicas} replica(s), WAIT replicas {args.wait_replicas}")
    for name, results in runs.items():
        each = ", ".join(f"{r.rps:.0f}" for r, _ in results)
        errors = sum(r.errors for r, _ in results)
        durable = all(d["ok"] for _, d in results)
        print(f"{name:<8} median {med[name]:>8.0f} req/s  p99 {p99[name]:6.2f} ms  (runs: {each})  errors {errors}  "
              f"302s == stream clicks: {durable}")
        print(f"{'':<8} CPU per redirect {cpu[name]:.0f} us (Redis nodes {redis_cpu[name]:.0f} us)")
    print(f"cluster / single req/s: {ratio:.3f} (target >= 0.90)")
    cost = cpu["single"] / cpu["cluster"] if cpu["cluster"] else float("nan")
    print(f"cluster / single by CPU per redirect (redirects per CPU second): {cost:.3f}")
    print(f"load average at the end: {os.getloadavg()[0]:.2f} (other jobs on the box distort req/s)")
    if args.json:
        print(json.dumps({
            "benchmark": "redis_cluster_redirect", "workers": args.workers, "connections": args.connections,
            "duration_s": args.duration, "rounds": args.rounds, "wait_replicas": args.wait_replicas,
            "replicas": args.replicas,
            "median_rps": med, "median_p99_ms": p99, "ratio": ratio, "median_cpu_us_per_redirect": cpu,
            "median_redis_cpu_us_per_redirect": redis_cpu, "cost_ratio": cost,
            "runs": {k: [{"rps": r.rps, "p99_ms": r.p99_ms, "errors": r.errors, "cpu_us": r.cpu_us_per_request,
                          "other_cpu_cores": r.other_cpu_cores, **d} for r, d in v]
                     for k, v in runs.items()},
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
