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
are printed beside the numbers. Nothing here asserts: the numbers are the output.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import re
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

from loadtests.serve import EmbeddedServe, free_port, rss_bytes, seed

RESULTS = Path(__file__).parent / "results"
REPORTS_DATA = Path(tempfile.gettempdir()) / "tracker-bench-harness-reports"
TARGETS = {
    "redirect_rps": 20_000,
    "redirect_p99_ms": 15.0,
    "redirect_vs_bare": 0.5,
    "ingest_rows_per_s": 150_000,
    "report_p95_ms": 150.0,
}


# --- wrk ----------------------------------------------------------------------------------------------

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise ValueError(f"unreadable wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out: str) -> dict[str, Any]:
    result: dict[str, Any] = {"non_3xx": 0, "socket_errors": 0}
    for line in out.splitlines():
        line = line.strip()
        if m := re.match(r"(50|75|90|99)%\s+(\S+)", line):
            result[f"p{m.group(1)}_ms"] = round(_ms(m.group(2)), 3)
        elif m := re.match(r"(\d+) requests in ([\d.]+)(\w+)", line):
            result["requests"] = int(m.group(1))
        elif m := re.match(r"Requests/sec:\s+([\d.]+)", line):
            result["rps"] = round(float(m.group(1)))
        elif m := re.match(r"Non-2xx or 3xx responses:\s+(\d+)", line):
            result["non_3xx"] = int(m.group(1))
        elif line.startswith("Socket errors:"):
            result["socket_errors"] = sum(int(n) for n in re.findall(r"\d+", line))
    if "rps" not in result:
        raise RuntimeError(f"wrk printed no result:\n{out}")
    return result


def wrk(url: str, seconds: int, connections: int, threads: int = 1) -> dict[str, Any]:
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "5s", url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    return parse_wrk(out)


def _wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


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


def _counter(metrics_text: str, name: str, labels: str = "") -> float:
    m = re.search(rf"^{re.escape(name + labels)} ([\d.e+]+)$", metrics_text, re.M)
    return float(m.group(1)) if m else 0.0


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
        wrk(url, 2, connections)  # warm-up: caches, connection pools
        # The redirect counters are summed in process and published every 0.2 s: let the
        # warm-up's (and then the run's) last clicks reach /metrics before reading it.
        time.sleep(1.0)
        before = httpx.get(f"{serve.base}/metrics", timeout=10).text
        with RssSampler(serve.proc.pid if serve.proc else 0) as sampler:
            result = wrk(url, seconds, connections)
        time.sleep(1.0)
        after = httpx.get(f"{serve.base}/metrics", timeout=10).text
        sent = _counter(after, "tracker_redirects_total", '{status="302"}') - _counter(
            before, "tracker_redirects_total", '{status="302"}'
        )
        logged = sum(
            _counter(after, n) - _counter(before, n)
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
    cmd = [sys.executable, "-m", "uvicorn", "loadtests.bare_app:app", "--port", str(port), "--loop", "uvloop",
           "--http", "httptools", "--no-access-log", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/bench00"
        _wait_http(url)
        wrk(url, 2, connections)
        with RssSampler(proc.pid) as sampler:
            result = wrk(url, seconds, connections)
        result["rss_peak_mb"] = round(sampler.peak / 2**20, 1)
        return result
    finally:
        proc.terminate()
        proc.wait(15)


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
            _wait_http(url, 10)
        except RuntimeError:
            proc.terminate()
            err = proc.communicate(timeout=10)[1].decode(errors="replace")
            print(f"nginx did not start: {err.strip()[:300]}", file=sys.stderr)
            return None
        wrk(url, 2, connections)
        return wrk(url, seconds, connections)
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


def _pick(data: dict[str, Any] | str, *names: str) -> float | None:
    """The first of ``names`` found in a module's JSON (top level or one level down)."""
    if not isinstance(data, dict):
        return None
    scopes = [data, *(v for v in data.values() if isinstance(v, dict))]
    for scope in scopes:
        for name in names:
            value = scope.get(name)
            if isinstance(value, int | float):
                return float(value)
    return None


# --- output -------------------------------------------------------------------------------------------


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


def _fmt(value: float | int | None, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and value < 100:
        return f"{value:.2f}{unit}"
    return f"{value:,.0f}{unit}"


def _verdict(ok: bool | None) -> str:
    return "" if ok is None else ("ok" if ok else "MISSED")


def table(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    rows: list[tuple[str, str, str, str]] = []
    t = results.get("tracker")
    bare = results.get("bare_starlette")
    nginx = results.get("nginx")
    if isinstance(t, dict):
        rows.append(("redirect req/s, tracker serve", _fmt(t["rps"]), f">= {TARGETS['redirect_rps']:,}",
                     _verdict(t["rps"] >= TARGETS["redirect_rps"])))
        rows.append(("redirect p99, tracker serve", _fmt(t.get("p99_ms"), " ms"),
                     f"<= {TARGETS['redirect_p99_ms']} ms",
                     _verdict(t.get("p99_ms", 1e9) <= TARGETS["redirect_p99_ms"])))
        rows.append(("redirect p50, tracker serve", _fmt(t.get("p50_ms"), " ms"), "", ""))
        rows.append(("redirect non-3xx / socket errors", f"{t['non_3xx']} / {t['socket_errors']}", "0 / 0",
                     _verdict(t["non_3xx"] == 0 and t["socket_errors"] == 0)))
        rows.append(("302s sent vs clicks logged (counters)", f"{t['redirects_counted']:,} / {t['clicks_logged']:,}",
                     "equal", _verdict(t["redirects_counted"] == t["clicks_logged"])))
    if isinstance(bare, dict):
        rows.append(("redirect req/s, bare Starlette 302", _fmt(bare["rps"]), "", ""))
        rows.append(("redirect p99, bare Starlette 302", _fmt(bare.get("p99_ms"), " ms"), "", ""))
        if isinstance(t, dict) and bare["rps"]:
            ratio = t["rps"] / bare["rps"]
            results["redirect_vs_bare"] = round(ratio, 3)
            rows.append(("tracker / bare Starlette", f"{ratio:.2f}", f">= {TARGETS['redirect_vs_bare']}",
                         _verdict(ratio >= TARGETS["redirect_vs_bare"])))
    if isinstance(nginx, dict):
        nw = results.get("processes_production", 1)
        label = f"nginx return 302, {nw} worker{'s' if nw != 1 else ''}"
        rows.append((f"redirect req/s, {label}", _fmt(nginx["rps"]), "(reference)", ""))
        rows.append((f"redirect p99, {label}", _fmt(nginx.get("p99_ms"), " ms"), "", ""))
    elif nginx is None and "nginx" in results:
        rows.append(("redirect, nginx return 302", "not installed", "", ""))
    prod = results.get("production")
    if isinstance(prod, dict) and isinstance(prod.get("tracker"), dict) and isinstance(prod.get("bare"), dict):
        n = results.get("processes_production", "N")
        pt, pb = prod["tracker"], prod["bare"]
        rows.append((f"redirect req/s, tracker serve --workers {n} (production)", _fmt(pt.get("rps")),
                     f">= {TARGETS['redirect_rps']:,}", _verdict(pt.get("rps", 0) >= TARGETS["redirect_rps"])))
        rows.append((f"redirect p99, tracker serve --workers {n}", _fmt(pt.get("p99_ms"), " ms"),
                     f"<= {TARGETS['redirect_p99_ms']} ms",
                     _verdict(pt.get("p99_ms", 1e9) <= TARGETS["redirect_p99_ms"])))
        rows.append((f"redirect req/s, bare Starlette, {n} workers", _fmt(pb.get("rps")), "", ""))
        ratio = prod.get("ratio")
        if isinstance(ratio, int | float):
            rows.append((f"tracker / bare, {n} workers", f"{ratio:.2f}", f">= {TARGETS['redirect_vs_bare']}",
                         _verdict(ratio >= TARGETS["redirect_vs_bare"])))
        durable = prod.get("durability", {})
        if isinstance(durable, dict) and "ok" in durable:
            rows.append((f"302s vs stream entries, {n} workers", f"{durable.get('server_302s')} / "
                         f"{durable.get('stream_clicks_added')}", "equal", _verdict(bool(durable["ok"]))))
    elif prod is not None:
        rows.append(("redirect, production topology", str(prod)[:60], "", ""))
    if isinstance(t, dict):
        rows.append(("tracker serve RSS idle / peak (with Valkey)", f"{t['rss_idle_mb']} / {t['rss_peak_mb']} MB",
                     "", ""))
    ingest = results.get("ingest")
    if ingest is not None:
        rate = _pick(ingest, "rows_per_second", "rows_per_s", "clicks_per_s")
        rows.append(("ingest rows/s (one worker)", _fmt(rate) if rate is not None else str(ingest)[:60],
                     f">= {TARGETS['ingest_rows_per_s']:,}",
                     _verdict(None if rate is None else rate >= TARGETS["ingest_rows_per_s"])))
        fresh = ingest.get("freshness") if isinstance(ingest, dict) else None
        if isinstance(fresh, dict) and "p95_seconds" in fresh:
            rows.append(("freshness p95 / max, redirect to report", f"{fresh['p95_seconds']} / "
                         f"{fresh.get('max_seconds')} s", f"<= {fresh.get('goal_seconds', 2)} s",
                         _verdict(fresh.get("max_seconds", 1e9) <= fresh.get("goal_seconds", 2))))
    postbacks = results.get("postbacks")
    if isinstance(postbacks, dict):
        goals = {"new_orders": ">= 5,000, p99 <= 50 ms", "replays": ">= 10,000", "shopify_webhooks": ""}
        for phase, goal in goals.items():
            ph = postbacks.get(phase)
            if isinstance(ph, dict):
                rows.append((f"postbacks/s, {phase.replace('_', ' ')}", f"{_fmt(ph.get('rps'))} (p99 "
                             f"{_fmt(ph.get('p99_ms'), ' ms')})", goal, ""))
        rec = postbacks.get("reconciliation")
        if isinstance(rec, dict):
            rows.append(("postbacks reconciled with ClickHouse", str(rec.get("exact")), "exact",
                         _verdict(bool(rec.get("exact")))))
    elif postbacks is not None:
        rows.append(("postbacks", str(postbacks)[:60], "", ""))
    reports = results.get("reports")
    if reports is not None:
        cases = reports.get("results") if isinstance(reports, dict) else None
        if isinstance(cases, dict) and cases:
            data = reports.get("data", {})
            size = f"{data.get('clicks', 0) / 1e6:g}M clicks, {data.get('conversions', 0) / 1e3:g}k conversions"
            for name, case in cases.items():
                gated = case.get("group_by") == "influencer" and case.get("tz") == "UTC"
                target = f"<= {TARGETS['report_p95_ms']} ms" if gated else ""
                ok = case["p95_ms"] <= TARGETS["report_p95_ms"] if target else None
                rows.append((f"report p95, {name} ({size})", _fmt(float(case["p95_ms"]), " ms"), target,
                             _verdict(ok)))
        else:
            rows.append(("report p95 (30 days by influencer)", str(reports)[:60], "", ""))
    return rows


def render(rows: list[tuple[str, str, str, str]]) -> str:
    head = ("measure", "value", "target", "")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in [head, *rows]]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


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
