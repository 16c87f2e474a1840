"""The sweep that repairs Redis records a Redis restart rolled back."""

from __future__ import annotations

from decimal import Decimal

import pytest
import redis

from tests.registry.helpers import setup
from tracker.core import keys
from tracker.registry import Registry
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse

pytestmark = pytest.mark.anyio


async def test_reconcile_repairs_records_a_redis_restart_rolled_back(reg: Registry,
                                                                     redis_client: redis.Redis) -> None:
    brand, c, i = await setup(reg)
    row = await reg.create_link(str(brand["id"]), campaign_id=str(c["id"]), influencer_id=str(i["id"]),
                                destination_url="https://a.example/")
    code = str(row["code"])
    untouched = await reg.create_link(str(brand["id"]), campaign_id=str(c["id"]), influencer_id=str(i["id"]),
                                      destination_url="https://a.example/u")
    before = redis_client.get(keys.link(code))
    await reg.set_fx_rate(brand, "EUR", Decimal("1.05"))
    await reg.update_link(str(brand["id"]), code, disabled=True)
    await reg.set_fx_rate(brand, "EUR", Decimal("1.10"))
    assert await reg.reconcile(60) == 0  # nothing to repair
    # Redis came back without its last writes: the old record and the old rate.
    redis_client.set(keys.link(code), before)  # type: ignore[arg-type]
    redis_client.hset(keys.fx_rate(str(brand["id"])), "EUR", "1.05")
    redis_client.delete(keys.link(str(untouched["code"])))
    stale = await reg.link_by_code(code)
    assert stale is not None and not stale.disabled
    assert await reg.reconcile(60) == 2
    rec = await reg.link_by_code(code)
    assert rec is not None and rec.disabled
    assert await reg.fx_rate(str(brand["id"]), "EUR") == Decimal("1.10")
    assert not redis_client.exists(keys.link(str(untouched["code"])))  # missing records are rebuilt on read
    assert await reg.reconcile(60) == 0


def test_the_app_runs_the_sweep(ch: ClickHouse, settings: Settings) -> None:
    from starlette.testclient import TestClient

    from tracker.app import create_app

    with TestClient(create_app(settings)) as client:
        registry: Registry = client.app.state.services.registry  # type: ignore[attr-defined]
        assert registry in client.app.state.services.components  # type: ignore[attr-defined]
        assert registry.sweep.task is not None and not registry.sweep.task.done()
    assert registry.sweep.task is None

