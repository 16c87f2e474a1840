"""The benchmark harness: one command, one table, results kept in loadtests/results/.

    /work/venv/bin/python -m loadtests.bench [--seconds 10] [--connections 64] [--skip ingest,reports]

In one run, on this machine, with the same wrk settings and one server process each:
- `tracker serve` (embedded: durable click logging through the group-committed
  stream) answering a real short link, checked against its own counters (every
  302 sent must be an enqueued click);
- a bare Starlette app answering 302 from memory (uvloop + httptools, as serve);
- nginx `return 302` when installed, the physical reference;
- the process RSS of `tracker serve` (with its embedded Valkey) idle and at peak;
- ingest rows/s and freshness, postback rates, and report p95 from the other harness
  modules (`loadtests.bench_ingest`, `bench_postbacks`, `bench_reports`, each `--json`).
Each step has a timeout; the whole run stays under ~10 minutes. DESIGN.md's targets
are printed beside the numbers (``loadtests.results_table``). Nothing here asserts: the numbers are the output.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from loadtests.results_table import render, table
from loadtests.serve import EmbeddedServe, free_port, rss_bytes, seed
from loadtests.servers import counter, start_bare, stop, wait_port
from loadtests.wrk import run_url

RESULTS = Path(__file__).parent / "results"
REPORTS_DATA = Path(tempfile.gettempdir()) / "tracker-bench-harness-reports"


class RssSampler:
    """Peak RSS of a process (and children) sampled in a thread while a load runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes(self.pid))
            self._stop.wait(0.25)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# --- the steps ----------------------------------------------------------------------------------------


def bench_tracker(workdir: Path, seconds: int, connections: int) -> dict[str, Any]:
    serve = EmbeddedServe(workdir / "serve")
    with serve:
        s = seed(serve.base, serve.admin_token)
        code = s.links[0]["code"]
        url = f"{serve.base}/{code}?utm_source=bench"
        first = httpx.get(url, follow_redirects=False, timeout=5)
        if first.status_code != 302:
            raise RuntimeError(f"GET /{code} answered {first.status_code}, not 302: {first.text[:300]}")
        rss_idle = serve.rss()
        run_url(url, 2, connections)  # warm-up: caches, connection pools
        # The redirect counters are summed in process and published every 0.2 s: let the
        # warm-up's (and then the run's) last clicks reach /metrics before reading it.
        time.sleep(1.0)
        before = httpx.get(f"{serve.base}/metrics", timeout=10).text
        with RssSampler(serve.proc.pid if serve.proc else 0) as sampler:
            result = run_url(url, seconds, connections)
        time.sleep(1.0)
        after = httpx.get(f"{serve.base}/metrics", timeout=10).text
        sent = counter(after, "tracker_redirects_total", '{status="302"}') - counter(
            before, "tracker_redirects_total", '{status="302"}'
        )
        logged = sum(
            counter(after, n) - counter(before, n)
            for n in ("tracker_clicks_enqueued_total", "tracker_clicks_spooled_total")
        )
        result.update(
            rss_idle_mb=round(rss_idle / 2**20, 1),
            rss_peak_mb=round(sampler.peak / 2**20, 1),
            redirects_counted=int(sent),
            clicks_logged=int(logged),
        )
    return result


def bench_bare(seconds: int, connections: int) -> dict[str, Any]:
    port = free_port()
    # The same baseline app as loadtests.bench_redirect, so the two harnesses compare.
    proc = start_bare(port, 1, subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/bench00"
        wait_port(port, 30, proc, "bare app")
        run_url(url, 2, connections)
        with RssSampler(proc.pid) as sampler:
            result = run_url(url, seconds, connections)
        result["rss_peak_mb"] = round(sampler.peak / 2**20, 1)
        return result
    finally:
        stop(proc)


def bench_nginx(workdir: Path, seconds: int, connections: int, workers: int = 1) -> dict[str, Any] | None:
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if binary is None:
        return None
    prefix = workdir / "nginx"
    prefix.mkdir(parents=True, exist_ok=True)
    port = free_port()
    template = (Path(__file__).parent / "nginx.conf").read_text()
    conf = prefix / "nginx.conf"
    conf.write_text(template.format(workers=workers, port=port, prefix=prefix))
    proc = subprocess.Popen([binary, "-p", str(prefix), "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}/abc123"
        try:
            wait_port(port, 10, proc, "nginx")
        except RuntimeError:
            proc.terminate()
            err = proc.communicate(timeout=10)[1].decode(errors="replace")
            print(f"nginx did not start: {err.strip()[:300]}", file=sys.stderr)
            return None
        run_url(url, 2, connections)
        return run_url(url, seconds, connections)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(15)


def run_module(name: str, timeout: int, extra: list[str]) -> dict[str, Any] | str:
    """Run `python -m loadtests.<name> --json`; its last JSON object, or why there is none."""
    if importlib.util.find_spec(f"loadtests.{name}") is None:
        return "module not present"
    cmd = [sys.executable, "-m", f"loadtests.{name}", "--json", *extra]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"failed: timed out after {timeout} s"
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        return f"failed: exit {proc.returncode}: {lines[-1][:300] if lines else 'no output'}"
    for line in reversed(proc.stdout.strip().splitlines()):
        with contextlib.suppress(ValueError):
            data = json.loads(line)
            if isinstance(data, dict):
                return data
    with contextlib.suppress(ValueError):
        data = json.loads(proc.stdout)
        if isinstance(data, dict):
            return data
    return f"no JSON object in its output: {proc.stdout.strip()[-300:]}"


# --- the run ------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError):
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split(":", 1)[1].strip()
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_before": os.getloadavg()[0],
    }


@contextlib.contextmanager
def _workdir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="tracker-bench-"))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=int, default=10, help="wrk duration per server (default 10).")
    p.add_argument("--connections", type=int, default=64, help="wrk connections (default 64).")
    p.add_argument("--skip", default="", help="Steps to skip: tracker,bare,nginx,ingest,postbacks,reports.")
    p.add_argument("--workers", type=int, default=1,
                   help="With N > 1, also measure the production topology (tracker serve --workers N, separate "
                   "Valkey and ClickHouse, via loadtests.bench_redirect) against N bare workers and N nginx workers.")
    p.add_argument("--module-timeout", type=int, default=180, help="Seconds allowed to each harness module.")
    p.add_argument("--keep", action="store_true", help="Keep the temp work directory (server logs).")
    p.add_argument("--out", type=Path, default=RESULTS, help="Directory for latest.json and latest.md.")
    args = p.parse_args(argv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if shutil.which("wrk") is None and skip < {"tracker", "bare", "nginx"}:
        print("wrk is not installed (apt-get install wrk).", file=sys.stderr)
        return 2

    started = time.monotonic()
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m loadtests.bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(),
        "wrk": {"threads": 1, "connections": args.connections, "seconds": args.seconds},
        "processes": 1,
        "processes_production": args.workers,
    }
    with _workdir(args.keep) as work:
        steps = [
            ("tracker", lambda: bench_tracker(work, args.seconds, args.connections)),
            ("bare_starlette", lambda: bench_bare(args.seconds, args.connections)),
            ("nginx", lambda: bench_nginx(work, args.seconds, args.connections, args.workers)),
            ("production", lambda: run_module("bench_redirect", args.module_timeout, [
                "--workers", str(args.workers), "--duration", str(args.seconds),
                "--connections", str(args.connections)])),
            ("ingest", lambda: run_module("bench_ingest", args.module_timeout, [])),
            # Its own chDB path: generated once (10M clicks, ~1 min) and reused by later runs.
            ("postbacks", lambda: run_module("bench_postbacks", args.module_timeout, [
                "--workers", str(max(2, args.workers)), "--duration", str(args.seconds)])),
            ("reports", lambda: run_module("bench_reports", args.module_timeout, ["--path", str(REPORTS_DATA)])),
        ]
        short = {"tracker": "tracker", "bare_starlette": "bare", "nginx": "nginx", "ingest": "ingest",
                 "postbacks": "postbacks", "reports": "reports", "production": "production"}
        for name, step in steps:
            if short[name] in skip or (name == "production" and args.workers < 2):
                continue
            print(f"[{time.monotonic() - started:5.0f}s] {name} ...", file=sys.stderr, flush=True)
            try:
                results[name] = step()
            except Exception as exc:
                results[name] = f"failed: {type(exc).__name__}: {exc}"[:1000]
                print(f"  {results[name]}", file=sys.stderr)
        if args.keep:
            print(f"work directory kept: {work}", file=sys.stderr)
    results["seconds_total"] = round(time.monotonic() - started, 1)

    rows = table(results)
    text = render(rows)
    m = results["machine"]
    header = (f"tracker benchmarks, {results['date']}, {m['cpus']} CPU {m['cpu']}, Python {m['python']}; "
              f"wrk -t1 -c{args.connections} -d{args.seconds}s, one server process each"
              + (f" (and {args.workers} in the production rows)" if args.workers > 1 else ""))
    print(header)
    print(text)
    failures = {k: v for k, v in results.items() if isinstance(v, str) and v.startswith("failed")}
    for name, why in failures.items():
        print(f"{name}: {why}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    md = f"# Benchmarks\n\n{header}\n\nCommand: `{results['command'].strip()}`\n\n{text}\n"
    if failures:
        md += "\n" + "\n".join(f"- {k}: {v}" for k, v in failures.items()) + "\n"
    (args.out / "latest.md").write_text(md)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
