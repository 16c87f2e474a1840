"""A payout action's audit entries and webhook events, written exactly once and emitted at least
once, also across a crash (``tracker.money.intents``).

The routes record a run's ``payout.create`` audit entries and emit its ``payout.created`` events
(or ``payout.paid`` for a payment) right after the commit, then settle the intent. ``recover``
settles what a killed process left behind: for each intent older than ``MIN_AGE_SECONDS``, under
the brand's money lock (so no run of that brand is between its intent and its commit), it reads
ClickHouse: the payouts of the run that committed at the intent's instant (or the payout, if
marked paid) get their entries, with the acting key the intent names, and their events now; an
action that never committed has none, and its intent is dropped. Written twice (the route and
``recover`` racing, or a kill between the entry and the settle), an audit entry is the same
entry (``AuditLog.record_fact``) and an event has the same id, so the log shows it once and the
webhook outbox queues it once.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis

from tracker import webhooks
from tracker.core.errors import Conflict
from tracker.money import intents, payouts
from tracker.money.lock import brand_lock
from tracker.money.models import Payout
from tracker.registry.audit import SYSTEM, AuditLog
from tracker.storage.clickhouse import ClickHouse, run_sync

log = logging.getLogger("tracker.money.payoutoutbox")

# An intent this young may belong to a process still emitting (the route, right after its commit).
MIN_AGE_SECONDS = 10.0


def _at(data: dict[str, Any], field: str) -> datetime:
    return datetime.fromisoformat(str(data[field]))


async def finish_created(audit: AuditLog, redis: aioredis.Redis, brand_id: str, token: str, key_id: str,
                         items: list[dict[str, Any]]) -> None:
    """Record a run's ``payout.create`` entries and emit its ``payout.created`` events (payouts as the API
    answers them), then settle its intent."""
    for data in items:
        # As the run made it: a recovery may find it paid since (its lines never change, its payment does).
        made = {**data, "status": "open", "reference": None, "paid_at": None}
        await audit.record_fact(brand_id, key_id, "payout.create", str(data["id"]), _at(data, "created_at"), made)
    for data in items:
        await webhooks.emit(redis, brand_id, "payout.created", str(data["id"]), data)
    await intents.settle(redis, brand_id, intents.CREATED, token)


async def finish_paid(audit: AuditLog, redis: aioredis.Redis, brand_id: str, key_id: str,
                      data: dict[str, Any]) -> None:
    await audit.record_fact(brand_id, key_id, "payout.paid", str(data["id"]), _at(data, "paid_at"), data)
    await webhooks.emit(redis, brand_id, "payout.paid", str(data["id"]), data)
    await intents.settle(redis, brand_id, intents.PAID, str(data["id"]))


def answers(ch: ClickHouse, brand_id: str, payout_ids: list[str]) -> list[dict[str, Any]]:
    """The payouts as the API answers them (with their influencer's name), read from ClickHouse."""
    if not payout_ids:
        return []
    names = {str(r["id"]): str(r["name"]) for r in ch.query_dicts(
        "SELECT id, name FROM influencers FINAL WHERE brand_id = {b:String}", {"b": brand_id})}
    wanted = set(payout_ids)
    found = [p for p in payouts.payouts(ch, brand_id) if p["id"] in wanted]
    return [Payout.model_validate({**p, "influencer_name": names.get(p["influencer_id"], "")}).dump()
            for p in sorted(found, key=lambda p: str(p["id"]))]


async def recover(ch: ClickHouse, redis: aioredis.Redis, min_age_seconds: float = MIN_AGE_SECONDS) -> int:
    """Settle every intent older than ``min_age_seconds``; how many payouts' entries and events were written."""
    now_ms = time.time() * 1000
    audit = AuditLog(ch)
    done = 0
    for intent in await intents.pending(redis):
        if now_ms - intent.at_ms < min_age_seconds * 1000:
            continue
        try:
            async with brand_lock(redis, intent.brand_id, wait=0.5):
                done += await _settle(ch, audit, redis, intent)
        except Conflict:
            continue  # a payout action of the brand is running: the next round settles it
    return done


async def _settle(ch: ClickHouse, audit: AuditLog, redis: aioredis.Redis, intent: intents.Intent) -> int:
    brand_id = intent.brand_id
    # An intent written before intents named the acting key (or by a caller with none) has the system act.
    key_id = str(intent.value.get("key_id") or SYSTEM)
    if intent.kind == intents.CREATED:
        made = await run_sync(payouts.made_at, ch, brand_id, datetime.fromisoformat(intent.value["now"]))
        items = await run_sync(answers, ch, brand_id, made)
        await finish_created(audit, redis, brand_id, intent.ref, key_id, items)
        if items:
            log.warning("payout run of brand %s: %d payout(s) audited and announced after a crash", brand_id,
                        len(items))
        return len(items)
    found = await run_sync(answers, ch, brand_id, [intent.ref])
    if found and found[0]["status"] == "paid":
        await finish_paid(audit, redis, brand_id, key_id, found[0])
        log.warning("payout %s: payment audited and announced after a crash", intent.ref)
        return 1
    await intents.settle(redis, brand_id, intents.PAID, intent.ref)
    return 0
