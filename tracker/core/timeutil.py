"""Instants as the API and the tables carry them: UTC, millisecond precision.

Leaf module. ClickHouse keeps ``DateTime64(3, 'UTC')``; the API answers ISO 8601
with milliseconds and ``Z``; Redis records and click ids carry epoch milliseconds.
"""

from __future__ import annotations

from datetime import UTC, datetime

DAY_MS = 86_400_000


def utc(value: datetime) -> datetime:
    """An aware UTC datetime (a naive one is taken as UTC, as ClickHouse returns them)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def now_utc() -> datetime:
    return datetime.now(UTC)


def truncate_ms(value: datetime) -> datetime:
    """Dropped below the millisecond, as the DateTime64(3) columns keep it."""
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def now_ms_precision() -> datetime:
    return truncate_ms(now_utc())


def to_ms(value: datetime | int) -> int:
    """Epoch milliseconds of an instant (an int is taken to be milliseconds already)."""
    if isinstance(value, int):
        return value
    return int(utc(value).timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def iso(value: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and ``Z``: the API's one format for instants."""
    return utc(value).isoformat(timespec="milliseconds").replace("+00:00", "Z")
