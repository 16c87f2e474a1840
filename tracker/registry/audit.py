"""The audit log: every change a brand's keys make, with the record before and after.

``record`` is called by the routes that change something (registry writes, key
changes, re-attributions, review decisions, payout actions) after the change
succeeded; ``page`` reads the log newest first with a keyset cursor, so a page
stays stable while new entries arrive. Entries are never updated. Secrets are
never recorded: callers pass the answer a brand would see, not the stored row.

``record_fact`` records what happens once and may be recorded twice: a payout run or
payment, which a route records and, when the route's process died around it, the recovery
that finishes the action records too (``tracker.money.payoutoutbox``). The entry's time and
id come from the fact, so both write the same entry and the log shows it once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from tracker.core.errors import Unprocessable
from tracker.core.ids import new_id
from tracker.core.timeutil import from_ms, now_utc, to_ms, utc
from tracker.storage.clickhouse import ClickHouse, run_sync

# The actor of a change made with the admin token (brands are created that way).
ADMIN = "admin"
# The actor of what tracker did by itself (a webhook endpoint disabled after failures).
SYSTEM = "system"
MAX_PAGE = 1000

_COLUMNS = ("brand_id", "at", "id", "key_id", "action", "object_id", "before", "after")


def _json_default(value: object) -> object:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return utc(value).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} cannot be recorded in the audit log")


def _encode(record: Mapping[str, Any] | None) -> str:
    if record is None:
        return ""
    return json.dumps(record, default=_json_default, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _cursor(at: datetime, entry_id: str) -> str:
    return base64.urlsafe_b64encode(f"{to_ms(at)}:{entry_id}".encode()).decode().rstrip("=")


def _parse_cursor(cursor: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        ms, _, entry_id = raw.partition(":")
        if not entry_id or not ms.isdigit():
            raise ValueError(raw)
        return int(ms), entry_id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise Unprocessable(
            f"cursor {cursor[:64]!r} is not a cursor this route gave out.", code="invalid_cursor"
        ) from None


class AuditLog:
    def __init__(self, ch: ClickHouse) -> None:
        self.ch = ch

    async def record(
        self,
        brand_id: str,
        key_id: str,
        action: str,
        object_id: str,
        before: Mapping[str, Any] | None,
        after: Mapping[str, Any] | None,
    ) -> None:
        """Append one entry (``action`` like ``campaign.update``; ``before`` None for a creation)."""
        entry_id = new_id("audit")
        await self._append([brand_id, now_utc(), entry_id, key_id, action, object_id, _encode(before), _encode(after)])

    async def record_fact(self, brand_id: str, key_id: str, action: str, object_id: str, at: datetime,
                          after: Mapping[str, Any]) -> None:
        """Append the entry of a fact that happened once, at ``at``; recording it again changes nothing
        (the same key ``(brand_id, at, id)``, which the log's ``FINAL`` folds)."""
        entry_id = "aud_" + hashlib.sha256(f"{brand_id}|{action}|{object_id}".encode()).hexdigest()[:24]
        await self._append([brand_id, utc(at), entry_id, key_id, action, object_id, "", _encode(after)])

    async def _append(self, row: list[Any]) -> None:
        """Insert one entry; its id is the insert's dedup token, so a retried insert adds nothing."""
        await run_sync(
            lambda: self.ch.insert("audit_log", [row], column_names=list(_COLUMNS), dedup_token=str(row[2]))
        )

    async def page(self, brand_id: str, limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
        """Up to ``limit`` entries, newest first, after ``cursor``; the next cursor or None at the end."""
        params: dict[str, Any] = {"brand": brand_id, "n": limit + 1}
        after = ""
        if cursor:
            ms, entry_id = _parse_cursor(cursor)
            params.update(at=from_ms(ms), id=entry_id)
            after = "AND (at, id) < ({at:DateTime64(3, 'UTC')}, {id:String})"
        rows = await run_sync(
            lambda: self.ch.query_dicts(
                f"SELECT at, id, key_id, action, object_id, before, after FROM audit_log FINAL "
                f"WHERE brand_id = {{brand:String}} {after} ORDER BY at DESC, id DESC LIMIT {{n:UInt32}}",
                params,
            )
        )
        more = len(rows) > limit
        rows = rows[:limit]
        items = [
            {
                "at": utc(r["at"]),
                "key_id": r["key_id"],
                "action": r["action"],
                "object_id": r["object_id"],
                "before": json.loads(r["before"]) if r["before"] else None,
                "after": json.loads(r["after"]) if r["after"] else None,
            }
            for r in rows
        ]
        next_cursor = _cursor(rows[-1]["at"], rows[-1]["id"]) if more and rows else None
        return items, next_cursor
