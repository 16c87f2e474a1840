"""Bring a brand's click facts and quality flags up to date before anything reads them.

``sync`` is called by the report route, the review queue and the coupon-leak list. It
costs one small query when nothing changed: a fingerprint of the brand's conversions,
rules, influencers, copied clicks and flags, kept per process. When it differs, the
missing clicks are copied (``facts.fill``), the attributed conversions are evaluated
(``flags.evaluate``) and the flags that changed are written (a conversion whose flags
cleared gets an empty row). A fill that left clicks missing (not ingested yet) is tried
again by the first call after ``RETRY_MISSING_SECONDS`` even when nothing else changed.

Incremental: when only conversions (and copied clicks) changed since the last sync, only the
UTC days from the earliest changed order on are evaluated, with the 7 days before as the
coupon rule's context; a rule or influencer change evaluates everything. Changed orders are
those with ``updated_at`` after the last sync's latest minus ``INGEST_MARGIN`` (a conversion
recorded earlier may be ingested after a later one).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import defaultdict
from datetime import date, timedelta
from typing import Any

from tracker.core.clickid import ClickIds
from tracker.core.timeutil import now_utc, utc
from tracker.quality import facts, flags, rules
from tracker.storage.clickhouse import ClickHouse

# The conversions' count and latest update come from one read of the table (~2 ms less than two).
_FINGERPRINT = (
    "SELECT c.1 AS conversions, c.2 AS updated, "
    "(SELECT max(updated_at) FROM quality_rules WHERE brand_id = {b:String}) AS rules, "
    "(SELECT count() FROM influencers WHERE brand_id = {b:String}) AS influencers, "
    "(SELECT count() FROM conversion_clicks WHERE brand_id = {b:String}) AS facts, "
    "(SELECT count() FROM conversion_flags WHERE brand_id = {b:String}) AS flags "
    "FROM (SELECT (count(), max(updated_at)) AS c FROM conversions WHERE brand_id = {b:String})"
)
_CONVERSIONS = (
    "SELECT order_id, conversion_id, occurred_at, attribution, link_id, influencer_id, email_hash, country, "
    "k_click, k_ts, k_visitor "
    "FROM (SELECT order_id, conversion_id, occurred_at, attribution, link_id, influencer_id, email_hash, country, "
    "click_id FROM conversions FINAL WHERE brand_id = {b:String} AND attributed = 1) AS c "
    "LEFT JOIN (SELECT click_id, click_id AS k_click, ts AS k_ts, visitor_hash AS k_visitor "
    "FROM conversion_clicks FINAL WHERE brand_id = {b:String}) AS k USING (click_id)"
)
_COUNTRIES = (
    "SELECT link_id, toDate(ts, 'UTC') AS day, groupUniqArray(country) AS countries FROM clicks "
    "WHERE brand_id = {b:String} AND ts >= {t0:DateTime64(3, 'UTC')} AND ts < {t1:DateTime64(3, 'UTC')} "
    "AND link_id IN {links:Array(UInt64)} AND is_bot = 0 GROUP BY link_id, day"
)


INGEST_MARGIN = timedelta(minutes=10)
RETRY_MISSING_SECONDS = 5.0


class Sync:
    """Per process: the fingerprint each brand was last brought up to date at."""

    def __init__(self, secret_key: str) -> None:
        self.click_ids = ClickIds(secret_key)
        self._done: dict[str, tuple[Any, ...]] = {}
        self._retry_at: dict[str, float] = {}  # brand -> when to look for missing clicks again
        self._checked: dict[str, float] = {}  # brand -> when its fingerprint was last read
        self._evaluations: dict[str, int] = {}  # brand -> how many evaluations this process finished
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock(self, brand_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(brand_id, threading.Lock())

    def evaluations(self, brand_id: str) -> int:
        """How many evaluations of the brand finished in this process: a reader that started before
        one finished may have read the flags it replaced (``reports.run.run_beside_sync``)."""
        return self._evaluations.get(brand_id, 0)

    def forget(self, brand_id: str) -> None:
        """Evaluate the brand again on the next call (what followed the last one failed)."""
        with self._guard:
            self._done.pop(brand_id, None)
            self._checked.pop(brand_id, None)

    def __call__(self, ch: ClickHouse, brand_id: str, fresh_within: float = 0.0) -> bool:
        """Bring the brand up to date; whether anything was evaluated (False: nothing changed).
        ``fresh_within``: seconds; when this process checked the brand that recently, do not check again
        (the ledger's pages: the fingerprint query costs ~13 ms at 100k conversions)."""
        if fresh_within and time.monotonic() - self._checked.get(brand_id, -math.inf) < fresh_within:
            return False
        with self._lock(brand_id):  # one evaluation per brand at a time; the others then find it done
            now = _fingerprint(ch, brand_id)
            last = self._done.get(brand_id)
            self._checked[brand_id] = time.monotonic()
            if last == now and time.monotonic() < self._retry_at.get(brand_id, math.inf):
                return False
            filled = facts.fill(ch, self.click_ids, brand_id)
            since = None
            if last is not None and last[2:4] == now[2:4] and last[1] is not None:  # same rules and influencers
                changed = ch.query(
                    "SELECT min(occurred_at), count() FROM conversions WHERE brand_id = {b:String} "
                    "AND updated_at > {t:DateTime64(3, 'UTC')}",
                    {"b": brand_id, "t": (utc(last[1]) - INGEST_MARGIN).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]},
                )[0]
                starts = [utc(t) for t in (changed[0] if changed[1] else None, filled.earliest) if t is not None]
                # None: flags or copies changed elsewhere (another process): evaluate all of it.
                since = min(starts).date() if starts else None
            evaluate(ch, brand_id, since)
            self._evaluations[brand_id] = self._evaluations.get(brand_id, 0) + 1
            self._done[brand_id] = _fingerprint(ch, brand_id)
            if filled.missing:
                self._retry_at[brand_id] = time.monotonic() + RETRY_MISSING_SECONDS
            else:
                self._retry_at.pop(brand_id, None)
            return True


def _fingerprint(ch: ClickHouse, brand_id: str) -> tuple[Any, ...]:
    row = ch.query(_FINGERPRINT, {"b": brand_id})[0]
    return tuple(row)


def click_countries(
    ch: ClickHouse, brand_id: str, links: list[int], first: date, last: date
) -> dict[tuple[int, date], frozenset[str]]:
    """(link, UTC day) -> countries of its non-bot clicks, days ``first`` to ``last``."""
    if not links:
        return {}
    rows = ch.query_dicts(
        _COUNTRIES,
        {"b": brand_id, "t0": f"{first} 00:00:00.000", "t1": f"{last + timedelta(days=1)} 00:00:00.000",
         "links": links},
    )
    return {(int(r["link_id"]), r["day"]): frozenset(r["countries"]) for r in rows}


def evaluate(ch: ClickHouse, brand_id: str, since: date | None = None) -> int:
    """Evaluate the attributed conversions of the brand (those of UTC days from ``since`` on, the 7
    days before as context; all without it); write the changed flags; how many changed."""
    brand_rules = rules.load(ch, brand_id)
    sql, params = _CONVERSIONS, {"b": brand_id}
    if since is not None:
        context = since - timedelta(days=flags.LEAK_DAYS + 1)
        sql = sql.replace("attributed = 1)", "attributed = 1 AND occurred_at >= {t:DateTime64(3, 'UTC')})")
        params["t"] = f"{context} 00:00:00.000"
    convs = [flags.Conv.of(r) for r in ch.query_dicts(sql, params)]
    emails = {
        str(r["id"]): str(r["email_hash"])
        for r in ch.query_dicts(
            "SELECT id, email_hash FROM influencers FINAL WHERE brand_id = {b:String} AND email_hash != ''",
            {"b": brand_id},
        )
    }
    coupon = [c for c in convs if c.attribution == "coupon"]
    countries: dict[Any, frozenset[str]] = {}
    if coupon and brand_rules.coupon_leak:
        days = [c.occurred_at.date() for c in coupon]
        countries = click_countries(
            ch, brand_id, sorted({c.link_id for c in coupon}), min(days) - timedelta(days=flags.LEAK_DAYS), max(days)
        )
    verdicts = flags.evaluate(convs, brand_rules, emails, countries)
    if since is not None:  # the context days only informed the others
        convs = [c for c in convs if c.occurred_at.date() >= since]
    current: dict[str, tuple[list[str], str]] = defaultdict(lambda: ([], ""))
    for r in ch.query_dicts(
        "SELECT order_id, flags, evidence FROM conversion_flags FINAL WHERE brand_id = {b:String}", {"b": brand_id}
    ):
        current[str(r["order_id"])] = (list(r["flags"]), str(r["evidence"]))
    at = now_utc()
    rows: list[list[Any]] = []
    for c in convs:
        v = verdicts.get(c.order_id)
        new = (v.flags, json.dumps(v.evidence, sort_keys=True)) if v else ([], "")
        old = current.get(c.order_id, ([], ""))
        if new != old and (new[0] or old[0]):
            rows.append([brand_id, c.order_id, c.conversion_id, new[0], new[1], at])
    if rows:
        ch.insert(
            "conversion_flags", rows, ("brand_id", "order_id", "conversion_id", "flags", "evidence", "evaluated_at")
        )
    return len(rows)
