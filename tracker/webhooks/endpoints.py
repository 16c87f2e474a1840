"""A brand's webhook endpoints: ClickHouse rows (the record) and Redis records (what the sender reads).

The signing secret is ``whsec_`` + base64 of 32 bytes derived from the endpoint's nonce
under the server secret (``tracker.core.credentials.webhook_secret``), like a store's
secret: shown once at creation, stored nowhere. Writes follow the registry's
write-through order (``tracker.registry.cache``): Redis records dropped, the row
inserted, the records set again from ClickHouse, under a row lock.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from datetime import datetime
from typing import Any

from tracker.core import keys
from tracker.core.credentials import webhook_secret
from tracker.core.errors import NotFound
from tracker.core.ids import looks_like, new_id
from tracker.core.timeutil import iso, now_utc, utc
from tracker.registry.cache import Cache, Row

Record = dict[str, Any]
_COLUMNS = "brand_id, id, url, events, enabled, disabled_reason, secret_nonce, deleted, created_at, updated_at"


def _record(row: Row) -> Record:
    return {
        "id": row["id"], "brand_id": row["brand_id"], "url": row["url"], "events": list(row["events"]),
        "enabled": bool(row["enabled"]), "disabled_reason": row["disabled_reason"] or None,
        "secret_nonce": row["secret_nonce"], "created_at": iso(utc(row["created_at"])),
        "updated_at": iso(utc(row["updated_at"])),
    }


def secret_text(secret: bytes) -> str:
    return "whsec_" + base64.b64encode(secret).decode("ascii")


class Endpoints:
    def __init__(self, cache: Cache, secret_key: str) -> None:
        self.cache = cache
        self.secret_key = secret_key

    def secret(self, record: Record) -> bytes:
        return webhook_secret(self.secret_key, str(record["secret_nonce"]))

    async def _rows(self, brand_id: str) -> list[Row]:
        return await self.cache.query(
            f"SELECT {_COLUMNS} FROM webhook_endpoints FINAL WHERE brand_id = {{b:String}} AND deleted = 0 "
            "ORDER BY created_at, id",
            {"b": brand_id},
        )

    async def _write(self, row: Row) -> Record:
        """Insert a row version and set the Redis records from ClickHouse (records dropped first)."""
        brand_id, ident = row["brand_id"], row["id"]
        await self.cache.write(self.cache.redis.delete(keys.webhook_endpoints(brand_id), keys.webhook_endpoint(ident)))
        await self.cache.insert("webhook_endpoints", {**row, "version": time.time_ns()})
        records = [_record(r) for r in await self._rows(brand_id)]
        pipe = self.cache.redis.pipeline(transaction=True)
        pipe.set(keys.webhook_endpoints(brand_id), json.dumps(records))
        for r in records:
            pipe.set(keys.webhook_endpoint(r["id"]), json.dumps(r))
        if row["deleted"]:
            pipe.set(keys.webhook_endpoint(ident), json.dumps({"id": ident, "brand_id": brand_id, "deleted": True}))
        await self.cache.write(pipe.execute())
        return _record(row)

    async def create(self, brand_id: str, url: str, events: list[str]) -> tuple[Record, str]:
        """The new endpoint and its signing secret (shown this once)."""
        now = now_utc()
        row: Row = {
            "brand_id": brand_id, "id": new_id("webhook"), "url": url, "events": events, "enabled": 1,
            "disabled_reason": "", "secret_nonce": secrets.token_hex(16), "deleted": 0,
            "created_at": now, "updated_at": now,
        }
        record = await self._write(row)
        return record, secret_text(self.secret(record))

    async def all(self, brand_id: str) -> list[Record]:
        """The brand's endpoints (the Redis record, rebuilt from ClickHouse when missing)."""
        raw = await self.cache.get(keys.webhook_endpoints(brand_id))
        if raw is not None:
            cached: list[Record] = json.loads(raw)
            return cached
        records = [_record(r) for r in await self._rows(brand_id)]
        await self.cache.fill(keys.webhook_endpoints(brand_id), json.dumps(records))
        return records

    async def get(self, brand_id: str, endpoint_id: str) -> Record:
        if looks_like("webhook", endpoint_id):
            for record in await self.all(brand_id):
                if record["id"] == endpoint_id:
                    return record
        raise NotFound(f"Webhook endpoint {endpoint_id[:64]!r} does not exist.")

    async def by_id(self, endpoint_id: str) -> Record | None:
        """Any brand's endpoint, as the sender reads it; None when unknown or deleted."""
        raw = await self.cache.get(keys.webhook_endpoint(endpoint_id))
        if raw is None:
            row = await self.cache.first(
                f"SELECT {_COLUMNS} FROM webhook_endpoints FINAL WHERE id = {{id:String}} LIMIT 1", {"id": endpoint_id}
            )
            if row is None:
                return None
            record = _record(row) if not row["deleted"] else {"id": endpoint_id, "deleted": True}
            await self.cache.fill(keys.webhook_endpoint(endpoint_id), json.dumps(record))
        else:
            record = json.loads(raw)
        return None if record.get("deleted") else record

    async def change(self, brand_id: str, endpoint_id: str, *, if_enabled: bool = False,
                     **fields: Any) -> tuple[Record, Record]:
        """(before, after) of a change of url, events, enabled or disabled_reason, or of deleted.

        ``if_enabled``: change nothing (after = before) unless the endpoint is enabled.
        """
        async with self.cache.lock("webhook", endpoint_id):
            before = await self.get(brand_id, endpoint_id)
            if if_enabled and not before["enabled"]:
                return before, before
            row: Row = {
                "brand_id": brand_id, "id": endpoint_id, "url": before["url"], "events": before["events"],
                "enabled": int(before["enabled"]), "disabled_reason": before["disabled_reason"] or "",
                "secret_nonce": before["secret_nonce"], "deleted": 0,
                "created_at": datetime.fromisoformat(before["created_at"].replace("Z", "+00:00")),
                "updated_at": now_utc(),
            }
            for name, value in fields.items():
                row[name] = int(value) if isinstance(value, bool) else value
            if row["enabled"]:
                row["disabled_reason"] = ""
            return before, await self._write(row)
