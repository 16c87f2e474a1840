"""``POST /api/v1/conversions`` (signed) and ``GET /postback`` (token): authenticate, limit, record.

Both authenticate the store before anything else, so an unknown caller learns nothing from
validation errors; both count every outcome in ``tracker_postbacks_total``. Recording is
``tracker.conversions.recorder``'s.
"""

from __future__ import annotations

import hmac
import ipaddress
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from tracker.api import http
from tracker.api.endpoints import Operation, api
from tracker.api.proxies import client_ip
from tracker.api.schema import parse_json, validate
from tracker.conversions import signature
from tracker.conversions.answer import Outcome
from tracker.conversions.parse import PostbackIn, PostbackQuery, postback_in
from tracker.conversions.recorder import BAD_STORE_SIGNATURE
from tracker.conversions.state import Conversion
from tracker.core import ids
from tracker.core.credentials import store_secret, token_hash
from tracker.core.errors import Forbidden, StorageUnavailable, TrackerError, Unauthorized
from tracker.ops.metrics import POSTBACKS
from tracker.services import Services, services

MAX_BODY_BYTES = 16 * 1024
_ACCEPTED = POSTBACKS.labels(outcome="accepted")
_DUPLICATE = POSTBACKS.labels(outcome="duplicate")

_BAD_STORE_TOKEN = "The store id or the token is not valid."  # noqa: S105 - a message


# --- store authentication --------------------------------------------------------------------


async def _store_by_signature(svc: Services, request: Request, body: bytes) -> dict[str, Any]:
    try:
        parsed = signature.parse_header(request.headers.get("x-signature"))
        signature.check_timestamp(parsed, time.time())
    except signature.SignatureError as exc:
        # Nothing about the store is known yet, so this message cannot leak anything.
        raise Unauthorized(str(exc), code="invalid_signature") from None
    store_id = request.headers.get("x-store-id", "")
    store = await svc.conversions.lookups.store(store_id) if ids.looks_like("store", store_id) else None
    if store is None:
        # Same answer as a wrong signature: a caller cannot probe which store ids exist.
        raise Unauthorized(BAD_STORE_SIGNATURE, code="invalid_signature")
    assert svc.settings.secret_key is not None
    secret = store_secret(svc.settings.secret_key, store["secret_nonce"])
    if not signature.matches(parsed, secret, body):
        raise Unauthorized(BAD_STORE_SIGNATURE, code="invalid_signature")
    return dict(store)


def ip_allowed(ip: str, allowed: list[str] | tuple[str, ...]) -> bool:
    """An empty allowlist allows every address; entries are addresses or CIDR blocks."""
    if not allowed:
        return True
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    for entry in allowed:
        try:
            if addr in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


async def _store_by_token(svc: Services, request: Request) -> dict[str, Any]:
    store_id = request.query_params.get("store_id", "")
    token = request.query_params.get("token", "")
    store = await svc.conversions.lookups.store(store_id) if ids.looks_like("store", store_id) else None
    given = token_hash(token) if token else ""
    if store is None or not hmac.compare_digest(given.encode(), str(store["token_hash"]).encode()):
        raise Unauthorized(_BAD_STORE_TOKEN, code="invalid_token")
    peer = request.client.host if request.client else ""
    ip = client_ip(peer, ",".join(request.headers.getlist("x-forwarded-for")), svc.trusted_proxies)
    if not ip_allowed(ip, list(store.get("allowed_ips") or ())):
        raise Forbidden(f"The address {ip} is not on this store's allowed_ips list.", code="ip_not_allowed")
    return dict(store)


# --- routes -----------------------------------------------------------------------------------


def _outcome(exc: TrackerError) -> str:
    return {401: "unauthorized", 403: "unauthorized", 409: "conflict", 429: "rate_limited"}.get(
        exc.status, "unavailable" if exc.status >= 500 else "invalid"
    )


Handler = Callable[[Request], Awaitable[Outcome]]


async def _counted(handler: Handler, request: Request, status: int) -> Response:
    try:
        try:
            result = await handler(request)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            # Nothing is acknowledged before the state and the stream entry are written, and
            # a retry of a postback that did get through answers duplicate: 503 is safe to retry.
            raise StorageUnavailable(f"Redis is unreachable, the postback was not recorded; retry: {exc}") from exc
    except TrackerError as exc:
        POSTBACKS.labels(outcome=_outcome(exc)).inc()
        raise
    (_DUPLICATE if result.duplicate else _ACCEPTED).inc()
    # The answer is Conversion's JSON (OpenAPI), written without building the model.
    return Response(result.json(), status_code=status, media_type="application/json")


async def _post_conversion(request: Request) -> Outcome:
    svc = services(request)
    body = await http.read_body(request, MAX_BODY_BYTES)
    store = await _store_by_signature(svc, request, body)
    quota = svc.postback_limit.quota(store)
    try:
        postback = postback_in(parse_json(body), time.time())
    except TrackerError:
        await svc.postback_limit.check(quota)  # refused postbacks count too, and 429 comes first
        raise
    return await svc.conversions.record(store, postback, quota)


async def _get_postback(request: Request) -> Outcome:
    svc = services(request)
    store = await _store_by_token(svc, request)
    quota = svc.postback_limit.quota(store)
    try:
        postback = validate(PostbackQuery, request.query_params, {"now": time.time()})
    except TrackerError:
        await svc.postback_limit.check(quota)
        raise
    return await svc.conversions.record(store, postback, quota)


_ERRORS = (400, 401, 409, 422, 429, 503)

POST_CONVERSION = Operation(
    summary="Server-to-server conversion postback, signed with the store secret.",
    tag="conversions",
    security=("store_signature",),
    body=PostbackIn,
    answers={202: Conversion},
    errors=(*_ERRORS, 413),
    description="Headers `X-Store-Id` and `X-Signature: t=<unix>,v1=<hex>`, "
    '`v1 = hex(HMAC-SHA256(store_secret, f"{t}.{raw_body}"))`, `t` within 300 s of server time. '
    "The same postback again answers `duplicate: true` and changes nothing.",
)

GET_POSTBACK = Operation(
    summary="Conversion postback as a URL, for platforms that can only fire one.",
    tag="conversions",
    security=("store_token",),
    query=PostbackQuery,
    answers={200: Conversion},
    errors=(*_ERRORS, 403),
    description="Checked against the store's `postback_token` and its `allowed_ips` (403 outside them).",
)


async def post_conversion(request: Request) -> Response:
    return await _counted(_post_conversion, request, 202)


async def get_postback(request: Request) -> Response:
    return await _counted(_get_postback, request, 200)


CONVERSIONS_PATH = "/api/v1/conversions"
# Also answered before the router, by the same endpoint (``tracker.conversions.fastpath``).
POST_CONVERSION_ROUTE = api("POST", CONVERSIONS_PATH, POST_CONVERSION)(post_conversion)


def routes() -> list[BaseRoute]:
    return [POST_CONVERSION_ROUTE, api("GET", "/postback", GET_POSTBACK)(get_postback)]
