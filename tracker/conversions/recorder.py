"""Recording an order: decide the change to its state, attribute a new order, price the commission.

The pure rules live in ``tracker.conversions.attribution`` (postbacks) and
``tracker.conversions.orders`` (platform events); this module looks their inputs up (the
order's state, links, the campaign's rule, the brand's exchange rate, the customer's
first order) and writes the new version through ``tracker.conversions.state``. The
answer is sent only after the write: an accepted conversion is in Redis (AOF) and
reaches ClickHouse through the ingest worker. ``tracker.conversions.platform`` records
platform events with the same steps.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import redis.asyncio as aioredis

from tracker.conversions import customers, reasons
from tracker.conversions.answer import Outcome
from tracker.conversions.attribution import (
    REFUNDED,
    Change,
    CommissionRule,
    OrderState,
    apply,
    attribute,
    click_qualifies,
    commission,
    customer_qualifies,
)
from tracker.conversions.customers import FirstOrder
from tracker.conversions.lookups import Lookups
from tracker.conversions.orderset import OrderSet
from tracker.conversions.parse import Postback
from tracker.conversions.ratelimit import Quota
from tracker.conversions.rebuild import Rebuilder
from tracker.conversions.seen import SeenOrders
from tracker.conversions.state import Extras, OrderStates, Snapshot, Stored
from tracker.conversions.staterow import check_fits
from tracker.core import credentials, ids, money
from tracker.core.clickid import ClickIds
from tracker.core.errors import StorageUnavailable, TrackerError, Unauthorized, Unprocessable
from tracker.core.records import LinkRecord
from tracker.core.timeutil import now_ms_precision, to_ms
from tracker.registry import Registry
from tracker.registry.campaigns import DEFAULT_HOLD_DAYS, rule_at
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse

log = logging.getLogger("tracker.conversions.recorder")

# Rounds of (read the state, decide, compare-and-write) before giving up on a busy order.
MAX_ATTEMPTS = 8

BAD_STORE_SIGNATURE = "The store id or the X-Signature is not valid."


@dataclass(frozen=True, slots=True)
class NewOrder:
    """What the first version of an order is made of, from a postback or a platform event."""

    order_id: str
    status: str
    currency: str
    amount: Decimal  # in ``currency``
    refunded: Decimal  # in ``currency``
    click_id: str | None
    coupon_code: str | None
    occurred_at: datetime | None
    customer_hash: str = ""
    email_hash: str = ""
    platform_state: str = ""
    country: str = ""


class Conversions:
    """Records postbacks and platform events for one process."""

    def __init__(self, settings: Settings, redis: aioredis.Redis, ch: ClickHouse, registry: Registry) -> None:
        assert settings.secret_key is not None
        self.settings = settings
        self.secret_key = settings.secret_key
        self.registry = registry
        self.ch = ch
        self.lookups = Lookups(registry, settings.link_cache_seconds)
        self.click_ids = ClickIds(settings.secret_key)
        self.orders = OrderSet(redis, settings.secret_key)
        self.rebuild = Rebuilder(redis, ch, self.orders)
        self.states = OrderStates(redis, ch, self.orders, self.rebuild)
        # Orders the server's workers recorded or read lately: a postback for one of them is most likely
        # a replay or a change, so its first call only reads (no first version decided in vain).
        self.seen = SeenOrders(credentials.derive_key(settings.secret_key, "seen-orders"))

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        await self.orders.stop()
        await self.states.close()

    def hashes(self, brand_id: str, customer_id: str | None, email: str | None) -> tuple[str, str]:
        """The keyed hashes a conversion keeps of its customer ("" when not given)."""
        key = self.secret_key
        return (
            credentials.customer_hash(key, brand_id, customer_id) if customer_id else "",
            credentials.email_hash(key, brand_id, email) if email else "",
        )

    async def record(self, store: Mapping[str, Any], pb: Postback, quota: Quota | None = None) -> Outcome:
        """Apply one postback to its order; the order's state after it, and whether it was a duplicate.

        The first Redis call counts the postback against ``quota`` and reads the order; for an
        order this process has not seen, it also carries the order's first version, decided
        beforehand, which Redis writes when the order is certainly new: a new order or a replay
        is one round trip. Anything else (an order to change, a race, a filter that cannot tell)
        goes on as before: decide on the state read, compare-and-write.
        """
        brand_id = str(store["brand_id"])
        customer, email = self.hashes(brand_id, pb.customer_id, pb.customer_email)
        known = self.seen.check_and_add(brand_id, pb.order_id)
        row = None if known else await self._guess_new(store, pb, customer, email)
        first = customers.mapping_of(row) if row is not None else None
        found = await self.states.first(brand_id, pb.order_id, customer_hash=customer, quota=quota, row=row,
                                        customer_first=first.encode() if first is not None else "")
        if found is None:
            assert row is not None
            return Outcome(row, duplicate=False)
        if isinstance(found, Stored):
            # Most postbacks for a stored order are replays: decided on the columns they read, and
            # answered from them; the whole row is decoded only to change the order.
            if found.view is not None and self._change(found.view, pb).duplicate:
                return Outcome(found.view, duplicate=True)
            found = found.snapshot()
        snap = found
        for _ in range(MAX_ATTEMPTS):
            current = snap.row
            if current is None:
                change = apply(pb.order_id, None, pb.status, pb.amount)
                assert pb.currency is not None  # an amount (required here) comes with its currency
                new = NewOrder(pb.order_id, change.status, pb.currency, change.amount, change.refunded, pb.click_id,
                               pb.coupon_code, pb.occurred_at, customer, email, country=pb.country or "")
                row = await self.first_version(store, new, snap)
            else:
                change = self._change(current, pb)
                if change.duplicate:
                    if snap.raw is None:
                        # Redis lost this order: put the rebuilt state back for the next postback.
                        await self.states.restore(current)
                    return Outcome(current, duplicate=True)
                row = await self.next_version(current, change.status, change.amount, change.refunded)
            after = await self.states.write(snap, row, self.extras(row))
            if after is None:
                return Outcome(row, duplicate=False)
            snap = after  # another copy or status change won the race: decide again on the new state
        raise StorageUnavailable(f"Order {pb.order_id!r} is changing too often right now; retry the postback.")

    async def _guess_new(
        self, store: Mapping[str, Any], pb: Postback, customer: str, email: str
    ) -> dict[str, Any] | None:
        """The order's first version if it is new with no first order of its customer; None when
        it could not be new (a refund) or its first version is refused (the read decides then)."""
        try:
            change = apply(pb.order_id, None, pb.status, pb.amount)
            assert pb.currency is not None
            new = NewOrder(pb.order_id, change.status, pb.currency, change.amount, change.refunded, pb.click_id,
                           pb.coupon_code, pb.occurred_at, customer, email, country=pb.country or "")
            row = await self.first_version(store, new, Snapshot(None, None))
            check_fits(row)
        except TrackerError:
            return None
        return row

    def extras(self, row: Mapping[str, Any], delivery_key: str | None = None) -> Extras:
        """The commit's other writes: the delivery marker, and the customer's first attributed order."""
        first = customers.mapping_of(dict(row))
        if first is None:
            return Extras(delivery_key)
        h = str(row["customer_hash"])
        return Extras(delivery_key, h, customers.shard_key(str(row["brand_id"]), h), first.encode())

    def _change(self, current: Mapping[str, Any], pb: Postback) -> Change:
        check_currency(current, pb.order_id, pb.currency)
        state = OrderState(current["status"], current["original_amount"], current["original_refunded_amount"])
        return apply(pb.order_id, state, pb.status, pb.amount)

    async def rule(self, brand_id: str, campaign_id: str) -> CommissionRule | None:
        if not campaign_id:
            return None
        campaign = await self.lookups.campaign(brand_id, campaign_id)
        if campaign is None:
            log.warning("campaign %s of brand %s is gone; commission 0", campaign_id, brand_id)
            return None
        return CommissionRule.of(campaign["commission"])

    async def rule_in_force(self, brand_id: str, campaign_id: str, occurred_ms: int) -> tuple[str, int]:
        """The campaign's rule in force when the order occurred, as stored on the conversion
        (``"percent:10"``, ``""`` for none), and its hold in days."""
        if not campaign_id:
            return "", DEFAULT_HOLD_DAYS
        campaign = await self.lookups.campaign(brand_id, campaign_id)
        if campaign is None:
            log.warning("campaign %s of brand %s is gone; commission 0", campaign_id, brand_id)
            return "", DEFAULT_HOLD_DAYS
        rule = rule_at(campaign, occurred_ms)
        return f"{rule['type']}:{money.plain(rule['value'])}", int(rule["hold_days"])

    async def _rate(self, brand_id: str, brand_currency: str, currency: str) -> Decimal:
        if currency == brand_currency:
            return Decimal(1)
        rate = await self.lookups.fx_rate(brand_id, currency)
        if rate is None or rate <= 0:
            raise Unprocessable(
                f"The amount is in {currency} but the brand's currency is {brand_currency}, and the brand "
                f"has no exchange rate for {currency}: set one with PUT /api/v1/fx-rates/{currency}.",
                code="missing_fx_rate",
            )
        return Decimal(rate)

    async def _customer_link(self, brand_id: str, occurred_ms: int, raw: str) -> LinkRecord | None:
        """The link of the customer's first attributed order, when this order falls in its campaign's window."""
        first = FirstOrder.decode(raw)
        if first is None:
            return None
        link = await self.lookups.link_by_id(first.link_id)
        if link is None:
            return None
        campaign = await self.lookups.campaign(brand_id, link.campaign_id)
        months = int(campaign.get("recurring_months", 12)) if campaign else 0
        return link if customer_qualifies(brand_id, occurred_ms, first.first_ms, link, months) else None

    async def _coupon_first(self, brand_id: str, link: LinkRecord) -> bool:
        campaign = await self.lookups.campaign(brand_id, link.campaign_id)
        return campaign is not None and campaign.get("attribution_priority") == "coupon"

    async def first_version(self, store: Mapping[str, Any], new: NewOrder, snap: Snapshot) -> dict[str, Any]:
        brand_id = str(store["brand_id"])
        brand = await self.lookups.brand(brand_id)
        if brand is None:
            # The store outlived its brand: answer as for an unknown store.
            raise Unauthorized(BAD_STORE_SIGNATURE, code="invalid_signature")
        brand_currency = str(brand["currency"])
        rate = await self._rate(brand_id, brand_currency, new.currency)
        now = now_ms_precision()
        occurred = new.occurred_at or now
        occurred_ms = to_ms(occurred)

        ref = self.click_ids.parse(new.click_id) if new.click_id else None
        click_link = await self.lookups.link_by_id(ref.link_id) if ref is not None else None
        coupon_link = customer_link = None
        coupon_first = False
        if not click_qualifies(brand_id, occurred_ms, ref, click_link):
            if snap.customer:
                customer_link = await self._customer_link(brand_id, occurred_ms, snap.customer)
            if new.coupon_code and customer_link is None:
                coupon_link = await self.lookups.link_by_coupon(brand_id, new.coupon_code)
        elif new.coupon_code:
            # A click qualifies: the coupon still wins when its campaign says coupons come first.
            coupon_link = await self.lookups.link_by_coupon(brand_id, new.coupon_code)
            coupon_first = coupon_link is not None and await self._coupon_first(brand_id, coupon_link)
        result = attribute(brand_id, occurred_ms, ref, click_link, coupon_link, customer_link, coupon_first)
        link = result.link
        applied, hold_days = await self.rule_in_force(brand_id, link.campaign_id if link else "", occurred_ms)
        rule = stored_rule(applied)
        reason = reasons.explain(brand_id, occurred_ms, new.click_id, ref, click_link, new.coupon_code, coupon_link,
                                 result)

        amount = money.round_money(new.amount * rate, brand_currency)
        refunded = amount if new.status == REFUNDED else money.round_money(new.refunded * rate, brand_currency)
        return {
            "brand_id": brand_id,
            "order_id": new.order_id,
            "version": 1,
            "conversion_id": ids.new_id("conversion"),
            "store_id": str(store["id"]),
            "status": new.status,
            "currency": brand_currency,
            "amount": amount,
            "refunded_amount": refunded,
            "original_currency": new.currency,
            "original_amount": money.round_money(new.amount, new.currency),
            "original_refunded_amount": money.round_money(new.refunded, new.currency),
            "fx_rate": rate,
            "commission": commission(rule, new.status, amount - refunded, brand_currency),
            "attributed": 1 if result.attributed else 0,
            "attribution": result.kind or "",
            "click_id": new.click_id or "",
            "link_id": link.id if link is not None else 0,
            "link_code": link.code if link is not None else "",
            "campaign_id": link.campaign_id if link is not None else "",
            "influencer_id": link.influencer_id if link is not None else "",
            "coupon_code": new.coupon_code or "",
            "occurred_at": occurred,
            "created_at": now,
            "updated_at": now,
            "customer_hash": new.customer_hash,
            "email_hash": new.email_hash,
            "platform_state": new.platform_state,
            "commission_rule": applied,
            "hold_days": hold_days,
            "review": 0,
            "change": "created",
            "reason": reason,
            "country": new.country,
        }

    async def next_version(
        self, current: Mapping[str, Any], status: str, amount: Decimal, refunded_original: Decimal,
        platform_state: str | None = None,
    ) -> dict[str, Any]:
        brand_currency = current["currency"]
        rate: Decimal = current["fx_rate"]  # the rate of the first version, so refunds match the sale
        converted = money.round_money(amount * rate, brand_currency)
        refunded = converted if status == REFUNDED else money.round_money(refunded_original * rate, brand_currency)
        # The rule applied when the order was first recorded (a conversion from before rules were
        # stored on it reads its campaign's current rule).
        if current.get("commission_rule"):
            rule = stored_rule(str(current["commission_rule"]))
        else:
            rule = await self.rule(current["brand_id"], current["campaign_id"])
        row = dict(current)
        row.update(
            version=int(current["version"]) + 1,
            status=status,
            amount=converted,
            refunded_amount=refunded,
            original_amount=amount,
            original_refunded_amount=refunded_original,
            commission=commission(rule, status, converted - refunded, brand_currency),
            updated_at=now_ms_precision(),
            change=describe_change(current, status, converted, refunded),
        )
        if platform_state is not None:
            row["platform_state"] = platform_state
        return row


def describe_change(current: Mapping[str, Any], status: str, amount: Decimal, refunded: Decimal) -> str:
    """What a new version changed, in words (brand currency)."""
    parts = []
    if status != current["status"]:
        parts.append(f"status {current['status']} -> {status}")
    if amount != current["amount"]:
        parts.append(f"amount {current['amount']} -> {amount}")
    if refunded != current["refunded_amount"] and status != REFUNDED:
        parts.append(f"refunded {current['refunded_amount']} -> {refunded}")
    return "; ".join(parts) or "no change"


def stored_rule(applied: str) -> CommissionRule | None:
    """The rule a conversion carries (``"percent:10"``), None for none."""
    if not applied:
        return None
    kind, _, value = applied.partition(":")
    return CommissionRule.of({"type": kind, "value": Decimal(value)})


def check_currency(current: Mapping[str, Any], order_id: str, currency: str | None) -> None:
    original_currency = current["original_currency"]
    if currency is not None and currency != original_currency:
        raise Unprocessable(
            f"Order {order_id!r} was recorded in {original_currency}; "
            f"send its status changes in {original_currency}, not {currency}.",
            code="invalid_currency",
        )
