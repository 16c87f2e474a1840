"""A/B of two source trees of tracker: both served at once, measured alternately.

    python -m loadtests.bench_ab TREE_A TREE_B [--rounds 4] [--seconds 5] [--kinds clicks,control,random]

On a shared box the speed moves by ±10 % from one run to the next, more than most changes
worth measuring; two versions measured one after the other compare the box's moods as
much as the code. Here both trees (a ``git worktree`` of the base commit, and the working
copy) run ``tracker serve`` in embedded mode side by side (``PYTHONPATH`` picks the tree),
each with its own data directory and links, and every round measures each in turn (the
order alternating), so both see the same conditions. Per kind and tree it prints the median
over the rounds of the server's CPU per request (the server process tree: Python, Valkey,
chDB) and of requests/s.

Kinds (wrk, 64 connections, no pause between requests, 127.0.0.1 only):

- ``clicks``: real links, cycling (``wrk.codes_script``);
- ``control``: one malformed code, ``random``: a new well-formed unknown code per request,
  each from a new ``X-Forwarded-For`` address (``flood.flood_lua``): what answering an
  unknown code costs when nothing else runs.

Nothing here asserts: it measures and reports.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from loadtests.cpu import tree_cpu
from loadtests.flood import flood_lua
from loadtests.serve import free_port
from loadtests.servers import PY, create_links, server_env, stop, wait_http
from loadtests.wrk import Result, codes_script, command, measured_run

KINDS = ("clicks", "control", "random")


class Side:
    """One tree's server and its wrk scripts."""

    def __init__(self, tree: str, work: Path) -> None:
        self.tree = tree
        self.port = free_port()
        data = work / "data"
        self.log = open(work / "tracker.log", "wb")  # noqa: SIM115 - closed in stop
        self.proc = subprocess.Popen(
            [PY, "-m", "tracker.cli", "serve", "--port", str(self.port), "--data-dir", str(data)],
            env=server_env({"PYTHONPATH": tree}), stdout=self.log, stderr=self.log, cwd=tempfile.gettempdir(),
        )
        wait_http(f"http://127.0.0.1:{self.port}/healthz", 120, self.proc)
        codes, _ = create_links(f"http://127.0.0.1:{self.port}", f"unix://{data / 'redis' / 'valkey.sock'}")
        self.scripts: dict[str, Path] = {}
        for kind in KINDS:
            directory = work / kind
            directory.mkdir()
            self.scripts[kind] = codes_script(codes, directory) if kind == "clicks" else flood_lua(directory, kind, 0)
        subprocess.run(command(self.port, self.scripts["clicks"], 64, 2), capture_output=True, check=True)

    def measure(self, kind: str, seconds: int) -> tuple[Result, float]:
        """One wrk run: its result and the server's CPU µs per request."""
        result = measured_run(kind, self.port, self.scripts[kind], 64, seconds, lambda: tree_cpu(self.proc.pid))
        return result, sum(result.cpu_us_per_request.values())

    def stop(self) -> None:
        stop(self.proc)
        self.log.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("trees", nargs=2, help="two source trees (directories holding a tracker package)")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--seconds", type=int, default=5, help="seconds of each wrk run (default 5)")
    p.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated, of {', '.join(KINDS)}")
    args = p.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    if unknown := set(kinds) - set(KINDS):
        p.error(f"unknown kinds: {', '.join(sorted(unknown))}")
    sides: list[Side] = []
    cpu: dict[tuple[str, str], list[float]] = {}
    rps: dict[tuple[str, str], list[float]] = {}
    try:
        for i, tree in enumerate(args.trees):
            sides.append(Side(tree, Path(tempfile.mkdtemp(prefix=f"bench-ab{i}-"))))
        time.sleep(1)
        for n in range(args.rounds):
            for side in sides if n % 2 == 0 else reversed(sides):
                for kind in kinds:
                    result, us = side.measure(kind, args.seconds)
                    cpu.setdefault((kind, side.tree), []).append(us)
                    rps.setdefault((kind, side.tree), []).append(result.rps)
            print(f"round {n + 1} of {args.rounds} done", flush=True)
    finally:
        for side in sides:
            side.stop()
    print(f"\n{'kind':<9}{'tree':<40}{'CPU us/req':>11}{'req/s':>9}   each round's CPU us/req")
    for kind in kinds:
        for tree in args.trees:
            each = ", ".join(f"{v:.0f}" for v in cpu[(kind, tree)])
            print(f"{kind:<9}{tree:<40}{statistics.median(cpu[(kind, tree)]):>11.1f}"
                  f"{statistics.median(rps[(kind, tree)]):>9.0f}   {each}")
    print("medians over the rounds; CPU: the server's process tree (Python, Valkey, chDB) per request")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
