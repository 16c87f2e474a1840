"""Recording postbacks end to end: attribution, idempotency, status moves, refunds, commission, currencies."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest
import redis
from starlette.testclient import TestClient

from tests.conversions.world import World, make_world, order, stream_rows
from tracker.core import keys
from tracker.core.clickid import ClickIds
from tracker.core.timeutil import DAY_MS
from tracker.settings import Settings

# --- attribution end to end ---------------------------------------------------------------------


def test_attribution_cases_end_to_end(world: World, app_client: TestClient, settings: Settings) -> None:
    now_ms = int(time.time() * 1000)
    other = make_world(app_client, settings)  # a second brand on the same server
    disabled = world.call(
        world.registry.create_link, world.brand["id"], campaign_id=world.campaign_id,
        influencer_id=world.influencer_id, destination_url="https://shop.example/d", coupon_code=None,
    )
    world.call(world.registry.update_link, world.brand["id"], disabled["code"], disabled=True)
    forged = ClickIds("a-different-secret-key-0123456789abcdef").mint(int(world.link["id"]), now_ms)
    good = world.click(world.link)
    cases: list[tuple[str, dict[str, Any], str | None, str | None]] = [
        ("click", {"click_id": good}, "click", world.link["code"]),
        ("coupon", {"coupon_code": "BOB5"}, "coupon", world.coupon_link["code"]),
        ("coupon, any case", {"coupon_code": "bob5"}, "coupon", world.coupon_link["code"]),
        ("both: click wins", {"click_id": world.click(world.link), "coupon_code": "BOB5"}, "click",
         world.link["code"]),
        ("neither", {}, None, None),
        ("unknown coupon", {"coupon_code": "NOPE"}, None, None),
        ("expired window", {"click_id": world.click(world.link, now_ms - 31 * DAY_MS)}, None, None),
        ("expired window, coupon", {"click_id": world.click(world.link, now_ms - 31 * DAY_MS),
                                    "coupon_code": "BOB5"}, "coupon", world.coupon_link["code"]),
        ("flat campaign 7-day window", {"click_id": world.click(world.flat_link, now_ms - 8 * DAY_MS)}, None, None),
        ("disabled link", {"click_id": world.click(disabled)}, None, None),
        ("other brand's click", {"click_id": other.click(other.link)}, None, None),
        ("other brand's coupon", {"coupon_code": "anna10x"}, None, None),
        ("forged", {"click_id": forged}, None, None),
        ("garbled", {"click_id": good[:-3] + "xyz"}, None, None),
        ("garbage", {"click_id": "not-a-click-id"}, None, None),
        ("forged, coupon", {"click_id": forged, "coupon_code": "BOB5"}, "coupon", world.coupon_link["code"]),
        ("click id of an old order time", {"click_id": world.click(world.link, now_ms - 10 * DAY_MS),
                                           "occurred_at": (now_ms - 9 * DAY_MS) // 1000}, "click",
         world.link["code"]),
    ]
    for i, (case, extra, kind, code) in enumerate(cases):
        r = world.post({"order_id": order(i), "amount": "20.00", "currency": "USD", **extra})
        assert r.status_code == 202, (case, r.text)
        body = r.json()
        assert body["attribution"] == kind, case
        assert body["attributed"] is (kind is not None), case
        assert body["link_code"] == code, case
        assert body["commission"] == ("2.00" if kind else "0.00"), case
        if kind is None:
            assert body["influencer_id"] is None and body["campaign_id"] is None, case


def test_json_number_amounts_are_refused(world: World) -> None:
    # The contract sends money as decimal strings: a JSON number may have gone through a float.
    r = world.post(b'{"order_id": "N-1", "amount": 1.5, "currency": "USD", "coupon_code": "ANNA10"}')
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_amount"
    r = world.post(b'{"order_id": "N-1", "amount": "1.5", "currency": "USD", "coupon_code": "ANNA10"}')
    assert (r.json()["amount"], r.json()["original_amount"], r.json()["commission"]) == ("1.50", "1.50", "0.15")


# --- idempotency ---------------------------------------------------------------------------------------


def test_same_postback_again_is_a_duplicate(world: World, redis_client: redis.Redis) -> None:
    body = {"order_id": "D-1", "amount": "30.00", "currency": "USD", "coupon_code": "ANNA10"}
    first = world.post(body).json()
    second = world.post(body).json()
    assert first["duplicate"] is False and second["duplicate"] is True
    assert {k: v for k, v in first.items() if k != "duplicate"} == {k: v for k, v in second.items() if k != "duplicate"}
    assert redis_client.xlen(keys.CONVERSION_STREAM) == 1


def test_same_order_id_in_two_brands_is_two_conversions(
    world: World, app_client: TestClient, settings: Settings, redis_client: redis.Redis
) -> None:
    other = make_world(app_client, settings)
    body = {"order_id": "1001", "amount": "10.00", "currency": "USD"}
    mine, theirs = world.post(body).json(), other.post(body).json()
    assert mine["duplicate"] is False and theirs["duplicate"] is False
    assert mine["conversion_id"] != theirs["conversion_id"]
    # A status change from one brand's store never touches the other brand's order.
    assert other.post({**body, "status": "refunded"}).json()["status"] == "refunded"
    assert world.post(body).json()["status"] == "approved"
    assert redis_client.xlen(keys.CONVERSION_STREAM) == 3


# --- status moves and refunds ---------------------------------------------------------------------------


def test_refunds_partial_and_full(world: World, redis_client: redis.Redis) -> None:
    base = {"order_id": "R-1", "currency": "USD", "coupon_code": "ANNA10"}
    steps: list[tuple[dict[str, Any], int, str, str, str, bool]] = [
        # (postback, http status, answer status, refunded_amount, commission, duplicate)
        ({"amount": "100.00", "status": "pending"}, 202, "pending", "0.00", "10.00", False),
        ({"amount": "100.00", "status": "pending"}, 202, "pending", "0.00", "10.00", True),
        ({"amount": "100.00", "status": "approved"}, 202, "approved", "0.00", "10.00", False),
        ({"amount": "30.00", "status": "refunded"}, 202, "approved", "30.00", "7.00", False),
        ({"amount": "30.00", "status": "refunded"}, 202, "approved", "30.00", "7.00", True),  # replay
        ({"amount": "45.55", "status": "refunded"}, 202, "approved", "45.55", "5.45", False),  # cumulative
        ({"amount": "30.00", "status": "refunded"}, 202, "approved", "45.55", "5.45", True),  # older total
        ({"amount": "100.00", "status": "approved"}, 202, "approved", "45.55", "5.45", True),
        ({"status": "refunded"}, 202, "refunded", "100.00", "0.00", False),  # the rest
        ({"status": "refunded"}, 202, "refunded", "100.00", "0.00", True),
        ({"amount": "50.00", "status": "refunded"}, 202, "refunded", "100.00", "0.00", True),
    ]
    for i, (extra, http_status, status, refunded, commission, duplicate) in enumerate(steps):
        r = world.post({**base, **extra})
        assert r.status_code == http_status, (i, r.text)
        body = r.json()
        assert (body["status"], body["refunded_amount"], body["commission"], body["duplicate"]) == (
            status, refunded, commission, duplicate,
        ), i
        assert body["amount"] == "100.00"
    rows = stream_rows(redis_client)
    assert [(r["version"], r["status"], r["refunded_amount"], r["commission"]) for r in rows] == [
        (1, "pending", "0.00", "10.00"),
        (2, "approved", "0.00", "10.00"),
        (3, "approved", "30.00", "7.00"),
        (4, "approved", "45.55", "5.45"),
        (5, "refunded", "100.00", "0.00"),
    ]
    assert len({r["conversion_id"] for r in rows}) == 1
    assert len({r["occurred_at"] for r in rows}) == 1  # same partition: the versions replace each other


def test_full_refund_with_whole_amount(world: World) -> None:
    base = {"order_id": "R-2", "currency": "USD", "click_id": world.click(world.flat_link)}
    assert world.post({**base, "amount": "12.00"}).json()["commission"] == "2.50"
    partial = world.post({**base, "amount": "11.99", "status": "refunded"}).json()
    assert (partial["status"], partial["commission"]) == ("approved", "2.50")  # flat stays after a partial refund
    full = world.post({**base, "amount": "12.00", "status": "refunded"}).json()
    assert (full["status"], full["refunded_amount"], full["commission"]) == ("refunded", "12.00", "0.00")


@pytest.mark.parametrize(
    ("first", "then", "status", "message"),
    [
        ("approved", {"status": "pending", "amount": "10.00"}, 409, "is approved; it cannot move to pending"),
        ("approved", {"status": "rejected", "amount": "10.00"}, 409, "is approved; it cannot move to rejected"),
        ("rejected", {"status": "approved", "amount": "10.00"}, 409, "is rejected; it cannot move to approved"),
        ("rejected", {"status": "refunded"}, 409, "is rejected; it cannot move to refunded"),
        ("approved", {"status": "refunded", "amount": "10.01"}, 422, "larger than its amount 10.00"),
        ("approved", {"status": "approved", "amount": "10.00", "currency": "EUR"}, 422, "recorded in USD"),
        (None, {"status": "refunded", "amount": "10.00"}, 409, "no conversion yet"),
    ],
)
def test_disallowed_moves(
    world: World, redis_client: redis.Redis, first: str | None, then: dict[str, Any], status: int, message: str
) -> None:
    base = {"order_id": "M-1", "currency": "USD"}
    if first is not None:
        assert world.post({**base, "amount": "10.00", "status": first}).status_code == 202
    before = redis_client.xlen(keys.CONVERSION_STREAM)
    r = world.post({**base, **then})
    assert r.status_code == status, r.text
    assert message in r.json()["error"]["message"]
    assert redis_client.xlen(keys.CONVERSION_STREAM) == before


def test_rejected_conversion_earns_nothing(world: World) -> None:
    body = world.post({"order_id": "X-1", "amount": "10.00", "currency": "USD", "coupon_code": "ANNA10",
                       "status": "pending"}).json()
    assert body["commission"] == "1.00"
    body = world.post({"order_id": "X-1", "amount": "10.00", "currency": "USD", "status": "rejected"}).json()
    assert (body["status"], body["commission"], body["attributed"]) == ("rejected", "0.00", True)


# --- commission rounding -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("coupon", "amount", "commission"),
    [
        ("ANNA10", "49.95", "5.00"),  # 4.995 half-up
        ("ANNA10", "0.05", "0.01"),  # 0.005 half-up
        ("ANNA10", "0.04", "0.00"),
        ("ANNA10", "12345.67", "1234.57"),
        ("FLAT", "0.01", "2.50"),
        ("FLAT", "999.99", "2.50"),
        (None, "100.00", "0.00"),
    ],
)
def test_commission_rounding(world: World, coupon: str | None, amount: str, commission: str) -> None:
    body: dict[str, Any] = {"order_id": "K-1", "amount": amount, "currency": "USD"}
    if coupon:
        body["coupon_code"] = coupon
    r = world.post(body)
    assert r.status_code == 202, r.text
    assert r.json()["commission"] == commission


# --- currencies ----------------------------------------------------------------------------------------------


def test_foreign_currency_needs_a_rate_then_converts(world: World, redis_client: redis.Redis) -> None:
    body = {"order_id": "F-1", "amount": "100.00", "currency": "EUR", "coupon_code": "ANNA10"}
    r = world.post(body)
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["code"] == "missing_fx_rate"
    assert "EUR" in error["message"] and "PUT /api/v1/fx-rates/EUR" in error["message"]
    assert redis_client.xlen(keys.CONVERSION_STREAM) == 0

    world.call(world.registry.set_fx_rate, world.brand, "EUR", Decimal("1.0837"))
    r = world.post(body)
    assert r.status_code == 202, r.text
    got = r.json()
    assert (got["amount"], got["currency"], got["commission"]) == ("108.37", "USD", "10.84")
    assert (got["original_amount"], got["original_currency"], got["fx_rate"]) == ("100.00", "EUR", "1.0837")

    # A later rate change does not touch the order: its refund uses the rate of the sale.
    world.call(world.registry.set_fx_rate, world.brand, "EUR", Decimal("2"))
    refund = world.post({"order_id": "F-1", "amount": "50.00", "currency": "EUR", "status": "refunded"}).json()
    assert (refund["refunded_amount"], refund["original_refunded_amount"], refund["fx_rate"]) == (
        "54.19", "50.00", "1.0837",
    )
    assert refund["commission"] == "5.42"  # 10 % of 108.37 - 54.19 = 54.18 -> 5.418


def test_zero_decimal_currency(app_client: TestClient, settings: Settings) -> None:
    world = make_world(app_client, settings, currency="JPY")
    r = world.post({"order_id": "J-1", "amount": "1005", "currency": "JPY", "coupon_code": "ANNA10"})
    assert r.status_code == 202, r.text
    assert (r.json()["amount"], r.json()["commission"]) == ("1005", "101")  # 100.5 half-up
    world.call(world.registry.set_fx_rate, world.brand, "USD", Decimal("155.123"))
    r = world.post({"order_id": "J-2", "amount": "10.00", "currency": "USD", "coupon_code": "FLAT"})
    assert (r.json()["amount"], r.json()["commission"]) == ("1551", "3")  # 1551.23; flat 2.50 -> 3


# --- races -------------------------------------------------------------------------------------------------


def test_a_lost_race_is_decided_again_on_the_winners_state(
    world: World, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    states = world.client.app.state.services.conversions.states  # type: ignore[attr-defined]
    real_write = states.write
    versions: list[int] = []

    async def rival_first(base: Any, row: dict[str, Any], extras: Any = None) -> Any:
        versions.append(row["version"])
        if len(versions) == 1:
            assert await real_write(base, row) is None  # an identical copy lands just before this one
        return await real_write(base, row)

    monkeypatch.setattr(states, "write", rival_first)
    r = world.post({"order_id": "RACE-1", "amount": "10.00", "currency": "USD", "coupon_code": "ANNA10"})
    assert r.status_code == 202, r.text
    assert (r.json()["duplicate"], r.json()["commission"]) == (True, "1.00")
    assert versions == [1]  # the second round found the same postback recorded: nothing more to write
    assert redis_client.xlen(keys.CONVERSION_STREAM) == 1


def test_an_order_that_never_settles_answers_503(
    world: World, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    states = world.client.app.state.services.conversions.states  # type: ignore[attr-defined]
    attempts: list[int] = []

    async def always_beaten(base: Any, row: dict[str, Any], extras: Any = None) -> Any:
        attempts.append(1)
        return base

    monkeypatch.setattr(states, "write", always_beaten)
    r = world.post({"order_id": "BUSY-1", "amount": "10.00", "currency": "USD"})
    assert r.status_code == 503
    assert r.json()["error"] == {
        "code": "storage_unavailable",
        "message": "Order 'BUSY-1' is changing too often right now; retry the postback.",
    }
    assert len(attempts) == 8
    assert redis_client.xlen(keys.CONVERSION_STREAM) == 0


@pytest.mark.parametrize(("rate", "shown"), [("10", "10"), ("20.00", "20"), ("0.5", "0.5"), ("1.08370000", "1.0837")])
def test_the_rate_reads_the_same_in_every_answer(world: World, rate: str, shown: str) -> None:
    world.call(world.registry.set_fx_rate, world.brand, "EUR", Decimal(rate))
    base = {"order_id": "FX-1", "amount": "10.00", "currency": "EUR"}
    answers = [world.post(base).json(), world.post(base).json(), world.post({**base, "status": "refunded"}).json()]
    assert [a["duplicate"] for a in answers] == [False, True, False]
    assert {a["fx_rate"] for a in answers} == {shown}
