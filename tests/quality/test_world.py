"""The generated world (``tests/quality/world.py``): every planted case flagged, no honest case
flagged, the coupon-leak list, reviews, rules changes, and reports exact per dimension."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import redis
from starlette.testclient import TestClient

from tests.quality.world import World, build
from tests.reports_world import ADMIN
from tracker.app import create_app
from tracker.ingest.worker import Worker
from tracker.quality.sync import Sync
from tracker.reports.params import ReportParams
from tracker.reports.run import run_beside_sync, run_report
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse


@pytest.fixture
def client(ch: ClickHouse, settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings.with_(country_header="CF-IPCountry", max_report_days=31))
    with TestClient(app, follow_redirects=False) as c:
        yield c


@pytest.fixture
def world(client: TestClient, redis_client: redis.Redis, ch: ClickHouse, settings: Settings) -> World:
    return build(client, redis_client, ch, settings)


def queue(client: TestClient, world: World, status: str = "all") -> dict[str, dict[str, Any]]:
    r = client.get("/api/v1/rules/review-queue", params={"status": status}, headers=world.headers)
    assert r.status_code == 200, r.text
    return {item["order_id"]: item for item in r.json()["items"]}


def report(client: TestClient, world: World, group_by: str) -> dict[str, Any]:
    today = datetime.now(UTC).date()
    r = client.get("/api/v1/reports", headers=world.headers, params={
        "from": (today - timedelta(days=1)).isoformat(), "to": (today + timedelta(days=1)).isoformat(),
        "group_by": group_by,
    })
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def test_every_planted_case_is_flagged_and_no_honest_one(client: TestClient, world: World) -> None:
    assert len(world.planted) == 11 and len(world.honest) >= 15
    flagged = queue(client, world)
    assert {oid: set(item["flags"]) for oid, item in flagged.items()} == world.planted
    assert not world.honest & set(flagged)
    for item in flagged.values():
        assert item["review_status"] == "open" and item["reviewed_at"] is None
        if "fast_click" in item["flags"]:
            assert 2 <= item["evidence"]["click_seconds"] < 10
        if "visitor_repeat" in item["flags"]:
            assert item["evidence"]["visitor_conversions_that_day"] == 5
        if "coupon_leak" in item["flags"]:
            assert item["evidence"]["leak_reasons"] == ["country"] and item["attribution"] == "coupon"


def test_the_coupon_leak_list_gives_the_evidence(client: TestClient, world: World) -> None:
    r = client.get("/api/v1/rules/coupon-leaks", headers=world.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["factor"], body["to"]) == ("3", datetime.now(UTC).date().isoformat())
    [leak] = body["items"]  # Dan's coupon stays below the factor, from his clicks' country
    assert (leak["coupon_code"], leak["link_code"], leak["influencer_id"]) == (
        "CORA10", world.links["Cora"]["code"], world.influencers["Cora"]["id"],
    )
    assert leak["coupon_conversions"] == 5 and leak["reasons"] == ["country"]
    assert leak["countries"] == [{"country": "BR", "conversions": 2}, {"country": "FR", "conversions": 1},
                                 {"country": "US", "conversions": 2}]
    assert (leak["link_click_countries"], leak["foreign_countries"]) == (["FR", "US"], ["BR"])
    assert leak["first_order_at"] <= leak["last_order_at"]
    # A stricter factor makes Dan's coupon (2 coupon-only, 6 or more by click) no suspect still;
    # Cora's becomes one for both reasons once her coupon outnumbers her clicks by the factor.
    r = client.put("/api/v1/rules", json={"coupon_leak_factor": "1"}, headers=world.headers)
    assert r.status_code == 200, r.text
    items = client.get("/api/v1/rules/coupon-leaks", headers=world.headers).json()["items"]
    assert [i["coupon_code"] for i in items] == ["CORA10"]


def test_reviews_are_kept_audited_and_checked(client: TestClient, world: World) -> None:
    flagged = queue(client, world)
    first, second = sorted(flagged)[:2]
    cid = flagged[first]["conversion_id"]
    r = client.post(f"/api/v1/conversions/{cid}/review", json={"decision": "reject", "note": "bot farm"},
                    headers=world.headers)
    assert r.status_code == 200, r.text
    assert (r.json()["review_status"], r.json()["note"]) == ("rejected", "bot farm")
    cid2 = flagged[second]["conversion_id"]
    assert client.post(f"/api/v1/conversions/{cid2}/review", json={"decision": "approve"},
                       headers=world.headers).json()["review_status"] == "approved"
    # A later decision replaces the first.
    r = client.post(f"/api/v1/conversions/{cid}/review", json={"decision": "approve", "note": "checked"},
                    headers=world.headers)
    assert r.json()["review_status"] == "approved"
    assert set(queue(client, world, "open")) == set(flagged) - {first, second}
    assert set(queue(client, world, "decided")) == {first, second}
    audit = client.get("/api/v1/audit", headers=world.headers).json()["items"]
    actions = [(e["action"], e["object_id"]) for e in audit if e["action"].startswith("conversion.review")]
    assert sorted(actions) == sorted([("conversion.review.reject", cid), ("conversion.review.approve", cid2),
                                      ("conversion.review.approve", cid)])
    # Not flagged: 409; unknown or another brand's: 404; a bad decision: 422.
    honest = next(iter(world.honest))
    honest_cid = next(i for i in _ledger(client, world) if i == honest)
    assert honest_cid
    other = client.post("/api/v1/brands", json={"name": "Other"}, headers=ADMIN).json()
    other_h = {"Authorization": f"Bearer {other['api_key']}"}
    assert client.post(f"/api/v1/conversions/{cid}/review", json={"decision": "approve"},
                       headers=other_h).status_code == 404
    assert client.post("/api/v1/conversions/cnv_nope/review", json={"decision": "approve"},
                       headers=world.headers).status_code == 404
    assert client.post(f"/api/v1/conversions/{cid}/review", json={"decision": "maybe"},
                       headers=world.headers).status_code == 422


def _ledger(client: TestClient, world: World) -> list[str]:
    return list(world.orders)


def test_a_conversion_that_is_not_flagged_cannot_be_reviewed(client: TestClient, world: World, ch: ClickHouse) -> None:
    queue(client, world)
    honest = sorted(world.honest)[0]
    [(cid,)] = ch.query("SELECT conversion_id FROM conversions FINAL WHERE order_id = {o:String}", {"o": honest})
    r = client.post(f"/api/v1/conversions/{cid}/review", json={"decision": "approve"}, headers=world.headers)
    assert (r.status_code, r.json()["error"]["code"]) == (409, "not_flagged")


def test_rules_are_read_changed_and_flags_follow(client: TestClient, world: World) -> None:
    r = client.get("/api/v1/rules", headers=world.headers)
    assert r.json() == {"min_click_seconds": 10, "max_conversions_per_visitor_day": 3, "self_referral": True,
                        "coupon_leak": True, "coupon_leak_factor": "3", "updated_at": None}
    r = client.put("/api/v1/rules", json={"min_click_seconds": 0, "max_conversions_per_visitor_day": 5,
                                          "self_referral": False, "coupon_leak": True}, headers=world.headers)
    assert r.status_code == 200, r.text
    assert r.json()["updated_at"] is not None and r.json()["min_click_seconds"] == 0
    # fast_click off, 5 a day allowed, self-referral off: only the leaked coupons stay flagged.
    assert {o: set(i["flags"]) for o, i in queue(client, world).items()} == {
        o: f for o, f in world.planted.items() if f == {"coupon_leak"}
    }
    for body, field in (({"min_click_seconds": -1}, "min_click_seconds"), ({"coupon_leak_factor": "0.5"}, ""),
                        ({"unknown": 1}, "")):
        r = client.put("/api/v1/rules", json=body, headers=world.headers)
        assert r.status_code in (400, 422), r.text
        assert field in r.text
    # Back to the defaults: the flags come back.
    client.put("/api/v1/rules", json={}, headers=world.headers)
    assert {o: set(i["flags"]) for o, i in queue(client, world).items()} == world.planted


def test_reports_per_dimension_are_exact(client: TestClient, world: World) -> None:
    counted = world.orders
    by_country: dict[str, list[Decimal]] = defaultdict(list)
    for country, _, amount in counted.values():
        by_country[country].append(Decimal(amount))
    body = report(client, world, "country")
    rows = {r["country"]: r for r in body["rows"]}
    for country, amounts in by_country.items():
        assert (rows[country]["conversions"], Decimal(rows[country]["revenue"])) == (len(amounts), sum(amounts))
    assert body["totals"]["conversions"] == len(counted)
    assert body["totals"]["flagged_conversions"] == len(world.planted)
    assert sum(r["flagged_conversions"] for r in body["rows"]) == len(world.planted)
    # Every row's fees, cost and roi: not allocated to countries.
    assert {(r["fees"], r["roi"]) for r in body["rows"]} == {(None, None)}
    devices = {r["device"]: r for r in report(client, world, "device")["rows"]}
    by_device = Counter(d for _, d, _ in counted.values())
    assert {d: r["conversions"] for d, r in devices.items() if r["conversions"]} == dict(by_device)
    attribution = {r["attribution"]: r["conversions"] for r in report(client, world, "attribution")["rows"]}
    coupon_orders = sum(1 for _, d, _ in counted.values() if d == "")
    assert attribution == {"click": len(counted) - coupon_orders, "coupon": coupon_orders}
    coupons = {r["coupon"]: r["conversions"] for r in report(client, world, "coupon")["rows"]}
    assert coupons == {"": len(counted) - coupon_orders, "CORA10": 5, "DAN20": 2}
    influencers = {r["influencer_name"]: r["flagged_conversions"] for r in report(client, world, "influencer")["rows"]}
    assert influencers == {"Anna": 3, "Sally": 1, "Cora": 2, "Dan": 5}


def test_later_orders_are_evaluated_and_earlier_flags_kept(
    client: TestClient, world: World, redis_client: redis.Redis, ch: ClickHouse, settings: Settings
) -> None:
    assert {o: set(i["flags"]) for o, i in queue(client, world).items()} == world.planted
    assert world.post is not None
    world.post({"order_id": "LATE1", "amount": "12.00", "currency": "USD", "coupon_code": "CORA10", "country": "AR"})
    world.post({"order_id": "LATE2", "amount": "12.00", "currency": "USD", "coupon_code": "DAN20", "country": "IN"})
    Worker(settings, redis_client, ch, name="quality-late").drain()
    assert {o: set(i["flags"]) for o, i in queue(client, world).items()} == {**world.planted, "LATE1": {"coupon_leak"}}


def test_a_report_beside_the_sync_is_answered_only_after_the_flags_it_reads(
    world: World, ch: ClickHouse, settings: Settings
) -> None:
    assert settings.secret_key is not None
    [(brand_id,)] = ch.query("SELECT DISTINCT brand_id FROM influencers")  # the world's one brand
    brand = {"id": brand_id, "currency": "USD"}
    today = datetime.now(UTC).date()
    params = ReportParams(today - timedelta(days=1), today + timedelta(days=1), ("influencer",), "UTC")
    # A process's first sync evaluates the brand: the report beside it may predate the flags.
    assert run_beside_sync(ch, Sync(settings.secret_key), brand, params, 31) == (None, True)

    class Meanwhile(Sync):
        """Another caller's evaluation finishes first; this call then finds nothing to do."""

        def __call__(self, ch: ClickHouse, brand_id: str, fresh_within: float = 0.0) -> bool:
            self.forget(brand_id)
            assert super().__call__(ch, brand_id)
            return super().__call__(ch, brand_id)

    sync = Meanwhile(settings.secret_key)
    assert run_beside_sync(ch, sync, brand, params, 31) == (None, False)
    # Nothing changed since this process's last sync: the report is the one a sync followed by a
    # report gives, flags included.
    synced = Sync(settings.secret_key)
    synced(ch, brand["id"])
    report, evaluated = run_beside_sync(ch, synced, brand, params, 31)
    assert not evaluated and report is not None
    assert report.json_bytes() == run_report(ch, brand, params, 31).json_bytes()
    assert report.totals["flagged_conversions"] == len(world.planted)
