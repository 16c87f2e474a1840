"""Registry against real Redis and chDB: write-through, rebuild after Redis loss, sequence seeding."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import redis

from tracker.core import keys
from tracker.core.credentials import store_secret, token_hash
from tracker.core.errors import Conflict, Unprocessable
from tracker.registry.store import Registry, check_destination, valid_ip_or_network
from tracker.settings import Settings
from tracker.storage import redis_client as rc
from tracker.storage.clickhouse import ClickHouse

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def reg(settings: Settings, ch: ClickHouse) -> AsyncIterator[Registry]:
    client = rc.connect_async(settings)
    try:
        yield Registry(settings, ch, client)
    finally:
        await client.aclose()


async def _setup(reg: Registry, **campaign: object) -> tuple[dict[str, object], dict[str, object], dict[str, object]]:
    brand, _ = await reg.create_brand("Acme", "USD")
    c = await reg.create_campaign(
        str(brand["id"]),
        name="Spring",
        commission_type=str(campaign.get("commission_type", "percent")),
        commission_value=Decimal(str(campaign.get("commission_value", "10"))),
        attribution_window_days=int(str(campaign.get("window", 30))),
        click_id_param=str(campaign.get("click_id_param", "click_id")),
        allowed_domains=list(campaign.get("allowed_domains", [])),  # type: ignore[call-overload]
    )
    i = await reg.create_influencer(str(brand["id"]), name="Ann", handle="@ann", platform="instagram")
    return brand, c, i


async def test_brand_and_api_key_round_trip(reg: Registry, redis_client: redis.Redis) -> None:
    brand, api_key = await reg.create_brand("Acme", "EUR")
    assert api_key.startswith("trk_") and len(api_key) > 40
    assert await reg.brand_for_key(api_key) == brand
    assert await reg.get_brand(str(brand["id"])) == brand
    # Only the hash is stored.
    assert redis_client.get(keys.api_key(token_hash(api_key))) == str(brand["id"]).encode()
    assert all(api_key not in str(k) for k in redis_client.keys("*"))
    redis_client.flushall()
    assert await reg.brand_for_key(api_key) == brand  # rebuilt from ClickHouse
    assert await reg.brand_for_key(api_key + "x") is None
    assert await reg.brand_for_key("nonsense") is None
    assert await reg.list_brands() == [brand]


async def test_campaign_cached_and_rebuilt(reg: Registry, redis_client: redis.Redis) -> None:
    brand, c, _ = await _setup(reg, commission_value="12.5", allowed_domains=["shop.example"])
    got = await reg.get_campaign(str(brand["id"]), str(c["id"]))
    assert got == c
    assert got is not None and got["commission"] == {"type": "percent", "value": Decimal("12.5")}
    redis_client.flushall()
    assert await reg.get_campaign(str(brand["id"]), str(c["id"])) == c
    assert redis_client.exists(keys.campaign(str(brand["id"]), str(c["id"])))
    other, _ = await reg.create_brand("Other", "USD")
    assert await reg.get_campaign(str(other["id"]), str(c["id"])) is None


async def test_link_codes_are_canonical_and_record_written_through(reg: Registry, redis_client: redis.Redis) -> None:
    brand, c, i = await _setup(reg, click_id_param="subid", window=7)
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
    brand, c, i = await _setup(reg)
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
    brand, c, i = await _setup(reg)
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


async def test_update_link_effective_immediately(reg: Registry) -> None:
    brand, c, i = await _setup(reg)
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


async def test_duplicate_coupon_conflicts_even_after_redis_loss(reg: Registry, redis_client: redis.Redis) -> None:
    brand, c, i = await _setup(reg)
    args: dict[str, Any] = {"campaign_id": str(c["id"]), "influencer_id": str(i["id"]), "destination_url": "https://a.example/"}
    await reg.create_link(str(brand["id"]), coupon_code="SAVE10", **args)
    with pytest.raises(Conflict):
        await reg.create_link(str(brand["id"]), coupon_code="save10", **args)
    redis_client.flushall()
    with pytest.raises(Conflict):
        await reg.create_link(str(brand["id"]), coupon_code="Save10", **args)


async def test_store_secret_derivation(reg: Registry, settings: Settings, redis_client: redis.Redis) -> None:
    brand, _ = await reg.create_brand("Acme", "USD")
    new = await reg.create_store(str(brand["id"]), name="Shop", allowed_ips=["203.0.113.7"])
    store = await reg.get_store(str(new.store["id"]))
    assert store is not None
    assert store["brand_id"] == brand["id"]
    assert store_secret(str(settings.secret_key), store["secret_nonce"]) == new.secret
    assert store["token_hash"] == token_hash(new.postback_token)
    assert new.secret not in str(store) and new.postback_token not in str(store)
    redis_client.flushall()
    assert await reg.get_store(str(new.store["id"])) == store


async def test_fx_rates_and_fee_conversion(reg: Registry, redis_client: redis.Redis) -> None:
    brand, c, i = await _setup(reg)
    assert await reg.fx_rate(str(brand["id"]), "USD") == Decimal(1)
    assert await reg.fx_rate(str(brand["id"]), "EUR") is None
    with pytest.raises(Unprocessable):
        await reg.create_fee(brand, campaign_id=str(c["id"]), influencer_id=str(i["id"]),
                             amount=Decimal("100"), currency="EUR", day=date(2026, 11, 1))
    await reg.set_fx_rate(brand, "EUR", Decimal("1.08"))
    assert await reg.fx_rate(str(brand["id"]), "EUR") == Decimal("1.08")
    redis_client.flushall()
    assert await reg.fx_rate(str(brand["id"]), "EUR") == Decimal("1.08")
    fee = await reg.create_fee(brand, campaign_id=str(c["id"]), influencer_id=str(i["id"]),
                               amount=Decimal("99.99"), currency="EUR", day=date(2026, 11, 1), note="story")
    assert fee["amount"] == Decimal("107.99") and fee["currency"] == "USD"
    assert fee["original_amount"] == Decimal("99.99") and fee["original_currency"] == "EUR"
    assert await reg.list_fees(str(brand["id"])) == [fee]


@pytest.mark.parametrize(
    ("url", "allowed", "ok"),
    [
        ("https://shop.example/a?b=c", [], True),
        ("http://shop.example", [], True),
        ("https://sub.shop.example/", ["shop.example"], True),
        ("https://shop.example/", ["shop.example"], True),
        ("https://evilshop.example/", ["shop.example"], False),
        ("https://shop.example.evil.test/", ["shop.example"], False),
        ("ftp://shop.example/", [], False),
        ("javascript:alert(1)", [], False),
        ("//shop.example/", [], False),
        ("/relative", [], False),
        ("https://user:pw@shop.example/", [], False),
        ("https://user@shop.example/", [], False),
        ("https://shop.example/\r\nSet-Cookie: x", [], False),
        ("https://shop.example/\n", [], False),
        ("https://shop.example/a b", [], False),
        ("https://", [], False),
        ("https://shop.example:99999/", [], False),
        ("https://shop.example" + "/a" * 1100, [], False),
        ("https:\\\\shop.example", [], False),
        ("https://bücher.example/x", ["xn--bcher-kva.example"], True),
        ("https://bücher.example/x", ["other.example"], False),
    ],
)
def test_check_destination(url: str, allowed: list[str], ok: bool) -> None:
    if ok:
        assert check_destination(url, allowed) == url
    else:
        with pytest.raises(Unprocessable):
            check_destination(url, allowed)


@pytest.mark.parametrize(("raw", "norm"), [("203.0.113.7", "203.0.113.7"), ("10.0.0.0/8", "10.0.0.0/8"),
                                           ("10.1.2.3/8", "10.0.0.0/8"), ("::1", "::1")])
def test_valid_ip_or_network(raw: str, norm: str) -> None:
    assert valid_ip_or_network(raw) == norm


async def test_concurrent_creations_get_distinct_codes(reg: Registry) -> None:
    brand, c, i = await _setup(reg)
    args: dict[str, Any] = {"campaign_id": str(c["id"]), "influencer_id": str(i["id"]),
                            "destination_url": "https://a.example/"}
    rows = await asyncio.gather(*(reg.create_link(str(brand["id"]), **args) for _ in range(20)))
    assert len({r["code"] for r in rows}) == 20
    assert len(await reg.list_links(str(brand["id"]))) == 20


@pytest.mark.parametrize("field", ["coupon_code", "code"])
async def test_concurrent_claims_of_one_coupon_or_code_admit_one(reg: Registry, field: str) -> None:
    brand, c, i = await _setup(reg)
    args: dict[str, Any] = {"campaign_id": str(c["id"]), "influencer_id": str(i["id"]),
                            "destination_url": "https://a.example/", field: "FLASH-50"}
    results = await asyncio.gather(*(reg.create_link(str(brand["id"]), **args) for _ in range(8)),
                                   return_exceptions=True)
    assert sum(isinstance(r, dict) for r in results) == 1
    assert all(isinstance(r, Conflict) for r in results if not isinstance(r, dict))
    assert len(await reg.list_links(str(brand["id"]))) == 1


async def test_concurrent_patches_keep_both_changes(reg: Registry) -> None:
    brand, c, i = await _setup(reg)
    row = await reg.create_link(str(brand["id"]), campaign_id=str(c["id"]), influencer_id=str(i["id"]),
                                destination_url="https://a.example/")
    code = str(row["code"])
    await asyncio.gather(reg.update_link(str(brand["id"]), code, disabled=True),
                         reg.update_link(str(brand["id"]), code, destination_url="https://b.example/"))
    rec = await reg.link_by_code(code)
    assert rec is not None and rec.disabled and rec.destination_url == "https://b.example/"
    fresh = await reg.get_link(str(brand["id"]), code)
    assert fresh is not None and fresh["disabled"] == 1 and fresh["destination_url"] == "https://b.example/"


@pytest.mark.parametrize("garbage", [b"not json", b"{}", b'{"id": 1}', b"[]"])
async def test_malformed_link_record_is_rebuilt(reg: Registry, redis_client: redis.Redis, garbage: bytes) -> None:
    brand, c, i = await _setup(reg)
    row = await reg.create_link(str(brand["id"]), campaign_id=str(c["id"]), influencer_id=str(i["id"]),
                                destination_url="https://a.example/")
    code = str(row["code"])
    redis_client.set(keys.link(code), garbage)
    rec = await reg.link_by_code(code)
    assert rec is not None and rec.id == row["id"]
    assert redis_client.get(keys.link(code)) == rec.encode()


async def test_sequence_behind_clickhouse_in_a_running_process(reg: Registry, redis_client: redis.Redis) -> None:
    brand, c, i = await _setup(reg)
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


async def test_reconcile_repairs_records_a_redis_restart_rolled_back(reg: Registry,
                                                                     redis_client: redis.Redis) -> None:
    brand, c, i = await _setup(reg)
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
        assert registry._sweeper is not None and not registry._sweeper.done()
    assert registry._sweeper is None


@pytest.mark.parametrize(("amount", "rate"), [("9999999999", "9999"), ("0.01", "0.0001")])
async def test_fee_conversion_bounds(reg: Registry, amount: str, rate: str) -> None:
    brand, c, i = await _setup(reg)
    await reg.set_fx_rate(brand, "EUR", Decimal(rate))
    with pytest.raises(Unprocessable, match=amount):
        await reg.create_fee(brand, campaign_id=str(c["id"]), influencer_id=str(i["id"]),
                             amount=Decimal(amount), currency="EUR", day=date(2026, 11, 1))
    assert await reg.list_fees(str(brand["id"])) == []


async def test_records_of_a_created_link_do_not_expire(reg: Registry, redis_client: redis.Redis) -> None:
    brand, c, i = await _setup(reg)
    row = await reg.create_link(str(brand["id"]), campaign_id=str(c["id"]), influencer_id=str(i["id"]),
                                destination_url="https://a.example/", coupon_code="KEEP1", code="keep-me")
    assert redis_client.ttl(keys.link("keep-me")) == -1
    assert redis_client.ttl(keys.coupon(str(brand["id"]), "KEEP1")) == -1
    assert redis_client.get(keys.link_code(int(row["id"]))) == b"keep-me"


async def test_a_reservation_left_by_a_crash_expires(reg: Registry, redis_client: redis.Redis) -> None:
    brand, c, i = await _setup(reg)
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
