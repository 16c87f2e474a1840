"""Recording a platform event (``OrderEvent``): the same conversion a postback makes.

The route (``tracker.conversions.integrations``) has verified and parsed the webhook;
here its event is merged into the order (``tracker.conversions.orders``) with the
recorder's steps: one read, the decision, one compare-and-write, again on a lost race.

- A delivery already applied (its platform delivery id marked by the commit that
  applied it) is answered from the order's state: a re-delivery is a no-op.
- A refund of an order not recorded yet is *held*: in Redis for the order's first
  commit, which applies it, and in ClickHouse (``store_events``) in case Redis loses it.
- The customer is hashed with the platform's name in front (``shopify:7391``), so two
  platforms' customer numbers never meet.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tracker.conversions import orders, storeevents
from tracker.conversions.connectors.event import OrderEvent
from tracker.conversions.orders import Held, PlatformSide
from tracker.conversions.recorder import MAX_ATTEMPTS, Conversions, NewOrder, check_currency
from tracker.conversions.state import Conversion, Snapshot
from tracker.conversions.staterow import decode_state
from tracker.core import keys
from tracker.core.errors import StorageUnavailable


@dataclass(frozen=True, slots=True)
class Recorded:
    """What became of an event: the order's conversion now (None while its refunds are held)."""

    conversion: Conversion | None
    held: bool = False
    redelivered: bool = False


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where an event came from: kept with a held refund, marked once applied."""

    topic: str
    delivery_id: str
    body: bytes


class PlatformEvents:
    def __init__(self, conversions: Conversions) -> None:
        self.conv = conversions

    async def record(self, store: Mapping[str, Any], event: OrderEvent, delivery: Delivery) -> Recorded:
        conv = self.conv
        brand_id, store_id = str(store["brand_id"]), str(store["id"])
        customer_id = f"{event.platform}:{event.customer_id}" if event.customer_id else None
        customer, email = conv.hashes(brand_id, customer_id, event.customer_email)
        marker = keys.delivery(brand_id, store_id, delivery.delivery_id) if delivery.delivery_id else None
        snap = await conv.states.read(brand_id, event.order_id, customer_hash=customer, delivery_key=marker)
        if snap.delivered:
            return Recorded(Conversion.of(snap.row, duplicate=True) if snap.row else None, held=snap.row is None,
                            redelivered=True)
        for _ in range(MAX_ATTEMPTS):
            current = snap.row
            if current is None:
                held = Held.decode(snap.held) if snap.held else None
                if event.amount is None:
                    after = await self._keep_held(store, event, delivery, snap, orders.hold(event, held))
                    if after is None:
                        if marker:
                            await conv.states.mark_delivered(marker)
                        return Recorded(None, held=True)
                    snap = after
                    continue
                figures = orders.first(event, held)
                new = NewOrder(event.order_id, figures.status, event.currency, figures.amount, figures.refunded,
                               event.click_id, event.coupon_code, event.occurred_at, customer, email,
                               figures.side.encode(), country=event.country or "")
                row = await conv.first_version(store, new, snap)
            else:
                check_currency(current, event.order_id, event.currency)
                figures = orders.following(
                    current["status"], current["original_amount"], current["platform_state"], event
                )
                if _unchanged(current, figures):
                    if snap.raw is None:
                        await conv.states.restore(current)
                    if marker:
                        await conv.states.mark_delivered(marker)
                    return Recorded(Conversion.of(current, duplicate=True))
                row = await conv.next_version(current, figures.status, figures.amount, figures.refunded,
                                              figures.side.encode())
            after = await conv.states.write(snap, row, conv.extras(row, marker))
            if after is None:
                return Recorded(Conversion.of(row, duplicate=False))
            snap = after
        raise StorageUnavailable(f"Order {event.order_id!r} is changing too often right now; the platform will retry.")

    async def _keep_held(
        self, store: Mapping[str, Any], event: OrderEvent, delivery: Delivery, snap: Snapshot, held: Held
    ) -> Snapshot | None:
        """Hold refunds of an order not recorded yet: ClickHouse first (durable), then Redis."""
        brand_id = str(store["brand_id"])
        await storeevents.keep(
            self.conv.ch, brand_id=brand_id, store_id=str(store["id"]), kind="held", platform=event.platform,
            topic=delivery.topic, delivery_id=delivery.delivery_id, order_id=event.order_id, body=delivery.body,
            detail=held.encode(),
        )
        reply = await self.conv.states.hold(brand_id, event.order_id, snap.held, held.encode())
        kind = int(reply[0])
        if kind == 1:
            return None
        if kind == 0:
            return Snapshot(reply[1], decode_state(reply[1]))
        raw = reply[1]
        return Snapshot(None, None, raw.decode() if isinstance(raw, bytes) else str(raw), snap.customer)


def _unchanged(current: Mapping[str, Any], figures: orders.Figures) -> bool:
    """Nothing the conversion shows changed (an order edited for fulfilment, tags or notes, a re-sent event):
    a duplicate, even if the platform's time of change moved."""
    side = PlatformSide.decode(current["platform_state"])
    return (
        current["status"] == figures.status
        and current["original_amount"] == figures.amount
        and current["original_refunded_amount"] == figures.refunded
        and (side.total, dict(side.refunds), side.status) == (
            figures.side.total, dict(figures.side.refunds), figures.side.status)
    )
