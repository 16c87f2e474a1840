"""Waiting inside an ingest worker: backoff and retries (tenacity), sleeps bounded by the shutdown grace.

Redis or ClickHouse being unreachable is waited out, never fatal: the stream holds the
backlog. Every wait goes through ``Pace.sleep``, which keeps the worker's lease alive
through a long outage, wakes when the worker is told to stop, and raises ``Abandon`` once
the grace period is over, so a SIGTERM ends the worker in time whatever it waits for.
(redis-py's own ``Retry`` sleeps with ``time.sleep``, which could do none of that.)
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import redis
import tenacity

from tracker.core.errors import QueryError, StorageUnavailable

log = logging.getLogger("tracker.ingest.worker")

T = TypeVar("T")

GRACE_SECONDS = 10.0
BACKOFF_MAX_SECONDS = 5.0
# (On a Redis Cluster also the answers of a failover in progress: slots moving or uncovered.)
REDIS_ERRORS = (
    redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError, redis.exceptions.ClusterError, redis.exceptions.SlotNotCoveredError,
    redis.exceptions.MovedError,
)
# ClickHouse unreachable, or refusing a statement for every row alike (schema, disk): not the rows' fault.
CLICKHOUSE_ERRORS = (StorageUnavailable, QueryError)


class Abandon(Exception):
    """Shutdown grace ran out mid-batch; the entries stay held for the next start."""


def backoff(first: float = 0.05, cap: float = BACKOFF_MAX_SECONDS) -> tenacity.wait.wait_base:
    """Exponential backoff with equal jitter: the n-th wait is in [d/2, d], d = min(cap, 2 first 2^(n-1))."""
    half = tenacity.wait_exponential(multiplier=first, max=cap / 2)
    return half + tenacity.wait_random_exponential(multiplier=first, max=cap / 2)


class Pace:
    """The sleeps and retries of one worker (shared by its loop and its insert thread)."""

    def __init__(self, grace_seconds: float = GRACE_SECONDS, keep_alive: Callable[[], None] | None = None) -> None:
        self.grace_seconds = grace_seconds
        self.stop = threading.Event()
        self.deadline: float | None = None  # set when stopping: the grace period's end
        self._keep_alive = keep_alive
        self._redis = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(REDIS_ERRORS),
            wait=backoff(),
            sleep=self.sleep,
            before_sleep=self._redis_failed,
            reraise=True,
        )

    def stopping(self) -> None:
        """Start the grace period (a signal, or the end of a drain)."""
        self.deadline = time.monotonic() + self.grace_seconds

    def sleep(self, seconds: float) -> None:
        if self._keep_alive is not None:
            # Long retries (ClickHouse down) must not let the consumer name lapse.
            with contextlib.suppress(*REDIS_ERRORS):
                self._keep_alive()
        if self.deadline is not None:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise Abandon("the shutdown grace period ran out")
            time.sleep(min(seconds, remaining))
        else:
            self.stop.wait(seconds)
            if self.stop.is_set():
                self.stopping()

    def redis(self, fn: Callable[[], T]) -> T:
        """``fn()`` until Redis answers (a command it refuses is raised: that is no outage)."""
        return self._redis(fn)

    def clickhouse(self, fn: Callable[[], T], failed: Callable[[Exception], None]) -> T:
        """``fn()`` until ClickHouse takes it; ``failed`` hears of each failure before the wait."""

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, Exception):
                failed(exc)

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(CLICKHOUSE_ERRORS),
            wait=backoff(),
            sleep=self.sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        return retrying(fn)

    @staticmethod
    def _redis_failed(state: tenacity.RetryCallState) -> None:
        attempt = state.attempt_number
        if attempt == 1 or attempt % 20 == 0:
            exc = state.outcome.exception() if state.outcome else None
            log.warning("redis unreachable (attempt %d), retrying: %s", attempt, exc)

    def wait(self, attempt: int) -> float:
        """The backoff before retry number ``attempt`` (for loops that are not retries of one call)."""
        state = tenacity.RetryCallState(self._redis, None, (), {})
        state.attempt_number = attempt
        return float(self._redis.wait(state))
