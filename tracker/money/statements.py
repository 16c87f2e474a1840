"""Verifiable statements: each influencer's append-only, hash-chained ledger of commission changes.

Entries are derived from facts that are only ever appended: every conversion version
(``conversion_versions``, with when it reached ClickHouse), every payout line
(``payout_lines``) and every payout event (``payout_events``). They are ordered by when
each fact was recorded, ties broken by ids, and chained (``tracker.money.chain``): a new
fact is recorded after the ones before it, so it is appended, and earlier entries and
their hashes never change. The chain is a pure function of those facts: the same facts
in any database (replayed, merged or not) give the same head hash.

Entries (``amount`` changes ``balance``, the commission earned not yet in a payout):

- ``commission`` (a new conversion credited to the influencer), ``status``, ``refund``,
  ``review``, ``reattribution`` (credited to or taken from the influencer): ``amount`` is the
  change of the commission credited to the influencer (a hold for review changes nothing;
  a rejection in review takes the commission back, an approval after it credits it again);
- ``payout``: a payout created, ``amount`` minus its total (its clawback lines named);
- ``paid``: a payout marked paid, with the brand's reference (``amount`` 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from tracker.core import money
from tracker.core.timeutil import iso, utc
from tracker.money import chain
from tracker.money.lifecycle import REVIEW_REJECTED
from tracker.storage.clickhouse import ClickHouse

_VERSIONS_SQL = """
SELECT order_id, version, any(conversion_id) AS conversion_id, any(status) AS status, any(currency) AS currency,
       any(commission) AS commission, any(influencer_id) AS influencer_id, any(review) AS review,
       any(change) AS change, min(recorded_at) AS recorded_at
FROM conversion_versions
WHERE brand_id = {brand:String} AND order_id IN (
    SELECT DISTINCT order_id FROM conversion_versions WHERE brand_id = {brand:String} AND influencer_id = {inf:String})
GROUP BY order_id, version
ORDER BY order_id, version
"""
_PAYOUTS_SQL = """
SELECT payout_id, min(created_at) AS created_at, sum(amount) AS total, countIf(kind = 'clawback') AS clawbacks,
       sumIf(amount, kind = 'clawback') AS clawed
FROM payout_lines FINAL WHERE brand_id = {brand:String} AND influencer_id = {inf:String}
GROUP BY payout_id
"""
_PAID_SQL = """
SELECT payout_id, reference, at FROM payout_events FINAL
WHERE brand_id = {brand:String} AND event = 'paid' AND payout_id IN {ids:Array(String)}
"""
_ORDER = {"commission": 0, "status": 1, "refund": 1, "review": 1, "reattribution": 1, "payout": 2, "paid": 3}


@dataclass(frozen=True, slots=True)
class Fact:
    at: datetime
    kind: str
    object_id: str
    order_id: str
    detail: str
    amount: Decimal
    tiebreak: int = 0
    clawed: Decimal = Decimal(0)  # a payout's clawback lines (negative)


def _credited(v: dict[str, Any], influencer_id: str) -> Decimal:
    """The commission a version credits the influencer: none for another's, none once rejected in review."""
    if v["influencer_id"] != influencer_id or int(v["review"]) == REVIEW_REJECTED:
        return Decimal(0)
    return Decimal(v["commission"])


def version_facts(versions: list[dict[str, Any]], influencer_id: str, currency: str) -> list[Fact]:
    """One fact per version that changed what the influencer is credited (or the status of it)."""
    facts: list[Fact] = []
    before: dict[str, Any] | None = None
    for v in versions:
        if before is not None and before["order_id"] != v["order_id"]:
            before = None
        mine, was = v["influencer_id"] == influencer_id, before is not None and before["influencer_id"] == influencer_id
        credit = money.round_money(_credited(v, influencer_id), currency)
        previous = money.round_money(_credited(before, influencer_id), currency) if before else Decimal(0)
        kind = ""
        if mine and not was:
            kind = "commission" if before is None else "reattribution"
        elif was and not mine:
            kind = "reattribution"
        elif mine and before is not None and (before["status"] != v["status"] or credit != previous
                                              or before["review"] != v["review"]):
            kind = ("status" if before["status"] != v["status"] else
                    "review" if before["review"] != v["review"] else "refund")
        if kind:
            detail = f"order {v['order_id']} {v['status']}" + (f"; {v['change']}" if v["change"] else "")
            facts.append(Fact(utc(v["recorded_at"]), kind, str(v["conversion_id"]), str(v["order_id"]), detail,
                              credit - previous, int(v["version"])))
        before = v
    return facts


def facts_of(ch: ClickHouse, brand_id: str, influencer_id: str, currency: str) -> list[Fact]:
    params = {"brand": brand_id, "inf": influencer_id}
    facts = version_facts(ch.query_dicts(_VERSIONS_SQL, params), influencer_id, currency)
    payouts = ch.query_dicts(_PAYOUTS_SQL, params)
    for p in payouts:
        total = money.round_money(Decimal(p["total"]), currency)
        detail = f"payout of {total} {currency}"
        if int(p["clawbacks"]):
            detail += (f", after {int(p['clawbacks'])} clawback(s) of "
                       f"{money.round_money(Decimal(p['clawed']), currency)}")
        facts.append(Fact(utc(p["created_at"]), "payout", str(p["payout_id"]), "", detail, -total,
                          clawed=money.round_money(Decimal(p["clawed"]), currency)))
    if payouts:
        for e in ch.query_dicts(_PAID_SQL, {**params, "ids": [str(p["payout_id"]) for p in payouts]}):
            ref = f" (reference {e['reference']})" if e["reference"] else ""
            facts.append(Fact(utc(e["at"]), "paid", str(e["payout_id"]), "", f"payout marked paid{ref}",
                              Decimal(0)))
    facts.sort(key=lambda f: (f.at, _ORDER[f.kind], f.order_id, f.object_id, f.tiebreak))
    return facts


def entries(facts: list[Fact], currency: str) -> list[dict[str, Any]]:
    """The whole chain, oldest first."""
    out, balance = [], money.round_money(Decimal(0), currency)
    for n, f in enumerate(facts, start=1):
        amount = money.round_money(f.amount, currency)
        balance += amount
        out.append({"seq": n, "at": iso(f.at), "kind": f.kind, "object_id": f.object_id, "order_id": f.order_id,
                    "detail": f.detail, "amount": str(amount), "balance": str(balance)})
    return chain.link(out)


def statement(ch: ClickHouse, brand_id: str, influencer_id: str, currency: str, start: date | None,
              end: date | None) -> dict[str, Any]:
    """Entries in [start, end] (UTC days), with the hashes of the whole chain; totals over those entries.
    ``head_hash``: the hash of the last entry up to ``end`` (the chain's head then; GENESIS before any)."""
    facts = facts_of(ch, brand_id, influencer_id, currency)
    full = entries(facts, currency)
    lo = iso(datetime(start.year, start.month, start.day)) if start else ""
    hi = iso(datetime(end.year, end.month, end.day) + timedelta(days=1)) if end else "~"
    shown = [(f, e) for f, e in zip(facts, full, strict=True) if lo <= e["at"] < hi]
    upto = [e for e in full if e["at"] < hi]
    zero = money.round_money(Decimal(0), currency)
    paid_ids = {e["object_id"] for e in full if e["kind"] == "paid"}
    earned = paid = open_ = clawed = zero
    for f, e in shown:
        if f.kind == "payout":
            clawed += f.clawed
            if f.object_id in paid_ids:
                paid -= Decimal(e["amount"])
            else:
                open_ -= Decimal(e["amount"])
        elif f.kind != "paid":
            earned += Decimal(e["amount"])
    return {
        "influencer_id": influencer_id, "currency": currency, "entries": [e for _, e in shown],
        "head_hash": upto[-1]["hash"] if upto else chain.GENESIS,
        "first_prev_hash": shown[0][1]["prev_hash"] if shown else (upto[-1]["hash"] if upto else chain.GENESIS),
        "totals": {"earned": earned, "clawed_back": clawed, "paid": paid, "in_open_payouts": open_,
                   "balance": Decimal(upto[-1]["balance"]) if upto else zero},
    }
