"""Stores: who may send postbacks for a brand, and how they prove it.

A store gets a signing secret (derived from a stored nonce, ``core.credentials``)
and a postback token (kept as its hash), both shown once at creation. Postbacks
read the store record (``keys.store``) on every request.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from tracker.core import keys
from tracker.core.credentials import new_postback_token, store_secret, token_hash
from tracker.core.errors import StorageUnavailable
from tracker.core.ids import looks_like, new_id
from tracker.core.timeutil import now_utc
from tracker.registry.cache import Cache, Row

StoreRecord = dict[str, Any]
_COLUMNS = "brand_id, id, name, secret_nonce, token_hash, allowed_ips, created_at"


@dataclass(frozen=True, slots=True)
class CreatedStore:
    """A new store's row with its credentials, which are never available again."""

    store: Row
    secret: str
    postback_token: str


def _record(row: Row) -> StoreRecord:
    """What a postback needs: the brand, the credentials' stored forms, the IP allowlist."""
    return {
        "id": row["id"],
        "brand_id": row["brand_id"],
        "name": row["name"],
        "secret_nonce": row["secret_nonce"],
        "token_hash": row["token_hash"],
        "allowed_ips": list(row["allowed_ips"]),
    }


class Stores:
    def __init__(self, cache: Cache, secret_key: str | None) -> None:
        self.cache = cache
        self.secret_key = secret_key

    async def create(self, brand_id: str, *, name: str, allowed_ips: list[str] | None = None) -> CreatedStore:
        if not self.secret_key:
            raise StorageUnavailable("TRACKER_SECRET_KEY is not set; stores cannot be given a signing secret.")
        nonce = secrets.token_hex(16)
        token = new_postback_token()
        row: Row = {
            "brand_id": brand_id,
            "id": new_id("store"),
            "name": name,
            "secret_nonce": nonce,
            "token_hash": token_hash(token),
            "allowed_ips": list(allowed_ips or []),
            "created_at": now_utc(),
            "version": time.time_ns(),
        }
        await self.cache.insert("stores", row)
        await self.cache.write(self.cache.redis.set(keys.store(row["id"]), json.dumps(_record(row))))
        return CreatedStore(store=row, secret=store_secret(self.secret_key, nonce), postback_token=token)

    async def get(self, store_id: str) -> StoreRecord | None:
        """The store record a postback checks (any brand's: the postback names the store)."""
        if not looks_like("store", store_id):
            return None
        raw = await self.cache.get(keys.store(store_id))
        if raw is not None:
            cached: StoreRecord = json.loads(raw)
            return cached
        row = await self.cache.first(
            f"SELECT {_COLUMNS} FROM stores FINAL WHERE id = {{id:String}} LIMIT 1", {"id": store_id}
        )
        if row is None:
            return None
        rec = _record(row)
        await self.cache.fill(keys.store(store_id), json.dumps(rec))
        return rec

    async def row(self, brand_id: str, store_id: str) -> Row | None:
        if not looks_like("store", store_id):
            return None
        return await self.cache.first(
            f"SELECT {_COLUMNS} FROM stores FINAL WHERE brand_id = {{b:String}} AND id = {{id:String}} LIMIT 1",
            {"b": brand_id, "id": store_id},
        )

    async def all(self, brand_id: str) -> list[Row]:
        return await self.cache.query(
            f"SELECT {_COLUMNS} FROM stores FINAL WHERE brand_id = {{b:String}} ORDER BY created_at, version, id",
            {"b": brand_id},
        )
