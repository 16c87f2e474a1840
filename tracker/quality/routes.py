"""Quality routes: the brand's rules, the review queue and decisions, the coupon-leak list.

Every read first brings the brand's flags up to date (``tracker.quality.sync``) and holds the
commission of newly flagged conversions (``tracker.quality.hold``). A review decision is kept
in ``conversion_reviews`` (latest wins) and in the audit log, and written into the
conversion as a new version: approve releases the held commission, reject voids it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from tracker.api import auth
from tracker.api.endpoints import Operation, api
from tracker.api.schema import Answer, parse_body, parse_query
from tracker.core import money
from tracker.core.errors import Conflict, NotFound
from tracker.core.timeutil import now_utc, utc
from tracker.quality import hold, leaks, rules
from tracker.quality.models import CouponLeakList, CouponLeakQuery, Review, ReviewIn, ReviewQuery, ReviewQueue
from tracker.quality.sync import Sync
from tracker.services import services
from tracker.storage.clickhouse import ClickHouse, run_sync

TAG = "quality"

_FLAGGED = (
    "SELECT c.conversion_id AS conversion_id, c.order_id AS order_id, influencer_id, campaign_id, link_code, "
    "attribution, status, currency, amount, commission, occurred_at, f.flags AS flags, f.evidence AS evidence, "
    "r.decision AS decision, r.note AS note, r.at AS reviewed_at "
    "FROM (SELECT conversion_id, order_id, influencer_id, campaign_id, link_code, attribution, status, currency, "
    "amount, commission, occurred_at FROM conversions FINAL WHERE brand_id = {b:String} "
    "AND order_id IN (SELECT order_id FROM conversion_flags WHERE brand_id = {b:String})) AS c "
    "INNER JOIN (SELECT order_id, flags, evidence FROM conversion_flags FINAL "
    "WHERE brand_id = {b:String} AND notEmpty(flags)) AS f ON f.order_id = c.order_id "
    "LEFT JOIN (SELECT conversion_id, decision, note, at FROM conversion_reviews FINAL WHERE brand_id = {b:String}) "
    "AS r ON r.conversion_id = c.conversion_id "
)


def sync_of(request: Request) -> Sync:
    """This process's sync (one per app: its memory of what is up to date)."""
    state = request.app.state
    sync: Sync | None = getattr(state, "quality_sync", None)
    if sync is None:
        key = services(request).settings.secret_key
        assert key is not None
        sync = state.quality_sync = Sync(key)
    return sync


async def bring_up_to_date(request: Request, brand_id: str, fresh_within: float = 0.0) -> None:
    """Flags up to date, and the commission of every flagged (or cleared) conversion held (or released);
    ``fresh_within``: not checked again when this process checked the brand that many seconds ago."""
    sync, svc = sync_of(request), services(request)
    if await run_sync(sync, svc.ch, brand_id, fresh_within):
        await hold_flagged(request, brand_id)


async def hold_flagged(request: Request, brand_id: str) -> None:
    """Hold (or release) the commission of what the last evaluation flagged (or cleared)."""
    svc = services(request)
    try:
        await hold.apply(svc.conversions.states, svc.ch, brand_id)
    except BaseException:
        sync_of(request).forget(brand_id)  # the next read tries again
        raise


def _json(answer: Answer, status: int = 200) -> Response:
    return Response(answer.model_dump_json().encode(), status, media_type="application/json",
                    headers={"Cache-Control": "no-store"})


@api("GET", "/api/v1/rules", Operation(
    "The brand's conversion-quality rules (the defaults until set).", TAG, ("brand",), answers={200: rules.Rules},
    errors=(401, 403, 503),
))
async def get_rules(request: Request) -> Response:
    brand = await auth.brand_of(request)
    return _json(await run_sync(rules.load, services(request).ch, brand["id"]))


@api("PUT", "/api/v1/rules", Operation(
    "Set the brand's conversion-quality rules; flags follow at the next read.", TAG, ("brand",),
    body=rules.RulesIn, answers={200: rules.Rules}, errors=(400, 401, 403, 415, 422, 503),
))
async def put_rules(request: Request) -> Response:
    brand = await auth.brand_of(request)
    body = parse_body(rules.RulesIn, await request.body())
    ch = services(request).ch
    before = await run_sync(rules.load, ch, brand["id"])
    after = await run_sync(rules.save, ch, brand["id"], body)
    await services(request).registry.audit.record(
        brand["id"], auth.actor(request), "rules.update", brand["id"], before.dump(), after.dump()
    )
    return _json(after)


def _review(row: dict[str, Any]) -> Review:
    decision = row.get("decision") or ""
    currency = str(row["currency"])
    return Review(
        conversion_id=row["conversion_id"], order_id=row["order_id"], influencer_id=row["influencer_id"],
        campaign_id=row["campaign_id"], link_code=row["link_code"], attribution=row["attribution"],
        status=row["status"], currency=currency, amount=money.round_money(Decimal(row["amount"]), currency),
        commission=money.round_money(Decimal(row["commission"]), currency), occurred_at=row["occurred_at"],
        flags=list(row["flags"]), evidence=json.loads(row["evidence"] or "{}"),
        review_status="approved" if decision == "approve" else "rejected" if decision == "reject" else "open",
        note=row["note"] if decision else None, reviewed_at=row["reviewed_at"] if decision else None,
    )


def flagged(ch: ClickHouse, brand_id: str, status: str = "all", limit: int = 1000,
            conversion_id: str | None = None) -> list[Review]:
    where: list[str] = []
    params: dict[str, Any] = {"b": brand_id, "n": limit}
    if status == "open":
        where.append("r.decision = ''")
    elif status == "decided":
        where.append("r.decision != ''")
    if conversion_id is not None:
        where.append("c.conversion_id = {cid:String}")
        params["cid"] = conversion_id
    sql = _FLAGGED + (f"WHERE {' AND '.join(where)} " if where else "")
    sql += "ORDER BY occurred_at, order_id LIMIT {n:UInt32}"
    return [_review(r) for r in ch.query_dicts(sql, params)]


@api("GET", "/api/v1/rules/review-queue", Operation(
    "Flagged conversions, oldest first, with their evidence and review decision.", TAG, ("brand",),
    query=ReviewQuery, answers={200: ReviewQueue}, errors=(400, 401, 403, 422, 503),
))
async def review_queue(request: Request) -> Response:
    brand = await auth.brand_of(request)
    q = parse_query(ReviewQuery, request.query_params)
    await bring_up_to_date(request, brand["id"])
    items = await run_sync(flagged, services(request).ch, brand["id"], q.status, q.limit)
    return _json(ReviewQueue(items=items))


@api("POST", "/api/v1/conversions/{conversion_id}/review", Operation(
    "Decide on a flagged conversion: approve releases its commission, reject voids it (audited).", TAG,
    ("brand",), body=ReviewIn, answers={200: Review}, errors=(400, 401, 403, 404, 409, 415, 422, 503),
))
async def review(request: Request) -> Response:
    brand = await auth.brand_of(request)
    conversion_id = request.path_params["conversion_id"]
    body = parse_body(ReviewIn, await request.body())
    ch = services(request).ch
    await bring_up_to_date(request, brand["id"])
    found = await run_sync(flagged, ch, brand["id"], "all", 1, conversion_id)
    if not found:
        exists = await run_sync(ch.query, "SELECT 1 FROM conversions WHERE brand_id = {b:String} AND "
                                "conversion_id = {c:String} LIMIT 1", {"b": brand["id"], "c": conversion_id})
        if not exists:
            raise NotFound(f"Conversion {conversion_id!r} does not exist.", code="conversion_not_found")
        raise Conflict(f"Conversion {conversion_id!r} is not flagged by any rule; there is nothing to review.",
                       code="not_flagged")
    before = found[0]
    # Latest decision wins (ReplacingMergeTree on ``at``): never older than the one it replaces.
    at = max(now_utc(), utc(before.reviewed_at) + timedelta(microseconds=1) if before.reviewed_at else now_utc())
    await run_sync(ch.insert, "conversion_reviews",
                   [[brand["id"], conversion_id, before.order_id, body.decision, body.note, before.flags, at]],
                   ("brand_id", "conversion_id", "order_id", "decision", "note", "flags", "at"))
    await hold_flagged(request, brand["id"])
    after = (await run_sync(flagged, ch, brand["id"], "all", 1, conversion_id))[0]
    await services(request).registry.audit.record(
        brand["id"], auth.actor(request), f"conversion.review.{body.decision}", conversion_id,
        before.dump(), after.dump(),
    )
    return _json(after)


@api("GET", "/api/v1/rules/coupon-leaks", Operation(
    "Suspect coupons of the last 7 days with their evidence (counts, countries, first and last order).", TAG,
    ("brand",), query=CouponLeakQuery, answers={200: CouponLeakList}, errors=(400, 401, 403, 422, 503),
))
async def coupon_leaks(request: Request) -> Response:
    brand = await auth.brand_of(request)
    q = parse_query(CouponLeakQuery, request.query_params)
    last = q.to or datetime.now(UTC).date()
    ch = services(request).ch
    brand_rules = await run_sync(rules.load, ch, brand["id"])
    items = await run_sync(leaks.suspects, ch, brand["id"], brand_rules, last)
    answer = CouponLeakList.model_validate({
        "from": last.fromordinal(last.toordinal() - 6), "to": last, "factor": brand_rules.coupon_leak_factor,
        "items": items,
    })
    return Response(answer.model_dump_json(by_alias=True).encode(), media_type="application/json",
                    headers={"Cache-Control": "no-store"})


def routes() -> list[BaseRoute]:
    return [get_rules, put_rules, review_queue, review, coupon_leaks]
