"""Recovery: finishing what a crash left held, and isolating what keeps failing.

A restarted worker takes its consumer name back and first finishes the ranges its
predecessor held (``recover_own``); other workers take over the ranges of a worker whose
lease expired, once idle (``claim_idle``). A resumed range is read back from the stream
and goes through the usual steps with its attempts counted, so the writer checks it
against ClickHouse first. A batch that failed too often is split in halves until the
bad entry is alone, and that entry goes to the dead-letter stream (``give_up``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from functools import partial
from typing import Any, Protocol

import redis

from tracker.core import keys
from tracker.ingest import delivery
from tracker.ingest.batch import Batch, Entries, Kind, Poison, pairs
from tracker.ingest.delivery import Range, id_key, text
from tracker.ingest.lease import Lease
from tracker.ingest.retry import Pace
from tracker.ingest.writer import Writer
from tracker.ops import metrics
from tracker.settings import Settings
from tracker.storage import redis_client

log = logging.getLogger("tracker.ingest.worker")

DEAD_LETTER_MAXLEN = 100_000


class Process(Protocol):
    """The worker's batch step: decode, deduplicate, insert (``Worker._process``)."""

    def __call__(self, stream: str, ranges: list[Range], entries: Entries, *, attempts: int = ...) -> None: ...


class Recovery:
    def __init__(
        self, settings: Settings, r: Any, kinds: dict[str, Kind], lease: Lease, pace: Pace, writer: Writer,
        process: Process,
    ) -> None:
        self.settings = settings
        self.r = r
        self.kinds = kinds
        self.lease = lease
        self.pace = pace
        self.writer = writer
        self.process = process
        self.dead_lettered = 0
        # Entries read back (resuming a range) as Redis sends them: a client on the same
        # pool without redis-py's reply callback, like the reads' own replies.
        # (On a cluster, clients of the streams' primaries: ``redis_client.SyncNodes``.)
        self._raw = redis_client.SyncNodes(r, raw=("XRANGE",))

    def recover_own(self) -> None:
        """Finish the ranges this consumer name held before (a crash, a lost reply, a lapsed lease)."""
        for stream in self.kinds:
            held: list[Range] = self.pace.redis(partial(delivery.ranges, self.r, stream))
            self.resume(stream, [r for r in held if r.consumer == self.lease.name], min_idle_ms=0)

    def claim_idle(self) -> None:
        """Take over the ranges of dead workers (lease expired, ranges idle), and finish them.

        Only a worker whose heartbeat lease expired (or was taken by its successor) is
        dead; its ranges are taken once idle for ``ingest_claim_idle_seconds``. Idle time
        alone would let a slow but live worker's batch be taken and counted twice.
        """
        idle_ms = int(self.settings.ingest_claim_idle_seconds * 1000)
        for stream in self.kinds:
            held: list[Range] = self.pace.redis(partial(delivery.ranges, self.r, stream))
            leases: dict[str, str | None] = {}
            dead = []
            for rng in held:
                if rng.consumer == self.lease.name:
                    continue
                if rng.consumer not in leases:
                    raw = self.pace.redis(partial(self.r.get, keys.heartbeat(rng.consumer)))
                    leases[rng.consumer] = None if raw is None else text(raw)
                if leases[rng.consumer] != rng.owner:
                    dead.append(rng)
            self.resume(stream, dead, min_idle_ms=idle_ms)

    def _fetch(self, rng: Range) -> list[Any]:
        try:
            return delivery.fetch(self._raw.for_key(rng.stream), rng)
        except redis.RedisError:
            self._raw.reset()
            raise

    def resume(self, stream: str, held: list[Range], min_idle_ms: int) -> None:
        """Take ranges over and finish them, read back from the stream, in batches."""
        size = self.settings.ingest_batch_size
        group: list[Range] = []
        entries = Entries()
        for rng in held:
            taken = partial(delivery.take, self.r, rng, self.lease.token, self.lease.name, min_idle_ms)
            if not self.pace.redis(taken):
                continue  # its owner came back, another worker took it, or it is not idle yet
            log.info("resuming range (%s, %s] of %s (attempt %d)", rng.start, rng.end, stream, rng.attempts)
            got = Entries.from_raw(self.pace.redis(partial(self._fetch, rng)))
            # A range that failed before goes alone: an innocent neighbour is not split with it.
            if group and (len(entries) + len(got) > size or rng.attempts > 1 or group[-1].attempts > 1):
                self.process(stream, group, entries, attempts=max(r.attempts for r in group))
                group, entries = [], Entries()
            group.append(rng)
            entries.extend(got)
        if group:
            self.process(stream, group, entries, attempts=max(r.attempts for r in group))

    def give_up(self, batch: Batch, reason: str) -> None:
        """A batch failed too often: dead-letter a lone entry, else split its ranges in halves."""
        landed = set(self.writer.landed(batch.kind, batch.cols))
        ids = batch.row_ids()
        todo = [ids[i] for i, k in enumerate(batch.kind.keys_of(batch.cols)) if k not in landed]
        where = {batch.entries.id(i): i for i in range(len(batch.entries))}
        # A batch read without a recorded range has none: its entries are halved as they are.
        groups: list[tuple[Range | None, list[str]]] = (
            [(rng, [i for i in todo if rng.holds(i)]) for rng in batch.ranges] if batch.ranges else [(None, todo)]
        )
        for rng, mine in groups:
            if len(mine) <= 1:
                poison = [(i, pairs(batch.entries.fields(where[i])), reason) for i in mine]
                finish = [rng] if rng is not None else []
                self.pace.redis(partial(self.dead_letter, batch.stream, poison, finish=finish))
                continue
            half = mine[: len(mine) // 2]
            log.warning("splitting a batch of %s (%d rows): %s", batch.stream, len(mine), reason)
            if rng is None:
                for part in (half, mine[len(half) :]):
                    self.process(batch.stream, [], batch.entries.subset(where[i] for i in part), attempts=1)
                continue
            inside = batch.entries.subset(i for i in range(len(batch.entries)) if rng.holds(batch.entries.id(i)))
            for sub_range, sub in self.split(rng, half[-1], inside):
                self.process(batch.stream, [sub_range], sub, attempts=sub_range.attempts)

    def split(self, rng: Range, last: str, entries: Entries) -> list[tuple[Range, Entries]]:
        """Replace a range by (start, last] and (last, end], both to be checked against ClickHouse."""
        cut = sum(1 for i in range(len(entries)) if id_key(entries.id(i)) <= id_key(last))
        head, tail = entries.subset(range(cut)), entries.subset(range(cut, len(entries)))
        subs = []
        for start, end, part in ((rng.start, last, head), (last, rng.end, tail)):
            first = part.id(0) if len(part) else end
            sub = Range(rng.stream, start, end, first, len(part), self.lease.name, self.lease.token, 1, rng.skip)
            subs.append((sub, part))

        def write() -> None:
            with self.r.pipeline(transaction=True) as p:
                delivery.finish(p, [rng])
                for sub, _ in subs:
                    delivery.record(p, sub, touched_ms=int(time.time() * 1000))
                p.execute()

        self.pace.redis(write)
        return subs

    def dead_letter(
        self, stream: str, poison: list[Poison], ranges: Sequence[Range] = (), finish: Sequence[Range] = ()
    ) -> None:
        """Send entries to the dead-letter stream, note them in their ``ranges`` (a resumed range
        skips them), and drop the ranges in ``finish``: all in one transaction on a single Redis."""
        dead = {e[0] for e in poison}
        # On a Redis Cluster the dead-letter stream is in another slot than the ranges, and one
        # transaction cannot span slots: the dead letters go first (a crash before the ranges'
        # update dead-letters the same entries again, never loses one).
        apart = redis_client.is_cluster(self.r)
        if apart:
            with self.r.pipeline(transaction=False) as p:
                _queue_dead_letters(p, stream, poison)
                p.execute()
        with self.r.pipeline(transaction=True) as p:
            if not apart:
                _queue_dead_letters(p, stream, poison)
            for rng in ranges:
                mine = {i for i in dead if rng.holds(i)}
                if mine:
                    rng.skip = rng.skip | mine
                    delivery.note_skip(p, rng)
            if finish:
                delivery.finish(p, finish)
            p.execute()
        metrics.INGEST_DEAD_LETTERS.labels(self.kinds[stream].name).inc(len(poison))
        self.dead_lettered += len(poison)
        for entry_id, _, reason in poison:
            log.warning("dead-lettered entry %s of %s: %s", entry_id, stream, reason)


def _queue_dead_letters(p: Any, stream: str, poison: list[Poison]) -> None:
    for entry_id, fields, reason in poison:
        record: dict[Any, Any] = dict(fields)
        record.update({b"stream": stream, b"id": entry_id, b"reason": reason[:1000]})
        p.xadd(keys.DEAD_LETTER_STREAM, record, maxlen=DEAD_LETTER_MAXLEN, approximate=True)
