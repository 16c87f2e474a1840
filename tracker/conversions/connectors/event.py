"""What every store connector produces: ``OrderEvent``, and the refund arithmetic on it.

A connector turns one verified platform webhook into an ``OrderEvent``: the order's
state *now* as that platform reports it, already in the conversion model's terms
(order id, status, commissionable amount, refunds, click id, coupon, customer).
The recorder (a later stage) merges it into the stored conversion. Nothing here
touches Redis, ClickHouse or the clock: it is pure and unit-tested on fixtures.

Refunds are reported per platform refund id, so the recorder can merge them: a
re-delivered or re-ordered webhook adds nothing twice, and a webhook that only
carries the newest refund loses none of the earlier ones. ``refund_share`` then
turns the merged refunds into the cumulative commissionable refund.

Imports only the money helpers (a leaf).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from types import MappingProxyType
from typing import Final

from tracker.core.money import ZERO, quantum, round_money

PLATFORMS: Final = ("shopify", "woocommerce", "stripe")
STATUSES: Final = ("pending", "approved", "rejected", "refunded")


@dataclass(frozen=True, slots=True)
class OrderEvent:
    """One platform order event in the conversion model's terms.

    ``amount`` is what commission is computed on: the order value after discounts,
    before shipping and tax, in ``currency``. ``order_total`` is what the customer
    paid (tax and shipping included): the figure platform refunds are given against.
    Either is None when the event does not carry it (a Shopify ``refunds/create``
    knows only its refund; a Stripe ``charge.refunded`` knows the total charged but
    not the subtotal); the recorder keeps the figures of earlier events then.

    ``status`` is the order's state per the platform, or None when the event says
    nothing about it (a Shopify ``refunds/create``): the order keeps its state and
    the refunds decide whether it is now fully refunded.

    ``refunds`` maps each platform refund id to that refund's amount (against
    ``order_total``, never negative). Merge by id; ``refund_share`` does the rest.
    Stripe reports a charge's refunds as one cumulative ``amount_refunded``, so its
    key is the charge id and a later event replaces the earlier figure.

    ``occurred_at`` is when the order was placed (tz-aware UTC), None when the event
    does not say. ``updated_at`` is when the platform last changed the order (or
    created the event), so the recorder can tell an older delivery arriving late;
    None when the event does not say. ``customer_id`` and ``customer_email`` are the
    platform's raw values; the recorder keeps only keyed hashes of them. ``country`` is
    the order's country (ISO 3166 alpha-2: the shipping address's, else the billing
    one's), None when the event does not carry one.
    """

    platform: str
    order_id: str
    status: str | None
    currency: str
    amount: Decimal | None
    order_total: Decimal | None
    refunds: Mapping[str, Decimal] = field(default_factory=dict)
    click_id: str | None = None
    coupon_code: str | None = None
    customer_id: str | None = None
    occurred_at: datetime | None = None
    subscription_id: str | None = None
    updated_at: datetime | None = None
    customer_email: str | None = None
    country: str | None = None

    def __post_init__(self) -> None:
        if self.platform not in PLATFORMS:
            raise ValueError(f"platform {self.platform!r} is not one of {PLATFORMS}.")
        if self.status is not None and self.status not in STATUSES:
            raise ValueError(f"status {self.status!r} is not one of {STATUSES}.")
        for when in (self.occurred_at, self.updated_at):
            if when is not None and when.utcoffset() is None:
                raise ValueError("occurred_at and updated_at must be timezone-aware.")
        if any(value < 0 for value in self.refunds.values()):
            raise ValueError("refunds must not be negative.")
        # Frozen all the way down: a read-only view of a private copy.
        object.__setattr__(self, "refunds", MappingProxyType(dict(self.refunds)))

    @property
    def refunded_total(self) -> Decimal:
        """The sum of the refunds this event carries (against ``order_total``)."""
        return sum(self.refunds.values(), ZERO)


@dataclass(frozen=True, slots=True)
class RefundShare:
    """The commissionable side of an order's refunds, cumulative.

    ``full``: nothing commissionable is left (the whole total was refunded, or the
    share rounds to the whole amount): the conversion is ``refunded``.
    ``amount``: the commissionable amount refunded so far, rounded half-up to the
    currency's minor unit; None when it cannot be known yet (the order's amount or
    total has not arrived: keep the refunds and compute again when it does). For a
    full refund it equals the order's amount, or is None if that is unknown.
    """

    full: bool
    amount: Decimal | None


def refund_share(
    amount: Decimal | None, order_total: Decimal | None, refunds: Mapping[str, Decimal], currency: str
) -> RefundShare:
    """Apply the refunded share of ``order_total`` to the commissionable ``amount``.

    A platform refunds money against what the customer paid, tax and shipping
    included, but commission is due on the goods after discounts only. So the
    refunded fraction of the total, ``sum(refunds) / order_total``, is applied to
    ``amount`` and rounded half-up to the minor unit (exactly: rational arithmetic,
    no intermediate rounding). Examples, USD: amount 100.00, total 121.00 (21.00
    shipping and tax), refunds 60.50 → 50.00 refunded; refunds 121.00 or more → full.

    - No refund (empty, or all zero): nothing refunded, whatever else is unknown.
    - ``sum(refunds) >= order_total``: a full refund (also a total of 0, when
      something was refunded). Over-refunds (a goodwill extra) are capped there.
    - A partial refund whose share rounds up to the whole (non-zero) amount is full
      too: nothing commissionable is left, as with a postback refunding it all.
    - ``amount`` or ``order_total`` unknown: ``amount`` None (not computable yet).
    """
    if any(value < 0 for value in refunds.values()):
        raise ValueError("Refunds must not be negative.")
    refunded = sum(refunds.values(), ZERO)
    if refunded == 0:
        return RefundShare(full=False, amount=round_money(ZERO, currency))
    if order_total is None:
        return RefundShare(full=False, amount=None)
    if refunded >= order_total:
        return RefundShare(full=True, amount=None if amount is None else round_money(amount, currency))
    if amount is None:
        return RefundShare(full=False, amount=None)
    share = Fraction(amount) * Fraction(refunded) / Fraction(order_total)
    units = share / Fraction(quantum(currency))
    whole = int(units + Fraction(1, 2))  # half-up; units >= 0, so int() floors
    value = round_money(Decimal(whole) * quantum(currency), currency)
    if value >= amount > 0:
        return RefundShare(full=True, amount=round_money(amount, currency))
    return RefundShare(full=False, amount=value)
