"""Ledger routes: ``GET /api/v1/conversions`` (beside the postback route's POST), one conversion
with its history, and manual re-attribution."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from tracker.api import auth, http
from tracker.api.endpoints import Operation, api
from tracker.api.schema import parse_body, parse_query
from tracker.core.errors import NotFound
from tracker.core.timeutil import now_utc
from tracker.money import csvout, ledger
from tracker.money.models import AttributionIn, LedgerConversion, LedgerDetail, LedgerPage, LedgerQuery
from tracker.money.reattribute import as_item, reattribute
from tracker.quality.routes import bring_up_to_date
from tracker.services import services
from tracker.storage.clickhouse import run_sync

TAG = "ledger"
_ERRORS = (401, 403, 503)
_CID = {"conversion_id": {"type": "string", "description": "The conversion's id."}}
# The ledger routes check the quality flags at most this often per process and brand.
LEDGER_FRESH_SECONDS = 2.0
CSV_COLUMNS = tuple(f for f in LedgerConversion.model_fields if f != "duplicate")


@api("GET", "/api/v1/conversions", Operation(
    "The conversion ledger: conversions newest first with commission status and reason.", TAG, ("brand",),
    query=LedgerQuery, answers={200: LedgerPage}, also={200: "text/csv"}, errors=(*_ERRORS, 422),
    description="Keyset pages: pass `next_cursor` as `cursor`; a page never repeats or skips a conversion "
    "while new ones arrive. `format=csv`: the page as CSV (the next cursor in the `X-Next-Cursor` header).",
))
async def list_conversions(request: Request) -> Response:
    brand = await auth.brand_of(request)
    q = parse_query(LedgerQuery, request.query_params)
    filters = q.model_dump(by_alias=True, exclude={"limit", "cursor", "format"})
    svc = services(request)
    # Commission held by a quality rule shows as review; pages read in a row check the flags once.
    await bring_up_to_date(request, brand["id"], LEDGER_FRESH_SECONDS)
    items, cursor = await run_sync(ledger.page, svc.ch, brand["id"], filters, now_utc(), q.limit, q.cursor)
    answer = LedgerPage(items=[LedgerConversion.model_validate(i) for i in items], next_cursor=cursor)
    if q.format == "csv":
        resp = csvout.response(csvout.render(CSV_COLUMNS, [i.dump() for i in answer.items]), "conversions.csv")
        if cursor:
            resp.headers["X-Next-Cursor"] = cursor
        return resp
    return http.JSONResponse(answer.dump(), headers={"Cache-Control": "no-store"})


async def _one(request: Request, brand_id: str, cid: str) -> dict[str, object]:
    await bring_up_to_date(request, brand_id, LEDGER_FRESH_SECONDS)
    found = await run_sync(ledger.one, services(request).ch, brand_id, cid, now_utc())
    if found is None:
        raise NotFound(f"Conversion {cid!r} does not exist.")
    return found


@api("GET", "/api/v1/conversions/{conversion_id}", Operation(
    "One conversion with its history: every version and what changed it.", TAG, ("brand",),
    answers={200: LedgerDetail}, errors=(*_ERRORS, 404), path_params=_CID,
))
async def get_conversion(request: Request) -> Response:
    brand = await auth.brand_of(request)
    found = await _one(request, brand["id"], request.path_params["conversion_id"])
    history = await run_sync(ledger.history, services(request).ch, brand["id"], str(found["order_id"]))
    return http.JSONResponse(LedgerDetail.model_validate({**found, "history": history}).dump(),
                             headers={"Cache-Control": "no-store"})


@api("POST", "/api/v1/conversions/{conversion_id}/attribution", Operation(
    "Re-attribute a conversion to a link (or to nobody); refused once its commission is paid.", TAG, ("brand",),
    body=AttributionIn, answers={200: LedgerConversion}, errors=(*_ERRORS, 400, 404, 409, 413, 422),
    path_params=_CID,
    description="The conversion gets `attribution: \"manual\"` and the commission of the link's campaign rule "
    "in force when the order occurred; reports, payouts and the ledger follow; the audit log records who and why.",
))
async def post_attribution(request: Request) -> Response:
    brand = await auth.brand_of(request)
    cid = request.path_params["conversion_id"]
    body = parse_body(AttributionIn, await http.read_body(request))
    found = await _one(request, brand["id"], cid)
    svc = services(request)
    before, after = await reattribute(
        svc.conversions, svc.registry, svc.ch, brand["id"], str(found["order_id"]), cid, body.link_code, body.note,
        auth.actor(request),
    )
    now = now_utc()
    answer = LedgerConversion.model_validate(as_item(after, now))
    await svc.registry.audit.record(
        brand["id"], auth.actor(request), "conversion.reattribute", cid,
        LedgerConversion.model_validate(as_item(before, now)).dump(), {**answer.dump(), "note": body.note},
    )
    return http.JSONResponse(answer.dump())


def routes() -> list[BaseRoute]:
    return [list_conversions, get_conversion, post_attribution]
