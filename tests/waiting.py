"""Wait until something is true instead of sleeping a fixed time.

A fixed sleep is either too short on a loaded machine (a flaky test) or too long
everywhere else (a slow one); polling a condition with a deadline is neither.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def _describe(message: str | Callable[[], str]) -> str:
    return message() if callable(message) else message


def wait_until(
    predicate: Callable[[], T],
    *,
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str | Callable[[], str] = "the condition did not hold",
    ignoring: tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``predicate`` until it returns something truthy and return that.

    Exceptions of the types in ``ignoring`` count as "not yet" (a server that does not
    accept connections yet). After ``timeout`` seconds, fail with ``message`` (a callable
    is called then, so it can show the last state).
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = predicate()
        except ignoring:
            pass
        else:
            if result:
                return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"{_describe(message)} (waited {timeout:g} s)")
        time.sleep(interval)


async def wait_until_async(
    predicate: Callable[[], Awaitable[T]],
    *,
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str | Callable[[], str] = "the condition did not hold",
    ignoring: tuple[type[BaseException], ...] = (),
) -> T:
    """``wait_until`` for a coroutine predicate, polling without blocking the event loop."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = await predicate()
        except ignoring:
            pass
        else:
            if result:
                return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"{_describe(message)} (waited {timeout:g} s)")
        await asyncio.sleep(interval)
