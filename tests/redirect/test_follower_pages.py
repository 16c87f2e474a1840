"""Followers' pages: a browser on an unknown code gets an HTML 404, on a disabled or expired link an
HTML 410 or the campaign's fallback URL; API clients keep the JSON errors; no click is logged."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from starlette.testclient import TestClient

from tests.registry.helpers import new_brand, new_campaign, new_influencer
from tests.waiting import wait_until
from tracker.app import create_app
from tracker.core import keys
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
           "User-Agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"}


@pytest.fixture
def client(settings: Settings, ch: ClickHouse) -> Iterator[TestClient]:
    with TestClient(create_app(settings), follow_redirects=False) as c:
        yield c


def _link(client: TestClient, **campaign: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    brand = new_brand(client)
    c = new_campaign(client, brand, **campaign)
    i = new_influencer(client, brand)
    r = client.post("/api/v1/links", headers=brand["headers"], json={
        "campaign_id": c["id"], "influencer_id": i["id"], "destination_url": "https://shop.example/p"})
    assert r.status_code == 201, r.text
    return r.json(), c, brand["headers"]


def _clicks(redis_client: redis.Redis) -> int:
    """Clicks ever added to the stream (ingest's trimming does not lower it)."""
    if not redis_client.exists(keys.CLICK_STREAM):
        return 0
    return int(redis_client.xinfo_stream(keys.CLICK_STREAM)["entries-added"])


def _html_page(resp: Any, status: int, title: str) -> None:
    assert resp.status_code == status
    assert resp.headers["content-type"] == "text/html; charset=utf-8"
    assert resp.headers["cache-control"] == "no-store"
    csp = resp.headers["content-security-policy"]
    assert csp.startswith("default-src 'none'; style-src 'sha256-") and "script" not in csp
    assert f"<h1>{title}</h1>" in resp.text and "<script" not in resp.text


@pytest.mark.parametrize("path", ["/nosuchcode", "/x", "/way-too-long-" + "a" * 80])
def test_unknown_codes_get_an_html_404_in_a_browser_and_json_otherwise(client: TestClient, path: str) -> None:
    _html_page(client.get(path, headers=BROWSER), 404, "This link does not exist")
    api = client.get(path, headers={"Accept": "*/*"})
    assert api.status_code == 404 and api.json()["error"]["code"] == "not_found"
    assert client.get(path).json()["error"]["code"] == "not_found"


def test_disabled_and_expired_links_get_an_html_410(client: TestClient, redis_client: redis.Redis) -> None:
    link, _, h = _link(client)
    assert client.get(f"/{link['code']}", headers=BROWSER).status_code == 302
    assert client.patch(f"/api/v1/links/{link['code']}", headers=h, json={"disabled": True}).status_code == 200
    wait_until(lambda: client.get(f"/{link['code']}").status_code == 410, timeout=5, message="not disabled")
    before = _clicks(redis_client)
    _html_page(client.get(f"/{link['code']}", headers=BROWSER), 410, "This link has ended")
    api = client.get(f"/{link['code']}")
    assert api.json()["error"] == {"code": "gone", "message": f"Link {link['code']!r} is disabled."}
    assert _clicks(redis_client) == before


def test_the_campaign_fallback_url_takes_followers_of_a_dead_link(
    client: TestClient, redis_client: redis.Redis,
) -> None:
    link, c, h = _link(client, fallback_url="https://shop.example/all-offers")
    code = link["code"]
    assert client.patch(f"/api/v1/links/{code}", headers=h, json={"disabled": True}).status_code == 200
    wait_until(lambda: "click_id" not in client.get(f"/{code}").headers.get("location", "click_id"), timeout=5,
               message="no fallback")
    before = _clicks(redis_client)
    for headers in (BROWSER, {"Accept": "*/*"}):
        r = client.get(f"/{code}", headers=headers)
        assert r.status_code == 302 and r.headers["location"] == "https://shop.example/all-offers"
        assert r.headers["cache-control"] == "no-store" and "click_id" not in r.headers["location"]
    assert _clicks(redis_client) == before  # a dead link logs no click
    # The brand removes the fallback: the page is back, at once (the campaign record is rewritten).
    assert client.patch(f"/api/v1/campaigns/{c['id']}", headers=h, json={"fallback_url": ""}).status_code == 200
    _html_page(client.get(f"/{code}", headers=BROWSER), 410, "This link has ended")
    # ... and sets another one.
    assert client.patch(f"/api/v1/campaigns/{c['id']}", headers=h,
                        json={"fallback_url": "https://shop.example/new"}).status_code == 200
    assert client.get(f"/{code}", headers=BROWSER).headers["location"] == "https://shop.example/new"
    # A live link of the campaign is not affected by the fallback.
    assert client.patch(f"/api/v1/links/{code}", headers=h, json={"disabled": False}).status_code == 200
    wait_until(lambda: "click_id=" in client.get(f"/{code}").headers.get("location", ""), timeout=5,
               message="not re-enabled")


def test_the_fallback_survives_a_lost_campaign_record(client: TestClient, redis_client: redis.Redis) -> None:
    link, c, h = _link(client, fallback_url="https://shop.example/all-offers")
    assert client.patch(f"/api/v1/links/{link['code']}", headers=h, json={"disabled": True}).status_code == 200
    brand_id = client.get("/api/v1/brands", headers=h).json()["items"][0]["id"]
    assert redis_client.delete(keys.campaign(brand_id, c["id"])) == 1
    wait_until(lambda: "click_id" not in client.get(f"/{link['code']}").headers.get("location", "click_id"),
               timeout=5, message="no fallback")
    assert client.get(f"/{link['code']}").headers["location"] == "https://shop.example/all-offers"
