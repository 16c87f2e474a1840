"""Redirect benchmark: tracker's ``GET /{code}`` (durable click logging) against a bare Starlette 302.

    /work/venv/bin/python -m loadtests.bench_redirect [--duration 10] [--connections 64] [--json]
                                                     [--production] [--workers 2] [--flood]

1. Starts ``tracker serve`` (embedded mode, one process: its own Valkey, chDB and
   in-process ingest) on a fresh data directory, creates 16 links (through the
   API when it exists, else by writing their records where the registry does),
   warms up, then drives it with ``wrk -t1 -cC -dDs --latency`` and a Lua script
   that cycles over the codes, 127.0.0.1 only.
2. Durability check: clicks added to the Redis stream during the run (``XINFO
   STREAM`` entries-added, which ingest trimming does not lower) must equal the
   302s the server answered (its ``tracker_redirects_total{status="302"}``), and
   wrk's own count may only be lower by the requests in flight at its cut-off.
3. Starts ``loadtests.bare_app`` under uvicorn (uvloop + httptools, same process
   count) and drives it the same way.
4. ``--flood``: rounds of clicks alone and together with an unknown-code flood from rotating
   addresses (``loadtests.flood``: one repeated malformed code, and random well-formed ones).
5. Prints a table (req/s, p50, p99, errors, ratio) and, with ``--json``, one JSON
   object for the harness.

``--production`` (implied by ``--workers N`` with N > 1) measures the production topology instead: a separate
Valkey, ClickHouse over HTTP (``loadtests.chdb_http`` in front of chDB, the only
ClickHouse server this machine can run), ``tracker migrate`` and ``tracker serve
--workers N``; no ingest runs, so the stream just grows. The bare app then runs
with N uvicorn workers too.

``--with-ingest`` runs ``tracker ingest`` beside the production server, so the clicks
go on into ClickHouse during the measurement as they do in embedded mode (its CPU
counts as the server's).

``--embedded`` with ``--workers N`` measures embedded ``tracker serve --workers N``
(the main process keeps Valkey, chDB and ingest, which runs during the measurement;
N workers serve HTTP). ``loadtests.bench_embedded`` alternates it with the
production topology in rounds.

Nothing here asserts: it measures and reports.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import redis

from loadtests.cpu import sum_cpu, tree_cpu
from loadtests.serve import free_port
from loadtests.servers import (
    LINKS,
    PY,
    TRACKER,
    create_links,
    entries_added,
    redirects_302,
    server_env,
    start_bare,
    stop,
    wait_http,
    wait_port,
)
from loadtests.wrk import Result, codes_script, measured_run, run_wrk


def bench_tracker(args: argparse.Namespace, work: Path) -> tuple[Result, dict[str, Any]]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    data = work / "data"
    procs: list[subprocess.Popen[bytes]] = []
    log = open(work / "tracker.log", "wb")  # noqa: SIM115 - closed in finally
    valkey = None
    ingest: subprocess.Popen[bytes] | None = None
    clickhouse: subprocess.Popen[bytes] | None = None
    try:
        if args.production:
            from tracker.storage.embedded import EmbeddedRedis

            valkey = EmbeddedRedis(work)
            valkey.start()
            redis_url = valkey.url
            ch_port = free_port()
            clickhouse = subprocess.Popen(
                [PY, "-m", "loadtests.chdb_http", "--path", str(work / "ch"), "--port", str(ch_port)],
                stdout=log, stderr=log,
            )
            procs.append(clickhouse)
            env = server_env({"REDIS_URL": redis_url, "CLICKHOUSE_URL": f"http://127.0.0.1:{ch_port}/bench"})
            deadline = time.monotonic() + 60
            while subprocess.run([*TRACKER, "migrate"], env=env, stdout=log, stderr=log).returncode != 0:
                if time.monotonic() > deadline:
                    raise RuntimeError("tracker migrate kept failing; see tracker.log")
                time.sleep(0.5)
            cmd = [*TRACKER, "serve", "--port", str(port), "--workers", str(args.workers)]
            if getattr(args, "with_ingest", False):  # the same work as embedded: clicks into ClickHouse
                ingest = subprocess.Popen([*TRACKER, "ingest"], env=env, stdout=log, stderr=log)
                procs.append(ingest)
        else:
            env = server_env({})
            redis_url = f"unix://{data / 'redis' / 'valkey.sock'}"
            cmd = [*TRACKER, "serve", "--port", str(port), "--data-dir", str(data), "--workers", str(args.workers)]
        server = subprocess.Popen(cmd, env=env, stdout=log, stderr=log)
        procs.append(server)
        wait_http(base + "/healthz", 90, server)
        codes, how = create_links(base, redis_url)
        script = codes_script(codes, work)
        run_wrk("warm-up", port, script, args.connections, 2)
        client = redis.Redis.from_url(redis_url)
        time.sleep(0.5)
        added0, served0 = entries_added(client), redirects_302(base)
        # The server's processes, and in production mode the ClickHouse endpoint (the inserts'
        # engine work when ingest runs; idle otherwise) and ingest when it runs.
        roots = [p.pid for p in (server, clickhouse, ingest) if p is not None]
        if valkey is not None:  # production mode: our Valkey is not the server's child
            roots.append(int(valkey.pidfile.read_text().strip()))
        result = measured_run("tracker", port, script, args.connections, args.duration, lambda: sum_cpu(roots))
        time.sleep(0.5)
        added = entries_added(client) - added0
        served = redirects_302(base) - served0
        client.close()
        counted = result.requests - result.non_3xx
        durability = {
            "links_created_via": how,
            "stream_clicks_added": added,
            "server_302s": served,
            "wrk_302s": counted,
            "in_flight_allowance": args.connections,
            "ok": (served is None or added == served) and 0 <= added - counted <= args.connections,
        }
        if args.flood:
            from loadtests.flood import run_floods

            def alone() -> tuple[float, float]:
                run = measured_run("alone", port, script, args.connections, args.flood_seconds,
                                   lambda: sum_cpu(roots))
                return run.rps, sum(run.cpu_us_per_request.values())

            durability["flood"] = run_floods(
                port, script, work, args.connections, args.flood_seconds, args.flood_rate, args.flood_connections,
                args.flood_rounds, alone, lambda: sum(sum_cpu(roots).values()),
            )
        return result, durability
    finally:
        for proc in reversed(procs):
            stop(proc)
        if valkey is not None:
            valkey.stop()
        log.close()


def bench_bare(args: argparse.Namespace, work: Path) -> Result:
    port = free_port()
    with open(work / "bare.log", "wb") as log:
        proc = start_bare(port, args.workers, log)
        try:
            wait_port(port, 30, proc, "bare app")
            script = codes_script([f"bench{i:02d}" for i in range(LINKS)], work)
            run_wrk("warm-up", port, script, args.connections, 2)
            result = measured_run(
                "bare starlette", port, script, args.connections, args.duration, lambda: tree_cpu(proc.pid)
            )
            return result
        finally:
            stop(proc)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--duration", type=int, default=10, help="seconds per measured wrk run (default 10)")
    p.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    p.add_argument("--workers", type=int, default=1,
                   help="server processes; >1 implies --production unless --embedded")
    p.add_argument("--production", action="store_true",
                   help="separate Valkey and ClickHouse over HTTP, no in-process ingest (production mode)")
    p.add_argument("--flood", action="store_true",
                   help="also measure clicks under an unknown-code flood from rotating addresses (loadtests.flood)")
    p.add_argument("--flood-rate", type=int, default=1000, help="unknown codes a second in the flood (default 1000)")
    p.add_argument("--flood-connections", type=int, default=100, help="wrk connections of the flood (default 100)")
    p.add_argument("--flood-rounds", type=int, default=5,
                   help="rounds of clicks alone, under the control flood, under the random flood (default 5)")
    p.add_argument("--flood-seconds", type=int, default=5, help="seconds of each flood round's runs (default 5)")
    p.add_argument("--embedded", action="store_true",
                   help="with --workers N: embedded serve --workers N (its own Valkey, chDB and ingest)")
    p.add_argument("--with-ingest", action="store_true",
                   help="production mode: also run `tracker ingest` during the measurement (counted as server CPU)")
    p.add_argument("--json", action="store_true", help="also print one JSON object")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = p.parse_args(argv)
    if args.embedded and args.production:
        p.error("--embedded and --production exclude each other")
    args.production = args.production or (args.workers > 1 and not args.embedded)
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="bench-redirect-"))
    try:
        tracker, durability = bench_tracker(args, work)
        bare = bench_bare(args, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work directory kept: {work}", file=sys.stderr)
    ratio = tracker.rps / bare.rps if bare.rps else float("nan")
    mode = (f"production, {args.workers} worker(s)" if args.production
            else f"embedded, {args.workers} workers" if args.workers > 1 else "embedded, 1 process")
    print(f"\nRedirect benchmark ({mode}; wrk -t1 -c{args.connections} -d{args.duration}s, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()} at {PY})")
    print(f"{'server':<16}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'other jobs':>12}{'x wrk':>7}"
          "   CPU us/request (server; wrk)")
    for r in (tracker, bare):
        cpu = ", ".join(f"{k} {v}" for k, v in sorted(r.cpu_us_per_request.items()))
        other = f"{r.other_cpu_cores:.2f} cores"
        print(f"{r.name:<16}{r.rps:>10.0f}{r.p50_ms:>9.2f}{r.p99_ms:>9.2f}{r.errors:>8}{other:>12}"
              f"{r.cpu_vs_wrk:>7.2f}   {cpu}; wrk {r.wrk_cpu_us_per_request}")
    print("x wrk: server CPU per request over wrk's; the host's varying CPU speed scales both alike")
    print(f"load average at the end: {os.getloadavg()[0]:.2f} (other jobs on the box distort req/s)")
    print(f"ratio tracker/bare: {ratio:.2f}")
    floods = durability.pop("flood", None)
    print(f"durability: {durability}")
    if floods is not None:
        from loadtests.flood import print_floods

        print_floods(floods)
        durability["flood"] = floods
    goals = {
        "rps>=20000": tracker.rps >= 20_000,
        "p99<=15ms": tracker.p99_ms <= 15,
        "ratio>=0.5": ratio >= 0.5,
        "zero_errors": tracker.errors == 0,
        "durable": bool(durability["ok"]),
    }
    if floods is not None:
        goals["flood_cost<=10%"] = floods["clicks_over_alone"]["random"] >= 0.9
    print("goals: " + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in goals.items()))
    if args.json:
        print(json.dumps({
            "benchmark": "redirect", "mode": mode, "connections": args.connections, "duration_s": args.duration,
            "cpus": os.cpu_count(), "load_average": os.getloadavg()[0],
            "python": f"{platform.python_version()} {PY}",
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "tracker": {**asdict(tracker), "errors": tracker.errors, "cpu_vs_wrk": tracker.cpu_vs_wrk},
            "bare": {**asdict(bare), "errors": bare.errors, "cpu_vs_wrk": bare.cpu_vs_wrk},
            "ratio": ratio, "durability": durability, "goals": goals,
        }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
