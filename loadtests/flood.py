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

The figure: clicks/s under each flood over clicks/s alone (the benchmark's own run just
before). The target: the random flood costs real clicks at most 10% (ratio >= 0.9).
"""

from __future__ import annotations

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
    port: int, clicks_script: Path, work: Path, connections: int, seconds: int,
    rate: int, flood_connections: int, clicks_alone_rps: float, server_cpu: Callable[[], float],
    click_cpu_us: float,
) -> dict[str, Any]:
    delay_ms = max(1, round(flood_connections * 1000 / rate))
    runs = {}
    for kind in ("control", "random"):
        script = flood_lua(work, kind, delay_ms)
        runs[kind] = run_pair(port, clicks_script, script, kind, connections, flood_connections, seconds,
                              server_cpu, click_cpu_us)
    ratios = {k: round(r.clicks_rps / clicks_alone_rps, 3) if clicks_alone_rps else float("nan")
              for k, r in runs.items()}
    return {"rate": rate, "connections": flood_connections, "delay_ms": delay_ms, "click_cpu_us": click_cpu_us,
            "runs": {k: asdict(v) for k, v in runs.items()}, "clicks_over_alone": ratios}


def print_floods(floods: dict[str, Any], clicks_alone_rps: float) -> None:
    print(f"\nUnknown-code flood: clicks together with {floods['rate']}/s unknown codes from rotating "
          f"X-Forwarded-For addresses ({floods['connections']} connections, {floods['delay_ms']} ms apart)")
    print(f"{'flood':<10}{'clicks/s':>10}{'x alone':>9}{'p99 ms':>9}{'errors':>8}{'flood/s':>10}{'p99 ms':>9}"
          f"{'CPU us':>8}   flood answers")
    for kind, run in floods["runs"].items():
        print(f"{kind:<10}{run['clicks_rps']:>10.0f}{floods['clicks_over_alone'][kind]:>9.2f}"
              f"{run['clicks_p99_ms']:>9.2f}{run['clicks_errors']:>8}{run['flood_rps']:>10.0f}"
              f"{run['flood_p99_ms']:>9.2f}{run['flood_cpu_us']:>8.1f}   {run['flood_answers']}")
    print(f"clicks alone (the run above): {clicks_alone_rps:.0f}/s at {floods['click_cpu_us']:.1f} us of server CPU "
          "each; control = a malformed code (no lookup in any version), random = a new well-formed code per "
          "request; CPU us = server CPU per flood request; target: random >= 0.9 x alone")
