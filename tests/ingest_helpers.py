"""Producing realistic stream entries and checking ClickHouse against what was produced.

Shared by the ingest tests, the fault tests (which run the oracle in a separate
process: one chDB engine per process) and ``loadtests/bench_ingest.py``.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from tests import waiting
from tracker.core import keys
from tracker.core.clickid import ClickIds
from tracker.core.events import ClickEvent
from tracker.ingest import delivery
from tracker.ingest.worker import Worker, stream_stats
from tracker.settings import Settings

SECRET = "test-secret-key-0123456789abcdefghijklmnop"

USER_AGENTS: tuple[str, ...] = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Mobile/15E148 Instagram 300.0.0.1 (iPhone14,2; iOS 17_0; en_US)",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
    "Mozilla/5.0 (Linux; Android 13; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Mobile Safari/537.36",
    "Mozilla/5.0 (iPad; CPU OS 16_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.0 "
    "Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 "
    "Safari/605.1.15",
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
)
REFERERS = ("https://www.instagram.com/", "https://t.co/abc", "", "https://www.youtube.com/watch?v=1")
COUNTRIES = ("US", "DE", "FR", "GB", "BR", "")


def make_clicks(
    n: int, *, brands: int = 3, links: int = 50, seed: int = 1, start_ms: int | None = None, agents: int = 0
) -> list[ClickEvent]:
    """``n`` realistic clicks over a few brands and links in the last hour.

    ``agents`` > 0 adds that many distinct user agents (version numbers vary) to
    exercise the per-agent cache like real traffic does.
    """
    rnd = random.Random(seed)
    ids = ClickIds(SECRET)
    now = start_ms or int(time.time() * 1000) - 3_600_000
    uas = list(USER_AGENTS) + [
        f"Mozilla/5.0 (Linux; Android 14; SM-S91{i % 10}B) AppleWebKit/537.36 (KHTML, like Gecko) "
        f"Chrome/{100 + i % 30}.0.{i}.0 Mobile Safari/537.36"
        for i in range(agents)
    ]
    out = []
    for i in range(n):
        link = rnd.randrange(links)
        brand = link % brands
        ts = now + i * 3600_000 // max(n, 1)
        out.append(
            ClickEvent(
                click_id=ids.mint(link + 1, ts),
                ts_ms=ts,
                brand_id=f"brd_test{brand:08d}",
                campaign_id=f"cmp_test{link % 7:08d}",
                influencer_id=f"inf_test{link:08d}",
                link_id=link + 1,
                link_code=f"L{link}",
                visitor_hash=rnd.getrandbits(64) if rnd.random() < 0.7 else link * 1000 + rnd.randrange(20),
                country=rnd.choice(COUNTRIES),
                user_agent=rnd.choice(uas),
                referer=rnd.choice(REFERERS),
                utm=("instagram", "social", "launch", "", "") if rnd.random() < 0.5 else ("", "", "", "", ""),
                hint="head" if rnd.random() < 0.01 else "",
            )
        )
    return out


def produce(r: Any, events: Sequence[ClickEvent], *, stream: str = keys.CLICK_STREAM, replay: bool = False,
            chunk: int = 5000) -> list[str]:
    """XADD the events (pipelined); returns their stream ids."""
    ids: list[str] = []
    for start in range(0, len(events), chunk):
        with r.pipeline(transaction=False) as p:
            for ev in events[start : start + chunk]:
                fields: dict[str, Any] = {"e": ev.encode()}
                if replay:
                    fields["r"] = "1"
                p.xadd(stream, fields)
            ids.extend(x.decode() if isinstance(x, bytes) else x for x in p.execute())
    return ids


def produce_raw(r: Any, payloads: Iterable[bytes], stream: str = keys.CLICK_STREAM) -> list[str]:
    with r.pipeline(transaction=False) as p:
        for payload in payloads:
            p.xadd(stream, {"e": payload})
        return [x.decode() for x in p.execute()]


def expected(events: Iterable[ClickEvent]) -> dict[str, Any]:
    """What ClickHouse must hold for these clicks (bot verdicts come from the enrichment)."""
    from tracker.ingest import enrich

    clicks = bots = 0
    ids = set()
    for ev in events:
        if ev.click_id in ids:
            continue
        ids.add(ev.click_id)
        row = enrich.click_row(ev)
        if row[-2]:
            bots += 1
        else:
            clicks += 1
    return {"rows": len(ids), "clicks": clicks, "bot_clicks": bots, "ids": ids}


# Every row ClickHouse accepted into `clicks`, insert by insert, in a plain MergeTree that no
# merge folds (ReplacingMergeTree merges fold a re-inserted click into one row, so `clicks`
# itself forgets a double insert once its parts merged). Fed by a materialized view, with the
# deduplication window of `clicks`: an insert ClickHouse dropped as a retry (same token) is
# dropped here too, so the audit holds what was inserted, not what was sent.
AUDIT_DDL = (
    "CREATE TABLE IF NOT EXISTS clicks_inserted (click_id String, is_bot UInt8) ENGINE = MergeTree "
    "ORDER BY tuple() SETTINGS non_replicated_deduplication_window = 10000",
    "CREATE MATERIALIZED VIEW IF NOT EXISTS clicks_inserted_mv TO clicks_inserted "
    "AS SELECT click_id, is_bot FROM clicks",
)


def audit(ch: Any) -> None:
    """Start recording every row inserted into ``clicks`` (before any click arrives)."""
    for sql in AUDIT_DDL:
        ch.command(sql)


def audit_url(url: str, migrate: bool = True) -> None:
    """Migrate the ClickHouse at ``url`` (``chdb://`` or ``http://``) and install the audit, from a
    subprocess: a chDB directory has one owner process, and this one may own another."""
    script = (
        "import sys\n"
        "from tests.ingest_helpers import audit\n"
        "from tracker.settings import Settings\n"
        "from tracker.storage import migrate\n"
        "from tracker.storage.clickhouse import ClickHouse\n"
        "ch = ClickHouse.connect(Settings(redis_url='redis://x', clickhouse_url=sys.argv[1]))\n"
        "if sys.argv[2] == '1':\n"
        "    migrate.migrate(ch)\n"
        "audit(ch)\n"
        "ch.close()\n"
    )
    root = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "CLICKHOUSE_", "TRACKER_"))}
    env["PYTHONPATH"] = str(root)
    subprocess.run(
        [sys.executable, "-c", script, url, "1" if migrate else "0"], env=env, cwd=root, check=True, timeout=120,
        capture_output=True,
    )


def inserted(ch: Any) -> dict[str, int]:
    """How many times each click id was inserted into ``clicks`` (the audit; merges fold nothing there)."""
    return dict(ch.query("SELECT click_id, count() FROM clicks_inserted GROUP BY click_id"))


def oracle(ch: Any, produced: dict[str, Any]) -> list[str]:
    """Discrepancies between ClickHouse and what was produced (``expected``); empty when exact.

    Each check reads something a merge cannot repair: the audit of inserted rows (each
    click once), the ids ``clicks`` holds (each produced click, nothing else), and the
    daily rollup's sums against the produced human and bot clicks.
    """
    problems = []
    ids: set[str] = produced["ids"]
    # The audit proves no click went in twice; it cannot prove every click went in. Its view
    # commits its own part after the part of ``clicks``, so a worker killed in between (another
    # thread of the embedded worker may be inserting when the process dies) leaves the batch in
    # ``clicks`` and not in the audit, and the resumed batch rightly finds it landed. The set of
    # ids in ``clicks`` and the rollup (a projection inside the same parts) prove completeness.
    rows, distinct = ch.query("SELECT count(), uniqExact(click_id) FROM clicks_inserted")[0]
    if rows > len(ids):
        problems.append(f"clicks received {rows} rows, {len(ids)} clicks were produced")
    if distinct != rows:
        problems.append(f"clicks received {rows - distinct} duplicate rows")
    stored = {row[0] for row in ch.query("SELECT DISTINCT click_id FROM clicks")}
    if stored != ids:
        problems.append(f"{len(ids - stored)} produced clicks are missing, {len(stored - ids)} are unknown")
    humans, bots = ch.query("SELECT sum(clicks), sum(bot_clicks) FROM clicks_daily")[0]
    if (humans or 0, bots or 0) != (produced["clicks"], produced["bot_clicks"]):
        problems.append(
            f"clicks_daily sums {humans}+{bots}, {produced['clicks']}+{produced['bot_clicks']} were produced"
        )
    return problems


def worker(settings: Settings, redis_client: Any, ch: Any, name: str = "w1", **kw: Any) -> Worker:
    """A worker with a fixed consumer name and, optionally, changed settings."""
    return Worker(settings.with_(**kw) if kw else settings, redis_client, ch, name=name)


def pending(r: Any, stream: str = keys.CLICK_STREAM) -> int:
    """Entries read by a worker and not yet in ClickHouse (held in ranges)."""
    return int(stream_stats(r, stream)["pending"])


def ranges(r: Any, stream: str = keys.CLICK_STREAM) -> int:
    return len(delivery.ranges(r, stream))


class Crash(BaseException):
    """Raised by a test where a process would die: the worker catches no BaseException, like a kill."""


def die_at(monkeypatch: Any, w: Worker, target: Any, method: str, where: str) -> None:
    """Drain ``w`` until it reaches ``target.method``, where it dies (``Crash``); then close its
    background inserts (a dead process has none) and undo ``monkeypatch``."""

    def dying(*args: Any, **kw: Any) -> Any:
        raise Crash(where)

    monkeypatch.setattr(target, method, dying)
    try:
        w.drain()
    except Crash:
        pass
    else:
        raise AssertionError(f"the worker never reached {method}")
    w._close_pool()
    monkeypatch.undo()


def wait_until(check: Callable[[], Any], timeout: float = 20.0, what: str = "the condition") -> Any:
    """Poll ``check`` until it returns something true; that value, or an AssertionError at ``timeout``."""
    return waiting.wait_until(check, timeout=timeout, interval=0.02, message=f"{what} did not happen")
