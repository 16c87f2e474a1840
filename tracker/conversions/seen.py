"""Orders the server's processes recorded or read lately: a hint shared by every HTTP worker.

A postback for an order no process has seen is most likely a new order, so the recorder
decides its first version before its one Redis call (``Conversions.record``); for an order
seen before (a store's retry, a status change) the call only reads, and no first version
is decided in vain. Deciding one (attribution, the row, its JSON) is about half the cost of
answering a replay. A per-process set knew only the orders of its own worker: with
``--workers 2`` half of all retries reached the other worker and paid for a first version
they did not need. This table is one file mapped by every worker (``share_across_workers``,
run by ``tracker serve`` before it starts them), so what one worker saw, all know.

It is a direct-mapped table of 32-bit fingerprints (like a CPU cache): an order's slot and
fingerprint come from a keyed BLAKE2b of (brand, order id); a newer order landing in the
slot evicts the older one. It only ever steers which of two correct paths is taken, so
nothing needs a lock: a lost or torn write (two workers writing one slot at once) costs at
worst one unneeded first version, or one extra round trip for a new order, and Redis decides
in every case. A false "seen" needs a fingerprint match, about 1 in 4 billion.

Without the file (one process, tests) the table is the process's own anonymous mapping.
"""

from __future__ import annotations

import hashlib
import logging
import mmap
import os
import tempfile
from pathlib import Path

log = logging.getLogger("tracker.conversions.seen")

ENV = "TRACKER_SEEN_ORDERS_FILE"
SLOTS = 1 << 20  # 4 MB: about the last million orders, whatever the number of brands
_BYTES = SLOTS * 4
FILE_NAME = "seen-orders.table"


def share_across_workers(directory: Path) -> Path:
    """Make the table's file for the workers this process is about to start (they inherit ``ENV``).

    ``directory`` is the one the workers already share for their metrics (``PROMETHEUS_MULTIPROC_DIR``):
    the table goes where that goes (a temporary one is removed at exit, a configured one is reused),
    and one server start never leaves more than one table behind. Each start makes a fresh, empty
    table and moves it into place, so a process still mapping an earlier one keeps that one.
    """
    fd, made = tempfile.mkstemp(prefix=".seen-orders-", dir=directory)
    try:
        os.ftruncate(fd, _BYTES)  # zeros: no order seen
    finally:
        os.close(fd)
    path = directory / FILE_NAME
    os.replace(made, path)
    os.environ[ENV] = str(path)
    return path


def _mapped(path: str) -> mmap.mmap | None:
    """The shared table, or None when its file is gone or not a table (a hint: the worker goes on alone)."""
    try:
        with open(path, "r+b") as f:
            if os.fstat(f.fileno()).st_size == _BYTES:
                return mmap.mmap(f.fileno(), _BYTES)
    except OSError:
        pass
    log.warning("the seen-orders table %s cannot be mapped; this worker keeps its own", path)
    return None


class SeenOrders:
    """The table as one process maps it."""

    def __init__(self, key: bytes, path: str | None = None) -> None:
        self._key = key
        # ``path``: the table's file; None: the one ``share_across_workers`` named; "": this process's own.
        path = path if path is not None else os.environ.get(ENV, "")
        self._map = _mapped(path) if path else None
        if self._map is None:
            self._map = mmap.mmap(-1, _BYTES)
        self._slots = memoryview(self._map).cast("I")

    def _where(self, brand_id: str, order_id: str) -> tuple[int, int]:
        # The brand in the hash: two brands' orders of one id are two orders.
        digest = hashlib.blake2b(f"{brand_id}\0{order_id}".encode(), digest_size=8, key=self._key).digest()
        slot = int.from_bytes(digest[:4], "little") & (SLOTS - 1)
        return slot, int.from_bytes(digest[4:], "little") | 1  # 0 is an empty slot

    def check_and_add(self, brand_id: str, order_id: str) -> bool:
        """Whether the order was seen, and it is from now on (one hash for both)."""
        slot, mark = self._where(brand_id, order_id)
        slots = self._slots
        if slots[slot] == mark:
            return True
        slots[slot] = mark
        return False
