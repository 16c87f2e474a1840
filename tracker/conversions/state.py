"""The order-state store: each order's current row in Redis, rebuilt from ClickHouse when lost.

The state (``keys.conversion``) is the full row as JSON, the same bytes that go on the
conversion stream. One Lua script compares it with the state a decision was based on,
writes the new state and XADDs the row, so of 50 concurrent copies of one postback on any
number of workers exactly one wins; the others re-read and answer ``duplicate: true``.
When Redis lost an order's state it is read back from ``conversions FINAL``.

The brand's known-orders filter (``orderset``) spares a new order the ClickHouse read:
only an order the filter cannot rule out is looked up there.

Redis Cluster note: the scripts touch the order key, the conversion stream and the brand's
filter, held refunds, delivery marker and customer shard, so all must hash to one slot
there (a hash tag by brand); with a single Redis (or a primary with replicas) nothing is needed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any

import redis.asyncio as aioredis
from pydantic import ConfigDict, PlainSerializer, WithJsonSchema
from redis.commands.core import AsyncScript

from tracker.api.schema import Answer, MoneyOut
from tracker.conversions import customers, storeevents
from tracker.conversions.attribution import AttributionKind
from tracker.conversions.orderset import COMMIT, HOLD, READ, RECORD, OrderSet
from tracker.conversions.parse import Status
from tracker.conversions.ratelimit import WINDOW_SECONDS, Quota
from tracker.conversions.scriptpipe import ScriptPipe
from tracker.conversions.staterow import check_fits, decode_replay, decode_state, normalize_row
from tracker.core import keys
from tracker.core.errors import StorageUnavailable
from tracker.core.events import CONVERSION_COLUMNS, encode_conversion
from tracker.storage import redis_client
from tracker.storage.clickhouse import ClickHouse, run_sync

# Order states stay in Redis this long after their last change (retries and most
# status changes come within days); a later postback rebuilds the state from
# ClickHouse, which ingest filled long before. Bounds Redis memory (~1 KB an order).
STATE_TTL_SECONDS = 7 * 86_400


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


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An order's state as read: ``raw`` is the Redis value (None when Redis had none).

    With no state: ``held`` are refunds held for the order (raw JSON, "" for none, as the
    commit compares it), ``customer`` the customer's first attributed order ("" for none),
    ``delivered`` whether this platform delivery was applied already.
    """

    raw: bytes | str | None
    row: dict[str, Any] | None
    held: str = ""
    customer: str = ""
    delivered: bool = False


@dataclass(frozen=True, slots=True)
class Stored:
    """An order's state as a postback's first call read it, decoded only as far as a replay needs:
    ``view`` holds the answer's columns and the duplicate check's (``decode_replay``; None when that
    short decode cannot read the state), ``snapshot`` decodes the whole row to change it."""

    raw: bytes | str
    view: dict[str, Any] | None

    def snapshot(self) -> Snapshot:
        return Snapshot(self.raw, decode_state(self.raw))


@dataclass(frozen=True, slots=True)
class Extras:
    """What a commit writes besides the state: the delivery marker and the customer's first order."""

    delivery_key: str | None = None
    customer_field: str = ""
    customer_key: str | None = None
    customer_value: str = ""


DELIVERY_TTL_SECONDS = 7 * 86_400


class OrderStates:
    """Reads and writes order states; one per process.

    A read is one script (``orderset.READ``): the state, or, when Redis has none, the held
    refunds, the customer's first order and the brand filter's verdict. Only when the filter
    cannot say the order is new (``maybe``, or not complete) is ClickHouse asked, and then the
    held refunds and the customer are read from ClickHouse too. A write is one script
    (``orderset.COMMIT``).
    """

    def __init__(self, redis: aioredis.Redis, ch: ClickHouse, orders: OrderSet,
                 rebuild: Callable[[str], Awaitable[None]]) -> None:
        self.redis = redis
        self.ch = ch
        self.orders = orders
        self._rebuild = rebuild
        self._read: AsyncScript = redis.register_script(READ)
        self._commit: AsyncScript = redis.register_script(COMMIT)
        self._hold: AsyncScript = redis.register_script(HOLD)
        # A postback's one call: grouped with its neighbours' on one connection (one Redis, not a cluster).
        self._record: AsyncScript | ScriptPipe = (
            redis.register_script(RECORD) if redis_client.is_cluster(redis) else ScriptPipe(redis, RECORD)
        )
        self.lookups = StateLookups(ch)
        self.clickhouse_reads = 0

    async def read(
        self, brand_id: str, order_id: str, *, customer_hash: str = "", delivery_key: str | None = None
    ) -> Snapshot:
        h1, h2 = self.orders.positions(order_id)
        cust_key = customers.shard_key(brand_id, customer_hash) if customer_hash else keys.order_set(brand_id)
        state_key = keys.conversion(brand_id, order_id)
        while True:
            reply = await self._read(
                keys=[state_key, keys.order_set(brand_id), keys.held_refunds(brand_id, order_id), cust_key,
                      delivery_key or state_key, *self.orders.generation_keys(brand_id)],
                args=[h1, h2, customer_hash, self.orders.generations(brand_id), "1" if delivery_key else "0"],
            )
            if int(reply[0]) == 1:
                raw = reply[1]
                return Snapshot(raw, decode_state(raw), delivered=bool(int(reply[2])))
            snap = await self._unknown(brand_id, order_id, customer_hash, reply[1:5], bool(int(reply[5])))
            if snap is not None:
                return snap

    async def first(
        self, brand_id: str, order_id: str, *, customer_hash: str = "", quota: Quota | None = None,
        row: Mapping[str, Any] | None = None, customer_first: str = "",
    ) -> Snapshot | Stored | None:
        """A postback's first call (``orderset.RECORD``): count it against ``quota`` (RateLimited
        over it), read the order and, when ``row`` (its first version, decided before the read) is
        given and Redis is sure the order is new, write it. None when ``row`` was written, else the
        order as ``read`` sees it (nothing written): ``Stored`` when Redis has its state."""
        h1, h2 = self.orders.positions(order_id)
        cust_key = customers.shard_key(brand_id, customer_hash) if customer_hash else keys.order_set(brand_id)
        state_key = keys.conversion(brand_id, order_id)
        new = b""
        if row is not None:
            check_fits(row)
            new = encode_conversion(dict(row))
        while True:
            reply = await self._record(
                keys=[state_key, keys.order_set(brand_id), keys.held_refunds(brand_id, order_id), cust_key,
                      quota.key if quota else state_key, keys.conversion_stream(brand_id),
                      *self.orders.generation_keys(brand_id)],
                args=[h1, h2, customer_hash, self.orders.generations(brand_id), quota.per_minute if quota else "",
                      WINDOW_SECONDS, new, STATE_TTL_SECONDS, customer_first],
            )
            kind = int(reply[0])
            if kind == 9 and quota is not None:
                raise quota.exceeded(int(reply[1]))
            quota = None  # counted once, whatever comes next
            if kind == 4:
                await self.orders.filled(brand_id, int(reply[1]))
                return None
            if kind == 1:
                return Stored(reply[1], decode_replay(reply[1]))
            snap = await self._unknown(brand_id, order_id, customer_hash, reply[1:5], False)
            if snap is not None:
                return snap

    async def _unknown(
        self, brand_id: str, order_id: str, customer_hash: str, reply: list[Any], delivered: bool
    ) -> Snapshot | None:
        """An order Redis has no state of, from a read's {verdict, held, customer, generations}:
        None when the filter grew (read again), else its snapshot (ClickHouse asked unless new)."""
        verdict, held, customer, gens = _text(reply[0]), _text(reply[1]), _text(reply[2]), int(reply[3])
        if verdict == "generations":
            self.orders.saw(brand_id, gens)
            return None
        if verdict == "new":
            return Snapshot(None, None, held, customer, delivered)
        if verdict == "incomplete":
            self.orders.incomplete(brand_id, self._rebuild)
        return await self._from_clickhouse(brand_id, order_id, customer_hash, held, customer, verdict, delivered)

    async def _from_clickhouse(
        self, brand_id: str, order_id: str, customer_hash: str, held: str, customer: str, verdict: str,
        delivered: bool,
    ) -> Snapshot:
        self.clickhouse_reads += 1
        row = await self.lookups.get(brand_id, order_id)
        if row is not None:
            return Snapshot(None, row, delivered=delivered)
        if verdict == "incomplete":
            # Redis may have lost the held refunds and the customer too: ClickHouse keeps both.
            if not held:
                stored = await storeevents.held_for(self.ch, brand_id, order_id)
                held = stored.encode() if stored is not None else ""
                if held:  # the commit compares the held refunds with Redis': put them there first
                    await self.redis.set(keys.held_refunds(brand_id, order_id), held, nx=True)
                    held = _text(await self.redis.get(keys.held_refunds(brand_id, order_id)) or b"")
            if customer_hash and not customer:
                found = await run_sync(customers.first_orders, self.ch, brand_id, [customer_hash])
                first = found.get(customer_hash)
                customer = first.encode() if first is not None else ""
        return Snapshot(None, None, held, customer, delivered)

    async def write(self, base: Snapshot, row: Mapping[str, Any], extras: Extras = Extras()) -> Snapshot | None:
        """Store ``row`` and stream it if the order is still as ``base`` saw it: None when written,
        else the order as it is now (the caller decides again)."""
        check_fits(row)
        brand_id, order_id = str(row["brand_id"]), str(row["order_id"])
        state_key = keys.conversion(brand_id, order_id)
        h1, h2 = self.orders.positions(order_id)
        first = base.raw is None
        while True:
            gens = self.orders.generations(brand_id)
            reply = await self._commit(
                keys=[state_key, keys.conversion_stream(brand_id), keys.order_set(brand_id),
                      keys.held_refunds(brand_id, order_id), extras.delivery_key or state_key,
                      extras.customer_key or state_key, *self.orders.generation_keys(brand_id)],
                args=[base.raw or b"", encode_conversion(dict(row)), STATE_TTL_SECONDS, h1, h2, gens,
                      base.held if first else "", DELIVERY_TTL_SECONDS if extras.delivery_key else "",
                      extras.customer_field, extras.customer_value],
            )
            kind = int(reply[0])
            if kind == 1:
                if first:
                    await self.orders.filled(brand_id, int(reply[1]))
                return None
            if kind == 3:
                self.orders.saw(brand_id, int(reply[1]))
                continue
            if kind == 2:
                return Snapshot(None, base.row, _text(reply[1]), base.customer, base.delivered)
            raw = reply[1]
            if not raw:
                return Snapshot(None, None, "", base.customer, base.delivered)
            return Snapshot(raw, decode_state(raw), delivered=base.delivered)

    async def close(self) -> None:
        if isinstance(self._record, ScriptPipe):
            await self._record.close()

    async def restore(self, row: Mapping[str, Any]) -> None:
        """Put a state rebuilt from ClickHouse back into Redis for the next postback."""
        key = keys.conversion(str(row["brand_id"]), str(row["order_id"]))
        await self.redis.set(key, encode_conversion(dict(row)), nx=True, ex=STATE_TTL_SECONDS)

    async def hold(self, brand_id: str, order_id: str, base: str, held: str) -> list[Any]:
        """Hold refunds of an order with no state (``orderset.HOLD``): {1}, {0, state} or {2, held}."""
        reply: list[Any] = await self._hold(
            keys=[keys.conversion(brand_id, order_id), keys.held_refunds(brand_id, order_id)], args=[base, held]
        )
        return reply

    async def mark_delivered(self, delivery_key: str) -> None:
        await self.redis.set(delivery_key, "1", ex=DELIVERY_TTL_SECONDS)


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


# A decimal string without an exponent: a rate of 10 read back from the state is
# Decimal("1E+1") once normalized, and answers "10" like the first answer did.
PlainDecimal = Annotated[
    Decimal,
    PlainSerializer(lambda d: f"{d.normalize():f}", return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$", "description": "A decimal number."}),
]


# The answer's fields DESIGN.md fixes; the others are in every answer too, documented as optional.
_CONTRACT = (
    "conversion_id", "status", "attributed", "attribution", "link_code", "influencer_id", "campaign_id",
    "commission", "duplicate",
)


def _contract_required(schema: dict[str, Any]) -> None:
    schema["required"] = list(_CONTRACT)


class Conversion(Answer):
    """The answer to a postback: the order's current state, and whether this postback changed it."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_contract_required)

    conversion_id: str
    order_id: str
    status: Status
    attributed: bool
    attribution: AttributionKind | None
    link_code: str | None
    influencer_id: str | None
    campaign_id: str | None
    commission: MoneyOut
    amount: MoneyOut
    refunded_amount: MoneyOut
    currency: str
    original_amount: MoneyOut
    original_refunded_amount: MoneyOut
    original_currency: str
    fx_rate: PlainDecimal
    duplicate: bool

    @classmethod
    def of(cls, row: Mapping[str, Any], duplicate: bool) -> Conversion:
        return cls(
            conversion_id=row["conversion_id"],
            order_id=row["order_id"],
            status=row["status"],
            attributed=bool(row["attributed"]),
            attribution=row["attribution"] or None,
            link_code=row["link_code"] or None,
            influencer_id=row["influencer_id"] or None,
            campaign_id=row["campaign_id"] or None,
            commission=row["commission"],
            amount=row["amount"],
            refunded_amount=row["refunded_amount"],
            currency=row["currency"],
            original_amount=row["original_amount"],
            original_refunded_amount=row["original_refunded_amount"],
            original_currency=row["original_currency"],
            fx_rate=row["fx_rate"],
            duplicate=duplicate,
        )
