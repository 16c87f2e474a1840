"""Outbound webhooks (Standard Webhooks): a durable outbox, ordered per object, retried 24 h+.

Events: ``conversion.created`` / ``conversion.updated`` come from the conversion stream
itself (the recorder's commit script writes the order state and the stream entry
together, so an accepted conversion cannot miss its event); ``payout.created`` /
``payout.paid`` come through ``emit``:

    await tracker.webhooks.emit(redis, brand_id, "payout.created", payout["id"], payout)

``emit(redis, brand_id, event_type, object_id, data, *, key=None, timestamp=None) -> str``
appends the event to the outbox stream ``keys.WEBHOOK_STREAM`` and returns its id (the
``webhook-id`` header). ``data`` is the object as the API answers it (JSON-ready; Decimal
and datetime are written as strings). The id is derived from ``key`` (default
``"{event_type}:{brand_id}:{object_id}"``, so each payout has one ``payout.created`` and
one ``payout.paid``): calling ``emit`` again for the same fact queues nothing new, so a
caller that crashed between its own commit and ``emit`` may simply emit again on
recovery. To make the event atomic with a Redis change of your own, add
``emit_command(...)``'s XADD to the same MULTI or script instead.

Nothing is stored while no brand has an endpoint (the stream exists from the first
endpoint on). Deliveries: ``tracker.webhooks.sender``; queues: ``tracker.webhooks.outbox``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import redis.asyncio as aioredis

from tracker.core import keys
from tracker.webhooks import events

# KEYS: outbox stream. ARGV: field, value, ... Appends only when the stream exists (an endpoint was made).
_EMIT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
return redis.call('XADD', KEYS[1], '*', unpack(ARGV))
"""


def emit_command(brand_id: str, event_type: str, object_id: str, data: dict[str, Any], *, key: str | None = None,
                 timestamp: datetime | None = None) -> tuple[str, dict[str, str | bytes], str]:
    """(stream, fields, event id) of the XADD that ``emit`` sends, for a caller's own MULTI."""
    event = events.of(brand_id, event_type, object_id, data, key=key, timestamp=timestamp)
    return keys.webhook_stream(), event.fields(), event.id


async def emit(redis: aioredis.Redis, brand_id: str, event_type: str, object_id: str, data: dict[str, Any], *,
               key: str | None = None, timestamp: datetime | None = None) -> str:
    """Queue an event for the brand's endpoints subscribed to ``event_type``; its id."""
    stream, fields, event_id = emit_command(brand_id, event_type, object_id, data, key=key, timestamp=timestamp)
    flat: list[str | bytes] = [v for pair in fields.items() for v in pair]
    await redis.eval(_EMIT, 1, stream, *flat)
    return event_id
