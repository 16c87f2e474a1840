"""Which orders a brand has: a Bloom filter in Redis, so a new order costs no ClickHouse read.

A postback for an order Redis holds no state of (new, or its state expired after
``state.STATE_TTL_SECONDS``, or Redis lost it) used to ask ClickHouse whether the order
exists. Now each brand has a filter of every order id it ever had, kept in Redis
bitfields next to the states and set by the same script that writes a new order:

- the filter answers "certainly not there" exactly (a Bloom filter has no false
  negatives): the order is new, no ClickHouse read; "maybe there" (about 0.3-2 % of
  new orders, by design) sends the order to ClickHouse as before;
- it is trusted only when *complete*: built from ClickHouse and the conversion stream
  (``rebuild``) and kept since by every commit. A brand whose filter is missing (the first
  start with this code, or Redis lost its data: the filter keys have no TTL, so only a
  loss removes them) reads ClickHouse for every unknown order, exactly as before, while
  one process rebuilds it in the background;
- it grows by generations (``GROWTH`` times the last one's capacity, at most
  ``MAX_GENERATIONS``): a lookup checks every generation, a new order sets its bits in the
  last. Generation 0 holds ``CAPACITY0`` orders in 6 KB, so a small brand costs little.

Positions come from a keyed BLAKE2b of the order id (two 32-bit halves, double hashing
in the script), so they are exact integers in Lua. The scripts here read and write the
state, the filter, the held refunds, the delivery marker and the customer's first order
of one brand in one call; every key is passed in KEYS (none is built in a script).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tracker.core import keys
from tracker.core.credentials import derive_key

log = logging.getLogger("tracker.conversions.orderset")

K = 7  # bits per order and generation
BITS_PER_ORDER = 12  # about 0.3 % false "maybe" per full generation at K = 7
CAPACITY0 = 4096
GROWTH = 4
MAX_GENERATIONS = 8
REBUILD_LOCK_SECONDS = 600

_CHECK = f"""
local function maybe_present(meta_key, gen_base, h1, h2)
  local meta = redis.call('HMGET', meta_key, 'gens', 'cap0', 'complete')
  if not meta[1] then return 'incomplete', 0 end
  local gens = tonumber(meta[1])
  if gens ~= tonumber(ARGV[4]) then return 'generations', gens end
  if meta[3] ~= '1' then return 'incomplete', gens end
  local cap0 = tonumber(meta[2])
  for g = 0, gens - 1 do
    local m = cap0 * ({GROWTH} ^ g) * {BITS_PER_ORDER}
    local all = true
    for i = 0, {K} - 1 do
      if redis.call('GETBIT', KEYS[gen_base + g], (h1 + i * h2) % m) == 0 then all = false break end
    end
    if all then return 'maybe', gens end
  end
  return 'new', gens
end
"""

# KEYS: 1 state, 2 filter meta, 3 held refunds, 4 customer shard, 5 delivery marker (or the state
# key when there is none), 6.. filter generations.
# ARGV: 1 h1, 2 h2, 3 customer field ('' none), 4 generations the caller knows, 5 '1' when KEYS[5]
# is a delivery marker. Returns {1, state, delivered} or {0, verdict, held, customer, generations}.
READ = _CHECK + """
local delivered = 0
if ARGV[5] == '1' then delivered = redis.call('EXISTS', KEYS[5]) end
local cur = redis.call('GET', KEYS[1])
if cur then return {1, cur, delivered} end
local held = redis.call('GET', KEYS[3]) or ''
local customer = ''
if ARGV[3] ~= '' then customer = redis.call('HGET', KEYS[4], ARGV[3]) or '' end
local verdict, gens = maybe_present(KEYS[2], 6, tonumber(ARGV[1]), tonumber(ARGV[2]))
return {0, verdict, held, customer, tostring(gens), delivered}
"""

# KEYS: 1 state, 2 conversion stream, 3 filter meta, 4 held refunds, 5 delivery marker (or state),
# 6 customer shard (or state), 7.. filter generations.
# ARGV: 1 state the decision was based on ('' = none in Redis: a first write), 2 new state, 3 TTL,
# 4 h1, 5 h2, 6 generations the caller knows, 7 held refunds the decision included ('' none),
# 8 delivery marker TTL ('' none), 9 customer field ('' none), 10 "link_id:first_ms".
# Returns {1, fill of the last generation}, {0, current state} (another write won),
# {2, held} (refunds were held meanwhile) or {3, generations} (the filter grew).
COMMIT = f"""
local cur = redis.call('GET', KEYS[1])
local first = ARGV[1] == ''
if first then
  if cur then return {{0, cur}} end
  local held = redis.call('GET', KEYS[4]) or ''
  if held ~= ARGV[7] then return {{2, held}} end
elseif cur ~= ARGV[1] then
  return {{0, cur or ''}}
end
local gens = tonumber(ARGV[6])
local known = redis.call('HGET', KEYS[3], 'gens')
if first and tonumber(known or '1') ~= gens then return {{3, known or '1'}} end
redis.call('SET', KEYS[1], ARGV[2], 'EX', tonumber(ARGV[3]))
redis.call('XADD', KEYS[2], '*', 'e', ARGV[2])
local fill = 0
if first then
  if not known then
    redis.call('HSET', KEYS[3], 'gens', 1, 'cap0', {CAPACITY0}, 'n', 0, 'complete', 0)
  end
  local m = tonumber(redis.call('HGET', KEYS[3], 'cap0')) * ({GROWTH} ^ (gens - 1)) * {BITS_PER_ORDER}
  local h1, h2 = tonumber(ARGV[4]), tonumber(ARGV[5])
  for i = 0, {K} - 1 do redis.call('SETBIT', KEYS[6 + gens], (h1 + i * h2) % m, 1) end
  fill = redis.call('HINCRBY', KEYS[3], 'n', 1)
  redis.call('DEL', KEYS[4])
end
if ARGV[8] ~= '' then redis.call('SET', KEYS[5], '1', 'EX', tonumber(ARGV[8])) end
if ARGV[9] ~= '' then
  local old = redis.call('HGET', KEYS[6], ARGV[9])
  if (not old) or tonumber(string.match(old, ':(%d+)$')) > tonumber(string.match(ARGV[10], ':(%d+)$')) then
    redis.call('HSET', KEYS[6], ARGV[9], ARGV[10])
  end
end
return {{1, tostring(fill)}}
"""

# A postback in one call: its store's rate limit (``conversions.ratelimit``), the order's state, and,
# when the caller decided the order is new (ARGV 7) and the filter says it is certainly new with
# nothing held and no first order of its customer, the write of that decision (COMMIT's first write).
# KEYS: 1 state, 2 filter meta, 3 held refunds, 4 customer shard (or the meta), 5 rate counter (or the
# state), 6 conversion stream, 7.. filter generations.
# ARGV: 1 h1, 2 h2, 3 customer field ('' none), 4 generations the caller knows, 5 the limit ('' none),
# 6 window seconds, 7 new state ('' = read only), 8 TTL, 9 the customer's "link_id:first_ms" ('' none).
# Returns {9, ms until the window resets} (over the limit: nothing read), {1, state},
# {0, verdict, held, customer, generations} (no state, nothing written) or {4, fill} (written).
RECORD = _CHECK + f"""
if ARGV[5] ~= '' then
  local n = redis.call('INCR', KEYS[5])
  if n == 1 then redis.call('EXPIRE', KEYS[5], tonumber(ARGV[6])) end
  if n > tonumber(ARGV[5]) then
    local ttl = redis.call('PTTL', KEYS[5])
    if ttl < 0 then
      redis.call('EXPIRE', KEYS[5], tonumber(ARGV[6]))
      ttl = tonumber(ARGV[6]) * 1000
    end
    return {{9, ttl}}
  end
end
local cur = redis.call('GET', KEYS[1])
if cur then return {{1, cur}} end
local held = redis.call('GET', KEYS[3]) or ''
local customer = ''
if ARGV[3] ~= '' then customer = redis.call('HGET', KEYS[4], ARGV[3]) or '' end
local verdict, gens = maybe_present(KEYS[2], 7, tonumber(ARGV[1]), tonumber(ARGV[2]))
if ARGV[7] == '' or verdict ~= 'new' or held ~= '' or customer ~= '' then
  return {{0, verdict, held, customer, tostring(gens)}}
end
redis.call('SET', KEYS[1], ARGV[7], 'EX', tonumber(ARGV[8]))
redis.call('XADD', KEYS[6], '*', 'e', ARGV[7])
local m = tonumber(redis.call('HGET', KEYS[2], 'cap0')) * ({GROWTH} ^ (gens - 1)) * {BITS_PER_ORDER}
local h1, h2 = tonumber(ARGV[1]), tonumber(ARGV[2])
for i = 0, {K} - 1 do redis.call('SETBIT', KEYS[6 + gens], (h1 + i * h2) % m, 1) end
if ARGV[9] ~= '' then redis.call('HSET', KEYS[4], ARGV[3], ARGV[9]) end
return {{4, tostring(redis.call('HINCRBY', KEYS[2], 'n', 1))}}
"""

# KEYS: 1 filter meta. ARGV: 1 generations the caller saw. Adds a generation unless another
# process did (or the limit is reached); returns the generations now.
GROW = f"""
local g = tonumber(redis.call('HGET', KEYS[1], 'gens') or '0')
if g > 0 and g == tonumber(ARGV[1]) and g < {MAX_GENERATIONS} then
  redis.call('HSET', KEYS[1], 'gens', g + 1, 'n', 0)
  return g + 1
end
return g
"""

# KEYS: 1 filter meta, 2 the last generation. ARGV: h1, h2 pairs of the orders to add, then the
# generations the caller saw as the last ARGV. Returns the fill, or -1 when the filter grew meanwhile.
ADD_MANY = f"""
local gens = tonumber(ARGV[#ARGV])
if tonumber(redis.call('HGET', KEYS[1], 'gens') or '0') ~= gens then return -1 end
local m = tonumber(redis.call('HGET', KEYS[1], 'cap0')) * ({GROWTH} ^ (gens - 1)) * {BITS_PER_ORDER}
for j = 1, #ARGV - 1, 2 do
  local h1, h2 = tonumber(ARGV[j]), tonumber(ARGV[j + 1])
  for i = 0, {K} - 1 do redis.call('SETBIT', KEYS[2], (h1 + i * h2) % m, 1) end
end
return redis.call('HINCRBY', KEYS[1], 'n', (#ARGV - 1) / 2)
"""


def capacity(generation: int) -> int:
    return int(CAPACITY0 * GROWTH**generation)


class OrderSet:
    """This process's view of the brands' filters: positions, known generations, rebuilds."""

    def __init__(self, redis: aioredis.Redis, secret_key: str) -> None:
        self.redis = redis
        self._key = derive_key(secret_key, "order-set")
        self._generations: dict[str, int] = {}
        self._rebuilding: dict[str, asyncio.Task[None]] = {}
        self._grow = redis.register_script(GROW)
        self._add_many = redis.register_script(ADD_MANY)

    def positions(self, order_id: str) -> tuple[int, int]:
        digest = hashlib.blake2b(order_id.encode(), digest_size=8, key=self._key).digest()
        return int.from_bytes(digest[:4], "big"), int.from_bytes(digest[4:], "big") | 1

    def generations(self, brand_id: str) -> int:
        return self._generations.get(brand_id, 1)

    def saw(self, brand_id: str, generations: int) -> None:
        self._generations[brand_id] = max(1, generations)

    def generation_keys(self, brand_id: str) -> list[str]:
        return [keys.order_set_generation(brand_id, g) for g in range(self.generations(brand_id))]

    async def filled(self, brand_id: str, fill: int) -> None:
        """After a new order: add a generation when the last one is full."""
        gens = self.generations(brand_id)
        if fill > capacity(gens - 1) and gens < MAX_GENERATIONS:
            self.saw(brand_id, int(await self._grow(keys=[keys.order_set(brand_id)], args=[gens])))

    def incomplete(self, brand_id: str, rebuild: Any) -> None:
        """The filter cannot answer for this brand: start ``rebuild(brand_id)`` here unless running."""
        task = self._rebuilding.get(brand_id)
        if task is None or task.done():
            self._rebuilding[brand_id] = asyncio.get_running_loop().create_task(rebuild(brand_id))

    async def add_all(self, brand_id: str, order_ids: list[str]) -> None:
        """Add orders to the filter (a rebuild), growing it first so they fit."""
        meta = keys.order_set(brand_id)
        await self.redis.hsetnx(meta, "cap0", CAPACITY0)
        if await self.redis.hsetnx(meta, "gens", 1):
            await self.redis.hset(meta, mapping={"n": 0, "complete": 0})
        chunk = 2000
        start = 0
        while start < len(order_ids):
            raw: list[Any] = await self.redis.hmget(meta, ["gens", "n"])
            gens, fill = int(raw[0]), int(raw[1] or 0)
            self.saw(brand_id, gens)
            if fill + min(chunk, len(order_ids) - start) > capacity(gens - 1) and gens < MAX_GENERATIONS:
                self.saw(brand_id, int(await self._grow(keys=[meta], args=[gens])))
                continue
            part = order_ids[start : start + chunk]
            args: list[int] = [h for order_id in part for h in self.positions(order_id)]
            done = await self._add_many(keys=[meta, keys.order_set_generation(brand_id, gens - 1)], args=[*args, gens])
            if int(done) >= 0:
                start += len(part)

    async def mark_complete(self, brand_id: str) -> None:
        await self.redis.hset(keys.order_set(brand_id), "complete", 1)

    async def stop(self) -> None:
        for task in self._rebuilding.values():
            task.cancel()
        for task in self._rebuilding.values():
            with contextlib.suppress(asyncio.CancelledError, RedisError):
                await task


# KEYS: 1 state, 2 held refunds. ARGV: 1 held refunds the decision was based on ('' none), 2 new held
# refunds. Returns {1} when held, {0, state} when the order arrived meanwhile, {2, held} when other
# refunds were held meanwhile.
HOLD = """
local cur = redis.call('GET', KEYS[1])
if cur then return {0, cur} end
local held = redis.call('GET', KEYS[2]) or ''
if held ~= ARGV[1] then return {2, held} end
redis.call('SET', KEYS[2], ARGV[2])
return {1}
"""

# KEYS: 1 a customer shard. ARGV: field, "link_id:first_ms" pairs. Keeps each customer's earliest.
KEEP_EARLIEST = """
for j = 1, #ARGV, 2 do
  local old = redis.call('HGET', KEYS[1], ARGV[j])
  if (not old) or tonumber(string.match(old, ':(%d+)$')) > tonumber(string.match(ARGV[j + 1], ':(%d+)$')) then
    redis.call('HSET', KEYS[1], ARGV[j], ARGV[j + 1])
  end
end
return 1
"""
