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
4. ``--flood``: clicks again, each time together with an unknown-code flood from rotating
   addresses (``loadtests.flood``: one repeated unknown code, then random ones).
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
import contextlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis

from loadtests.cpu import box_busy_seconds, cpu_per_request, sum_cpu, tree_cpu
from tracker.core import keys
from tracker.core.records import LinkRecord

PY = sys.executable
# The ``tracker`` command of this interpreter; ``python -m tracker.cli`` when it has none (an
# interpreter that runs the package from PYTHONPATH, e.g. to compare Python builds).
_SCRIPT = Path(PY).with_name("tracker")
TRACKER = [str(_SCRIPT)] if _SCRIPT.exists() else [PY, "-m", "tracker.cli"]
ADMIN = "tka_bench_admin_token_0123456789"
SECRET = "bench-secret-key-0123456789abcdefghijklmnopqrstuv"
LINKS = 16


@dataclass
class Result:
    name: str
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    non_3xx: int
    socket_errors: int
    # Server CPU per answered request (python processes, and valkey for tracker): a figure the
    # other jobs on a shared box do not distort the way they distort req/s.
    cpu_us_per_request: dict[str, float] = field(default_factory=dict)
    # wrk's own CPU per request (it shares the two cores with the server).
    wrk_cpu_us_per_request: float = 0.0
    # CPU that neither the server nor wrk used during the run, in cores (0 to the CPU
    # count): other jobs on a shared box, plus kernel network work not charged to a process.
    # Compare runs by it: a run with other jobs at 0.5 cores is not a quiet-box figure.
    other_cpu_cores: float = 0.0

    @property
    def cpu_vs_wrk(self) -> float:
        """Server CPU per request (all its processes) in units of wrk's CPU per request: a cost
        figure that the shared host's varying CPU speed moves far less than req/s or us."""
        if not self.wrk_cpu_us_per_request:
            return float("nan")
        return round(sum(self.cpu_us_per_request.values()) / self.wrk_cpu_us_per_request, 2)

    @property
    def errors(self) -> int:
        return self.non_3xx + self.socket_errors


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def _stop(proc: subprocess.Popen[bytes] | None, timeout: float = 20) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _api(base: str, method: str, path: str, token: str, body: dict[str, Any]) -> dict[str, Any] | None:
    req = urllib.request.Request(
        base + path,
        method=method,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            data: dict[str, Any] = json.loads(resp.read())
            return data
    except urllib.error.HTTPError as exc:
        if exc.code in (404, 405):
            return None  # the API is not there (yet)
        raise RuntimeError(f"{method} {path} answered {exc.code}: {exc.read()[:300]!r}") from None


def create_links(base: str, redis_url: str) -> tuple[list[str], str]:
    """16 links; through the API when it answers, else written where the registry writes them."""
    brand = _api(base, "POST", "/api/v1/brands", ADMIN, {"name": "Bench", "currency": "USD"})
    if brand is not None:
        key = brand["api_key"]
        campaign = _api(base, "POST", "/api/v1/campaigns", key,
                        {"name": "Bench", "commission": {"type": "percent", "value": "10"}})
        influencer = _api(base, "POST", "/api/v1/influencers", key, {"name": "Bench"})
        if campaign is not None and influencer is not None:
            codes = []
            for i in range(LINKS):
                link = _api(base, "POST", "/api/v1/links", key, {
                    "campaign_id": campaign["id"], "influencer_id": influencer["id"],
                    "destination_url": f"https://shop.example/product/{i}?ref=bench",
                })
                assert link is not None
                codes.append(link["code"])
            return codes, "api"
    client = redis.Redis.from_url(redis_url)
    codes = [f"bench{i:02d}" for i in range(LINKS)]
    for i, code in enumerate(codes):
        record = LinkRecord(
            id=1000 + i, code=code, brand_id="brd_bench", campaign_id="cmp_bench", influencer_id="inf_bench",
            destination_url=f"https://shop.example/product/{i}?ref=bench", coupon_code="", disabled=False,
            expires_at_ms=None, click_id_param="click_id", attribution_window_days=30,
        )
        client.set(keys.link(code), record.encode())
    client.close()
    return codes, "redis"


def _lua(codes: list[str], directory: Path) -> Path:
    path = directory / "codes.lua"
    items = ", ".join(f'"/{c}"' for c in codes)
    path.write_text(
        f"local paths = {{{items}}}\n"
        "local n = 0\n"
        "request = function()\n"
        "  n = n + 1\n"
        "  return wrk.format('GET', paths[(n % #paths) + 1])\n"
        "end\n"
    )
    return path


def _ms(value: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", value)
    if not m:
        return float("nan")
    n = float(m.group(1))
    return {"us": n / 1000, "ms": n, "s": n * 1000}[m.group(2)]


def run_wrk(name: str, port: int, script: Path, connections: int, seconds: int) -> Result:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script),
         f"http://127.0.0.1:{port}"],
        capture_output=True, text=True, timeout=seconds + 60, check=True,
    ).stdout
    return parse_wrk(name, out)


def parse_wrk(name: str, out: str) -> Result:
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    done = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    assert done, out
    secs = float(done.group(2)) * {"s": 1.0, "ms": 0.001, "m": 60.0}.get(done.group(3), 1.0)
    non = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return Result(
        name=name,
        requests=int(done.group(1)),
        seconds=secs,
        rps=int(done.group(1)) / secs,
        p50_ms=_ms(lat.get("50", "nan")),
        p99_ms=_ms(lat.get("99", "nan")),
        non_3xx=int(non.group(1)) if non else 0,
        socket_errors=sum(int(x) for x in sock.groups()) if sock else 0,
    )


def measured_run(
    name: str, port: int, script: Path, connections: int, seconds: int, server_cpu: Callable[[], dict[str, float]]
) -> Result:
    """``run_wrk`` plus where the CPU went: the server's per request, wrk's, and everyone else's."""
    box0, cpu0 = box_busy_seconds(), server_cpu()
    wrk0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = run_wrk(name, port, script, connections, seconds)
    wrk1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu1, box1 = server_cpu(), box_busy_seconds()
    n = max(result.requests, 1)
    result.cpu_us_per_request = cpu_per_request(cpu0, cpu1, n)
    wrk_cpu = (wrk1.ru_utime - wrk0.ru_utime) + (wrk1.ru_stime - wrk0.ru_stime)
    result.wrk_cpu_us_per_request = round(wrk_cpu / n * 1e6, 1)
    ours = sum(cpu1.values()) - sum(cpu0.values()) + wrk_cpu
    result.other_cpu_cores = round(max(0.0, (box1 - box0) - ours) / max(result.seconds, 1e-9), 2)
    return result


def _entries_added(client: redis.Redis) -> int:
    try:
        info = client.xinfo_stream(keys.CLICK_STREAM)
    except redis.ResponseError:
        return 0  # no stream yet
    return int(info["entries-added"])


def _redirects_302(base: str) -> int:
    with urllib.request.urlopen(base + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    m = re.search(r'^tracker_redirects_total\{status="302"\} ([\d.e+]+)$', text, re.M)
    return int(float(m.group(1))) if m else 0


def _server_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "CLICKHOUSE_URL")}
    env.update({"TRACKER_ADMIN_TOKEN": ADMIN, "TRACKER_SECRET_KEY": SECRET, "TRACKER_LOG_LEVEL": "WARNING"})
    env.update(extra)
    return env


def bench_tracker(args: argparse.Namespace, work: Path) -> tuple[Result, dict[str, Any]]:
    port = _free_port()
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
            ch_port = _free_port()
            clickhouse = subprocess.Popen(
                [PY, "-m", "loadtests.chdb_http", "--path", str(work / "ch"), "--port", str(ch_port)],
                stdout=log, stderr=log,
            )
            procs.append(clickhouse)
            env = _server_env({"REDIS_URL": redis_url, "CLICKHOUSE_URL": f"http://127.0.0.1:{ch_port}/bench"})
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
            env = _server_env({})
            redis_url = f"unix://{data / 'redis' / 'valkey.sock'}"
            cmd = [*TRACKER, "serve", "--port", str(port), "--data-dir", str(data), "--workers", str(args.workers)]
        server = subprocess.Popen(cmd, env=env, stdout=log, stderr=log)
        procs.append(server)
        _wait_http(base + "/healthz", 90, server)
        codes, how = create_links(base, redis_url)
        script = _lua(codes, work)
        run_wrk("warm-up", port, script, args.connections, 2)
        client = redis.Redis.from_url(redis_url)
        time.sleep(0.5)
        added0, served0 = _entries_added(client), _redirects_302(base)
        # The server's processes, and in production mode the ClickHouse endpoint (the inserts'
        # engine work when ingest runs; idle otherwise) and ingest when it runs.
        roots = [p.pid for p in (server, clickhouse, ingest) if p is not None]
        if valkey is not None:  # production mode: our Valkey is not the server's child
            roots.append(int(valkey.pidfile.read_text().strip()))
        result = measured_run("tracker", port, script, args.connections, args.duration, lambda: sum_cpu(roots))
        time.sleep(0.5)
        added = _entries_added(client) - added0
        served = _redirects_302(base) - served0
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

            durability["flood"] = run_floods(
                port, script, work, args.connections, args.duration, parse_wrk,
                args.flood_rate, args.flood_connections, result.rps,
                lambda: sum(sum_cpu(roots).values()), sum(result.cpu_us_per_request.values()),
            )
        return result, durability
    finally:
        for proc in reversed(procs):
            _stop(proc)
        if valkey is not None:
            valkey.stop()
        log.close()


def bench_bare(args: argparse.Namespace, work: Path) -> Result:
    port = _free_port()
    cmd = [PY, "-m", "uvicorn", "loadtests.bare_app:app", "--port", str(port), "--loop", "uvloop",
           "--http", "httptools", "--no-access-log", "--log-level", "warning"]
    if args.workers > 1:
        cmd += ["--workers", str(args.workers)]
    with open(work / "bare.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=log, cwd=Path(__file__).resolve().parent.parent)
        try:
            _wait_port(port, 30, proc)
            script = _lua([f"bench{i:02d}" for i in range(LINKS)], work)
            run_wrk("warm-up", port, script, args.connections, 2)
            result = measured_run(
                "bare starlette", port, script, args.connections, args.duration, lambda: tree_cpu(proc.pid)
            )
            return result
        finally:
            _stop(proc)


def _wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"bare app exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.1)
    raise RuntimeError(f"port {port} did not open within {timeout:.0f} s")


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

        print_floods(floods, tracker.rps)
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
