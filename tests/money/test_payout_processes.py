"""Payout runs from several real processes at once, and a process killed (kill -9) mid-run.

The processes share a ClickHouse (a chDB behind its HTTP endpoint: one process owns a chDB
directory) and a Redis, as production workers do. Merges of ``payout_lines`` are stopped, so a
line written twice would be seen twice (FINAL is not read here).
"""

from __future__ import annotations

import asyncio
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
import redis.asyncio as aioredis

from tests.chdb_server import ChdbHttpServer
from tests.money.helpers import conversion_row, insert_conversions
from tests.waiting import wait_until
from tracker.core import keys
from tracker.money import payoutoutbox
from tracker.settings import Settings
from tracker.storage import migrate
from tracker.storage.clickhouse import ClickHouse
from tracker.webhooks.events import Event

pytestmark = pytest.mark.slow(seconds=30)
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


def _kill_at(victim: subprocess.Popen[str], stage: str) -> None:
    """kill -9 the run once it reports ``stage`` (it pauses there), and reap it."""
    assert victim.stdout is not None
    seen: list[str] = []

    def reached() -> bool:
        assert victim.stdout is not None
        seen.append(victim.stdout.readline())
        return json.loads(seen[-1] or "{}").get("stage") == stage

    wait_until(reached, timeout=60, message=lambda: f"the run did not reach {stage}: {seen}")
    os.kill(victim.pid, signal.SIGKILL)
    victim.communicate(timeout=10)  # reaps it and closes its pipes


@pytest.mark.parametrize("stage", ["planned", "committed"])
def test_a_run_killed_mid_way_loses_and_doubles_nothing(
    shared: tuple[str, ClickHouse], redis_url: str, redis_client: redis.Redis, stage: str
) -> None:
    url, ch = shared
    total = _load(ch)
    _kill_at(_start(url, redis_url, "--pause", stage, "--lock-seconds", "1.5"), stage)
    assert len(_lines(ch)) == (0 if stage == "planned" else 1200 - len(range(0, 1200, 17)))
    again = _start(url, redis_url)
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err[-2000:]
    made = json.loads(out.strip().splitlines()[-1])["made"]
    assert len(made) == (40 if stage == "planned" else 0)
    _exactly_once(ch, total)


def _created_events(redis_client: redis.Redis) -> list[Event]:
    return [e for e in (Event.from_fields(f) for _id, f in redis_client.xrange(keys.webhook_stream()))
            if e.type == "payout.created"]


def _recover(url: str, redis_url: str) -> int:
    async def main() -> int:
        ch = ClickHouse.connect(Settings(clickhouse_url=url), create_database=False)
        r = aioredis.Redis.from_url(redis_url)
        try:
            return await payoutoutbox.recover(ch, r, min_age_seconds=0)
        finally:
            await r.aclose()

    return asyncio.run(main())


@pytest.mark.parametrize("stage", ["committed", "planned", ""])
def test_payout_events_survive_a_kill_between_commit_and_emit(
    shared: tuple[str, ClickHouse], redis_url: str, redis_client: redis.Redis, stage: str
) -> None:
    url, ch = shared
    total = _load(ch)
    # A webhook endpoint exists (the outbox stream only takes events then).
    redis_client.xgroup_create(keys.webhook_stream(), keys.WEBHOOK_GROUP, id="$", mkstream=True)
    victim = _start(url, redis_url, "--outbox", "--lock-seconds", "1.5", *(("--pause", stage) if stage else ()))
    assert victim.stdout is not None
    if stage:
        _kill_at(victim, stage)
        assert _created_events(redis_client) == []  # the kill came before the emit
        assert redis_client.hlen(keys.PAYOUT_OUTBOX) == 1  # the intent written before the commit
    else:
        _out, err = victim.communicate(timeout=120)
        assert victim.returncode == 0, err[-2000:]
        assert redis_client.hlen(keys.PAYOUT_OUTBOX) == 0 and len(_created_events(redis_client)) == 40
    # What the webhook sender runs at start and every 30 s; the dead run's lock expires first (1.5 s).
    emitted: list[int] = []
    wait_until(lambda: emitted.append(_recover(url, redis_url)) or redis_client.hlen(keys.PAYOUT_OUTBOX) == 0,
               timeout=30, message="the intent was not settled")
    assert sum(emitted) == (40 if stage == "committed" else 0)
    if stage == "planned":  # nothing committed, nothing owed: the next run makes the payouts and their events
        again = _start(url, redis_url, "--outbox")
        _out, err = again.communicate(timeout=120)
        assert again.returncode == 0, err[-2000:]
    _exactly_once(ch, total)
    events = _created_events(redis_client)
    by_payout = {e.object_id: json.loads(e.body)["data"] for e in events}
    assert len(events) == len(by_payout) == 40  # each payout's event once
    lines = _lines(ch)
    assert set(by_payout) == {r["payout_id"] for r in lines}
    for pid, data in by_payout.items():
        assert Decimal(data["amount"]) == sum(Decimal(r["amount"]) for r in lines if r["payout_id"] == pid)
        assert data["status"] == "open" and len(data["lines"]) == sum(1 for r in lines if r["payout_id"] == pid)
    assert _recover(url, redis_url) == 0 and redis_client.hlen(keys.PAYOUT_OUTBOX) == 0
