"""Durable click logging: group commit into the Redis stream, a local spool when Redis is down.

Group commit: a request appends its encoded click to the current batch and
awaits the batch's future. One flusher task sends the whole batch as ``XADD``s
in a single non-transactional pipeline and resolves the future after Redis
answered, so every click whose 302 was sent is in the stream, and a thousand
concurrent clicks cost one round trip. Clicks arriving while a pipeline is in
flight form the next batch. No ``MAXLEN``: ingest trims what it has stored.

Redis unreachable (connection error, timeout, or any error answer): the batch
goes to the spool, an append-only JSON-lines file of this process under
``settings.spool_path`` (written and fsync'd before the requests are answered),
and so do later batches, without waiting on Redis again. A recovery task pings
Redis; when it answers, the current spool file is closed and every closed file
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
import math
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


def _command_head(stream: bytes, argc: int) -> bytes:
    """RESP of ``XADD <stream> * e`` up to the value: the part every click shares."""
    return b"*%d\r\n$4\r\nXADD\r\n$%d\r\n%s\r\n$1\r\n*\r\n$1\r\ne\r\n" % (argc, len(stream), stream)


class ClickLog:
    """The click writer of one process (a lifespan component named ``clicklog``)."""

    def __init__(self, settings: Settings, redis: aioredis.Redis | None = None) -> None:
        self._own_redis = redis is None
        # No retries: a retried pipeline could add clicks twice without the replay mark;
        # a failed batch goes to the spool instead. Short timeouts: followers do not wait.
        self._io_timeout = IO_TIMEOUT_SECONDS
        self._redis = redis or redis_client.connect_async(
            settings, socket_connect_timeout=0.5, socket_timeout=IO_TIMEOUT_SECONDS, retry=Retry(NoBackoff(), 0)
        )
        streams = [k.encode() for k in keys.click_streams(settings.stream_shards)]
        self._heads = [_command_head(k, 5) for k in streams]
        self._replay_heads = [_command_head(k, 7) for k in streams]
        self._rr = 0
        self.spool = Spool(settings.spool_path, settings.spool_max_bytes)
        self._dropped_logged = 0.0
        # The flusher's own connection, held across batches (see ``_flusher_connection``).
        self._conn: AbstractConnection | None = None
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
        await self._drop_connection()
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
            except (RedisError, OSError) as exc:
                log.warning("Redis is unreachable (%s); spooling clicks locally", exc)
                self._mark_down()
            else:
                CLICKS_ENQUEUED.inc(len(batch))
                GROUP_COMMIT_SIZE.observe(len(batch))
                return
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

    def _pack(self, batch: list[bytes], replayed: bool) -> bytes:
        """The RESP of one ``XADD`` per click, as one buffer.

        The commands are packed here rather than by redis-py's Pipeline: same wire bytes,
        half the client CPU per click, which is most of what a click costs us.
        """
        heads = self._replay_heads if replayed else self._heads
        tail = _REPLAY_TAIL if replayed else b"\r\n"
        n = len(heads)
        if n == 1:
            head = heads[0]
            return b"".join([b"%s$%d\r\n%s%s" % (head, len(data), data, tail) for data in batch])
        parts = []
        for data in batch:
            self._rr += 1
            parts.append(b"%s$%d\r\n%s%s" % (heads[self._rr % n], len(data), data, tail))
        return b"".join(parts)

    async def _flusher_connection(self) -> AbstractConnection:
        """The flusher's connection: made once and held across batches, not taken from and
        returned to the pool per batch (the pool's lock, bookkeeping and observability hooks
        cost more than a small batch's own work). It has no socket timeout of its own (that
        would run every write in a task): ``_send`` puts one deadline on the whole batch.
        Checked before each batch the way the pool checks a connection it hands out: a
        closed or dirty one (Redis restarted meanwhile) is replaced, not written to.
        """
        conn = self._conn
        if conn is not None:
            try:
                if not await conn.can_read():
                    return conn
            except (RedisError, OSError):
                pass
            await self._drop_connection()
        pool = self._redis.connection_pool
        conn = pool.connection_class(**{**pool.connection_kwargs, "socket_timeout": None})
        try:
            async with asyncio.timeout(self._io_timeout):
                await conn.connect()  # type: ignore[no-untyped-call]
        except BaseException:
            await conn.disconnect()
            raise
        self._conn = conn
        return conn

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.disconnect()

    async def _send(self, conn: AbstractConnection, payload: bytes, replies: int) -> None:
        """Write the packed commands and read every reply, under one deadline for the batch
        (instead of redis-py's timeout context per reply)."""
        async with asyncio.timeout(self._io_timeout):
            await conn.send_packed_command(payload, check_health=False)
            for _ in range(replies):
                await conn.read_response(timeout=math.inf)  # raises ResponseError on an error reply

    async def _xadd(self, batch: list[bytes], replayed: bool) -> None:
        """XADD every click in one write and read the replies (a non-transactional pipeline).

        Live batches go over the flusher's held connection; replays (another task, running
        at the same time) take a connection from the pool.
        """
        payload = self._pack(batch, replayed)
        if not replayed:
            conn = await self._flusher_connection()
            try:
                await self._send(conn, payload, len(batch))
            except BaseException:
                # Replies may be left unread on it: never write to this connection again.
                await self._drop_connection()
                raise
            return
        pool = self._redis.connection_pool
        pooled = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await self._send(pooled, payload, len(batch))
        except BaseException:
            await pooled.disconnect()
            raise
        finally:
            await pool.release(pooled)

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
                await self._redis.ping()
            except (RedisError, OSError):
                delay = min(delay * 2, 2.0)
                continue
            self.redis_up = True
            async with self.spool.lock:
                self.spool.close()
            if await self.replay():
                async with self.spool.lock:
                    if self.redis_up and self.spool.current is None:
                        log.info("Redis is back; the spool is replayed")
                        return
            delay = 0.1

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
                    await self._xadd(chunk, replayed=True)
                    sent += len(chunk)
                    CLICKS_REPLAYED.inc(len(chunk))
                    chunk = []
                    write_offset(done_path, end)
            if chunk:
                await self._xadd(chunk, replayed=True)
                sent += len(chunk)
                CLICKS_REPLAYED.inc(len(chunk))
            path.unlink()
            with contextlib.suppress(FileNotFoundError):
                done_path.unlink()
            fsync_dir(path.parent)
            self.spool.size()
            log.info("replayed %d spooled clicks from %s", sent, path.name)
