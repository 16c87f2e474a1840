"""The registry: brands, API keys, campaigns, influencers, links, stores, fees, FX rates.

ClickHouse is the system of record: every write inserts a new row version into a
``ReplacingMergeTree(version)`` table and reads use ``FINAL``. Redis holds the
records the hot paths need (links for the redirect; brands, API keys, campaigns,
stores, coupons and rates for the API and postbacks), written through on every
change and rebuilt from ClickHouse when Redis lost them.

Write-through order for an update: delete the Redis record, insert the new row,
then set the record. A crash or a Redis outage in between leaves no stale record
behind, only a missing one, which the next read rebuilds from ClickHouse.
Rebuilds write back with ``SET NX`` so they never overwrite a newer update.

Link ids come from the Redis sequence ``keys.LINK_SEQUENCE``; when the key is
missing (Redis lost its data) it is seeded from ``max(id)`` in ClickHouse, and
each process raises it to that floor once, so a code is never handed out twice.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Final
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tracker.core import keys, money
from tracker.core.codes import Codes, is_reserved, salt_for
from tracker.core.credentials import (
    POSTBACK_TOKEN_PREFIX,
    looks_like_api_key,
    new_api_key,
    store_secret,
    token_hash,
)
from tracker.core.errors import Conflict, StorageUnavailable, Unprocessable
from tracker.core.ids import looks_like, new_id
from tracker.core.records import LinkRecord
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse, run_sync

log = logging.getLogger("tracker.registry.store")

DEFAULT_CLICK_ID_PARAM = "click_id"
DEFAULT_WINDOW_DAYS = 30
MAX_URL_LENGTH = 2048
# An unknown API key is remembered this long, so guessing keys does not reach ClickHouse.
_NEGATIVE_KEY_SECONDS = 30
_LOCK_SECONDS = 5.0
_RESERVE_SECONDS = 60
_MAX_AMOUNT = Decimal("1e13")  # money columns are Decimal(18, 4); money.parse_amount has the same bound
# Reconciliation: Redis may come back from a restart without its last writes (AOF
# everysec, or RDB snapshots), i.e. with an older record of a link or rate changed
# just before. A sweep compares recently changed rows with their Redis records.
RECONCILE_EVERY_SECONDS = 30.0
RECONCILE_WINDOW_SECONDS = 15 * 60.0
RECONCILE_FIRST_WINDOW_SECONDS = 24 * 3600.0


class _Unset:
    pass


UNSET: Final = _Unset()

# INCR the link sequence, first raising it to ARGV[1] (the ClickHouse max id) when
# it is lower; a missing key with no floor given answers nil (the caller seeds it).
_NEXT_LINK_ID = """
local cur = redis.call('GET', KEYS[1])
local floor = tonumber(ARGV[1])
if not cur then
  if floor < 0 then return false end
  redis.call('SET', KEYS[1], floor)
elseif tonumber(cur) < floor then
  redis.call('SET', KEYS[1], floor)
end
return redis.call('INCR', KEYS[1])
"""


def now_utc() -> datetime:
    return datetime.now(UTC)


def iso(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def to_ms(dt: datetime | None) -> int | None:
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def from_ms(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


def plain(value: Decimal) -> Decimal:
    """A Decimal without the storage column's trailing zeros (10.0000 -> 10, 2.5000 -> 2.5)."""
    if value == value.to_integral_value():
        return value.quantize(Decimal(1))
    return value.normalize()


def check_destination(url: object, allowed_domains: list[str] | tuple[str, ...] = ()) -> str:
    """The destination URL if it is safe to redirect to; Unprocessable naming the problem otherwise."""
    if not isinstance(url, str):
        raise Unprocessable("destination_url must be a string.", code="invalid_field")
    if not url.isascii() and any(0xD800 <= ord(ch) <= 0xDFFF for ch in url):
        raise Unprocessable("destination_url is not valid Unicode text (it holds a lone surrogate).",
                            code="invalid_destination")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise Unprocessable(
            f"destination_url {url[:100]!r} contains control characters (CR, LF or others).",
            code="invalid_destination",
        )
    if url != url.strip() or " " in url:
        raise Unprocessable(f"destination_url {url[:100]!r} contains spaces.", code="invalid_destination")
    if len(url) > MAX_URL_LENGTH:
        raise Unprocessable(
            f"destination_url is {len(url)} characters long; the limit is {MAX_URL_LENGTH}.",
            code="invalid_destination",
        )
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise Unprocessable(f"destination_url {url!r} is not a valid URL.", code="invalid_destination") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise Unprocessable(
            f"destination_url {url!r} must be an absolute http or https URL.", code="invalid_destination"
        )
    if not host or host.startswith(".") or ".." in host:
        raise Unprocessable(f"destination_url {url!r} has no valid host.", code="invalid_destination")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise Unprocessable(
            f"destination_url {url!r} must not carry credentials (user:password@).", code="invalid_destination"
        )
    if "\\" in url:
        raise Unprocessable(f"destination_url {url!r} contains a backslash.", code="invalid_destination")
    if allowed_domains:
        host = host.rstrip(".").lower()
        if not host.isascii():
            try:
                host = host.encode("idna").decode("ascii")  # allowed domains are stored in ASCII form
            except UnicodeError:
                raise Unprocessable(f"destination_url {url!r} has no valid host.", code="invalid_destination") from None
        if not any(host == d or host.endswith("." + d) for d in allowed_domains):
            raise Unprocessable(
                f"destination_url host {host!r} is not within the campaign's allowed domains "
                f"({', '.join(allowed_domains)}).",
                code="domain_not_allowed",
            )
    return url


@dataclass(frozen=True, slots=True)
class NewStore:
    """A store as answered at creation: the secret and the token are shown this once."""

    store: dict[str, Any]
    secret: str
    postback_token: str


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _campaign_json(c: dict[str, Any]) -> bytes:
    data = {**c, "commission": {"type": c["commission"]["type"], "value": str(c["commission"]["value"])}}
    return json.dumps(data, separators=(",", ":")).encode()


def _campaign_from_json(raw: bytes) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(raw)
    data["commission"]["value"] = Decimal(data["commission"]["value"])
    return data


class Registry:
    """Registry reads and writes; every method is async, ClickHouse runs in a thread."""

    def __init__(self, settings: Settings, ch: ClickHouse, redis: aioredis.Redis) -> None:
        self.settings = settings
        self.ch = ch
        self.redis = redis
        self.codes = Codes(salt_for(settings.hashids_salt, settings.secret_key))
        self._sequence_floored = False
        self._sweeper: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------- plumbing

    async def _query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return await run_sync(lambda: self.ch.query_dicts(sql, params or {}))

    async def _insert(self, table: str, row: dict[str, Any]) -> None:
        columns = list(row)
        await run_sync(lambda: self.ch.insert(table, [[row[c] for c in columns]], columns))

    async def _cache_get(self, key: str) -> bytes | None:
        """A cached record, or None when missing or when Redis is unreachable (reads fall back)."""
        try:
            raw = await self.redis.get(key)
            return raw.encode() if isinstance(raw, str) else raw
        except RedisError as exc:
            log.warning("redis read of %s failed, reading ClickHouse: %s", key, exc)
            return None

    async def _cache_fill(self, key: str, value: bytes | str, ex: int | None = None) -> None:
        """Write back a record rebuilt from ClickHouse, never over a newer one."""
        try:
            await self.redis.set(key, value, nx=True, ex=ex)
        except RedisError as exc:
            log.warning("redis write-back of %s failed: %s", key, exc)

    async def _write(self, coro: Any) -> Any:
        """A write-through Redis call: failing it fails the request (503, safe to retry)."""
        try:
            return await coro
        except RedisError as exc:
            raise StorageUnavailable(f"Redis is unreachable: {exc}") from exc

    @asynccontextmanager
    async def _lock(self, kind: str, ident: str) -> AsyncIterator[None]:
        key = keys.registry_lock(kind, ident)
        token = secrets.token_hex(8)
        deadline = time.monotonic() + _LOCK_SECONDS
        while not await self._write(self.redis.set(key, token, nx=True, px=int(_LOCK_SECONDS * 1000))):
            if time.monotonic() > deadline:
                raise Conflict(f"The {kind} {ident!r} is being changed by another request; retry.")
            await asyncio.sleep(0.02)
        try:
            yield
        finally:
            try:
                if await self.redis.get(key) == token.encode():
                    await self.redis.delete(key)
            except RedisError:
                pass  # the lock expires on its own

    # ------------------------------------------------------------------- brands

    async def create_brand(self, name: str, currency: str) -> tuple[dict[str, Any], str]:
        created = now_utc()
        brand_id = new_id("brand")
        brand: dict[str, Any] = {"id": brand_id, "name": name, "currency": currency, "created_at": iso(created)}
        api_key = new_api_key()
        await self._insert(
            "brands",
            {"id": brand["id"], "name": name, "currency": currency, "created_at": created, "version": time.time_ns()},
        )
        await self._insert(
            "api_keys",
            {
                "key_hash": token_hash(api_key),
                "brand_id": brand["id"],
                "prefix": api_key[:8],
                "revoked": 0,
                "created_at": created,
                "version": time.time_ns(),
            },
        )
        await self._write(self.redis.set(keys.brand(brand_id), json.dumps(brand)))
        await self._write(self.redis.set(keys.api_key(token_hash(api_key)), brand_id))
        return brand, api_key

    @staticmethod
    def _brand(row: dict[str, Any]) -> dict[str, Any]:
        return {"id": row["id"], "name": row["name"], "currency": row["currency"], "created_at": iso(row["created_at"])}

    async def get_brand(self, brand_id: str) -> dict[str, Any] | None:
        if not looks_like("brand", brand_id):
            return None
        raw = await self._cache_get(keys.brand(brand_id))
        if raw is not None:
            cached: dict[str, Any] = json.loads(raw)
            return cached
        rows = await self._query(
            "SELECT id, name, currency, created_at FROM brands FINAL WHERE id = {id:String} LIMIT 1", {"id": brand_id}
        )
        if not rows:
            return None
        brand = self._brand(rows[0])
        await self._cache_fill(keys.brand(brand_id), json.dumps(brand))
        return brand

    async def list_brands(self) -> list[dict[str, Any]]:
        rows = await self._query(
            "SELECT id, name, currency, created_at FROM brands FINAL ORDER BY created_at, version, id"
        )
        return [self._brand(r) for r in rows]

    async def brand_for_key(self, api_key: str) -> dict[str, Any] | None:
        if not looks_like_api_key(api_key):
            return None
        digest = token_hash(api_key)
        raw = await self._cache_get(keys.api_key(digest))
        if raw is not None:
            return await self.get_brand(_text(raw)) if raw else None
        rows = await self._query(
            "SELECT brand_id FROM api_keys FINAL WHERE key_hash = {h:String} AND revoked = 0 LIMIT 1", {"h": digest}
        )
        if not rows:
            await self._cache_fill(keys.api_key(digest), b"", ex=_NEGATIVE_KEY_SECONDS)
            return None
        brand_id = str(rows[0]["brand_id"])
        await self._cache_fill(keys.api_key(digest), brand_id)
        return await self.get_brand(brand_id)

    # ---------------------------------------------------------------- campaigns

    async def create_campaign(
        self,
        brand_id: str,
        *,
        name: str,
        attribution_window_days: int = DEFAULT_WINDOW_DAYS,
        commission_type: str,
        commission_value: Decimal,
        click_id_param: str = DEFAULT_CLICK_ID_PARAM,
        allowed_domains: list[str] | None = None,
    ) -> dict[str, Any]:
        created = now_utc()
        row = {
            "brand_id": brand_id,
            "id": new_id("campaign"),
            "name": name,
            "attribution_window_days": attribution_window_days,
            "commission_type": commission_type,
            "commission_value": commission_value,
            "click_id_param": click_id_param,
            "allowed_domains": list(allowed_domains or []),
            "created_at": created,
            "version": time.time_ns(),
        }
        await self._insert("campaigns", row)
        campaign = self._campaign(row)
        await self._write(self.redis.set(keys.campaign(brand_id, campaign["id"]), _campaign_json(campaign)))
        return campaign

    @staticmethod
    def _campaign(row: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": row["id"],
            "name": row["name"],
            "attribution_window_days": int(row["attribution_window_days"]),
            "commission": {"type": row["commission_type"], "value": plain(Decimal(row["commission_value"]))},
            "click_id_param": row["click_id_param"],
            "allowed_domains": list(row["allowed_domains"]),
            "created_at": iso(row["created_at"]),
        }

    _CAMPAIGN_COLUMNS = (
        "id, name, attribution_window_days, commission_type, commission_value, click_id_param, "
        "allowed_domains, created_at"
    )

    async def get_campaign(self, brand_id: str, campaign_id: str) -> dict[str, Any] | None:
        if not looks_like("campaign", campaign_id) or not looks_like("brand", brand_id):
            return None
        raw = await self._cache_get(keys.campaign(brand_id, campaign_id))
        if raw is not None:
            return _campaign_from_json(raw)
        rows = await self._query(
            f"SELECT {self._CAMPAIGN_COLUMNS} FROM campaigns FINAL "
            "WHERE brand_id = {b:String} AND id = {id:String} LIMIT 1",
            {"b": brand_id, "id": campaign_id},
        )
        if not rows:
            return None
        campaign = self._campaign(rows[0])
        await self._cache_fill(keys.campaign(brand_id, campaign_id), _campaign_json(campaign))
        return campaign

    async def list_campaigns(self, brand_id: str) -> list[dict[str, Any]]:
        rows = await self._query(
            f"SELECT {self._CAMPAIGN_COLUMNS} FROM campaigns FINAL "
            "WHERE brand_id = {b:String} ORDER BY created_at, version, id",
            {"b": brand_id},
        )
        return [self._campaign(r) for r in rows]

    # -------------------------------------------------------------- influencers

    async def create_influencer(
        self, brand_id: str, *, name: str, handle: str = "", platform: str = ""
    ) -> dict[str, Any]:
        row = {
            "brand_id": brand_id,
            "id": new_id("influencer"),
            "name": name,
            "handle": handle,
            "platform": platform,
            "created_at": now_utc(),
            "version": time.time_ns(),
        }
        await self._insert("influencers", row)
        return self._influencer(row)

    @staticmethod
    def _influencer(row: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": row["id"],
            "name": row["name"],
            "handle": row["handle"] or None,
            "platform": row["platform"] or None,
            "created_at": iso(row["created_at"]),
        }

    async def get_influencer(self, brand_id: str, influencer_id: str) -> dict[str, Any] | None:
        if not looks_like("influencer", influencer_id) or not looks_like("brand", brand_id):
            return None
        rows = await self._query(
            "SELECT id, name, handle, platform, created_at FROM influencers FINAL "
            "WHERE brand_id = {b:String} AND id = {id:String} LIMIT 1",
            {"b": brand_id, "id": influencer_id},
        )
        return self._influencer(rows[0]) if rows else None

    async def list_influencers(self, brand_id: str) -> list[dict[str, Any]]:
        rows = await self._query(
            "SELECT id, name, handle, platform, created_at FROM influencers FINAL "
            "WHERE brand_id = {b:String} ORDER BY created_at, version, id",
            {"b": brand_id},
        )
        return [self._influencer(r) for r in rows]

    # -------------------------------------------------------------------- links

    _LINK_COLUMNS = (
        "brand_id, id, code, campaign_id, influencer_id, destination_url, coupon_code, disabled, "
        "expires_at, created_at, updated_at, version"
    )

    async def _next_link_id(self) -> int:
        floor = -1
        if not self._sequence_floored:
            floor = await self._max_link_id()
        while True:
            value = await self._write(self.redis.eval(_NEXT_LINK_ID, 1, keys.LINK_SEQUENCE, floor))
            if value is not None:
                self._sequence_floored = True
                return int(value)
            floor = await self._max_link_id()

    async def _max_link_id(self) -> int:
        rows = await run_sync(lambda: self.ch.query("SELECT max(id) FROM links"))
        return int(rows[0][0]) if rows and rows[0][0] is not None else 0

    async def _new_code(self) -> tuple[int, str]:
        while True:
            link_id = await self._next_link_id()
            code = self.codes.encode(link_id)
            if is_reserved(code):
                continue
            # Redis may come back from a restart without its last writes (AOF everysec) while
            # this process already trusted the sequence: ClickHouse has the final word.
            if await self._query("SELECT 1 FROM links WHERE id = {id:UInt64} LIMIT 1", {"id": link_id}):
                log.warning("link id %d is taken: the Redis sequence fell behind ClickHouse; raising it", link_id)
                self._sequence_floored = False
                continue
            return link_id, code

    def _record(self, row: dict[str, Any], campaign: dict[str, Any] | None) -> LinkRecord:
        return LinkRecord(
            id=int(row["id"]),
            code=row["code"],
            brand_id=row["brand_id"],
            campaign_id=row["campaign_id"],
            influencer_id=row["influencer_id"],
            destination_url=row["destination_url"],
            coupon_code=row["coupon_code"],
            disabled=bool(row["disabled"]),
            expires_at_ms=to_ms(row["expires_at"]),
            click_id_param=campaign["click_id_param"] if campaign else DEFAULT_CLICK_ID_PARAM,
            attribution_window_days=(
                int(campaign["attribution_window_days"]) if campaign else DEFAULT_WINDOW_DAYS
            ),
        )

    def link_answer(self, row: dict[str, Any], base_url: str | None = None) -> dict[str, Any]:
        """A link as the API answers it."""
        base = (self.settings.public_url or base_url or "").rstrip("/")
        return {
            "id": int(row["id"]),
            "code": row["code"],
            "short_url": f"{base}/{row['code']}",
            "destination_url": row["destination_url"],
            "coupon_code": row["coupon_code"] or None,
            "campaign_id": row["campaign_id"],
            "influencer_id": row["influencer_id"],
            "disabled": bool(row["disabled"]),
            "expires_at": iso(row["expires_at"]),
            "created_at": iso(row["created_at"]),
        }

    async def create_link(
        self,
        brand_id: str,
        *,
        campaign_id: str,
        influencer_id: str,
        destination_url: str,
        coupon_code: str | None = None,
        code: str | None = None,
        expires_at: datetime | None = None,
    ) -> dict[str, Any]:
        """Create a link; returns its ClickHouse row (see ``link_answer``)."""
        campaign = await self.get_campaign(brand_id, campaign_id)
        if campaign is None:
            raise Unprocessable(f"Campaign {campaign_id!r} does not exist.", code="unknown_campaign")
        if await self.get_influencer(brand_id, influencer_id) is None:
            raise Unprocessable(f"Influencer {influencer_id!r} does not exist.", code="unknown_influencer")
        check_destination(destination_url, campaign["allowed_domains"])
        if code is not None:
            problem = self.codes.vanity_problem(code)
            if problem:
                raise Unprocessable(problem, code="invalid_code")
            if await self._code_taken(code):
                raise Conflict(f"Code {code!r} is already taken.", code="code_taken")
        if coupon_code is not None and await self._coupon_taken(brand_id, coupon_code):
            raise Conflict(f"Coupon code {coupon_code!r} is already used by another link of this brand.",
                           code="coupon_taken")

        link_id, generated = await self._new_code()
        code = code or generated
        created = now_utc()
        row: dict[str, Any] = {
            "brand_id": brand_id,
            "id": link_id,
            "code": code,
            "campaign_id": campaign_id,
            "influencer_id": influencer_id,
            "destination_url": destination_url,
            "coupon_code": coupon_code or "",
            "disabled": 0,
            "expires_at": expires_at,
            "created_at": created,
            "updated_at": created,
            "version": time.time_ns(),
        }
        record = self._record(row, campaign)
        # Reserve the code and the coupon in Redis first: SET NX settles a race between
        # two requests; the ClickHouse checks above cover a Redis that lost its data.
        # Reservations expire unless the insert succeeds, so a process that dies in
        # between does not block the code or coupon for good (readers rebuild from ClickHouse).
        ttl = _RESERVE_SECONDS
        if not await self._write(self.redis.set(keys.link(code), record.encode(), nx=True, ex=ttl)):
            raise Conflict(f"Code {code!r} is already taken.", code="code_taken")
        reserved = [keys.link(code)]
        try:
            if coupon_code is not None:
                if not await self._write(self.redis.set(keys.coupon(brand_id, coupon_code), code, nx=True, ex=ttl)):
                    raise Conflict(
                        f"Coupon code {coupon_code!r} is already used by another link of this brand.",
                        code="coupon_taken",
                    )
                reserved.append(keys.coupon(brand_id, coupon_code))
            await self._insert("links", row)
        except BaseException:
            try:
                await self.redis.delete(*reserved)
            except RedisError:
                log.warning("could not release reservations %s", reserved)
            raise
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key in reserved:
                    pipe.persist(key)
                await pipe.execute()
        except RedisError as exc:  # they expire and are rebuilt from ClickHouse on the next read
            log.warning("could not keep the records of link %s: %s", code, exc)
        if code != generated:
            await self._cache_fill(keys.link_code(link_id), code)
        return row

    async def _code_taken(self, code: str) -> bool:
        rows = await self._query("SELECT 1 FROM links WHERE code = {c:String} LIMIT 1", {"c": code})
        return bool(rows)

    async def _coupon_taken(self, brand_id: str, coupon_code: str) -> bool:
        rows = await self._query(
            "SELECT 1 FROM links FINAL WHERE brand_id = {b:String} AND upper(coupon_code) = {c:String} LIMIT 1",
            {"b": brand_id, "c": coupon_code.upper()},
        )
        return bool(rows)

    async def _link_row(self, code: str) -> dict[str, Any] | None:
        rows = await self._query(
            f"SELECT {self._LINK_COLUMNS} FROM links FINAL WHERE code = {{c:String}} LIMIT 1", {"c": code}
        )
        return rows[0] if rows else None

    async def get_link(self, brand_id: str, code: str) -> dict[str, Any] | None:
        """The link row of this brand (None for an unknown code or another brand's link)."""
        if not self._plausible_code(code):
            return None
        row = await self._link_row(code)
        if row is None or row["brand_id"] != brand_id:
            return None
        return row

    async def list_links(
        self, brand_id: str, *, campaign_id: str | None = None, influencer_id: str | None = None,
        limit: int = 1000, offset: int = 0,
    ) -> list[dict[str, Any]]:
        return await self._query(
            f"SELECT {self._LINK_COLUMNS} FROM links FINAL WHERE brand_id = {{b:String}} "
            "AND ({c:String} = '' OR campaign_id = {c:String}) "
            "AND ({i:String} = '' OR influencer_id = {i:String}) "
            "ORDER BY id LIMIT {limit:UInt32} OFFSET {offset:UInt32}",
            {"b": brand_id, "c": campaign_id or "", "i": influencer_id or "", "limit": limit, "offset": offset},
        )

    async def update_link(
        self,
        brand_id: str,
        code: str,
        *,
        disabled: bool | None = None,
        destination_url: str | None = None,
        expires_at: datetime | _Unset | None = UNSET,
    ) -> dict[str, Any] | None:
        """Apply a PATCH; None when the link is unknown or another brand's. Effective at once in Redis."""
        if not self._plausible_code(code):
            return None
        async with self._lock("link", code):
            row = await self._link_row(code)
            if row is None or row["brand_id"] != brand_id:
                return None
            campaign = await self.get_campaign(brand_id, row["campaign_id"])
            if destination_url is not None:
                check_destination(destination_url, campaign["allowed_domains"] if campaign else [])
                row["destination_url"] = destination_url
            if disabled is not None:
                row["disabled"] = int(disabled)
            if not isinstance(expires_at, _Unset):
                row["expires_at"] = expires_at
            row["updated_at"] = now_utc()
            row["version"] = max(int(row["version"]) + 1, time.time_ns())
            record = self._record(row, campaign)
            await self._write(self.redis.delete(keys.link(code)))
            await self._insert("links", row)
            await self._write(self.redis.set(keys.link(code), record.encode()))
            return row

    def _plausible_code(self, code: object) -> bool:
        """False for strings that can be neither a generated nor a vanity code (no storage read)."""
        if not isinstance(code, str):
            return False
        return self.codes.decode(code) is not None or self.codes.vanity_problem(code) is None

    async def link_by_code(self, code: str) -> LinkRecord | None:
        """The redirect's record: Redis first, else rebuilt from ClickHouse and written back."""
        if not self._plausible_code(code):
            return None
        raw = await self._cache_get(keys.link(code))
        malformed = False
        if raw is not None:
            try:
                return LinkRecord.decode(raw)
            except (ValueError, TypeError) as exc:
                log.error("link record of %s in Redis is malformed (%s); rebuilding it", code, exc)
                malformed = True
        # No shortcut on "id above the sequence": a Redis restored from an old snapshot
        # has a low sequence too, and answering None would break a live link.
        row = await self._link_row(code)
        if row is None:
            return None
        record = self._record(row, await self.get_campaign(row["brand_id"], row["campaign_id"]))
        if malformed:
            with suppress(RedisError):
                await self.redis.set(keys.link(code), record.encode())
        else:
            await self._cache_fill(keys.link(code), record.encode())
        return record

    async def link_by_id(self, link_id: int) -> LinkRecord | None:
        """The link a click id names: its generated code, or its vanity code via the id -> code map."""
        if isinstance(link_id, bool) or not isinstance(link_id, int) or link_id < 1:
            return None
        custom = await self._cache_get(keys.link_code(link_id))
        if custom:
            return await self.link_by_code(_text(custom))
        record = await self.link_by_code(self.codes.encode(link_id))
        if record is not None and record.id == link_id:
            return record
        rows = await self._query("SELECT code FROM links FINAL WHERE id = {id:UInt64} LIMIT 1", {"id": link_id})
        if not rows:
            return None
        code = str(rows[0]["code"])
        await self._cache_fill(keys.link_code(link_id), code)
        return await self.link_by_code(code)

    async def link_by_coupon(self, brand_id: str, coupon_code: str) -> LinkRecord | None:
        """The link of this brand carrying the coupon (case-insensitive)."""
        if not isinstance(coupon_code, str) or not coupon_code or len(coupon_code) > 64:
            return None
        raw = await self._cache_get(keys.coupon(brand_id, coupon_code))
        if raw:
            record = await self.link_by_code(_text(raw))
            if record is not None and record.brand_id == brand_id and record.coupon_code.upper() == coupon_code.upper():
                return record
        rows = await self._query(
            "SELECT code FROM links FINAL WHERE brand_id = {b:String} AND upper(coupon_code) = {c:String} "
            "ORDER BY id LIMIT 1",
            {"b": brand_id, "c": coupon_code.upper()},
        )
        if not rows:
            return None
        code = str(rows[0]["code"])
        await self._cache_fill(keys.coupon(brand_id, coupon_code), code)
        return await self.link_by_code(code)

    # ------------------------------------------------------------------- stores

    async def create_store(self, brand_id: str, *, name: str, allowed_ips: list[str] | None = None) -> NewStore:
        nonce = secrets.token_hex(16)
        token = POSTBACK_TOKEN_PREFIX + secrets.token_urlsafe(24)
        row: dict[str, Any] = {
            "brand_id": brand_id,
            "id": new_id("store"),
            "name": name,
            "secret_nonce": nonce,
            "token_hash": token_hash(token),
            "allowed_ips": list(allowed_ips or []),
            "created_at": now_utc(),
            "version": time.time_ns(),
        }
        await self._insert("stores", row)
        await self._write(self.redis.set(keys.store(row["id"]), json.dumps(self._store_record(row))))
        secret = store_secret(self._secret_key(), nonce)
        return NewStore(store=self.store_answer(row), secret=secret, postback_token=token)

    def _secret_key(self) -> str:
        if not self.settings.secret_key:
            raise StorageUnavailable("TRACKER_SECRET_KEY is not set; stores cannot be given a signing secret.")
        return self.settings.secret_key

    @staticmethod
    def _store_record(row: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": row["id"],
            "brand_id": row["brand_id"],
            "name": row["name"],
            "secret_nonce": row["secret_nonce"],
            "token_hash": row["token_hash"],
            "allowed_ips": list(row["allowed_ips"]),
        }

    @staticmethod
    def store_answer(row: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": row["id"],
            "name": row["name"],
            "allowed_ips": list(row["allowed_ips"]),
            "created_at": iso(row["created_at"]),
        }

    _STORE_COLUMNS = "brand_id, id, name, secret_nonce, token_hash, allowed_ips, created_at"

    async def get_store(self, store_id: str) -> dict[str, Any] | None:
        """id, brand_id, name, secret_nonce, token_hash, allowed_ips (for postback checks)."""
        if not looks_like("store", store_id):
            return None
        raw = await self._cache_get(keys.store(store_id))
        if raw is not None:
            cached: dict[str, Any] = json.loads(raw)
            return cached
        rows = await self._query(
            f"SELECT {self._STORE_COLUMNS} FROM stores FINAL WHERE id = {{id:String}} LIMIT 1", {"id": store_id}
        )
        if not rows:
            return None
        record = self._store_record(rows[0])
        await self._cache_fill(keys.store(store_id), json.dumps(record))
        return record

    async def store_row(self, brand_id: str, store_id: str) -> dict[str, Any] | None:
        if not looks_like("store", store_id):
            return None
        rows = await self._query(
            f"SELECT {self._STORE_COLUMNS} FROM stores FINAL WHERE brand_id = {{b:String}} AND id = {{id:String}} "
            "LIMIT 1",
            {"b": brand_id, "id": store_id},
        )
        return rows[0] if rows else None

    async def list_stores(self, brand_id: str) -> list[dict[str, Any]]:
        return await self._query(
            f"SELECT {self._STORE_COLUMNS} FROM stores FINAL WHERE brand_id = {{b:String}} "
            "ORDER BY created_at, version, id",
            {"b": brand_id},
        )

    # ----------------------------------------------------------------- FX rates

    async def set_fx_rate(self, brand: dict[str, Any], currency: str, rate: Decimal) -> dict[str, Any]:
        if currency == brand["currency"]:
            raise Unprocessable(
                f"{currency} is the brand's own currency; its rate is always 1.", code="invalid_field"
            )
        updated = now_utc()
        async with self._lock("fx", f"{brand['id']}:{currency}"):
            await self._write(self.redis.hdel(keys.fx_rate(brand["id"]), currency))
            await self._insert(
                "fx_rates",
                {"brand_id": brand["id"], "currency": currency, "rate": rate, "updated_at": updated,
                 "version": time.time_ns()},
            )
            await self._write(self.redis.hset(keys.fx_rate(brand["id"]), currency, str(rate)))
        return {"currency": currency, "rate": rate, "base": brand["currency"], "updated_at": iso(updated)}

    async def fx_rate(self, brand_id: str, currency: str) -> Decimal | None:
        """Units of the brand currency per unit of ``currency``; 1 for the brand's own currency."""
        brand = await self.get_brand(brand_id)
        if brand is None or not money.is_currency(currency):
            return None
        if currency == brand["currency"]:
            return Decimal(1)
        try:
            raw = await self.redis.hget(keys.fx_rate(brand_id), currency)
        except RedisError:
            raw = None
        if raw is not None:
            return Decimal(_text(raw))
        rows = await self._query(
            "SELECT rate FROM fx_rates FINAL WHERE brand_id = {b:String} AND currency = {c:String} LIMIT 1",
            {"b": brand_id, "c": currency},
        )
        if not rows:
            return None
        rate = plain(Decimal(rows[0]["rate"]))
        with suppress(RedisError):
            await self.redis.hsetnx(keys.fx_rate(brand_id), currency, str(rate))
        return rate

    async def list_fx_rates(self, brand: dict[str, Any]) -> list[dict[str, Any]]:
        rows = await self._query(
            "SELECT currency, rate, updated_at FROM fx_rates FINAL WHERE brand_id = {b:String} ORDER BY currency",
            {"b": brand["id"]},
        )
        return [
            {"currency": r["currency"], "rate": plain(Decimal(r["rate"])), "base": brand["currency"],
             "updated_at": iso(r["updated_at"])}
            for r in rows
        ]

    # --------------------------------------------------------------------- fees

    async def create_fee(
        self,
        brand: dict[str, Any],
        *,
        campaign_id: str,
        influencer_id: str,
        amount: Decimal,
        currency: str,
        day: date,
        note: str = "",
    ) -> dict[str, Any]:
        """Record a flat fee, converted to the brand currency with the brand's FX rate."""
        brand_id = brand["id"]
        if await self.get_campaign(brand_id, campaign_id) is None:
            raise Unprocessable(f"Campaign {campaign_id!r} does not exist.", code="unknown_campaign")
        if await self.get_influencer(brand_id, influencer_id) is None:
            raise Unprocessable(f"Influencer {influencer_id!r} does not exist.", code="unknown_influencer")
        rate = await self.fx_rate(brand_id, currency)
        if rate is None:
            raise Unprocessable(
                f"No exchange rate from {currency} to {brand['currency']}: set one with "
                f"PUT /api/v1/fx-rates/{currency} first.",
                code="missing_fx_rate",
            )
        converted = money.round_money(amount * rate, brand["currency"])
        if converted >= _MAX_AMOUNT:
            raise Unprocessable(
                f"amount {amount} {currency} is {converted} {brand['currency']} at the rate {rate}: too large.",
                code="invalid_field",
            )
        if converted <= 0:
            raise Unprocessable(
                f"amount {amount} {currency} rounds to 0 {brand['currency']} at the rate {rate}.",
                code="invalid_field",
            )
        row = {
            "brand_id": brand_id,
            "id": new_id("fee"),
            "campaign_id": campaign_id,
            "influencer_id": influencer_id,
            "amount": converted,
            "currency": brand["currency"],
            "original_amount": amount,
            "original_currency": currency,
            "fx_rate": rate,
            "date": day,
            "note": note,
            "created_at": now_utc(),
            "version": time.time_ns(),
        }
        await self._insert("fees", row)
        return self.fee_answer(row)

    @staticmethod
    def fee_answer(row: dict[str, Any]) -> dict[str, Any]:
        currency = row["currency"]
        original = row["original_currency"]
        return {
            "id": row["id"],
            "campaign_id": row["campaign_id"],
            "influencer_id": row["influencer_id"],
            "amount": money.round_money(Decimal(row["amount"]), currency),
            "currency": currency,
            "original_amount": money.round_money(Decimal(row["original_amount"]), original),
            "original_currency": original,
            "fx_rate": plain(Decimal(row["fx_rate"])),
            "date": row["date"].isoformat(),
            "note": row["note"] or None,
            "created_at": iso(row["created_at"]),
        }

    async def list_fees(
        self, brand_id: str, *, campaign_id: str | None = None, influencer_id: str | None = None
    ) -> list[dict[str, Any]]:
        rows = await self._query(
            "SELECT id, campaign_id, influencer_id, amount, currency, original_amount, original_currency, "
            "fx_rate, date, note, created_at FROM fees FINAL WHERE brand_id = {b:String} "
            "AND ({c:String} = '' OR campaign_id = {c:String}) "
            "AND ({i:String} = '' OR influencer_id = {i:String}) ORDER BY date, created_at, id",
            {"b": brand_id, "c": campaign_id or "", "i": influencer_id or ""},
        )
        return [self.fee_answer(r) for r in rows]

    # ----------------------------------------------------------- reconciliation

    async def start(self) -> None:
        """Start the background sweep that repairs Redis records a Redis restart rolled back."""
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="registry-reconcile")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None

    async def _sweep_loop(self) -> None:
        window = RECONCILE_FIRST_WINDOW_SECONDS
        while True:
            try:
                fixed = await self.reconcile(window)
                if fixed:
                    log.warning("repaired %d Redis registry records that were older than ClickHouse", fixed)
                window = RECONCILE_WINDOW_SECONDS
            except Exception as exc:  # storage down: try again on the next round
                log.warning("registry reconciliation failed: %s", exc)
            await asyncio.sleep(RECONCILE_EVERY_SECONDS)

    async def reconcile(self, window_seconds: float) -> int:
        """Repair Redis records of links and FX rates changed within the window.

        A record that differs from ClickHouse is rewritten under the row's lock (an
        update in flight wins); a missing record is left alone (the next read rebuilds
        it). Returns how many records were repaired.
        """
        since_ms = int((now_utc() - timedelta(seconds=window_seconds)).timestamp() * 1000)
        fixed = 0
        rows = await self._query(
            f"SELECT {self._LINK_COLUMNS} FROM links FINAL "
            "WHERE updated_at >= fromUnixTimestamp64Milli({since:Int64}) ORDER BY id",
            {"since": since_ms},
        )
        campaigns: dict[tuple[str, str], dict[str, Any] | None] = {}
        for start in range(0, len(rows), 500):
            chunk = rows[start : start + 500]
            cached = await self.redis.mget([keys.link(r["code"]) for r in chunk])
            for row, raw in zip(chunk, cached, strict=True):
                if raw is None:
                    continue
                ref = (row["brand_id"], row["campaign_id"])
                if ref not in campaigns:
                    campaigns[ref] = await self.get_campaign(*ref)
                try:
                    same = LinkRecord.decode(raw) == self._record(row, campaigns[ref])
                except (ValueError, TypeError):
                    same = False
                if same:
                    continue
                async with self._lock("link", row["code"]):
                    fresh = await self._link_row(row["code"])
                    if fresh is not None:
                        record = self._record(fresh, campaigns[ref])
                        await self._write(self.redis.set(keys.link(row["code"]), record.encode()))
                        fixed += 1
        rates = await self._query(
            "SELECT brand_id, currency, rate FROM fx_rates FINAL "
            "WHERE updated_at >= fromUnixTimestamp64Milli({since:Int64})",
            {"since": since_ms},
        )
        for r in rates:
            raw = await self.redis.hget(keys.fx_rate(r["brand_id"]), r["currency"])
            if raw is None or Decimal(_text(raw)) == Decimal(r["rate"]):
                continue
            async with self._lock("fx", f"{r['brand_id']}:{r['currency']}"):
                current = await self._query(
                    "SELECT rate FROM fx_rates FINAL WHERE brand_id = {b:String} AND currency = {c:String}",
                    {"b": r["brand_id"], "c": r["currency"]},
                )
                if current:
                    rate = plain(Decimal(current[0]["rate"]))
                    await self._write(self.redis.hset(keys.fx_rate(r["brand_id"]), r["currency"], str(rate)))
                    fixed += 1
        return fixed


def valid_ip_or_network(value: str) -> str:
    """Normalised IP ("203.0.113.7") or CIDR ("203.0.113.0/24") text; ValueError otherwise."""
    net = ipaddress.ip_network(value.strip(), strict=False)
    return str(net.network_address) if net.num_addresses == 1 else str(net)
