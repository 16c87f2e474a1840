"""Ingest under faults, with real processes: every produced click lands exactly once.

Workers are real ``tracker ingest`` subprocesses. They are killed hard (``os._exit(137)``
at a chosen step, injected by the test-only ``tests.ingest.faults_plugin``, or SIGKILL at
random moments), ClickHouse goes away and comes back, Redis restarts from its AOF.
Afterwards the oracle (``ingest_helpers.oracle``) compares ClickHouse with what was
*produced*: every click inserted once (an audit of inserts that merges cannot fold), every
produced click id in ``clicks`` and no other, and the daily rollup's sums equal to the
produced human and bot clicks. It runs in another process than the workers (chDB has one
owner process): through ``loadtests.chdb_http`` on the same directory.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from loadtests.serve import free_port
from tests.chdb_server import ChdbHttpServer
from tests.ingest_helpers import audit_url, expected, make_clicks, oracle, produce, wait_until
from tracker.core import keys
from tracker.core.events import CLICK_COLUMNS
from tracker.ingest import delivery, enrich
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse
from tracker.storage.embedded import EmbeddedRedis

pytestmark = pytest.mark.slow(seconds=75)

ROOT = Path(__file__).resolve().parent.parent.parent


class IngestProcess:
    """``tracker ingest`` as a subprocess with its own environment and log file."""

    def __init__(self, redis_url: str, clickhouse_url: str, log: Path, crash_at: str = "", **env: str) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "CLICKHOUSE_", "TRACKER_"))}
        self.env.update(
            REDIS_URL=redis_url,
            CLICKHOUSE_URL=clickhouse_url,
            TRACKER_INGEST_BATCH_SIZE="2000",
            TRACKER_INGEST_BATCH_SECONDS="0.2",
            TRACKER_INGEST_CLAIM_IDLE_SECONDS="2",
            TRACKER_LOG_LEVEL="INFO",
            PYTHONPATH=str(ROOT),
        )
        self.env.update(env)
        self.crash_at = crash_at
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *args: str) -> IngestProcess:
        with open(self.log, "ab") as out:
            # With a crash step the CLI runs under the test-only plugin that makes the worker exit there.
            main = "tests.ingest.faults_plugin" if self.crash_at else "tracker.cli"
            env = {**self.env, "INGEST_CRASH_AT": self.crash_at}
            self.proc = subprocess.Popen(
                [sys.executable, "-m", main, "ingest", *args], env=env, stdout=out, stderr=out, cwd=ROOT
            )
        return self

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError(f"tracker ingest did not exit within {timeout} s; log: {self.tail()}") from None

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def migrate(clickhouse_url: str) -> None:
    """``tracker migrate``, then the oracle's audit of inserts (before any worker inserts)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "CLICKHOUSE_", "TRACKER_"))}
    env.update(REDIS_URL="redis://127.0.0.1:1", CLICKHOUSE_URL=clickhouse_url, PYTHONPATH=str(ROOT))
    subprocess.run([sys.executable, "-m", "tracker.cli", "migrate"], env=env, capture_output=True,
                   check=True, timeout=120, cwd=ROOT)
    audit_url(clickhouse_url, migrate=False)


def http_clickhouse(server: ChdbHttpServer) -> ClickHouse:
    return ClickHouse.connect(Settings(redis_url="redis://x", clickhouse_url=server.url, clickhouse_database="tracker"))


def settled(r: redis.Redis) -> dict[str, Any]:
    """Group state after the run: nothing may be held by a worker, undelivered, or left pending."""
    st = delivery.stats(r, keys.CLICK_STREAM, keys.INGEST_GROUP)
    return {
        "pending": st["held"],
        "lag": st["lag"] if st["cursor"] else int(r.xlen(keys.CLICK_STREAM)),  # no group until a worker starts
        "ranges": st["ranges"],
        "dead_letters": int(r.xlen(keys.DEAD_LETTER_STREAM)),
    }


SETTLED = {"pending": 0, "lag": 0, "ranges": 0, "dead_letters": 0}


def wait_settled(r: redis.Redis, timeout: float, proc: IngestProcess | None = None) -> None:
    deadline = time.monotonic() + timeout
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        state = settled(r)
        if state["pending"] == state["lag"] == 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"ingest did not settle in {timeout} s: {state}; {proc.tail() if proc else ''}")


def check(server: ChdbHttpServer, produced: dict[str, Any]) -> list[str]:
    server.start()
    try:
        return oracle(http_clickhouse(server), produced)
    finally:
        server.stop()


@pytest.fixture
def r(redis_client: redis.Redis) -> redis.Redis:
    return redis_client


@pytest.fixture
def chdb_dir(tmp_path: Path) -> Path:
    path = tmp_path / "clickhouse"
    migrate(f"chdb://{path}")
    return path


def test_workers_killed_at_every_step_lose_nothing_and_count_nothing_twice(
    redis_url: str, r: redis.Redis, chdb_dir: Path, tmp_path: Path
) -> None:
    """Hard exits before the insert, after it (before its ranges are dropped), and mid-batch, several times each."""
    events = make_clicks(24_000, seed=11)
    produced = expected(events)
    steps = ["before_insert:2", "after_insert:2", "mid_batch:3", "after_insert:1", "before_insert:3", "mid_batch:2"]
    chunk = len(events) // len(steps)
    for n, step in enumerate(steps):
        produce(r, events[n * chunk : (n + 1) * chunk])
        # Batches of 1000: each run sees at least four reads and inserts, so every step is reached.
        proc = IngestProcess(
            redis_url, f"chdb://{chdb_dir}", tmp_path / "ingest.log", crash_at=step, TRACKER_INGEST_BATCH_SIZE="1000"
        )
        code = proc.start().wait(120)
        assert code == 137, f"the worker should have crashed at {step}: {proc.tail()}"
        assert settled(r)["pending"] > 0  # it died holding entries
    final = IngestProcess(redis_url, f"chdb://{chdb_dir}", tmp_path / "ingest.log")
    assert final.start("--once").wait(180) == 0, final.tail()
    assert settled(r) == SETTLED
    assert check(ChdbHttpServer(chdb_dir), produced) == []


@pytest.fixture
def shared_clickhouse(tmp_path: Path) -> Iterator[ChdbHttpServer]:
    """One ClickHouse (HTTP over chDB) that several worker processes share."""
    server = ChdbHttpServer(tmp_path / "shared")
    server.start()
    try:
        migrate(server.url)
        yield server
    finally:
        server.stop()


def test_sigkilled_workers_during_traffic_and_a_double_delivery_is_caught(
    redis_url: str, r: redis.Redis, shared_clickhouse: ChdbHttpServer, tmp_path: Path
) -> None:
    """Two workers share the stream; SIGKILL hits one at random moments while clicks arrive."""
    events = make_clicks(30_000, seed=12)
    produced = expected(events)
    log = tmp_path / "ingest.log"
    workers = [IngestProcess(redis_url, shared_clickhouse.url, log).start() for _ in range(2)]
    rnd = random.Random(5)
    done = threading.Event()

    def traffic() -> None:
        for start in range(0, len(events), 500):
            produce(r, events[start : start + 500])
            time.sleep(0.15)
        done.set()

    def started() -> int:
        return log.read_text(errors="replace").count("ingest worker") if log.exists() else 0

    def wait_started(before: int) -> None:
        deadline = time.monotonic() + 60
        while started() <= before and time.monotonic() < deadline:
            time.sleep(0.05)

    wait_started(1)  # both workers up (each logs one line when it has started)
    producer = threading.Thread(target=traffic)
    producer.start()
    try:
        kills = 0
        while not done.is_set() or kills < 4:
            time.sleep(rnd.uniform(0.2, 1.2))  # somewhere in a read, an insert or dropping a range
            victim = workers[kills % 2]
            victim.signal(signal.SIGKILL)
            victim.wait(10)
            kills += 1
            before = started()
            victim.start()  # a restarted worker takes its name back and finishes its batches first
            wait_started(before)
        producer.join()
        wait_settled(r, 120, workers[0])
        for w in workers:
            w.signal(signal.SIGTERM)
            assert w.wait(30) == 0, w.tail()
    finally:
        for w in workers:
            w.stop()
    assert settled(r) == SETTLED
    ch = http_clickhouse(shared_clickhouse)
    assert oracle(ch, produced) == []
    # The oracle can fail: the same clicks delivered again under another token are caught, also
    # after a merge folded them in `clicks` (background merges run in the server all along).
    ch.insert("clicks", [enrich.click_row(ev) for ev in events[:25]], CLICK_COLUMNS, dedup_token="double")
    ch.command("OPTIMIZE TABLE clicks FINAL")
    assert ch.query("SELECT count() = uniqExact(click_id) FROM clicks") == [(True,)]
    problems = oracle(ch, produced)
    assert any("25 duplicate" in p for p in problems), problems


def test_clickhouse_away_for_a_while_then_back(
    redis_url: str, r: redis.Redis, tmp_path: Path
) -> None:
    """The worker backs off while ClickHouse is down; the stream holds the backlog; nothing is lost."""
    server = ChdbHttpServer(tmp_path / "ch")
    server.start()
    migrate(server.url)
    events = make_clicks(12_000, seed=13)
    worker = IngestProcess(redis_url, server.url, tmp_path / "ingest.log").start()
    try:
        produce(r, events[:4000])
        wait_settled(r, 120, worker)
        server.stop()  # ClickHouse goes away mid-run
        produce(r, events[4000:10_000])
        wait_until(lambda: "backing off" in worker.log.read_text(), 60, "the worker backing off")
        state = settled(r)
        assert state["pending"] + state["lag"] >= 6000  # held, not acknowledged, not lost
        assert worker.proc is not None and worker.proc.poll() is None  # still alive, backing off
        server.start()  # back, same directory and port
        produce(r, events[10_000:])
        wait_settled(r, 120, worker)
        worker.signal(signal.SIGTERM)
        assert worker.wait(30) == 0, worker.tail()
        assert "backing off" in worker.log.read_text()
        assert oracle(http_clickhouse(server), expected(events)) == []
    finally:
        worker.stop()
        server.stop()


def test_sigterm_while_clickhouse_is_down_exits_within_the_grace_period(
    redis_url: str, r: redis.Redis, chdb_dir: Path, tmp_path: Path
) -> None:
    """Entries read but not inserted stay pending; the next start finishes them."""
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    events = make_clicks(5000, seed=14)
    produce(r, events)
    down = IngestProcess(redis_url, f"http://127.0.0.1:{closed_port}", tmp_path / "ingest.log").start()
    wait_until(lambda: "Retrying." in down.log.read_text(), 60, "the worker waiting for ClickHouse")
    t = time.monotonic()
    down.signal(signal.SIGTERM)
    assert down.wait(30) == 0, down.tail()
    assert time.monotonic() - t < 15
    assert settled(r)["pending"] + settled(r)["lag"] == 5000
    final = IngestProcess(redis_url, f"chdb://{chdb_dir}", tmp_path / "ingest.log")
    assert final.start("--once").wait(180) == 0, final.tail()
    assert settled(r) == SETTLED
    assert check(ChdbHttpServer(chdb_dir), expected(events)) == []


def test_redis_restarted_from_its_aof_mid_run(chdb_dir: Path, tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "own-redis")
    server.start()
    url = server.url
    assert url.startswith("unix://"), "a stable socket path keeps the URL across the restart"
    r = redis.Redis.from_url(url)
    events = make_clicks(20_000, seed=15)
    worker = IngestProcess(url, f"chdb://{chdb_dir}", tmp_path / "ingest.log").start()
    try:
        produce(r, events[:10_000])
        # The worker is on its way through the backlog: it has read some of it.
        wait_until(lambda: settled(r)["lag"] < 10_000, 60, "the worker reading")
        server.stop()  # SIGTERM: Valkey fsyncs its AOF and exits
        time.sleep(2)  # Redis stays away for a while: the worker retries meanwhile
        server.start()
        r = redis.Redis.from_url(url)
        produce(r, events[10_000:])
        wait_settled(r, 120, worker)
        worker.signal(signal.SIGTERM)
        assert worker.wait(30) == 0, worker.tail()
        assert settled(r) == SETTLED
    finally:
        worker.stop()
        r.close()
        server.stop()
    assert check(ChdbHttpServer(chdb_dir), expected(events)) == []


def _scrape(url: str) -> dict[str, float]:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_a_separate_ingest_worker_serves_its_own_metrics(
    redis_url: str, r: redis.Redis, shared_clickhouse: ChdbHttpServer, tmp_path: Path
) -> None:
    """Production runs `tracker ingest` on its own: its counters and stream gauges are scraped from it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    log = tmp_path / "ingest.log"
    worker = IngestProcess(redis_url, shared_clickhouse.url, log, TRACKER_INGEST_METRICS=f"127.0.0.1:{port}").start()
    try:
        events = make_clicks(3000, seed=21)
        produce(r, events)
        wait_settled(r, 60, worker)
        stream = keys.CLICK_STREAM
        deadline = time.monotonic() + 20
        seen: dict[str, float] = {}
        while time.monotonic() < deadline:
            try:
                seen = _scrape(url)
            except OSError:
                seen = {}
            # The gauges are refreshed every couple of seconds by the worker's maintenance.
            settled_gauges = all(
                seen.get(f'tracker_stream_{g}{{stream="{stream}"}}') == 0 for g in ("pending", "lag")
            )
            if settled_gauges and seen.get('tracker_ingest_rows_total{stream="clicks"}') == 3000:
                break
            time.sleep(0.2)
        assert seen.get('tracker_ingest_rows_total{stream="clicks"}') == 3000, seen
        assert seen.get('tracker_ingest_batches_total{stream="clicks"}', 0) >= 1
        assert f'tracker_stream_length{{stream="{stream}"}}' in seen
        assert seen.get(f'tracker_stream_lag{{stream="{stream}"}}') == 0
        # A second worker asked to serve on the same address says so in one line and exits.
        second = IngestProcess(
            redis_url, shared_clickhouse.url, tmp_path / "second.log", TRACKER_INGEST_METRICS=f"127.0.0.1:{port}"
        ).start()
        assert second.wait(60) == 2
        assert "TRACKER_INGEST_METRICS=127.0.0.1:" in second.tail()
        worker.signal(signal.SIGTERM)
        assert worker.wait(30) == 0, worker.tail()
    finally:
        worker.stop()
