"""Conversions, the pure part: who gets the credit, how an order's status may move, the commission.

No I/O here. ``tracker.conversions.recorder`` looks the inputs up (links, campaign, rate,
the order's current state), calls these functions, and writes the result.

Attribution order (DESIGN.md "Conversions"):
1. a valid click id of this brand whose click is not older than the campaign's
   window at ``occurred_at``, on a link that is not disabled -> ``click``;
2. else, for a customer whose first attributed order came through a link of this brand
   within the campaign's ``recurring_months`` before this order -> ``customer`` (a
   returning customer, a subscription renewal), credited to that link;
3. else a coupon code that belongs to a link of this brand -> ``coupon``;
4. else unattributed.

Status moves: pending -> approved, rejected or refunded; approved -> refunded;
the same status again is a duplicate; anything else is a conflict (409). A
refund carries the cumulative refunded amount: below the order amount it is a
partial refund (the status stays), the whole amount (or none) is a full refund.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal

from tracker.core.clickid import ClickRef
from tracker.core.errors import Conflict, Unprocessable
from tracker.core.money import ZERO, round_money
from tracker.core.records import LinkRecord
from tracker.core.timeutil import DAY_MS

PENDING = "pending"
APPROVED = "approved"
REJECTED = "rejected"
REFUNDED = "refunded"
STATUSES: tuple[str, ...] = (PENDING, APPROVED, REJECTED, REFUNDED)

# Statuses that count as conversions and earn commission.
COUNTING: frozenset[str] = frozenset({PENDING, APPROVED})

_MOVES: frozenset[tuple[str, str]] = frozenset(
    {(PENDING, APPROVED), (PENDING, REJECTED), (PENDING, REFUNDED), (APPROVED, REFUNDED)}
)

# A click a little after the order's time still counts: the store's and our clocks differ.
CLOCK_SKEW_MS = 300_000

AttributionKind = Literal["click", "coupon", "customer", "manual"]  # manual: re-attributed by the brand


@dataclass(frozen=True, slots=True)
class Attribution:
    kind: AttributionKind | None
    link: LinkRecord | None

    @property
    def attributed(self) -> bool:
        return self.kind is not None


UNATTRIBUTED = Attribution(None, None)


def click_qualifies(brand_id: str, occurred_ms: int, ref: ClickRef | None, link: LinkRecord | None) -> bool:
    """Whether a parsed click id (and the link it names) earns the conversion."""
    if ref is None or link is None or link.id != ref.link_id:
        return False
    if link.brand_id != brand_id or link.disabled:
        return False
    age_ms = occurred_ms - ref.ts_ms
    return -CLOCK_SKEW_MS <= age_ms <= link.attribution_window_days * DAY_MS


def coupon_qualifies(brand_id: str, link: LinkRecord | None) -> bool:
    # DESIGN.md asks only that the coupon belong to a link of this brand: a coupon
    # read out in an old podcast still credits the influencer after the link is disabled.
    return link is not None and link.brand_id == brand_id


def add_months(when: datetime, months: int) -> datetime:
    """``when`` plus whole calendar months, the day clamped to the month's end (Jan 31 + 1 = Feb 28/29)."""
    index = when.month - 1 + months
    year, month = when.year + index // 12, index % 12 + 1
    return when.replace(year=year, month=month, day=min(when.day, calendar.monthrange(year, month)[1]))


def customer_qualifies(
    brand_id: str, occurred_ms: int, first_ms: int, link: LinkRecord | None, recurring_months: int
) -> bool:
    """A returning customer's order: on or after the first attributed order, within ``recurring_months``
    calendar months of it (0: never), through a link of this brand (disabled or not: the customer was brought)."""
    if link is None or link.brand_id != brand_id or recurring_months <= 0:
        return False
    if occurred_ms < first_ms - CLOCK_SKEW_MS:
        return False
    end = add_months(datetime.fromtimestamp(first_ms / 1000, UTC), recurring_months)
    return occurred_ms < int(end.timestamp() * 1000)


def attribute(
    brand_id: str,
    occurred_ms: int,
    click_ref: ClickRef | None,
    click_link: LinkRecord | None,
    coupon_link: LinkRecord | None,
    customer_link: LinkRecord | None = None,
) -> Attribution:
    """``customer_link``: the link of the customer's first attributed order, already checked
    with ``customer_qualifies`` (None when there is none or it does not qualify)."""
    if click_qualifies(brand_id, occurred_ms, click_ref, click_link):
        return Attribution("click", click_link)
    if customer_link is not None:
        return Attribution("customer", customer_link)
    if coupon_qualifies(brand_id, coupon_link):
        return Attribution("coupon", coupon_link)
    return UNATTRIBUTED


@dataclass(frozen=True, slots=True)
class CommissionRule:
    type: Literal["percent", "flat"]
    value: Decimal

    @classmethod
    def of(cls, rule: dict[str, object]) -> CommissionRule:
        kind, value = rule.get("type"), rule.get("value")
        if kind not in ("percent", "flat"):
            raise ValueError(f"Commission type {kind!r} is not percent or flat.")
        if not isinstance(value, Decimal):
            value = Decimal(str(value))
        return cls("percent" if kind == "percent" else "flat", value)


def commission(rule: CommissionRule | None, status: str, net_revenue: Decimal, currency: str) -> Decimal:
    """The commission of one conversion in the brand currency, rounded half-up.

    ``percent``: ``value`` per cent of the net revenue (10 means 10 %). ``flat``:
    ``value`` per conversion, kept in full after a partial refund. 0 for rejected
    and refunded conversions and when there is no rule (unattributed).
    """
    if rule is None or status not in COUNTING or net_revenue <= 0:
        return round_money(ZERO, currency)
    if rule.type == "percent":
        return round_money(net_revenue * rule.value / 100, currency)
    return round_money(rule.value, currency)


@dataclass(frozen=True, slots=True)
class OrderState:
    """The part of an order's current state that status moves look at (original currency)."""

    status: str
    amount: Decimal
    refunded: Decimal


@dataclass(frozen=True, slots=True)
class Change:
    """The outcome of a postback for an order: a new version, or a duplicate of the current one."""

    duplicate: bool
    status: str
    amount: Decimal
    refunded: Decimal


def apply(order_id: str, current: OrderState | None, status: str, amount: Decimal | None) -> Change:
    """Decide what a postback with ``status`` (and ``amount``) does to the order.

    Raises Conflict (409) for a move DESIGN.md does not allow and Unprocessable
    (422) for amounts that contradict the order.
    """
    if status not in STATUSES:
        raise Unprocessable(f"Status {status!r} is not one of {', '.join(STATUSES)}.", code="invalid_status")
    if current is None:
        if status == REFUNDED:
            raise Conflict(
                f"Order {order_id!r} has no conversion yet, so it cannot be refunded; "
                "send the order (pending or approved) first.",
                code="invalid_transition",
            )
        if amount is None:
            raise Unprocessable(f"Order {order_id!r} needs an amount.", code="invalid_amount")
        return Change(False, status, amount, ZERO)

    if status == REFUNDED:
        return _refund(order_id, current, amount)
    if status == current.status:
        # Same order, same status: a re-sent postback changes nothing.
        return Change(True, current.status, current.amount, current.refunded)
    if (current.status, status) not in _MOVES:
        raise Conflict(
            f"Order {order_id!r} is {current.status}; it cannot move to {status}.", code="invalid_transition"
        )
    new_amount = current.amount if amount is None else amount
    if current.refunded >= new_amount:
        raise Unprocessable(
            f"Order {order_id!r} has {current.refunded} refunded already, "
            f"so its amount cannot become {new_amount}.",
            code="invalid_amount",
        )
    return Change(False, status, new_amount, current.refunded)


def _refund(order_id: str, current: OrderState, amount: Decimal | None) -> Change:
    if current.status == REJECTED:
        raise Conflict(
            f"Order {order_id!r} is rejected; it cannot move to refunded.", code="invalid_transition"
        )
    total = current.amount if amount is None else amount
    if total > current.amount:
        raise Unprocessable(
            f"The refunded amount {total} of order {order_id!r} is larger than its amount {current.amount}.",
            code="invalid_amount",
        )
    # Refunded amounts are cumulative totals: one at or below what is recorded is a
    # replay (or an older total arriving late) and changes nothing.
    if current.status == REFUNDED or total <= current.refunded:
        return Change(True, current.status, current.amount, current.refunded)
    if total == current.amount:
        return Change(False, REFUNDED, current.amount, total)
    return Change(False, current.status, current.amount, total)
