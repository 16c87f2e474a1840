from __future__ import annotations

import asyncio
import functools
import json
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
from starlette.testclient import TestClient

from tracker.app import create_app
from tracker.conversions import signature
from tracker.conversions.postbacks import StateLookups, decode_state, load_from_clickhouse, normalize_row
from tracker.core import keys
from tracker.core.clickid import ClickIds
from tracker.core.events import CONVERSION_COLUMNS
from tracker.ingest.worker import Worker
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse
from tracker.storage.embedded import EmbeddedRedis

DAY_MS = 86_400_000


@dataclass
class World:
    client: TestClient
    brand: dict[str, Any]
    store_id: str
    secret: str
    token: str
    campaign_id: str
    flat_campaign_id: str
    influencer_id: str
    link: dict[str, Any]  # percent 10 %, coupon ANNA10
    coupon_link: dict[str, Any]  # percent 10 %, coupon BOB5, another influencer
    flat_link: dict[str, Any]  # flat 2.50, coupon FLAT
    click_ids: ClickIds

    def call(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        return self.client.portal.call(functools.partial(fn, *args, **kw))

    @property
    def registry(self) -> Any:
        return self.client.app.state.services.registry  # type: ignore[attr-defined]

    def click(self, link: dict[str, Any], ts_ms: int | None = None) -> str:
        return self.click_ids.mint(int(link["id"]), ts_ms if ts_ms is not None else int(time.time() * 1000))

    def post(
        self,
        body: dict[str, Any] | bytes,
        *,
        secret: str | None = None,
        store_id: str | None = None,
        ts: int | None = None,
        client: TestClient | None = None,
    ) -> Any:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        t = int(time.time()) if ts is None else ts
        headers = {
            "X-Store-Id": self.store_id if store_id is None else store_id,
            "X-Signature": signature.sign(self.secret if secret is None else secret, t, raw),
            "Content-Type": "application/json",
        }
        return (client or self.client).post("/api/v1/conversions", content=raw, headers=headers)

    def get(self, **params: str) -> Any:
        query = {"store_id": self.store_id, "token": self.token, **params}
        return self.client.get("/postback", params=query)


def make_world(client: TestClient, settings: Settings, currency: str = "USD") -> World:
    svc = client.app.state.services  # type: ignore[attr-defined]
    reg = svc.registry

    def call(fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        return client.portal.call(functools.partial(fn, *args, **kw))

    brand, _key = call(reg.create_brand, "Acme", currency)
    pct = call(reg.create_campaign, brand["id"], name="Spring", commission_type="percent",
               commission_value=Decimal("10"), attribution_window_days=30)
    flat = call(reg.create_campaign, brand["id"], name="Flat", commission_type="flat",
                commission_value=Decimal("2.50"), attribution_window_days=7)
    anna = call(reg.create_influencer, brand["id"], name="Anna")
    bob = call(reg.create_influencer, brand["id"], name="Bob")
    link = call(reg.create_link, brand["id"], campaign_id=pct["id"], influencer_id=anna["id"],
                destination_url="https://shop.example/p", coupon_code="ANNA10")
    coupon_link = call(reg.create_link, brand["id"], campaign_id=pct["id"], influencer_id=bob["id"],
                       destination_url="https://shop.example/q", coupon_code="BOB5")
    flat_link = call(reg.create_link, brand["id"], campaign_id=flat["id"], influencer_id=anna["id"],
                     destination_url="https://shop.example/f", coupon_code="FLAT")
    store = call(reg.create_store, brand["id"], name="Shop", allowed_ips=[])
    assert settings.secret_key is not None
    return World(
        client=client, brand=brand, store_id=store.store["id"], secret=store.secret, token=store.postback_token,
        campaign_id=pct["id"], flat_campaign_id=flat["id"], influencer_id=anna["id"], link=link,
        coupon_link=coupon_link, flat_link=flat_link, click_ids=ClickIds(settings.secret_key),
    )


@pytest.fixture
def app_client(ch: ClickHouse, settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def world(app_client: TestClient, settings: Settings) -> World:
    return make_world(app_client, settings)


def stream_rows(redis_client: redis.Redis) -> list[dict[str, Any]]:
    entries = redis_client.xrange(keys.CONVERSION_STREAM)
    return [json.loads(fields[b"e"]) for _id, fields in entries]


def order(n: int | str) -> str:
    return f"ORD-{n}"


# --- the happy path and the stream entry --------------------------------------------------------


def test_click_attributed_conversion_is_answered_and_streamed(world: World, redis_client: redis.Redis) -> None:
    click_id = world.click(world.link)
    r = world.post({"order_id": "A-1", "amount": "49.90", "currency": "USD", "click_id": click_id})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["conversion_id"].startswith("cnv_")
    assert body == {
        "conversion_id": body["conversion_id"],
        "order_id": "A-1",
        "status": "approved",
        "attributed": True,
        "attribution": "click",
        "link_code": world.link["code"],
        "influencer_id": world.influencer_id,
        "campaign_id": world.campaign_id,
        "commission": "4.99",
        "amount": "49.90",
        "refunded_amount": "0.00",
        "currency": "USD",
        "original_amount": "49.90",
        "original_refunded_amount": "0.00",
        "original_currency": "USD",
        "fx_rate": "1",
        "duplicate": False,
    }
    rows = stream_rows(redis_client)
    assert len(rows) == 1
    row = rows[0]
    assert tuple(row) == CONVERSION_COLUMNS
    assert row["brand_id"] == world.brand["id"]
    assert row["store_id"] == world.store_id
    assert row["version"] == 1
    assert row["click_id"] == click_id
    assert row["link_id"] == int(world.link["id"])
    assert row["attributed"] == 1
    assert (row["amount"], row["commission"], row["refunded_amount"]) == ("49.90", "4.99", "0.00")
    typed = normalize_row(row)
    assert typed["occurred_at"].tzinfo is not None
    assert abs(typed["occurred_at"].timestamp() - time.time()) < 60
    # The Redis state is the same bytes that went on the stream.
    state = redis_client.get(keys.conversion(world.brand["id"], "A-1"))
    assert state is not None and json.loads(state) == row
    assert 7 * 86_400 - 60 < redis_client.ttl(keys.conversion(world.brand["id"], "A-1")) <= 7 * 86_400


def test_ingest_drain_stores_exactly_the_current_states(
    world: World, redis_client: redis.Redis, ch: ClickHouse, settings: Settings
) -> None:
    """Through the real ingest worker: every version lands, FINAL reads the current state."""
    world.call(world.registry.set_fx_rate, world.brand, "EUR", Decimal("1.25"))
    posts = [
        {"order_id": "I-1", "amount": "10.00", "currency": "USD", "coupon_code": "bob5",
         "occurred_at": "2026-01-02T03:04:05Z"},
        {"order_id": "I-2", "amount": "80.00", "currency": "EUR", "click_id": world.click(world.link),
         "status": "pending"},
        {"order_id": "I-2", "amount": "80.00", "currency": "EUR", "status": "approved"},
        {"order_id": "I-2", "amount": "20.00", "currency": "EUR", "status": "refunded"},
        {"order_id": "I-3", "amount": "5.00", "currency": "USD"},
        {"order_id": "I-3", "currency": "USD", "status": "refunded"},
        {"order_id": "I-3", "currency": "USD", "status": "refunded"},  # duplicate: no entry
    ]
    for body in posts:
        assert world.post(body).status_code == 202
    assert redis_client.xlen(keys.CONVERSION_STREAM) == 6
    assert Worker(settings, redis_client, ch, name="t-postbacks").drain() == 6
    stored = ch.query_dicts(
        f"SELECT {', '.join(CONVERSION_COLUMNS)} FROM conversions FINAL WHERE brand_id = {{b:String}} "
        "ORDER BY order_id",
        {"b": world.brand["id"]},
    )
    current = {
        o: decode_state(redis_client.get(keys.conversion(world.brand["id"], o)) or b"") for o in ("I-1", "I-2", "I-3")
    }
    assert [normalize_row(row) for row in stored] == [current["I-1"], current["I-2"], current["I-3"]]
    assert current["I-1"]["occurred_at"] == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert current["I-1"]["attribution"] == "coupon" and current["I-1"]["link_code"] == world.coupon_link["code"]
    i2 = current["I-2"]
    assert (i2["version"], i2["status"], i2["amount"], i2["refunded_amount"], i2["commission"]) == (
        3, "approved", Decimal("100.00"), Decimal("25.00"), Decimal("7.50"),
    )
    assert (i2["original_currency"], i2["original_amount"], i2["fx_rate"]) == ("EUR", Decimal("80.00"), Decimal("1.25"))
    assert (current["I-3"]["status"], current["I-3"]["commission"]) == ("refunded", Decimal("0.00"))


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


# --- store authentication -----------------------------------------------------------------------


BODY = {"order_id": "S-1", "amount": "5.00", "currency": "USD"}


@pytest.mark.parametrize(
    ("case", "mutate"),
    [
        ("wrong secret", lambda w: {"secret": "x" * 64}),
        ("unknown store", lambda w: {"store_id": "sto_" + "Z" * 16}),
        ("malformed store id", lambda w: {"store_id": "nope"}),
        ("empty store id", lambda w: {"store_id": ""}),
    ],
)
def test_unknown_store_and_wrong_secret_answer_the_same_401(
    world: World, redis_client: redis.Redis, case: str, mutate: Callable[[World], dict[str, Any]]
) -> None:
    r = world.post(BODY, **mutate(world))
    assert r.status_code == 401, case
    message = "The store id or the X-Signature is not valid."
    assert r.json() == {"error": {"code": "invalid_signature", "message": message}}
    assert redis_client.xlen(keys.CONVERSION_STREAM) == 0


@pytest.mark.parametrize(
    ("case", "headers", "message"),
    [
        ("missing header", lambda w, raw: {"X-Store-Id": w.store_id}, "missing"),
        ("old timestamp", lambda w, raw: {"X-Store-Id": w.store_id,
                                          "X-Signature": signature.sign(w.secret, int(time.time()) - 400, raw)},
         "more than 300 seconds"),
        ("future timestamp", lambda w, raw: {"X-Store-Id": w.store_id,
                                             "X-Signature": signature.sign(w.secret, int(time.time()) + 400, raw)},
         "more than 300 seconds"),
        ("tampered body", lambda w, raw: {"X-Store-Id": w.store_id,
                                          "X-Signature": signature.sign(w.secret, int(time.time()), raw + b" ")},
         "not valid"),
        ("malformed", lambda w, raw: {"X-Store-Id": w.store_id, "X-Signature": "sha256=abc"}, "no timestamp"),
        ("missing store id", lambda w, raw: {"X-Signature": signature.sign(w.secret, int(time.time()), raw)},
         "not valid"),
    ],
)
def test_bad_signatures_answer_401(
    world: World, redis_client: redis.Redis, case: str, headers: Callable[[World, bytes], dict[str, str]],
    message: str,
) -> None:
    raw = json.dumps(BODY).encode()
    r = world.client.post("/api/v1/conversions", content=raw, headers=headers(world, raw))
    assert r.status_code == 401, case
    assert message in r.json()["error"]["message"], case
    assert redis_client.xlen(keys.CONVERSION_STREAM) == 0


def test_body_size_limit(world: World) -> None:
    r = world.post({"order_id": "B-1", "amount": "1.00", "currency": "USD", "coupon_code": "x" * 20_000})
    assert r.status_code == 413


# --- validation -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"amount": "1.00", "currency": "USD"}, 400, "order_id is required"),
        ({"order_id": 17, "amount": "1.00", "currency": "USD"}, 400, "order_id must be a string"),
        ({"order_id": "x" * 129, "amount": "1.00", "currency": "USD"}, 400, "longer than 128"),
        ({"order_id": "V", "amount": "1.00", "currency": "USD", "click_id": "c" * 257}, 400, "longer than 256"),
        ({"order_id": "V", "amount": "1.00", "currency": "USD", "coupon_code": "C" * 65}, 400, "longer than 64"),
        ({"order_id": "a\nb", "amount": "1.00", "currency": "USD"}, 400, "control characters"),
        ({"order_id": "V", "currency": "USD"}, 400, "amount is required"),
        ({"order_id": "V", "amount": "1.00"}, 400, "currency is required"),
        ({"order_id": "V", "amount": 1.555, "currency": "USD"}, 422, "amount 1.555 has more decimals"),
        ({"order_id": "V", "amount": "0", "currency": "USD"}, 422, "greater than 0"),
        ({"order_id": "V", "amount": "-5.00", "currency": "USD"}, 422, "greater than 0"),
        ({"order_id": "V", "amount": "1.001", "currency": "USD"}, 422, "more decimals than USD"),
        ({"order_id": "V", "amount": "1.5", "currency": "JPY"}, 422, "more decimals than JPY"),
        ({"order_id": "V", "amount": "abc", "currency": "USD"}, 422, "not a decimal amount"),
        ({"order_id": "V", "amount": True, "currency": "USD"}, 422, "decimal string"),
        ({"order_id": "V", "amount": "1.00", "currency": "XYZ"}, 422, "not an ISO 4217"),
        ({"order_id": "V", "amount": "1.00", "currency": 840}, 400, "currency must be a string"),
        ({"order_id": "V", "amount": "1.00", "currency": "USD", "status": "paid"}, 422, "not one of"),
        ({"order_id": "V", "amount": "1.00", "currency": "USD", "status": 1}, 400, "status must be a string"),
        ({"order_id": "V", "amount": "1.00", "currency": "USD", "click_id": 5}, 400, "click_id must be a string"),
        ({"order_id": "V", "amount": "1.00", "currency": "USD", "occurred_at": "yesterday"}, 422, "ISO 8601"),
        ({"order_id": "V", "amount": "1.00", "currency": "USD", "occurred_at": "2999-01-01T00:00:00Z"}, 422,
         "in the future"),
        ({"order_id": "V", "amount": "1.00", "currency": "USD", "occurred_at": 32503680000}, 422, "in the future"),
        ({"order_id": "V", "amount": "1.00", "currency": "USD", "occurred_at": "1990-01-01"}, 422, "before 2000"),
        ({"order_id": "V", "amount": "1.00", "currency": "USD", "clickid": "abc"}, 400, "Unknown field(s) clickid"),
    ],
)
def test_bad_bodies(world: World, redis_client: redis.Redis, body: dict[str, Any], status: int, message: str) -> None:
    r = world.post(body)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]["message"]
    assert redis_client.xlen(keys.CONVERSION_STREAM) == 0


@pytest.mark.parametrize("raw", [b"", b"[1,2]", b"{not json", b'"string"'])
def test_non_object_bodies(world: World, raw: bytes) -> None:
    r = world.post(raw)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_json"


def test_json_number_amounts_are_exact(world: World) -> None:
    r = world.post(b'{"order_id": "N-1", "amount": 1.5, "currency": "USD", "coupon_code": "ANNA10"}')
    assert r.status_code == 202, r.text
    assert (r.json()["amount"], r.json()["original_amount"], r.json()["commission"]) == ("1.50", "1.50", "0.15")


def test_occurred_at_forms(world: World, redis_client: redis.Redis) -> None:
    forms = {
        "unix int": 1_767_323_045,
        "unix string": "1767323045",
        "iso Z": "2026-01-02T03:04:05Z",
        "iso offset": "2026-01-02T04:04:05+01:00",
        "iso naive = UTC": "2026-01-02T03:04:05",
    }
    for i, value in enumerate(forms.values()):
        r = world.post({"order_id": order(i), "amount": "1.00", "currency": "USD", "occurred_at": value})
        assert r.status_code == 202, r.text
    assert {normalize_row(row)["occurred_at"] for row in stream_rows(redis_client)} == {
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    }


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


def test_fifty_concurrent_copies_on_two_workers_make_one_conversion(
    ch: ClickHouse, settings: Settings, redis_client: redis.Redis
) -> None:
    with TestClient(create_app(settings)) as one, TestClient(create_app(settings)) as two:
        world = make_world(one, settings)
        body = {"order_id": "C-1", "amount": "99.99", "currency": "USD", "click_id": world.click(world.link)}
        raw = json.dumps(body).encode()
        results: list[tuple[int, dict[str, Any]]] = []
        lock = threading.Lock()
        start = threading.Barrier(50)

        def send(i: int) -> None:
            client = one if i % 2 else two
            headers = {"X-Store-Id": world.store_id,
                       "X-Signature": signature.sign(world.secret, int(time.time()), raw)}
            start.wait()
            r = client.post("/api/v1/conversions", content=raw, headers=headers)
            with lock:
                results.append((r.status_code, r.json()))

        threads = [threading.Thread(target=send, args=(i,)) for i in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert [s for s, _ in results] == [202] * 50, results
    assert sum(1 for _, b in results if not b["duplicate"]) == 1
    assert len({b["conversion_id"] for _, b in results}) == 1
    assert {b["commission"] for _, b in results} == {"10.00"}
    assert redis_client.xlen(keys.CONVERSION_STREAM) == 1


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


# --- Redis lost the state --------------------------------------------------------------------------------------


def test_state_rebuilt_from_clickhouse_when_redis_lost_it(
    world: World, redis_client: redis.Redis, ch: ClickHouse, settings: Settings
) -> None:
    body = {"order_id": "L-1", "amount": "80.00", "currency": "USD", "coupon_code": "ANNA10"}
    first = world.post(body).json()
    # Ingest moved the row to ClickHouse; then Redis lost the order's state.
    assert Worker(settings, redis_client, ch, name="t-postbacks").drain() == 1
    redis_client.delete(keys.conversion(world.brand["id"], "L-1"))

    again = world.post(body).json()
    assert again["duplicate"] is True and again["conversion_id"] == first["conversion_id"]
    assert redis_client.xlen(keys.CONVERSION_STREAM) == 1
    redis_client.delete(keys.conversion(world.brand["id"], "L-1"))
    refund = world.post({**body, "amount": "20.00", "status": "refunded"}).json()
    assert (refund["duplicate"], refund["refunded_amount"], refund["commission"]) == (False, "20.00", "6.00")
    assert refund["conversion_id"] == first["conversion_id"]
    assert stream_rows(redis_client)[-1]["version"] == 2


def test_redis_down_answers_503_and_the_retry_is_recorded(ch: ClickHouse, settings: Settings, tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "own")
    server.start()
    try:
        own = settings.with_(redis_url=server.url)
        with TestClient(create_app(own)) as client:
            world = make_world(client, own)
            body = {"order_id": "DOWN-1", "amount": "10.00", "currency": "USD", "coupon_code": "ANNA10"}
            server.stop()
            down = world.post(body)
            assert down.status_code == 503, down.text
            assert down.json()["error"]["code"] == "storage_unavailable"
            assert down.headers["Retry-After"] == "1"
            server.start()  # same data directory and socket: AOF brings the registry records back
            first = world.post(body)
            assert (first.status_code, first.json()["duplicate"]) == (202, False), first.text
            assert world.post(body).json()["duplicate"] is True
            check = redis.Redis.from_url(server.url)
            assert check.xlen(keys.CONVERSION_STREAM) == 1
            check.close()
    finally:
        server.stop()


def test_concurrent_state_lookups_share_one_clickhouse_query(
    world: World, redis_client: redis.Redis, ch: ClickHouse, settings: Settings
) -> None:
    for i in range(3):
        world.post({"order_id": order(i), "amount": "1.00", "currency": "USD"})
    assert Worker(settings, redis_client, ch, name="t-postbacks").drain() == 3
    brand = world.brand["id"]
    wanted = [(brand, order(i)) for i in (0, 1, 2, 1, 7)] + [("brd_" + "N" * 16, order(0))]

    async def lookups() -> tuple[list[Any], int]:
        states = StateLookups(ch)
        found = await asyncio.gather(*(states.get(b, o) for b, o in wanted))
        return found, states.queries

    found, queries = asyncio.run(lookups())
    assert queries == 1
    assert [None if f is None else f["order_id"] for f in found] == [order(0), order(1), order(2), order(1), None, None]
    assert found[1] == found[3] and found[1] is not found[3]
    assert found[0] == load_from_clickhouse(ch, brand, order(0))


# --- GET /postback ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"order_id": "G-1", "amount": "20.00", "currency": "USD"}, None),
        ({"txid": "G-1", "payout": "20.00", "currency": "USD", "clickid": "{click}"}, "click"),
        ({"transaction": "G-1", "sale_amount": "20.00", "currency": "usd", "cid": "{click}"}, "click"),
        ({"order_id": "G-1", "amount": "20.00", "currency": "USD", "subid": "{click}"}, "click"),
        ({"order_id": "G-1", "amount": "20.00", "currency": "USD", "transaction_id": "{click}"}, "click"),
        ({"order_id": "G-1", "amount": "20.00", "currency": "USD", "click_id": "{click}"}, "click"),
        ({"order_id": "G-1", "amount": "20.00", "currency": "USD", "coupon": "bob5"}, "coupon"),
        ({"order_id": "G-1", "amount": "20.00", "currency": "USD", "coupon_code": "BOB5", "network_macro": "x"},
         "coupon"),
        ({"order_id": "G-1", "amount": "20.00", "currency": "USD", "click_id": "{click}", "cid": "{click}"}, "click"),
    ],
)
def test_get_postback_aliases(world: World, params: dict[str, str], expected: str | None) -> None:
    click_id = world.click(world.link)
    params = {k: v.replace("{click}", click_id) for k, v in params.items()}
    r = world.get(**params)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["order_id"], body["amount"], body["attribution"], body["duplicate"]) == (
        "G-1", "20.00", expected, False,
    )
    assert world.get(**params).json()["duplicate"] is True


def test_get_postback_conflicting_aliases(world: World) -> None:
    r = world.get(order_id="G-1", txid="G-2", amount="1.00", currency="USD")
    assert r.status_code == 400
    assert "order_id, txid" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("store_id", "token"),
    [("{store}", "pbt_wrong"), ("{store}", ""), ("sto_" + "Q" * 16, "{token}"), ("", "{token}")],
)
def test_get_postback_bad_token(world: World, store_id: str, token: str) -> None:
    params = {"store_id": store_id.replace("{store}", world.store_id), "token": token.replace("{token}", world.token),
              "order_id": "G-1", "amount": "1.00", "currency": "USD"}
    r = world.client.get("/postback", params=params)
    assert r.status_code == 401
    assert r.json()["error"]["message"] == "The store id or the token is not valid."


def test_get_postback_ip_allowlist(world: World) -> None:
    store = world.call(world.registry.create_store, world.brand["id"], name="Locked",
                       allowed_ips=["10.0.0.0/8", "192.0.2.7"])
    params = {"store_id": store.store["id"], "token": store.postback_token, "order_id": "IP-1",
              "amount": "1.00", "currency": "USD"}
    # The test client's peer is "testclient", not an address, and not a trusted proxy.
    denied = world.client.get("/postback", params=params, headers={"X-Forwarded-For": "10.1.2.3"})
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "ip_not_allowed"


@pytest.mark.parametrize(
    ("peer", "forwarded", "allowed"),
    [
        ("10.1.2.3", None, True),
        ("192.0.2.7", None, True),
        ("192.0.2.8", None, False),
        ("127.0.0.1", "10.9.9.9", True),  # trusted proxy: the forwarded address counts
        # The rightmost address our proxy did not add is the client; entries left of it are its own words.
        ("127.0.0.1", "203.0.113.1, 10.0.0.1", True),
        ("127.0.0.1", "10.9.9.9, 203.0.113.1", False),
        ("127.0.0.1", ["10.9.9.9", "203.0.113.1"], False),  # the proxy added a header line of its own
        ("203.0.113.1", "10.9.9.9", False),  # untrusted peer: its X-Forwarded-For is ignored
    ],
)
def test_get_postback_ip_allowlist_by_peer(
    ch: ClickHouse, settings: Settings, peer: str, forwarded: str | list[str] | None, allowed: bool
) -> None:
    with TestClient(create_app(settings), client=(peer, 50000)) as client:
        world = make_world(client, settings)
        store = world.call(world.registry.create_store, world.brand["id"], name="Locked",
                           allowed_ips=["10.0.0.0/8", "192.0.2.7"])
        params = {"store_id": store.store["id"], "token": store.postback_token, "order_id": "IP-1",
                  "amount": "1.00", "currency": "USD"}
        lines = [forwarded] if isinstance(forwarded, str) else forwarded or []
        r = client.get("/postback", params=params, headers=[("X-Forwarded-For", line) for line in lines])
    assert r.status_code == (200 if allowed else 403), r.text


# --- rate limit ---------------------------------------------------------------------------------------------------


def test_rate_limit_per_store(ch: ClickHouse, settings: Settings) -> None:
    with TestClient(create_app(settings.with_(postback_rate_limit=3))) as client:
        world = make_world(client, settings)
        codes = [world.post({"order_id": order(i), "amount": "1.00", "currency": "USD"}).status_code
                 for i in range(5)]
        assert codes == [202, 202, 202, 429, 429]
        r = world.post({"order_id": "late", "amount": "1.00", "currency": "USD"})
        assert r.json()["error"]["code"] == "rate_limited"
        assert r.headers["Retry-After"] == "1"
        # Another store of the same brand has its own budget.
        other = world.call(world.registry.create_store, world.brand["id"], name="Other", allowed_ips=[])
        assert world.post({"order_id": "o-1", "amount": "1.00", "currency": "USD"}, store_id=other.store["id"],
                          secret=other.secret).status_code == 202


# --- docs/STORES.md -------------------------------------------------------------------------------------------------


def test_stores_doc_python_example_is_accepted(world: World) -> None:
    doc = (Path(__file__).resolve().parent.parent.parent / "docs" / "STORES.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, flags=re.S)
    assert blocks, "docs/STORES.md has no python example"
    namespace: dict[str, Any] = {}
    exec(blocks[0], namespace)  # the example as a store would copy it
    order = {"order_id": "DOC-1", "amount": "49.90", "currency": "USD", "click_id": world.click(world.link)}
    body, headers = namespace["signed_postback"](world.store_id, world.secret, order)
    r = world.client.post("/api/v1/conversions", content=body, headers=headers)
    assert r.status_code == 202, r.text
    assert r.json()["attribution"] == "click"


def test_stores_doc_javascript_signature_is_accepted(world: World, tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed")
    doc = (Path(__file__).resolve().parent.parent.parent / "docs" / "STORES.md").read_text()
    blocks = re.findall(r"```javascript\n(.*?)```", doc, flags=re.S)
    assert blocks, "docs/STORES.md has no javascript example"
    module = tmp_path / "example.mjs"
    module.write_text(blocks[0])
    body = json.dumps({"order_id": "DOC-JS", "amount": "12.50", "currency": "USD", "coupon_code": "ANNA10"})
    script = (
        f"import {{signPostback}} from {json.dumps(str(module))}; "
        "process.stdout.write(signPostback(process.argv[1], process.argv[2]))"
    )
    header = subprocess.run(
        [node, "--input-type=module", "-e", script, world.secret, body],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout
    headers = {"X-Store-Id": world.store_id, "X-Signature": header, "Content-Type": "application/json"}
    r = world.client.post("/api/v1/conversions", content=body.encode(), headers=headers)
    assert r.status_code == 202, r.text
    assert r.json()["attribution"] == "coupon"
