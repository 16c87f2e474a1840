"""Links against real Redis and chDB: codes, the sequence, write-through records, races, coupons."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from tests.registry.helpers import setup
from tracker.core import keys
from tracker.core.errors import Conflict
from tracker.registry import Registry
from tracker.settings import Settings
from tracker.storage import redis_client as rc
from tracker.storage.clickhouse import ClickHouse

pytestmark = pytest.mark.anyio


async def test_link_codes_are_canonical_and_record_written_through(reg: Registry, redis_client: redis.Redis) -> None:
    brand, c, i = await setup(reg, click_id_param="subid", window=7)
    row = await reg.create_link(
        str(brand["id"]), campaign_id=str(c["id"]), influencer_id=str(i["id"]),
        destination_url="https://shop.example/p?x=1", coupon_code="Ann10",
    )
    code = row["code"]
    assert reg.codes.decode(code) == row["id"]
    rec = await reg.link_by_code(code)
    assert rec is not None
    assert (rec.id, rec.brand_id, rec.destination_url, rec.coupon_code, rec.click_id_param,
            rec.attribution_window_days, rec.disabled) == (
        row["id"], brand["id"], "https://shop.example/p?x=1", "Ann10", "subid", 7, False)
    assert await reg.link_by_id(int(row["id"])) == rec
    assert await reg.link_by_coupon(str(brand["id"]), "ann10") == rec
    assert await reg.link_by_coupon(str(brand["id"]), "ANN10") == rec
    other, _ = await reg.create_brand("Other", "USD")
    assert await reg.link_by_coupon(str(other["id"]), "ann10") is None
    redis_client.flushall()
    assert await reg.link_by_code(code) == rec
    assert await reg.link_by_coupon(str(brand["id"]), "ANN10") == rec


async def test_sequence_seeded_from_clickhouse_after_flushall(reg: Registry, settings: Settings, ch: ClickHouse,
                                                               redis_client: redis.Redis) -> None:
    brand, c, i = await setup(reg)
    args: dict[str, Any] = {"campaign_id": str(c["id"]), "influencer_id": str(i["id"]), "destination_url": "https://a.example/"}
    first = [await reg.create_link(str(brand["id"]), **args) for _ in range(3)]
    redis_client.flushall()
    # A fresh process (new Registry) and the same one both continue above the max id.
    client = rc.connect_async(settings)
    try:
        again = await Registry(settings, ch, client).create_link(str(brand["id"]), **args)
    finally:
        await client.aclose()
    more = await reg.create_link(str(brand["id"]), **args)
    codes = [r["code"] for r in [*first, again, more]]
    assert len(set(codes)) == len(codes)
    assert again["id"] > max(r["id"] for r in first)
    assert more["id"] > again["id"]


async def test_sequence_raised_when_redis_restored_stale(reg: Registry, settings: Settings, ch: ClickHouse,
                                                         redis_client: redis.Redis) -> None:
    brand, c, i = await setup(reg)
    args: dict[str, Any] = {"campaign_id": str(c["id"]), "influencer_id": str(i["id"]), "destination_url": "https://a.example/"}
    for _ in range(4):
        await reg.create_link(str(brand["id"]), **args)
    redis_client.set(keys.LINK_SEQUENCE, 1)  # an old snapshot came back
    client = rc.connect_async(settings)
    try:
        row = await Registry(settings, ch, client).create_link(str(brand["id"]), **args)
    finally:
        await client.aclose()
    assert row["id"] == 5


async def test_sequence_behind_clickhouse_in_a_running_process(reg: Registry, redis_client: redis.Redis) -> None:
    brand, c, i = await setup(reg)
    args: dict[str, Any] = {"campaign_id": str(c["id"]), "influencer_id": str(i["id"]),
                            "destination_url": "https://a.example/"}
    rows = [await reg.create_link(str(brand["id"]), **args) for _ in range(3)]
    # Redis restarted without its last second of writes: the sequence went back, the key exists.
    redis_client.set(keys.LINK_SEQUENCE, 1)
    redis_client.delete(keys.link(str(rows[1]["code"])), keys.link(str(rows[2]["code"])))
    new = await reg.create_link(str(brand["id"]), **args)
    assert new["id"] == 4
    listed = await reg.list_links(str(brand["id"]))
    assert [(r["id"], r["code"], r["version"]) for r in listed] == [
        (r["id"], r["code"], r["version"]) for r in [*rows, new]
    ]


async def test_update_link_effective_immediately(reg: Registry) -> None:
    brand, c, i = await setup(reg)
    row = await reg.create_link(str(brand["id"]), campaign_id=str(c["id"]), influencer_id=str(i["id"]),
                                destination_url="https://a.example/")
    code = str(row["code"])
    expires = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    updated = await reg.update_link(str(brand["id"]), code, disabled=True, destination_url="https://b.example/x",
                                    expires_at=expires)
    assert updated is not None
    rec = await reg.link_by_code(code)
    assert rec is not None and rec.disabled and rec.destination_url == "https://b.example/x"
    assert rec.expires_at_ms == int(expires.timestamp() * 1000)
    other, _ = await reg.create_brand("Other", "USD")
    assert await reg.update_link(str(other["id"]), code, disabled=False) is None
    still = await reg.link_by_code(code)
    assert still is not None and still.disabled


async def test_concurrent_patches_keep_both_changes(reg: Registry) -> None:
    brand, c, i = await setup(reg)
    row = await reg.create_link(str(brand["id"]), campaign_id=str(c["id"]), influencer_id=str(i["id"]),
                                destination_url="https://a.example/")
    code = str(row["code"])
    await asyncio.gather(reg.update_link(str(brand["id"]), code, disabled=True),
                         reg.update_link(str(brand["id"]), code, destination_url="https://b.example/"))
    rec = await reg.link_by_code(code)
    assert rec is not None and rec.disabled and rec.destination_url == "https://b.example/"
    fresh = await reg.get_link(str(brand["id"]), code)
    assert fresh is not None and fresh["disabled"] == 1 and fresh["destination_url"] == "https://b.example/"


async def test_duplicate_coupon_conflicts_even_after_redis_loss(reg: Registry, redis_client: redis.Redis) -> None:
    brand, c, i = await setup(reg)
    args: dict[str, Any] = {"campaign_id": str(c["id"]), "influencer_id": str(i["id"]), "destination_url": "https://a.example/"}
    await reg.create_link(str(brand["id"]), coupon_code="SAVE10", **args)
    with pytest.raises(Conflict):
        await reg.create_link(str(brand["id"]), coupon_code="save10", **args)
    redis_client.flushall()
    with pytest.raises(Conflict):
        await reg.create_link(str(brand["id"]), coupon_code="Save10", **args)


async def test_concurrent_creations_get_distinct_codes(reg: Registry) -> None:
    brand, c, i = await setup(reg)
    args: dict[str, Any] = {"campaign_id": str(c["id"]), "influencer_id": str(i["id"]),
                            "destination_url": "https://a.example/"}
    rows = await asyncio.gather(*(reg.create_link(str(brand["id"]), **args) for _ in range(20)))
    assert len({r["code"] for r in rows}) == 20
    assert len(await reg.list_links(str(brand["id"]))) == 20


@pytest.mark.parametrize("field", ["coupon_code", "code"])
async def test_concurrent_claims_of_one_coupon_or_code_admit_one(reg: Registry, field: str) -> None:
    brand, c, i = await setup(reg)
    args: dict[str, Any] = {"campaign_id": str(c["id"]), "influencer_id": str(i["id"]),
                            "destination_url": "https://a.example/", field: "FLASH-50"}
    results = await asyncio.gather(*(reg.create_link(str(brand["id"]), **args) for _ in range(8)),
                                   return_exceptions=True)
    assert sum(isinstance(r, dict) for r in results) == 1
    assert all(isinstance(r, Conflict) for r in results if not isinstance(r, dict))
    assert len(await reg.list_links(str(brand["id"]))) == 1


@pytest.mark.parametrize("garbage", [b"not json", b"{}", b'{"id": 1}', b"[]"])
async def test_malformed_link_record_is_rebuilt(reg: Registry, redis_client: redis.Redis, garbage: bytes) -> None:
    brand, c, i = await setup(reg)
    row = await reg.create_link(str(brand["id"]), campaign_id=str(c["id"]), influencer_id=str(i["id"]),
                                destination_url="https://a.example/")
    code = str(row["code"])
    redis_client.set(keys.link(code), garbage)
    rec = await reg.link_by_code(code)
    assert rec is not None and rec.id == row["id"]
    assert redis_client.get(keys.link(code)) == rec.encode()


async def test_records_of_a_created_link_do_not_expire(reg: Registry, redis_client: redis.Redis) -> None:
    brand, c, i = await setup(reg)
    row = await reg.create_link(str(brand["id"]), campaign_id=str(c["id"]), influencer_id=str(i["id"]),
                                destination_url="https://a.example/", coupon_code="KEEP1", code="keep-me")
    assert redis_client.ttl(keys.link("keep-me")) == -1
    assert redis_client.ttl(keys.coupon(str(brand["id"]), "KEEP1")) == -1
    assert redis_client.get(keys.link_code(int(row["id"]))) == b"keep-me"


async def test_a_reservation_left_by_a_crash_expires(reg: Registry, redis_client: redis.Redis) -> None:
    brand, c, i = await setup(reg)
    args: dict[str, Any] = {"campaign_id": str(c["id"]), "influencer_id": str(i["id"]),
                            "destination_url": "https://a.example/"}
    # A process reserved the coupon, then died before its insert.
    redis_client.set(keys.coupon(str(brand["id"]), "LOST1"), "ghost-code", ex=60)
    with pytest.raises(Conflict):
        await reg.create_link(str(brand["id"]), coupon_code="LOST1", **args)
    assert await reg.link_by_coupon(str(brand["id"]), "LOST1") is None
    redis_client.delete(keys.coupon(str(brand["id"]), "LOST1"))  # what the expiry does
    row = await reg.create_link(str(brand["id"]), coupon_code="LOST1", **args)
    found = await reg.link_by_coupon(str(brand["id"]), "lost1")
    assert found is not None and found.id == row["id"]

