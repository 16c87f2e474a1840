"""Manual re-attribution: a new version of the conversion credited to another link (or none).

The version goes through the order-state store like a postback's (compare-and-write in
Redis, then the stream to ClickHouse), so later postbacks of the order build on it. It
runs under the brand's money lock and is refused (409) once the commission is in a paid
payout; a commission in an open payout is clawed back from its first influencer in the
next run (``tracker.money.payouts``). The commission is the new campaign's rule in force
when the order occurred.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tracker.conversions import reasons
from tracker.conversions.attribution import commission
from tracker.conversions.recorder import Conversions, stored_rule
from tracker.core.errors import Conflict, NotFound, StorageUnavailable, Unprocessable
from tracker.core.timeutil import now_ms_precision, to_ms
from tracker.money import lifecycle
from tracker.money.lock import brand_lock
from tracker.registry import Registry
from tracker.storage.clickhouse import ClickHouse, run_sync

PAID_LINES_SQL = (
    "SELECT count() FROM payout_lines FINAL WHERE brand_id = {brand:String} AND conversion_id = {cid:String} "
    "AND payout_id IN (SELECT payout_id FROM payout_events FINAL WHERE brand_id = {brand:String} AND event = 'paid')"
)


def is_paid(ch: ClickHouse, brand_id: str, conversion_id: str) -> bool:
    rows = ch.query_dicts(PAID_LINES_SQL.replace("SELECT count()", "SELECT count() AS n"),
                          {"brand": brand_id, "cid": conversion_id})
    return bool(rows and int(rows[0]["n"]))


async def reattribute(
    conversions: Conversions, registry: Registry, ch: ClickHouse, brand_id: str, order_id: str,
    conversion_id: str, link_code: str | None, note: str, actor: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The order's state before and after; raises NotFound, Conflict (paid), Unprocessable (bad link)."""
    link = None
    if link_code is not None:
        link = await registry.link_by_code(link_code)
        if link is None or link.brand_id != brand_id:
            raise Unprocessable(f"Link {link_code!r} does not exist.", code="unknown_link")
    async with brand_lock(conversions.orders.redis, brand_id):
        if await run_sync(is_paid, ch, brand_id, conversion_id):
            raise Conflict(f"Conversion {conversion_id!r} has its commission in a paid payout; it cannot be "
                           "re-attributed.", code="already_paid")
        snap = await conversions.states.read(brand_id, order_id)
        for _ in range(8):
            current = snap.row
            if current is None or current["conversion_id"] != conversion_id:
                raise NotFound(f"Conversion {conversion_id!r} does not exist.")
            row = _version(current, link, note, actor,
                           *await conversions.rule_in_force(brand_id, link.campaign_id if link else "",
                                                            to_ms(current["occurred_at"])))
            after = await conversions.states.write(snap, row)
            if after is None:
                return current, row
            snap = after
    raise StorageUnavailable(f"Order {order_id!r} is changing too often right now; retry.")


def _version(current: dict[str, Any], link: Any, note: str, actor: str, applied: str, hold: int) -> dict[str, Any]:
    rule = stored_rule(applied)
    old = current["link_code"] or "unattributed"
    new = link.code if link is not None else "unattributed"
    row = dict(current)
    # The only change of a conversion's influencer, and it says "manual", as every later version does (they
    # copy this one): conversion_moves, which the ledger's pages by influencer rely on, keeps those versions.
    row.update(
        version=int(current["version"]) + 1,
        attributed=1 if link is not None else 0,
        attribution="manual",
        link_id=link.id if link is not None else 0,
        link_code=link.code if link is not None else "",
        campaign_id=link.campaign_id if link is not None else "",
        influencer_id=link.influencer_id if link is not None else "",
        commission_rule=applied,
        hold_days=hold,
        commission=commission(rule, current["status"], current["amount"] - current["refunded_amount"],
                              current["currency"]),
        updated_at=now_ms_precision(),
        change=f"re-attributed from {old} to {new} by {actor}" + (f": {note}" if note else ""),
        reason=reasons.manual(link.code if link is not None else None, note),
    )
    return row


def as_item(row: dict[str, Any], now: datetime) -> dict[str, Any]:
    """A fresh version as a ledger row (before ingest has it in ClickHouse)."""
    from tracker.money.ledger import item

    status = lifecycle.commission_status(row, now, paid=False) or ""
    return item({**row, "commission_status": status})
