"""Platform orders, the pure part: how an ``OrderEvent`` changes an order's state.

No I/O. ``tracker.conversions.platform`` looks the inputs up and writes the result.

An order that came through a store connector keeps, next to the conversion row's
figures, its *platform side* (the ``platform_state`` column, JSON): the order's total
(what platform refunds are given against), its refunds by platform refund id, the
platform's last reported status and when the platform last changed the order. Every
event is merged into it:

- refunds are merged by id, keeping the larger figure of an id (Stripe reports a
  charge's cumulative ``amount_refunded``), so re-delivered, re-ordered or partial
  events never count a refund twice nor lose one;
- status, amount and total come from the newest event: one that says the platform
  changed the order before the state's last change (a late delivery) keeps them;
- the commissionable refund is ``refund_share`` of the merged refunds, and a share
  that leaves nothing (or the platform's own "refunded") is a full refund.

Status moves allowed from a platform: the postback moves (pending -> approved,
rejected, refunded; approved -> refunded), and rejected -> pending or approved,
because a store retries a failed payment on the same order (WooCommerce: failed,
then processing) and a rejected conversion never earned commission. Anything else
(approved -> pending, refunded -> approved, ...) from a newer event is refused with
409, which the route answers 200 and keeps for the brand to see and re-drive.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tracker.conversions.attribution import APPROVED, PENDING, REFUNDED, REJECTED
from tracker.conversions.connectors.event import OrderEvent, refund_share
from tracker.core.errors import Conflict, Unprocessable
from tracker.core.money import round_money
from tracker.core.timeutil import to_ms

_MOVES: frozenset[tuple[str, str]] = frozenset(
    {
        (PENDING, APPROVED), (PENDING, REJECTED), (PENDING, REFUNDED), (APPROVED, REFUNDED),
        (REJECTED, PENDING), (REJECTED, APPROVED),
    }
)


def merge_refunds(a: Mapping[str, Decimal], b: Mapping[str, Decimal]) -> dict[str, Decimal]:
    """Refunds by platform id, the larger figure of an id kept (figures only grow)."""
    out = dict(a)
    for key, value in b.items():
        if key not in out or value > out[key]:
            out[key] = value
    return out


@dataclass(frozen=True, slots=True)
class PlatformSide:
    """The ``platform_state`` of an order (original currency)."""

    platform: str = ""
    total: Decimal | None = None
    refunds: Mapping[str, Decimal] = field(default_factory=dict)
    status: str | None = None
    updated_ms: int | None = None

    def encode(self) -> str:
        if not self.platform:
            return ""
        data = {
            "platform": self.platform,
            "total": None if self.total is None else str(self.total),
            "refunds": {k: str(v) for k, v in sorted(self.refunds.items())},
            "status": self.status,
            "updated_ms": self.updated_ms,
        }
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def decode(cls, raw: str) -> PlatformSide:
        if not raw:
            return cls()
        data: dict[str, Any] = json.loads(raw)
        total = data.get("total")
        return cls(
            platform=str(data.get("platform") or ""),
            total=None if total is None else Decimal(total),
            refunds={str(k): Decimal(v) for k, v in (data.get("refunds") or {}).items()},
            status=data.get("status"),
            updated_ms=data.get("updated_ms"),
        )


@dataclass(frozen=True, slots=True)
class Held:
    """Refunds of an order that has not arrived yet (a refund webhook came first)."""

    currency: str
    refunds: Mapping[str, Decimal]
    total: Decimal | None = None

    def encode(self) -> str:
        return json.dumps(
            {"currency": self.currency, "total": None if self.total is None else str(self.total),
             "refunds": {k: str(v) for k, v in sorted(self.refunds.items())}},
            separators=(",", ":"),
        )

    @classmethod
    def decode(cls, raw: str | bytes) -> Held:
        data: dict[str, Any] = json.loads(raw)
        total = data.get("total")
        return cls(str(data["currency"]), {str(k): Decimal(v) for k, v in data["refunds"].items()},
                   None if total is None else Decimal(total))

    def merged(self, event: OrderEvent) -> Held:
        if event.currency != self.currency:
            raise Unprocessable(
                f"Order {event.order_id!r} has refunds held in {self.currency}; this event is in {event.currency}.",
                code="invalid_currency",
            )
        return Held(self.currency, merge_refunds(self.refunds, event.refunds), event.order_total or self.total)


def hold(event: OrderEvent, held: Held | None) -> Held:
    """The held refunds once ``event`` (which carries no order amount) is added."""
    if held is None:
        return Held(event.currency, dict(event.refunds), event.order_total)
    return held.merged(event)


@dataclass(frozen=True, slots=True)
class Figures:
    """An order's figures in its own currency after an event: what the conversion row is computed from."""

    status: str
    amount: Decimal
    refunded: Decimal
    side: PlatformSide


def _updated_ms(event: OrderEvent) -> int | None:
    return None if event.updated_at is None else to_ms(event.updated_at)


def _refunded(status: str, amount: Decimal, side: PlatformSide, currency: str) -> tuple[str, Decimal]:
    share = refund_share(amount, side.total, side.refunds, currency)
    if status == REFUNDED or share.full:
        return REFUNDED, round_money(amount, currency)
    return status, round_money(share.amount if share.amount is not None else Decimal(0), currency)


def first(event: OrderEvent, held: Held | None) -> Figures:
    """A new order's figures (the event carries its amount); held refunds are applied."""
    assert event.amount is not None
    refunds = dict(event.refunds)
    total = event.order_total
    if held is not None:
        if held.currency != event.currency:
            raise Unprocessable(
                f"Order {event.order_id!r} has refunds held in {held.currency}; the order is in {event.currency}.",
                code="invalid_currency",
            )
        refunds = merge_refunds(held.refunds, refunds)
        total = total if total is not None else held.total
    side = PlatformSide(event.platform, total, refunds, event.status, _updated_ms(event))
    status, refunded = _refunded(event.status or APPROVED, event.amount, side, event.currency)
    return Figures(status, round_money(event.amount, event.currency), refunded, side)


def following(current_status: str, current_amount: Decimal, raw_side: str, event: OrderEvent) -> Figures:
    """An existing order's figures after ``event`` (its currency already checked)."""
    side = PlatformSide.decode(raw_side)
    event_ms = _updated_ms(event)
    late = event_ms is not None and side.updated_ms is not None and event_ms < side.updated_ms
    refunds = merge_refunds(side.refunds, event.refunds)
    if late:
        new_side = PlatformSide(event.platform, side.total, refunds, side.status, side.updated_ms)
        amount, target = current_amount, current_status
    else:
        new_side = PlatformSide(
            event.platform,
            event.order_total if event.order_total is not None else side.total,
            refunds,
            event.status if event.status is not None else side.status,
            event_ms if event_ms is not None else side.updated_ms,
        )
        amount = event.amount if event.amount is not None else current_amount
        target = event.status if event.status is not None else current_status
        if target == current_status == REFUNDED:
            pass
        elif current_status == REFUNDED and target != REFUNDED:
            # A platform never un-refunds an order: an older state delivered late, when it carries no time.
            target = REFUNDED
        elif target != current_status and (current_status, target) not in _MOVES:
            raise Conflict(
                f"Order {event.order_id!r} is {current_status}; the {event.platform} event says {target}, a move "
                f"that is not allowed (allowed: pending to approved, rejected or refunded; approved to refunded; "
                f"rejected to pending or approved).",
                code="invalid_transition",
            )
    status, refunded = _refunded(target, amount, new_side, event.currency)
    return Figures(status, round_money(amount, event.currency), refunded, new_side)
