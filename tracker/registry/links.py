"""Links: short codes from the link sequence, the redirect's records, coupons.

Link ids come from the Redis sequence ``keys.LINK_SEQUENCE``; when the key is
missing (Redis lost its data) it is seeded from ``max(id)`` in ClickHouse, and
each process raises it to that floor once, so a code is never handed out twice.
A generated code is the hashids of the id; a vanity code is mapped from the id
(``keys.link_code``) so a click id, which carries the id, finds it.

The redirect reads ``keys.link(code)`` (a ``LinkRecord``); postbacks read links
by id and by coupon (``keys.coupon``, case-insensitive within a brand).
"""

from __future__ import annotations

import logging
import time
from contextlib import suppress
from datetime import datetime
from typing import Final

from redis.exceptions import RedisError

from tracker.core import keys
from tracker.core.codes import Codes, is_reserved
from tracker.core.errors import Conflict, NotFound, Unprocessable
from tracker.core.records import LinkRecord
from tracker.core.timeutil import now_utc, to_ms
from tracker.registry.cache import Cache, Row, text
from tracker.registry.campaigns import DEFAULT_CLICK_ID_PARAM, DEFAULT_WINDOW_DAYS, CampaignRecord, Campaigns
from tracker.registry.destinations import check_destination
from tracker.registry.influencers import Influencers

log = logging.getLogger("tracker.registry")

# How long a new link's code and coupon stay reserved in Redis if its insert never lands.
_RESERVE_SECONDS = 60
_COLUMNS = (
    "brand_id, id, code, campaign_id, influencer_id, destination_url, coupon_code, disabled, "
    "expires_at, created_at, updated_at, version"
)
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


class _Unset:
    pass


# "Leave it as it is" for a PATCH field whose None means "clear it".
UNSET: Final = _Unset()


def record(row: Row, campaign: CampaignRecord | None) -> LinkRecord:
    """The redirect's record of a link row (the campaign gives the click-id parameter and window)."""
    return LinkRecord(
        id=int(row["id"]),
        code=row["code"],
        brand_id=row["brand_id"],
        campaign_id=row["campaign_id"],
        influencer_id=row["influencer_id"],
        destination_url=row["destination_url"],
        coupon_code=row["coupon_code"],
        disabled=bool(row["disabled"]),
        expires_at_ms=None if row["expires_at"] is None else to_ms(row["expires_at"]),
        click_id_param=campaign["click_id_param"] if campaign else DEFAULT_CLICK_ID_PARAM,
        attribution_window_days=int(campaign["attribution_window_days"]) if campaign else DEFAULT_WINDOW_DAYS,
    )


def _coupon_taken(coupon_code: str) -> Conflict:
    return Conflict(f"Coupon code {coupon_code!r} is already used by another link of this brand.",
                    code="coupon_taken")


class Links:
    def __init__(self, cache: Cache, codes: Codes, campaigns: Campaigns, influencers: Influencers) -> None:
        self.cache = cache
        self.codes = codes
        self.campaigns = campaigns
        self.influencers = influencers
        self._sequence_floored = False

    # ------------------------------------------------------------ the sequence

    async def _next_id(self) -> int:
        floor = -1
        if not self._sequence_floored:
            floor = await self._max_id()
        while True:
            value = await self.cache.write(self.cache.redis.eval(_NEXT_LINK_ID, 1, keys.LINK_SEQUENCE, floor))
            if value is not None:
                self._sequence_floored = True
                return int(value)
            floor = await self._max_id()

    async def _max_id(self) -> int:
        rows = await self.cache.query("SELECT max(id) AS top FROM links")
        return int(rows[0]["top"]) if rows and rows[0]["top"] is not None else 0

    async def _new_code(self) -> tuple[int, str]:
        while True:
            link_id = await self._next_id()
            code = self.codes.encode(link_id)
            if is_reserved(code):
                continue
            # Redis may come back from a restart without its last writes (AOF everysec) while
            # this process already trusted the sequence: ClickHouse has the final word.
            if await self.cache.first("SELECT 1 FROM links WHERE id = {id:UInt64} LIMIT 1", {"id": link_id}):
                log.warning("link id %d is taken: the Redis sequence fell behind ClickHouse; raising it", link_id)
                self._sequence_floored = False
                continue
            return link_id, code

    def plausible(self, code: object) -> bool:
        """False for strings that can be neither a generated nor a vanity code (no storage read)."""
        if not isinstance(code, str):
            return False
        return self.codes.decode(code) is not None or self.codes.vanity_problem(code) is None

    # ----------------------------------------------------------------- writes

    async def create(
        self,
        brand_id: str,
        *,
        campaign_id: str,
        influencer_id: str,
        destination_url: str,
        coupon_code: str | None = None,
        code: str | None = None,
        expires_at: datetime | None = None,
    ) -> Row:
        """Create a link; returns its ClickHouse row."""
        campaign = await self.campaigns.get(brand_id, campaign_id)
        if campaign is None:
            raise NotFound(f"Campaign {campaign_id!r} does not exist.")  # another brand's id too
        if await self.influencers.get(brand_id, influencer_id) is None:
            raise NotFound(f"Influencer {influencer_id!r} does not exist.")
        check_destination(destination_url, campaign["allowed_domains"])
        if code is not None:
            problem = self.codes.vanity_problem(code)
            if problem:
                raise Unprocessable(problem, code="invalid_code")
            if await self.cache.first("SELECT 1 FROM links WHERE code = {c:String} LIMIT 1", {"c": code}):
                raise Conflict(f"Code {code!r} is already taken.", code="code_taken")
        if coupon_code is not None and await self._coupon_row(brand_id, coupon_code, "1") is not None:
            raise _coupon_taken(coupon_code)

        link_id, generated = await self._new_code()
        code = code or generated
        created = now_utc()
        row: Row = {
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
        await self._reserve_and_insert(row, record(row, campaign))
        if code != generated:
            await self.cache.fill(keys.link_code(link_id), code)
        return row

    async def _reserve_and_insert(self, row: Row, rec: LinkRecord) -> None:
        """Claim the code and the coupon in Redis, insert the row, then keep the claims.

        SET NX settles a race between two requests; the ClickHouse checks before it
        cover a Redis that lost its data. The claims are the records themselves, so
        they are not a lock (``Cache.lock``): they expire unless the insert lands, and
        a process that dies in between blocks nothing for good (readers rebuild).
        """
        redis, code, coupon = self.cache.redis, row["code"], row["coupon_code"] or None
        if not await self.cache.write(redis.set(keys.link(code), rec.encode(), nx=True, ex=_RESERVE_SECONDS)):
            raise Conflict(f"Code {code!r} is already taken.", code="code_taken")
        reserved = [keys.link(code)]
        try:
            if coupon is not None:
                coupon_key = keys.coupon(row["brand_id"], coupon)
                if not await self.cache.write(redis.set(coupon_key, code, nx=True, ex=_RESERVE_SECONDS)):
                    raise _coupon_taken(coupon)
                reserved.append(coupon_key)
            await self.cache.insert("links", row)
        except BaseException:
            try:
                await redis.delete(*reserved)
            except RedisError:
                log.warning("could not release reservations %s", reserved)
            raise
        try:
            async with redis.pipeline(transaction=False) as pipe:
                for key in reserved:
                    pipe.persist(key)
                await pipe.execute()
        except RedisError as exc:  # they expire and are rebuilt from ClickHouse on the next read
            log.warning("could not keep the records of link %s: %s", code, exc)

    async def update(
        self,
        brand_id: str,
        code: str,
        *,
        disabled: bool | None = None,
        destination_url: str | None = None,
        expires_at: datetime | _Unset | None = UNSET,
    ) -> Row | None:
        """Apply a PATCH; None when the link is unknown or another brand's. Effective at once in Redis."""
        if not self.plausible(code):
            return None
        async with self.cache.lock("link", code):
            row = await self.row(code)
            if row is None or row["brand_id"] != brand_id:
                return None
            campaign = await self.campaigns.get(brand_id, row["campaign_id"])
            if destination_url is not None:
                check_destination(destination_url, campaign["allowed_domains"] if campaign else [])
                row["destination_url"] = destination_url
            if disabled is not None:
                row["disabled"] = int(disabled)
            if not isinstance(expires_at, _Unset):
                row["expires_at"] = expires_at
            row["updated_at"] = now_utc()
            row["version"] = max(int(row["version"]) + 1, time.time_ns())
            rec = record(row, campaign)
            await self.cache.write(self.cache.redis.delete(keys.link(code)))
            await self.cache.insert("links", row)
            await self.cache.write(self.cache.redis.set(keys.link(code), rec.encode()))
            return row

    # ------------------------------------------------------------------ reads

    async def row(self, code: str) -> Row | None:
        return await self.cache.first(f"SELECT {_COLUMNS} FROM links FINAL WHERE code = {{c:String}} LIMIT 1",
                                      {"c": code})

    async def rows_since(self, since_ms: int) -> list[Row]:
        """Rows changed at or after ``since_ms`` (epoch ms), for the reconciliation sweep."""
        return await self.cache.query(
            f"SELECT {_COLUMNS} FROM links FINAL WHERE updated_at >= fromUnixTimestamp64Milli({{since:Int64}}) "
            "ORDER BY id",
            {"since": since_ms},
        )

    async def _coupon_row(self, brand_id: str, coupon_code: str, columns: str) -> Row | None:
        return await self.cache.first(
            f"SELECT {columns} FROM links FINAL WHERE brand_id = {{b:String}} AND upper(coupon_code) = {{c:String}} "
            "ORDER BY id LIMIT 1",
            {"b": brand_id, "c": coupon_code.upper()},
        )

    async def get(self, brand_id: str, code: str) -> Row | None:
        """The link row of this brand (None for an unknown code or another brand's link)."""
        if not self.plausible(code):
            return None
        row = await self.row(code)
        if row is None or row["brand_id"] != brand_id:
            return None
        return row

    async def get_by_id(self, brand_id: str, link_id: int) -> Row | None:
        """The link row of this brand with this numeric id (None when unknown or another brand's)."""
        return await self.cache.first(
            f"SELECT {_COLUMNS} FROM links FINAL WHERE brand_id = {{b:String}} AND id = {{id:UInt64}} LIMIT 1",
            {"b": brand_id, "id": link_id},
        )

    async def all(
        self, brand_id: str, *, campaign_id: str | None = None, influencer_id: str | None = None,
        limit: int = 1000, offset: int = 0,
    ) -> list[Row]:
        return await self.cache.query(
            f"SELECT {_COLUMNS} FROM links FINAL WHERE brand_id = {{b:String}} "
            "AND ({c:String} = '' OR campaign_id = {c:String}) "
            "AND ({i:String} = '' OR influencer_id = {i:String}) "
            "ORDER BY id LIMIT {limit:UInt32} OFFSET {offset:UInt32}",
            {"b": brand_id, "c": campaign_id or "", "i": influencer_id or "", "limit": limit, "offset": offset},
        )

    async def by_code(self, code: str) -> LinkRecord | None:
        """The redirect's record: Redis first, else rebuilt from ClickHouse and written back."""
        if not self.plausible(code):
            return None
        raw = await self.cache.get(keys.link(code))
        malformed = False
        if raw is not None:
            try:
                return LinkRecord.decode(raw)
            except (ValueError, TypeError) as exc:
                log.error("link record of %s in Redis is malformed (%s); rebuilding it", code, exc)
                malformed = True
        # No shortcut on "id above the sequence": a Redis restored from an old snapshot
        # has a low sequence too, and answering None would break a live link.
        row = await self.row(code)
        if row is None:
            return None
        rec = record(row, await self.campaigns.get(row["brand_id"], row["campaign_id"]))
        if malformed:
            with suppress(RedisError):
                await self.cache.redis.set(keys.link(code), rec.encode())
        else:
            await self.cache.fill(keys.link(code), rec.encode())
        return rec

    async def by_id(self, link_id: int) -> LinkRecord | None:
        """The link a click id names: its generated code, or its vanity code via the id -> code map."""
        if isinstance(link_id, bool) or not isinstance(link_id, int) or link_id < 1:
            return None
        custom = await self.cache.get(keys.link_code(link_id))
        if custom:
            return await self.by_code(text(custom))
        rec = await self.by_code(self.codes.encode(link_id))
        if rec is not None and rec.id == link_id:
            return rec
        row = await self.cache.first("SELECT code FROM links FINAL WHERE id = {id:UInt64} LIMIT 1", {"id": link_id})
        if row is None:
            return None
        code = str(row["code"])
        await self.cache.fill(keys.link_code(link_id), code)
        return await self.by_code(code)

    async def by_coupon(self, brand_id: str, coupon_code: str) -> LinkRecord | None:
        """The link of this brand carrying the coupon (case-insensitive)."""
        if not isinstance(coupon_code, str) or not coupon_code or len(coupon_code) > 64:
            return None
        raw = await self.cache.get(keys.coupon(brand_id, coupon_code))
        if raw:
            rec = await self.by_code(text(raw))
            if rec is not None and rec.brand_id == brand_id and rec.coupon_code.upper() == coupon_code.upper():
                return rec
        row = await self._coupon_row(brand_id, coupon_code, "code")
        if row is None:
            return None
        code = str(row["code"])
        await self.cache.fill(keys.coupon(brand_id, coupon_code), code)
        return await self.by_code(code)
