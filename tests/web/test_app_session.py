"""Brand app sessions over HTTP: a key exchanged once for a cookie, CSRF on every change, scope kept,
sign-out and expiry end the session, revoked keys end their sessions, audit actor = the key id."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.registry.helpers import new_brand
from tests.waiting import wait_until
from tracker.api.brandsessions import COOKIE
from tracker.app import create_app
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse

CAMPAIGN = {"name": "Spring", "commission": {"type": "percent", "value": "10"}}


@pytest.fixture
def client(ch: ClickHouse, settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), base_url="http://testserver", follow_redirects=False) as c:
        yield c


def _signin(client: TestClient, key: str) -> dict[str, Any]:
    r = client.post("/app/signin", json={"key": key})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_root_and_dashboard_lead_to_the_app(client: TestClient) -> None:
    assert client.get("/").headers["location"] == "/app"
    assert client.get("/dashboard").headers["location"] == "/app#reports"
    for old, view in (("/dashboard/payouts", "payouts"), ("/dashboard/quality", "review")):
        r = client.get(old)
        assert r.status_code == 302 and r.headers["location"] == f"/app#{view}"
    page = client.get("/app")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert client.get("/app/app.js").status_code == 200


def test_signin_sets_a_strict_httponly_cookie_and_answers_the_csrf_token(client: TestClient) -> None:
    brand = new_brand(client)
    r = client.post("/app/signin", json={"key": brand["api_key"]})
    assert r.status_code == 200, r.text
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Path=/" in cookie and "Max-Age=43200" in cookie
    body = r.json()
    assert body["brand"]["id"] == brand["id"] and body["scope"] == "write" and len(body["csrf_token"]) >= 24
    assert brand["api_key"] not in r.text and brand["api_key"] not in cookie
    assert client.get("/app/session").json() == body
    # The session reads like the key (no Authorization header).
    assert client.get("/api/v1/campaigns").status_code == 200


def test_changes_need_the_csrf_token(client: TestClient) -> None:
    brand = new_brand(client)
    csrf = _signin(client, brand["api_key"])["csrf_token"]
    refused = client.post("/api/v1/campaigns", json=CAMPAIGN)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "csrf_failed"
    wrong = client.post("/api/v1/campaigns", json=CAMPAIGN, headers={"X-CSRF-Token": csrf[:-1] + "x"})
    assert wrong.status_code == 403
    assert client.get("/api/v1/campaigns").json()["items"] == []
    made = client.post("/api/v1/campaigns", json=CAMPAIGN, headers={"X-CSRF-Token": csrf})
    assert made.status_code == 201, made.text
    # The audit log names the key the session acts with.
    key_id = client.get("/app/session").json()["key_id"]
    assert client.get("/api/v1/audit").json()["items"][0]["key_id"] == key_id
    # A Bearer key needs no CSRF token (no cookie rides along with it).
    assert client.post("/api/v1/campaigns", json=CAMPAIGN, headers=brand["headers"]).status_code == 201


def test_a_read_key_session_cannot_write(client: TestClient) -> None:
    brand = new_brand(client)
    key = client.post("/api/v1/keys", headers=brand["headers"], json={"name": "viewer", "scope": "read"}).json()
    csrf = _signin(client, key["key"])["csrf_token"]
    assert client.get("/app/session").json()["scope"] == "read"
    r = client.post("/api/v1/campaigns", json=CAMPAIGN, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope"


@pytest.mark.parametrize(("key", "status", "code"), [
    ("trk_" + "a" * 43, 401, "invalid_key"),
    ("nonsense", 401, "invalid_key"),
    ("", 422, None),
])
def test_bad_keys_are_refused(client: TestClient, key: str, status: int, code: str | None) -> None:
    r = client.post("/app/signin", json={"key": key})
    assert r.status_code == status, r.text
    if code:
        assert r.json()["error"]["code"] == code
    assert "set-cookie" not in r.headers


def test_influencer_keys_and_foreign_origins_are_refused(client: TestClient) -> None:
    brand = new_brand(client)
    inf = client.post("/api/v1/influencers", headers=brand["headers"], json={"name": "Ann"}).json()
    key = client.post("/api/v1/keys", headers=brand["headers"],
                      json={"name": "ann", "scope": "influencer", "influencer_id": inf["id"]}).json()["key"]
    assert client.post("/app/signin", json={"key": key}).status_code == 403
    foreign = client.post("/app/signin", json={"key": brand["api_key"]}, headers={"Origin": "https://evil.example"})
    assert foreign.status_code == 403 and "set-cookie" not in foreign.headers


def test_a_form_signin_redirects_to_the_app(client: TestClient) -> None:
    brand = new_brand(client)
    r = client.post("/app/signin", data={"key": brand["api_key"]}, headers={"Origin": "http://testserver"})
    assert r.status_code == 303 and r.headers["location"] == "/app"
    assert client.get("/app/session").status_code == 200


def test_signout_ends_the_session_everywhere(client: TestClient) -> None:
    brand = new_brand(client)
    csrf = _signin(client, brand["api_key"])["csrf_token"]
    copied = client.cookies[COOKIE]
    assert client.post("/app/signout").status_code == 403  # without the token
    r = client.post("/app/signout", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 204 and f'{COOKIE}=""' in r.headers["set-cookie"]
    client.cookies.set(COOKIE, copied)  # a replayed copy of the cookie
    r = client.get("/api/v1/campaigns")
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_session"
    assert client.get("/app/session").status_code == 401


def test_a_revoked_key_ends_its_sessions(client: TestClient) -> None:
    brand = new_brand(client)
    key = client.post("/api/v1/keys", headers=brand["headers"], json={"name": "temp", "scope": "write"}).json()
    _signin(client, key["key"])
    assert client.get("/api/v1/campaigns").status_code == 200
    assert client.delete(f"/api/v1/keys/{key['id']}", headers=brand["headers"]).status_code in (200, 204)
    wait_until(lambda: client.get("/api/v1/campaigns").status_code == 401, timeout=5, message="still signed in")


def test_an_expired_session_is_refused(ch: ClickHouse, settings: Settings) -> None:
    with TestClient(create_app(settings), base_url="http://testserver") as client:
        brand = new_brand(client)
        svc = client.app.state.services  # type: ignore[attr-defined]
        from tracker.core.credentials import token_hash

        assert client.portal is not None
        cookie, _ = client.portal.call(svc.app_sessions.open, token_hash(brand["api_key"]), 1)
        client.cookies.set(COOKIE, cookie)
        assert client.get("/app/session").status_code == 200
        wait_until(lambda: client.get("/app/session").status_code == 401, timeout=5, message="not expired")
        assert client.get("/api/v1/campaigns").status_code == 401
