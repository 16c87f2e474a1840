"""Payout runs from several real processes at once, and a process killed (kill -9) mid-run.

The processes share a ClickHouse (a chDB behind its HTTP endpoint: one process owns a chDB
directory) and a Redis, as production workers do. Merges of ``payout_lines`` are stopped, so a
line written twice would be seen twice (FINAL is not read here).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.chdb_server import ChdbHttpServer
from tests.money.helpers import conversion_row, insert_conversions
from tests.waiting import wait_until
from tracker.settings import Settings
from tracker.storage import migrate
from tracker.storage.clickhouse import ClickHouse

pytestmark = pytest.mark.slow
BRAND = "brd_procTest00000001"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[tuple[str, ClickHouse]]:
    server = ChdbHttpServer(tmp_path / "ch")
    server.start()
    url = f"{server.url}/money"
    ch = ClickHouse.connect(Settings(clickhouse_url=url))
    migrate.migrate(ch)
    ch.command("SYSTEM STOP MERGES payout_lines")
    try:
        yield url, ch
    finally:
        server.stop()


def _load(ch: ClickHouse) -> Decimal:
    old = datetime.now(UTC) - timedelta(days=40)
    rows, total = [], Decimal(0)
    for n in range(1200):
        status = "refunded" if n % 17 == 0 else "approved"
        commission = Decimal(n % 50 + 1) / 4 if status == "approved" else Decimal(0)
        total += commission
        rows.append(conversion_row(BRAND, n, f"inf_{n % 40:04d}", commission, old, status=status))
    insert_conversions(ch, rows)
    return total


def _start(url: str, redis_url: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.money.payout_proc", "--clickhouse", url, "--redis", redis_url,
         "--brand", BRAND, "--period-end", str(datetime.now(UTC).date()), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )


def _lines(ch: ClickHouse) -> list[dict[str, Any]]:
    return ch.query_dicts("SELECT payout_id, conversion_id, influencer_id, seq, amount FROM payout_lines "
                          "WHERE brand_id = {b:String}", {"b": BRAND})


def _exactly_once(ch: ClickHouse, total: Decimal) -> None:
    lines = _lines(ch)
    keys = [(r["conversion_id"], r["influencer_id"], r["seq"]) for r in lines]
    assert len(keys) == len(set(keys)), "a line is in two payouts"
    paid = [r for r in lines if Decimal(r["amount"]) != 0]
    assert len(paid) == 1200 - len(range(0, 1200, 17))
    assert sum(Decimal(r["amount"]) for r in lines) == total
    per_payout: dict[str, set[str]] = {}
    for r in lines:
        per_payout.setdefault(r["payout_id"], set()).add(r["influencer_id"])
    assert all(len(v) == 1 for v in per_payout.values()) and len(per_payout) == 40


def test_concurrent_runs_from_four_processes_claim_each_line_once(
    shared: tuple[str, ClickHouse], redis_url: str, redis_client: redis.Redis
) -> None:
    url, ch = shared
    total = _load(ch)
    procs = [_start(url, redis_url) for _ in range(4)]
    made = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-2000:]
        made.append(json.loads(out.strip().splitlines()[-1])["made"])
    assert sorted(len(m) for m in made) == [0, 0, 0, 40]
    _exactly_once(ch, total)


@pytest.mark.parametrize("stage", ["planned", "committed"])
def test_a_run_killed_mid_way_loses_and_doubles_nothing(
    shared: tuple[str, ClickHouse], redis_url: str, redis_client: redis.Redis, stage: str
) -> None:
    url, ch = shared
    total = _load(ch)
    victim = _start(url, redis_url, "--pause", stage, "--lock-seconds", "1.5")
    assert victim.stdout is not None
    seen: list[str] = []

    def reached() -> bool:
        assert victim.stdout is not None
        seen.append(victim.stdout.readline())
        return json.loads(seen[-1] or "{}").get("stage") == stage

    wait_until(reached, timeout=60, message=lambda: f"the run did not reach {stage}: {seen}")
    os.kill(victim.pid, signal.SIGKILL)
    victim.communicate(timeout=10)  # reaps it and closes its pipes
    assert len(_lines(ch)) == (0 if stage == "planned" else 1200 - len(range(0, 1200, 17)))
    again = _start(url, redis_url)
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err[-2000:]
    made = json.loads(out.strip().splitlines()[-1])["made"]
    assert len(made) == (40 if stage == "planned" else 0)
    _exactly_once(ch, total)
