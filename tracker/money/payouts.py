"""Payout runs: one payout per influencer, each commission line in at most one payout.

Where the state lives, and why: **ClickHouse only, one insert per run, under a Redis lock
per brand** (``tracker.money.lock``). A run reads, under the lock, every attributed
conversion's payable commission and every line already claimed (``payout_lines FINAL``),
computes per (conversion, influencer) ``target - claimed``, and writes all new lines of
all influencers with one ``INSERT ... SELECT`` run by ClickHouse (the payout's fields ride on
each line, so a payout exists exactly when its lines do; no line passes through Python, so
a run of 1M lines takes seconds). Redis-side claims (a Lua set per line) would need a second
step to reach the system of record and a repair for a crash between the two; here the
insert is the only commit point:

- concurrent runs of any number of processes take turns on the lock; the second one
  sees the first one's lines and finds nothing left to claim;
- a process killed (kill -9) before its insert wrote nothing; killed during the insert, its
  rows either landed or not, and the next run claims exactly what is missing: no line is
  in two payouts (a line's identity is the table's sort key, so even a retried insert
  folds) and none is lost;
- the lock's time-to-live is renewed while held and checked right before the insert.

Lines. ``target`` is the commission of a conversion that is approved, not under review
(neither its ``review`` column nor, before ingest has that version, its flags and review
decision: ``tracker.quality.hold``), and past its hold, for its current influencer (0 for anyone else: a re-attributed
conversion's first influencer has target 0). A conversion with no line yet is claimed when
its target is above 0 and it occurred on or before ``period_end``; one with lines gets a
line for any difference: a refund (partial or full) or a rejection in review after it
joined a payout is a negative ``clawback`` line, carried into the influencer's next
payout. An influencer whose new lines do not add up to more than 0 gets no payout: the
clawbacks stay open and are deducted from a later one. So at any time
``sum(payouts) + open lines = commission earned - voided`` exactly, to the cent.

Audit entries and webhooks: a run given an ``intent`` token, and every mark-paid, records what
it owes before committing (``tracker.money.intents``); the caller records the audit entries,
emits the events and settles the intent, and ``tracker.money.payoutoutbox.recover`` does so for
a caller killed in between.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import redis.asyncio as aioredis

from tracker.core import ids, money
from tracker.core.errors import Conflict, NotFound
from tracker.core.timeutil import now_ms_precision, utc
from tracker.money import intents
from tracker.money.lock import LOCK_SECONDS, brand_lock, held
from tracker.quality.hold import UNRELEASED_SQL
from tracker.storage.clickhouse import ClickHouse, run_sync

LINE_COLUMNS = ("brand_id", "payout_id", "influencer_id", "currency", "conversion_id", "order_id", "kind", "seq",
                "amount", "period_end", "created_at")
_D = "Decimal(38, 4)"
# Per (conversion, influencer): the target now, what is claimed, how many lines, whether it occurred in the period.
PLAN_SQL = f"""
SELECT conversion_id, influencer_id, any(order_id) AS order_id, sum(target) AS target, sum(claimed) AS claimed,
       sum(n) AS n, max(in_period) AS in_period
FROM (
    SELECT conversion_id, influencer_id, order_id,
           CAST(if(status = 'approved' AND review = 0 AND conversion_id NOT IN ({UNRELEASED_SQL})
                   AND occurred_at + toIntervalDay(hold_days) <= {{now:DateTime64(3, 'UTC')}}, commission, 0)
                AS {_D}) AS target,
           CAST(0 AS {_D}) AS claimed, toUInt64(0) AS n,
           toUInt8(occurred_at < {{end:DateTime64(3, 'UTC')}}) AS in_period
    FROM conversions FINAL
    WHERE brand_id = {{brand:String}} AND attributed = 1 AND {{only}}
    UNION ALL
    SELECT conversion_id, influencer_id, any(order_id) AS order_id, CAST(0 AS {_D}) AS target,
           CAST(sum(amount) AS {_D}) AS claimed, count() AS n, toUInt8(0) AS in_period
    FROM payout_lines FINAL
    WHERE brand_id = {{brand:String}} AND {{only}}
    GROUP BY conversion_id, influencer_id
)
GROUP BY conversion_id, influencer_id
HAVING (n = 0 AND in_period = 1 AND target > 0) OR (n > 0 AND target != claimed)
"""

Stage = Callable[[str], Awaitable[None]]

# The run itself, one INSERT ... SELECT: the new lines of every influencer owed more than 0, the
# payout id derived from the run's seed and the influencer (so the statement is the whole commit).
RUN_SQL = f"""
INSERT INTO payout_lines ({", ".join(LINE_COLUMNS)})
SELECT {{brand:String}}, concat('pay_', substring(lower(hex(SHA256(concat({{seed:String}}, influencer_id)))), 1, 20)),
       influencer_id, {{currency:String}}, conversion_id, order_id, if(delta > 0, 'commission', 'clawback'), n,
       delta, {{period_end:Date}}, {{now:DateTime64(3, 'UTC')}}
FROM (
    SELECT conversion_id, influencer_id, order_id, target - claimed AS delta, n,
           sum(target - claimed) OVER (PARTITION BY influencer_id) AS owed
    FROM ({PLAN_SQL})
)
WHERE delta != 0 AND owed > 0
"""


def plan(ch: ClickHouse, brand_id: str, influencer_id: str | None, end: datetime, now: datetime
         ) -> list[dict[str, Any]]:
    """What a run would claim (per conversion and influencer: target, claimed, lines so far)."""
    only = "influencer_id = {influencer:String}" if influencer_id else "1"
    return ch.query_dicts(
        PLAN_SQL.replace("{only}", only) + " ORDER BY influencer_id, conversion_id",
        {"brand": brand_id, "influencer": influencer_id or "", "end": end, "now": now},
    )


def _commit(ch: ClickHouse, brand_id: str, currency: str, influencer_id: str | None, period_end: date,
            end: datetime, now: datetime) -> list[str]:
    only = "influencer_id = {influencer:String}" if influencer_id else "1"
    params = {"brand": brand_id, "influencer": influencer_id or "", "end": end, "now": now, "currency": currency,
              "period_end": period_end, "seed": ids.new_id("payout")}
    # A run's lines have distinct keys: nothing to fold on insert, and skipping it halves the insert.
    ch.command(RUN_SQL.replace("{only}", only), params, settings={"optimize_on_insert": 0})
    return made_at(ch, brand_id, now)


def made_at(ch: ClickHouse, brand_id: str, now: datetime) -> list[str]:
    """The payouts of the run that committed at ``now``."""
    # Runs of a brand take turns on the lock and each lasts longer than a millisecond: ``now`` is this run's.
    rows = ch.query("SELECT DISTINCT payout_id FROM payout_lines WHERE brand_id = {brand:String} "
                    "AND created_at = {now:DateTime64(3, 'UTC')} ORDER BY payout_id", {"brand": brand_id, "now": now})
    return [str(r[0]) for r in rows]


async def run(ch: ClickHouse, redis: aioredis.Redis, brand: dict[str, Any], period_end: date,
              influencer_id: str | None = None, *, on_stage: Stage | None = None,
              lock_seconds: float = LOCK_SECONDS, intent: str | None = None, key_id: str = "") -> list[str]:
    """Create the payouts of one run; the new payouts' ids (none when nothing is owed).

    ``intent``: a token under which the run's audit entries and ``payout.created`` events are
    owed (``tracker.money.intents``) until the caller has recorded and emitted them; ``key_id``
    the acting key the entries name."""
    brand_id, currency = str(brand["id"]), str(brand["currency"])
    end = datetime(period_end.year, period_end.month, period_end.day) + timedelta(days=1)
    async with brand_lock(redis, brand_id, seconds=lock_seconds) as lock:
        if on_stage:
            await on_stage("locked")
        now = now_ms_precision()
        if intent:
            await intents.intend(redis, brand_id, intents.CREATED, intent, now=now.isoformat(), key_id=key_id)
        if on_stage:
            await on_stage("planned")
        await held(lock)
        made = await run_sync(_commit, ch, brand_id, currency, influencer_id, period_end, end, now)
        if on_stage:
            await on_stage("committed")
        return made


# ---------------------------------------------------------------------------------------------- reads

_PAYOUTS_SQL = """
SELECT l.payout_id AS id, any(l.influencer_id) AS influencer_id, any(l.currency) AS currency,
       sum(l.amount) AS amount, any(l.period_end) AS period_end, min(l.created_at) AS created_at,
       groupArray((l.conversion_id, l.order_id, l.kind, l.seq, l.amount)) AS lines
FROM payout_lines AS l FINAL
WHERE l.brand_id = {brand:String} AND {where}
GROUP BY l.payout_id
ORDER BY created_at DESC, id DESC
"""


def payouts(ch: ClickHouse, brand_id: str, *, payout_id: str | None = None, influencer_id: str | None = None,
            status: str | None = None) -> list[dict[str, Any]]:
    where = ["1"]
    params: dict[str, Any] = {"brand": brand_id}
    if payout_id:
        where.append("l.payout_id = {pid:String}")
        params["pid"] = payout_id
    if influencer_id:
        where.append("l.influencer_id = {inf:String}")
        params["inf"] = influencer_id
    rows = ch.query_dicts(_PAYOUTS_SQL.replace("{where}", " AND ".join(where)), params)
    events = {
        str(e["payout_id"]): e for e in ch.query_dicts(
            "SELECT payout_id, reference, at FROM payout_events FINAL WHERE brand_id = {brand:String} "
            "AND event = 'paid' AND payout_id IN {ids:Array(String)}",
            {"brand": brand_id, "ids": [str(r["id"]) for r in rows]},
        )
    } if rows else {}
    out = []
    for r in rows:
        cur = str(r["currency"])
        paid = events.get(str(r["id"]))
        lines = sorted(r["lines"], key=lambda x: (x[1], x[0], x[3]))
        p = {
            "id": r["id"], "influencer_id": r["influencer_id"], "currency": cur,
            "amount": money.round_money(Decimal(r["amount"]), cur),
            "lines": [{"conversion_id": c, "order_id": o, "kind": k, "amount": money.round_money(Decimal(a), cur)}
                      for c, o, k, _seq, a in lines],
            "status": "paid" if paid else "open", "reference": (paid["reference"] or None) if paid else None,
            "period_end": r["period_end"], "created_at": utc(r["created_at"]),
            "paid_at": utc(paid["at"]) if paid else None,
        }
        if status is None or p["status"] == status:
            out.append(p)
    return out


async def mark_paid(ch: ClickHouse, redis: aioredis.Redis, brand_id: str, payout_id: str, reference: str,
                    key_id: str) -> dict[str, Any]:
    """Mark a payout paid once (409 the second time)."""
    async with brand_lock(redis, brand_id) as lock:
        found = await run_sync(lambda: payouts(ch, brand_id, payout_id=payout_id))
        if not found:
            raise NotFound(f"Payout {payout_id!r} does not exist.")
        if found[0]["status"] == "paid":
            raise Conflict(f"Payout {payout_id!r} is paid already (reference {found[0]['reference']!r}).",
                           code="already_paid")
        await held(lock)
        # The audit entry and payout.paid event are owed from here until the caller wrote them
        # (tracker.money.intents).
        await intents.intend(redis, brand_id, intents.PAID, payout_id, key_id=key_id)
        row = [brand_id, payout_id, "paid", reference, key_id, now_ms_precision()]
        await run_sync(lambda: ch.insert("payout_events", [row], column_names=[
            "brand_id", "payout_id", "event", "reference", "key_id", "at"]))
    return (await run_sync(lambda: payouts(ch, brand_id, payout_id=payout_id)))[0]
