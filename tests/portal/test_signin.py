"""Portal sign-in: one-time links, the session cookie, sign-out and expiry; replays are refused."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

import pytest
from starlette.testclient import TestClient

from tests.waiting import wait_until
from tracker.api.sessions import COOKIE, Seat, Sessions

BROWSER = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Mobile"


def portal_link(client: TestClient, world: dict[str, Any]) -> str:
    r = client.post(f"/api/v1/influencers/{world['influencer']['id']}/portal-link", headers=world["h"])
    assert r.status_code == 200, r.text
    body = r.json()
    expires = body["expires_at"]
    assert expires.endswith("Z")
    url: str = body["url"]
    assert url.startswith("http://testserver/portal/signin?token=pst_")
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def sign_in(client: TestClient, world: dict[str, Any]) -> str:
    r = client.get(portal_link(client, world), headers={"User-Agent": BROWSER}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/portal", r.text
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    attrs = {a.strip().split("=")[0].lower() for a in cookie.split(";")}
    assert {"httponly", "max-age", "expires", "path", "samesite"} <= attrs and "secure" not in attrs
    assert "samesite=lax" in cookie.lower()
    value = cookie.split(";")[0].split("=", 1)[1].strip('"')
    client.cookies.clear()
    return value


def jar(cookie: str) -> dict[str, str]:
    return {"Cookie": f"{COOKIE}={cookie}"}


def me(client: TestClient, cookie: str) -> int:
    client.cookies.clear()
    status = client.get("/api/v1/me", headers=jar(cookie)).status_code
    client.cookies.clear()
    return status


def test_a_link_signs_in_once(client: TestClient, world: dict[str, Any]) -> None:
    path = portal_link(client, world)
    # A chat app's preview of the link does not use it up.
    for agent in ("Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)", "facebookexternalhit/1.1", ""):
        r = client.get(path, headers={"User-Agent": agent}, follow_redirects=False)
        assert r.status_code == 200 and "set-cookie" not in r.headers, agent
    assert client.head(path, headers={"User-Agent": BROWSER}).status_code == 200
    r = client.get(path, headers={"User-Agent": BROWSER}, follow_redirects=False)
    assert r.status_code == 303
    cookie = r.headers["set-cookie"].split(";")[0].split("=", 1)[1].strip('"')
    client.cookies.clear()
    body = client.get("/api/v1/me", headers=jar(cookie)).json()
    assert body["influencer"]["id"] == world["influencer"]["id"] and body["via"] == "session"
    # Used once: a second visit signs nobody in.
    again = client.get(path, headers={"User-Agent": BROWSER}, follow_redirects=False)
    assert again.status_code == 410 and "text/html" in again.headers["content-type"]
    assert "set-cookie" not in again.headers
    audit = client.get("/api/v1/audit", headers=world["h"]).json()["items"][0]
    assert audit["action"] == "influencer.portal_link" and audit["object_id"] == world["influencer"]["id"]
    assert "pst_" not in str(audit)


@pytest.mark.parametrize(
    "token", ["", "pst_unknown", "trk_notaportaltoken", "x" * 500, "pst_" + "a" * 43],
)
def test_bad_links(client: TestClient, world: dict[str, Any], token: str) -> None:
    r = client.get(f"/portal/signin?token={token}", headers={"User-Agent": BROWSER}, follow_redirects=False)
    assert r.status_code == 410 and "set-cookie" not in r.headers


def test_signout_ends_the_session_everywhere(client: TestClient, world: dict[str, Any]) -> None:
    cookie = sign_in(client, world)
    other_device = sign_in(client, world)
    assert me(client, cookie) == 200 and me(client, other_device) == 200
    page = client.get("/portal", headers=jar(cookie))
    assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
    client.cookies.clear()
    # A form post from another site is refused (SameSite=Lax would not send the cookie anyway).
    r = client.post("/portal/signout", headers={"Origin": "https://evil.example", **jar(cookie)},
                    follow_redirects=False)
    assert r.status_code == 403 and me(client, cookie) == 200
    r = client.post("/portal/signout", headers={"Origin": "http://testserver", **jar(cookie)},
                    follow_redirects=False)
    assert r.status_code == 303 and f"{COOKIE}=" in r.headers["set-cookie"] and "Max-Age=0" in r.headers["set-cookie"]
    client.cookies.clear()
    # The copied cookie is refused after sign-out; the other device's session lives on.
    assert me(client, cookie) == 401
    assert client.get("/portal", headers=jar(cookie)).status_code == 401
    client.cookies.clear()
    assert me(client, other_device) == 200


def test_expired_and_forged_cookies_are_refused(client: TestClient, world: dict[str, Any]) -> None:
    sessions: Sessions = client.app.state.services.sessions  # type: ignore[attr-defined]
    seat = Seat(world["brand"]["id"], world["influencer"]["id"])
    assert client.portal is not None
    short = client.portal.call(sessions.open, seat, 1)
    assert me(client, short.cookie) == 200
    wait_until(lambda: time.time() * 1000 > int(short.cookie.split(".")[1]), timeout=5)
    assert me(client, short.cookie) == 401  # expired: refused even if its record outlived it

    good = client.portal.call(sessions.open, seat, 3600)
    sid, expires, mac = good.cookie.split(".")
    later = str(int(expires) + 86_400_000)
    for forged in (f"{sid}.{later}.{mac}", f"{sid}.{expires}.{'0' * len(mac)}", f"x{sid}.{expires}.{mac}",
                   sid, "", f"{sid}.{expires}"):
        assert me(client, forged) == 401, forged
    assert me(client, good.cookie) == 200


def test_secure_cookie_behind_https(client: TestClient, world: dict[str, Any]) -> None:
    path = portal_link(client, world)
    r = client.get("https://testserver" + path, headers={"User-Agent": BROWSER}, follow_redirects=False)
    assert r.status_code == 303 and "secure" in r.headers["set-cookie"].lower()


def test_signed_out_page(client: TestClient) -> None:
    r = client.get("/portal")
    assert r.status_code == 401 and "text/html" in r.headers["content-type"]
    assert "sign-in link" in r.text


def test_the_preview_page_form_signs_in_once(client: TestClient, world: dict[str, Any]) -> None:
    path = portal_link(client, world)
    token = path.split("token=")[1]
    page = client.get(path, headers={"User-Agent": "HeadlessChrome/131.0"}, follow_redirects=False)
    assert page.status_code == 200 and f'value="{token}"' in page.text and "set-cookie" not in page.headers
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    r = client.post("/portal/signin", content=f"token={token}", follow_redirects=False,
                    headers={**form, "Origin": "https://evil.example"})
    assert r.status_code == 403 and "set-cookie" not in r.headers
    r = client.post("/portal/signin", content=f"token={token}", headers={**form, "Origin": "http://testserver"},
                    follow_redirects=False)
    assert r.status_code == 303 and r.headers["set-cookie"].startswith(f"{COOKIE}=")
    client.cookies.clear()
    again = client.post("/portal/signin", content=f"token={token}", headers=form, follow_redirects=False)
    assert again.status_code == 410
