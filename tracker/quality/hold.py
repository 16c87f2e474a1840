"""Flags hold commission: quality's verdicts written into money's ``review`` hook.

A conversion's ``review`` (``tracker.money.lifecycle``) follows its flags and the latest
review decision (``wanted``):

- rejected in review: 2 (commission ``void``);
- approved in review: 0 (the normal lifecycle: pending, payable after the hold);
- flagged by a rule, no decision yet: 1 (commission ``review``: not payable, in no payout run);
- otherwise 0 (flags that cleared, after a rules change, release the hold).

Each change is a new version of the conversion through the order-state store, as every
conversion change is (compare-and-write in Redis, then the stream to ClickHouse), so the
ledger's history, the influencer's statement and the ``conversion.updated`` webhook show
it. A conversion whose commission is in a paid payout is left alone (it stays ``paid``).

Ingest brings a version to ClickHouse a moment later; until then payout runs read the
same rule from the flags and decisions themselves (``UNRELEASED_SQL``), so a conversion is
never claimed between its flag and its ``review`` version.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tracker.core.timeutil import now_ms_precision
from tracker.money.lifecycle import PAID_IDS_SQL, REVIEW_HELD, REVIEW_REJECTED
from tracker.storage.clickhouse import ClickHouse, run_sync

if TYPE_CHECKING:  # the type only: reports reach this module and know nothing of the order store
    from tracker.conversions.state import OrderStates

# The brand's attributed conversions whose review could differ from 0: held or voided already,
# flagged, or decided. Paid ones stay as they are.
_CANDIDATES = (
    "SELECT c.order_id AS order_id, c.conversion_id AS conversion_id, c.review AS review, f.flags AS flags, "
    "r.decision AS decision "
    "FROM (SELECT order_id, conversion_id, review FROM conversions FINAL WHERE brand_id = {brand:String} "
    "AND attributed = 1 AND (review != 0 "
    "OR order_id IN (SELECT order_id FROM conversion_flags WHERE brand_id = {brand:String}) "
    "OR conversion_id IN (SELECT conversion_id FROM conversion_reviews WHERE brand_id = {brand:String}))) AS c "
    "LEFT JOIN (SELECT order_id, flags FROM conversion_flags FINAL WHERE brand_id = {brand:String}) AS f "
    "ON f.order_id = c.order_id "
    "LEFT JOIN (SELECT conversion_id, decision FROM conversion_reviews FINAL WHERE brand_id = {brand:String}) AS r "
    "ON r.conversion_id = c.conversion_id "
    f"WHERE c.conversion_id NOT IN ({PAID_IDS_SQL})"
)

# Conversion ids of a brand ({brand} bound) whose commission is held or rejected by review
# (``wanted`` above 0), read from the flags and decisions: what a payout run must not claim.
UNRELEASED_SQL = (
    "SELECT conversion_id FROM conversion_reviews FINAL WHERE brand_id = {brand:String} AND decision = 'reject' "
    "UNION ALL "
    "SELECT conversion_id FROM conversion_flags FINAL WHERE brand_id = {brand:String} AND notEmpty(flags) "
    "AND conversion_id NOT IN (SELECT conversion_id FROM conversion_reviews FINAL "
    "WHERE brand_id = {brand:String} AND decision = 'approve')"
)

# Rounds of (read the state, compare-and-write) before leaving a busy order to the next call.
MAX_ATTEMPTS = 8


def wanted(flags: list[str], decision: str) -> int:
    """The ``review`` value a conversion should have."""
    if decision == "reject":
        return REVIEW_REJECTED
    if decision == "approve":
        return 0
    return REVIEW_HELD if flags else 0


def change_text(flags: list[str], decision: str, want: int) -> str:
    """What the version changed, in words (the ledger's history and the statements show it)."""
    if want == REVIEW_HELD:
        return f"held for review: {', '.join(flags)}"
    if want == REVIEW_REJECTED:
        return "rejected in review: commission void"
    if decision == "approve":
        return "approved in review: commission released"
    return "released: no quality rule flags it any more"


def differing(ch: ClickHouse, brand_id: str) -> list[dict[str, Any]]:
    """The conversions whose ``review`` in ClickHouse is not the wanted one, with the wanted value."""
    out = []
    for r in ch.query_dicts(_CANDIDATES, {"brand": brand_id}):
        flags, decision = list(r["flags"] or []), str(r["decision"] or "")
        want = wanted(flags, decision)
        if want != int(r["review"]):
            out.append({**r, "flags": flags, "decision": decision, "want": want})
    return out


async def apply(states: OrderStates, ch: ClickHouse, brand_id: str) -> int:
    """Write a version for every conversion whose ``review`` is not the wanted one; how many were written.

    Idempotent: the order's state in Redis is compared first, so a version written earlier
    and not yet in ClickHouse (or one another process wrote) is not written twice."""
    written = 0
    for r in await run_sync(differing, ch, brand_id):
        written += await _write(states, brand_id, str(r["order_id"]), str(r["conversion_id"]), r["want"],
                                change_text(r["flags"], r["decision"], r["want"]))
    return written


async def _write(states: OrderStates, brand_id: str, order_id: str, conversion_id: str, want: int,
                 change: str) -> int:
    snap = await states.read(brand_id, order_id)
    for _ in range(MAX_ATTEMPTS):
        current = snap.row
        if current is None or current["conversion_id"] != conversion_id or int(current["review"]) == want:
            return 0
        row = dict(current)
        row.update(version=int(current["version"]) + 1, review=want, updated_at=now_ms_precision(), change=change)
        after = await states.write(snap, row)
        if after is None:
            return 1
        snap = after
    return 0
