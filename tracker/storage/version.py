"""The oldest ClickHouse server the schema runs on; ``tracker migrate`` and ``serve`` check it.

Features the schema relies on, and the release that added each (ClickHouse changelog); the
newest of them sets the floor:

- ``deduplicate_merge_projection_mode``, which a projection on a ReplacingMergeTree needs
  (migration 0023, ``clicks``): 24.8 (#66672). This sets the floor.
- ``distributed_foreground_insert`` (cluster inserts wait for the shards,
  ``tracker.storage.clickhouse``): late 2023, renamed from ``insert_distributed_sync`` (#55978).
- ``insert_deduplication_token`` (one token per ingest batch): 22.2 (#31609).
- projections (migration 0023): 21.6.

The tests run the engine of chDB (26.9); the compose files pin the same server release.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from tracker.core.errors import MigrationError

if TYPE_CHECKING:
    from tracker.storage.clickhouse import ClickHouse

MINIMUM = (24, 8)
NEEDS = "projections on a ReplacingMergeTree need the table setting deduplicate_merge_projection_mode, added in 24.8"


def check(version: str) -> None:
    """Refuse a server ``version`` (as ``SELECT version()`` gives it) older than ``MINIMUM``."""
    floor = ".".join(map(str, MINIMUM))
    m = re.match(r"\s*(\d+)\.(\d+)", version)
    if m is None:
        raise MigrationError(
            f"ClickHouse server version {version!r} cannot be read; this schema needs {floor} or newer."
        )
    if (int(m.group(1)), int(m.group(2))) < MINIMUM:
        raise MigrationError(
            f"ClickHouse server {version.strip()} is older than the minimum {floor} this schema needs ({NEEDS})."
        )


def require(ch: ClickHouse) -> str:
    """The server's version, after checking it (``MigrationError`` when too old)."""
    version = str(ch.query("SELECT version()")[0][0])
    check(version)
    return version
