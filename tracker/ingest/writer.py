"""Writing a batch into ClickHouse exactly once: insert until accepted, settle a retried insert.

A batch goes in with a deduplication token derived from its ranges, so an insert
retried after a timeout is dropped if it had landed. The token alone is never trusted
after a crash or a retry: a MergeTree that is not replicated records the token before it
commits the part, and a process killed in between (chDB inside the embedded worker) keeps
the token and loses the rows. So a resumed batch, and a retried insert afterwards, are
checked against ClickHouse by key, and only the missing rows go in, under a token of their
own. The click rollups are projections inside the same parts (migration 0023): they follow.
The conversions' views (their versions, the ledger's order) commit parts of their own after
the table's: a checked batch checks those tables too and fills in what they lack (``Dependent``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any, cast

import pyarrow as pa

from tracker.ingest import delivery
from tracker.ingest.batch import CLICKS, Batch, Columns, Entries, Kind, ms, n_rows, take
from tracker.ingest.delivery import id_key
from tracker.ingest.lease import Lease, LeaseLost
from tracker.ingest.retry import Abandon, Pace
from tracker.ops import metrics
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse, describe

log = logging.getLogger("tracker.ingest.worker")

# Bound parameters travel in the URL of an HTTP ClickHouse: key checks go in slices.
KEYS_PER_QUERY = 5000


class Refused(Exception):
    """ClickHouse refused a batch's rows (not an outage) more often than the delivery limit."""


class Writer:
    def __init__(self, settings: Settings, r: Any, ch: ClickHouse, lease: Lease, pace: Pace) -> None:
        self.settings = settings
        self.r = r
        self.ch = ch
        self.lease = lease
        self.pace = pace
        self.ch_error: str | None = None
        self.ch_failing_since: float | None = None

    def write(self, batch: Batch) -> None:
        """Put every row of ``batch`` into ClickHouse once; ``Refused`` when its rows are at fault."""
        cols, token = batch.cols, batch.token
        if batch.attempts:
            # Resumed after a crash or retried after an error: its rows may have landed, all,
            # some, or none (a token recorded without its part). Insert what is missing.
            landed = set(self.landed(batch.kind, cols))
            if landed:
                cols = take(cols, [i for i, k in enumerate(batch.kind.keys_of(cols)) if k not in landed])
            token = f"{batch.token}:attempt:{batch.attempts}"
        uncertain = False
        while n_rows(cols):
            try:
                uncertain = self.insert(batch, batch.kind.arrow(cols), token)
                break
            except (LeaseLost, Abandon):
                raise
            except Exception as exc:
                # Refused before sending (a value the driver cannot encode): the rows' fault.
                metrics.INGEST_RETRIES.labels(batch.kind.name).inc()
                log.warning("batch %s of %s failed: %s", batch.token, batch.stream, exc)
                batch.attempts = self.pace.redis(partial(self._count_attempt, batch))
                if batch.attempts > self.settings.ingest_max_deliveries:
                    raise Refused(f"insert failed: {exc}") from exc
        if uncertain:
            self.settle(batch, cols, token)
        if batch.attempts or uncertain:
            self.fill_dependents(batch, token)

    def fill_dependents(self, batch: Batch, token: str) -> None:
        """Insert the rows of a checked batch that its table has and a view's table lacks (``Dependent``)."""
        for dep in batch.kind.dependents:
            rows = dep.rows_of(batch.cols)
            if not rows:
                continue
            keys_ = dep.keys_of(take(batch.cols, rows))
            have = set(self.keys_in(dep.table, dep.key_columns, dep.key_type, keys_))
            missing = [i for i, k in zip(rows, keys_, strict=True) if k not in have]
            if not missing:
                continue
            log.warning(
                "batch %s of %s: %d of %d rows are in %s but not in %s (a crash between the two parts); "
                "inserting them there",
                batch.token, batch.stream, len(missing), len(keys_), batch.kind.table, dep.table,
            )
            metrics.INGEST_REPAIRED.labels(dep.table).inc(len(missing))
            data = batch.kind.arrow(take(batch.cols, missing)).select(list(dep.columns))
            now = datetime.now(UTC)
            for name in dep.stamped:
                data = data.append_column(name, pa.array([now] * len(missing), pa.timestamp("ms", tz="UTC")))
            self.insert(batch, data, f"{token}:{dep.table}", table=dep.table)

    def insert(self, batch: Batch, data: pa.Table, token: str, table: str | None = None) -> bool:
        """Insert ``data`` for ``batch`` under ``token`` until ClickHouse takes it; True if it retried.

        Unreachable, or refused for every row alike (schema, disk): wait, the stream holds.
        Anything else (a value the driver cannot encode) is the rows' fault and is raised.
        """
        tries = 0

        def attempt() -> None:
            nonlocal tries
            tries += 1
            if tries > 1:  # mark the batch as worked on, so no other worker takes it over
                self.pace.redis(partial(delivery.touch, self.r, batch.ranges, self.lease.token))
            self.pace.redis(self.lease.check)
            if table is None:
                self.ch.insert_arrow(batch.kind.table, data, dedup_token=token, settings=batch.kind.insert_settings)
            else:
                self.ch.insert_arrow(table, data, dedup_token=token)

        def failed(exc: Exception) -> None:
            metrics.INGEST_RETRIES.labels(batch.kind.name).inc()
            self.failed(exc)

        self.pace.clickhouse(attempt, failed)
        self.ok()
        return tries > 1

    def settle(self, batch: Batch, cols: Columns, token: str) -> None:
        """Make sure ClickHouse holds every row of an insert that was retried.

        The retry carries the same token, so rows that landed are not inserted twice; rows
        whose token outlived an uncommitted part are found missing by key and inserted again.
        """
        for repair in range(1, 1000):
            landed = set(self.landed(batch.kind, cols))
            missing = [i for i, k in enumerate(batch.kind.keys_of(cols)) if k not in landed]
            if not missing:
                return
            log.warning(
                "batch %s of %s: %d of %d rows are not in ClickHouse after a retried insert "
                "(its deduplication token outlived an uncommitted part); inserting them again",
                batch.token, batch.stream, len(missing), n_rows(cols),
            )
            metrics.INGEST_REPAIRED.labels(batch.kind.name).inc(len(missing))
            self.insert(batch, batch.kind.arrow(take(cols, missing)), f"{token}:repair:{repair}")
        raise RuntimeError(f"batch {batch.token} of {batch.stream} could not be settled")

    def _count_attempt(self, batch: Batch) -> int:
        if not batch.ranges:
            return batch.attempts + 1
        return delivery.count_attempt(self.r, batch.ranges)

    def landed(self, kind: Kind, cols: Columns) -> list[Hashable]:
        """Keys of rows ClickHouse already has (resuming, settling or splitting a batch)."""
        out: list[Hashable] = []
        keys_ = kind.keys_of(cols)
        step = KEYS_PER_QUERY
        if kind is CLICKS:
            times = [ms(t) for t in cols["ts"]]
            brands = cols["brand_id"]
            for start in range(0, len(keys_), step):
                part = slice(start, start + step)
                out.extend(
                    self.query(
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
        return self.keys_in(kind.table, kind.key_columns, "Tuple(String, String, UInt64)", keys_)

    def keys_in(self, table: str, columns: Sequence[str], key_type: str, keys_: Sequence[Hashable]) -> list[Hashable]:
        """Which of ``keys_`` (tuples of ``columns``) ``table`` holds."""
        out: list[Any] = []
        names = ", ".join(columns)
        for start in range(0, len(keys_), KEYS_PER_QUERY):
            out.extend(
                self.query(
                    f"SELECT ({names}) FROM {table} WHERE ({names}) IN {{keys:Array({key_type})}}",
                    {"keys": list(keys_[start : start + KEYS_PER_QUERY])},
                )
            )
        return [tuple(cast(Sequence[Any], k)) for k in out]

    def landed_replays(
        self, stream: str, entries: Entries, rows: list[int] | None, cols: Columns, replayed: list[int]
    ) -> set[int]:
        """Which clicks replayed from the redirect's spool (``r=1``) reached ClickHouse before."""
        entry_of = (lambda i: i) if rows is None else rows.__getitem__
        newest = max((entries.id(entry_of(i)) for i in replayed), key=id_key)
        self.pace.redis(partial(self._wait_for_older, stream, newest))
        times = [ms(cols["ts"][i]) for i in replayed]
        ids = [cols["click_id"][i] for i in replayed]
        landed = set(
            self.query(
                "SELECT click_id FROM clicks WHERE ts >= fromUnixTimestamp64Milli({t0:Int64}, 'UTC') "
                "AND ts <= fromUnixTimestamp64Milli({t1:Int64}, 'UTC') AND click_id IN {ids:Array(String)}",
                {"t0": min(times), "t1": max(times), "ids": ids},
            )
        )
        return {i for i, click_id in zip(replayed, ids, strict=True) if click_id in landed}

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
                if r.owner != self.lease.token and id_key(r.first) < id_key(entry_id)
            ]
            if not older:
                return
            self.pace.sleep(0.05)

    def query(self, sql: str, params: dict[str, Any]) -> list[Any]:
        """The first column of a query's rows, waiting while ClickHouse is unreachable."""
        result: list[Any] = self.pace.clickhouse(lambda: [row[0] for row in self.ch.query(sql, params)], self.failed)
        self.ok()
        return result

    def ok(self) -> None:
        if self.ch_failing_since is not None:
            log.info("ClickHouse answers again")
        self.ch_error = None
        self.ch_failing_since = None

    def failed(self, exc: Exception) -> None:
        message = getattr(exc, "message", str(exc))
        if self.ch_failing_since is None:
            self.ch_failing_since = time.monotonic()
            log.warning("ClickHouse at %s fails, backing off: %s", describe(self.settings), message)
        self.ch_error = message
