"""A worker's consumer name and the heartbeat lease that says it is alive.

The ranges a worker holds carry its lease token as owner. While its heartbeat key holds
that token, no other worker takes them over, however slow it is; once the key expired
(the process died, or stalled past ``HEARTBEAT_SECONDS``), others may. A worker that
stalled that long finds out before its next insert (``check``) and starts over.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from typing import Any

from tracker.core import keys
from tracker.core.errors import StorageUnavailable
from tracker.ingest.delivery import text

HEARTBEAT_SECONDS = 15

# Takes a consumer name over when its holder is the dead process that left it (same host):
# compare-and-set, so two starting workers cannot both take it.
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


def new_token() -> str:
    return f"{os.getpid()}:{uuid.uuid4().hex}"


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Lease:
    """The consumer name a worker reads under, and its heartbeat (every call talks to Redis once or twice)."""

    def __init__(self, r: Any, name: str | None = None) -> None:
        self.r = r
        self.name = name or ""
        self.fixed = name is not None  # a name given by the caller (tests, benchmarks) is kept
        self.token = new_token()
        self.lost = False
        self.next_beat = 0.0

    def acquire(self) -> None:
        """Take a consumer name (unless fixed) and start its heartbeat."""
        if not self.fixed:
            self.name = self._free_name()
        self.beat(force=True)

    def renew(self) -> None:
        """After a lapse: a new token, so nothing held under the old one counts as ours."""
        self.token = new_token()
        self.lost = False

    def _free_name(self) -> str:
        """A consumer name of this host that no live process holds.

        A restarted worker gets the name its dead predecessor held (its pid is gone),
        so it finds that predecessor's ranges at once instead of waiting for another
        worker to take them over.
        """
        host = socket.gethostname()
        for n in range(1024):
            name = f"{host}-{n}"
            key = keys.heartbeat(name)
            if self.r.set(key, self.token, nx=True, ex=HEARTBEAT_SECONDS):
                return name
            raw = self.r.get(key)
            if raw is None:
                continue
            holder = text(raw)
            pid = int(holder.split(":", 1)[0]) if holder.split(":", 1)[0].isdigit() else -1
            dead = pid == os.getpid() or not pid_alive(pid)
            if dead and self.r.eval(_TAKE_OVER, 1, key, holder, self.token, HEARTBEAT_SECONDS):
                return name
        raise StorageUnavailable(f"No free ingest consumer name on host {host}.")

    def due(self) -> bool:
        return time.monotonic() >= self.next_beat

    def beat(self, force: bool = False) -> None:
        """Refresh the lease; while it lives, no other worker takes our ranges."""
        key = keys.heartbeat(self.name)
        if force and self.fixed:
            self.r.set(key, self.token, ex=HEARTBEAT_SECONDS)
        elif not self.r.eval(_REFRESH, 1, key, self.token, HEARTBEAT_SECONDS):
            # A stall longer than the lease: other workers may have taken what we hold.
            self.lost = True
        self.next_beat = time.monotonic() + HEARTBEAT_SECONDS / 3

    def keep_alive(self) -> None:
        if self.due():
            self.beat()

    def check(self) -> None:
        """Right before an insert: the ranges must still be ours (see ``LeaseLost``)."""
        self.beat()
        if self.lost:
            raise LeaseLost(f"The lease of ingest consumer {self.name} lapsed; its ranges may be taken over.")

    def release(self) -> None:
        if self.name:
            self.r.eval(_REFRESH, 1, keys.heartbeat(self.name), self.token, 1)
