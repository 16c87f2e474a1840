"""Producing realistic stream entries and checking ClickHouse against what was produced.

Shared by the ingest tests, the fault tests (which run the oracle in a separate
process: one chDB engine per process) and ``loadtests/bench_ingest.py``.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterable, Sequence
from typing import Any

from tracker.core import keys
from tracker.core.clickid import ClickIds
from tracker.core.events import ClickEvent

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


ORACLE_SQL = {
    "count": "SELECT count() FROM clicks",
    "distinct": "SELECT uniqExact(click_id) FROM clicks",
    "rollup": "SELECT sum(clicks), sum(bot_clicks) FROM clicks_daily",
    "raw": "SELECT countIf(is_bot = 0), countIf(is_bot = 1) FROM clicks",
}


def oracle(ch: Any, produced_ids: set[str]) -> list[str]:
    """Discrepancies between ClickHouse and the produced click ids (empty when exact).

    Checks the raw table without FINAL (each click once), the ids themselves, and
    the rollup's sums against the raw table: a double insert shows in all of them.
    """
    problems = []
    count = ch.query(ORACLE_SQL["count"])[0][0]
    distinct = ch.query(ORACLE_SQL["distinct"])[0][0]
    if count != len(produced_ids):
        problems.append(f"clicks has {count} rows, {len(produced_ids)} clicks were produced")
    if distinct != count:
        problems.append(f"clicks has {count - distinct} duplicate rows")
    stored = {row[0] for row in ch.query("SELECT click_id FROM clicks")}
    if stored != produced_ids:
        problems.append(
            f"{len(produced_ids - stored)} produced clicks are missing, {len(stored - produced_ids)} are unknown"
        )
    humans, bots = ch.query(ORACLE_SQL["raw"])[0]
    r_humans, r_bots = ch.query(ORACLE_SQL["rollup"])[0]
    if (r_humans or 0, r_bots or 0) != (humans, bots):
        problems.append(f"clicks_daily sums {r_humans}+{r_bots}, clicks has {humans}+{bots}")
    return problems


def oracle_json(ch: Any, produced_ids: set[str]) -> str:
    return json.dumps(oracle(ch, produced_ids))
