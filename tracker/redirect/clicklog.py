"""Durable click logging: group commit into the Redis stream, a local spool when Redis is down.

Group commit: a request appends its encoded click to the current batch and
awaits the batch's future. One flusher task sends the whole batch as ``XADD``s
in a single non-transactional pipeline and resolves the future after Redis
answered, so every click whose 302 was sent is in the stream, and a thousand
concurrent clicks cost one round trip. Clicks arriving while a pipeline is in
flight form the next batch. No ``MAXLEN``: ingest trims what it has stored.

On a Redis Cluster (``routes``) each batch is one such pipeline to one primary, the
primaries taking batches in turn (their stream shards hold the clicks). With
``TRACKER_REDIS_WAIT_REPLICAS=n`` each pipeline ends with ``WAIT n ms``: the batch's 302s go
out once n replicas hold its clicks, and a batch they did not acknowledge in time is
spooled as well (replayed with ``r=1``, so the copy that did reach the primary is not
counted twice), so a failover that promotes a replica loses no acknowledged click.

Redis unreachable (connection error, timeout, or any error answer; on a cluster,
any primary): the batch (the part that failed) goes to the spool, an append-only JSON-lines file of this process under
``settings.spool_path`` (written and fsync'd before the requests are answered),
and so do later batches, without waiting on Redis again. A recovery task pings
Redis (re-reading a cluster's slot map first, as a failover moves slots); when every
primary answers, the current spool file is closed and every closed file
is replayed into the stream with ``r=1`` (the original XADD of a failed batch
may have landed; ingest de-duplicates replayed clicks by click id). Progress is
kept in a ``.done`` sidecar, so a crash mid-replay re-sends part of a file, never
skips one. Files are locked with ``flock``: a live process's current file is
never replayed by another, two replayers never send one file.

The spool is capped (``TRACKER_SPOOL_MAX_MB``, all files of the directory together): past
the cap a batch is not written, its clicks are lost (counted in
``tracker_clicks_dropped_total``, logged) and its followers are still redirected. The
cap is the difference between a long outage losing its latest clicks and one that fills
the disk the host (and Redis, sharing it in embedded mode) needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from pathlib import Path

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from tracker.core import keys
from tracker.core.events import ClickEvent
from tracker.ops.metrics import (
    CLICKS_DROPPED,
    CLICKS_ENQUEUED,
    CLICKS_REPLAYED,
    CLICKS_SPOOLED,
    GROUP_COMMIT_SIZE,
)
from tracker.redirect import routes
from tracker.redirect.routes import Route
from tracker.redirect.spool import DONE, Spool, fsync_dir, lines_from, read_offset, write_offset
from tracker.settings import Settings
from tracker.storage import redis_client

log = logging.getLogger("tracker.redirect.clicklog")

REPLAY_CHUNK = 1000
# A batch that Redis has not answered within this is treated as Redis being down (spooled).
IO_TIMEOUT_SECONDS = 1.0
DROPPED_LOG_SECONDS = 10.0
# RESP tail of a replayed entry: the "e" value's CRLF, then the field r=1.
_REPLAY_TAIL = b"\r\n$1\r\nr\r\n$1\r\n1\r\n"


class ClickLog:
    """The click writer of one process (a lifespan component named ``clicklog``)."""

    def __init__(self, settings: Settings, redis: aioredis.Redis | None = None) -> None:
        self._own_redis = redis is None
        # No retries: a retried pipeline could add clicks twice without the replay mark;
        # a failed batch goes to the spool instead. Short timeouts: followers do not wait.
        self._io_timeout = IO_TIMEOUT_SECONDS + (settings.redis_wait_ms / 1000 if settings.redis_wait_replicas else 0)
        self._redis = redis or redis_client.connect_async(
            settings, socket_connect_timeout=0.5, socket_timeout=IO_TIMEOUT_SECONDS, retry=Retry(NoBackoff(), 0)
        )
        self._streams = keys.click_streams(settings.stream_shards)
        self._routes: list[Route] | None = None  # built on the first write (a cluster's slot map)
        self._rr = 0
        self.last_error: BaseException | None = None
        # TRACKER_REDIS_WAIT_REPLICAS: each write ends with WAIT, its 302s wait for its answer.
        self._wait_replicas = settings.redis_wait_replicas
        self._wait = (
            b"*3\r\n$4\r\nWAIT\r\n$%d\r\n%d\r\n$%d\r\n%d\r\n" % (
                len(str(settings.redis_wait_replicas)), settings.redis_wait_replicas,
                len(str(settings.redis_wait_ms)), settings.redis_wait_ms,
            ) if settings.redis_wait_replicas else b""
        )
        self.spool = Spool(settings.spool_path, settings.spool_max_bytes)
        self._dropped_logged = 0.0
        self._batch: list[bytes] = []
        self._batch_done: asyncio.Future[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._flusher: asyncio.Task[None] | None = None
        self._recovery: asyncio.Task[None] | None = None
        self.redis_up = True

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self._stopping = False
        self._flusher = asyncio.create_task(self._flush_loop(), name="clicklog-flusher")
        if self.spool.closed_files():
            self._start_recovery()  # left over by an earlier process (or a crash)

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._flusher is not None:
            await self._flusher  # drains the last batch
            self._flusher = None
        if self._recovery is not None:
            self._recovery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._recovery
            self._recovery = None
        async with self.spool.lock:
            self.spool.close()
        for route in self._routes or []:
            await route.close()
        self._routes = None
        if self._own_redis:
            await self._redis.aclose()

    # --- hot path ----------------------------------------------------------------------------

    async def log(self, event: ClickEvent) -> None:
        """Return once the click is in Redis (or, Redis down, fsync'd in the spool)."""
        await self.log_encoded(event.encode())

    async def log_encoded(self, data: bytes) -> None:
        done = self._batch_done
        if done is None:
            done = self._batch_done = asyncio.get_running_loop().create_future()
            self._wake.set()
        self._batch.append(data)
        await done

    async def _flush_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, done = self._batch, self._batch_done
            self._batch, self._batch_done = [], None
            if batch and done is not None:
                try:
                    await self._write(batch)
                except Exception:
                    log.exception("writing %d clicks failed", len(batch))
                finally:
                    done.set_result(None)
            if self._stopping and not self._batch:
                return

    async def _write(self, batch: list[bytes]) -> None:
        if self.redis_up:
            try:
                await self._xadd(batch, replayed=False)
            except (RedisError, OSError) as exc:  # (TimeoutError is an OSError)
                self.last_error = exc
            else:
                CLICKS_ENQUEUED.inc(len(batch))
                GROUP_COMMIT_SIZE.observe(len(batch))
                return
            # One primary failing is enough: every batch is spooled until all answer again
            # (a failover leaves the whole cluster refusing writes for a moment anyway).
            log.warning("Redis is unreachable (%s); spooling clicks locally", self.last_error)
            self._mark_down()
        # The follower is redirected whatever happens here (the contract puts the redirect
        # first): a spool that fails or is full is the one case where clicks are lost, so it
        # is loud (a log line at least every DROPPED_LOG_SECONDS, and tracker_clicks_dropped_total).
        try:
            async with self.spool.lock:
                spooled = await asyncio.to_thread(self.spool.append, batch)
        except OSError as exc:
            CLICKS_DROPPED.inc(len(batch))
            log.error("LOST %d clicks: Redis is down and the spool %s failed: %s", len(batch), self.spool.dir, exc)
            return
        if not spooled:
            CLICKS_DROPPED.inc(len(batch))
            now = time.monotonic()
            if now - self._dropped_logged >= DROPPED_LOG_SECONDS:
                self._dropped_logged = now
                log.error(
                    "LOST %d clicks: Redis is down and the spool %s is full (TRACKER_SPOOL_MAX_MB=%d); clicks are "
                    "not recorded until Redis is back (followers are still redirected; see "
                    "tracker_clicks_dropped_total)", len(batch), self.spool.dir, self.spool.max_bytes // (1024 * 1024),
                )
            return
        CLICKS_SPOOLED.inc(len(batch))

    def _pack(self, route: Route, batch: list[bytes], replayed: bool) -> bytes:
        """The RESP of one ``XADD`` per click, as one buffer (plus ``WAIT`` when replicas must hold it).

        The commands are packed here rather than by redis-py's Pipeline: same wire bytes,
        half the client CPU per click, which is most of what a click costs us.
        """
        heads = route.replay_heads if replayed else route.heads
        tail = _REPLAY_TAIL if replayed else b"\r\n"
        n = len(heads)
        if n == 1:
            head = heads[0]
            parts = [b"%s$%d\r\n%s%s" % (head, len(data), data, tail) for data in batch]
        else:
            parts = []
            for data in batch:
                route.rr += 1
                parts.append(b"%s$%d\r\n%s%s" % (heads[route.rr % n], len(data), data, tail))
        if self._wait:
            parts.append(self._wait)
        return b"".join(parts)

    def _route(self) -> Route:
        """The route of the next batch: the primaries in turn, a whole batch each (one route: that one).

        A batch dealt over every primary cost each primary a round trip per batch: on three
        loopback primaries that doubled Redis's CPU per click (10 µs against 5 µs) and took
        0.87 x single Redis's redirects/s. Whole batches in turn cost what one Redis does and
        spread the clicks as evenly over time; ingest reads every shard either way.
        """
        rts = self._routes or []
        if len(rts) == 1:
            return rts[0]
        self._rr += 1
        return rts[self._rr % len(rts)]

    @property
    def _conn(self) -> AbstractConnection | None:
        """The flusher's held connection (of the only route, on a single Redis)."""
        return self._routes[0].conn if self._routes else None

    async def _xadd(self, batch: list[bytes], replayed: bool) -> None:
        """XADD every click of the batch to the next primary and read the replies; raises what Redis
        or the connection raised. Live batches go over the route's held connection; replays
        (another task, running at the same time) take connections from the pool.
        """
        if self._routes is None:
            self._routes = await routes.build(self._redis, self._streams)
        await self._send_route(self._route(), batch, replayed)

    def _check_wait(self, got: object) -> None:
        if int(got) < self._wait_replicas:  # type: ignore[call-overload]
            raise RedisError(f"WAIT: {got!r} of {self._wait_replicas} replicas acknowledged the batch in time")

    async def _send_route(self, route: Route, part: list[bytes], replayed: bool) -> None:
        payload = self._pack(route, part, replayed)
        replies = len(part) + (1 if self._wait else 0)
        if not replayed:
            conn = await route.held_connection(self._io_timeout)
            try:
                got = await routes.send(conn, payload, replies, self._io_timeout)
            except BaseException:
                # Replies may be left unread on it: never write to this connection again.
                await route.drop_connection()
                raise
        else:
            pool = route.client.connection_pool
            pooled = await pool.get_connection()  # type: ignore[no-untyped-call]
            try:
                got = await routes.send(pooled, payload, replies, self._io_timeout)
            except BaseException:
                await pooled.disconnect()
                raise
            finally:
                await pool.release(pooled)
        if self._wait:
            self._check_wait(got[-1])

    # --- recovery ----------------------------------------------------------------------------

    def _mark_down(self) -> None:
        self.redis_up = False
        self._start_recovery()

    def _start_recovery(self) -> None:
        if self._recovery is None or self._recovery.done():
            self._recovery = asyncio.create_task(self._recover(), name="clicklog-recovery")

    async def _recover(self) -> None:
        delay = 0.1
        while True:
            await asyncio.sleep(delay)
            try:
                fresh = await self._reroute()
            except (RedisError, OSError):
                delay = min(delay * 2, 2.0)
                continue
            old, self._routes = self._routes, fresh
            for route in old or []:
                await route.close()
            self.redis_up = True
            async with self.spool.lock:
                self.spool.close()
            if await self.replay():
                async with self.spool.lock:
                    if self.redis_up and self.spool.current is None:
                        log.info("Redis is back; the spool is replayed")
                        return
            delay = 0.1

    async def _reroute(self) -> list[Route]:
        """Routes from the current slot map (a failover moved slots), every primary answering."""
        await routes.refresh(self._redis)
        fresh = await routes.build(self._redis, self._streams)
        try:
            for route in fresh:
                async with asyncio.timeout(self._io_timeout):
                    await route.client.ping()
        except BaseException:
            for route in fresh:
                await route.close()
            raise
        return fresh

    async def replay(self) -> bool:
        """Replay every closed spool file; False when Redis failed again (try later)."""
        for path in self.spool.closed_files():
            try:
                await self._replay_file(path)
            except (RedisError, OSError) as exc:
                log.warning("replaying %s stopped: %s", path.name, exc)
                self.redis_up = False
                return False
        return True

    async def _replay_chunk(self, chunk: list[bytes]) -> None:
        await self._xadd(chunk, replayed=True)

    async def _replay_file(self, path: Path) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return  # replayed by another process meanwhile
        with os.fdopen(fd, "rb") as fh:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # current file of a live process, or being replayed by another one
            try:
                if os.stat(path).st_ino != os.fstat(fd).st_ino:
                    return
            except FileNotFoundError:
                return  # another replayer finished it between our open and our lock
            done_path = path.with_suffix(DONE)
            offset = read_offset(done_path)
            chunk: list[bytes] = []
            sent = 0
            for line, end in lines_from(fh, offset):
                try:
                    ClickEvent.decode(line)
                except ValueError as exc:
                    log.error("skipping a malformed spooled click in %s: %s", path.name, exc)
                else:
                    chunk.append(line)
                if len(chunk) >= REPLAY_CHUNK:
                    await self._replay_chunk(chunk)
                    sent += len(chunk)
                    CLICKS_REPLAYED.inc(len(chunk))
                    chunk = []
                    write_offset(done_path, end)
            if chunk:
                await self._replay_chunk(chunk)
                sent += len(chunk)
                CLICKS_REPLAYED.inc(len(chunk))
            path.unlink()
            with contextlib.suppress(FileNotFoundError):
                done_path.unlink()
            fsync_dir(path.parent)
            self.spool.size()
            log.info("replayed %d spooled clicks from %s", sent, path.name)
