"""Which codes are links: a compact in-process set of every link code.

An unknown code must cost the redirect no storage lookup (a flood of random codes from
rotating addresses otherwise costs a ClickHouse query each and slows every real click),
and a known link must always redirect. The set holds a 64-bit hash of every link code
(a sorted numpy array of int64: 8 bytes a code, a million links in 8 MB), loaded from the system
of record when the process starts and topped up every ``TOP_UP_SECONDS`` with the codes
created since the previous top-up began (less ``MARGIN_SECONDS``, for an insert that
landed late). Links are never deleted, so the set only grows.

A code the set lacks is unknown or newer than the last top-up; the link cache settles
which by asking Redis (``Probe``), where the registry writes a link before it answers
its creator, so a new link redirects at once on every worker. While Redis is down the
set is topped up on demand, at most once per ``ON_DEMAND_SECONDS``, and answers alone.

Until the first load has finished (or while ClickHouse cannot be read at start) every
code may exist: the cache then looks codes up as it always did.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import numpy as np

log = logging.getLogger("tracker.redirect.codeset")

TOP_UP_SECONDS = 30.0
MARGIN_SECONDS = 600.0
ON_DEMAND_SECONDS = 1.0
_EMPTY = np.zeros(0, dtype=np.int64)

CodesSince = Callable[[int | None], Awaitable[list[str]]]


def _merge(current: np.ndarray, codes: list[str], hashes: set[int]) -> np.ndarray:
    """``current`` with the codes' and the hashes' values, sorted and unique (runs in a thread:
    a million codes take a fraction of a second)."""
    new = np.fromiter(map(hash, codes), dtype=np.int64, count=len(codes))
    if hashes:
        new = np.concatenate([new, np.fromiter(hashes, dtype=np.int64, count=len(hashes))])
    return np.union1d(current, new)


class CodeSet:
    """``may_exist(code)``: False only for a code no link had at the last load or top-up."""

    def __init__(self, codes_since: CodesSince) -> None:
        self._codes_since = codes_since
        self._sorted: np.ndarray = _EMPTY
        self._added: set[int] = set()  # codes met since the last merge (found in Redis)
        self.loaded = False
        self._since_ms: int | None = None  # the start of the last load or top-up, in ms
        self._last_on_demand = 0.0
        self._top_up: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def __len__(self) -> int:
        return len(self._sorted) + len(self._added)

    def may_exist(self, code: str) -> bool:
        if not self.loaded:
            return True
        h = hash(code)  # Python's per-process SipHash, 64 bits: the set never leaves the process
        if h in self._added:
            return True
        arr = self._sorted
        i = int(arr.searchsorted(h))
        return i < len(arr) and int(arr[i]) == h

    def add(self, code: str) -> None:
        self._added.add(hash(code))

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="redirect-codeset")

    async def stop(self) -> None:
        for task in (self._task, self._top_up):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        delay = 1.0
        while not self.loaded:
            try:
                await self.refresh()
            except Exception as exc:
                log.warning("the set of link codes could not be loaded (retrying in %.0f s): %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)
        while True:
            await asyncio.sleep(TOP_UP_SECONDS)
            try:
                await self.refresh()
            except Exception as exc:
                log.warning("topping up the set of link codes failed: %s", exc)

    async def refresh(self) -> None:
        """Load every code (first time) or the codes created since the last refresh began."""
        async with self._lock:  # one at a time: each merges into what the previous one left
            started_ms = time.time_ns() // 1_000_000
            since = None if self._since_ms is None else self._since_ms - int(MARGIN_SECONDS * 1000)
            codes = await self._codes_since(since)
            merged = set(self._added)
            fresh = await asyncio.to_thread(_merge, self._sorted, codes, merged)
            self._sorted = fresh
            self._added -= merged  # codes added meanwhile stay until the next refresh
            self._since_ms = started_ms
            if not self.loaded:
                self.loaded = True
                log.info("the set of link codes holds %d codes", len(self._sorted))

    async def top_up_now(self) -> None:
        """Top up now (Redis down: the set answers alone), at most once per ``ON_DEMAND_SECONDS``;
        concurrent callers share one top-up."""
        task = self._top_up
        if task is None or task.done():
            if time.monotonic() - self._last_on_demand < ON_DEMAND_SECONDS:
                return
            self._last_on_demand = time.monotonic()
            task = self._top_up = asyncio.create_task(self.refresh(), name="redirect-codeset-top-up")
        try:
            await asyncio.shield(task)
        except Exception as exc:
            log.debug("on-demand top-up of the set of link codes failed: %s", exc)
