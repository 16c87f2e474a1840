"""``GET /api/v1/reports``: the brand of the API key, the query string, JSON or CSV out.

The brand comes only from the key (``auth.brand_of``); ``tracker.reports.sql`` confines every
query to it. Queries run off the event loop (chDB and clickhouse-connect are synchronous).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from tracker.api import auth
from tracker.api.endpoints import Operation, api
from tracker.api.schema import parse_query
from tracker.quality.routes import hold_flagged, sync_of
from tracker.reports.params import ReportQuery
from tracker.reports.run import ReportAnswer, run_beside_sync, run_report
from tracker.services import services
from tracker.storage.clickhouse import run_sync

GET_REPORT = Operation(
    summary="Attribution metrics grouped by influencer, campaign, link, day, hour, country, device, UTM values, "
    "referer, coupon, attribution, store, status or customer (new or returning).",
    tag="reports",
    security=("brand",),
    query=ReportQuery,
    answers={200: ReportAnswer},
    also={200: "text/csv"},
    errors=(400, 401, 403, 422, 503),
    description="Rows carry their group keys and every metric; `totals` also carries the unattributed "
    "conversions and revenue. `format=csv` answers the same values as CSV (a `type` column: row, then total).",
)


async def get_report(request: Request) -> Response:
    brand = await auth.brand_of(request)
    params = parse_query(ReportQuery, request.query_params).params()
    svc = services(request)
    # Conversions' click facts (country, device, UTM, referer) and quality flags brought up to date
    # beside the report; it runs again when they changed (after the commission of new flags is held).
    report, evaluated = await run_sync(
        run_beside_sync, svc.ch, sync_of(request), brand, params, svc.settings.max_report_days
    )
    if evaluated:
        await hold_flagged(request, str(brand["id"]))
    if report is None:
        report = await run_sync(run_report, svc.ch, brand, params, svc.settings.max_report_days)
    if params.format == "csv":
        name = f"report-{params.date_from}-{params.date_to}-{'-'.join(params.group_by) or 'totals'}.csv"
        return Response(
            report.to_csv(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"},
        )
    return Response(report.json_bytes(), media_type="application/json", headers={"Cache-Control": "no-store"})


def routes() -> list[BaseRoute]:
    return [api("GET", "/api/v1/reports", GET_REPORT)(get_report)]
