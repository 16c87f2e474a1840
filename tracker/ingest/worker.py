"""Ingest: Redis streams -> ClickHouse, nothing lost and nothing counted twice.

Workers share the click and conversion streams through one consumer group.
Entries are delivered as *ranges* (``tracker.ingest.delivery``): each read takes the
next entries of a stream with ``XREADGROUP ... NOACK`` and records, in the same
``MULTI``, that this worker holds them; Redis keeps no per-entry pending list.
A batch (one or more ranges of one stream) goes through fixed steps, each safe
to crash in:

1. read ranges, decode and enrich their entries (``tracker.ingest.enrich``); a
   malformed entry goes to the dead-letter stream at once (and is noted in its
   range, so a resumed range does not send it twice);
2. drop duplicates inside the batch (click id, or brand + order + version) and
   replayed clicks (``r=1``) whose click id ClickHouse already has;
3. insert with a deduplication token derived from the ranges
   (``insert_deduplication_token``; the tables keep a
   ``non_replicated_deduplication_window``); the click rollups are projections,
   stored inside the same parts, so they land exactly when the rows do;
4. drop the ranges (their entries are then only trimmed).

After a crash the ranges are still recorded. A restarted worker takes its
consumer name back and first finishes the ranges its predecessor held; other
workers take over the ranges of a worker whose heartbeat lease expired (once
idle). A resumed range is read back from the stream and checked against
ClickHouse *before* inserting: only the rows ClickHouse lacks go in. So a batch
that landed, half-landed, or whose token outlived an uncommitted part (a
MergeTree that is not replicated records the token first; a kill in between, as
with chDB inside the embedded worker, keeps the token and loses the rows) ends
up exactly once. A live worker's ranges are never taken, however slow it is;
one that stalled past its lease checks it before inserting and starts over.

A batch that keeps failing (its ranges count attempts, a crash included) is
split in halves until the bad entry is alone, and that entry is dead-lettered
after ``ingest_max_deliveries`` attempts. ClickHouse being unreachable or
rejecting a statement for every row (schema, disk) is not the entries' fault:
the worker backs off and retries, and the stream holds the backlog.

Streams are trimmed below the oldest entry any group still needs (Redis 7.0
has no ``XTRIM ... ACKED``): the smaller of the ingest group's cursor and the
start of its oldest range. Entries left in the pending list by the ingest
before ranges (an upgrade mid-flight) are finished once, then acknowledged.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import logging
import os
import random
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from operator import itemgetter
from typing import Any, cast

import prometheus_client
import pyarrow as pa
import redis

from tracker.core import keys
from tracker.core.errors import QueryError, SettingsError, StorageUnavailable
from tracker.core.events import CLICK_COLUMNS, CONVERSION_COLUMNS
from tracker.ingest import delivery, enrich
from tracker.ingest.delivery import Range, id_key, text
from tracker.ops import metrics
from tracker.settings import Settings
from tracker.storage import redis_client
from tracker.storage.clickhouse import ClickHouse, describe

log = logging.getLogger("tracker.ingest.worker")

GRACE_SECONDS = 10.0
HEARTBEAT_SECONDS = 15
MAINTAIN_SECONDS = 2.0
DEAD_LETTER_MAXLEN = 100_000
# Readiness: reports are stale when the oldest entry not yet in ClickHouse is older than this.
LAG_PROBLEM_SECONDS = 60.0
BACKOFF_MAX_SECONDS = 5.0
# After a read found nothing although a wait said entries had arrived (another worker took
# them first), wait this long before the next wait, so busy neighbours do not make us spin.
CONTENDED_SLEEP_SECONDS = 0.02
_INSERT_THREAD = "tracker-ingest-insert"
# A stream slower than the batch size is read this many times per batch window (each read is a range).
READS_PER_BATCH = 4
# Nice value of the ingest threads inside `tracker serve` (embedded): below the event loop's.
EMBEDDED_NICE = 10

_REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)

Fields = dict[bytes, bytes]

# The Lua script takes a consumer name over when its holder is the dead process that
# left it (same host): compare-and-set, so two starting workers cannot both take it.
_TAKE_OVER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
"""
_REFRESH = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


class LeaseLost(Exception):
    """This worker stalled past its heartbeat; it must not insert what others may have claimed."""


class Abandon(Exception):
    """Shutdown grace ran out mid-batch; the entries stay pending for the next start."""


Columns = Mapping[str, Sequence[Any]]


class TableColumns(Mapping[str, Sequence[Any]]):
    """A batch's columns as the Arrow table the Arrow path built (inserted as it is).

    A column becomes a Python list only when something asks for it by name
    (deduplication, replays, splitting or settling a batch).
    """

    def __init__(self, table: pa.Table) -> None:
        self.table = table
        self._lists: dict[str, list[Any]] = {}

    def __getitem__(self, name: str) -> list[Any]:
        if name not in self._lists:
            self._lists[name] = self.table.column(name).to_pylist()
        return self._lists[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.table.column_names)

    def __len__(self) -> int:
        return int(self.table.num_columns)


@dataclass(frozen=True)
class Kind:
    """How one stream's entries become rows of one table."""

    name: str
    table: str
    columns: tuple[str, ...]
    decode: Callable[[bytes], list[Any]]  # one payload -> one row; ValueError = poison
    decode_many: Callable[[Sequence[bytes]], Columns] | None  # fast path; ValueError -> one by one
    key_columns: tuple[str, ...]  # what makes a row unique (deduplicated inside a batch)
    arrow_types: dict[str, Any]
    replays: bool  # entries may be replays (r=1) of an entry that already landed
    # Arrow path, tried first: payloads -> the finished table; ValueError -> decode_many.
    decode_table: Callable[[Sequence[bytes]], pa.Table] | None = None
    insert_settings: dict[str, Any] = field(default_factory=dict)

    def keys_of(self, cols: Columns) -> list[Hashable]:
        if len(self.key_columns) == 1:
            return list(cols[self.key_columns[0]])
        return list(zip(*(cols[c] for c in self.key_columns), strict=True))

    def arrow(self, cols: Columns) -> pa.Table:
        if isinstance(cols, TableColumns):
            return cols.table
        return pa.table({c: pa.array(cols[c], type=self.arrow_types.get(c, pa.string())) for c in self.columns})


_TS = pa.timestamp("ms", tz="UTC")
CLICKS = Kind(
    "clicks", "clicks", CLICK_COLUMNS, enrich.decode_click, enrich.click_columns, ("click_id",),
    {"ts": _TS, "link_id": pa.uint64(), "visitor_hash": pa.uint64(), "is_bot": pa.uint8()},
    True,
    decode_table=enrich.click_table,
    # A batch never holds a click id twice (deduplicated above), so ReplacingMergeTree's
    # merge of the inserted block finds nothing to fold; skipping it halves the insert's CPU.
    insert_settings={"optimize_on_insert": 0},
)
_MONEY = pa.decimal128(18, 4)
CONVERSIONS = Kind(
    "conversions", "conversions", CONVERSION_COLUMNS, enrich.decode_conversion, None,
    ("brand_id", "order_id", "version"),
    {
        "version": pa.uint64(), "amount": _MONEY, "refunded_amount": _MONEY, "original_amount": _MONEY,
        "original_refunded_amount": _MONEY, "fx_rate": pa.decimal128(18, 8), "commission": _MONEY,
        "attributed": pa.uint8(), "link_id": pa.uint64(),
        "occurred_at": _TS, "created_at": _TS, "updated_at": _TS,
    },
    False,
)


def take(cols: Columns, idx: Sequence[int]) -> Columns:
    if isinstance(cols, TableColumns):
        return TableColumns(cols.table.take(pa.array(idx, pa.int64())))
    return {c: [v[i] for i in idx] for c, v in cols.items()}


def n_rows(cols: Columns) -> int:
    if isinstance(cols, TableColumns):
        return int(cols.table.num_rows)
    return len(next(iter(cols.values()), ()))


class Entries:
    """Stream entries as a worker holds them: their ids, and per entry the value of its field
    ``e`` when that is its only field (bytes: what the redirect and postbacks write), else its
    whole field list (a replay's ``r=1``, a malformed entry).

    Compact on purpose: a reply's nested lists are dropped as soon as it is read, so a
    buffered batch holds no object the garbage collector tracks per entry. (Held as lists
    they made full collections walk every buffered entry, under the GIL, inside the
    embedded server's process: a stall of the redirects there.)
    """

    __slots__ = ("_plain", "ids", "values")

    def __init__(self, ids: list[Any] | None = None, values: list[Any] | None = None) -> None:
        self.ids: list[Any] = ids if ids is not None else []
        self.values: list[Any] = values if values is not None else []
        self._plain: bool | None = None if self.values else True

    @classmethod
    def from_raw(cls, raw: Sequence[Any]) -> Entries:
        """From Redis's raw entries ``[[id, [field, value, ...]], ...]``."""
        if not raw:
            return cls()
        ids = list(map(itemgetter(0), raw))
        fields = list(map(itemgetter(1), raw))
        if all(fields) and set(map(len, fields)) == {2} and set(map(itemgetter(0), fields)) == {b"e"}:
            plain = cls(ids, list(map(itemgetter(1), fields)))  # C calls only
            plain._plain = True
            return plain
        return cls(ids, [f[1] if f and len(f) == 2 and f[0] == b"e" else list(f or ()) for f in fields])

    def __len__(self) -> int:
        return len(self.ids)

    def extend(self, other: Entries) -> None:
        self._plain = self._plain and other._plain  # known without a pass when both are known
        self.ids.extend(other.ids)
        self.values.extend(other.values)

    def subset(self, idx: Iterable[int]) -> Entries:
        idx = list(idx)
        return Entries([self.ids[i] for i in idx], [self.values[i] for i in idx])

    def id(self, i: int) -> str:
        return text(self.ids[i])

    def fields(self, i: int) -> list[bytes]:
        v = self.values[i]
        return [b"e", v] if isinstance(v, bytes) else list(v)

    def plain(self) -> bool:
        """Every entry has the one field ``e``."""
        if self._plain is None:
            self._plain = set(map(type, self.values)) <= {bytes}
        return self._plain


def decode(kind: Kind, entries: Entries) -> tuple[list[int] | None, Columns, list[tuple[str, Fields, str]]]:
    """Entries -> (indices of the entries that became rows, None for all; their columns;
    poison entries with the reason).

    Entries whose first field is ``e`` (every entry the redirect and the postbacks write)
    take the kind's fast paths: the Arrow path, then the column path; a batch either path
    refuses (an escaped character, a malformed entry) is decoded one entry at a time.
    """
    if kind.decode_table or kind.decode_many:
        payloads: list[Any] | None = entries.values
        if not entries.plain():  # replays carry r=1 after e; anything else is decoded one by one
            led = all(isinstance(v, bytes) or (len(v) >= 2 and v[0] == b"e") for v in entries.values)
            payloads = [v if isinstance(v, bytes) else v[1] for v in entries.values] if led else None
        if payloads is not None and kind.decode_table is not None:
            with contextlib.suppress(TypeError, ValueError):
                return None, TableColumns(kind.decode_table(payloads)), []
        if payloads is not None and kind.decode_many is not None:
            with contextlib.suppress(TypeError, ValueError):
                return None, kind.decode_many(payloads), []
    rows: list[int] = []
    values: list[list[Any]] = []
    poison: list[tuple[str, Fields, str]] = []
    for i in range(len(entries)):
        fields = _pairs(entries.fields(i))
        try:
            values.append(kind.decode(fields[b"e"]))
            rows.append(i)
        except KeyError:
            poison.append((entries.id(i), fields, "malformed entry: no field e"))
        except ValueError as exc:
            poison.append((entries.id(i), fields, f"malformed entry: {exc}"))
    cols: Columns = {c: [] for c in kind.columns}
    if values:
        cols = dict(zip(kind.columns, zip(*values, strict=True), strict=True))
    return rows, cols, poison


def _pairs(fields: Sequence[bytes]) -> Fields:
    """A raw field list ``[field, value, ...]`` as a dict."""
    return dict(zip(fields[::2], fields[1::2], strict=False))


def _is_replay(value: bytes | list[bytes]) -> bool:
    return not isinstance(value, bytes) and _pairs(value).get(b"r") == b"1"


@dataclass
class Batch:
    """Rows of one stream's ranges (or of legacy pending entries) on their way to ClickHouse."""

    stream: str
    kind: Kind
    ranges: list[Range]
    entries: Entries  # the entries the rows come from, in stream order
    rows: list[int] | None  # indices into ``entries`` of the rows to insert; None: every entry
    cols: Columns
    token: str
    # > 0: resumed or retried; its rows may be in ClickHouse already, so they are checked first.
    attempts: int = 0
    legacy: list[str] = field(default_factory=list)  # pending-list ids, acknowledged when done

    def row_ids(self) -> list[str]:
        idx = range(len(self.entries)) if self.rows is None else self.rows
        return [self.entries.id(i) for i in idx]


@dataclass
class Buffer:
    ranges: list[Range] = field(default_factory=list)
    entries: Entries = field(default_factory=Entries)
    since: float = 0.0


def range_token(stream: str, ranges: Sequence[Range], legacy: Sequence[str] = ()) -> str:
    """Insert deduplication token of a batch: a hash of its stream and its ranges (or entry ids)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(stream.encode())
    h.update("".join(f",({r.start},{r.end}]" for r in ranges).encode())
    h.update("".join("," + i for i in legacy).encode())
    first = ranges[0].first if ranges else (legacy[0] if legacy else "-")
    return f"{stream}:{first}:{sum(r.n for r in ranges) + len(legacy)}:{h.hexdigest()}"


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
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


def _crash_points() -> dict[str, int]:
    """Test hook: ``TRACKER_TEST_CRASH_AT=after_insert:3`` exits hard at the 3rd time there."""
    spec = os.environ.get("TRACKER_TEST_CRASH_AT", "")
    points: dict[str, int] = {}
    for item in filter(None, (p.strip() for p in spec.split(","))):
        name, _, count = item.partition(":")
        points[name] = int(count or "1")
    return points


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
        self.grace_seconds = grace_seconds
        self.kinds: dict[str, Kind] = {s: CLICKS for s in keys.click_streams(settings.stream_shards)}
        self.kinds[keys.CONVERSION_STREAM] = CONVERSIONS
        self.name = name or ""
        self._fixed_name = name is not None
        self._token = f"{os.getpid()}:{uuid.uuid4().hex}"
        self._buffers: dict[str, Buffer] = {s: Buffer() for s in self.kinds}
        # Entries read back (resuming a range) as Redis sends them: a client on the same
        # pool without redis-py's reply callback, like the reads' own replies.
        self._raw: Any = redis.Redis(connection_pool=r.connection_pool)
        self._raw.set_response_callback("XRANGE", lambda response, **options: response)
        self._cursors: dict[str, str] = {}  # each stream's group cursor as the last read left it
        self._contended = False
        # After a read that emptied the streams, the next waits a little (see _tick), so a
        # slow stream's batch is a few ranges, not one per click.
        self._read_after = 0.0
        self._prefetched: tuple[Any, list[str]] | None = None  # a read sent ahead, its reply unread
        self._read_lost = False
        self._stop = threading.Event()
        self._deadline: float | None = None  # set when stopping: the grace period's end
        self._crash = _crash_points()
        self._next_heartbeat = 0.0
        self._lease_lost = False
        self._next_maintain = 0.0
        self._next_claim = 0.0
        self.ch_error: str | None = None
        self.ch_failing_since: float | None = None
        self.rows_inserted = 0
        self.batches = 0
        self.dead_lettered = 0
        self.stats: dict[str, dict[str, Any]] = {}
        # One batch inserts in the background while the next one is read and decoded
        # (chDB and pyarrow release the GIL); never more than one in flight.
        self._pool: ThreadPoolExecutor | None = None
        self._inflight: Future[None] | None = None

    # ---- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """Create the groups, take a consumer name, and finish what a crash left held."""
        self._retry_redis(self._create_groups)
        if not self._fixed_name:
            self.name = self._retry_redis(self._take_name)
        self._retry_redis(lambda: self._heartbeat(force=True))
        log.info("ingest worker %s started", self.name)
        self._recover_own()

    def run(self, stop: threading.Event) -> None:
        """Ingest until ``stop`` is set, then flush within the grace period."""
        self._stop = stop
        lower_priority(self.nice)
        try:
            self.start()
            while not stop.is_set():
                try:
                    self._tick()
                except LeaseLost as exc:
                    log.warning("%s Starting over.", exc)
                    self._renew_lease()
                except _REDIS_ERRORS as exc:
                    log.warning("redis error in ingest loop, retrying: %s", exc)
                    self._sleep(self._backoff(1))
                except redis.ResponseError as exc:
                    # Redis refuses a command (out of memory, a key of the wrong type): nothing
                    # was taken, so waiting loses nothing; dying would stop ingest for good.
                    log.error("redis refused a command in the ingest loop, retrying: %s", exc)
                    self._sleep(BACKOFF_MAX_SECONDS)
        except Abandon:
            pass
        finally:
            self._shutdown()
            self._close_pool()

    def drain(self) -> int:
        """Drain-once mode: recover, take over dead workers' ranges, read until the streams are empty."""
        before = self.rows_inserted
        self.start()
        self._claim_idle()
        while True:
            if time.monotonic() >= self._next_heartbeat:
                self._retry_redis(self._heartbeat)
            got = self._retry_redis(lambda: self._read(block_ms=None))
            if not got:
                break
            self._flush(force=False)
        try:
            self._flush(force=True)
            self._wait_inflight()
        finally:
            self._close_pool()
        self._retry_redis(self._maintain)
        self._release_name()
        return self.rows_inserted - before

    def _tick(self) -> None:
        now = time.monotonic()
        if now >= self._next_heartbeat:
            self._heartbeat()
        if now >= self._next_claim:
            self._claim_idle()
            self._next_claim = now + max(0.5, self.settings.ingest_claim_idle_seconds / 2)
        if now >= self._next_maintain:
            self._maintain()
            self._next_maintain = now + MAINTAIN_SECONDS
        pause = self._read_after - time.monotonic()
        if pause > 0:
            self._sleep(min(pause, self._block_ms() / 1000))
        self._read(block_ms=self._block_ms())
        self._flush(force=False)

    def _shutdown(self) -> None:
        self._deadline = time.monotonic() + self.grace_seconds
        try:
            if self._prefetched is not None:
                self._absorb(self._take_prefetched())  # recorded already: finish them too
            self._flush(force=True)
            self._wait_inflight()
            self._maintain()
            self._release_name()
        except (Abandon, *_REDIS_ERRORS) as exc:
            log.warning("ingest stopped with ranges left held (they are resumed on the next start): %s", exc)
        log.info("ingest worker %s stopped", self.name)

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

    def _sleep(self, seconds: float) -> None:
        if time.monotonic() >= self._next_heartbeat:
            # Long retries (ClickHouse down) must not let the consumer name lapse.
            with contextlib.suppress(*_REDIS_ERRORS):
                self._heartbeat()
        if self._deadline is not None:
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                raise Abandon("the shutdown grace period ran out")
            seconds = min(seconds, remaining)
            time.sleep(seconds)
        else:
            self._stop.wait(seconds)
            if self._stop.is_set():
                self._deadline = time.monotonic() + self.grace_seconds

    @staticmethod
    def _backoff(attempt: int) -> float:
        return float(min(BACKOFF_MAX_SECONDS, 0.05 * 2 ** min(attempt, 10)) * (0.5 + random.random() / 2))

    def _retry_redis(self, fn: Callable[[], Any]) -> Any:
        attempt = 0
        while True:
            try:
                return fn()
            except _REDIS_ERRORS as exc:
                attempt += 1
                if attempt == 1 or attempt % 20 == 0:
                    log.warning("redis unreachable (attempt %d), retrying: %s", attempt, exc)
                self._sleep(self._backoff(attempt))

    def _crash_point(self, point: str) -> None:
        left = self._crash.get(point)
        if left is None:
            return
        if left <= 1:
            log.error("TRACKER_TEST_CRASH_AT: exiting hard at %s", point)
            logging.shutdown()
            os._exit(137)
        self._crash[point] = left - 1

    # ---- consumer name and groups ----------------------------------------------

    def _create_groups(self) -> None:
        for stream in self.kinds:
            try:
                self.r.xgroup_create(stream, keys.INGEST_GROUP, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def _take_name(self) -> str:
        """A consumer name of this host that no live process holds.

        A restarted worker gets the name its dead predecessor held (its pid is gone),
        so it finds that predecessor's ranges at once instead of waiting for another
        worker to take them over.
        """
        host = socket.gethostname()
        for n in range(1024):
            name = f"{host}-{n}"
            key = keys.heartbeat(name)
            if self.r.set(key, self._token, nx=True, ex=HEARTBEAT_SECONDS):
                return name
            raw = self.r.get(key)
            if raw is None:
                continue
            holder = text(raw)
            pid = int(holder.split(":", 1)[0]) if holder.split(":", 1)[0].isdigit() else -1
            dead = pid == os.getpid() or not _pid_alive(pid)
            if dead and self.r.eval(_TAKE_OVER, 1, key, holder, self._token, HEARTBEAT_SECONDS):
                return name
        raise StorageUnavailable(f"No free ingest consumer name on host {host}.")

    def _heartbeat(self, force: bool = False) -> None:
        """Refresh this consumer's lease; while it lives, no other worker takes our ranges."""
        key = keys.heartbeat(self.name)
        if force and self._fixed_name:
            self.r.set(key, self._token, ex=HEARTBEAT_SECONDS)
        elif not self.r.eval(_REFRESH, 1, key, self._token, HEARTBEAT_SECONDS):
            # A stall longer than the lease: other workers may have taken what we hold.
            self._lease_lost = True
        self._next_heartbeat = time.monotonic() + HEARTBEAT_SECONDS / 3

    def _check_lease(self) -> None:
        """Right before an insert: the ranges must still be ours (see ``LeaseLost``)."""
        self._heartbeat()
        if self._lease_lost:
            raise LeaseLost(f"The lease of ingest consumer {self.name} lapsed; its ranges may be taken over.")

    def _renew_lease(self) -> None:
        """After a lapse: drop what we hold (others may finish it), take a name, recover."""
        with contextlib.suppress(LeaseLost):
            self._wait_inflight()
        with contextlib.suppress(*_REDIS_ERRORS):
            self._take_prefetched()  # recorded ranges: recovered below with the rest
        self._buffers = {s: Buffer() for s in self.kinds}
        self._lease_lost = False
        self._token = f"{os.getpid()}:{uuid.uuid4().hex}"
        if self._fixed_name:
            self._retry_redis(lambda: self._heartbeat(force=True))
        else:
            self.name = self._retry_redis(self._take_name)
        self._recover_own()

    def _release_name(self) -> None:
        if self.name:
            self.r.eval(_REFRESH, 1, keys.heartbeat(self.name), self._token, 1)

    # ---- reading ---------------------------------------------------------------

    def _block_ms(self) -> int:
        waiting = [b.since for b in self._buffers.values() if b.ranges]
        if not waiting:
            return 1000
        due = min(waiting) + self.settings.ingest_batch_seconds - time.monotonic()
        return max(1, int(due * 1000))

    def _room(self, ahead: bool = False) -> dict[str, int]:
        """How many entries to ask of each stream; ``ahead``: as if full buffers were flushed already."""
        size = self.settings.ingest_batch_size
        out = {}
        for stream, buf in self._buffers.items():
            held = len(buf.entries)
            if ahead and held >= size:
                held = 0
            if held < size:
                out[stream] = size - held
        return out

    def _read(self, block_ms: int | None) -> int:
        """Read new ranges into the buffers; returns how many entries arrived."""
        if self._read_lost:
            self._recover_lost_read()
        try:
            with _gc_paused():
                replies = self._take_prefetched()
                asked = 0
                if replies is None:
                    room = self._room()
                    if not room:
                        return 0
                    asked = sum(room.values())
                    replies = self._receive(self._send_reads(room))
                n = self._absorb(replies)
                del replies
        except _REDIS_ERRORS:
            # Redis may have recorded the ranges before the reply was lost: they are ours
            # now, and no later read returns their entries.
            self._read_lost = True
            raise
        if n:
            self._contended = False
            if n < asked:
                self._read_after = time.monotonic() + self.settings.ingest_batch_seconds / READS_PER_BATCH
            self._crash_point("mid_batch")
            self._prefetch()
        elif block_ms:
            self._wait_for_entries(block_ms)
        return n

    def _send_reads(self, room: Mapping[str, int]) -> tuple[Any, list[str]]:
        """Send one ``MULTI`` read per stream (``delivery.read_commands``) in one round trip."""
        pool = self.r.connection_pool
        conn = pool.get_connection()
        try:
            commands: list[tuple[Any, ...]] = []
            for stream, count in room.items():
                commands.append(("MULTI",))
                commands.extend(delivery.read_commands(stream, keys.INGEST_GROUP, self.name, self._token, count))
                commands.append(("EXEC",))
            conn.send_packed_command(conn.pack_commands(commands))
        except BaseException:
            conn.disconnect()
            pool.release(conn)
            raise
        return conn, list(room)

    def _receive(self, sent: tuple[Any, list[str]]) -> list[tuple[str, Any]]:
        """The EXEC replies of ``_send_reads``, raw (no redis-py parsing of the entries)."""
        conn, streams = sent
        pool = self.r.connection_pool
        out = []
        try:
            for stream in streams:
                for _ in range(4):  # MULTI's OK and three QUEUED
                    conn.read_response()
                out.append((stream, conn.read_response()))
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)
        return out

    def _absorb(self, replies: Sequence[tuple[str, Any]] | None) -> int:
        """Add the ranges of EXEC replies to the buffers; returns how many entries."""
        n = 0
        now = time.monotonic()
        for stream, reply in replies or ():
            mark, read, seal = reply
            if isinstance(read, Exception):
                if "NOGROUP" in str(read):
                    self._create_groups()  # the stream or its group vanished (Redis lost its data)
                    continue
                raise redis.ResponseError(f"Reading {stream} failed: {read}")
            if isinstance(seal, Exception) or isinstance(mark, Exception):
                # Delivered without a record: no other worker can ever see these entries, so they
                # are finished here and now (checked against ClickHouse first, as if resumed).
                log.error("reading %s: the range was not recorded (%s); finishing its entries now",
                          stream, seal if isinstance(seal, Exception) else mark)
                got = delivery.entries_of(read)
                if got:
                    self._wait_inflight()
                    self._process(stream, [], Entries.from_raw(got), attempts=1)
                    n += len(got)
                continue
            cursor, rng, entries = delivery.sealed(stream, self.name, self._token, reply)
            if cursor:
                self._cursors[stream] = cursor
            if rng is None:
                continue
            if int(seal[3]) < 0:  # Redis could not count them (its counter is unknown after trims)
                self.r.hset(rng.key, "n", rng.n)
            buf = self._buffers[stream]
            if not buf.ranges:
                buf.since = now
            buf.ranges.append(rng)
            buf.entries.extend(Entries.from_raw(entries))
            n += len(entries)
        return n

    def _wait_for_entries(self, block_ms: int) -> None:
        """Block until an entry arrives after a stream's cursor (or ``block_ms`` passed)."""
        if self._contended:
            self._contended = False
            self._sleep(CONTENDED_SLEEP_SECONDS)
            return
        streams = [s for s in self.kinds if s in self._cursors]
        if not streams:
            self._sleep(min(block_ms, 100) / 1000)
            return
        got = self.r.xread({s: self._cursors[s] for s in streams}, count=1, block=block_ms)
        self._contended = bool(got)

    def _recover_lost_read(self) -> None:
        """After a read whose reply may be lost: take back everything this consumer holds, as at start."""
        self._wait_inflight()
        self._buffers = {s: Buffer() for s in self.kinds}  # recorded too: recovered with the lost ones
        self._recover_own()
        self._read_lost = False

    def _prefetch(self) -> None:
        """Ask for the next entries before this batch is decoded, when a buffer is full.

        Redis builds the reply while this batch is decoded and the last one inserted.
        The ranges are recorded from then on, exactly as after a plain read.
        """
        size = self.settings.ingest_batch_size
        if self._prefetched is not None or max(len(b.entries) for b in self._buffers.values()) < size:
            return
        self._prefetched = self._send_reads(self._room(ahead=True))

    def _take_prefetched(self) -> list[tuple[str, Any]] | None:
        """The replies of the read ``_prefetch`` sent, or None when none was sent."""
        sent, self._prefetched = self._prefetched, None
        return None if sent is None else self._receive(sent)

    def _flush(self, force: bool) -> None:
        now = time.monotonic()
        for stream, buf in self._buffers.items():
            if not buf.ranges:
                continue
            full = len(buf.entries) >= self.settings.ingest_batch_size
            if force or full or now - buf.since >= self.settings.ingest_batch_seconds:
                self._buffers[stream] = Buffer()
                self._process(stream, buf.ranges, buf.entries, background=True)

    # ---- batches ---------------------------------------------------------------

    def _process(
        self, stream: str, ranges: list[Range], entries: Entries, *, attempts: int = 0,
        legacy: Sequence[str] = (), background: bool = False,
    ) -> None:
        """Decode, dead-letter the malformed, drop duplicates and landed replays, then insert."""
        kind = self.kinds[stream]
        skip = frozenset().union(*(r.skip for r in ranges))
        if skip:
            entries = entries.subset(i for i in range(len(entries)) if entries.id(i) not in skip)
        rows, cols, poison = decode(kind, entries)
        if poison:
            ack = [p[0] for p in poison] if legacy else []
            self._retry_redis(lambda: self._dead_letter(stream, poison, ranges, ack=ack))
        keep: list[int] | None = None  # positions in cols of the rows kept
        if not isinstance(cols, TableColumns):  # the Arrow path refuses a batch with a key twice
            row_keys = kind.keys_of(cols)
            if len(set(row_keys)) != len(row_keys):
                seen: set[Hashable] = set()
                keep = []
                for i, k in enumerate(row_keys):
                    if k not in seen:
                        seen.add(k)
                        keep.append(i)
        if kind.replays and not entries.plain():
            keep = self._drop_landed_replays(stream, entries, rows, cols, keep)
        if keep is not None:
            cols = take(cols, keep)
            rows = [rows[i] if rows is not None else i for i in keep]
        # A batch without ranges (legacy pending entries, an unrecorded read) is named by its ids.
        named = [] if ranges else [entries.id(i) for i in range(len(entries))]
        token = range_token(stream, ranges, named)
        batch = Batch(stream, kind, ranges, entries, rows, cols, token, attempts, list(legacy))
        if not n_rows(cols):
            self._retry_redis(lambda: self._finish(batch))
        elif background:
            self._submit(batch)
        else:
            self._complete(batch)

    def _drop_landed_replays(
        self, stream: str, entries: Entries, rows: list[int] | None, cols: Columns, keep: list[int] | None
    ) -> list[int] | None:
        """Leave out clicks replayed from a redirect's spool (``r=1``) that reached ClickHouse before."""
        candidates = keep if keep is not None else list(range(n_rows(cols)))
        entry_of = (lambda i: i) if rows is None else rows.__getitem__
        replayed = [i for i in candidates if _is_replay(entries.values[entry_of(i)])]
        if not replayed:
            return keep
        self._wait_inflight()  # our own previous batch may hold the originals
        newest = max((entries.id(entry_of(i)) for i in replayed), key=id_key)
        self._retry_redis(lambda: self._wait_for_older(stream, newest))
        landed = self._landed_replays(cols, replayed)
        if not landed:
            return keep
        return [i for i in candidates if i not in landed]

    def _wait_for_older(self, stream: str, entry_id: str) -> None:
        """Let other workers finish the entries older than a replay: its original may be among them.

        The original XADD of a replayed click comes before the replay in the stream, so
        once no other worker holds an older entry, ClickHouse has the answer.
        Bounded by the claim timeout: a dead holder's ranges are taken over after it anyway.
        """
        deadline = time.monotonic() + self.settings.ingest_claim_idle_seconds
        while time.monotonic() < deadline:
            older = [
                r for r in delivery.ranges(self.r, stream)
                if r.owner != self._token and id_key(r.first) < id_key(entry_id)
            ]
            legacy = self.r.xpending_range(stream, keys.INGEST_GROUP, min="-", max="(" + entry_id, count=100)
            if not older and all(text(item["consumer"]) == self.name for item in legacy):
                return
            self._sleep(0.05)

    def _landed_replays(self, cols: Columns, replayed: list[int]) -> set[int]:
        """Which clicks replayed from the redirect's spool reached the stream (and ClickHouse) before."""
        times = [_ms(cols["ts"][i]) for i in replayed]
        ids = [cols["click_id"][i] for i in replayed]
        landed = set(
            self._query_ch(
                "SELECT click_id FROM clicks WHERE ts >= fromUnixTimestamp64Milli({t0:Int64}, 'UTC') "
                "AND ts <= fromUnixTimestamp64Milli({t1:Int64}, 'UTC') AND click_id IN {ids:Array(String)}",
                {"t0": min(times), "t1": max(times), "ids": ids},
            )
        )
        return {i for i, click_id in zip(replayed, ids, strict=True) if click_id in landed}

    def _query_ch(self, sql: str, params: dict[str, Any]) -> list[Any]:
        attempt = 0
        while True:
            try:
                result = [row[0] for row in self.ch.query(sql, params)]
                self._ch_ok()
                return result
            except (StorageUnavailable, QueryError) as exc:
                attempt += 1
                self._ch_failed(exc)
                self._sleep(self._backoff(attempt))

    def _complete(self, batch: Batch) -> None:
        """Insert a batch (only what ClickHouse lacks, when resumed), then drop its ranges."""
        if batch.attempts > self.settings.ingest_max_deliveries:
            self._give_up(batch, f"the batch failed {batch.attempts} times")
            return
        self._crash_point("before_insert")
        cols, token = batch.cols, batch.token
        if batch.attempts:
            # Resumed after a crash or retried after an error: its rows may have landed, all,
            # some, or none (a token recorded without its part). Insert what is missing.
            landed = set(self._landed(batch.kind, cols))
            if landed:
                cols = take(cols, [i for i, k in enumerate(batch.kind.keys_of(cols)) if k not in landed])
            token = f"{batch.token}:attempt:{batch.attempts}"
        uncertain = False
        while n_rows(cols):
            try:
                uncertain = self._insert(batch, batch.kind.arrow(cols), token)
                break
            except (LeaseLost, Abandon):
                raise
            except Exception as exc:
                # Refused before sending (a value the driver cannot encode): the rows' fault.
                metrics.INGEST_RETRIES.labels(batch.kind.name).inc()
                log.warning("batch %s of %s failed: %s", batch.token, batch.stream, exc)
                batch.attempts = int(self._retry_redis(lambda: self._count_attempt(batch)))
                if batch.attempts > self.settings.ingest_max_deliveries:
                    self._give_up(batch, f"insert failed: {exc}")
                    return
        if uncertain:
            self._settle(batch, cols, token)
        self._crash_point("after_insert")
        self._retry_redis(lambda: self._finish(batch))
        rows = n_rows(batch.cols)
        metrics.INGEST_ROWS.labels(batch.kind.name).inc(rows)
        metrics.INGEST_BATCHES.labels(batch.kind.name).inc()
        self.rows_inserted += rows
        self.batches += 1

    def _count_attempt(self, batch: Batch) -> int:
        if not batch.ranges:
            return batch.attempts + 1
        with self.r.pipeline(transaction=True) as p:
            for rng in batch.ranges:
                p.hincrby(rng.key, "attempts", 1)
            return max(int(x) for x in p.execute())

    def _settle(self, batch: Batch, cols: Columns, token: str) -> None:
        """Make sure ClickHouse holds every row of an insert that was retried.

        The retry carries the same token, so rows that landed are not inserted twice.
        But a MergeTree that is not replicated records a token before it commits the part:
        a process killed in between (chDB runs inside the embedded worker) leaves a token
        without its rows, and every retry with that token is dropped. So the rows are checked
        by key, and the missing ones go in again under a token of their own (the click
        rollups are projections inside the same parts, migration 0023: they follow exactly).
        """
        for repair in range(1, 1000):
            landed = set(self._landed(batch.kind, cols))
            missing = [i for i, k in enumerate(batch.kind.keys_of(cols)) if k not in landed]
            if not missing:
                return
            log.warning(
                "batch %s of %s: %d of %d rows are not in ClickHouse after a retried insert "
                "(its deduplication token outlived an uncommitted part); inserting them again",
                batch.token, batch.stream, len(missing), n_rows(cols),
            )
            metrics.INGEST_REPAIRED.labels(batch.kind.name).inc(len(missing))
            self._insert(batch, batch.kind.arrow(take(cols, missing)), f"{token}:repair:{repair}")
        raise RuntimeError(f"batch {batch.token} of {batch.stream} could not be settled")

    def _insert(self, batch: Batch, data: pa.Table, token: str) -> bool:
        """Insert ``data`` for ``batch`` under ``token`` until ClickHouse takes it; True if it retried.

        Unreachable, or refused for every row alike (schema, disk): wait, the stream holds.
        Anything else (a value the driver cannot encode) is the rows' fault and is raised.
        """
        attempt = 0
        while True:
            self._retry_redis(self._check_lease)
            try:
                self.ch.insert_arrow(batch.kind.table, data, dedup_token=token, settings=batch.kind.insert_settings)
                self._ch_ok()
                return attempt > 0
            except (StorageUnavailable, QueryError) as exc:
                attempt += 1
                metrics.INGEST_RETRIES.labels(batch.kind.name).inc()
                self._ch_failed(exc)
                self._sleep(self._backoff(attempt))
                self._retry_redis(lambda: self._touch(batch))

    def _finish(self, batch: Batch) -> None:
        with self.r.pipeline(transaction=True) as p:
            delivery.finish(p, batch.ranges)
            if batch.legacy:
                p.xack(batch.stream, keys.INGEST_GROUP, *batch.legacy)
            p.execute()

    def _touch(self, batch: Batch) -> None:
        """Mark a batch being retried as worked on, so no other worker takes it over."""
        delivery.touch(self.r, batch.ranges, self._token)
        if batch.legacy:
            self.r.xclaim(batch.stream, keys.INGEST_GROUP, self.name, 0, batch.legacy, justid=True)

    def _give_up(self, batch: Batch, reason: str) -> None:
        """A batch failed too often: dead-letter a lone entry, else split its ranges in halves."""
        landed = set(self._landed(batch.kind, batch.cols))
        ids = batch.row_ids()
        todo = [ids[i] for i, k in enumerate(batch.kind.keys_of(batch.cols)) if k not in landed]
        where = {batch.entries.id(i): i for i in range(len(batch.entries))}

        def fields(entry_id: str) -> Fields:
            return _pairs(batch.entries.fields(where[entry_id]))

        groups: list[tuple[Range | None, list[str]]] = [
            (rng, [i for i in todo if rng.holds(i)]) for rng in batch.ranges
        ]
        if batch.legacy:
            groups = [(None, todo)]
        for rng, mine in groups:
            if len(mine) <= 1:
                poison = [(i, fields(i), reason) for i in mine]

                def bury(rng: Range | None = rng, poison: list[tuple[str, Fields, str]] = poison) -> None:
                    whole = Batch(
                        batch.stream, batch.kind, [rng] if rng else [], Entries(), [], {}, "", 0, batch.legacy
                    )
                    self._dead_letter(batch.stream, poison, finish=whole)

                self._retry_redis(bury)
                continue
            half = mine[: len(mine) // 2]
            log.warning("splitting a batch of %s (%d rows): %s", batch.stream, len(mine), reason)
            if rng is None:
                unlanded = set(mine)
                landed_ids = [i for i in batch.legacy if i not in unlanded]
                if landed_ids:
                    self._retry_redis(partial(self.r.xack, batch.stream, keys.INGEST_GROUP, *landed_ids))
                for part in (half, mine[len(half) :]):
                    sub = batch.entries.subset(where[i] for i in part)
                    self._process(batch.stream, [], sub, attempts=1, legacy=part)
                continue
            inside = batch.entries.subset(i for i in range(len(batch.entries)) if rng.holds(batch.entries.id(i)))
            for sub_range, sub in self._split(rng, half[-1], inside):
                self._process(batch.stream, [sub_range], sub, attempts=sub_range.attempts)

    def _split(self, rng: Range, last: str, entries: Entries) -> list[tuple[Range, Entries]]:
        """Replace a range by (start, last] and (last, end], both to be checked against ClickHouse."""
        cut = sum(1 for i in range(len(entries)) if id_key(entries.id(i)) <= id_key(last))
        head, tail = entries.subset(range(cut)), entries.subset(range(cut, len(entries)))
        subs = []
        for start, end, part in ((rng.start, last, head), (last, rng.end, tail)):
            first = part.id(0) if len(part) else end
            sub = Range(rng.stream, start, end, first, len(part), self.name, self._token, 1, rng.skip)
            subs.append((sub, part))

        def write() -> None:
            with self.r.pipeline(transaction=True) as p:
                delivery.finish(p, [rng])
                for sub, _ in subs:
                    delivery.record(p, sub, touched_ms=int(time.time() * 1000))
                p.execute()

        self._retry_redis(write)
        return subs

    def _landed(self, kind: Kind, cols: Columns) -> list[Hashable]:
        """Keys of rows ClickHouse already has (resuming, settling or splitting a batch)."""
        out: list[Hashable] = []
        keys_ = kind.keys_of(cols)
        step = 5000  # bound parameters travel in the URL of an HTTP ClickHouse
        if kind is CLICKS:
            times = [_ms(t) for t in cols["ts"]]
            brands = cols["brand_id"]
            for start in range(0, len(keys_), step):
                part = slice(start, start + step)
                out.extend(
                    self._query_ch(
                        "SELECT click_id FROM clicks WHERE brand_id IN {brands:Array(String)} "
                        "AND ts >= fromUnixTimestamp64Milli({t0:Int64}, 'UTC') "
                        "AND ts <= fromUnixTimestamp64Milli({t1:Int64}, 'UTC') AND click_id IN {ids:Array(String)}",
                        {
                            "brands": sorted(set(brands[part])),
                            "t0": min(times[part]), "t1": max(times[part]), "ids": keys_[part],
                        },
                    )
                )
            return out
        for start in range(0, len(keys_), step):
            out.extend(
                self._query_ch(
                    "SELECT (brand_id, order_id, version) FROM conversions "
                    "WHERE (brand_id, order_id, version) IN {keys:Array(Tuple(String, String, UInt64))}",
                    {"keys": keys_[start : start + step]},
                )
            )
        return [tuple(cast(Sequence[Any], k)) for k in out]

    def _dead_letter(
        self, stream: str, entries: list[tuple[str, Fields, str]], ranges: Sequence[Range] = (),
        ack: Sequence[str] = (), finish: Batch | None = None,
    ) -> None:
        """Send entries to the dead-letter stream and note them in their ranges (or acknowledge them)."""
        dead = {e[0] for e in entries}
        with self.r.pipeline(transaction=True) as p:
            for entry_id, fields, reason in entries:
                record: dict[Any, Any] = dict(fields)
                record.update({b"stream": stream, b"id": entry_id, b"reason": reason[:1000]})
                p.xadd(keys.DEAD_LETTER_STREAM, record, maxlen=DEAD_LETTER_MAXLEN, approximate=True)
            for rng in ranges:
                mine = {i for i in dead if rng.holds(i)}
                if mine:
                    rng.skip = rng.skip | mine
                    delivery.note_skip(p, rng)
            if ack:
                p.xack(stream, keys.INGEST_GROUP, *ack)
            if finish is not None:
                delivery.finish(p, finish.ranges)
                if finish.legacy:
                    p.xack(stream, keys.INGEST_GROUP, *finish.legacy)
            p.execute()
        metrics.INGEST_DEAD_LETTERS.labels(self.kinds[stream].name).inc(len(entries))
        self.dead_lettered += len(entries)
        for entry_id, _, reason in entries:
            log.warning("dead-lettered entry %s of %s: %s", entry_id, stream, reason)

    def _ch_ok(self) -> None:
        if self.ch_failing_since is not None:
            log.info("ClickHouse answers again")
        self.ch_error = None
        self.ch_failing_since = None

    def _ch_failed(self, exc: Exception) -> None:
        message = getattr(exc, "message", str(exc))
        if self.ch_failing_since is None:
            self.ch_failing_since = time.monotonic()
            log.warning("ClickHouse at %s fails, backing off: %s", describe(self.settings), message)
        self.ch_error = message

    # ---- recovery --------------------------------------------------------------

    def _recover_own(self) -> None:
        """Finish the ranges this consumer name held before (a crash, a lost reply, a lapsed lease)."""
        for stream in self.kinds:
            held: list[Range] = self._retry_redis(partial(delivery.ranges, self.r, stream))
            self._resume(stream, [r for r in held if r.consumer == self.name], min_idle_ms=0)
        self._recover_legacy(own_only=True)

    def _claim_idle(self) -> None:
        """Take over the ranges of dead workers (lease expired, ranges idle), and finish them.

        Only a worker whose heartbeat lease expired (or was taken by its successor) is
        dead; its ranges are taken once idle for ``ingest_claim_idle_seconds``. Idle time
        alone would let a slow but live worker's batch be taken and counted twice.
        """
        self._wait_inflight()
        idle_ms = int(self.settings.ingest_claim_idle_seconds * 1000)
        for stream in self.kinds:
            held: list[Range] = self._retry_redis(partial(delivery.ranges, self.r, stream))
            leases: dict[str, str | None] = {}
            dead = []
            for rng in held:
                if rng.consumer == self.name:
                    continue
                if rng.consumer not in leases:
                    raw = self._retry_redis(partial(self.r.get, keys.heartbeat(rng.consumer)))
                    leases[rng.consumer] = None if raw is None else text(raw)
                if leases[rng.consumer] != rng.owner:
                    dead.append(rng)
            self._resume(stream, dead, min_idle_ms=idle_ms)
        self._recover_legacy(own_only=False)

    def _resume(self, stream: str, held: list[Range], min_idle_ms: int) -> None:
        """Take ranges over and finish them, read back from the stream, in batches."""
        size = self.settings.ingest_batch_size
        group: list[Range] = []
        entries = Entries()
        for rng in held:
            if not self._retry_redis(partial(delivery.take, self.r, rng, self._token, self.name, min_idle_ms)):
                continue  # its owner came back, another worker took it, or it is not idle yet
            log.info("resuming range (%s, %s] of %s (attempt %d)", rng.start, rng.end, stream, rng.attempts)
            got = Entries.from_raw(self._retry_redis(partial(delivery.fetch, self._raw, rng)))
            # A range that failed before goes alone: an innocent neighbour is not split with it.
            if group and (len(entries) + len(got) > size or rng.attempts > 1 or group[-1].attempts > 1):
                self._process(stream, group, entries, attempts=max(r.attempts for r in group))
                group, entries = [], Entries()
            group.append(rng)
            entries.extend(got)
        if group:
            self._process(stream, group, entries, attempts=max(r.attempts for r in group))

    def _recover_legacy(self, own_only: bool) -> None:
        """Finish entries the ingest before ranges left in the pending list (upgrade mid-flight).

        They are checked against ClickHouse like any resumed batch, then acknowledged.
        A pending entry of a worker that still runs the old version is left to it.
        """
        for stream in self.kinds:
            summary = self._retry_redis(partial(self.r.xpending, stream, keys.INGEST_GROUP))
            if not int(summary.get("pending") or 0):
                self._retry_redis(partial(self._forget_legacy_manifests, stream))
                continue
            for consumer in summary.get("consumers") or []:
                name = text(consumer["name"])
                if name == self.name:
                    self._finish_legacy(stream, name, idle_ms=0)
                elif not own_only and not self._retry_redis(partial(self.r.exists, keys.heartbeat(name))):
                    self._finish_legacy(stream, name, idle_ms=int(self.settings.ingest_claim_idle_seconds * 1000))
            if not int(self._retry_redis(partial(self.r.xpending, stream, keys.INGEST_GROUP)).get("pending") or 0):
                self._retry_redis(partial(self._forget_legacy_manifests, stream))

    def _finish_legacy(self, stream: str, consumer: str, idle_ms: int) -> None:
        for _ in range(10_000):
            listed = self._retry_redis(
                partial(
                    self.r.xpending_range, stream, keys.INGEST_GROUP, "-", "+", self.settings.ingest_batch_size,
                    consumername=consumer, idle=idle_ms,
                )
            )
            ids = [text(item["message_id"]) for item in listed]
            if not ids:
                return
            claimed = self._retry_redis(partial(self.r.xclaim, stream, keys.INGEST_GROUP, self.name, idle_ms, ids))
            got = {text(i): f for i, f in claimed}
            # An entry trimmed while pending has no fields left: only its acknowledgement.
            raw: list[Any] = [[i, [x for kv in got[i].items() for x in kv]] for i in ids if got.get(i)]
            gone = [i for i in ids if i in got and not got[i]]
            if gone:
                self._retry_redis(partial(self.r.xack, stream, keys.INGEST_GROUP, *gone))
            if not raw:
                return
            log.info("finishing %d pending entries of %s left by %s", len(raw), stream, consumer)
            self._process(stream, [], Entries.from_raw(raw), attempts=1, legacy=[e[0] for e in raw])

    def _forget_legacy_manifests(self, stream: str) -> None:
        firsts = self.r.smembers(keys.legacy_ingest_batches(stream))
        if firsts:
            self.r.delete(*(keys.legacy_ingest_batch(stream, text(f)) for f in firsts))
            self.r.delete(keys.legacy_ingest_batches(stream))

    # ---- trimming, stats -------------------------------------------------------

    def _maintain(self) -> None:
        """Trim every stream below what its groups still need and refresh the gauges."""
        for stream in self.kinds:
            st = stream_stats(self.r, stream)
            self.stats[stream] = st
            if st["trim_below"] is not None:
                self.r.xtrim(stream, minid=st["trim_below"], approximate=True)
            metrics.set_stream_gauges(stream, st)

    def status(self) -> dict[str, Any]:
        failing = self.ch_failing_since
        return {
            "worker": self.name,
            "clickhouse_error": self.ch_error,
            "clickhouse_failing_seconds": round(time.monotonic() - failing, 1) if failing is not None else 0.0,
            "rows_inserted": self.rows_inserted,
            "batches": self.batches,
            "dead_lettered": self.dead_lettered,
        }


def _ms(ts: Any) -> int:
    """Epoch milliseconds of a click time (the fast path keeps ms, the row path datetimes)."""
    return ts if isinstance(ts, int) else int(ts.timestamp() * 1000)


def lower_priority(nice: int) -> None:
    """Raise the calling thread's nice value (Linux schedules threads one by one).

    In embedded mode ingest shares the process, and the two cores, with the redirect's
    event loop: background work should give way to a follower waiting for a 302.
    """
    if nice > 0:
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stream_stats(r: Any, stream: str) -> dict[str, Any]:
    """Length, lag, held entries and their age, and the trim floor of one stream."""
    return delivery.gauges(delivery.stats(r, stream, keys.INGEST_GROUP))


async def stream_stats_async(r: Any, stream: str) -> dict[str, Any]:
    return delivery.gauges(await delivery.stats_async(r, stream, keys.INGEST_GROUP))


# ---- embedded component, readiness, CLI ---------------------------------------------


class IngestComponent:
    """The ingest loop in a background thread of ``tracker serve`` (embedded mode)."""

    def __init__(self, settings: Settings, ch: ClickHouse) -> None:
        self.settings = settings
        self.ch = ch
        self.worker: Worker | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._redis: redis.Redis | None = None

    async def start(self) -> None:
        self._redis = redis_client.connect_sync(self.settings)
        self.worker = Worker(self.settings, self._redis, self.ch, nice=EMBEDDED_NICE)
        self._thread = threading.Thread(target=self._run, name="tracker-ingest", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        assert self.worker is not None
        try:
            self.worker.run(self._stop)
        except Exception:
            log.exception("the ingest loop crashed")

    async def stop(self) -> None:
        import anyio.to_thread

        self._stop.set()
        if self._thread is not None:
            await anyio.to_thread.run_sync(self._thread.join, GRACE_SECONDS + 5)
        if self._redis is not None:
            self._redis.close()


async def ingest_status(settings: Settings, redis: Any, component: IngestComponent) -> dict[str, Any]:
    """Readiness: lag and pending per stream, and a ``problem`` when reports go stale."""
    streams = [*keys.click_streams(settings.stream_shards), keys.CONVERSION_STREAM]
    out: dict[str, Any] = {"streams": {}}
    worst = 0.0
    for stream in streams:
        st = await stream_stats_async(redis, stream)
        st.pop("trim_below")
        out["streams"][stream] = st
        worst = max(worst, st["oldest_pending_seconds"], st["oldest_undelivered_seconds"])
    problems = []
    if component.worker is not None:
        ws = component.worker.status()
        out["worker"] = ws
        if ws["clickhouse_error"] and ws["clickhouse_failing_seconds"] >= 5:
            problems.append(f"Ingest cannot write to ClickHouse: {ws['clickhouse_error']}")
        # Only the embedded server owns its ingest; a production HTTP worker stays ready
        # while a separate ingest fleet catches up (redirects do not need it).
        if worst > LAG_PROBLEM_SECONDS:
            problems.append(f"Ingest is {worst:.0f} s behind: clicks reach reports late.")
    if problems:
        out["problem"] = " ".join(problems)
    return out


def run_worker(settings: Settings, once: bool) -> int:
    """``tracker ingest [--once]``: one worker until SIGTERM/SIGINT (or until drained)."""
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        log.info("signal %d: finishing the batch and stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    attempt = 0
    while True:
        try:
            ch = ClickHouse.connect(settings)
            break
        except StorageUnavailable as exc:
            attempt += 1
            if attempt == 1 or attempt % 10 == 0:
                log.warning("%s Retrying.", exc.message)
            if stop.wait(min(BACKOFF_MAX_SECONDS, 0.2 * 2**attempt)):
                return 0
    r = redis_client.connect_sync(settings)
    worker = Worker(settings, r, ch)
    server = None
    if settings.ingest_metrics is not None and not once:
        # This process's counters (rows, batches, retries, repairs, dead letters) and the stream
        # gauges its maintenance refreshes every few seconds, for a Prometheus on another host.
        host, port = settings.ingest_metrics
        try:
            server, _ = prometheus_client.start_http_server(port, addr=host)
        except OSError as exc:
            r.close()
            ch.close()
            raise SettingsError(f"TRACKER_INGEST_METRICS={host}:{port} cannot be served: {exc.strerror}.") from None
        log.info("ingest metrics on http://%s:%d/metrics", host, port)
    try:
        if once:
            worker._stop = stop
            n = worker.drain()
            log.info("drained %d rows", n)
        else:
            worker.run(stop)
    except Abandon:
        return 0
    finally:
        if server is not None:
            server.shutdown()
        r.close()
        ch.close()
    return 0
