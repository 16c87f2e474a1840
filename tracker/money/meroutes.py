"""The influencer's side of the money loop: ``GET /api/v1/me/payouts`` and ``GET /api/v1/me/statement``.

Same credentials as every ``/api/v1/me`` route (an influencer key or the portal session,
``tracker.api.auth.viewer_of``): the influencer comes from the credential, never from the request.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from tracker.api import auth, http
from tracker.api.endpoints import Operation, Security, api
from tracker.api.schema import parse_query
from tracker.money import payouts
from tracker.money.models import Payout, PayoutList, PayoutQuery, Statement, StatementQuery
from tracker.money.statementroutes import STATEMENT_DESCRIPTION, statement_response
from tracker.services import services
from tracker.storage.clickhouse import run_sync

TAG = "influencer"
WHO: tuple[Security, ...] = ("influencer", "session")


@api("GET", "/api/v1/me/payouts", Operation(
    "The influencer's payouts, newest first, with their lines.", TAG, WHO, query=PayoutQuery,
    answers={200: PayoutList}, errors=(401, 403, 422, 503),
))
async def my_payouts(request: Request) -> Response:
    v = await auth.viewer_of(request)
    q = parse_query(PayoutQuery, request.query_params)
    found = await run_sync(lambda: payouts.payouts(services(request).ch, v.brand_id, influencer_id=v.influencer_id,
                                                   status=q.status))
    name = str(v.influencer["name"])
    items = [Payout.model_validate({**p, "influencer_name": name}) for p in found]
    return http.JSONResponse(PayoutList(items=items).dump(), headers={"Cache-Control": "no-store"})


@api("GET", "/api/v1/me/statement", Operation(
    "The influencer's verifiable statement: hash-chained entries, head hash and totals.", TAG, WHO,
    query=StatementQuery, answers={200: Statement}, also={200: "text/csv"}, errors=(401, 403, 422, 503),
    description=STATEMENT_DESCRIPTION,
))
async def my_statement(request: Request) -> Response:
    v = await auth.viewer_of(request)
    return await statement_response(request, v.brand, v.influencer_id)


def routes() -> list[BaseRoute]:
    return [my_payouts, my_statement]
