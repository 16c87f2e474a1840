"""Delivery: a stream's entries handed to one ingest worker at a time, as ranges.

Workers read through the consumer group with ``XREADGROUP ... NOACK``, so Redis
keeps no per-entry pending list. Measured on the embedded Valkey with AOF on, a
delivered and acknowledged entry cost Redis 6-12 us (the pending list, an
``XCLAIM`` line per entry in the AOF, then ``XACK``); a NOACK delivery costs
~0.3 us. What a worker holds is recorded instead as one *range* per read: the
entries after ``start`` (the group's cursor before the read) up to ``end`` (its
cursor after), with the worker's lease token as owner. The record is written by
two small scripts around the read, in one ``MULTI``: the read and its record land
together or not at all, in Redis and in its AOF.

A range lives until its rows are in ClickHouse (``finish``). Entries never move
inside a stream and the stream is trimmed only below the oldest range's start,
so ``XRANGE (start end]`` gives a range's entries back, byte for byte, to the
worker that resumes it after a crash (``fetch``). A range whose owner's lease is
gone (its process died, or stalled past the lease) is taken over by another
worker (``take``): a compare-and-set on the owner, so exactly one succeeds.

Every key of a stream's ranges carries the stream's Redis Cluster hash tag, so a
read and its record stay in one slot.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tracker.core import keys

# Lua helpers shared by the scripts: a stream's groups, server time, id order.
_LIB = """
local function groups_of(stream)
  local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', stream)
  if not ok then return nil end
  local out = {}
  for _, g in ipairs(groups) do
    local f = {}
    for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
    table.insert(out, f)
  end
  return out
end
local function group_info(stream, group)
  for _, f in ipairs(groups_of(stream) or {}) do
    if f['name'] == group then return f end
  end
  return nil
end
local function now_ms()
  local t = redis.call('TIME')
  return t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
end
local function id_lt(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as < bs)
end
"""

# Before the read: remember the group's cursor (and its entries-read counter).
# KEYS: stream, scratch. ARGV: group.
MARK = _LIB + """
local g = group_info(KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
if g then
  redis.call('HSET', KEYS[2], 'c', g['last-delivered-id'])
  if type(g['entries-read']) == 'number' then redis.call('HSET', KEYS[2], 'n', g['entries-read']) end
end
return 1
"""

# After the read: record (cursor before, cursor after] as a range of this owner.
# KEYS: stream, scratch, ranges set. ARGV: group, consumer, owner, range key prefix.
# Returns {cursor, start, first, n}: start and first are '' when nothing was read.
SEAL = _LIB + """
local before = redis.call('HGET', KEYS[2], 'c')
local n0 = redis.call('HGET', KEYS[2], 'n')
redis.call('DEL', KEYS[2])
local g = group_info(KEYS[1], ARGV[1])
if not g then return {'', '', '', -1} end
local after = g['last-delivered-id']
if not before or after == before then return {after, '', '', -1} end
local first = redis.call('XRANGE', KEYS[1], '(' .. before, '+', 'COUNT', 1)[1][1]
local n = -1
if n0 and type(g['entries-read']) == 'number' then n = g['entries-read'] - tonumber(n0) end
redis.call('HSET', ARGV[4] .. before, 'start', before, 'end', after, 'first', first, 'n', n,
  'consumer', ARGV[2], 'owner', ARGV[3], 'attempts', 0, 'touched', now_ms())
redis.call('SADD', KEYS[3], before)
return {after, before, first, n}
"""

# Compare-and-set of a range's owner; counts a delivery attempt.
# KEYS: range. ARGV: expected owner, new owner, new consumer, min idle ms.
TAKE = _LIB + """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
local now = now_ms()
local touched = redis.call('HGET', KEYS[1], 'touched') or '0'
if tonumber(now) - tonumber(touched) < tonumber(ARGV[4]) then return 0 end
redis.call('HSET', KEYS[1], 'owner', ARGV[2], 'consumer', ARGV[3], 'touched', now)
return redis.call('HINCRBY', KEYS[1], 'attempts', 1)
"""

# Mark ranges as worked on now (a batch retrying against ClickHouse is not idle).
# KEYS: ranges. ARGV: owner.
TOUCH = _LIB + """
local now = now_ms()
for _, key in ipairs(KEYS) do
  if redis.call('HGET', key, 'owner') == ARGV[1] then redis.call('HSET', key, 'touched', now) end
end
return 1
"""

# Note entries of a range that were dead-lettered, if the range is still this owner's.
# KEYS: range. ARGV: owner, skip list.
SKIP = """
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then redis.call('HSET', KEYS[1], 'skip', ARGV[2]) end
return 1
"""

# Everything an operator and the trimmer need about one stream, in one call.
# KEYS: stream, ranges set. ARGV: group, range key prefix.
# Returns {length, lag (-1 unknown), cursor, first undelivered id, held entries,
#          oldest held id, trim floor, ranges}.
STATS = _LIB + """
local len = redis.call('XLEN', KEYS[1])
local groups = groups_of(KEYS[1])
if not groups then return {len, len, '', '', 0, '', '', 0} end
local mine, floor = nil, nil
local function lower(id)
  if floor == nil or id_lt(id, floor) then floor = id end
end
local keep_all = false
for _, f in ipairs(groups) do
  if f['name'] == ARGV[1] then mine = f else
    lower(f['last-delivered-id'])
    if tonumber(f['pending']) > 0 then keep_all = true end
  end
end
if not mine then return {len, len, '', '', 0, '', '', 0} end
local cursor = mine['last-delivered-id']
lower(cursor)
local lag = mine['lag']
if type(lag) ~= 'number' then lag = -1 end
local nxt = redis.call('XRANGE', KEYS[1], '(' .. cursor, '+', 'COUNT', 1)
local undelivered = ''
if #nxt > 0 then undelivered = nxt[1][1] end
local held, oldest = 0, nil
local starts = redis.call('SMEMBERS', KEYS[2])
for _, s in ipairs(starts) do
  local r = redis.call('HMGET', ARGV[2] .. s, 'first', 'n')
  if r[1] then
    lower(s)
    if oldest == nil or id_lt(r[1], oldest) then oldest = r[1] end
    local n = tonumber(r[2]) or -1
    if n >= 0 then held = held + n end
  end
end
if keep_all then floor = '0-0' end
return {len, lag, cursor, undelivered, held, oldest or '', floor or '', #starts}
"""


def tag(stream: str) -> str:
    """The Redis Cluster hash tag of a stream: its own ``{...}``, else the whole name."""
    _, brace, rest = stream.partition("{")
    if brace and "}" in rest:
        return "{" + rest.split("}", 1)[0] + "}"
    return "{" + stream + "}"


def range_prefix(stream: str) -> str:
    return keys.ingest_range(tag(stream), "")


def range_key(stream: str, start: str) -> str:
    return keys.ingest_range(tag(stream), start)


def ranges_key(stream: str) -> str:
    return keys.ingest_ranges(tag(stream))


def scratch_key(stream: str, consumer: str) -> str:
    return keys.ingest_reading(tag(stream), consumer)


@dataclass
class Range:
    """Entries (start, end] of a stream held by the worker whose lease token is ``owner``."""

    stream: str
    start: str
    end: str
    first: str
    n: int
    consumer: str
    owner: str
    attempts: int = 0
    skip: frozenset[str] = field(default_factory=frozenset)

    @property
    def key(self) -> str:
        return range_key(self.stream, self.start)

    def holds(self, entry_id: str) -> bool:
        return id_key(self.start) < id_key(entry_id) <= id_key(self.end)


def id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def read_commands(stream: str, group: str, consumer: str, owner: str, count: int) -> list[tuple[Any, ...]]:
    """The commands of one read, to be sent inside ``MULTI``/``EXEC`` (see the module doc)."""
    scratch = scratch_key(stream, consumer)
    return [
        ("EVAL", MARK, 2, stream, scratch, group),
        ("XREADGROUP", "GROUP", group, consumer, "COUNT", count, "NOACK", "STREAMS", stream, ">"),
        ("EVAL", SEAL, 3, stream, scratch, ranges_key(stream), group, consumer, owner, range_prefix(stream)),
    ]


def sealed(stream: str, consumer: str, owner: str, reply: Sequence[Any]) -> tuple[str, Range | None, list[Any]]:
    """The EXEC reply of ``read_commands`` -> (group cursor, the range read or None, its raw entries)."""
    _, read, seal = reply
    cursor, start, first, n = (text(seal[0]), text(seal[1]), text(seal[2]), int(seal[3]))
    entries = entries_of(read)
    if not start:
        return cursor, None, entries
    rng = Range(stream, start, cursor, first, n if n >= 0 else len(entries), consumer, owner)
    return cursor, rng, entries


def entries_of(read: Any) -> list[Any]:
    """The raw entries of an XREADGROUP reply (RESP2 ``[[stream, entries]]`` or a RESP3 map)."""
    if isinstance(read, dict):
        read = list(read.items())
    entries: list[Any] = []
    for _, got in read or []:
        entries.extend(got)
    return entries


def parse(stream: str, raw: dict[Any, Any]) -> Range | None:
    if not raw:
        return None
    f = {text(k): text(v) for k, v in raw.items()}
    skip = frozenset(x for x in f.get("skip", "").split(",") if x)
    return Range(
        stream, f["start"], f["end"], f["first"], int(f.get("n", -1)), f.get("consumer", ""), f.get("owner", ""),
        int(f.get("attempts", 0)), skip,
    )


def ranges(r: Any, stream: str) -> list[Range]:
    """Every range of a stream, oldest first."""
    starts = sorted((text(s) for s in r.smembers(ranges_key(stream))), key=id_key)
    if not starts:
        return []
    with r.pipeline(transaction=False) as p:
        for start in starts:
            p.hgetall(range_key(stream, start))
        found = p.execute()
    out = [parse(stream, raw) for raw in found]
    stale = [s for s, rng in zip(starts, out, strict=True) if rng is None]
    if stale:
        r.srem(ranges_key(stream), *stale)  # a finish that crashed between its two steps
    return [rng for rng in out if rng is not None]


def take(r: Any, rng: Range, owner: str, consumer: str, min_idle_ms: int) -> bool:
    """Become the owner of a range whose owner is gone; counts a delivery attempt."""
    attempts = r.eval(TAKE, 1, rng.key, rng.owner, owner, consumer, min_idle_ms)
    if not attempts:
        return False
    rng.owner, rng.consumer, rng.attempts = owner, consumer, int(attempts)
    return True


def touch(r: Any, held: Iterable[Range], owner: str) -> None:
    names = [rng.key for rng in held]
    if names:
        r.eval(TOUCH, len(names), *names, owner)


def fetch(r: Any, rng: Range) -> list[Any]:
    """A range's entries, read back from the stream; ``r`` returns XRANGE raw (``[id, [field, value, ...]]``)."""
    out: list[Any] = []
    lower = "(" + rng.start
    while True:
        got = r.execute_command("XRANGE", rng.stream, lower, rng.end, "COUNT", 10_000)
        if not got:
            return out
        out.extend(got)
        lower = "(" + text(got[-1][0])


def count_attempt(r: Any, held: Sequence[Range]) -> int:
    """Count one more failed delivery of non-empty ``held``; returns the highest count among them."""
    with r.pipeline(transaction=True) as p:
        for rng in held:
            p.hincrby(rng.key, "attempts", 1)
        return max(int(x) for x in p.execute())


def finish(p: Any, held: Iterable[Range]) -> None:
    """Queue the commands that drop ranges whose rows are in ClickHouse (in a MULTI pipeline)."""
    by_stream: dict[str, list[str]] = {}
    for rng in held:
        p.delete(rng.key)
        by_stream.setdefault(rng.stream, []).append(rng.start)
    for stream, starts in by_stream.items():
        p.srem(ranges_key(stream), *starts)


def record(p: Any, rng: Range, touched_ms: int | None = None) -> None:
    """Queue the commands that write a range record (splitting, skips)."""
    mapping: dict[str, Any] = {
        "start": rng.start, "end": rng.end, "first": rng.first, "n": rng.n, "consumer": rng.consumer,
        "owner": rng.owner, "attempts": rng.attempts, "skip": ",".join(sorted(rng.skip, key=id_key)),
    }
    if touched_ms is not None:
        mapping["touched"] = touched_ms
    p.hset(rng.key, mapping=mapping)
    p.sadd(ranges_key(rng.stream), rng.start)


def queue_stats(p: Any, stream: str, group: str) -> Any:
    """Ask for a stream's ``STATS`` (on a client or a pipeline); ``summarize`` reads the answer."""
    # (EVAL as a plain command: a Redis Cluster pipeline has no eval method, and all keys share the tag.)
    return p.execute_command("EVAL", STATS, 2, stream, ranges_key(stream), group, range_prefix(stream))


def stats(r: Any, stream: str, group: str) -> dict[str, Any]:
    return summarize(queue_stats(r, stream, group))


async def stats_async(r: Any, stream: str, group: str) -> dict[str, Any]:
    return summarize(await queue_stats(r, stream, group))


def summarize(raw: Sequence[Any]) -> dict[str, Any]:
    length, lag, cursor, undelivered, held, oldest, floor, n_ranges = raw
    return {
        "length": int(length),
        "lag": int(lag) if int(lag) >= 0 else None,
        "cursor": text(cursor) or None,
        "first_undelivered": text(undelivered) or None,
        "held": int(held),
        "oldest_held": text(oldest) or None,
        "floor": text(floor) or None,
        "ranges": int(n_ranges),
    }


def note_skip(p: Any, rng: Range) -> None:
    """Queue the command that records a range's dead-lettered entries (``rng.skip``)."""
    p.execute_command("EVAL", SKIP, 1, rng.key, rng.owner, ",".join(sorted(rng.skip, key=id_key)))


def gauges(st: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    """What operators watch, from ``stats``: length, lag, held entries and their age, the trim floor."""
    now = time.time() if now is None else now

    def age(entry_id: str | None) -> float:
        return round(max(0.0, now - id_key(entry_id)[0] / 1000), 3) if entry_id else 0.0

    floor = st["floor"]
    return {
        "length": st["length"],
        # Redis answers no lag when it cannot tell (entries deleted mid-range): count the whole stream.
        "lag": st["length"] if st["lag"] is None else st["lag"],
        "pending": st["held"],
        "oldest_pending_seconds": age(st["oldest_held"]),
        "oldest_undelivered_seconds": age(st["first_undelivered"]),
        "trim_below": floor if floor not in (None, "0-0") else None,
    }
