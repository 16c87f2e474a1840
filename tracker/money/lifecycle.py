"""A conversion's ``commission_status``, derived exactly at any instant (pure, and its SQL twin).

From the conversion's last version, its hold and its payout membership:

- ``paid``: its commission is in a payout marked paid (a later refund is a clawback line,
  the commission stays paid);
- ``review``: held by a quality rule (``review = 1``; the rules that set it and the review
  decision belong to ``tracker`` quality: ``review = 0`` approved or never flagged,
  ``review = 2`` rejected);
- ``void``: rejected, fully refunded, or rejected in review before payment;
- ``pending``: the order is pending, or approved and inside the hold (``occurred_at +
  hold_days``);
- ``payable``: approved, the hold over.

Unattributed conversions earn no commission: their status is None. The hold is counted
from ``occurred_at`` (DESIGN.md), so a refund during the hold makes the commission void
before it was ever payable, and a partial refund lowers it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from tracker.core.timeutil import utc

CommissionStatus = Literal["pending", "payable", "paid", "void", "review"]
STATUSES: tuple[str, ...] = ("pending", "payable", "paid", "void", "review")
REVIEW_HELD = 1
REVIEW_REJECTED = 2


def commission_status(row: dict[str, Any], now: datetime, paid: bool) -> CommissionStatus | None:
    if not int(row["attributed"]):
        return None
    if paid:
        return "paid"
    review = int(row.get("review", 0))
    if review == REVIEW_HELD:
        return "review"
    if row["status"] in ("rejected", "refunded") or review == REVIEW_REJECTED:
        return "void"
    if row["status"] == "pending":
        return "pending"
    if utc(row["occurred_at"]) + timedelta(days=int(row.get("hold_days", 30))) > utc(now):
        return "pending"
    return "payable"


def payable_at(row: dict[str, Any]) -> datetime:
    """When an approved conversion's hold ends."""
    return utc(row["occurred_at"]) + timedelta(days=int(row.get("hold_days", 30)))


# The same rule in SQL over a conversions row; ``paid`` is a boolean expression, ``now`` an SQL
# expression of the instant (by default the bound DateTime64(3, 'UTC') parameter ``now``).
def status_sql(paid: str, now: str = "{now:DateTime64(3, 'UTC')}") -> str:
    return (
        f"multiIf(attributed = 0, '', {paid}, 'paid', review = {REVIEW_HELD}, 'review', "
        f"status IN ('rejected', 'refunded') OR review = {REVIEW_REJECTED}, 'void', status = 'pending', 'pending', "
        f"occurred_at + toIntervalDay(hold_days) > {now}, 'pending', 'payable')"
    )


_PAID_PAYOUTS = "SELECT payout_id FROM payout_events FINAL WHERE brand_id = {brand:String} AND event = 'paid'"
# Conversion ids of a brand whose commission is in a payout marked paid ({brand} bound).
PAID_IDS_SQL = (
    "SELECT conversion_id FROM payout_lines FINAL WHERE brand_id = {brand:String} AND kind = 'commission' "
    f"AND payout_id IN ({_PAID_PAYOUTS})"
)
# The same among the conversion ids {cids} (an Array(String)): PREWHERE on the sort key's prefix reads
# and folds only their lines, and keeps FINAL exact (the rows of one key all pass it or all fail it).
PAID_AMONG_SQL = (
    "SELECT conversion_id FROM payout_lines FINAL PREWHERE brand_id = {brand:String} "
    f"AND conversion_id IN {{cids:Array(String)}} WHERE kind = 'commission' AND payout_id IN ({_PAID_PAYOUTS})"
)
