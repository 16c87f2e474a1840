"""Ingest: Redis streams -> ClickHouse, nothing lost and nothing counted twice.

Workers share the click and conversion streams through one consumer group.
A batch goes through fixed steps, each safe to crash in:

1. read entries (``XREADGROUP``), decode and enrich them (``tracker.enrich``);
   a malformed entry goes to the dead-letter stream at once;
2. drop duplicates inside the batch (click id, or brand + order + version) and
   replayed clicks (``r=1``) whose click id ClickHouse already has;
3. write the batch's *manifest* to Redis: the ids whose rows are inserted, the
   ids only acknowledged, and the insert deduplication token (a hash of the ids);
4. insert with that token (``insert_deduplication_token``; the tables keep a
   ``non_replicated_deduplication_window``); the click rollups are projections,
   stored inside the same parts, so they land exactly when the rows do;
5. acknowledge the ids and delete the manifest in one ``MULTI``.

After a crash the entries are still pending. A restarted worker takes its own
consumer name back and first re-forms its pending entries into the recorded
batches; other workers claim the entries of a worker whose heartbeat lease
expired (once idle) and re-form them the same way. A re-formed batch has the
same rows and the same token, so an insert that had landed is dropped by
ClickHouse. The token alone is not trusted: a MergeTree that is not replicated
records it before it commits the part, so a kill in between (chDB inside the
embedded worker) keeps the token and loses the rows. After any retried insert
the worker checks the batch's keys in ClickHouse and inserts what is missing
under a fresh token (``_settle``). Entries without a manifest were never
inserted and form new batches. A live worker's entries are
never claimed, however slow it is; one that stalled past its lease checks it
before inserting and starts over instead.

A batch that keeps failing (its manifest counts attempts, a crash included) is
split in halves until the bad entry is alone, and that entry is dead-lettered
after ``ingest_max_deliveries`` attempts. ClickHouse being unreachable or
rejecting a statement for every row (schema, disk) is not the entries' fault:
the worker backs off and retries, and the stream holds the backlog.

Streams are trimmed below the oldest entry any group still needs (Redis 7.0
has no ``XTRIM ... ACKED``): the smaller of each group's oldest pending id and
its last-delivered id.
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
from itertools import repeat
from operator import itemgetter
from typing import Any, cast

import prometheus_client
import pyarrow as pa
import redis

from tracker import enrich, keys, metrics, redis_client
from tracker.clickhouse import ClickHouse, describe
from tracker.errors import QueryError, SettingsError, StorageUnavailable
from tracker.events import CLICK_COLUMNS, CONVERSION_COLUMNS
from tracker.settings import Settings

log = logging.getLogger("tracker.ingest")

GRACE_SECONDS = 10.0
HEARTBEAT_SECONDS = 15
MAINTAIN_SECONDS = 2.0
DEAD_LETTER_MAXLEN = 100_000
# Readiness: reports are stale when the oldest entry not yet in ClickHouse is older than this.
LAG_PROBLEM_SECONDS = 60.0
BACKOFF_MAX_SECONDS = 5.0

_REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)

Fields = dict[bytes, bytes]
Entry = tuple[str, Fields]

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
    return {c: [v[i] for i in idx] for c, v in cols.items()}


def decode_entries(kind: Kind, entries: Sequence[Entry]) -> tuple[list[str], Columns, list[tuple[str, Fields, str]]]:
    """Entries -> (ids of good rows, their columns, poison entries with the reason)."""
    if kind.decode_table is not None:
        try:
            payloads = [f[b"e"] for _, f in entries]
            return [e[0] for e in entries], TableColumns(kind.decode_table(payloads)), []
        except (KeyError, TypeError, ValueError):
            pass  # not every line is canonical: the Python paths below decide
    if kind.decode_many is not None:
        try:
            payloads = [f[b"e"] for _, f in entries]
            return [e[0] for e in entries], kind.decode_many(payloads), []
        except (KeyError, TypeError, ValueError):
            pass  # some entry is malformed: find it below
    ids: list[str] = []
    rows: list[list[Any]] = []
    poison: list[tuple[str, Fields, str]] = []
    for entry_id, fields in entries:
        try:
            rows.append(kind.decode(fields[b"e"]))
            ids.append(entry_id)
        except KeyError:
            poison.append((entry_id, fields, "malformed entry: no field e"))
        except ValueError as exc:
            poison.append((entry_id, fields, f"malformed entry: {exc}"))
    cols: Columns = {c: [] for c in kind.columns}
    if rows:
        cols = dict(zip(kind.columns, zip(*rows, strict=True), strict=True))
    return ids, cols, poison


@dataclass
class Batch:
    stream: str
    kind: Kind
    first_id: str
    row_ids: list[str]
    skip_ids: list[str]
    cols: Columns
    token: str
    attempts: int = 1

    @property
    def ids(self) -> list[str]:
        return self.row_ids + self.skip_ids


@dataclass
class Buffer:
    entries: list[Entry] = field(default_factory=list)
    since: float = 0.0


def batch_token(stream: str, ids: Sequence[str]) -> str:
    """Insert deduplication token of a batch: a hash of its stream and entry ids."""
    h = hashlib.blake2b(digest_size=16)
    h.update(stream.encode())
    if ids:
        h.update(("," + ",".join(ids)).encode())  # the bytes of one update per ",id"
    return f"{stream}:{ids[0] if ids else '-'}:{len(ids)}:{h.hexdigest()}"


_E = (b"e",)


def raw_entries(entries: Sequence[Any]) -> Iterable[Entry]:
    """XREADGROUP's raw entries ``[[id, [field, value, ...]], ...]`` as ``(id, fields)``.

    The usual entry has the one field ``e``: its dict is built by C calls only.
    """
    ids, fields = zip(*entries, strict=True)
    if None not in fields and set(map(len, fields)) == {2} and set(map(itemgetter(0), fields)) == {b"e"}:
        dicts: Iterable[Fields] = map(dict.fromkeys, repeat(_E), map(itemgetter(1), fields))
    else:
        dicts = (dict(zip(f[::2], f[1::2], strict=True)) if f else {} for f in fields)
    return zip(map(_id, ids), dicts, strict=True)


def _stream_replies(reply: Any) -> list[tuple[Any, Sequence[Any]]]:
    """The raw XREADGROUP reply per stream: a RESP3 map, or RESP2 ``[[stream, entries], ...]``."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return list(reply.items())
    return [(item[0], item[1]) for item in reply]


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


def stream_time(entry_id: str) -> float:
    """Unix time (s) at which an entry was added: the milliseconds part of its id."""
    return int(entry_id.split("-", 1)[0]) / 1000.0


def _id(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


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
    ) -> None:
        self.settings = settings
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
        # New entries are read without redis-py's reply callback, which builds every entry in
        # Python (more than the rest of a batch cost): a client on the same pool, raw replies.
        self._raw: Any = redis.Redis(connection_pool=r.connection_pool)
        self._raw.set_response_callback("XREADGROUP", lambda response, **options: response)
        self._prefetched: Any = None  # a connection awaiting the reply of a read sent ahead
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
        """Create the groups, take a consumer name, and finish what a crash left pending."""
        self._retry_redis(self._create_groups)
        if not self._fixed_name:
            self.name = self._retry_redis(self._take_name)
        self._retry_redis(lambda: self._heartbeat(force=True))
        log.info("ingest worker %s started", self.name)
        self._recover_own()

    def run(self, stop: threading.Event) -> None:
        """Ingest until ``stop`` is set, then flush and acknowledge within the grace period."""
        self._stop = stop
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
        except Abandon:
            pass
        finally:
            self._shutdown()
            self._close_pool()

    def drain(self) -> int:
        """Drain-once mode: recover, claim idle entries, read until the streams are empty."""
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
        self._read(block_ms=self._block_ms())
        self._flush(force=False)

    def _shutdown(self) -> None:
        self._deadline = time.monotonic() + self.grace_seconds
        try:
            if self._prefetched is not None:
                self._absorb(self._take_prefetched())  # delivered already: finish them too
            self._flush(force=True)
            self._wait_inflight()
            self._maintain()
            self._release_name()
        except (Abandon, *_REDIS_ERRORS) as exc:
            log.warning("ingest stopped with entries left pending (they are recovered on the next start): %s", exc)
        log.info("ingest worker %s stopped", self.name)

    def _submit(self, batch: Batch) -> None:
        self._wait_inflight()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tracker-ingest-insert")
        self._inflight = self._pool.submit(self._complete, batch)

    def _wait_inflight(self) -> None:
        """Finish the batch inserting in the background (its errors surface here)."""
        future, self._inflight = self._inflight, None
        if future is not None:
            future.result()

    def _close_pool(self) -> None:
        self._inflight = None  # done or abandoned: its entries stay pending either way
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
        so it finds that predecessor's pending entries at once instead of waiting
        for another worker to claim them.
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
            holder = _id(raw)
            pid = int(holder.split(":", 1)[0]) if holder.split(":", 1)[0].isdigit() else -1
            dead = pid == os.getpid() or not _pid_alive(pid)
            if dead and self.r.eval(_TAKE_OVER, 1, key, holder, self._token, HEARTBEAT_SECONDS):
                return name
        raise StorageUnavailable(f"No free ingest consumer name on host {host}.")

    def _heartbeat(self, force: bool = False) -> None:
        """Refresh this consumer's lease; while it lives, no other worker claims our entries."""
        key = keys.heartbeat(self.name)
        if force and self._fixed_name:
            self.r.set(key, self._token, ex=HEARTBEAT_SECONDS)
        elif not self.r.eval(_REFRESH, 1, key, self._token, HEARTBEAT_SECONDS):
            # A stall longer than the lease: other workers may have claimed what we hold.
            self._lease_lost = True
        self._next_heartbeat = time.monotonic() + HEARTBEAT_SECONDS / 3

    def _check_lease(self) -> None:
        """Right before an insert: the entries must still be ours (see ``LeaseLost``)."""
        self._heartbeat()
        if self._lease_lost:
            raise LeaseLost(f"The lease of ingest consumer {self.name} lapsed; its batches may be claimed.")

    def _renew_lease(self) -> None:
        """After a lapse: drop what we hold (others may finish it), take a name, recover."""
        with contextlib.suppress(LeaseLost):
            self._wait_inflight()
        with contextlib.suppress(*_REDIS_ERRORS):
            self._take_prefetched()  # those entries are pending: recovered below with the rest
        for buf in self._buffers.values():
            buf.entries = []
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
        waiting = [b.since for b in self._buffers.values() if b.entries]
        if not waiting:
            return 1000
        due = min(waiting) + self.settings.ingest_batch_seconds - time.monotonic()
        return max(1, int(due * 1000))

    def _read(self, block_ms: int | None) -> int:
        """Read new entries into the buffers; returns how many arrived."""
        if self._read_lost:
            self._recover_lost_read()
        room = self.settings.ingest_batch_size - max(len(b.entries) for b in self._buffers.values())
        if room <= 0:
            return 0
        try:
            with _gc_paused():
                reply = self._take_prefetched()
                if reply is None:
                    reply = self._raw.xreadgroup(
                        keys.INGEST_GROUP, self.name, dict.fromkeys(self.kinds, ">"), count=room, block=block_ms
                    )
                n = self._absorb(reply)
                del reply
        except _REDIS_ERRORS:
            # Redis may have delivered the entries before the reply was lost: they are pending
            # for this consumer now, and no later read returns them.
            self._read_lost = True
            raise
        if n:
            self._crash_point("mid_batch")
            self._prefetch()
        return n

    def _absorb(self, reply: Any) -> int:
        """Add the entries of a raw XREADGROUP reply to the buffers; returns how many."""
        n = 0
        now = time.monotonic()
        for stream_raw, entries in _stream_replies(reply):
            if not entries:
                continue
            buf = self._buffers[_id(stream_raw)]
            if not buf.entries:
                buf.since = now
            buf.entries.extend(raw_entries(entries))
            n += len(entries)
        return n

    def _recover_lost_read(self) -> None:
        """After a read whose reply may be lost: take back everything this consumer holds, as at start."""
        self._wait_inflight()
        for buf in self._buffers.values():
            buf.entries = []  # pending too: recovered with the lost ones
        self._recover_own()
        self._read_lost = False

    def _prefetch(self) -> None:
        """Ask for the next entries before this batch is decoded, when a buffer is full.

        Redis builds the reply (its costliest step of a batch: every entry enters the
        pending list, and the AOF) while this batch is decoded and the last one inserted.
        The entries are pending from then on, exactly as after a plain read.
        """
        size = self.settings.ingest_batch_size
        if self._prefetched is not None or max(len(b.entries) for b in self._buffers.values()) < size:
            return
        room = size - max((len(b.entries) for b in self._buffers.values() if len(b.entries) < size), default=0)
        conn = self._raw.connection_pool.get_connection()
        try:
            args: list[Any] = ["XREADGROUP", "GROUP", keys.INGEST_GROUP, self.name, "COUNT", room, "STREAMS"]
            conn.send_command(*args, *self.kinds, *([">"] * len(self.kinds)))
        except BaseException:
            conn.disconnect()
            self._raw.connection_pool.release(conn)
            raise
        self._prefetched = conn

    def _take_prefetched(self) -> Any:
        """The reply of the read ``_prefetch`` sent, or None when none was sent."""
        conn, self._prefetched = self._prefetched, None
        if conn is None:
            return None
        try:
            return conn.read_response()
        except BaseException:
            conn.disconnect()
            raise
        finally:
            self._raw.connection_pool.release(conn)

    def _flush(self, force: bool) -> None:
        now = time.monotonic()
        for stream, buf in self._buffers.items():
            if not buf.entries:
                continue
            full = len(buf.entries) >= self.settings.ingest_batch_size
            if force or full or now - buf.since >= self.settings.ingest_batch_seconds:
                entries, buf.entries = buf.entries, []
                self._process_new(stream, entries, background=True)

    # ---- batches ---------------------------------------------------------------

    def _process_new(self, stream: str, entries: list[Entry], background: bool = False) -> None:
        """Decode, dead-letter the malformed, drop duplicates, record the manifest, insert."""
        kind = self.kinds[stream]
        # An entry trimmed while pending has no fields: nothing left to insert.
        skip_ids = [i for i, f in entries if not f]
        live = [e for e in entries if e[1]] if skip_ids else entries
        row_ids, cols, poison = decode_entries(kind, live)
        if poison:
            self._retry_redis(lambda: self._dead_letter(stream, poison))
        fields_of = dict(live)
        keep: list[int] | None = None
        row_keys = kind.keys_of(cols)
        if len(set(row_keys)) != len(row_keys):
            seen: set[Hashable] = set()
            keep = []
            for i, k in enumerate(row_keys):
                if k in seen:
                    skip_ids.append(row_ids[i])
                else:
                    seen.add(k)
                    keep.append(i)
        if kind.replays:
            candidates = keep if keep is not None else range(len(row_ids))
            # Only replays carry a second field; most batches have none (checked in one C pass).
            has_more = set(map(len, fields_of.values())) != {1}
            replayed = [i for i in candidates if fields_of[row_ids[i]].get(b"r") == b"1"] if has_more else []
            if replayed:
                self._wait_inflight()  # our own previous batch may hold the originals
                newest = max((row_ids[i] for i in replayed), key=_id_key)
                self._retry_redis(lambda: self._wait_for_older(stream, newest))
                landed = self._landed_replays(cols, replayed)
                if landed:
                    skip_ids.extend(row_ids[i] for i in replayed if i in landed)
                    keep = [i for i in candidates if i not in landed]
        if keep is not None:
            cols = take(cols, keep)
            row_ids = [row_ids[i] for i in keep]
        if not row_ids:
            if skip_ids:
                self._retry_redis(lambda: self.r.xack(stream, keys.INGEST_GROUP, *skip_ids))
            return
        batch = Batch(stream, kind, row_ids[0], row_ids, skip_ids, cols, batch_token(stream, row_ids))
        self._retry_redis(lambda: self._write_manifest(batch))
        if background:
            self._submit(batch)
        else:
            self._complete(batch)

    def _wait_for_older(self, stream: str, entry_id: str) -> None:
        """Let other workers finish the entries older than a replay: its original may be among them.

        The original XADD of a replayed click comes before the replay in the stream, so
        once no other consumer holds an older entry, ClickHouse has the answer.
        Bounded by the claim timeout: a dead holder's entries are claimed after it anyway.
        """
        deadline = time.monotonic() + self.settings.ingest_claim_idle_seconds
        while time.monotonic() < deadline:
            held = self.r.xpending_range(stream, keys.INGEST_GROUP, min="-", max="(" + entry_id, count=100)
            if all(_id(item["consumer"]) == self.name for item in held):
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

    def _write_manifest(self, batch: Batch) -> None:
        key = keys.ingest_batch(batch.stream, batch.first_id)
        with self.r.pipeline(transaction=True) as p:
            p.delete(key)
            p.hset(
                key,
                mapping={
                    "rows": ",".join(batch.row_ids),
                    "skip": ",".join(batch.skip_ids),
                    "token": batch.token,
                    "attempts": batch.attempts,
                },
            )
            p.sadd(keys.ingest_batches(batch.stream), batch.first_id)
            p.execute()

    def _complete(self, batch: Batch) -> None:
        """Insert a batch whose manifest is recorded, then acknowledge it."""
        if batch.attempts > self.settings.ingest_max_deliveries:
            self._give_up(batch, f"the batch failed {batch.attempts - 1} times")
            return
        self._crash_point("before_insert")
        # A batch resumed after a crash, or retried after an error, may have half-landed.
        uncertain = batch.attempts > 1
        while True:
            try:
                if self._insert(batch, batch.kind.arrow(batch.cols), batch.token):
                    uncertain = True
                break
            except (LeaseLost, Abandon):
                raise
            except Exception as exc:
                # Refused before sending (a value the driver cannot encode): the rows' fault.
                metrics.INGEST_RETRIES.labels(batch.kind.name).inc()
                log.warning("batch %s of %s failed: %s", batch.first_id, batch.stream, exc)
                batch.attempts = int(
                    self._retry_redis(
                        lambda: self.r.hincrby(keys.ingest_batch(batch.stream, batch.first_id), "attempts", 1)
                    )
                )
                if batch.attempts > self.settings.ingest_max_deliveries:
                    self._give_up(batch, f"insert failed: {exc}")
                    return
        if uncertain:
            self._settle(batch)
        self._crash_point("after_insert")
        self._retry_redis(lambda: self._ack(batch))
        metrics.INGEST_ROWS.labels(batch.kind.name).inc(len(batch.row_ids))
        metrics.INGEST_BATCHES.labels(batch.kind.name).inc()
        self.rows_inserted += len(batch.row_ids)
        self.batches += 1

    def _settle(self, batch: Batch) -> None:
        """Make sure ClickHouse holds every row of a batch whose earlier insert may have half-landed.

        The retry above carries the batch's token, so rows that landed are not inserted twice.
        But a MergeTree that is not replicated records a token before it commits the part:
        a process killed in between (chDB runs inside the embedded worker) leaves a token
        without its rows, and every retry with that token is dropped. So the rows are checked
        by key, and the missing ones go in again under a token of their own (the click
        rollups are projections inside the same parts, migration 0023: they follow exactly).
        """
        for repair in range(1, 1000):
            landed = set(self._landed(batch))
            missing = [i for i, k in enumerate(batch.kind.keys_of(batch.cols)) if k not in landed]
            if not missing:
                return
            log.warning(
                "batch %s of %s: %d of %d rows are not in ClickHouse after a retried insert "
                "(its deduplication token outlived an uncommitted part); inserting them again",
                batch.first_id, batch.stream, len(missing), len(batch.row_ids),
            )
            metrics.INGEST_REPAIRED.labels(batch.kind.name).inc(len(missing))
            token = f"{batch.token}:repair:{batch.attempts}:{repair}"
            self._insert(batch, batch.kind.arrow(take(batch.cols, missing)), token)
        raise RuntimeError(f"batch {batch.first_id} of {batch.stream} could not be settled")

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

    def _ack(self, batch: Batch) -> None:
        with self.r.pipeline(transaction=True) as p:
            p.xack(batch.stream, keys.INGEST_GROUP, *batch.ids)
            p.delete(keys.ingest_batch(batch.stream, batch.first_id))
            p.srem(keys.ingest_batches(batch.stream), batch.first_id)
            p.execute()

    def _touch(self, batch: Batch) -> None:
        """Reset the idle time of a batch being retried, so no other worker claims it."""
        self.r.xclaim(batch.stream, keys.INGEST_GROUP, self.name, 0, batch.ids, justid=True)

    def _give_up(self, batch: Batch, reason: str) -> None:
        """A batch failed too often: dead-letter a lone entry, else split it in halves."""
        landed = set(self._landed(batch))
        keep = [i for i, k in enumerate(batch.kind.keys_of(batch.cols)) if k not in landed]
        kept = set(keep)
        skip = batch.skip_ids + [batch.row_ids[i] for i in range(len(batch.row_ids)) if i not in kept]
        if len(keep) <= 1:
            lone = [batch.row_ids[i] for i in keep]
            entries = self._retry_redis(lambda: self._fetch(batch.stream, lone))
            poison = [(i, f, reason) for i, f in entries]

            def finish() -> None:
                if poison:
                    self._dead_letter(batch.stream, poison, batch=batch)
                else:
                    self._ack(batch)

            self._retry_redis(finish)
            return
        half = len(keep) // 2
        parts = [keep[:half], keep[half:]]
        subs = []
        for n, part in enumerate(parts):
            ids = [batch.row_ids[i] for i in part]
            subs.append(
                Batch(
                    batch.stream, batch.kind, ids[0], ids, skip if n == 0 else [],
                    take(batch.cols, part), batch_token(batch.stream, ids),
                )
            )
        log.warning("splitting batch %s of %s (%d rows): %s", batch.first_id, batch.stream, len(keep), reason)

        def split() -> None:
            with self.r.pipeline(transaction=True) as p:
                p.delete(keys.ingest_batch(batch.stream, batch.first_id))
                p.srem(keys.ingest_batches(batch.stream), batch.first_id)
                for sub in subs:
                    key = keys.ingest_batch(sub.stream, sub.first_id)
                    p.delete(key)
                    p.hset(
                        key,
                        mapping={
                            "rows": ",".join(sub.row_ids), "skip": ",".join(sub.skip_ids),
                            "token": sub.token, "attempts": 1,
                        },
                    )
                    p.sadd(keys.ingest_batches(sub.stream), sub.first_id)
                p.execute()

        self._retry_redis(split)
        for sub in subs:
            self._complete(sub)

    def _landed(self, batch: Batch) -> list[Hashable]:
        """Keys of the batch's rows ClickHouse already has (settling or splitting a batch)."""
        out: list[Hashable] = []
        keys_ = batch.kind.keys_of(batch.cols)
        step = 5000  # bound parameters travel in the URL of an HTTP ClickHouse
        if batch.kind is CLICKS:
            times = [_ms(t) for t in batch.cols["ts"]]
            for start in range(0, len(keys_), step):
                part = slice(start, start + step)
                out.extend(
                    self._query_ch(
                        "SELECT click_id FROM clicks WHERE brand_id IN {brands:Array(String)} "
                        "AND ts >= fromUnixTimestamp64Milli({t0:Int64}, 'UTC') "
                        "AND ts <= fromUnixTimestamp64Milli({t1:Int64}, 'UTC') AND click_id IN {ids:Array(String)}",
                        {
                            "brands": sorted(set(batch.cols["brand_id"][part])),
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
        self, stream: str, entries: list[tuple[str, Fields, str]], batch: Batch | None = None
    ) -> None:
        with self.r.pipeline(transaction=True) as p:
            for entry_id, fields, reason in entries:
                record: dict[Any, Any] = dict(fields)
                record.update({b"stream": stream, b"id": entry_id, b"reason": reason[:1000]})
                p.xadd(keys.DEAD_LETTER_STREAM, record, maxlen=DEAD_LETTER_MAXLEN, approximate=True)
            ids = [e[0] for e in entries]
            if batch is not None:
                ids = batch.ids
                p.delete(keys.ingest_batch(batch.stream, batch.first_id))
                p.srem(keys.ingest_batches(batch.stream), batch.first_id)
            p.xack(stream, keys.INGEST_GROUP, *ids)
            p.execute()
        metrics.INGEST_DEAD_LETTERS.labels(self.kinds[stream].name).inc(len(entries))
        self.dead_lettered += len(entries)
        for entry_id, _, reason in entries:
            log.warning("dead-lettered entry %s of %s: %s", entry_id, stream, reason)

    def _fetch(self, stream: str, ids: list[str]) -> list[Entry]:
        out: list[Entry] = []
        for i in ids:
            got = self.r.xrange(stream, i, i)
            if got:
                out.append((_id(got[0][0]), got[0][1]))
        return out

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
        """Re-form the entries this consumer name left pending into their recorded batches."""
        for stream in self.kinds:
            cursor = "0"
            while True:
                entries = self._retry_redis(partial(self._own_pending, stream, cursor))
                if not entries:
                    break
                cursor = entries[-1][0]
                self._recover(stream, entries, min_idle_ms=0)

    def _own_pending(self, stream: str, after: str) -> list[Entry]:
        reply = self.r.xreadgroup(
            keys.INGEST_GROUP, self.name, {stream: after}, count=self.settings.ingest_batch_size
        )
        out: list[Entry] = []
        for _, entries in reply or []:
            out.extend((_id(i), f or {}) for i, f in entries)
        return out

    def _claim_idle(self) -> None:
        """Take over the pending entries of dead consumers (lease expired, entries idle).

        Not ``XAUTOCLAIM``: it claims by idle time alone, and an entry can sit idle in a
        live worker's buffer or slow insert; claiming it then would insert it twice.
        Only a consumer whose heartbeat lease expired is dead; its entries are claimed
        once idle for ``ingest_claim_idle_seconds``.
        """
        self._wait_inflight()
        idle_ms = int(self.settings.ingest_claim_idle_seconds * 1000)
        for stream in self.kinds:
            consumers = self._retry_redis(partial(self.r.xinfo_consumers, stream, keys.INGEST_GROUP))
            for consumer in consumers:
                name = _id(consumer["name"])
                if name == self.name or not int(consumer["pending"]):
                    continue
                if self._retry_redis(partial(self.r.exists, keys.heartbeat(name))):
                    continue  # alive
                for _ in range(10_000):
                    held = self._retry_redis(
                        partial(
                            self.r.xpending_range, stream, keys.INGEST_GROUP, "-", "+", 1000,
                            consumername=name, idle=idle_ms,
                        )
                    )
                    ids = [_id(item["message_id"]) for item in held]
                    if not ids:
                        break
                    claimed = self._retry_redis(
                        partial(self.r.xclaim, stream, keys.INGEST_GROUP, self.name, idle_ms, ids)
                    )
                    entries = [(_id(i), f or {}) for i, f in claimed]
                    if not entries:
                        break
                    log.info("claimed %d entries of dead consumer %s on %s", len(entries), name, stream)
                    self._recover(stream, entries, min_idle_ms=idle_ms)

    def _recover(self, stream: str, entries: list[Entry], min_idle_ms: int) -> None:
        manifests = self._retry_redis(lambda: self._manifests(stream))
        where: dict[str, str] = {}
        for first_id, m in manifests.items():
            for i in m["ids"]:
                where[i] = first_id
        orphans: list[Entry] = []
        resumed: set[str] = set()
        for entry in entries:
            first_id = where.get(entry[0])
            if first_id is None:
                orphans.append(entry)
            elif first_id not in resumed:
                resumed.add(first_id)
                self._resume(stream, first_id, manifests[first_id], min_idle_ms)
        if orphans:
            self._recover_orphans(stream, orphans)

    def _manifests(self, stream: str) -> dict[str, dict[str, Any]]:
        firsts = sorted(_id(x) for x in self.r.smembers(keys.ingest_batches(stream)))
        with self.r.pipeline(transaction=False) as p:
            for first_id in firsts:
                p.hgetall(keys.ingest_batch(stream, first_id))
            found = p.execute()
        out: dict[str, dict[str, Any]] = {}
        for first_id, raw in zip(firsts, found, strict=True):
            if not raw:
                continue
            rows = [x for x in _id(raw[b"rows"]).split(",") if x]
            skip = [x for x in _id(raw.get(b"skip", b"")).split(",") if x]
            out[first_id] = {
                "rows": rows, "skip": skip, "ids": rows + skip,
                "token": _id(raw[b"token"]), "attempts": int(raw.get(b"attempts", 1)),
            }
        return out

    def _resume(self, stream: str, first_id: str, m: dict[str, Any], min_idle_ms: int) -> None:
        """Rebuild a recorded batch with the same rows and token, and finish it."""
        kind = self.kinds[stream]
        ids: list[str] = m["ids"]
        got = self._retry_redis(lambda: self._claim_batch(stream, ids, min_idle_ms))
        if len(got) < len(ids):
            if not got and not self._retry_redis(lambda: self._any_pending(stream, ids)):
                # Acknowledged already (the worker died after its MULTI): only the manifest is left.
                self._retry_redis(lambda: self._forget(stream, first_id))
            else:
                log.info("batch %s of %s is held by a live worker; leaving it", first_id, stream)
            return
        attempts = int(
            self._retry_redis(lambda: self.r.hincrby(keys.ingest_batch(stream, first_id), "attempts", 1))
        )
        # The same entries in the same order through the same code: the same rows.
        row_ids, cols, poison = decode_entries(kind, [(i, got[i]) for i in m["rows"]])
        if poison:
            self._retry_redis(lambda: self._dead_letter(stream, poison))
        log.info("resuming batch %s of %s (%d rows, attempt %d)", first_id, stream, len(row_ids), attempts)
        batch = Batch(stream, kind, first_id, row_ids, list(m["skip"]), cols, m["token"], attempts)
        if not row_ids:
            self._retry_redis(lambda: self._ack(batch))
            return
        self._complete(batch)

    def _claim_batch(self, stream: str, ids: list[str], min_idle_ms: int) -> dict[str, Fields]:
        """Take every entry of a recorded batch: idle ones, and ones this consumer holds already."""
        claimed = self.r.xclaim(stream, keys.INGEST_GROUP, self.name, min_idle_ms, ids)
        got = {_id(i): f for i, f in claimed if f}
        missing = sorted((i for i in ids if i not in got), key=_id_key)
        if missing and min_idle_ms > 0:
            mine = [
                _id(item["message_id"])
                for item in self.r.xpending_range(
                    stream, keys.INGEST_GROUP, min=missing[0], max=missing[-1], count=len(ids) + 10,
                    consumername=self.name,
                )
            ]
            wanted = set(missing)
            mine = [i for i in mine if i in wanted]
            if mine:
                got.update((_id(i), f) for i, f in self.r.xclaim(stream, keys.INGEST_GROUP, self.name, 0, mine) if f)
        return got

    def _any_pending(self, stream: str, ids: list[str]) -> bool:
        got = self.r.xpending_range(stream, keys.INGEST_GROUP, min=ids[0], max=ids[0], count=1)
        return bool(got)

    def _forget(self, stream: str, first_id: str) -> None:
        with self.r.pipeline(transaction=True) as p:
            p.delete(keys.ingest_batch(stream, first_id))
            p.srem(keys.ingest_batches(stream), first_id)
            p.execute()

    def _recover_orphans(self, stream: str, entries: list[Entry]) -> None:
        """Pending entries without a manifest were never inserted; too many deliveries = poison."""
        ids = [e[0] for e in entries]
        counts: dict[str, int] = {}
        for item in self._retry_redis(
            lambda: self.r.xpending_range(
                stream, keys.INGEST_GROUP, min=ids[0], max=ids[-1], count=len(ids) * 2 + 10,
                consumername=self.name,
            )
        ):
            counts[_id(item["message_id"])] = int(item["times_delivered"])
        limit = self.settings.ingest_max_deliveries
        poison = [
            (i, f, f"delivered {counts[i]} times without being ingested")
            for i, f in entries
            if counts.get(i, 0) > limit
        ]
        if poison:
            self._retry_redis(lambda: self._dead_letter(stream, poison))
        bad = {p[0] for p in poison}
        rest = [e for e in entries if e[0] not in bad]
        size = self.settings.ingest_batch_size
        for start in range(0, len(rest), size):
            self._process_new(stream, rest[start : start + size])

    # ---- trimming, stats -------------------------------------------------------

    def _maintain(self) -> None:
        """Trim every stream below what its groups still need and refresh the gauges."""
        for stream in self.kinds:
            st = stream_stats(self.r, stream)
            self.stats[stream] = st
            if st["trim_below"] is not None:
                self.r.xtrim(stream, minid=st["trim_below"], approximate=True)
            metrics.STREAM_LENGTH.labels(stream).set(st["length"])
            metrics.STREAM_LAG.labels(stream).set(st["lag"])
            metrics.STREAM_PENDING.labels(stream).set(st["pending"])
            metrics.STREAM_OLDEST_PENDING_SECONDS.labels(stream).set(st["oldest_pending_seconds"])

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


def _decode_group(g: dict[Any, Any]) -> dict[str, Any]:
    return {_id(k): (_id(v) if isinstance(v, bytes) else v) for k, v in g.items()}


def summarize(
    stream: str, length: int, groups: list[dict[str, Any]], pending: dict[str, Any], first_undelivered: str | None
) -> dict[str, Any]:
    """Stats of one stream from XLEN, XINFO GROUPS, the ingest group's XPENDING summary."""
    now = time.time()
    ingest = next((g for g in groups if g.get("name") == keys.INGEST_GROUP), None)
    lag = int(ingest["lag"]) if ingest and ingest.get("lag") is not None else (length if ingest is None else 0)
    n_pending = int(pending.get("pending", 0)) if pending else 0
    oldest_pending = _id(pending["min"]) if n_pending and pending.get("min") else None
    oldest_pending_s = max(0.0, now - stream_time(oldest_pending)) if oldest_pending else 0.0
    undelivered_s = max(0.0, now - stream_time(first_undelivered)) if first_undelivered else 0.0
    # Trim below the oldest entry any group still needs: pending, or not yet delivered.
    floor: str | None = None
    for g in groups:
        need = _id(g["last-delivered-id"])
        if g is ingest and oldest_pending:
            need = min(need, oldest_pending, key=_id_key)
        elif int(g.get("pending", 0)):
            need = "0-0"  # another group's pending min is unknown here: keep everything
        floor = need if floor is None else min(floor, need, key=_id_key)
    return {
        "length": length,
        "lag": lag,
        "pending": n_pending,
        "oldest_pending_seconds": round(oldest_pending_s, 3),
        "oldest_undelivered_seconds": round(undelivered_s, 3),
        "trim_below": floor if floor not in (None, "0-0") else None,
    }


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def stream_stats(r: Any, stream: str) -> dict[str, Any]:
    with r.pipeline(transaction=False) as p:
        p.xlen(stream)
        p.xinfo_groups(stream)
        p.execute_command("XPENDING", stream, keys.INGEST_GROUP)
        try:
            length, groups, pending = p.execute()
        except redis.ResponseError:  # no stream or no group yet
            return summarize(stream, 0, [], {}, None)
    groups = [_decode_group(g) for g in groups]
    pend = _pending_summary(pending)
    first = _first_undelivered(r, stream, groups)
    return summarize(stream, int(length), groups, pend, first)


async def stream_stats_async(r: Any, stream: str) -> dict[str, Any]:
    async with r.pipeline(transaction=False) as p:
        p.xlen(stream)
        p.xinfo_groups(stream)
        p.execute_command("XPENDING", stream, keys.INGEST_GROUP)
        try:
            length, groups, pending = await p.execute()
        except redis.ResponseError:
            return summarize(stream, 0, [], {}, None)
    groups = [_decode_group(g) for g in groups]
    first = None
    ingest = next((g for g in groups if g.get("name") == keys.INGEST_GROUP), None)
    if ingest:
        got = await r.xrange(stream, "(" + str(ingest["last-delivered-id"]), "+", count=1)
        first = _id(got[0][0]) if got else None
    return summarize(stream, int(length), groups, _pending_summary(pending), first)


def _pending_summary(raw: Any) -> dict[str, Any]:
    # XPENDING summary: [count, min id, max id, [[consumer, count], ...]]
    if isinstance(raw, dict):
        return raw
    if not raw:
        return {}
    return {"pending": int(raw[0]), "min": raw[1], "max": raw[2]}


def _first_undelivered(r: Any, stream: str, groups: list[dict[str, Any]]) -> str | None:
    ingest = next((g for g in groups if g.get("name") == keys.INGEST_GROUP), None)
    if not ingest:
        return None
    got: Any = r.xrange(stream, "(" + str(ingest["last-delivered-id"]), "+", count=1)
    return _id(got[0][0]) if got else None


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
        self.worker = Worker(self.settings, self._redis, self.ch)
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


async def ingest_status(svc: Any) -> dict[str, Any]:
    """Readiness: lag and pending per stream, and a ``problem`` when reports go stale."""
    settings: Settings = svc.settings
    streams = [*keys.click_streams(settings.stream_shards), keys.CONVERSION_STREAM]
    out: dict[str, Any] = {"streams": {}}
    worst = 0.0
    for stream in streams:
        st = await stream_stats_async(svc.redis, stream)
        st.pop("trim_below")
        out["streams"][stream] = st
        worst = max(worst, st["oldest_pending_seconds"], st["oldest_undelivered_seconds"])
    component = svc.named.get("ingest")
    problems = []
    if isinstance(component, IngestComponent) and component.worker is not None:
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
