"""Stores: who may send postbacks and platform webhooks for a brand, and how they prove it.

A store gets a signing secret (derived from a stored nonce, ``core.credentials``)
and a postback token (kept as its hash), both shown once at creation. A store on
Shopify, WooCommerce or Stripe also has the platform's webhook signing secret, which
the brand pastes in: checking a webhook needs the secret itself, so it is kept
sealed (AES-256-GCM under a sub-key of the server secret, ``core.credentials``) and
never shown again. Rotating it keeps the previous one valid for
``PREVIOUS_SECRET_GRACE_SECONDS``, so deliveries signed before the platform switched
still verify. Postbacks and webhooks read the store record (``keys.store``).
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from tracker.core import keys
from tracker.core.credentials import new_postback_token, seal_webhook_secret, store_secret, token_hash
from tracker.core.errors import StorageUnavailable
from tracker.core.ids import looks_like, new_id
from tracker.core.timeutil import now_utc, to_ms
from tracker.registry.cache import Cache, Row

StoreRecord = dict[str, Any]
PLATFORMS = ("custom", "shopify", "woocommerce", "stripe")
# How long a rotated-out webhook secret still verifies (Stripe's own roll offers up to 24 h).
PREVIOUS_SECRET_GRACE_SECONDS = 24 * 3600
_COLUMNS = (
    "brand_id, id, name, secret_nonce, token_hash, allowed_ips, platform, webhook_secret, "
    "previous_webhook_secret, webhook_secret_rotated_at, created_at"
)


@dataclass(frozen=True, slots=True)
class CreatedStore:
    """A new store's row with its credentials, which are never available again."""

    store: Row
    secret: str
    postback_token: str


def _record(row: Row) -> StoreRecord:
    """What a postback or a webhook needs: the brand, the credentials' stored forms, the IP allowlist."""
    rotated = row.get("webhook_secret_rotated_at")
    return {
        "id": row["id"],
        "brand_id": row["brand_id"],
        "name": row["name"],
        "secret_nonce": row["secret_nonce"],
        "token_hash": row["token_hash"],
        "allowed_ips": list(row["allowed_ips"]),
        "platform": row.get("platform") or "custom",
        "webhook_secret": row.get("webhook_secret") or "",
        "previous_webhook_secret": row.get("previous_webhook_secret") or "",
        "rotated_ms": to_ms(rotated) if rotated is not None else 0,
    }


class Stores:
    def __init__(self, cache: Cache, secret_key: str | None) -> None:
        self.cache = cache
        self.secret_key = secret_key

    def _key(self) -> str:
        if not self.secret_key:
            raise StorageUnavailable("TRACKER_SECRET_KEY is not set; stores cannot be given a signing secret.")
        return self.secret_key

    async def create(
        self,
        brand_id: str,
        *,
        name: str,
        allowed_ips: list[str] | None = None,
        platform: str = "custom",
        webhook_secret: str | None = None,
    ) -> CreatedStore:
        key = self._key()
        nonce = secrets.token_hex(16)
        token = new_postback_token()
        store_id = new_id("store")
        row: Row = {
            "brand_id": brand_id,
            "id": store_id,
            "name": name,
            "secret_nonce": nonce,
            "token_hash": token_hash(token),
            "allowed_ips": list(allowed_ips or []),
            "platform": platform,
            "webhook_secret": seal_webhook_secret(key, store_id, webhook_secret) if webhook_secret else "",
            "previous_webhook_secret": "",
            "webhook_secret_rotated_at": None,
            "created_at": now_utc(),
            "version": time.time_ns(),
        }
        await self.cache.insert("stores", row)
        await self.cache.write(self.cache.redis.set(keys.store(row["id"]), json.dumps(_record(row))))
        return CreatedStore(store=row, secret=store_secret(key, nonce), postback_token=token)

    async def update(
        self,
        brand_id: str,
        store_id: str,
        *,
        name: str | None = None,
        allowed_ips: list[str] | None = None,
        webhook_secret: str | None = None,
    ) -> Row | None:
        """Change a store's name, allowlist or webhook secret (the old secret verifies for a grace period)."""
        key = self._key()
        async with self.cache.lock("store", store_id):
            old = await self.row(brand_id, store_id)
            if old is None:
                return None
            row: Row = {**old, "version": time.time_ns()}
            if name is not None:
                row["name"] = name
            if allowed_ips is not None:
                row["allowed_ips"] = list(allowed_ips)
            if webhook_secret is not None:
                row["previous_webhook_secret"] = old["webhook_secret"]
                row["webhook_secret"] = seal_webhook_secret(key, store_id, webhook_secret)
                row["webhook_secret_rotated_at"] = now_utc()
            # Write-through order of an update (cache.py): the record goes, the row lands, the record returns.
            await self.cache.write(self.cache.redis.delete(keys.store(store_id)))
            await self.cache.insert("stores", row)
            await self.cache.write(self.cache.redis.set(keys.store(store_id), json.dumps(_record(row))))
            return row

    async def get(self, store_id: str) -> StoreRecord | None:
        """The store record a postback checks (any brand's: the postback names the store)."""
        if not looks_like("store", store_id):
            return None
        raw = await self.cache.get(keys.store(store_id))
        if raw is not None:
            cached: StoreRecord = json.loads(raw)
            if "platform" in cached:  # a record written before store connectors is rebuilt
                return cached
        row = await self.cache.first(
            f"SELECT {_COLUMNS} FROM stores FINAL WHERE id = {{id:String}} LIMIT 1", {"id": store_id}
        )
        if row is None:
            return None
        rec = _record(row)
        if raw is not None:
            await self.cache.write(self.cache.redis.set(keys.store(store_id), json.dumps(rec)))
        else:
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
