"""Unknown codes: only they are limited, they cost no ClickHouse lookup, and a code that was
unknown a moment ago redirects as soon as its link exists (issue 13, finding 4)."""

from __future__ import annotations

import functools
import secrets
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import redis
from starlette.testclient import TestClient

from tests.redirect.test_handler import asgi_get
from tests.waiting import wait_until
from tracker.app import create_app
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse


def make_link(client: TestClient, code: str | None = None) -> dict[str, Any]:
    """A link created through the registry, as the API does: in ClickHouse and in Redis."""
    registry = client.app.state.services.registry  # type: ignore[attr-defined]
    portal = client.portal
    assert portal is not None
    brand, _ = portal.call(registry.create_brand, "Brand", "USD")
    campaign = portal.call(functools.partial(
        registry.create_campaign, brand["id"], name="C", commission_type="percent", commission_value=Decimal("10"),
    ))
    influencer = portal.call(functools.partial(registry.create_influencer, brand["id"], name="I"))
    link: dict[str, Any] = portal.call(functools.partial(
        registry.create_link, brand["id"], campaign_id=campaign["id"], influencer_id=influencer["id"],
        destination_url="https://shop.example/item", code=code,
    ))
    return link


def codes_loaded(client: TestClient) -> bool:
    codes = getattr(client.app.state.services.redirect.links, "codes", None)  # type: ignore[attr-defined]
    return codes is None or bool(codes.loaded)


@pytest.fixture
def app_client(settings: Settings, ch: ClickHouse) -> Iterator[TestClient]:
    with TestClient(create_app(settings), follow_redirects=False) as client:
        yield client


@pytest.fixture
def links_queries(app_client: TestClient, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every ClickHouse query of the app that reads the links table."""
    seen: list[str] = []
    ch = app_client.app.state.services.ch  # type: ignore[attr-defined]
    for name in ("query", "query_dicts"):
        original = getattr(ch, name)

        def counting(sql: str, *args: Any, _original: Any = original, **kw: Any) -> Any:
            if "FROM links" in sql:
                seen.append(sql)
            return _original(sql, *args, **kw)

        monkeypatch.setattr(ch, name, counting)
    return seen


def test_a_link_redirects_an_address_over_the_unknown_code_limit(app_client: TestClient) -> None:
    link = make_link(app_client)  # known to the registry, never looked up by this process
    nat = "203.0.113.77"  # everyone behind one NAT
    statuses = [asgi_get(app_client, f"/nope{i:04d}", peer=nat)[0] for i in range(31)]
    assert statuses == [404] * 30 + [429]
    assert asgi_get(app_client, f"/{link['code']}", peer=nat)[0] == 302
    assert asgi_get(app_client, "/nope9999", peer=nat)[0] == 429  # unknown codes stay limited
    assert asgi_get(app_client, f"/{link['code']}", peer=nat)[0] == 302


def test_unknown_codes_cost_no_clickhouse_lookup(
    app_client: TestClient, redis_client: redis.Redis, links_queries: list[str]
) -> None:
    link = make_link(app_client)
    wait_until(lambda: codes_loaded(app_client), timeout=20, interval=0.02, message="no set of link codes")
    links_queries.clear()
    redis_client.config_resetstat()
    for i in range(200):  # a flood of random codes, each from another address
        status, _ = asgi_get(app_client, f"/{secrets.token_urlsafe(6)}", peer=f"10.0.{i // 250}.{i % 250}")
        assert status == 404
    assert links_queries == []
    stats = redis_client.info("commandstats")
    reads = sum(stats.get(f"cmdstat_{c}", {}).get("calls", 0) for c in ("get", "mget"))
    # At most one (batched) Redis read each, give or take the registry's background sweep
    # (before: the cache's read and the registry's, then a ClickHouse query, per code).
    assert reads <= 220
    assert asgi_get(app_client, f"/{link['code']}")[0] == 302


def test_a_code_redirects_as_soon_as_its_link_exists(
    settings: Settings, app_client: TestClient, links_queries: list[str]
) -> None:
    wait_until(lambda: codes_loaded(app_client), timeout=20, interval=0.02, message="no set of link codes")
    with TestClient(create_app(settings), follow_redirects=False) as other_worker:
        wait_until(lambda: codes_loaded(other_worker), timeout=20, interval=0.02,
                   message="no set of link codes in the other worker")
        for client in (app_client, other_worker):
            assert client.get("/spring-sale").status_code == 404
        link = make_link(app_client, code="spring-sale")
        for client in (app_client, other_worker):  # at once, on the worker that created it and on another
            resp = client.get("/spring-sale")
            assert resp.status_code == 302, resp.text
            assert resp.headers["location"].startswith("https://shop.example/item?click_id=")
        assert link["code"] == "spring-sale"
