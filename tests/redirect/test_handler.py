"""GET /{code} end to end: answers, query merging, hints, client IP trust, click events, freshness,
404 limits (Redis going away: ``test_redis_down``)."""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import redis
from starlette.testclient import TestClient

from tests.conftest import SECRET_KEY
from tests.waiting import wait_until
from tracker.app import create_app
from tracker.core import keys
from tracker.core.clickid import ClickIds
from tracker.core.events import ClickEvent
from tracker.core.records import LinkRecord
from tracker.ops.logs import REQUEST_ID
from tracker.redirect.visitor import day_key
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse

DEST = "https://shop.example/product/9?ref=ig"


def put_link(client: redis.Redis, code: str = "abc123", link_id: int = 41, **kw: Any) -> LinkRecord:
    fields: dict[str, Any] = {
        "id": link_id, "code": code, "brand_id": "brd_1", "campaign_id": "cmp_1", "influencer_id": "inf_1",
        "destination_url": DEST, "coupon_code": "", "disabled": False, "expires_at_ms": None,
        "click_id_param": "click_id", "attribution_window_days": 30,
    }
    fields.update(kw)
    record = LinkRecord(**fields)
    client.set(keys.link(code), record.encode())
    return record


@pytest.fixture
def app_client(settings: Settings, ch: ClickHouse) -> Iterator[TestClient]:
    with TestClient(create_app(settings), follow_redirects=False) as client:
        yield client


def asgi_get(
    client: TestClient, path: str, *, peer: str = "198.51.100.7",
    headers: dict[str, str] | list[tuple[str, str]] | None = None,
    method: str = "GET", query: bytes = b"",
) -> tuple[int, dict[str, str]]:
    """One request straight into the ASGI app from a chosen peer address (as uvicorn would call it)."""
    messages: list[dict[str, Any]] = []

    async def call() -> None:
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": query, "root_path": "",
            "headers": [(k.lower().encode(), v.encode()) for k, v in _pairs(headers)],
            "client": (peer, 40000), "server": ("testserver", 80),
        }

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            messages.append(message)

        await client.app(scope, receive, send)

    assert client.portal is not None
    client.portal.call(call)
    start = messages[0]
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}


def _pairs(headers: dict[str, str] | list[tuple[str, str]] | None) -> list[tuple[str, str]]:
    return list(headers.items()) if isinstance(headers, dict) else list(headers or [])


def clicks(client: redis.Redis, stream: str = keys.CLICK_STREAM) -> list[tuple[ClickEvent, dict[bytes, bytes]]]:
    return [(ClickEvent.decode(f[b"e"]), f) for _, f in client.xrange(stream)]


def test_redirects_with_a_click_id(app_client: TestClient, redis_client: redis.Redis) -> None:
    put_link(redis_client)
    before = int(time.time() * 1000)
    resp = app_client.get("/abc123")
    after = int(time.time() * 1000)
    assert resp.status_code == 302
    assert resp.headers["cache-control"] == "no-store"
    location = resp.headers["location"]
    assert location.startswith(DEST + "&click_id=")
    ref = ClickIds(SECRET_KEY).parse(dict(parse_qsl(urlsplit(location).query))["click_id"])
    assert ref is not None and ref.link_id == 41 and before <= ref.ts_ms <= after
    head = app_client.head("/abc123")
    assert head.status_code == 302 and head.headers["location"].startswith(DEST + "&click_id=")
    assert head.headers["location"] != location  # one click id per click
    assert redis_client.xlen(keys.CLICK_STREAM) == 2


@pytest.mark.parametrize(
    "path",
    ["/ab", "/a.bc", "/abc!", "/ab~cd", "/" + "x" * 65, "/%C3%BCmlaut", "/ab%20cd", "/abc123%00", "/favicon.ico"],
)
def test_malformed_codes_answer_404_without_storage(
    app_client: TestClient, redis_client: redis.Redis, path: str
) -> None:
    put_link(redis_client)
    stats = redis_client.info("commandstats")
    resp = app_client.get(path)
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "not_found"
    after = redis_client.info("commandstats")
    for command in ("cmdstat_get", "cmdstat_xadd"):
        assert after.get(command, {}).get("calls", 0) == stats.get(command, {}).get("calls", 0)


def test_unknown_disabled_and_expired(app_client: TestClient, redis_client: redis.Redis) -> None:
    put_link(redis_client, "offline", disabled=True)
    put_link(redis_client, "expired", expires_at_ms=int(time.time() * 1000) - 1)
    put_link(redis_client, "later1", expires_at_ms=int(time.time() * 1000) + 3_600_000)
    unknown = app_client.get("/nosuch1")
    assert unknown.status_code == 404
    assert unknown.json() == {"error": {"code": "not_found", "message": "No link has the code 'nosuch1'."}}
    for code, why in (("offline", "disabled"), ("expired", "expired")):
        resp = app_client.get(f"/{code}")
        assert resp.status_code == 410
        assert resp.json() == {"error": {"code": "gone", "message": f"Link {code!r} is {why}."}}
    assert app_client.get("/later1").status_code == 302
    assert app_client.post("/abc123").status_code == 405
    assert redis_client.xlen(keys.CLICK_STREAM) == 1  # only the 302 is a click


@pytest.mark.parametrize(
    ("destination", "param", "query", "expected_query", "fragment"),
    [
        ("https://s.example/p?a=1", "click_id", "", "a=1&click_id=CID", ""),
        ("https://s.example/p?a=1&b=2", "click_id", "b=9&utm_source=tt", "a=1&b=9&utm_source=tt&click_id=CID", ""),
        ("https://s.example/p?click_id=x", "click_id", "click_id=forged", "click_id=CID", ""),
        ("https://s.example/p", "subid", "subid=forged&click_id=v", "click_id=v&subid=CID", ""),
        ("https://s.example/p#reviews", "click_id", "q=a%20b", "q=a%20b&click_id=CID", "reviews"),
        ("https://s.example/p?x=%C3%A9", "click_id", "y=%E2%9C%93", "x=%C3%A9&y=%E2%9C%93&click_id=CID", ""),
    ],
)
def test_query_merging(
    app_client: TestClient, redis_client: redis.Redis, destination: str, param: str, query: str,
    expected_query: str, fragment: str,
) -> None:
    put_link(redis_client, destination_url=destination, click_id_param=param)
    resp = app_client.get("/abc123" + ("?" + query if query else ""))
    assert resp.status_code == 302
    parts = urlsplit(resp.headers["location"])
    click_id = dict(parse_qsl(parts.query))[param]
    assert parts.query == expected_query.replace("CID", click_id)
    assert parts.fragment == fragment
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == "https://s.example/p"


@pytest.mark.parametrize(
    ("method", "headers", "hint"),
    [
        ("GET", {}, ""),
        ("HEAD", {}, "head"),
        ("GET", {"Sec-Purpose": "prefetch"}, "prefetch"),
        ("GET", {"Sec-Purpose": "prefetch;prerender"}, "prefetch"),
        ("GET", {"Purpose": "prefetch"}, "prefetch"),
        ("GET", {"X-Purpose": "preview"}, "prefetch"),
        ("GET", {"X-Moz": "prefetch"}, "prefetch"),
        ("HEAD", {"Sec-Purpose": "prefetch"}, "head"),
        ("GET", {"Purpose": "navigate"}, ""),
    ],
)
def test_bot_hints(
    app_client: TestClient, redis_client: redis.Redis, method: str, headers: dict[str, str], hint: str
) -> None:
    put_link(redis_client)
    status, _ = asgi_get(app_client, "/abc123", method=method, headers=headers)
    assert status == 302
    [(event, _)] = clicks(redis_client)
    assert event.hint == hint


@pytest.mark.parametrize(
    ("peer", "headers", "country"),
    [
        ("127.0.0.1", {"X-Forwarded-For": "81.2.69.160"}, "GB"),  # trusted proxy: the forwarded client
        ("127.0.0.1", {"X-Forwarded-For": "81.2.69.160, 127.0.0.1"}, "GB"),
        ("127.0.0.1", {"X-Forwarded-For": "8.8.4.4, 81.2.69.160"}, "GB"),  # the client wrote the first entry
        ("127.0.0.1", [("X-Forwarded-For", "8.8.4.4"), ("X-Forwarded-For", "81.2.69.160")], "GB"),  # a proxy's line
        ("8.8.4.4", {"X-Forwarded-For": "81.2.69.160"}, "US"),  # untrusted: the peer itself
        ("81.2.69.160", {}, "GB"),
        ("127.0.0.1", {}, ""),
        ("127.0.0.1", {"X-Forwarded-For": "garbage"}, ""),
    ],
)
def test_client_ip_trust(
    app_client: TestClient, redis_client: redis.Redis, peer: str, headers: dict[str, str] | list[tuple[str, str]],
    country: str,
) -> None:
    put_link(redis_client)
    status, _ = asgi_get(app_client, "/abc123", peer=peer, headers=headers)
    assert status == 302
    [(event, _)] = clicks(redis_client)
    assert event.country == country


def test_same_visitor_direct_or_through_a_proxy(app_client: TestClient, redis_client: redis.Redis) -> None:
    put_link(redis_client)
    ua = {"User-Agent": "Mozilla/5.0 (iPhone)"}
    asgi_get(app_client, "/abc123", peer="81.2.69.160", headers=ua)
    asgi_get(app_client, "/abc123", peer="127.0.0.1", headers={**ua, "X-Forwarded-For": "81.2.69.160"})
    asgi_get(app_client, "/abc123", peer="8.8.4.4", headers={**ua, "X-Forwarded-For": "81.2.69.160"})
    asgi_get(app_client, "/abc123", peer="81.2.69.160", headers={"User-Agent": "curl/8"})
    hashes = [e.visitor_hash for e, _ in clicks(redis_client)]
    assert hashes[0] == hashes[1]
    assert len({hashes[0], hashes[2], hashes[3]}) == 3


@pytest.mark.parametrize(
    ("peer", "header", "country"),
    [("127.0.0.1", "de", "DE"), ("8.8.4.4", "DE", "US"), ("127.0.0.1", "XX", ""), ("127.0.0.1", "T1", "")],
)
def test_country_header_from_a_trusted_proxy(
    settings: Settings, ch: ClickHouse, redis_client: redis.Redis, peer: str, header: str, country: str
) -> None:
    put_link(redis_client)
    with TestClient(create_app(settings.with_(country_header="CF-IPCountry")), follow_redirects=False) as client:
        status, _ = asgi_get(client, "/abc123", peer=peer, headers={"CF-IPCountry": header})
    assert status == 302
    [(event, _)] = clicks(redis_client)
    assert event.country == country


def test_click_event_carries_every_field(app_client: TestClient, redis_client: redis.Redis) -> None:
    record = put_link(redis_client, link_id=99, brand_id="brd_b", campaign_id="cmp_c", influencer_id="inf_i")
    ua = "Mozilla/5.0 (Linux; Android 14) Instagram 300.0"
    before = int(time.time() * 1000)
    status, headers = asgi_get(
        app_client, "/abc123", peer="81.2.69.160",
        headers={"User-Agent": ua, "Referer": "https://l.instagram.com/?u=x"},
        query=b"utm_source=ig&utm_medium=story&utm_campaign=spring%20sale&utm_term=t&utm_content=c1&utm_source=2nd",
    )
    after = int(time.time() * 1000)
    assert status == 302
    [(event, fields)] = clicks(redis_client)
    assert set(fields) == {b"e"}
    assert event.click_id == dict(parse_qsl(urlsplit(headers["location"]).query))["click_id"]
    assert before <= event.ts_ms <= after
    assert (event.brand_id, event.campaign_id, event.influencer_id) == ("brd_b", "cmp_c", "inf_i")
    assert (event.link_id, event.link_code) == (record.id, "abc123")
    salt = bytes.fromhex(redis_client.get(keys.visitor_salt(day_key(event.ts_ms // 86_400_000))).decode())
    expected = hashlib.blake2b(b"81.2.69.160\x00" + ua.encode(), key=salt, digest_size=8).digest()
    assert event.visitor_hash == int.from_bytes(expected, "big")
    assert event.country == "GB"
    assert event.user_agent == ua
    assert event.referer == "https://l.instagram.com/?u=x"
    assert event.utm == ("ig", "story", "spring sale", "t", "c1")
    assert event.hint == ""
    assert b"81.2.69.160" not in redis_client.xrange(keys.CLICK_STREAM)[0][1][b"e"]


@pytest.mark.parametrize(
    ("record_fields", "user_agent", "referer", "country", "utm", "hint"),
    [
        ({}, "Mozilla/5.0", "", "", None, ""),
        ({}, "", 'https://l.instagram.com/?u="x"\n', "GB", ["ig", "", "", "", ""], "head"),
        ({}, 'quote " backslash \\ slash /', "\u00e9\u2028\u2029", "DE", ["a\"b", "\\", "\n", "\t", "\x00"],
         "prefetch"),
        ({}, "\x00\x01\x1f\x7f tab\t nl\n", "\U0001f600 emoji", "", ["", "", "", "", "c1"], ""),
        ({"brand_id": 'brd_"q"', "campaign_id": "cmp_\\", "influencer_id": "inf_\u00fc", "code": "Ab-_9"},
         "x", "", "", None, ""),
        ({"id": 2**53 + 1}, "Mozilla/5.0", "", "", ["", "", "", "", ""], ""),
    ],
)
def test_the_redirect_click_encoding_is_the_event_encoding(
    record_fields: dict[str, Any], user_agent: str, referer: str, country: str, utm: list[str] | None, hint: str
) -> None:
    """The hot path encodes clicks without a ClickEvent: same bytes, every field."""
    from tracker.redirect.handler import encode_click
    from tracker.redirect.linkcache import Target

    fields: dict[str, Any] = {
        "id": 41, "code": "abc123", "brand_id": "brd_1", "campaign_id": "cmp_1", "influencer_id": "inf_1",
        "destination_url": DEST, "coupon_code": "", "disabled": False, "expires_at_ms": None,
        "click_id_param": "click_id", "attribution_window_days": 30,
    }
    fields.update(record_fields)
    record = LinkRecord(**fields)
    click_id = ClickIds(SECRET_KEY).mint(record.id, 1_795_000_000_123)
    u = utm or ["", "", "", "", ""]
    expected = ClickEvent(
        click_id, 1_795_000_000_123, record.brand_id, record.campaign_id, record.influencer_id, record.id, record.code,
        2**64 - 1, country, user_agent, referer, (u[0], u[1], u[2], u[3], u[4]), hint,
    )
    encoded = encode_click(
        Target(record), click_id, 1_795_000_000_123, 2**64 - 1, country, user_agent, referer, utm, hint
    )
    assert encoded == expected.encode()
    assert ClickEvent.decode(encoded) == expected


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/openapi.json", "/dashboard", "/postback",
                                  "/app"])
def test_routes_are_never_taken_as_codes(app_client: TestClient, redis_client: redis.Redis, path: str) -> None:
    put_link(redis_client, path[1:])  # even a link record under the route's name must not win
    resp = app_client.get(path)
    assert "No link has the code" not in resp.text
    assert resp.status_code != 302


def test_an_unexpected_error_answers_the_json_500(
    app_client: TestClient, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redirects skip Starlette's middleware stack; its error handling is kept: a JSON 500."""
    put_link(redis_client)
    redirector = app_client.app.state.services.redirect  # type: ignore[attr-defined]

    def broken(link_id: int, ts_ms: int) -> str:
        raise RuntimeError("click id minting broke")

    seen: list[tuple[str, str | None]] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append((record.getMessage(), REQUEST_ID.get()))

    handler = Capture()
    logging.getLogger("tracker.redirect.handler").addHandler(handler)
    monkeypatch.setattr(redirector.click_ids, "mint", broken)
    try:
        resp = app_client.get("/abc123", headers={"X-Request-Id": "proxy-req-42"})
    finally:
        logging.getLogger("tracker.redirect.handler").removeHandler(handler)
    assert resp.status_code == 500
    assert resp.json()["error"]["code"] == "internal_error"
    assert "x-request-id" not in resp.headers
    assert seen == [("redirect of /abc123 failed", "proxy-req-42")]
    assert redis_client.xlen(keys.CLICK_STREAM) == 0
    monkeypatch.undo()
    assert app_client.get("/abc123").status_code == 302


def test_repeated_404s_from_one_address_are_limited(app_client: TestClient, redis_client: redis.Redis) -> None:
    put_link(redis_client)
    assert asgi_get(app_client, "/abc123", peer="203.0.113.5")[0] == 302
    statuses = [asgi_get(app_client, f"/nope{i:03d}", peer="203.0.113.5")[0] for i in range(31)]
    assert statuses == [404] * 30 + [429]
    assert asgi_get(app_client, "/nope999", peer="203.0.113.5")[0] == 429
    assert asgi_get(app_client, "/x", peer="203.0.113.5")[0] == 429
    assert asgi_get(app_client, "/abc123", peer="203.0.113.5")[0] == 302  # known links still work
    assert asgi_get(app_client, "/nope999", peer="203.0.113.6")[0] == 404  # other addresses unaffected


def test_a_link_change_reaches_the_redirect_within_the_cache_lifetime(
    settings: Settings, ch: ClickHouse, redis_client: redis.Redis
) -> None:
    put_link(redis_client)
    with TestClient(create_app(settings.with_(link_cache_seconds=0.5)), follow_redirects=False) as client:
        assert client.get("/abc123").headers["location"].startswith(DEST)
        put_link(redis_client, destination_url="https://new.example/")  # what the registry writes on PATCH
        wait_until(
            lambda: client.get("/abc123").headers["location"].startswith("https://new.example/?click_id="),
            timeout=5,
            message="the new destination did not reach the redirect",
        )
        put_link(redis_client, disabled=True)
        wait_until(lambda: client.get("/abc123").status_code == 410, timeout=5, message="the link was not disabled")


def test_links_made_by_the_registry(app_client: TestClient, redis_client: redis.Redis) -> None:
    registry = app_client.app.state.services.registry  # type: ignore[attr-defined]
    portal = app_client.portal
    assert portal is not None
    brand, _ = portal.call(registry.create_brand, "Brand", "USD")
    campaign = portal.call(functools.partial(
        registry.create_campaign, brand["id"], name="C", commission_type="percent",
        commission_value=Decimal("10"), click_id_param="clk",
    ))
    influencer = portal.call(functools.partial(registry.create_influencer, brand["id"], name="I"))
    link = portal.call(functools.partial(
        registry.create_link, brand["id"], campaign_id=campaign["id"], influencer_id=influencer["id"],
        destination_url="https://shop.example/item?color=red",
    ))
    resp = app_client.get(f"/{link['code']}?color=blue")
    assert resp.status_code == 302
    assert resp.headers["location"].startswith("https://shop.example/item?color=blue&clk=")
    portal.call(functools.partial(registry.update_link, brand["id"], link["code"], disabled=True))
    wait_until(lambda: app_client.get(f"/{link['code']}").status_code == 410, timeout=5,
               message="the disabled link still redirects")
    event, _ = clicks(redis_client)[0]
    assert (event.brand_id, event.link_id, event.link_code) == (brand["id"], link["id"], link["code"])


def test_redirect_metrics(settings: Settings, ch: ClickHouse, redis_client: redis.Redis) -> None:
    from prometheus_client import REGISTRY

    def value(name: str, labels: dict[str, str] | None = None) -> float:
        return REGISTRY.get_sample_value(name, labels or {}) or 0.0

    put_link(redis_client)
    before = (
        value("tracker_redirects_total", {"status": "302"}),
        value("tracker_redirect_seconds_count"),
        value("tracker_redirect_seconds_bucket", {"le": "+Inf"}),
        value("tracker_redirects_total", {"status": "404"}),
        value("tracker_clicks_enqueued_total"),
    )
    with TestClient(create_app(settings), follow_redirects=False) as client:
        for _ in range(7):
            assert client.get("/abc123").status_code == 302
        assert client.get("/nope123").status_code == 404
        wait_until(  # flushed into the series every 0.2 s
            lambda: value("tracker_redirects_total", {"status": "302"}) - before[0] >= 7,
            timeout=5,
            message="the redirects were not counted",
        )
        metrics_text = client.get("/metrics").text
    after = (
        value("tracker_redirects_total", {"status": "302"}),
        value("tracker_redirect_seconds_count"),
        value("tracker_redirect_seconds_bucket", {"le": "+Inf"}),
        value("tracker_redirects_total", {"status": "404"}),
        value("tracker_clicks_enqueued_total"),
    )
    assert [a - b for a, b in zip(after, before, strict=True)] == [7, 7, 7, 1, 7]
    assert value("tracker_redirect_seconds_sum") > 0
    assert 'tracker_redirects_total{status="302"}' in metrics_text
