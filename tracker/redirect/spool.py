"""The local click spool: append-only JSON-lines files of clicks written while Redis is down.

One current file per process, fsync'd before the clicks' requests are answered, locked
with ``flock`` while current (a live process's file is never replayed by another). The
click log (``clicklog``) replays closed files into the stream, keeping its progress in a
``.done`` sidecar per file (``read_offset`` / ``write_offset``).

Capped: every process's files together hold at most ``TRACKER_SPOOL_MAX_MB``; ``append``
refuses a batch that would pass it (the click log counts and logs those clicks as lost;
their followers are still redirected).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from tracker.ops.metrics import SPOOL_BYTES

SUFFIX = ".jsonl"
DONE = ".done"


class Spool:
    """Append-only JSON-lines files of clicks, one current file per process, all of them
    (every process's) together at most ``max_bytes``: the spool exists for an outage of
    Redis, and an outage that outlasts it must not fill the disk the host needs."""

    def __init__(self, directory: Path, max_bytes: int = 1 << 62) -> None:
        self.dir = directory
        self.max_bytes = max_bytes
        self._fd: int | None = None
        self._path: Path | None = None
        self._seq = 0
        self._bytes: int | None = None  # the files' size as last measured, plus what we wrote since
        self.lock = asyncio.Lock()

    @property
    def current(self) -> Path | None:
        return self._path

    def _open(self) -> int:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._seq += 1
        path = self.dir / f"clicks-{os.getpid()}-{time.time_ns()}-{self._seq}{SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        # Held while the file is current: no replayer (of any process) touches it.
        fcntl.flock(fd, fcntl.LOCK_EX)
        fsync_dir(self.dir)
        self._fd, self._path = fd, path
        return fd

    def size(self) -> int:
        """Bytes in every spool file of the directory (other processes' too), measured now."""
        total = 0
        for path in self.dir.glob(f"clicks-*{SUFFIX}") if self.dir.is_dir() else ():
            with contextlib.suppress(FileNotFoundError):  # replayed meanwhile
                total += path.stat().st_size
        self._bytes = total
        SPOOL_BYTES.set(total)
        return total

    def append(self, lines: list[bytes]) -> bool:
        """Write lines and fsync (blocking: call from a thread). False, writing nothing, when
        they would take the spool past ``max_bytes``."""
        data = b"".join(line + b"\n" for line in lines)
        known = self._bytes if self._bytes is not None else self.size()
        if known + len(data) > self.max_bytes and self.size() + len(data) > self.max_bytes:
            return False  # measured again first: a replay may have made room
        fd = self._fd if self._fd is not None else self._open()
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
        self._bytes = (self._bytes or 0) + len(data)
        SPOOL_BYTES.set(self._bytes)
        return True

    def close(self) -> None:
        """Close the current file (it becomes replayable); an empty one is removed."""
        fd, path = self._fd, self._path
        self._fd = self._path = None
        if fd is None or path is None:
            return
        empty = os.fstat(fd).st_size == 0
        if empty:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        os.close(fd)  # drops the flock

    def closed_files(self) -> list[Path]:
        if not self.dir.is_dir():
            return []
        return sorted(p for p in self.dir.glob(f"clicks-*{SUFFIX}") if p != self._path)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def lines_from(fh: object, offset: int) -> Iterator[tuple[bytes, int]]:
    """(line without newline, offset after it); an unterminated last line (a crash mid-write,
    whose click was never answered) is skipped."""
    assert hasattr(fh, "readline")
    fh.seek(offset)  # type: ignore[attr-defined]
    while True:
        line: bytes = fh.readline()
        if not line.endswith(b"\n"):
            return
        offset += len(line)
        yield line[:-1], offset


def read_offset(path: Path) -> int:
    try:
        return int(path.read_text().strip() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def write_offset(path: Path, offset: int) -> None:
    # No fsync: losing the progress only re-sends replayed (r=1) clicks, it never skips one.
    tmp = path.with_suffix(".tmp")
    tmp.write_text(str(offset))
    tmp.replace(path)
