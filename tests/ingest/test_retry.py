"""Backoff and sleeps of a worker, pure: the delays, the grace period, the lease kept alive."""

from __future__ import annotations

import random
import threading
import time

import pytest
import redis

from tracker.core.errors import StorageUnavailable
from tracker.ingest.retry import BACKOFF_MAX_SECONDS, Abandon, Pace


@pytest.mark.parametrize("attempt", [1, 2, 3, 5, 7, 8, 12, 40, 2000])
def test_the_backoff_keeps_the_old_equal_jitter_delays(attempt: int) -> None:
    """The n-th wait is in [d/2, d], d = min(5 s, 0.05 s * 2^n): what the hand-written loop waited."""
    pace = Pace()
    longest = min(BACKOFF_MAX_SECONDS, 0.05 * 2 ** min(attempt, 10))
    random.seed(attempt)
    waits = [pace.wait(attempt) for _ in range(200)]
    assert all(longest / 2 <= w <= longest for w in waits)
    assert max(waits) - min(waits) > longest / 4  # jittered, not fixed


def test_redis_calls_are_retried_until_redis_answers(caplog: pytest.LogCaptureFixture) -> None:
    slept: list[float] = []
    pace = Pace()
    pace.sleep = slept.append  # type: ignore[method-assign]
    pace._redis.sleep = slept.append
    answers: list[object] = [redis.ConnectionError("down"), redis.TimeoutError("slow"), "ok"]

    def call() -> object:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert pace.redis(call) == "ok"
    assert len(slept) == 2 and slept[0] <= 0.1
    assert "redis unreachable (attempt 1)" in caplog.text


def test_a_command_redis_refuses_is_not_retried() -> None:
    pace = Pace()

    def refused() -> None:
        raise redis.ResponseError("WRONGTYPE")

    with pytest.raises(redis.ResponseError):
        pace.redis(refused)


def test_clickhouse_calls_report_each_failure_before_waiting() -> None:
    pace = Pace()
    pace.sleep = lambda seconds: None  # type: ignore[method-assign]
    failures: list[str] = []
    left = [StorageUnavailable("a"), StorageUnavailable("b")]

    def call() -> int:
        if left:
            raise left.pop(0)
        return 7

    assert pace.clickhouse(call, lambda exc: failures.append(str(exc))) == 7
    assert len(failures) == 2


def test_a_stop_wakes_a_sleep_and_starts_the_grace_period() -> None:
    pace = Pace(grace_seconds=0.3)
    threading.Timer(0.05, pace.stop.set).start()
    t = time.monotonic()
    pace.sleep(30)
    assert time.monotonic() - t < 5
    assert pace.deadline is not None
    pace.sleep(0.01)  # within the grace period: sleeps
    time.sleep(0.3)
    with pytest.raises(Abandon):
        pace.sleep(0.01)


def test_a_sleep_keeps_the_lease_alive_even_when_redis_is_away() -> None:
    calls: list[int] = []

    def keep_alive() -> None:
        calls.append(1)
        if len(calls) == 2:
            raise redis.ConnectionError("down")

    pace = Pace(keep_alive=keep_alive)
    pace.sleep(0)
    pace.sleep(0)  # the refresh failed: the sleep goes on
    assert len(calls) == 2
