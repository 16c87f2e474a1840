"""Merging platform events into an order, without Redis or ClickHouse: refunds, late events, status moves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from tracker.conversions import orders
from tracker.conversions.connectors import OrderEvent
from tracker.conversions.orders import Held, PlatformSide
from tracker.core.errors import Conflict, Unprocessable

D = Decimal
T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def event(status: str | None = "approved", amount: str | None = "100.00", total: str | None = "121.00",
          refunds: dict[str, str] | None = None, at: datetime | None = T0, currency: str = "USD") -> OrderEvent:
    return OrderEvent(
        platform="shopify", order_id="1", status=status, currency=currency,
        amount=None if amount is None else D(amount), order_total=None if total is None else D(total),
        refunds={k: D(v) for k, v in (refunds or {}).items()}, updated_at=at,
    )


def test_merge_keeps_the_larger_figure_of_each_refund() -> None:
    merged = orders.merge_refunds({"a": D("10"), "b": D("5")}, {"b": D("7"), "c": D("1")})
    assert merged == {"a": D("10"), "b": D("7"), "c": D("1")}
    assert orders.merge_refunds({"ch": D("30")}, {"ch": D("20")}) == {"ch": D("30")}  # a late cumulative figure


@pytest.mark.parametrize(
    ("ev", "held", "status", "refunded"),
    [
        (event(), None, "approved", "0.00"),
        (event(refunds={"r1": "60.50"}), None, "approved", "50.00"),  # half the total: half the amount
        (event(refunds={"r1": "121.00"}), None, "refunded", "100.00"),
        (event(status="refunded"), None, "refunded", "100.00"),
        (event(), Held("USD", {"r0": D("12.10")}), "approved", "10.00"),  # a refund held before the order
        (event(status="pending", amount="0.00", total="0.00"), None, "pending", "0.00"),  # a free trial
        (event(status="rejected"), None, "rejected", "0.00"),
    ],
)
def test_first(ev: OrderEvent, held: Held | None, status: str, refunded: str) -> None:
    figures = orders.first(ev, held)
    assert (figures.status, str(figures.refunded), str(figures.amount)) == (status, refunded, str(ev.amount))


def test_held_refunds_in_another_currency_are_refused() -> None:
    with pytest.raises(Unprocessable):
        orders.first(event(), Held("EUR", {"r": D("1")}))


def _side(status: str = "approved", refunds: dict[str, str] | None = None, at: datetime = T0) -> str:
    return PlatformSide("shopify", D("121.00"), {k: D(v) for k, v in (refunds or {}).items()}, status,
                        int(at.timestamp() * 1000)).encode()


@pytest.mark.parametrize(
    ("current", "side", "ev", "status", "refunded", "amount"),
    [
        # A refunds/create: status unknown, the refund merged.
        ("approved", _side(), event(status=None, amount=None, total=None, refunds={"r1": "24.20"}, at=None),
         "approved", "20.00", "100.00"),
        # The same refund again: nothing more.
        ("approved", _side(refunds={"r1": "24.20"}), event(refunds={"r1": "24.20"}), "approved", "20.00", "100.00"),
        # A newer event edits the amount.
        ("approved", _side(), event(amount="80.00", at=T0 + timedelta(minutes=1)), "approved", "0.00", "80.00"),
        # An older event arriving late: its status and amount are not taken, its refunds are.
        ("refunded", _side("refunded"), event(status="pending", amount="90.00", at=T0 - timedelta(minutes=5),
                                              refunds={"r9": "1.21"}), "refunded", "100.00", "100.00"),
        ("approved", _side(), event(status="pending", amount="90.00", at=T0 - timedelta(minutes=5)),
         "approved", "0.00", "100.00"),
        # Pending to paid, paid to refunded, a failed payment retried.
        ("pending", _side("pending"), event(at=T0 + timedelta(hours=1)), "approved", "0.00", "100.00"),
        ("approved", _side(), event(status="refunded", at=T0 + timedelta(days=1)), "refunded", "100.00", "100.00"),
        ("rejected", _side("rejected"), event(at=T0 + timedelta(hours=1)), "approved", "0.00", "100.00"),
        # A refunded order never comes back, even from an event without a time.
        ("refunded", _side("refunded"), event(at=None), "refunded", "100.00", "100.00"),
    ],
)
def test_following(current: str, side: str, ev: OrderEvent, status: str, refunded: str, amount: str) -> None:
    figures = orders.following(current, D("100.00"), side, ev)
    assert (figures.status, str(figures.refunded), str(figures.amount)) == (status, refunded, amount)


@pytest.mark.parametrize(("current", "target"), [("approved", "pending"), ("approved", "rejected"),
                                                 ("rejected", "refunded")])
def test_moves_a_platform_may_not_make(current: str, target: str) -> None:
    with pytest.raises(Conflict) as err:
        orders.following(current, D("100.00"), _side(current), event(status=target, at=T0 + timedelta(hours=1)))
    assert err.value.code == "invalid_transition"


def test_the_platform_side_round_trips() -> None:
    side = PlatformSide("stripe", D("86.89"), {"ch_1": D("30.00")}, "approved", 123)
    assert PlatformSide.decode(side.encode()) == side
    assert PlatformSide.decode("") == PlatformSide() and PlatformSide().encode() == ""
    held = Held("JPY", {"r": D("500")}, D("1000"))
    assert Held.decode(held.encode()) == held
