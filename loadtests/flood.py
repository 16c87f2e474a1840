"""Unknown-code flood mode of the redirect benchmark (``bench_redirect --flood``).

Real clicks (one wrk, the benchmark's connections, cycling over the real codes) run at the
same time as a flood: a second wrk sending codes no link has at a set rate
(``--flood-rate``, default 1,000/s: many connections, each waiting between requests, so a
slow answer does not slow the attacker much), each request from another
``X-Forwarded-For`` address (the server trusts 127.0.0.1, the default
``TRACKER_TRUSTED_PROXIES``), so no per-address limit ever applies. Two floods:

- ``control``: a code that fails the shape check (``no.such.link``): a 404 that no version
  of the server looks up anywhere, i.e. what answering the flood costs at the least.
- ``random``: a new random well-formed code per request, the attacker's flood.

The figure: clicks/s under each flood over clicks/s alone. On a shared 2-core box the same
10-second run moves by ±10% from one run to the next, as much as the effect measured, so
the runs are interleaved: ``--flood-rounds`` rounds (default 5) of clicks alone, then under
each flood (the two floods' order alternating), ``--flood-seconds`` each; each round's
ratios are against its own alone run, and the figure is their median. The target: the
random flood costs real clicks at most 10% (median ratio >= 0.9).
"""

from __future__ import annotations

import statistics
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from loadtests.wrk import command, result_of

CONTROL_CODE = "no.such.link"


@dataclass
class FloodRun:
    kind: str
    clicks_rps: float
    clicks_p99_ms: float
    clicks_errors: int
    flood_rps: float
    flood_p99_ms: float
    flood_answers: str  # what wrk saw besides 2xx/3xx (the flood's 404s, any 429s or 503s)
    # Server CPU per flood request, less what the clicks of the run cost at the alone run's rate
    # per click: a figure the shared host's noise moves far less than req/s.
    flood_cpu_us: float = float("nan")


def flood_lua(directory: Path, kind: str, delay_ms: int) -> Path:
    """A wrk script sending unknown codes from a new address per request, ``delay_ms`` apart per connection."""
    path = directory / f"flood-{kind}.lua"
    code_expr = f'"{CONTROL_CODE}"' if kind == "control" else "random_code()"
    path.write_text(
        "local chars = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'\n"
        "local n = 0\n"
        "math.randomseed(os.time())\n"
        "local function random_code()\n"
        "  local t = {}\n"
        "  for i = 1, 8 do\n"
        "    local k = math.random(1, #chars)\n"
        "    t[i] = chars:sub(k, k)\n"
        "  end\n"
        "  return table.concat(t)\n"
        "end\n"
        f"delay = function() return {delay_ms} end\n"
        "request = function()\n"
        "  n = n + 1\n"
        "  local ip = string.format('10.%d.%d.%d', (n / 65536) % 256, (n / 256) % 256, n % 256)\n"
        f"  return wrk.format('GET', '/' .. {code_expr}, {{['X-Forwarded-For'] = ip}})\n"
        "end\n"
    )
    return path


def run_pair(
    port: int, clicks_script: Path, flood_script: Path, kind: str, connections: int, flood_connections: int,
    seconds: int, server_cpu: Callable[[], float], click_cpu_us: float,
) -> FloodRun:
    """Both wrk processes at once; ``server_cpu()`` is the server's CPU seconds so far,
    ``click_cpu_us`` its CPU per click alone."""
    cpu0 = server_cpu()

    def start(script: Path, conns: int) -> subprocess.Popen[str]:
        return subprocess.Popen(command(port, script, conns, seconds), stdout=subprocess.PIPE, text=True)

    flood, clicks = start(flood_script, flood_connections), start(clicks_script, connections)
    clicks_out, _ = clicks.communicate(timeout=seconds + 60)
    flood_out, _ = flood.communicate(timeout=seconds + 60)
    cpu_us = (server_cpu() - cpu0) * 1e6
    c, f = result_of("clicks", clicks_out), result_of("flood", flood_out)
    flood_cpu = (cpu_us - c.requests * click_cpu_us) / f.requests if f.requests else float("nan")
    return FloodRun(
        kind=kind, clicks_rps=c.rps, clicks_p99_ms=c.p99_ms, clicks_errors=c.errors,
        flood_rps=f.rps, flood_p99_ms=f.p99_ms,
        flood_answers=f"{f.non_3xx} non-3xx, {f.socket_errors} socket errors", flood_cpu_us=round(flood_cpu, 1),
    )


def run_floods(
    port: int, clicks_script: Path, work: Path, connections: int, seconds: int, rate: int, flood_connections: int,
    rounds: int, alone: Callable[[], tuple[float, float]], server_cpu: Callable[[], float],
) -> dict[str, Any]:
    """``alone()`` runs clicks alone for ``seconds`` and gives (clicks/s, server CPU µs per click)."""
    delay_ms = max(1, round(flood_connections * 1000 / rate))
    scripts = {kind: flood_lua(work, kind, delay_ms) for kind in ("control", "random")}
    runs: dict[str, list[FloodRun]] = {"control": [], "random": []}
    ratios: dict[str, list[float]] = {"control": [], "random": []}
    alone_rps: list[float] = []
    for i in range(rounds):
        rps, click_cpu_us = alone()
        alone_rps.append(rps)
        for kind in ("control", "random") if i % 2 == 0 else ("random", "control"):
            run = run_pair(port, clicks_script, scripts[kind], kind, connections, flood_connections, seconds,
                           server_cpu, click_cpu_us)
            runs[kind].append(run)
            ratios[kind].append(round(run.clicks_rps / rps, 3) if rps else float("nan"))
    return {
        "rate": rate, "connections": flood_connections, "delay_ms": delay_ms, "rounds": rounds, "seconds": seconds,
        "alone_rps": [round(r) for r in alone_rps],
        "runs": {k: [asdict(r) for r in v] for k, v in runs.items()},
        "ratios": ratios,
        "clicks_over_alone": {k: round(statistics.median(v), 3) for k, v in ratios.items()},
        "flood_cpu_us": {k: round(statistics.median(r.flood_cpu_us for r in v), 1) for k, v in runs.items()},
    }


def print_floods(floods: dict[str, Any]) -> None:
    print(f"\nUnknown-code flood: clicks together with {floods['rate']}/s unknown codes from rotating "
          f"X-Forwarded-For addresses ({floods['connections']} connections, {floods['delay_ms']} ms apart); "
          f"{floods['rounds']} rounds of {floods['seconds']} s runs: clicks alone, under each flood")
    print(f"{'flood':<10}{'x alone':>9}   {'each round':<40}{'clicks p99 ms':>14}{'flood/s':>9}{'CPU us':>8}"
          "   flood answers (last round)")
    for kind, runs in floods["runs"].items():
        last = runs[-1]
        each = ", ".join(f"{r:.2f}" for r in floods["ratios"][kind])
        p99 = statistics.median(r["clicks_p99_ms"] for r in runs)
        flood_rps = statistics.median(r["flood_rps"] for r in runs)
        print(f"{kind:<10}{floods['clicks_over_alone'][kind]:>9.2f}   {each:<40}{p99:>14.2f}{flood_rps:>9.0f}"
              f"{floods['flood_cpu_us'][kind]:>8.1f}   {last['flood_answers']}")
    print(f"clicks alone per round: {', '.join(str(r) for r in floods['alone_rps'])}/s; x alone: the median of the "
          "rounds' ratios (each against its own alone run); control = a malformed code (no lookup in any version), "
          "random = a new well-formed code per request; CPU us = server CPU per flood request, net of the clicks "
          "at the round's alone cost; target: random >= 0.9 x alone")
