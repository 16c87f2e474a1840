"""The collected tests' order, so that pytest-xdist's `load` scheduling gives every worker its share of the slow ones.

xdist starts each of its N workers on a block of consecutive tests, ``len(items) // N // 4`` of
them, then hands out the rest as workers free up. The slow modules (subprocess servers, fault
injection: ~40 tests holding about a third of the suite's time) must start in those first
blocks, or one worker runs them at the end while the others idle; but all at the front of the
list they fall in the first block alone, and that worker finishes a minute after the others.
So the slow modules are dealt into N bins by their expected seconds (``slow(seconds=...)``,
longest first into the lightest bin) and bin i opens block i, filled up with fast tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import pytest

DEFAULT_SECONDS = 10.0

T = TypeVar("T")


def block_size(n_items: int, workers: int) -> int:
    """The first block xdist's LoadScheduling sends each worker (``schedule()``, no ``--maxschedchunk``)."""
    return max(n_items // workers // 4, 2)


def deal(groups: Sequence[tuple[float, list[T]]], bins: int) -> list[list[T]]:
    """Groups (seconds, items) into ``bins`` of near-equal seconds: longest first, each into the lightest bin."""
    loads = [0.0] * bins
    dealt: list[list[T]] = [[] for _ in range(bins)]
    for seconds, members in sorted(groups, key=lambda g: -g[0]):  # stable: equal weights keep their order
        lightest = loads.index(min(loads))
        loads[lightest] += seconds
        dealt[lightest].extend(members)
    return dealt


def arrange(slow: Sequence[tuple[float, list[T]]], fast: list[T], workers: int) -> list[T]:
    """Slow groups spread over the first ``workers`` blocks, fast items around them in their order."""
    slow_items = [item for _, members in slow for item in members]
    if workers < 2:
        return slow_items + fast
    size = block_size(len(slow_items) + len(fast), workers)
    bins = deal(slow, workers)
    if any(len(b) > size for b in bins):  # a bin overflows its block: fall back to all slow first
        return slow_items + fast
    ordered: list[T] = []
    rest = iter(fast)
    for b in bins:
        ordered += b
        ordered += [item for _, item in zip(range(size - len(b)), rest, strict=False)]
    return ordered + list(rest)


def order(items: list[pytest.Item], workers: int) -> list[pytest.Item]:
    groups: dict[str, tuple[float, list[pytest.Item]]] = {}
    fast: list[pytest.Item] = []
    for item in items:
        marker = item.get_closest_marker("slow")
        if marker is None:
            fast.append(item)
            continue
        module = item.nodeid.split("::", 1)[0]
        seconds, members = groups.setdefault(module, (0.0, []))
        members.append(item)
        # A module weighs the most seconds any of its tests is marked with (pytestmark marks all alike).
        groups[module] = (max(seconds, float(marker.kwargs.get("seconds", DEFAULT_SECONDS))), members)
    return arrange(list(groups.values()), fast, workers)
