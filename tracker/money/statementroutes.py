"""``GET /api/v1/influencers/{influencer_id}/statement``: the influencer's hash-chained statement."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from tracker.api import auth, http
from tracker.api.endpoints import Operation, api
from tracker.api.schema import parse_query
from tracker.core.errors import NotFound
from tracker.money import chain, csvout, statements
from tracker.money.models import Statement, StatementQuery
from tracker.services import services
from tracker.storage.clickhouse import run_sync

CSV_COLUMNS = (*chain.FIELDS, "prev_hash", "hash")
STATEMENT_DESCRIPTION = (
    "Every change to the influencer's commission (new, status change, refund, re-attribution, payout, paid), "
    "oldest first, each entry chained to the one before: `hash` = hex SHA-256 of `prev_hash` + the entry's "
    "canonical JSON. `tracker verify-statement FILE` (or the recipe in docs/STATEMENTS.md) recomputes it. "
    "`format=csv`: the entries as CSV (verifiable too)."
)


async def statement_response(request: Request, brand: dict[str, Any], influencer_id: str) -> Response:
    q = parse_query(StatementQuery, request.query_params)
    found = await run_sync(statements.statement, services(request).ch, brand["id"], influencer_id,
                           brand["currency"], q.from_, q.to)
    answer = Statement.model_validate(found)
    if q.format == "csv":
        return csvout.response(csvout.render(CSV_COLUMNS, found["entries"]), f"statement-{influencer_id}.csv")
    return http.JSONResponse(answer.dump(), headers={"Cache-Control": "no-store"})


@api("GET", "/api/v1/influencers/{influencer_id}/statement", Operation(
    "The influencer's verifiable statement: hash-chained entries, head hash and totals.", "payouts", ("brand",),
    query=StatementQuery, answers={200: Statement}, also={200: "text/csv"}, errors=(401, 403, 404, 422, 503),
    description=STATEMENT_DESCRIPTION,
))
async def get_statement(request: Request) -> Response:
    brand = await auth.brand_of(request)
    iid = request.path_params["influencer_id"]
    if await services(request).registry.get_influencer(brand["id"], iid) is None:
        raise NotFound(f"Influencer {iid!r} does not exist.")
    return await statement_response(request, brand, iid)


def routes() -> list[BaseRoute]:
    return [get_statement]
