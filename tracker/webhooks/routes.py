"""``/api/v1/webhooks``: a brand's endpoints, their delivery log and manual retries.

A URL is checked when saved (``guard``: public addresses only unless
``TRACKER_WEBHOOKS_ALLOW_PRIVATE=1``) and again before every delivery. Changes are in
the audit log (``webhook.create``, ``webhook.update``, ``webhook.delete``), never the secret.
"""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from tracker.api import auth, http
from tracker.api.endpoints import Operation, api
from tracker.api.schema import parse_body, parse_query
from tracker.core import keys
from tracker.core.errors import Conflict, NotFound, Unprocessable
from tracker.core.timeutil import from_ms
from tracker.registry.cache import Cache
from tracker.services import services
from tracker.webhooks import guard, outbox
from tracker.webhooks.endpoints import Endpoints
from tracker.webhooks.models import (
    Delivery,
    DeliveryList,
    DeliveryQuery,
    NewWebhook,
    Webhook,
    WebhookIn,
    WebhookList,
    WebhookPatch,
)
from tracker.webhooks.sender import ensure_groups

TAG = "webhooks"
_AUTHED = (401, 403, 503)
_BODY = (*_AUTHED, 400, 413, 422)
_ID = {"webhook_id": {"type": "string", "description": "The endpoint's id (whk_...)."}}


def _endpoints(request: Request) -> Endpoints:
    svc = services(request)
    assert svc.settings.secret_key is not None
    return Endpoints(Cache(svc.ch, svc.redis), svc.settings.secret_key)


async def _check(request: Request, url: str) -> None:
    try:
        await guard.check(url, allow_private=services(request).settings.webhooks_allow_private)
    except guard.Refused as exc:
        raise Unprocessable(f"Field 'url' is refused: {exc}", code="url_refused") from None


def _ms(raw: Any) -> Any:
    return from_ms(int(raw)) if raw not in (None, b"", "") else None


async def _answer(request: Request, record: dict[str, Any]) -> dict[str, Any]:
    raw = await services(request).redis.hgetall(keys.webhook_health(record["id"]))
    health = {outbox.text(k): outbox.text(v) for k, v in raw.items()}
    return {
        **{k: record[k] for k in ("id", "url", "events", "enabled", "disabled_reason", "created_at", "updated_at")},
        "failing_since": _ms(health.get("failing_since_ms")),
        "last_success_at": _ms(health.get("last_success_ms")),
        "last_error": health.get("last_error") or None,
    }


async def _audit(request: Request, brand_id: str, action: str, ident: str, before: dict[str, Any] | None,
                 after: dict[str, Any] | None) -> None:
    def public(r: dict[str, Any] | None) -> dict[str, Any] | None:
        return {k: v for k, v in r.items() if k not in ("secret_nonce", "brand_id")} if r else None

    await services(request).registry.audit.record(brand_id, auth.actor(request), action, ident, public(before),
                                                  public(after))


@api("POST", "/api/v1/webhooks", Operation(
    "Add a webhook endpoint (Standard Webhooks); its signing secret is shown once.", TAG, ("brand",),
    body=WebhookIn, answers={201: NewWebhook}, errors=_BODY,
))
async def create_webhook(request: Request) -> Response:
    brand = await auth.brand_of(request)
    body = parse_body(WebhookIn, await http.read_body(request))
    await _check(request, body.url)
    await ensure_groups(services(request).redis)  # from now on the streams keep what the sender has not read
    record, secret = await _endpoints(request).create(brand["id"], body.url, list(body.events))
    await _audit(request, brand["id"], "webhook.create", record["id"], None, record)
    answer = NewWebhook.model_validate({**await _answer(request, record), "secret": secret})
    return http.JSONResponse(answer.dump(), status_code=201)


@api("GET", "/api/v1/webhooks", Operation(
    "The brand's webhook endpoints (no secrets), with their health and why one was disabled.", TAG, ("brand",),
    answers={200: WebhookList}, errors=_AUTHED,
))
async def list_webhooks(request: Request) -> Response:
    brand = await auth.brand_of(request)
    items = [Webhook.model_validate(await _answer(request, r)) for r in await _endpoints(request).all(brand["id"])]
    return http.JSONResponse(WebhookList(items=items).dump())


@api("GET", "/api/v1/webhooks/{webhook_id}", Operation(
    "One webhook endpoint.", TAG, ("brand",), answers={200: Webhook}, errors=(*_AUTHED, 404), path_params=_ID,
))
async def get_webhook(request: Request) -> Response:
    brand = await auth.brand_of(request)
    record = await _endpoints(request).get(brand["id"], request.path_params["webhook_id"])
    return http.JSONResponse(Webhook.model_validate(await _answer(request, record)).dump())


@api("PATCH", "/api/v1/webhooks/{webhook_id}", Operation(
    "Change an endpoint's url or events, or enable (or disable) it.", TAG, ("brand",), body=WebhookPatch,
    answers={200: Webhook}, errors=(*_BODY, 404, 409), path_params=_ID,
))
async def update_webhook(request: Request) -> Response:
    brand = await auth.brand_of(request)
    body = parse_body(WebhookPatch, await http.read_body(request))
    if not body.model_fields_set:
        raise Unprocessable("The body changes nothing: send url, events or enabled.", code="empty_patch")
    if body.url is not None:
        await _check(request, body.url)
    fields: dict[str, Any] = {k: getattr(body, k) for k in body.model_fields_set}
    if body.events is not None:
        fields["events"] = list(body.events)
    if body.enabled is False:
        fields["disabled_reason"] = "Disabled through the API."
    ident = request.path_params["webhook_id"]
    before, after = await _endpoints(request).change(brand["id"], ident, **fields)
    redis = services(request).redis
    if body.enabled is True:
        await redis.delete(keys.webhook_health(ident))
    mode = "resume" if after["enabled"] else "park"
    await redis.eval(outbox.ENDPOINT, *outbox.lead(), ident, int(time.time() * 1000), mode,
                     outbox.KEEP_SECONDS)
    await _audit(request, brand["id"], "webhook.update", ident, before, after)
    return http.JSONResponse(Webhook.model_validate(await _answer(request, after)).dump())


@api("DELETE", "/api/v1/webhooks/{webhook_id}", Operation(
    "Delete an endpoint; its waiting deliveries are cancelled.", TAG, ("brand",), answers={204: None},
    errors=(*_AUTHED, 404, 409), path_params=_ID,
))
async def delete_webhook(request: Request) -> Response:
    brand = await auth.brand_of(request)
    ident = request.path_params["webhook_id"]
    before, _ = await _endpoints(request).change(brand["id"], ident, deleted=1, enabled=False)
    await services(request).redis.eval(outbox.ENDPOINT, *outbox.lead(), ident,
                                       int(time.time() * 1000), "cancel", outbox.KEEP_SECONDS)
    await _audit(request, brand["id"], "webhook.delete", ident, before, None)
    return Response(status_code=204)


def _delivery(d: dict[str, Any]) -> Delivery:
    code = int(d.get("code") or 0)
    return Delivery(
        id=d["id"], event_id=d["event_id"], type=d["type"], object_id=d["object_id"], status=d["status"],
        attempts=int(d.get("attempts") or 0), response_code=code or None, last_error=d.get("error") or None,
        created_at=from_ms(int(d["created_ms"])), last_attempt_at=_ms(d.get("last_ms")),
        next_attempt_at=_ms(d.get("next_ms")) if d["status"] == "pending" else None,
        delivered_at=_ms(d.get("done_ms")), payload=json.loads(d["body"]),
    )


@api("GET", "/api/v1/webhooks/{webhook_id}/deliveries", Operation(
    "The endpoint's deliveries, newest first: status, attempts, last error, response code.", TAG, ("brand",),
    query=DeliveryQuery, answers={200: DeliveryList}, errors=(*_AUTHED, 404, 422), path_params=_ID,
))
async def list_deliveries(request: Request) -> Response:
    brand = await auth.brand_of(request)
    q = parse_query(DeliveryQuery, request.query_params)
    ident = request.path_params["webhook_id"]
    await _endpoints(request).get(brand["id"], ident)
    redis = services(request).redis
    items: list[Delivery] = []
    offset = q.cursor or 0
    while len(items) < q.limit:
        ids = await redis.zrevrange(keys.webhook_log(ident), offset, offset + q.limit - 1)
        if not ids:
            offset = -1
            break
        pipe = redis.pipeline(transaction=False)
        for i in ids:
            pipe.hgetall(keys.webhook_delivery(outbox.text(i)))
        for raw in await pipe.execute():
            offset += 1
            d = outbox.decode(raw) if raw else None
            if d and (q.status is None or d["status"] == q.status):
                items.append(_delivery(d))
                if len(items) == q.limit:
                    break
    more = offset >= 0 and bool(await redis.zrevrange(keys.webhook_log(ident), offset, offset))
    return http.JSONResponse(DeliveryList(items=items, next_cursor=offset if more else None).dump())


@api("POST", "/api/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/retry", Operation(
    "Send a delivery again now (a failed one is queued again behind its object's waiting events).", TAG,
    ("brand",), answers={202: Delivery}, errors=(*_AUTHED, 404, 409),
    path_params={**_ID, "delivery_id": {"type": "string", "description": "The delivery's id (dlv_...)."}},
))
async def retry_delivery(request: Request) -> Response:
    brand = await auth.brand_of(request)
    ident, did = request.path_params["webhook_id"], request.path_params["delivery_id"]
    record = await _endpoints(request).get(brand["id"], ident)
    if not record["enabled"]:
        raise Conflict(f"Webhook endpoint {ident!r} is disabled; enable it (PATCH enabled=true) to send again.")
    redis = services(request).redis
    done = await redis.eval(outbox.RETRY, *outbox.lead(), ident, did, int(time.time() * 1000))
    if not done:
        raise NotFound(f"Delivery {did[:64]!r} of webhook endpoint {ident!r} does not exist.")
    raw = await redis.hgetall(keys.webhook_delivery(did))
    await _audit(request, brand["id"], "webhook.retry", did, None, {"endpoint_id": ident})
    return http.JSONResponse(_delivery(outbox.decode(raw)).dump(), status_code=202)


def routes() -> list[BaseRoute]:
    return [create_webhook, list_webhooks, get_webhook, update_webhook, delete_webhook, list_deliveries,
            retry_delivery]
