"""Reading: new entries of every stream, as recorded ranges, into one buffer per stream.

Each read is one ``MULTI`` per stream (``delivery.read_commands``: mark the group's
cursor, ``XREADGROUP ... NOACK``, record the range) sent in one round trip, its replies
read raw: no redis-py parsing of the entries and no Python object per entry for the
garbage collector. When a buffer is full the next read is sent ahead, so Redis builds its
reply while this batch is decoded and the last one inserted.

On a Redis Cluster the streams are grouped by the primary that holds them: one round trip
per primary, all sent before any reply is read (``redis_client.SyncNodes``).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import redis

from tracker.core import keys
from tracker.ingest import delivery
from tracker.ingest.batch import Buffer, Entries
from tracker.ingest.lease import Lease
from tracker.ingest.retry import REDIS_ERRORS, Pace
from tracker.settings import Settings
from tracker.storage import redis_client

log = logging.getLogger("tracker.ingest.worker")

# A stream slower than the batch size is read this many times per batch window (each read is a range).
READS_PER_BATCH = 4
# After a read found nothing although a wait said entries had arrived (another worker took
# them first), wait this long before the next wait, so busy neighbours do not make us spin.
CONTENDED_SLEEP_SECONDS = 0.02

Replies = list[tuple[str, Any]]
# Per primary (one on a single Redis): the connection the reads were sent on, its pool, the streams.
Sent = list[tuple[Any, Any, list[str]]]
# Answers meaning the slot map changed under us (a failover): read again once it is re-read.
_MOVED = ("MOVED", "ASK", "CLUSTERDOWN", "TRYAGAIN")


def create_groups(r: Any, streams: Iterable[str]) -> None:
    for stream in streams:
        try:
            r.xgroup_create(stream, keys.INGEST_GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Reading a batch makes ~200,000 short-lived objects without cycles (the reply and its
    entries). With the collector on they set off full collections, measured at a quarter of
    the drain's time; reference counting frees them all anyway."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class Reader:
    """Fills the buffers; ``unrecorded`` finishes entries whose range Redis failed to record."""

    def __init__(
        self, settings: Settings, r: Any, streams: Sequence[str], lease: Lease, pace: Pace,
        unrecorded: Callable[[str, Entries], None],
    ) -> None:
        self.settings = settings
        self.r = r
        self.streams = list(streams)
        self.lease = lease
        self.pace = pace
        self.unrecorded = unrecorded
        self.nodes = redis_client.SyncNodes(r)
        self.buffers: dict[str, Buffer] = {s: Buffer() for s in self.streams}
        self.cursors: dict[str, str] = {}  # each stream's group cursor as the last read left it
        # After a read that emptied the streams, the next waits a little (see Worker._tick),
        # so a slow stream's batch is a few ranges, not one per click.
        self.read_after = 0.0
        # Redis may have recorded the ranges of a read whose reply was lost: they are ours,
        # and no later read returns their entries. The worker recovers them before reading on.
        self.lost = False
        self._contended = False
        self._prefetched: Sent | None = None  # a read sent ahead, its reply unread

    def clear(self) -> None:
        """Forget what is buffered (its ranges stay recorded: recovery finishes them)."""
        self.buffers = {s: Buffer() for s in self.streams}

    def block_ms(self) -> int:
        waiting = [b.since for b in self.buffers.values() if b.ranges]
        if not waiting:
            return 1000
        due = min(waiting) + self.settings.ingest_batch_seconds - time.monotonic()
        return max(1, int(due * 1000))

    def due(self, force: bool) -> Iterator[tuple[str, Buffer]]:
        """The buffers to insert now (full, old enough, or ``force``), each replaced by an empty one."""
        now = time.monotonic()
        for stream, buf in self.buffers.items():
            if not buf.ranges:
                continue
            full = len(buf.entries) >= self.settings.ingest_batch_size
            if force or full or now - buf.since >= self.settings.ingest_batch_seconds:
                self.buffers[stream] = Buffer()
                yield stream, buf

    def room(self, ahead: bool = False) -> dict[str, int]:
        """How many entries to ask of each stream; ``ahead``: as if full buffers were flushed already."""
        size = self.settings.ingest_batch_size
        out = {}
        for stream, buf in self.buffers.items():
            held = len(buf.entries)
            if ahead and held >= size:
                held = 0
            if held < size:
                out[stream] = size - held
        return out

    def read(self, block_ms: int | None) -> int:
        """Read new ranges into the buffers; returns how many entries arrived."""
        try:
            with gc_paused():
                replies = self.take_prefetched()
                asked = 0
                if replies is None:
                    room = self.room()
                    if not room:
                        return 0
                    asked = sum(room.values())
                    replies = self.receive(self.send(room))
                n = self.absorb(replies)
                del replies
        except REDIS_ERRORS:
            self.lost = True
            self.nodes.reset()
            raise
        if n:
            self._contended = False
            if n < asked:
                self.read_after = time.monotonic() + self.settings.ingest_batch_seconds / READS_PER_BATCH
            self.prefetch()
        elif block_ms:
            self.wait_for_entries(block_ms)
        return n

    def send(self, room: Mapping[str, int]) -> Sent:
        """Send one ``MULTI`` read per stream (``delivery.read_commands``), one round trip per primary."""
        sent: Sent = []
        try:
            for node, streams in self.nodes.group(list(room)):
                pool = node.connection_pool
                conn: Any = pool.get_connection()
                sent.append((conn, pool, streams))
                commands: list[tuple[Any, ...]] = []
                for stream in streams:
                    commands.append(("MULTI",))
                    commands.extend(delivery.read_commands(
                        stream, keys.INGEST_GROUP, self.lease.name, self.lease.token, room[stream]
                    ))
                    commands.append(("EXEC",))
                conn.send_packed_command(conn.pack_commands(commands))
        except BaseException:
            for conn, pool, _ in sent:
                conn.disconnect()
                pool.release(conn)
            raise
        return sent

    def receive(self, sent: Sent) -> Replies:
        """The EXEC replies of ``send``, raw (no redis-py parsing of the entries)."""
        out = []
        failed: BaseException | None = None
        for conn, pool, streams in sent:
            try:
                if failed is None:
                    for stream in streams:
                        for _ in range(4):  # MULTI's OK and three QUEUED
                            conn.read_response()
                        out.append((stream, conn.read_response()))
                else:
                    conn.disconnect()  # its replies are never read: never reuse it
            except redis.ResponseError as exc:
                conn.disconnect()
                if not str(exc).startswith(_MOVED):
                    failed = exc
                else:
                    failed = redis.ConnectionError(f"the cluster moved a stream's slot: {exc}")
            except BaseException as exc:
                conn.disconnect()
                failed = exc
            finally:
                pool.release(conn)
        if failed is not None:
            raise failed
        return out

    def absorb(self, replies: Sequence[tuple[str, Any]] | None) -> int:
        """Add the ranges of EXEC replies to the buffers; returns how many entries."""
        n = 0
        now = time.monotonic()
        for stream, reply in replies or ():
            mark, read, seal = reply
            if isinstance(read, Exception):
                if "NOGROUP" in str(read):
                    create_groups(self.r, self.streams)  # the stream or its group vanished (Redis lost its data)
                    continue
                raise redis.ResponseError(f"Reading {stream} failed: {read}")
            if isinstance(seal, Exception) or isinstance(mark, Exception):
                # Delivered without a record: no other worker can ever see these entries, so they
                # are finished here and now (checked against ClickHouse first, as if resumed).
                log.error("reading %s: the range was not recorded (%s); finishing its entries now",
                          stream, seal if isinstance(seal, Exception) else mark)
                got = delivery.entries_of(read)
                if got:
                    self.unrecorded(stream, Entries.from_raw(got))
                    n += len(got)
                continue
            cursor, rng, entries = delivery.sealed(stream, self.lease.name, self.lease.token, reply)
            if cursor:
                self.cursors[stream] = cursor
            if rng is None:
                continue
            if int(seal[3]) < 0:  # Redis could not count them (its counter is unknown after trims)
                self.r.hset(rng.key, "n", rng.n)
            buf = self.buffers[stream]
            if not buf.ranges:
                buf.since = now
            buf.ranges.append(rng)
            buf.entries.extend(Entries.from_raw(entries))
            n += len(entries)
        return n

    def wait_for_entries(self, block_ms: int) -> None:
        """Block until an entry arrives after a stream's cursor (or ``block_ms`` passed)."""
        if self._contended:
            self._contended = False
            self.pace.sleep(CONTENDED_SLEEP_SECONDS)
            return
        streams = [s for s in self.streams if s in self.cursors]
        if not streams:
            self.pace.sleep(min(block_ms, 100) / 1000)
            return
        if self.nodes.cluster:
            # One XREAD cannot wait on streams of several slots: poll (the next read checks them all).
            self.pace.sleep(min(block_ms, 50) / 1000)
            return
        got = self.r.xread({s: self.cursors[s] for s in streams}, count=1, block=block_ms)
        self._contended = bool(got)

    def prefetch(self) -> None:
        """Ask for the next entries before this batch is decoded, when a buffer is full.

        The ranges are recorded from then on, exactly as after a plain read.
        """
        size = self.settings.ingest_batch_size
        if self._prefetched is not None or max(len(b.entries) for b in self.buffers.values()) < size:
            return
        self._prefetched = self.send(self.room(ahead=True))

    def take_prefetched(self) -> Replies | None:
        """The replies of the read ``prefetch`` sent, or None when none was sent."""
        sent, self._prefetched = self._prefetched, None
        return None if sent is None else self.receive(sent)

    @property
    def prefetched(self) -> bool:
        return self._prefetched is not None
