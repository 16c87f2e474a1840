"""Payout routes: run payouts, list and read them (json or csv), mark one paid."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from tracker.api import auth, http
from tracker.api.endpoints import Operation, api
from tracker.api.schema import parse_body, parse_query
from tracker.core import ids
from tracker.core.errors import NotFound
from tracker.core.timeutil import now_utc
from tracker.money import csvout, payoutoutbox, payouts
from tracker.money.models import FormatQuery, PaidIn, Payout, PayoutIn, PayoutList, PayoutQuery
from tracker.quality.routes import bring_up_to_date
from tracker.services import services
from tracker.storage.clickhouse import run_sync

TAG = "payouts"
_ERRORS = (401, 403, 503)
_PID = {"payout_id": {"type": "string", "description": "The payout's id."}}
CSV_COLUMNS = ("type", "payout_id", "influencer_id", "influencer_name", "currency", "conversion_id", "order_id",
               "kind", "amount", "status", "reference", "period_end", "created_at", "paid_at")


async def _answers(request: Request, brand_id: str, found: list[dict[str, Any]]) -> list[Payout]:
    names = {i["id"]: i["name"] for i in await services(request).registry.list_influencers(brand_id)}
    return [Payout.model_validate({**p, "influencer_name": names.get(p["influencer_id"], "")}) for p in found]


def payout_csv(items: list[Payout]) -> str:
    rows = []
    for p in items:
        d = p.dump()
        head = {k: d[k] for k in ("influencer_id", "influencer_name", "currency", "status", "reference",
                                   "period_end", "created_at", "paid_at")}
        for line in d["lines"]:
            rows.append({"type": "line", "payout_id": d["id"], **head, **line})
        rows.append({"type": "total", "payout_id": d["id"], **head, "amount": d["amount"]})
    return csvout.render(CSV_COLUMNS, rows)


@api("POST", "/api/v1/payouts", Operation(
    "Run payouts: one per influencer with payable commission (on or before period_end) plus open clawbacks.",
    TAG, ("brand",), body=PayoutIn, answers={201: PayoutList}, errors=(*_ERRORS, 400, 404, 409, 413, 422),
    description="Each commission line is in at most one payout, also under concurrent runs; running again for "
    "the same period creates nothing new (`items` empty).",
))
async def create_payouts(request: Request) -> Response:
    brand = await auth.brand_of(request)
    body = parse_body(PayoutIn, await http.read_body(request))
    svc = services(request)
    if body.influencer_id and await svc.registry.get_influencer(brand["id"], body.influencer_id) is None:
        raise NotFound(f"Influencer {body.influencer_id!r} does not exist.")
    # Flags first: a conversion a rule flags since the last read is held, not paid.
    await bring_up_to_date(request, brand["id"])
    # The run's audit entries and payout.created events are owed under this token until written (a
    # crash in between: tracker.money.payoutoutbox.recover writes them).
    token = ids.new_id("payout")
    actor = auth.actor(request)
    made = await payouts.run(svc.ch, svc.redis, brand, body.period_end or now_utc().date(), body.influencer_id,
                             intent=token, key_id=actor)
    found = [p for p in await run_sync(payouts.payouts, svc.ch, brand["id"]) if p["id"] in made]
    items = await _answers(request, brand["id"], found)
    await payoutoutbox.finish_created(svc.registry.audit, svc.redis, brand["id"], token, actor,
                                      [p.dump() for p in items])
    return http.JSONResponse(PayoutList(items=items).dump(), status_code=201)


@api("GET", "/api/v1/payouts", Operation(
    "The brand's payouts, newest first.", TAG, ("brand",), query=PayoutQuery, answers={200: PayoutList},
    errors=(*_ERRORS, 422),
))
async def list_payouts(request: Request) -> Response:
    brand = await auth.brand_of(request)
    q = parse_query(PayoutQuery, request.query_params)
    found = await run_sync(lambda: payouts.payouts(services(request).ch, brand["id"], influencer_id=q.influencer_id,
                                                   status=q.status))
    return http.JSONResponse(PayoutList(items=await _answers(request, brand["id"], found)).dump())


@api("GET", "/api/v1/payouts/{payout_id}", Operation(
    "One payout with its lines; `format=csv`: one row per line, then the total.", TAG, ("brand",),
    query=FormatQuery, answers={200: Payout}, also={200: "text/csv"}, errors=(*_ERRORS, 404, 422),
    path_params=_PID,
))
async def get_payout(request: Request) -> Response:
    brand = await auth.brand_of(request)
    q = parse_query(FormatQuery, request.query_params)
    pid = request.path_params["payout_id"]
    found = await run_sync(lambda: payouts.payouts(services(request).ch, brand["id"], payout_id=pid))
    if not found:
        raise NotFound(f"Payout {pid!r} does not exist.")
    items = await _answers(request, brand["id"], found)
    if q.format == "csv":
        return csvout.response(payout_csv(items), f"payout-{pid}.csv")
    return http.JSONResponse(items[0].dump())


@api("POST", "/api/v1/payouts/{payout_id}/paid", Operation(
    "Mark a payout paid (once: a second call answers 409).", TAG, ("brand",), body=PaidIn, answers={200: Payout},
    errors=(*_ERRORS, 400, 404, 409, 413, 422), path_params=_PID,
))
async def mark_paid(request: Request) -> Response:
    brand = await auth.brand_of(request)
    body = parse_body(PaidIn, await http.read_body(request))
    pid = request.path_params["payout_id"]
    svc = services(request)
    actor = auth.actor(request)
    paid = await payouts.mark_paid(svc.ch, svc.redis, brand["id"], pid, body.reference, actor)
    data = (await _answers(request, brand["id"], [paid]))[0].dump()
    await payoutoutbox.finish_paid(svc.registry.audit, svc.redis, brand["id"], actor, data)
    return http.JSONResponse(data)


def routes() -> list[BaseRoute]:
    return [create_payouts, list_payouts, get_payout, mark_paid]
