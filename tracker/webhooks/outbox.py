"""The delivery queues in Redis: one ordered queue per (endpoint, object), a schedule, a log.

- ``keys.webhook_delivery(id)``: a hash per delivery: the event body (the exact bytes every
  attempt signs and sends), status (``pending``, ``succeeded``, ``failed``, ``cancelled``),
  attempts, last error, last response code, times.
- ``keys.webhook_queue(endpoint, object)``: the delivery ids of one object (a conversion, a
  payout) for one endpoint, oldest first. Only the head is ever sent, so a later event of an
  order waits until the earlier one is delivered (or given up).
- ``keys.WEBHOOK_DUE``: ``endpoint|object`` -> when that queue's head is due. A sender
  claims due queues by pushing their time a lease ahead, so a sender that dies mid-attempt
  leaves them to be claimed again when the lease runs out (at least once).
- ``keys.webhook_log(endpoint)``: delivery ids by creation time, newest last (the log).

Every change is one Lua script, so a queue, its schedule and its deliveries never
disagree, whatever crashes. Delivery ids are derived from (endpoint, event), and
``ENQUEUE`` skips a delivery that exists: the same event offered twice (a stream entry
read again after a crash) is queued once.
"""

from __future__ import annotations

import hashlib
from typing import Any

from tracker.core import keys
from tracker.webhooks.events import Event

# Finished deliveries stay in the log this long; the log keeps at most LOG_CAP per endpoint.
KEEP_SECONDS = 30 * 86_400
LOG_CAP = 10_000



def lead() -> tuple[int, str, str]:
    """What every outbox script call starts with: one key (the schedule, so a Redis Cluster runs the
    script on the node of the webhook slot, ``keys.webhook_prefix``) and the prefix its keys are built from."""
    return 1, keys.webhook_due(), keys.webhook_prefix()


_LIB = """
local P = ARGV[1]
local function qkey(ep, obj) return P .. 'wh:q:' .. ep .. ':' .. obj end
local function dkey(id) return P .. 'wh:d:' .. id end
local function due() return P .. 'wh:due' end
-- After the head of a queue is done: the next one is due now, or the queue is gone.
local function advance(ep, obj, now)
  local q = qkey(ep, obj)
  if redis.call('LLEN', q) > 0 then
    redis.call('ZADD', due(), now, ep .. '|' .. obj)
  else
    redis.call('ZREM', due(), ep .. '|' .. obj)
    redis.call('SREM', P .. 'wh:queues:' .. ep, obj)
  end
end
"""

# ARGV: prefix, now ms, event id, type, object id, body, brand id, log cap, then (endpoint, delivery id) pairs.
ENQUEUE = _LIB + """
local now, obj = tonumber(ARGV[2]), ARGV[5]
local added = 0
for i = 9, #ARGV, 2 do
  local ep, id = ARGV[i], ARGV[i + 1]
  if redis.call('EXISTS', dkey(id)) == 0 then
    redis.call('HSET', dkey(id), 'id', id, 'endpoint_id', ep, 'brand_id', ARGV[7], 'event_id', ARGV[3],
      'type', ARGV[4], 'object_id', obj, 'body', ARGV[6], 'status', 'pending', 'attempts', 0,
      'created_ms', now, 'next_ms', now)
    redis.call('RPUSH', qkey(ep, obj), id)
    redis.call('SADD', P .. 'wh:queues:' .. ep, obj)
    redis.call('ZADD', due(), 'NX', now, ep .. '|' .. obj)
    local log = P .. 'wh:log:' .. ep
    redis.call('ZADD', log, now, id)
    local extra = redis.call('ZCARD', log) - tonumber(ARGV[8])
    if extra > 0 then redis.call('ZREMRANGEBYRANK', log, 0, extra - 1) end
    added = added + 1
  end
end
return added
"""

# ARGV: prefix, now ms, lease ms, count. The due queues, their time pushed a lease ahead.
CLAIM = _LIB + """
local now = tonumber(ARGV[2])
local members = redis.call('ZRANGEBYSCORE', due(), '-inf', now, 'LIMIT', 0, tonumber(ARGV[4]))
for _, m in ipairs(members) do redis.call('ZADD', due(), now + tonumber(ARGV[3]), m) end
return members
"""

# ARGV: prefix, endpoint, object. The head's id and hash, or {} (an empty queue leaves the schedule).
HEAD = _LIB + """
local id = redis.call('LINDEX', qkey(ARGV[2], ARGV[3]), 0)
if not id then
  advance(ARGV[2], ARGV[3], 0)
  return {}
end
return {id, redis.call('HGETALL', dkey(id))}
"""

# ARGV: prefix, endpoint, object, delivery id, now, outcome (ok|retry|failed), next ms, code, error, keep s.
# A success also notes the endpoint's health (last success, no longer failing).
SETTLE = _LIB + """
local ep, obj, id, now = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
if redis.call('LINDEX', qkey(ep, obj), 0) ~= id then return 0 end
local d = dkey(id)
redis.call('HINCRBY', d, 'attempts', 1)
redis.call('HSET', d, 'last_ms', now, 'code', ARGV[8], 'error', ARGV[9])
if redis.call('HGET', d, 'first_ms') == false then redis.call('HSET', d, 'first_ms', now) end
if ARGV[6] == 'retry' then
  redis.call('HSET', d, 'next_ms', ARGV[7])
  redis.call('ZADD', due(), tonumber(ARGV[7]), ep .. '|' .. obj)
  return 1
end
redis.call('HSET', d, 'status', ARGV[6] == 'ok' and 'succeeded' or 'failed', 'next_ms', '')
if ARGV[6] == 'ok' then
  redis.call('HSET', d, 'done_ms', now)
  redis.call('HSET', P .. 'wh:health:' .. ep, 'last_success_ms', now)
  redis.call('HDEL', P .. 'wh:health:' .. ep, 'failing_since_ms')
end
redis.call('EXPIRE', d, tonumber(ARGV[10]))
redis.call('LPOP', qkey(ep, obj))
advance(ep, obj, now)
return 1
"""

# ARGV: prefix, endpoint, delivery id, now. 0: unknown; 1: pending, made due now; 2: finished, queued again.
RETRY = _LIB + """
local ep, id, now = ARGV[2], ARGV[3], tonumber(ARGV[4])
local d = dkey(id)
if redis.call('HGET', d, 'endpoint_id') ~= ep then return 0 end
local obj = redis.call('HGET', d, 'object_id')
if redis.call('HGET', d, 'status') == 'pending' then
  redis.call('HSET', d, 'next_ms', now)
  redis.call('ZADD', due(), now, ep .. '|' .. obj)
  return 1
end
redis.call('PERSIST', d)
redis.call('HSET', d, 'status', 'pending', 'next_ms', now)
redis.call('HDEL', d, 'first_ms', 'done_ms')
redis.call('RPUSH', qkey(ep, obj), id)
redis.call('SADD', P .. 'wh:queues:' .. ep, obj)
redis.call('ZADD', due(), 'NX', now, ep .. '|' .. obj)
return 2
"""

# ARGV: prefix, endpoint, now, mode (park|resume|cancel). Park: off the schedule (endpoint disabled);
# resume: every queue due now (enabled again); cancel: queues dropped, deliveries cancelled (deleted).
ENDPOINT = _LIB + """
local ep, now, mode = ARGV[2], tonumber(ARGV[3]), ARGV[4]
local set = P .. 'wh:queues:' .. ep
for _, obj in ipairs(redis.call('SMEMBERS', set)) do
  if mode == 'resume' then
    redis.call('ZADD', due(), now, ep .. '|' .. obj)
  else
    redis.call('ZREM', due(), ep .. '|' .. obj)
  end
  if mode == 'cancel' then
    for _, id in ipairs(redis.call('LRANGE', qkey(ep, obj), 0, -1)) do
      redis.call('HSET', dkey(id), 'status', 'cancelled', 'next_ms', '')
      redis.call('EXPIRE', dkey(id), tonumber(ARGV[5]))
    end
    redis.call('DEL', qkey(ep, obj))
  end
end
if mode == 'cancel' then redis.call('DEL', set) end
return 1
"""


def delivery_id(endpoint_id: str, event_id: str) -> str:
    return "dlv_" + hashlib.sha256(f"{endpoint_id}:{event_id}".encode()).hexdigest()[:24]


def member(endpoint_id: str, object_id: str) -> str:
    return f"{endpoint_id}|{object_id}"


def split(member_: bytes | str) -> tuple[str, str]:
    text = member_.decode() if isinstance(member_, bytes) else member_
    endpoint_id, _, object_id = text.partition("|")
    return endpoint_id, object_id


def enqueue_args(event: Event, endpoint_ids: list[str], now_ms: int) -> list[Any]:
    args: list[Any] = [
        keys.webhook_prefix(), now_ms, event.id, event.type, event.object_id, event.body, event.brand_id, LOG_CAP
    ]
    for ep in endpoint_ids:
        args += [ep, delivery_id(ep, event.id)]
    return args


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def decode(raw: list[Any] | dict[Any, Any]) -> dict[str, Any]:
    """A delivery hash (HGETALL as a flat list or a dict) as text fields, the body as bytes."""
    pairs = raw.items() if isinstance(raw, dict) else zip(raw[::2], raw[1::2], strict=True)
    out: dict[str, Any] = {}
    for k, v in pairs:
        name = text(k)
        out[name] = v if name == "body" else text(v)
    return out
