"""The sender: events from the streams into the queues, queues to the receivers, signed.

Two loops share one asyncio event loop (a thread of ``tracker serve`` in embedded mode,
the ``tracker webhooks`` process in production; ``tracker.webhooks.component``):

- fan-out reads the conversion stream and the webhook outbox through the consumer group
  ``webhooks`` (``XREADGROUP``; its own unacknowledged entries first after a restart,
  other consumers' after 60 s idle), queues one delivery per subscribed, enabled endpoint
  (``outbox.ENQUEUE``, idempotent) and only then acknowledges the entry. The conversion
  stream keeps every entry this group has not read (ingest trims below it).
- dispatch claims due queues, sends each head with the Standard Webhooks headers and
  settles it: 2xx delivered; anything else (3xx too: redirects are not followed) retried
  after ``TRACKER_WEBHOOKS_RETRY_SECONDS`` (jittered; ``Retry-After`` honoured on 429 and
  503) until the delivery has failed for ``TRACKER_WEBHOOKS_GIVE_UP_SECONDS``. An endpoint
  whose deliveries all failed that long, or that answered 410 Gone, is disabled with the
  reason, which ``GET /api/v1/webhooks`` shows; its queues wait until it is enabled again.

The HTTP client is httpx's async one: a slow receiver costs a waiting coroutine, never a
thread, and never touches the redirect's event loop.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import httpx
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from tracker.core import keys
from tracker.core.errors import Conflict, NotFound
from tracker.registry.audit import SYSTEM, AuditLog
from tracker.settings import Settings
from tracker.storage import redis_client
from tracker.webhooks import events, guard, outbox
from tracker.webhooks.endpoints import Endpoints

# (brand id, conversion id) -> whether its commission is in a payout marked paid.
PaidLookup = Callable[[str, str], Awaitable[bool]]

log = logging.getLogger("tracker.webhooks")



def streams() -> list[str]:
    """The streams the sender reads: every conversion stream of the key layout, and its outbox."""
    return [*keys.conversion_streams(), keys.webhook_stream()]


READ_COUNT = 200
CLAIM_IDLE_MS = 60_000
CONCURRENCY = 64
POLL_SECONDS = 0.25
MAINTAIN_SECONDS = 30.0  # reclaiming stuck deliveries and the maintenance step, at start and then this often
_ENDPOINTS_SECONDS = 1.0
_ERROR_CHARS = 300


def _duration(ms: int) -> str:
    seconds = ms / 1000
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def signature(secret: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256(secret, f"{id}.{timestamp}.{body}")>`` (Standard Webhooks)."""
    mac = hmac.new(secret, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode("ascii")


async def ensure_groups(r: aioredis.Redis) -> None:
    """The consumer group on every stream events come from (new events only; idempotent)."""
    for stream in streams():
        try:
            await r.xgroup_create(stream, keys.WEBHOOK_GROUP, id="$", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise


class Sender:
    def __init__(self, settings: Settings, redis: aioredis.Redis, endpoints: Endpoints, audit: AuditLog,
                 consumer: str, *, client: httpx.AsyncClient | None = None,
                 resolve: guard.Resolver = guard.system_resolver, paid: PaidLookup | None = None,
                 maintenance: Callable[[], Awaitable[object]] | None = None) -> None:
        self.settings = settings
        self.paid = paid
        self.maintenance = maintenance
        self.r = redis
        self.endpoints = endpoints
        self.audit = audit
        self.consumer = consumer
        self.resolve = resolve
        self.client = client or httpx.AsyncClient(
            timeout=settings.webhooks_timeout_seconds, follow_redirects=False, trust_env=False,
            limits=httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY),
        )
        # A claim outlives the attempt it covers: the request's own timeout, once more for the
        # bookkeeping around it (DNS, signing, the result script), and 2 s. A sender that dies
        # mid-attempt leaves its queues to be claimed again when this runs out.
        self.lease_ms = int((2 * settings.webhooks_timeout_seconds + 2) * 1000)
        self.wake = asyncio.Event()
        self._brands: dict[str, tuple[float, list[dict[str, Any]]]] = {}
        self._records: dict[str, tuple[float, dict[str, Any] | None]] = {}
        self._inflight: set[asyncio.Task[None]] = set()
        self.delivered = 0

    # ----------------------------------------------------------------------------- fan-out

    async def _brand_endpoints(self, brand_id: str) -> list[dict[str, Any]]:
        now = time.monotonic()
        hit = self._brands.get(brand_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        found = await self.endpoints.all(brand_id)
        self._brands[brand_id] = (now + _ENDPOINTS_SECONDS, found)
        return found

    async def _is_paid(self, raw: bytes) -> bool:
        """Whether a conversion version's commission is in a paid payout (only a later version of an
        approved conversion can be: a refund after payment, whose commission status stays ``paid``)."""
        if self.paid is None:
            return False
        row = json.loads(raw)
        if int(row["version"]) == 1 or not int(row.get("attributed") or 0) or row["status"] == "pending":
            return False
        return await self.paid(str(row["brand_id"]), str(row["conversion_id"]))

    async def _offer(self, stream: str, fields: dict[bytes, bytes]) -> None:
        if keys.is_conversion_stream(stream):
            event = events.from_conversion(fields[b"e"], await self._is_paid(fields[b"e"]))
        else:
            event = events.Event.from_fields(fields)
        targets = [e["id"] for e in await self._brand_endpoints(event.brand_id)
                   if e["enabled"] and event.type in e["events"]]
        if targets:
            now = int(time.time() * 1000)
            await self.r.eval(outbox.ENQUEUE, 1, keys.webhook_due(), *outbox.enqueue_args(event, targets, now))
            self.wake.set()

    async def _take(self, stream: str, entries: Iterable[tuple[Any, dict[bytes, bytes]]]) -> int:
        done: list[Any] = []
        for entry_id, fields in entries:
            if fields:  # a claimed entry that was trimmed meanwhile comes back empty
                try:
                    await self._offer(stream, fields)
                except (KeyError, ValueError, TypeError) as exc:
                    log.error("webhook event %s of %s is malformed and skipped: %s", entry_id, stream, exc)
                    await self.r.xadd(keys.DEAD_LETTER_STREAM, {"stream": stream, "id": entry_id,
                                                                 "reason": f"webhooks: {exc}"[:500]})
            done.append(entry_id)
        if done:
            await self.r.xack(stream, keys.WEBHOOK_GROUP, *done)
            if stream == keys.webhook_stream():  # our own outbox: nothing else reads it
                await self.r.xdel(stream, *done)
        return len(done)

    async def fan_out(self, pending: bool = False, block_ms: int | None = None) -> int:
        """One read of new entries (or of this consumer's unacknowledged ones); entries handled."""
        start = "0" if pending else ">"
        if redis_client.is_cluster(self.r):
            # One XREADGROUP cannot span slots: each stream on its own, then a short poll wait.
            n = 0
            for s in streams():
                reply: Any = await self.r.xreadgroup(keys.WEBHOOK_GROUP, self.consumer, {s: start}, count=READ_COUNT)
                for stream, entries in reply or []:
                    n += await self._take(stream.decode() if isinstance(stream, bytes) else stream, entries)
            if not n and block_ms:
                await asyncio.sleep(min(block_ms, 250) / 1000)
            return n
        reply = await self.r.xreadgroup(
            keys.WEBHOOK_GROUP, self.consumer, {s: start for s in streams()}, count=READ_COUNT, block=block_ms
        )
        n = 0
        for stream, entries in reply or []:
            n += await self._take(stream.decode() if isinstance(stream, bytes) else stream, entries)
        return n

    async def reclaim(self) -> int:
        """Entries another consumer read and never acknowledged (it died), after 60 s."""
        n = 0
        for stream in streams():
            reply: Any = await self.r.xautoclaim(stream, keys.WEBHOOK_GROUP, self.consumer, CLAIM_IDLE_MS, "0-0",
                                                 count=READ_COUNT)
            n += await self._take(stream, reply[1])
        return n

    async def catch_up(self) -> None:
        """After a restart: this consumer's own unacknowledged entries first."""
        while await self.fan_out(pending=True):
            pass

    # ---------------------------------------------------------------------------- dispatch

    async def _endpoint(self, endpoint_id: str) -> dict[str, Any] | None:
        """The endpoint's record, cached for a second (a change reaches deliveries within ~1 s)."""
        now = time.monotonic()
        hit = self._records.get(endpoint_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        record = await self.endpoints.by_id(endpoint_id)
        if len(self._records) > 10_000:
            self._records.clear()
        self._records[endpoint_id] = (now + _ENDPOINTS_SECONDS, record)
        return record

    async def dispatch(self) -> int:
        """Claim the queues that are due (as many as free slots) and start their heads."""
        free = CONCURRENCY - len(self._inflight)
        if free <= 0:
            return 0
        now = int(time.time() * 1000)
        members = await self.r.eval(outbox.CLAIM, *outbox.lead(), now, self.lease_ms, free)
        for m in members:
            task = asyncio.create_task(self.deliver(*outbox.split(m)))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
        return len(members)

    async def idle(self) -> None:
        """Wait for a wake-up, a finished delivery or the poll interval."""
        self.wake.clear()
        waiter = asyncio.create_task(self.wake.wait())
        await asyncio.wait({waiter, *self._inflight}, timeout=POLL_SECONDS, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()

    async def settle_all(self) -> None:
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)

    async def deliver(self, endpoint_id: str, object_id: str) -> None:
        try:
            await self._deliver(endpoint_id, object_id)
        except (RedisError, OSError) as exc:
            log.warning("webhook delivery for %s stopped (%s); its lease will run out and it is retried", endpoint_id,
                        exc)
        except Exception:
            log.exception("webhook delivery for %s failed unexpectedly; it is retried after its lease", endpoint_id)

    async def _deliver(self, endpoint_id: str, object_id: str) -> None:
        head = await self.r.eval(outbox.HEAD, *outbox.lead(), endpoint_id, object_id)
        if not head:
            return
        delivery_id, d = outbox.text(head[0]), outbox.decode(head[1])
        endpoint = await self._endpoint(endpoint_id)
        now = int(time.time() * 1000)
        if endpoint is None or not endpoint["enabled"]:
            mode = "cancel" if endpoint is None else "park"
            await self.r.eval(outbox.ENDPOINT, *outbox.lead(), endpoint_id, now, mode,
                              outbox.KEEP_SECONDS)
            return
        code, error, retry_after = await self._post(endpoint, d)
        now = int(time.time() * 1000)
        if 200 <= code < 300:
            await self._settle(endpoint_id, object_id, delivery_id, now, "ok", 0, code, "")
            self.delivered += 1
            return
        first = int(d.get("first_ms") or now)
        attempts = int(d.get("attempts") or 0) + 1
        give_up = now - first >= self.settings.webhooks_give_up_seconds * 1000
        delays = self.settings.webhooks_retry_seconds
        delay = delays[min(attempts, len(delays)) - 1] * random.uniform(0.9, 1.1)
        if retry_after is not None:
            delay = max(delay, min(retry_after, 3600.0))
        outcome = "failed" if give_up else "retry"
        # The endpoint's health first: whoever sees the delivery settled sees the endpoint as it now is.
        await self._failing(endpoint, now, code, error)
        await self._settle(endpoint_id, object_id, delivery_id, now, outcome, now + int(delay * 1000), code, error)

    async def _settle(self, endpoint_id: str, object_id: str, delivery_id: str, now: int, outcome: str,
                      next_ms: int, code: int, error: str) -> None:
        await self.r.eval(outbox.SETTLE, *outbox.lead(), endpoint_id, object_id, delivery_id, now,
                          outcome, next_ms, code, error[:_ERROR_CHARS], outbox.KEEP_SECONDS)

    async def _post(self, endpoint: dict[str, Any], d: dict[str, Any]) -> tuple[int, str, float | None]:
        """(response code or 0, error text, Retry-After seconds) of one attempt."""
        try:
            target = await guard.check(endpoint["url"], allow_private=self.settings.webhooks_allow_private,
                                       resolve=self.resolve)
        except guard.Refused as exc:
            return 0, f"Not sent: {exc}", None
        body: bytes = d["body"]
        stamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "user-agent": "tracker-webhooks/1",
            "host": target.host_header,
            "webhook-id": d["event_id"],
            "webhook-timestamp": str(stamp),
            "webhook-signature": signature(self.endpoints.secret(endpoint), d["event_id"], stamp, body),
        }
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        try:
            async with self.client.stream("POST", target.pinned_url, content=body, headers=headers,
                                          extensions=extensions) as r:
                text = b""
                async for chunk in r.aiter_bytes():
                    text += chunk
                    if len(text) >= _ERROR_CHARS:
                        break
                if 200 <= r.status_code < 300:
                    return r.status_code, "", None
                after = r.headers.get("retry-after", "")
                retry_after = float(after) if after.isdigit() and r.status_code in (429, 503) else None
                shown = text[:_ERROR_CHARS].decode("utf-8", "replace").strip()
                return r.status_code, f"HTTP {r.status_code}" + (f": {shown}" if shown else ""), retry_after
        except httpx.TimeoutException:
            return 0, f"No answer within {self.settings.webhooks_timeout_seconds:g} s.", None
        except httpx.HTTPError as exc:
            return 0, f"{type(exc).__name__}: {exc}"[:_ERROR_CHARS], None

    async def _failing(self, endpoint: dict[str, Any], now: int, code: int, error: str) -> None:
        health = keys.webhook_health(endpoint["id"])
        await self.r.hsetnx(health, "failing_since_ms", now)
        await self.r.hset(health, mapping={"last_error": error[:_ERROR_CHARS]})
        since = int(await self.r.hget(health, "failing_since_ms") or now)
        if code == 410:
            reason = "The receiver answered 410 Gone: it asked for no more webhooks."
        elif now - since >= self.settings.webhooks_give_up_seconds * 1000:
            reason = f"Every delivery failed for {_duration(now - since)}; the last error: {error[:200]}"
        else:
            return
        await self.disable(endpoint, reason)

    async def disable(self, endpoint: dict[str, Any], reason: str) -> None:
        try:
            before, after = await self.endpoints.change(endpoint["brand_id"], endpoint["id"], if_enabled=True,
                                                        enabled=False, disabled_reason=reason)
        except (Conflict, NotFound):
            return  # another delivery of this endpoint is disabling it right now, or it was deleted
        if not before["enabled"]:
            return  # disabled meanwhile (by another failing delivery, or through the API): keep that reason
        await self.r.eval(outbox.ENDPOINT, *outbox.lead(), endpoint["id"], int(time.time() * 1000),
                          "park", outbox.KEEP_SECONDS)
        self._brands.pop(endpoint["brand_id"], None)
        self._records.pop(endpoint["id"], None)
        public = {k: v for k, v in after.items() if k not in ("secret_nonce", "brand_id")}
        await self.audit.record(endpoint["brand_id"], SYSTEM, "webhook.disable", endpoint["id"],
                                {**public, "enabled": True, "disabled_reason": None}, public)
        log.warning("webhook endpoint %s disabled: %s", endpoint["id"], reason)

    # --------------------------------------------------------------------------------- run

    async def run(self, stop: asyncio.Event) -> None:
        """Both loops until ``stop``; deliveries in flight are finished first."""
        await ensure_groups(self.r)
        await self.catch_up()
        fan = asyncio.create_task(self._fan_out_loop(stop))
        try:
            while not stop.is_set():
                try:
                    await self.dispatch()
                except RedisError as exc:
                    log.warning("webhook dispatch cannot reach Redis: %s", exc)
                    await asyncio.sleep(1.0)
                await self.idle()
        finally:
            await fan
            await self.settle_all()
            await self.client.aclose()

    async def _maintain(self) -> None:
        """The owner's periodic step (payout events owed after a crash, ``tracker.money.payoutoutbox``)."""
        if self.maintenance is None:
            return
        try:
            await self.maintenance()
        except Exception:  # ClickHouse away for a moment: the next round tries again
            log.exception("webhook maintenance step failed")

    async def _fan_out_loop(self, stop: asyncio.Event) -> None:
        last_claim = 0.0
        while not stop.is_set():
            try:
                await self.fan_out(block_ms=500)
                if time.monotonic() - last_claim > MAINTAIN_SECONDS:
                    last_claim = time.monotonic()
                    await self.reclaim()
                    await self._maintain()
            except RedisError as exc:
                log.warning("webhook fan-out cannot reach Redis: %s", exc)
                await asyncio.sleep(1.0)
