"""``/api/v1/me/*``: an influencer's own data; ``POST /api/v1/influencers/{id}/portal-link``.

Every ``/me`` route starts from ``auth.viewer_of``: the influencer comes from the key or
the session, never from the request, so one influencer cannot name another's data
(another's link code answers 404, like a code that does not exist).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from tracker.api import auth, http
from tracker.api.endpoints import Operation, Security, api
from tracker.api.schema import parse_query
from tracker.api.sessions import Seat
from tracker.core.errors import NotFound
from tracker.portal import ledger
from tracker.portal.models import (
    Me,
    MeConversionList,
    MeConversionsQuery,
    MeLink,
    MeLinkList,
    MeReportQuery,
    PortalLink,
)
from tracker.reports.params import ReportParams, zone
from tracker.reports.run import ReportAnswer, run_report
from tracker.reports.sql import Scope
from tracker.services import services
from tracker.storage.clickhouse import run_sync
from tracker.web import qr

TAG = "influencer"
WHO: tuple[Security, ...] = ("influencer", "session")
_ERRORS = (401, 403, 404, 503)
_NO_STORE = {"Cache-Control": "no-store"}


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return http.JSONResponse(body, status_code=status, headers=_NO_STORE)


def _base(request: Request) -> str:
    return (services(request).settings.public_url or str(request.base_url)).rstrip("/")


@api("POST", "/api/v1/influencers/{influencer_id}/portal-link", Operation(
    "A one-time sign-in link to the influencer's portal (valid 7 days).", TAG, ("brand",),
    answers={200: PortalLink}, errors=(*_ERRORS,),
    description="Send it to the influencer: opening it signs them in to /portal (once; a used or expired "
    "link signs nobody in). Only its hash is kept.",
))
async def portal_link(request: Request) -> Response:
    brand = await auth.brand_of(request)
    iid = request.path_params["influencer_id"]
    svc = services(request)
    if await svc.registry.get_influencer(brand["id"], iid) is None:
        raise NotFound(f"Influencer {iid!r} does not exist.")
    token, expires_at = await svc.sessions.new_signin(Seat(brand["id"], iid))
    await svc.registry.audit.record(
        brand["id"], auth.actor(request), "influencer.portal_link", iid, None, {"expires_at": expires_at}
    )
    answer = PortalLink(url=f"{_base(request)}/portal/signin?token={token}", expires_at=expires_at)
    return _json(answer.dump())


@api("GET", "/api/v1/me", Operation(
    "Who is signed in: the influencer and their brand.", TAG, WHO, answers={200: Me}, errors=_ERRORS,
))
async def get_me(request: Request) -> Response:
    v = await auth.viewer_of(request)
    inf = v.influencer
    return _json(Me.model_validate({
        "influencer": {"id": v.influencer_id, "name": inf["name"], "handle": inf.get("handle") or None,
                       "platform": inf.get("platform") or None},
        "brand": {"id": v.brand_id, "name": v.brand["name"], "currency": v.brand["currency"]},
        "via": v.via,
    }).dump())


@api("GET", "/api/v1/me/links", Operation(
    "The influencer's links, with their QR codes.", TAG, WHO, answers={200: MeLinkList}, errors=_ERRORS,
))
async def my_links(request: Request) -> Response:
    v = await auth.viewer_of(request)
    reg = services(request).registry
    rows = await reg.list_links(v.brand_id, campaign_id=None, influencer_id=v.influencer_id, limit=1000, offset=0)
    names = {c["id"]: c["name"] for c in await reg.list_campaigns(v.brand_id)}
    base = _base(request)
    items = [
        MeLink(
            code=r["code"], short_url=f"{base}/{r['code']}", destination_url=r["destination_url"],
            coupon_code=r["coupon_code"] or None, campaign_id=r["campaign_id"],
            campaign_name=names.get(r["campaign_id"], ""), disabled=bool(r["disabled"]),
            expires_at=r["expires_at"], created_at=r["created_at"],
            qr_svg=f"/api/v1/me/links/{r['code']}/qr?format=svg", qr_png=f"/api/v1/me/links/{r['code']}/qr?format=png",
        )
        for r in rows
    ]
    return _json(MeLinkList(items=items).dump())


@api("GET", "/api/v1/me/links/{code}/qr", qr.operation("One of the influencer's links as a QR code.", TAG, WHO))
async def my_link_qr(request: Request) -> Response:
    v = await auth.viewer_of(request)
    code = request.path_params["code"]
    row = await services(request).registry.get_link(v.brand_id, code)
    if row is None or row["influencer_id"] != v.influencer_id:
        raise NotFound(f"Link {code!r} does not exist.")
    return qr.answer(request, f"{_base(request)}/{code}")


@api("GET", "/api/v1/me/report", Operation(
    "The influencer's figures: the metrics of /api/v1/reports for their links only.", TAG, WHO,
    query=MeReportQuery, answers={200: ReportAnswer}, also={200: "text/csv"}, errors=(*_ERRORS, 400, 422),
))
async def my_report(request: Request) -> Response:
    v = await auth.viewer_of(request)
    q = parse_query(MeReportQuery, request.query_params)
    params = ReportParams(
        date_from=q.from_, date_to=q.to, group_by=tuple(k for k in q.group_by.split(",") if k), tz=q.tz,
        influencer_id=v.influencer_id, format=q.format,
    )
    zone(q.tz)
    svc = services(request)
    report = await run_sync(run_report, svc.ch, v.brand, params, svc.settings.max_report_days)
    # The totals keep the report's shape: unattributed_* are always 0 here (no influencer has them).
    if q.format == "csv":
        name = f"my-report-{q.from_}-{q.to}.csv"
        return Response(report.to_csv(), media_type="text/csv; charset=utf-8",
                        headers={**_NO_STORE, "Content-Disposition": f'attachment; filename="{name}"'})
    return Response(report.json_bytes(), media_type="application/json", headers=_NO_STORE)


@api("GET", "/api/v1/me/conversions", Operation(
    "The influencer's conversions, newest first (no customer data), and commission by status.", TAG, WHO,
    query=MeConversionsQuery, answers={200: MeConversionList}, errors=(*_ERRORS, 400, 422),
))
async def my_conversions(request: Request) -> Response:
    v = await auth.viewer_of(request)
    q = parse_query(MeConversionsQuery, request.query_params)
    svc = services(request)
    # The report's scope: the same range rules (to >= from, at most TRACKER_MAX_REPORT_DAYS), UTC days.
    scope = Scope.of(v.brand_id, q.from_, q.to, "UTC", svc.settings.max_report_days)
    start, end = scope.start, scope.end
    items, cursor = await run_sync(
        ledger.page, svc.ch, v.brand_id, v.influencer_id, start, end, q.limit, q.cursor
    )
    by_status = await run_sync(
        ledger.commission_by_status, svc.ch, v.brand_id, v.influencer_id, start, end, v.brand["currency"]
    )
    return _json(MeConversionList.model_validate(
        {"items": items, "next_cursor": cursor, "commission_by_status": by_status}
    ).dump())


def routes() -> list[BaseRoute]:
    return [portal_link, get_me, my_links, my_link_qr, my_report, my_conversions]
