"""``GET /api/v1/reports`` end to end: registry, redirect, postbacks, fees and ingest, then reports."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from starlette.testclient import TestClient

from tests import reports_world
from tests.reports_world import EXPECTED_CAMPAIGNS, EXPECTED_INFLUENCERS, EXPECTED_TOTALS
from tracker.api.endpoints import ApiRoute
from tracker.app import create_app
from tracker.reports.params import ReportQuery
from tracker.reports.routes import routes
from tracker.reports.run import ReportAnswer
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse


@pytest.fixture
def client(ch: ClickHouse, settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings.with_(max_report_days=31)), follow_redirects=False) as c:
        yield c


@pytest.fixture
def world(client: TestClient, redis_client: redis.Redis, ch: ClickHouse, settings: Settings) -> dict[str, Any]:
    return reports_world.build(client, redis_client, ch, settings)


def get(client: TestClient, world: dict[str, Any], **params: str) -> Any:
    query = {"from": world["from"].isoformat(), "to": world["to"].isoformat(), **params}
    return client.get("/api/v1/reports", params=query, headers=world["headers"])


def metrics(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in EXPECTED_TOTALS if k in row}


@pytest.mark.parametrize("tz", ["UTC", "Asia/Kolkata"])
def test_report_by_influencer_and_campaign_from_the_public_api(
    client: TestClient, world: dict[str, Any], tz: str
) -> None:
    r = get(client, world, group_by="influencer", tz=tz)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["totals"] == EXPECTED_TOTALS
    by_name = {row["influencer_name"]: row for row in body["rows"]}
    assert set(by_name) == set(EXPECTED_INFLUENCERS)
    for name, expected in EXPECTED_INFLUENCERS.items():
        assert by_name[name]["influencer_id"] == world["influencers"][name]
        assert metrics(by_name[name]) == expected

    body = get(client, world, group_by="campaign", tz=tz).json()
    assert body["totals"] == EXPECTED_TOTALS
    by_name = {row["campaign_name"]: row for row in body["rows"]}
    for name, expected in EXPECTED_CAMPAIGNS.items():
        assert by_name[name]["campaign_id"] == world["campaigns"][name]
        assert metrics(by_name[name]) == expected


def test_report_by_link_day_and_hour(client: TestClient, world: dict[str, Any]) -> None:
    body = get(client, world, group_by="link").json()
    links = {row["link_code"]: row for row in body["rows"]}
    a1, b1, a2 = (links[world["links"][k]] for k in ("A1", "B1", "A2"))
    assert (a1["clicks"], a1["bot_clicks"], a1["unique_clicks"], a1["conversions"], a1["revenue"]) == (
        4, 2, 2, 2, "130.00"
    )
    assert (b1["clicks"], b1["unique_clicks"], b1["conversions"], b1["revenue"], b1["commission"]) == (
        3, 2, 1, "60.00", "6.00"
    )
    assert (a2["clicks"], a2["unique_clicks"], a2["conversions"], a2["commission"]) == (2, 1, 1, "2.50")
    # Fees belong to an influencer and a campaign, not to a link: not allocated (null) in link
    # rows, so neither are cost and roi; the totals carry them.
    assert {(row["fees"], row["cost"], row["roi"]) for row in body["rows"]} == {(None, None, None)}
    assert body["totals"] == EXPECTED_TOTALS

    body = get(client, world, group_by="day").json()
    assert [row["day"] for row in body["rows"]] == [world["today"].isoformat()]
    assert metrics(body["rows"][0]) == {k: v for k, v in EXPECTED_TOTALS.items() if not k.startswith("unattr")}

    body = get(client, world, group_by="hour").json()
    assert sum(row["clicks"] for row in body["rows"]) == EXPECTED_TOTALS["clicks"]
    assert all(row["hour"].startswith(world["today"].isoformat()[:8]) for row in body["rows"])


def test_device_rows_carry_clicks_and_the_conversions_of_their_clicks(
    client: TestClient, world: dict[str, Any]
) -> None:
    body = get(client, world, group_by="device").json()
    devices = {row["device"]: row for row in body["rows"]}
    assert sum(row["clicks"] for row in body["rows"]) == 9
    assert sum(row["bot_clicks"] for row in body["rows"]) == 3
    # O1, O2 (net 30.00) and O4 came through clicks of the Pixel phone; O6 (coupon) has no click.
    assert (devices["mobile"]["conversions"], devices["mobile"]["revenue"]) == (3, "170.00")
    assert (devices[""]["clicks"], devices[""]["conversions"], devices[""]["revenue"]) == (0, 1, "60.00")
    assert body["totals"] == EXPECTED_TOTALS


def test_filters(client: TestClient, world: dict[str, Any]) -> None:
    body = get(client, world, group_by="influencer", campaign_id=world["campaigns"]["Flat"]).json()
    assert [row["influencer_name"] for row in body["rows"]] == ["Anna"]
    assert body["totals"]["clicks"] == 2 and body["totals"]["revenue"] == "40.00"
    assert body["totals"]["unattributed_conversions"] == 0
    body = get(client, world, influencer_id=world["influencers"]["Bob"]).json()
    assert body["rows"] == []
    assert metrics(body["totals"]) == {**EXPECTED_INFLUENCERS["Bob"], "unattributed_conversions": 0,
                                       "unattributed_revenue": "0.00"}
    body = get(client, world, link=world["links"]["A1"]).json()
    assert (body["totals"]["clicks"], body["totals"]["fees"], body["totals"]["roi"]) == (4, None, None)


def test_csv_matches_json(client: TestClient, world: dict[str, Any]) -> None:
    as_json = get(client, world, group_by="influencer,day").json()
    r = get(client, world, group_by="influencer,day", format="csv")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    lines = list(csv.DictReader(io.StringIO(r.text)))
    assert [line["type"] for line in lines] == ["row"] * len(as_json["rows"]) + ["total"]
    for line, row in zip(lines, as_json["rows"], strict=False):
        assert {k: line[k] for k in row} == {k: "" if v is None else str(v) for k, v in row.items()}
    assert {k: lines[-1][k] for k in as_json["totals"]} == {
        k: "" if v is None else str(v) for k, v in as_json["totals"].items()
    }


def test_a_brand_sees_only_its_own_figures(client: TestClient, world: dict[str, Any]) -> None:
    other = client.post("/api/v1/brands", json={"name": "Rival"}, headers=reports_world.ADMIN).json()
    h = {"Authorization": f"Bearer {other['api_key']}"}
    q = {"from": world["from"].isoformat(), "to": world["to"].isoformat(), "group_by": "influencer"}
    body = client.get("/api/v1/reports", params=q, headers=h).json()
    assert body["rows"] == []
    assert body["totals"]["clicks"] == 0 and body["totals"]["unattributed_conversions"] == 0
    # Naming the other brand's campaign changes nothing: the brand comes from the key.
    q["campaign_id"] = world["campaigns"]["Spring"]
    body = client.get("/api/v1/reports", params=q, headers=h).json()
    assert body["rows"] == [] and body["totals"]["clicks"] == 0


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"Authorization": "Bearer trk_not_a_real_key_0123456789abcdef"}, 401), (reports_world.ADMIN, 401)],
)
def test_needs_a_brand_key(client: TestClient, headers: dict[str, str], status: int) -> None:
    r = client.get("/api/v1/reports", params={"from": "2026-11-01", "to": "2026-11-02"}, headers=headers)
    assert r.status_code in (status, 403)
    assert set(r.json()["error"]) == {"code", "message"}


@pytest.mark.parametrize(
    ("params", "status", "code", "needle"),
    [
        ({"from": "2026-11-01"}, 400, "bad_date", "'to'"),
        ({"from": "2026-02-30", "to": "2026-03-01"}, 400, "bad_date", "2026-02-30"),
        ({"from": "2026-11-02", "to": "2026-11-01"}, 400, "bad_range", "before"),
        ({"from": "2026-10-01", "to": "2026-11-30"}, 422, "range_too_long", "limit is 31"),
        ({"from": "2026-11-01", "to": "2026-11-01", "group_by": "influencer,planet"}, 400, "bad_group_by", "planet"),
        ({"from": "2026-11-01", "to": "2026-11-01", "tz": "Europe/Nowhere"}, 400, "bad_timezone", "Europe/Nowhere"),
        ({"from": "2026-11-01", "to": "2026-11-01", "format": "pdf"}, 400, "bad_format", "pdf"),
        ({"from": "2026-11-01", "to": "2026-11-01", "sort": "roi"}, 400, "unknown_parameter", "sort"),
    ],
)
def test_bad_requests(
    client: TestClient, world: dict[str, Any], params: dict[str, str], status: int, code: str, needle: str
) -> None:
    r = client.get("/api/v1/reports", params=params, headers=world["headers"])
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code
    assert needle in err["message"] and err["message"].endswith(".")


def test_the_route_describes_what_it_takes_and_answers() -> None:
    (route,) = routes()
    assert isinstance(route, ApiRoute) and (route.path, route.method) == ("/api/v1/reports", "GET")
    op = route.operation
    assert (op.tag, op.security, op.body, op.query) == ("reports", ("brand",), None, ReportQuery)
    assert dict(op.answers) == {200: ReportAnswer} and dict(op.also) == {200: "text/csv"}
    assert {400, 401, 422} <= set(op.errors)
