"""FX rates: the brand's own currency is 1, a rate is cached in Redis and rebuilt, listed without padding."""

from __future__ import annotations

from decimal import Decimal

import pytest
import redis

from tracker.core import keys
from tracker.core.errors import Unprocessable
from tracker.registry import Registry

pytestmark = pytest.mark.anyio


async def test_rates(reg: Registry, redis_client: redis.Redis) -> None:
    brand, _ = await reg.create_brand("Acme", "USD")
    assert await reg.fx_rate(brand["id"], "USD") == Decimal(1)
    assert await reg.fx_rate(brand["id"], "usd") is None
    assert await reg.fx_rate("brd_unknownunknown01", "EUR") is None
    with pytest.raises(Unprocessable, match="own currency"):
        await reg.set_fx_rate(brand, "USD", Decimal("2"))
    row = await reg.set_fx_rate(brand, "EUR", Decimal("1.10"))
    assert (row["currency"], row["rate"]) == ("EUR", Decimal("1.10"))
    assert redis_client.hget(keys.fx_rate(brand["id"]), "EUR") == b"1.10"
    await reg.set_fx_rate(brand, "KWD", Decimal("3.25"))
    listed = await reg.list_fx_rates(brand["id"])
    assert [(r["currency"], str(r["rate"])) for r in listed] == [("EUR", "1.1"), ("KWD", "3.25")]
    redis_client.delete(keys.fx_rate(brand["id"]))
    assert await reg.fx_rate(brand["id"], "EUR") == Decimal("1.1")  # rebuilt from ClickHouse
    assert redis_client.hget(keys.fx_rate(brand["id"]), "EUR") == b"1.1"
