"""The brand's view of a store's kept platform events: what was refused or held, and re-driving it.

``GET /api/v1/stores/{store_id}/events`` lists them (newest first); ``POST
/api/v1/stores/{store_id}/events/{event_id}/redrive`` records a refused event again from
its kept body (its signature was checked when it arrived), e.g. after the missing
exchange rate was set. A re-drive that is refused again answers the reason (409/422) and
leaves the event open; one that is recorded marks it ``redriven``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from tracker.api import auth, http
from tracker.api.endpoints import Operation, api
from tracker.api.schema import Answer, Query, Timestamp, parse_query
from tracker.conversions import storeevents
from tracker.conversions.connectors import shopify, stripe_, woocommerce
from tracker.conversions.connectors.event import OrderEvent
from tracker.conversions.integrations import WebhookAnswer
from tracker.conversions.platform import Delivery, PlatformEvents
from tracker.core.errors import Conflict, NotFound
from tracker.registry.fields import digits
from tracker.services import services


class EventQuery(Query):
    status: Literal["open", "redriven"] | None = None
    limit: Annotated[int, Field(ge=1, le=1000), BeforeValidator(digits)] = 100


class StoreEvent(Answer):
    id: str
    kind: Literal["held", "refused"] = Field(description="held: a refund waiting for its order; refused: not recorded.")
    platform: str
    topic: str
    delivery_id: str
    order_id: str
    code: str = Field(description="Why it was refused (e.g. missing_fx_rate, invalid_transition); empty when held.")
    message: str
    status: str = Field(description="open, or redriven once recorded.")
    received_at: Timestamp
    updated_at: Timestamp


class StoreEventList(Answer):
    items: list[StoreEvent]


_PATHS = {"store_id": {"type": "string"}, "event_id": {"type": "string"}}


async def _store(request: Request) -> tuple[dict[str, Any], dict[str, Any]]:
    brand = await auth.brand_of(request)
    sid = request.path_params["store_id"]
    row = await services(request).registry.store_row(brand["id"], sid)
    if row is None:
        raise NotFound(f"Store {sid!r} does not exist.")
    return brand, row


@api("GET", "/api/v1/stores/{store_id}/events", Operation(
    "A store's platform events not recorded as they came: refused ones (kept to re-drive) and held refunds.",
    "integrations", ("brand",), query=EventQuery, answers={200: StoreEventList}, errors=(401, 403, 404, 422, 503),
    path_params={"store_id": _PATHS["store_id"]},
))
async def list_store_events(request: Request) -> Response:
    brand, store = await _store(request)
    q = parse_query(EventQuery, request.query_params)
    rows = await storeevents.page(services(request).ch, brand["id"], store["id"], q.status, q.limit)
    return http.JSONResponse(StoreEventList(items=[StoreEvent.model_validate(r) for r in rows]).dump())


def parse_kept(platform: str, topic: str, body: bytes) -> OrderEvent | None:
    if platform == "shopify":
        return shopify.parse(topic, body)
    if platform == "woocommerce":
        return woocommerce.parse(topic, body)
    return stripe_.parse(body)


@api("POST", "/api/v1/stores/{store_id}/events/{event_id}/redrive", Operation(
    "Record a refused platform event again from its kept body (after fixing the cause, e.g. an exchange rate).",
    "integrations", ("brand",), answers={200: WebhookAnswer}, errors=(401, 403, 404, 409, 422, 503),
    path_params=_PATHS,
))
async def redrive_store_event(request: Request) -> Response:
    brand, store = await _store(request)
    svc = services(request)
    ident = request.path_params["event_id"]
    row = await storeevents.one(svc.ch, brand["id"], store["id"], ident)
    if row is None:
        raise NotFound(f"Event {ident!r} of store {store['id']!r} does not exist.")
    if row["kind"] != "refused" or row["status"] != "open":
        raise Conflict(f"Event {ident!r} is {row['kind']} and {row['status']}: only open refused events re-drive.")
    body = str(row["body"]).encode()
    event = parse_kept(str(row["platform"]), str(row["topic"]), body)
    if event is None:
        raise Conflict(f"Event {ident!r} no longer maps to an order event.")
    record = await svc.registry.get_store(store["id"])
    assert record is not None
    recorded = await PlatformEvents(svc.conversions).record(
        record, event, Delivery(str(row["topic"]), str(row["delivery_id"]), body)
    )
    await storeevents.resolve(svc.ch, row, "redriven")
    await svc.registry.audit.record(brand["id"], auth.actor(request), "store_event.redrive", ident, None,
                                    {"order_id": event.order_id, "topic": row["topic"]})
    answer = WebhookAnswer(ignored=False, conversion=recorded.conversion, held=recorded.held,
                           redelivered=recorded.redelivered)
    return http.JSONResponse(answer.dump())


def routes() -> list[BaseRoute]:
    return [list_store_events, redrive_store_event]
