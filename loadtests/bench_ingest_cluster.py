"""Ingest on a 3-primary Redis Cluster: S click shards, W ingest worker processes, one ClickHouse.

    python -m loadtests.bench_ingest_cluster [--n 600000] [--rounds 3] [--modes 1x1,3x3] [--replicas 0]
                                             [--batch-size 50000] [--agents 300] [--json]

Everything runs on this box, on loopback only:

- a Redis Cluster of Debian's ``redis-server`` (3 primaries, ``--replicas`` each; AOF everysec;
  ``tests.redis_cluster``, as ``bench_redis_cluster`` uses);
- chDB behind ClickHouse's HTTP interface in a process of its own (``loadtests.chdb_http``): chDB
  has one owner process, and production ingest workers reach ClickHouse over HTTP;
- ``W`` ingest worker processes, each the worker ``tracker ingest --once`` runs (``Worker.drain``,
  settings from the environment as production reads them, ``TRACKER_STREAM_SHARDS=S``), started
  and connected first, then released at once so their start-up is not timed.

A mode ``SxW`` fills ``S`` click shards with the same ``--n`` realistic clicks (``bench_ingest``'s
generator, dealt round robin), migrates a fresh database on the same chDB server, releases
the workers and times the drain until the last worker has every click in ClickHouse. Workers
are not pinned to shards: all of them read every shard through the one consumer group (the
ranges of ``tracker/ingest/delivery.py``), so ``3x3`` is three workers sharing three shards.
Checked per run: ClickHouse received exactly ``--n`` rows, none twice (an audit table fed by a
materialized view, which merges do not fold), and the daily rollup adds up to ``--n``.

Modes alternate for ``--rounds`` rounds (the box is shared). Printed per mode: the median
clicks/s over all workers and per worker, and the CPU seconds per million clicks of the
workers, the chDB server, the Redis nodes and of everything else on the box meanwhile.
Nothing here asserts: it measures and reports.
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
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import redis

from loadtests.cpu import box_busy_seconds, sum_cpu
from loadtests.serve import free_port
from loadtests.servers import PY, stop, wait_http
from tests.ingest_helpers import audit, make_clicks
from tests.redis_cluster import Cluster, start_cluster
from tracker.core import keys
from tracker.settings import Settings
from tracker.storage import migrate, redis_client
from tracker.storage.clickhouse import ClickHouse

FILL_CHUNK = 10_000


@dataclass(frozen=True)
class Mode:
    shards: int
    workers: int

    @property
    def name(self) -> str:
        return f"{self.shards}x{self.workers}"

    @classmethod
    def parse(cls, text: str) -> Mode:
        shards, _, workers = text.partition("x")
        return cls(int(shards), int(workers))


@dataclass
class Setup:
    """What every run shares: the cluster, the chDB HTTP server, the clicks, the options."""

    cluster: Cluster
    chdb: subprocess.Popen[bytes]
    ch_port: int
    payloads: list[bytes]
    args: argparse.Namespace
    log: IO[bytes]


# ---- one worker process --------------------------------------------------------------------------


def worker_main() -> int:
    """``--worker``: connect as ``tracker ingest`` does, say ``ready``, drain on ``go``, print what it did."""
    from tracker.ingest.worker import Worker

    settings = Settings.from_env()
    r = redis_client.connect_sync(settings)
    ch = ClickHouse.connect(settings, create_database=False)
    worker = Worker(settings, r, ch)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 1
    start, cpu = time.time(), time.process_time()
    rows = worker.drain()
    end = time.time()
    print(json.dumps({"rows": rows, "start": start, "end": end, "cpu_seconds": time.process_time() - cpu,
                      "batches": worker.batches}), flush=True)
    r.close()
    ch.close()
    return 0


# ---- one run -------------------------------------------------------------------------------------


def fill(cluster: Cluster, payloads: list[bytes], shards: int) -> None:
    """Deal the clicks round robin over the shards, pipelined to each shard's primary."""
    streams = keys.click_streams(shards)
    client: Any = redis.RedisCluster(host="127.0.0.1", port=cluster.ports[0])
    try:
        nodes = {s: redis_client.primary_sync(client, s) for s in streams}
    finally:
        client.close()
    for i, stream in enumerate(streams):
        host, port = nodes[stream]
        mine = payloads[i::shards]
        with redis.Redis(host=host, port=port) as r:
            for start in range(0, len(mine), FILL_CHUNK):
                with r.pipeline(transaction=False) as p:
                    for payload in mine[start : start + FILL_CHUNK]:
                        p.xadd(stream, {"e": payload})
                    p.execute()


def _database(setup: Setup, name: str) -> ClickHouse:
    ch = ClickHouse.connect(Settings(clickhouse_url=f"http://127.0.0.1:{setup.ch_port}/{name}"))
    migrate.migrate(ch)
    audit(ch)  # every row inserted, so a click stored twice is seen although merges fold it in `clicks`
    return ch


def _start_workers(setup: Setup, mode: Mode, database: str) -> list[subprocess.Popen[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "CLICKHOUSE_", "TRACKER_"))}
    env.update({
        "REDIS_URL": setup.cluster.url, "CLICKHOUSE_URL": f"http://127.0.0.1:{setup.ch_port}/{database}",
        "TRACKER_STREAM_SHARDS": str(mode.shards), "TRACKER_INGEST_BATCH_SIZE": str(setup.args.batch_size),
        "TRACKER_LOG_LEVEL": "WARNING", "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
    })
    procs = []
    for _ in range(mode.workers):
        proc = subprocess.Popen([PY, "-m", "loadtests.bench_ingest_cluster", "--worker"], env=env, text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=setup.log)
        procs.append(proc)
    try:
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError(f"an ingest worker did not start (exit {proc.wait(10)}); see the log")
    except BaseException:
        _kill(procs)
        raise
    return procs


def _kill(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def run_mode(setup: Setup, mode: Mode, round_no: int) -> dict[str, Any]:
    n = len(setup.payloads)
    database = f"bench_{mode.name}_{round_no}_{os.getpid()}"
    setup.cluster.flush()
    ch = _database(setup, database)
    procs: list[subprocess.Popen[str]] = []
    try:
        t = time.perf_counter()
        fill(setup.cluster, setup.payloads, mode.shards)
        fill_seconds = time.perf_counter() - t
        procs = _start_workers(setup, mode, database)
        load_before = os.getloadavg()[0]
        redis_pids = list(setup.cluster.pids.values())
        chdb0, redis0, box0 = sum_cpu([setup.chdb.pid]), sum_cpu(redis_pids), box_busy_seconds()
        go = time.time()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        reports = []
        for proc in procs:
            out, _ = proc.communicate(timeout=600)
            if proc.returncode != 0:
                raise RuntimeError(f"an ingest worker failed (exit {proc.returncode}); see the log")
            reports.append(json.loads(out.strip().splitlines()[-1]))
        chdb1, redis1, box1 = sum_cpu([setup.chdb.pid]), sum_cpu(redis_pids), box_busy_seconds()
        drain_seconds = max(w["end"] for w in reports) - go
        rows, distinct = ch.query("SELECT count(), uniqExact(click_id) FROM clicks_inserted")[0]
        stored = ch.query("SELECT count() FROM clicks")[0][0]
        rollup = ch.query("SELECT sum(clicks) + sum(bot_clicks) FROM clicks_daily")[0][0]
    finally:
        _kill(procs)  # only a run that failed leaves any
        with contextlib.suppress(Exception):
            ch.command(f"DROP DATABASE IF EXISTS `{database}`")
        ch.close()
    cpu = {
        "workers": sum(w["cpu_seconds"] for w in reports),
        "chdb_server": sum(chdb1.values()) - sum(chdb0.values()),
        "redis_nodes": sum(redis1.values()) - sum(redis0.values()),
    }
    cpu["other"] = max(0.0, box1 - box0 - sum(cpu.values()))
    return {
        "mode": mode.name, "shards": mode.shards, "workers": mode.workers, "round": round_no, "clicks": n,
        "fill_seconds": round(fill_seconds, 2), "drain_seconds": round(drain_seconds, 3),
        "clicks_per_second": round(n / drain_seconds),
        "per_worker": [{"rows": w["rows"], "batches": w["batches"], "seconds": round(w["end"] - w["start"], 3),
                        "cpu_seconds": round(w["cpu_seconds"], 2)} for w in reports],
        "cpu_seconds": {k: round(v, 2) for k, v in cpu.items()},
        "cpu_seconds_per_million": {k: round(v / n * 1e6, 2) for k, v in cpu.items()},
        # Cores busy during the drain: ingest's own (workers, chDB server, Redis) and everything else's.
        "cores": {"ingest": round((cpu["workers"] + cpu["chdb_server"] + cpu["redis_nodes"]) / drain_seconds, 2),
                  "other": round(cpu["other"] / drain_seconds, 2)},
        "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "rows_inserted": rows, "distinct_inserted": distinct, "rows_in_clicks": stored, "rows_in_rollup": rollup,
        "ok": rows == distinct == stored == rollup == n == sum(w["rows"] for w in reports),
    }


# ---- summary -------------------------------------------------------------------------------------


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Medians per mode over its rounds."""
    out: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(r["mode"] for r in runs):
        mine = [r for r in runs if r["mode"] == name]
        workers = mine[0]["workers"]
        rates = [r["clicks_per_second"] for r in mine]
        out[name] = {
            "shards": mine[0]["shards"], "workers": workers,
            "median_clicks_per_second": round(statistics.median(rates)),
            "median_clicks_per_second_per_worker": round(statistics.median(rates) / workers),
            "runs_clicks_per_second": rates,
            "median_cpu_seconds_per_million": {
                k: round(statistics.median(r["cpu_seconds_per_million"][k] for r in mine), 2)
                for k in mine[0]["cpu_seconds_per_million"]
            },
            "median_cores": {k: round(statistics.median(r["cores"][k] for r in mine), 2) for k in ("ingest", "other")},
            "load_average_1m": [r["load_average_1m"] for r in mine],
            "exact": all(r["ok"] for r in mine),
        }
    return out


def render(summary: dict[str, dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"Ingest on a 3-primary Redis Cluster ({args.replicas} replica(s) each), chDB over HTTP in its own process, "
        f"{args.n:,} clicks per run, batch {args.batch_size:,}, {args.rounds} alternating round(s), "
        f"{os.cpu_count()} CPUs",
        f"{'mode':<6} {'shards':>6} {'workers':>7} {'clicks/s':>9} {'per worker':>10}   CPU s per million clicks: "
        "workers / chDB server / Redis nodes / rest of box   cores busy: ingest / rest of box   exact   (runs)",
    ]
    for name, s in summary.items():
        c = s["median_cpu_seconds_per_million"]
        lines.append(
            f"{name:<6} {s['shards']:>6} {s['workers']:>7} {s['median_clicks_per_second']:>9,} "
            f"{s['median_clicks_per_second_per_worker']:>10,}   {c['workers']:.1f} / {c['chdb_server']:.1f} / "
            f"{c['redis_nodes']:.1f} / {c['other']:.1f}   {s['median_cores']['ingest']:.2f} / "
            f"{s['median_cores']['other']:.2f}   {s['exact']}   "
            f"({', '.join(f'{x:,}' for x in s['runs_clicks_per_second'])})"
        )
    names = list(summary)
    if len(names) >= 2:
        base, top = summary[names[0]], summary[names[-1]]
        ratio = top["median_clicks_per_second"] / base["median_clicks_per_second"]
        lines.append(f"{names[-1]} / {names[0]} clicks/s: {ratio:.2f}")
    lines.append(f"load average at the end: {os.getloadavg()[0]:.2f} (other jobs on the box distort clicks/s)")
    return "\n".join(lines)


# ---- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--n", type=int, default=600_000, help="clicks per run (default 600,000)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--modes", default="1x1,3x3", help="SHARDSxWORKERS, comma-separated (default 1x1,3x3)")
    p.add_argument("--replicas", type=int, default=0, help="replicas per primary (default 0)")
    p.add_argument("--batch-size", type=int, default=50_000)
    p.add_argument("--agents", type=int, default=300, help="distinct user agents among the clicks")
    p.add_argument("--json", action="store_true", help="also print every run as one JSON document")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker_main()
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        print("redis-server and redis-cli are needed (apt-get install redis-server)", file=sys.stderr)
        return 2
    modes = [Mode.parse(m) for m in args.modes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-cluster-"))
    payloads = [ev.encode() for ev in make_clicks(args.n, brands=20, links=2000, agents=args.agents, seed=7)]
    runs: list[dict[str, Any]] = []
    cluster: Cluster | None = None
    chdb: subprocess.Popen[bytes] | None = None
    log = open(work / "bench.log", "ab")  # noqa: SIM115 - closed in finally
    try:
        cluster = start_cluster(work / "cluster", replicas=args.replicas)
        ch_port = free_port()
        chdb = subprocess.Popen([PY, "-m", "loadtests.chdb_http", "--path", str(work / "ch"), "--port", str(ch_port)],
                                stdout=log, stderr=log)
        wait_http(f"http://127.0.0.1:{ch_port}/ping", 60, chdb)
        setup = Setup(cluster, chdb, ch_port, payloads, args, log)
        for round_no in range(args.rounds):
            for mode in modes:
                runs.append(run_mode(setup, mode, round_no))
                print(f"round {round_no + 1} {mode.name}: {runs[-1]['clicks_per_second']:,} clicks/s, "
                      f"exact {runs[-1]['ok']}", file=sys.stderr, flush=True)
    except BaseException:
        log.flush()
        print((work / "bench.log").read_text(errors="replace")[-3000:], file=sys.stderr)
        raise
    finally:
        stop(chdb)
        if cluster is not None:
            cluster.stop()
        log.close()
        shutil.rmtree(work, ignore_errors=True)
    summary = summarize(runs)
    print(render(summary, args))
    if args.json:
        print(json.dumps({
            "benchmark": "ingest_cluster", "command": "python -m loadtests.bench_ingest_cluster "
            + " ".join(argv if argv is not None else sys.argv[1:]),
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "summary": summary, "runs": runs,
        }, indent=2))
    return 0 if all(r["ok"] for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
