"""The ingest loop: Redis streams -> ClickHouse, nothing lost and nothing counted twice.

Workers share the click and conversion streams through one consumer group; entries are
delivered as ranges (``delivery``). A batch (one or more ranges of one stream) goes
through fixed steps, each safe to crash in: read (``reader``); decode, dead-letter the
malformed, drop duplicates inside the batch and replays that landed before (``batch``);
insert, checked by key when resumed or retried (``writer``); drop the ranges. What a
crash leaves held is finished by ``recovery``; the lease (``lease``) keeps a live
worker's ranges its own. Streams are trimmed below the oldest entry any group still
needs (Redis 7.0 has no ``XTRIM ... ACKED``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any

import redis

from tracker.core import keys
from tracker.ingest import batch as batches
from tracker.ingest import delivery
from tracker.ingest.batch import CLICKS, CONVERSIONS, Batch, Columns, Entries, Kind, n_rows, range_token
from tracker.ingest.delivery import Range
from tracker.ingest.lease import Lease, LeaseLost
from tracker.ingest.reader import Reader, create_groups
from tracker.ingest.recovery import Recovery
from tracker.ingest.retry import BACKOFF_MAX_SECONDS, GRACE_SECONDS, REDIS_ERRORS, Abandon, Pace
from tracker.ingest.writer import Refused, Writer
from tracker.ops import metrics
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse

log = logging.getLogger("tracker.ingest.worker")

MAINTAIN_SECONDS = 2.0
_INSERT_THREAD = "tracker-ingest-insert"


def lower_priority(nice: int) -> None:
    """Raise the calling thread's nice value (Linux schedules threads one by one).

    In embedded mode ingest shares the process, and the two cores, with the redirect's
    event loop: background work should give way to a follower waiting for a 302.
    """
    if nice > 0:
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)


def stream_stats(r: Any, stream: str) -> dict[str, Any]:
    """Length, lag, held entries and their age, and the trim floor of one stream."""
    return delivery.gauges(delivery.stats(r, stream, keys.INGEST_GROUP))


class Worker:
    """One ingest consumer; ``run(stop)`` loops until the event is set, ``drain()`` once."""

    def __init__(
        self,
        settings: Settings,
        r: redis.Redis,
        ch: ClickHouse,
        *,
        name: str | None = None,
        grace_seconds: float = GRACE_SECONDS,
        nice: int = 0,
    ) -> None:
        self.settings = settings
        self.nice = nice
        # redis-py's typed overloads cover sync and async at once; replies are parsed here.
        self.r: Any = r
        self.ch = ch
        self.kinds: dict[str, Kind] = {s: CLICKS for s in keys.click_streams(settings.stream_shards)}
        self.kinds.update({s: CONVERSIONS for s in keys.conversion_streams()})
        self.lease = Lease(self.r, name)
        self.pace = Pace(grace_seconds, keep_alive=self.lease.keep_alive)
        self.writer = Writer(settings, self.r, ch, self.lease, self.pace)
        self.recovery = Recovery(settings, self.r, self.kinds, self.lease, self.pace, self.writer, self._process)
        self.reader = Reader(settings, self.r, list(self.kinds), self.lease, self.pace, self._finish_unrecorded)
        self._next_maintain = 0.0
        self._next_claim = 0.0
        self.rows_inserted = 0
        self.batches = 0
        self.stats: dict[str, dict[str, Any]] = {}
        # One batch inserts in the background while the next one is read and decoded
        # (chDB and pyarrow release the GIL); never more than one in flight.
        self._pool: ThreadPoolExecutor | None = None
        self._inflight: Future[None] | None = None

    @property
    def name(self) -> str:
        return self.lease.name

    @property
    def dead_lettered(self) -> int:
        return self.recovery.dead_lettered

    # ---- the loop ---------------------------------------------------------------

    def start(self) -> None:
        """Create the groups, take a consumer name, and finish what a crash left held."""
        self.pace.redis(partial(create_groups, self.r, self.kinds))
        self.pace.redis(self.lease.acquire)
        log.info("ingest worker %s started", self.name)
        self.recovery.recover_own()

    def run(self, stop: threading.Event) -> None:
        """Ingest until ``stop`` is set, then flush within the grace period."""
        self.pace.stop = stop
        lower_priority(self.nice)
        try:
            self.start()
            while not stop.is_set():
                try:
                    self._tick()
                except LeaseLost as exc:
                    log.warning("%s Starting over.", exc)
                    self._renew_lease()
                except REDIS_ERRORS as exc:
                    log.warning("redis error in ingest loop, retrying: %s", exc)
                    self.pace.sleep(self.pace.wait(1))
                except redis.ResponseError as exc:
                    # Redis refuses a command (out of memory, a key of the wrong type): nothing
                    # was taken, so waiting loses nothing; dying would stop ingest for good.
                    log.error("redis refused a command in the ingest loop, retrying: %s", exc)
                    self.pace.sleep(BACKOFF_MAX_SECONDS)
        except Abandon:
            pass
        finally:
            self._shutdown()
            self._close_pool()

    def drain(self, stop: threading.Event | None = None) -> int:
        """Drain-once mode: recover, take over dead workers' ranges, read until the streams are empty."""
        if stop is not None:
            self.pace.stop = stop
        before = self.rows_inserted
        self.start()
        self._claim_idle()
        while True:
            if self.lease.due():
                self.pace.redis(self.lease.beat)
            if not self.pace.redis(partial(self._read, block_ms=None)):
                break
            self._flush(force=False)
        try:
            self._flush(force=True)
            self._wait_inflight()
        finally:
            self._close_pool()
        self.pace.redis(self._maintain)
        self.lease.release()
        return self.rows_inserted - before

    def _tick(self) -> None:
        now = time.monotonic()
        if self.lease.due():
            self.lease.beat()
        if now >= self._next_claim:
            self._claim_idle()
            self._next_claim = now + max(0.5, self.settings.ingest_claim_idle_seconds / 2)
        if now >= self._next_maintain:
            self._maintain()
            self._next_maintain = now + MAINTAIN_SECONDS
        pause = self.reader.read_after - time.monotonic()
        if pause > 0:
            self.pace.sleep(min(pause, self.reader.block_ms() / 1000))
        self._read(block_ms=self.reader.block_ms())
        self._flush(force=False)

    def _read(self, block_ms: int | None) -> int:
        if self.reader.lost:
            self._recover_lost_read()
        return self.reader.read(block_ms)

    def _flush(self, force: bool) -> None:
        for stream, buf in self.reader.due(force):
            self._process(stream, buf.ranges, buf.entries, background=True)

    def _shutdown(self) -> None:
        self.pace.stopping()
        try:
            if self.reader.prefetched:
                self.reader.absorb(self.reader.take_prefetched())  # recorded already: finish them too
            self._flush(force=True)
            self._wait_inflight()
            self._maintain()
            self.lease.release()
        except (Abandon, *REDIS_ERRORS) as exc:
            log.warning("ingest stopped with ranges left held (they are resumed on the next start): %s", exc)
        log.info("ingest worker %s stopped", self.name)

    # ---- one batch --------------------------------------------------------------

    def _process(
        self, stream: str, ranges: list[Range], entries: Entries, *, attempts: int = 0, background: bool = False
    ) -> None:
        """Decode, dead-letter the malformed, drop duplicates and landed replays, then insert."""
        kind = self.kinds[stream]
        entries = batches.without_skipped(entries, ranges)
        rows, cols, poison = batches.decode(kind, entries)
        if poison:
            self.pace.redis(partial(self.recovery.dead_letter, stream, poison, ranges))
        keep = batches.first_of_each_key(kind, cols)
        if kind.replays and not entries.plain():
            keep = self._drop_landed_replays(stream, entries, rows, cols, keep)
        rows, cols = batches.keep_rows(rows, cols, keep)
        token = range_token(stream, ranges, [] if ranges else [entries.id(i) for i in range(len(entries))])
        batch = Batch(stream, kind, ranges, entries, rows, cols, token, attempts)
        if not n_rows(cols):
            self.pace.redis(partial(self._finish, batch))
        elif background:
            self._submit(batch)
        else:
            self._complete(batch)

    def _drop_landed_replays(
        self, stream: str, entries: Entries, rows: list[int] | None, cols: Columns, keep: list[int] | None
    ) -> list[int] | None:
        """Leave out clicks replayed from a redirect's spool (``r=1``) that reached ClickHouse before."""
        candidates = keep if keep is not None else list(range(n_rows(cols)))
        replayed = batches.replayed(entries, rows, candidates)
        if not replayed:
            return keep
        self._wait_inflight()  # our own previous batch may hold the originals
        landed = self.writer.landed_replays(stream, entries, rows, cols, replayed)
        if not landed:
            return keep
        return [i for i in candidates if i not in landed]

    def _complete(self, batch: Batch) -> None:
        """Insert a batch (only what ClickHouse lacks, when resumed), then drop its ranges."""
        if batch.attempts > self.settings.ingest_max_deliveries:
            self.recovery.give_up(batch, f"the batch failed {batch.attempts} times")
            return
        try:
            self.writer.write(batch)
        except Refused as exc:
            self.recovery.give_up(batch, str(exc))
            return
        self.pace.redis(partial(self._finish, batch))
        rows = n_rows(batch.cols)
        metrics.INGEST_ROWS.labels(batch.kind.name).inc(rows)
        metrics.INGEST_BATCHES.labels(batch.kind.name).inc()
        self.rows_inserted += rows
        self.batches += 1

    def _finish(self, batch: Batch) -> None:
        """Drop a batch's ranges: its rows are in ClickHouse (or were dead-lettered)."""
        with self.r.pipeline(transaction=True) as p:
            delivery.finish(p, batch.ranges)
            p.execute()

    def _finish_unrecorded(self, stream: str, entries: Entries) -> None:
        self._wait_inflight()
        self._process(stream, [], entries, attempts=1)

    def _submit(self, batch: Batch) -> None:
        self._wait_inflight()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix=_INSERT_THREAD, initializer=lower_priority, initargs=(self.nice,)
            )
        self._inflight = self._pool.submit(self._complete, batch)

    def _wait_inflight(self) -> None:
        """Finish the batch inserting in the background (its errors surface here)."""
        if threading.current_thread().name.startswith(_INSERT_THREAD):
            return  # splitting a failed batch: this thread runs the batch in flight
        future, self._inflight = self._inflight, None
        if future is not None:
            future.result()

    def _close_pool(self) -> None:
        self._inflight = None  # done or abandoned: its ranges stay held either way
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    # ---- recovery, leases, trimming ------------------------------------------------

    def _claim_idle(self) -> None:
        self._wait_inflight()
        self.recovery.claim_idle()

    def _recover_lost_read(self) -> None:
        """After a read whose reply may be lost: take back everything this consumer holds, as at start."""
        self._wait_inflight()
        self.reader.clear()  # recorded too: recovered with the lost ones
        self.recovery.recover_own()
        self.reader.lost = False

    def _renew_lease(self) -> None:
        """After a lapse: drop what we hold (others may finish it), take a name, recover."""
        with contextlib.suppress(LeaseLost):
            self._wait_inflight()
        with contextlib.suppress(*REDIS_ERRORS):
            self.reader.take_prefetched()  # recorded ranges: recovered below with the rest
        self.reader.clear()
        self.lease.renew()
        self.pace.redis(self.lease.acquire)
        self.recovery.recover_own()

    def _maintain(self) -> None:
        """Trim every stream below what its groups still need and refresh the gauges."""
        for stream in self.kinds:
            st = stream_stats(self.r, stream)
            self.stats[stream] = st
            if st["trim_below"] is not None:
                self.r.xtrim(stream, minid=st["trim_below"], approximate=True)
            metrics.set_stream_gauges(stream, st)

    def status(self) -> dict[str, Any]:
        failing = self.writer.ch_failing_since
        return {
            "worker": self.name,
            "clickhouse_error": self.writer.ch_error,
            "clickhouse_failing_seconds": round(time.monotonic() - failing, 1) if failing is not None else 0.0,
            "rows_inserted": self.rows_inserted,
            "batches": self.batches,
            "dead_lettered": self.dead_lettered,
        }
