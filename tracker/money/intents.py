"""What a payout action owes after its commit: written before it commits, removed once done.

A payout run or a "mark paid" commits in ClickHouse; its audit entries and webhook events
are written after. A process killed in between would lose them, so the action first records
an *intent* in ``keys.PAYOUT_OUTBOX`` (under the brand's money lock, before the commit), and
removes it only after the entries are in the audit log and the events in the webhook outbox.
An intent left behind is settled by ``tracker.money.payoutoutbox.recover`` (the webhook sender
runs it at start and every 30 s): the commit landed (record and emit now) or it did not (drop
the intent).

Fields: ``brand|created|<token>`` (value: the run's commit instant, which its lines carry
as ``created_at``, and the acting key) and ``brand|paid|<payout id>`` (the acting key); each
value also carries when it was written.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from tracker.core import keys

CREATED = "created"
PAID = "paid"


@dataclass(frozen=True, slots=True)
class Intent:
    brand_id: str
    kind: str  # CREATED or PAID
    ref: str  # the run's token, or the payout id
    at_ms: int  # when it was written
    value: dict[str, Any]

    @property
    def field(self) -> str:
        return field(self.brand_id, self.kind, self.ref)


def field(brand_id: str, kind: str, ref: str) -> str:
    return f"{brand_id}|{kind}|{ref}"


async def intend(redis: aioredis.Redis, brand_id: str, kind: str, ref: str, **value: Any) -> None:
    await redis.hset(keys.PAYOUT_OUTBOX, field(brand_id, kind, ref),
                     json.dumps({**value, "at_ms": int(time.time() * 1000)}, default=str))


async def settle(redis: aioredis.Redis, brand_id: str, kind: str, ref: str) -> None:
    """The events of this intent are in the webhook outbox (or there were none)."""
    await redis.hdel(keys.PAYOUT_OUTBOX, field(brand_id, kind, ref))


async def pending(redis: aioredis.Redis) -> list[Intent]:
    out = []
    for name, raw in (await redis.hgetall(keys.PAYOUT_OUTBOX)).items():
        text = name.decode() if isinstance(name, bytes) else str(name)
        brand_id, kind, ref = text.split("|", 2)
        value = json.loads(raw)
        out.append(Intent(brand_id, kind, ref, int(value.pop("at_ms", 0)), value))
    return out
