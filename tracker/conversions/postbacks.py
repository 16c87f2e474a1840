"""Conversion postbacks: ``POST /api/v1/conversions`` (signed) and ``GET /postback`` (token).

A postback is authenticated, validated, attributed (``tracker.conversions.attribution``)
and recorded as a new version of its order. The order's current state lives in
Redis (``keys.conversion``, the full row as JSON, the same bytes that go on the
stream); one Lua script compares that state with what the decision was based
on, writes the new state and XADDs the row to the conversion stream, so of 50
concurrent copies of one postback on any number of workers exactly one wins and
the others, re-reading the state, answer ``duplicate: true``. The answer is sent
only after the script ran: an accepted conversion is in Redis (AOF) and reaches
ClickHouse through the ingest worker. When Redis lost an order's state, it is
rebuilt from ClickHouse (``conversions FINAL``) before deciding.

Redis Cluster note: the script touches the order key and the conversion stream,
so both must hash to one slot there; with a single Redis (or a primary with
replicas) nothing is needed.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from tracker.api import http
from tracker.api.proxies import client_ip
from tracker.conversions import signature
from tracker.conversions.attribution import (
    REFUNDED,
    STATUSES,
    Change,
    CommissionRule,
    OrderState,
    apply,
    attribute,
    click_qualifies,
    commission,
)
from tracker.core import ids, keys, money
from tracker.core.clickid import ClickIds
from tracker.core.credentials import store_secret, token_hash
from tracker.core.errors import (
    BadRequest,
    Forbidden,
    RateLimited,
    StorageUnavailable,
    TrackerError,
    Unauthorized,
    Unprocessable,
)
from tracker.core.events import CONVERSION_COLUMNS, encode_conversion
from tracker.ops.metrics import POSTBACKS
from tracker.registry import Registry
from tracker.services import Services, services
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse, run_sync

log = logging.getLogger("tracker.conversions.postbacks")

MAX_BODY_BYTES = 16 * 1024
MAX_ORDER_ID = 128
MAX_CLICK_ID = 256
MAX_COUPON = 64
# How far in the future occurred_at may lie (store clocks drift).
CLOCK_SKEW_SECONDS = 300
# Order states stay in Redis this long after their last change (retries and most
# status changes come within days); a later postback rebuilds the state from
# ClickHouse, which ingest filled long before. Bounds Redis memory (~1 KB an order).
STATE_TTL_SECONDS = 7 * 86_400
_MAX_ATTEMPTS = 8
_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)

_BAD_STORE_SIGNATURE = "The store id or the X-Signature is not valid."
_BAD_STORE_TOKEN = "The store id or the token is not valid."  # noqa: S105 - a message

# KEYS: order state, conversion stream. ARGV: state the decision was based on
# ("" = none in Redis), new state, TTL seconds. Returns 1 when written, 0 when
# another postback changed the order first (the caller re-reads and decides again).
_COMMIT = """
local cur = redis.call('GET', KEYS[1])
if ARGV[1] == '' then
  if cur then return 0 end
elseif cur ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', tonumber(ARGV[3]))
redis.call('XADD', KEYS[2], '*', 'e', ARGV[2])
return 1
"""

_MONEY_COLUMNS = ("amount", "refunded_amount", "commission")
_ORIGINAL_COLUMNS = ("original_amount", "original_refunded_amount")
_TIME_COLUMNS = ("occurred_at", "created_at", "updated_at")
_INT_COLUMNS = ("version", "attributed", "link_id")

_JSON_FIELDS = frozenset({"order_id", "amount", "currency", "click_id", "coupon_code", "status", "occurred_at"})

# GET /postback: the names affiliate networks use for our fields.
GET_ALIASES: dict[str, tuple[str, ...]] = {
    "order_id": ("order_id", "txid", "transaction"),
    "amount": ("amount", "payout", "sale_amount"),
    "currency": ("currency",),
    "click_id": ("click_id", "clickid", "cid", "subid", "transaction_id"),
    "coupon_code": ("coupon_code", "coupon"),
    "status": ("status",),
    "occurred_at": ("occurred_at",),
}


@dataclass(frozen=True, slots=True)
class Postback:
    order_id: str
    status: str
    currency: str | None
    amount: Decimal | None  # in ``currency``; None only for a refund of the whole order
    click_id: str | None
    coupon_code: str | None
    occurred_at: datetime | None


# --- validation -------------------------------------------------------------------------------


def _text(value: object, field: str, limit: int, *, required: bool) -> str | None:
    if value is None or value == "":
        if required:
            raise BadRequest(f"{field} is required.", code="invalid_field")
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{field} must be a string, not {type(value).__name__}.", code="invalid_field")
    if len(value) > limit:
        raise BadRequest(f"{field} is longer than {limit} characters.", code="invalid_field")
    if not value.isprintable() or value != value.strip():
        raise BadRequest(
            f"{field} {value!r} has control characters or surrounding spaces.", code="invalid_field"
        )
    return value


def parse_occurred_at(value: object, now: float) -> datetime | None:
    """ISO 8601 (naive means UTC) or unix seconds; not in the future beyond the clock skew."""
    if value is None or value == "":
        return None
    when: datetime
    if isinstance(value, bool):
        raise BadRequest("occurred_at must be an ISO 8601 time or unix seconds.", code="invalid_field")
    if isinstance(value, int | Decimal) or (isinstance(value, str) and value.strip().isdigit()):
        try:
            when = datetime.fromtimestamp(float(value), UTC)
        except (ValueError, OverflowError, OSError, InvalidOperation):
            raise Unprocessable(f"occurred_at {value} is not a valid unix time.", code="invalid_field") from None
    elif isinstance(value, str):
        try:
            when = datetime.fromisoformat(value.strip())
        except ValueError:
            raise Unprocessable(
                f"occurred_at {value!r} is not an ISO 8601 time (2026-11-25T14:03:00Z) or unix seconds.",
                code="invalid_field",
            ) from None
        when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    else:
        raise BadRequest("occurred_at must be an ISO 8601 time or unix seconds.", code="invalid_field")
    if when.timestamp() > now + CLOCK_SKEW_SECONDS:
        raise Unprocessable(
            f"occurred_at {when.isoformat()} is in the future (server time "
            f"{datetime.fromtimestamp(now, UTC).isoformat()}).",
            code="invalid_field",
        )
    if when < _EARLIEST:
        raise Unprocessable(f"occurred_at {when.isoformat()} is before 2000.", code="invalid_field")
    return _ms(when)


def parse_postback(data: Mapping[str, object], now: float) -> Postback:
    """Strictly typed fields of a postback (JSON body or GET query, aliases already resolved)."""
    order_id = _text(data.get("order_id"), "order_id", MAX_ORDER_ID, required=True)
    assert order_id is not None
    status = data.get("status", "approved")
    if status is None or status == "":
        status = "approved"
    if not isinstance(status, str):
        raise BadRequest(f"status must be a string, not {type(status).__name__}.", code="invalid_field")
    if status not in STATUSES:
        raise Unprocessable(f"status {status!r} is not one of {', '.join(STATUSES)}.", code="invalid_status")
    currency_raw = data.get("currency")
    currency: str | None = None
    if currency_raw is not None and currency_raw != "":
        if not isinstance(currency_raw, str):
            raise BadRequest("currency must be a string such as \"USD\".", code="invalid_field")
        currency = currency_raw.strip().upper()
        if not money.is_currency(currency):
            raise Unprocessable(
                f"currency {currency_raw!r} is not an ISO 4217 currency code.", code="invalid_currency"
            )
    raw_amount = data.get("amount")
    amount: Decimal | None = None
    if raw_amount is not None and raw_amount != "":
        if currency is None:
            raise BadRequest("currency is required with an amount.", code="invalid_field")
        try:
            # Quantized to the minor unit so "49.9" and 49.90 are one amount ("49.90").
            amount = money.round_money(money.parse_amount(raw_amount, currency), currency)
        except ValueError as exc:
            raise Unprocessable(str(exc), code="invalid_amount") from None
    elif status != REFUNDED:
        # Only a refund may leave the amount out (it then refunds the whole order).
        raise BadRequest("amount is required.", code="invalid_field")
    return Postback(
        order_id=order_id,
        status=status,
        currency=currency,
        amount=amount,
        click_id=_text(data.get("click_id"), "click_id", MAX_CLICK_ID, required=False),
        coupon_code=_text(data.get("coupon_code"), "coupon_code", MAX_COUPON, required=False),
        occurred_at=parse_occurred_at(data.get("occurred_at"), now),
    )


def resolve_aliases(params: Any) -> dict[str, str]:
    """Query parameters under our names; two names for one field must agree."""
    out: dict[str, str] = {}
    for name, aliases in GET_ALIASES.items():
        values = {v for alias in aliases for v in params.getlist(alias) if v != ""}
        if len(values) > 1:
            given = ", ".join(a for a in aliases if params.getlist(a))
            raise BadRequest(f"The parameters {given} give different values for {name}.", code="invalid_field")
        if values:
            out[name] = values.pop()
    return out


# --- rows -------------------------------------------------------------------------------------


def answer(row: Mapping[str, Any], duplicate: bool) -> dict[str, Any]:
    """The response body: the order's current state."""
    attributed = bool(row["attributed"])
    return {
        "conversion_id": row["conversion_id"],
        "order_id": row["order_id"],
        "status": row["status"],
        "attributed": attributed,
        "attribution": row["attribution"] or None,
        "link_code": row["link_code"] or None,
        "influencer_id": row["influencer_id"] or None,
        "campaign_id": row["campaign_id"] or None,
        "commission": row["commission"],
        "amount": row["amount"],
        "refunded_amount": row["refunded_amount"],
        "currency": row["currency"],
        "original_amount": row["original_amount"],
        "original_refunded_amount": row["original_refunded_amount"],
        "original_currency": row["original_currency"],
        "fx_rate": row["fx_rate"],
        "duplicate": duplicate,
    }


def normalize_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """Typed values (from the JSON state or a ClickHouse row) with money at its currency's scale."""
    out = {c: row[c] for c in CONVERSION_COLUMNS}
    for c in _INT_COLUMNS:
        out[c] = int(out[c])
    for c in _MONEY_COLUMNS:
        out[c] = money.round_money(Decimal(str(out[c])), out["currency"])
    for c in _ORIGINAL_COLUMNS:
        out[c] = money.round_money(Decimal(str(out[c])), out["original_currency"])
    out["fx_rate"] = Decimal(str(out["fx_rate"])).normalize()
    for c in _TIME_COLUMNS:
        value = out[c]
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        out[c] = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    for c in CONVERSION_COLUMNS:
        if c not in _INT_COLUMNS + _MONEY_COLUMNS + _ORIGINAL_COLUMNS + _TIME_COLUMNS + ("fx_rate",):
            out[c] = str(out[c])
    return out


def decode_state(raw: bytes | str) -> dict[str, Any]:
    return normalize_row(json.loads(raw))


def load_from_clickhouse(ch: ClickHouse, brand_id: str, order_id: str) -> dict[str, Any] | None:
    return load_many_from_clickhouse(ch, [(brand_id, order_id)]).get((brand_id, order_id))


def load_many_from_clickhouse(
    ch: ClickHouse, orders: list[tuple[str, str]]
) -> dict[tuple[str, str], dict[str, Any]]:
    """Current states of (brand_id, order_id) pairs, read with FINAL (exact before merges)."""
    rows = ch.query_dicts(
        f"SELECT {', '.join(CONVERSION_COLUMNS)} FROM conversions FINAL "
        "WHERE brand_id IN {b:Array(String)} AND (brand_id, order_id) IN {k:Array(Tuple(String, String))}",
        {"b": sorted({b for b, _ in orders}), "k": orders},
    )
    return {(str(r["brand_id"]), str(r["order_id"])): normalize_row(r) for r in rows}


class StateLookups:
    """Coalesces the ClickHouse state reads of concurrent postbacks into one query.

    Every new order misses Redis and must be looked up in ClickHouse (Redis may have
    lost its state). One query runs at a time; the orders that arrive while it runs
    go together in the next one, so under load N lookups cost about one query, and
    an idle server pays one event-loop tick more than a direct read.
    """

    def __init__(self, ch: ClickHouse) -> None:
        self.ch = ch
        self._pending: dict[tuple[str, str], list[asyncio.Future[dict[str, Any] | None]]] = {}
        self._task: asyncio.Task[None] | None = None
        self.queries = 0

    async def get(self, brand_id: str, order_id: str) -> dict[str, Any] | None:
        future: asyncio.Future[dict[str, Any] | None] = asyncio.get_running_loop().create_future()
        self._pending.setdefault((brand_id, order_id), []).append(future)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._drain())
        state = await future
        # Waiters on one order share a result: each gets its own copy to change.
        return dict(state) if state is not None else None

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, {}
                try:
                    self.queries += 1
                    found = await run_sync(load_many_from_clickhouse, self.ch, list(batch))
                except BaseException as exc:
                    for futures in batch.values():
                        for f in futures:
                            if not f.done():
                                f.set_exception(exc if isinstance(exc, Exception) else StorageUnavailable(str(exc)))
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for key, futures in batch.items():
                    for f in futures:
                        if not f.done():
                            f.set_result(found.get(key))
        finally:
            self._task = None


def _ms(when: datetime) -> datetime:
    """Milliseconds, as the DateTime64(3) columns keep them (the state equals the stored row)."""
    return when.replace(microsecond=when.microsecond // 1000 * 1000)


def _now() -> datetime:
    return _ms(datetime.now(UTC))


def _to_ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


# --- the recorder -----------------------------------------------------------------------------


class Conversions:
    """Records postbacks for one process; built on first use from the process's services."""

    def __init__(self, settings: Settings, redis: aioredis.Redis, ch: ClickHouse, registry: Registry) -> None:
        assert settings.secret_key is not None
        self.settings = settings
        self.redis = redis
        self.registry = registry
        self.click_ids = ClickIds(settings.secret_key)
        self._commit: AsyncScript = redis.register_script(_COMMIT)
        self.lookups = StateLookups(ch)

    async def check_rate(self, store_id: str) -> None:
        now = time.time()
        window = int(now // 60)
        key = keys.rate_limit("postback", store_id, window)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.incr(key)
            pipe.expire(key, 120, nx=True)
            count, _ = await pipe.execute()
        limit = self.settings.postback_rate_limit
        if int(count) > limit:
            wait = 60 - int(now % 60)
            raise RateLimited(
                f"Store {store_id} sent more than {limit} postbacks this minute; retry in {wait} seconds."
            )

    async def record(self, store: Mapping[str, Any], pb: Postback) -> dict[str, Any]:
        """Apply one postback to its order; the answer body (with ``duplicate``)."""
        brand_id = str(store["brand_id"])
        brand: dict[str, Any] | None = None  # read only for a new order (its currency)
        key = keys.conversion(brand_id, pb.order_id)
        for _ in range(_MAX_ATTEMPTS):
            raw = await self.redis.get(key)
            if raw is not None:
                current: dict[str, Any] | None = decode_state(raw)
            else:
                current = await self.lookups.get(brand_id, pb.order_id)
            if current is None:
                brand = brand or await self.registry.get_brand(brand_id)
                if brand is None:
                    # The store outlived its brand: answer as for an unknown store.
                    raise Unauthorized(_BAD_STORE_SIGNATURE, code="invalid_signature")
                row = await self._first_version(brand, store, pb)
            else:
                change = self._change(current, pb)
                if change.duplicate:
                    if raw is None:
                        # Redis lost this order: put the rebuilt state back for the next postback.
                        await self.redis.set(key, encode_conversion(current), nx=True, ex=STATE_TTL_SECONDS)
                    return answer(current, duplicate=True)
                row = await self._next_version(current, change)
            payload = encode_conversion(row)
            written = await self._commit(
                keys=[key, keys.CONVERSION_STREAM], args=[raw or b"", payload, STATE_TTL_SECONDS]
            )
            if written == 1:
                return answer(row, duplicate=False)
            # Another copy or status change won the race: decide again on the new state.
        raise StorageUnavailable(f"Order {pb.order_id!r} is changing too often right now; retry the postback.")

    def _change(self, current: Mapping[str, Any], pb: Postback) -> Change:
        original_currency = current["original_currency"]
        if pb.currency is not None and pb.currency != original_currency:
            raise Unprocessable(
                f"Order {pb.order_id!r} was recorded in {original_currency}; "
                f"send its status changes in {original_currency}, not {pb.currency}.",
                code="invalid_currency",
            )
        state = OrderState(current["status"], current["original_amount"], current["original_refunded_amount"])
        return apply(pb.order_id, state, pb.status, pb.amount)

    async def _rule(self, brand_id: str, campaign_id: str) -> CommissionRule | None:
        if not campaign_id:
            return None
        campaign = await self.registry.get_campaign(brand_id, campaign_id)
        if campaign is None:
            log.warning("campaign %s of brand %s is gone; commission 0", campaign_id, brand_id)
            return None
        return CommissionRule.of(campaign["commission"])

    async def _rate(self, brand_id: str, brand_currency: str, currency: str) -> Decimal:
        if currency == brand_currency:
            return Decimal(1)
        rate = await self.registry.fx_rate(brand_id, currency)
        if rate is None or rate <= 0:
            raise Unprocessable(
                f"The amount is in {currency} but the brand's currency is {brand_currency}, and the brand "
                f"has no exchange rate for {currency}: set one with PUT /api/v1/fx-rates/{currency}.",
                code="missing_fx_rate",
            )
        return Decimal(rate)

    async def _first_version(
        self, brand: Mapping[str, Any], store: Mapping[str, Any], pb: Postback
    ) -> dict[str, Any]:
        brand_id = str(brand["id"])
        brand_currency = str(brand["currency"])
        change = apply(pb.order_id, None, pb.status, pb.amount)
        assert pb.currency is not None  # an amount (required here) comes with its currency
        rate = await self._rate(brand_id, brand_currency, pb.currency)
        now = _now()
        occurred = pb.occurred_at or now
        occurred_ms = _to_ms(occurred)

        ref = self.click_ids.parse(pb.click_id) if pb.click_id else None
        click_link = await self.registry.link_by_id(ref.link_id) if ref is not None else None
        coupon_link = None
        if pb.coupon_code and not click_qualifies(brand_id, occurred_ms, ref, click_link):
            coupon_link = await self.registry.link_by_coupon(brand_id, pb.coupon_code)
        result = attribute(brand_id, occurred_ms, ref, click_link, coupon_link)
        link = result.link
        rule = await self._rule(brand_id, link.campaign_id) if link is not None else None

        amount = money.round_money(change.amount * rate, brand_currency)
        row: dict[str, Any] = {
            "brand_id": brand_id,
            "order_id": pb.order_id,
            "version": 1,
            "conversion_id": ids.new_id("conversion"),
            "store_id": str(store["id"]),
            "status": change.status,
            "currency": brand_currency,
            "amount": amount,
            "refunded_amount": money.round_money(money.ZERO, brand_currency),
            "original_currency": pb.currency,
            "original_amount": change.amount,
            "original_refunded_amount": money.round_money(money.ZERO, pb.currency),
            "fx_rate": rate,
            "commission": commission(rule, change.status, amount, brand_currency),
            "attributed": 1 if result.attributed else 0,
            "attribution": result.kind or "",
            "click_id": pb.click_id or "",
            "link_id": link.id if link is not None else 0,
            "link_code": link.code if link is not None else "",
            "campaign_id": link.campaign_id if link is not None else "",
            "influencer_id": link.influencer_id if link is not None else "",
            "coupon_code": pb.coupon_code or "",
            "occurred_at": occurred,
            "created_at": now,
            "updated_at": now,
        }
        return row

    async def _next_version(self, current: Mapping[str, Any], change: Change) -> dict[str, Any]:
        brand_currency = current["currency"]
        rate: Decimal = current["fx_rate"]  # the rate of the first version, so refunds match the sale
        amount = money.round_money(change.amount * rate, brand_currency)
        refunded = amount if change.status == REFUNDED else money.round_money(change.refunded * rate, brand_currency)
        rule = await self._rule(current["brand_id"], current["campaign_id"])
        row = dict(current)
        row.update(
            version=int(current["version"]) + 1,
            status=change.status,
            amount=amount,
            refunded_amount=refunded,
            original_amount=change.amount,
            original_refunded_amount=change.refunded,
            commission=commission(rule, change.status, amount - refunded, brand_currency),
            updated_at=_now(),
        )
        return row


# --- store authentication --------------------------------------------------------------------


async def _store_by_signature(svc: Services, request: Request, body: bytes) -> dict[str, Any]:
    try:
        parsed = signature.parse_header(request.headers.get("x-signature"))
        signature.check_timestamp(parsed, time.time())
    except signature.SignatureError as exc:
        # Nothing about the store is known yet, so this message cannot leak anything.
        raise Unauthorized(str(exc), code="invalid_signature") from None
    store_id = request.headers.get("x-store-id", "")
    store = await svc.registry.get_store(store_id) if ids.looks_like("store", store_id) else None
    if store is None:
        # Same answer as a wrong signature: a caller cannot probe which store ids exist.
        raise Unauthorized(_BAD_STORE_SIGNATURE, code="invalid_signature")
    assert svc.settings.secret_key is not None
    secret = store_secret(svc.settings.secret_key, store["secret_nonce"])
    if not signature.matches(parsed, secret, body):
        raise Unauthorized(_BAD_STORE_SIGNATURE, code="invalid_signature")
    return dict(store)


def _client_ip(svc: Services, request: Request) -> str:
    trusted = svc.trusted_proxies
    peer = request.client.host if request.client else ""
    return client_ip(peer, ",".join(request.headers.getlist("x-forwarded-for")), trusted)


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
    store = await svc.registry.get_store(store_id) if ids.looks_like("store", store_id) else None
    given = token_hash(token) if token else ""
    if store is None or not hmac.compare_digest(given.encode(), str(store["token_hash"]).encode()):
        raise Unauthorized(_BAD_STORE_TOKEN, code="invalid_token")
    ip = _client_ip(svc, request)
    if not ip_allowed(ip, list(store.get("allowed_ips") or ())):
        raise Forbidden(f"The address {ip} is not on this store's allowed_ips list.", code="ip_not_allowed")
    return dict(store)


# --- routes -----------------------------------------------------------------------------------


def _outcome(exc: TrackerError) -> str:
    return {401: "unauthorized", 403: "unauthorized", 409: "conflict", 429: "rate_limited"}.get(
        exc.status, "unavailable" if exc.status >= 500 else "invalid"
    )


async def _counted(handler: Callable[[Request], Any], request: Request) -> Response:
    try:
        try:
            response: Response = await handler(request)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            # Nothing is acknowledged before the state and the stream entry are written, and
            # a retry of a postback that did get through answers duplicate: 503 is safe to retry.
            raise StorageUnavailable(f"Redis is unreachable, the postback was not recorded; retry: {exc}") from exc
    except TrackerError as exc:
        POSTBACKS.labels(outcome=_outcome(exc)).inc()
        raise
    return response


async def post_conversion(request: Request) -> Response:
    """``POST /api/v1/conversions``: a signed JSON postback; 202 with the order's state."""
    return await _counted(_post_conversion, request)


async def _post_conversion(request: Request) -> Response:
    svc = services(request)
    body = await http.read_body(request, MAX_BODY_BYTES)
    store = await _store_by_signature(svc, request, body)
    recorder = svc.conversions
    await recorder.check_rate(str(store["id"]))
    data = http.parse_json_object(body)
    unknown = sorted(set(data) - _JSON_FIELDS)
    if unknown:
        raise BadRequest(
            f"Unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_JSON_FIELDS))}.",
            code="invalid_field",
        )
    result = await recorder.record(store, parse_postback(data, time.time()))
    POSTBACKS.labels(outcome="duplicate" if result["duplicate"] else "accepted").inc()
    return http.JSONResponse(result, status_code=202)


async def get_postback(request: Request) -> Response:
    """``GET /postback``: the same postback as query parameters, for platforms that only fire URLs."""
    return await _counted(_get_postback, request)


async def _get_postback(request: Request) -> Response:
    svc = services(request)
    store = await _store_by_token(svc, request)
    recorder = svc.conversions
    await recorder.check_rate(str(store["id"]))
    result = await recorder.record(store, parse_postback(resolve_aliases(request.query_params), time.time()))
    POSTBACKS.labels(outcome="duplicate" if result["duplicate"] else "accepted").inc()
    return http.JSONResponse(result, status_code=200)


def routes() -> list[BaseRoute]:
    return [
        Route("/api/v1/conversions", post_conversion, methods=["POST"]),
        Route("/postback", get_postback, methods=["GET"]),
    ]
