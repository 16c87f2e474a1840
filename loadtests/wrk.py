"""wrk, the load generator of the redirect benchmarks: its command, what it prints, and where the CPU went.

``read`` is the one reader of wrk's output; ``parse_wrk`` gives the harness's figures (``loadtests.bench``)
and ``result_of`` a ``Result`` (``loadtests.bench_redirect`` and the benchmarks built on it).
"""

from __future__ import annotations

import re
import resource
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtests.cpu import box_busy_seconds, cpu_per_request

_LATENCY_UNITS = {"ms": 1.0, "s": 1000.0, "m": 60_000.0}
_DURATION_UNITS = {"s": 1.0, "ms": 0.001, "m": 60.0}


@dataclass
class Output:
    """What one wrk run printed."""

    requests: int
    seconds: float  # the run's length as wrk measured it
    rps: float | None  # wrk's own "Requests/sec"
    latency_ms: dict[int, float]  # percentile (50, 75, 90, 99) -> milliseconds
    non_3xx: int
    socket_errors: int


def latency_ms(text: str) -> float:
    """A wrk latency ("850.00us", "2.31ms", "1.20s", "2.00m") in milliseconds."""
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise ValueError(f"unreadable wrk latency {text!r}")
    n, unit = float(m.group(1)), m.group(2)
    return n / 1000 if unit == "us" else n * _LATENCY_UNITS[unit]


def read(out: str) -> Output:
    requests: int | None = None
    seconds = 0.0
    rps: float | None = None
    latency: dict[int, float] = {}
    non_3xx = socket_errors = 0
    for line in out.splitlines():
        line = line.strip()
        if m := re.match(r"(50|75|90|99)%\s+(\S+)", line):
            latency[int(m.group(1))] = latency_ms(m.group(2))
        elif m := re.match(r"(\d+) requests in ([\d.]+)(\w+)", line):
            requests = int(m.group(1))
            seconds = float(m.group(2)) * _DURATION_UNITS.get(m.group(3), 1.0)
        elif m := re.match(r"Requests/sec:\s+([\d.]+)", line):
            rps = float(m.group(1))
        elif m := re.match(r"Non-2xx or 3xx responses:\s+(\d+)", line):
            non_3xx = int(m.group(1))
        elif line.startswith("Socket errors:"):
            socket_errors = sum(int(n) for n in re.findall(r"\d+", line))
    if requests is None or rps is None:
        raise RuntimeError(f"wrk printed no result:\n{out}")
    return Output(requests, seconds, rps, latency, non_3xx, socket_errors)


def parse_wrk(out: str) -> dict[str, Any]:
    """The harness's figures of one run: wrk's own req/s, latency percentiles to the microsecond, errors."""
    run = read(out)
    result: dict[str, Any] = {"non_3xx": run.non_3xx, "socket_errors": run.socket_errors}
    result.update({f"p{p}_ms": round(ms, 3) for p, ms in run.latency_ms.items()})
    result["requests"] = run.requests
    result["rps"] = round(run.rps or 0.0)
    return result


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


def result_of(name: str, out: str) -> Result:
    """A run's ``Result``: req/s as requests over the measured time, p50 and p99 (nan if not printed)."""
    run = read(out)
    return Result(
        name=name,
        requests=run.requests,
        seconds=run.seconds,
        rps=run.requests / run.seconds,
        p50_ms=run.latency_ms.get(50, float("nan")),
        p99_ms=run.latency_ms.get(99, float("nan")),
        non_3xx=run.non_3xx,
        socket_errors=run.socket_errors,
    )


def command(port: int, script: Path, connections: int, seconds: int) -> list[str]:
    """One wrk thread driving 127.0.0.1:``port`` with a request script."""
    return ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script),
            f"http://127.0.0.1:{port}"]


def _run(cmd: list[str], seconds: int) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout


def run_url(url: str, seconds: int, connections: int, threads: int = 1) -> dict[str, Any]:
    """wrk on one URL (the harness's runs): ``parse_wrk``'s figures."""
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "5s", url]
    return parse_wrk(_run(cmd, seconds))


def run_wrk(name: str, port: int, script: Path, connections: int, seconds: int) -> Result:
    return result_of(name, _run(command(port, script, connections, seconds), seconds))


def codes_script(codes: list[str], directory: Path) -> Path:
    """A wrk script cycling over the short links ``codes``."""
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
