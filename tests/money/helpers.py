"""Shared steps of the money tests: brand calls, draining conversions into ClickHouse."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import redis

from tests.conversions.world import World
from tracker.core.events import CONVERSION_COLUMNS
from tracker.ingest.worker import Worker
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse


def auth(world: World) -> dict[str, str]:
    return {"Authorization": f"Bearer {world.brand['api_key']}"}


def api(world: World, method: str, path: str, **kw: Any) -> Any:
    return world.client.request(method, path, headers=auth(world), **kw)


def rules_off(world: World) -> None:
    """Switch the brand's quality rules off: a test of the money figures alone, whose many coupon orders
    of one link in one instant would otherwise be held for review as a leaked coupon."""
    r = api(world, "PUT", "/api/v1/rules", json={"min_click_seconds": 0, "max_conversions_per_visitor_day": 0,
                                                 "self_referral": False, "coupon_leak": False})
    assert r.status_code == 200, r.text


def drain(settings: Settings, redis_client: redis.Redis, ch: ClickHouse) -> int:
    """Move every streamed conversion version into ClickHouse (what the ingest worker does)."""
    return Worker(settings, redis_client, ch, name="t-money").drain()


def conversion_row(brand_id: str, n: int, influencer_id: str, commission: Decimal, occurred: datetime, *,
                   status: str = "approved", hold_days: int = 30) -> dict[str, Any]:
    """A conversion row as ingest writes it (for tests that load ClickHouse directly)."""
    amount = commission * 10
    return {
        "brand_id": brand_id, "order_id": f"O-{n}", "version": 1, "conversion_id": f"cnv_{n:012d}",
        "store_id": "sto_1", "status": status, "currency": "USD", "amount": amount, "refunded_amount": Decimal(0),
        "original_currency": "USD", "original_amount": amount, "original_refunded_amount": Decimal(0),
        "fx_rate": Decimal(1), "commission": commission, "attributed": 1, "attribution": "coupon", "click_id": "",
        "link_id": 1, "link_code": "code1", "campaign_id": "cmp_1", "influencer_id": influencer_id,
        "coupon_code": "", "occurred_at": occurred, "created_at": occurred, "updated_at": occurred,
        "customer_hash": "", "email_hash": "", "platform_state": "", "commission_rule": "percent:10",
        "hold_days": hold_days, "review": 0, "change": "created", "reason": "", "country": "",
    }


def insert_conversions(ch: ClickHouse, rows: list[dict[str, Any]]) -> None:
    ch.insert("conversions", [[r[c] for c in CONVERSION_COLUMNS] for r in rows], list(CONVERSION_COLUMNS))
