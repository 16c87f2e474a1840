"""``GET /api/v1/reports``: the brand of the API key, the query string, JSON or CSV out.

The brand comes only from the key (``auth.brand_of``); ``tracker.reports.run`` confines every
query to it. Queries run off the event loop (chDB and clickhouse-connect are synchronous).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from tracker.api import auth, http
from tracker.reports import run as reports
from tracker.services import services
from tracker.storage.clickhouse import run_sync


async def get_report(request: Request) -> Response:
    brand = await auth.brand_of(request)
    params = reports.parse_params(request.query_params)
    svc = services(request)
    report = await run_sync(reports.run_report, svc.ch, brand, params, svc.settings.max_report_days)
    if params.format == "csv":
        name = f"report-{params.date_from}-{params.date_to}-{'-'.join(params.group_by) or 'totals'}.csv"
        return Response(
            report.to_csv(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"},
        )
    return http.JSONResponse(report.to_json(), headers={"Cache-Control": "no-store"})


def routes() -> list[BaseRoute]:
    return [Route("/api/v1/reports", get_report, methods=["GET"])]
