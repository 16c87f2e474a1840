"""Scoped API keys: made, listed, rotated, revoked; what each scope may call, route by route."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.registry.helpers import link_body, new_influencer
from tracker.api.endpoints import operations
from tracker.app import _routes


def key_id(key: str) -> str:
    return "key_" + hashlib.sha256(key.encode()).hexdigest()[:16]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def new_key(client: TestClient, world: dict[str, Any], scope: str, **more: Any) -> dict[str, Any]:
    body = {"name": f"{scope} key", "scope": scope, **more}
    if scope == "influencer" and "influencer_id" not in more:
        body["influencer_id"] = world["influencer"]["id"]
    r = client.post("/api/v1/keys", json=body, headers=world["h"])
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


def test_create_list_rotate_revoke(client: TestClient, world: dict[str, Any]) -> None:
    read = new_key(client, world, "read")
    assert read["id"] == key_id(read["key"]) and read["scope"] == "read" and read["influencer_id"] is None
    assert read["key"].startswith("trk_") and read["prefix"] == read["key"][:8]
    mine = new_key(client, world, "influencer")
    assert mine["influencer_id"] == world["influencer"]["id"]

    listed = client.get("/api/v1/keys", headers=bearer(read["key"]))  # a read key may list (no secrets)
    assert listed.status_code == 200
    items = listed.json()["items"]
    brand_key = key_id(world["brand"]["api_key"])
    assert [(i["id"], i["scope"]) for i in items] == [(brand_key, "write"), (read["id"], "read"),
                                                      (mine["id"], "influencer")]
    assert items[0]["name"] == "Brand key"
    assert "key" not in items[0] and world["brand"]["api_key"] not in listed.text
    # Used just now, to the minute; the influencer key never.
    assert items[0]["last_used_at"] is not None and items[1]["last_used_at"] is not None
    assert items[2]["last_used_at"] is None

    rotated = client.post(f"/api/v1/keys/{read['id']}/rotate", headers=world["h"])
    assert rotated.status_code == 201, rotated.text
    new = rotated.json()
    assert new["scope"] == "read" and new["name"] == "read key" and new["id"] != read["id"]
    assert client.get("/api/v1/links", headers=bearer(read["key"])).status_code == 401
    assert client.get("/api/v1/links", headers=bearer(new["key"])).status_code == 200

    assert client.delete(f"/api/v1/keys/{new['id']}", headers=world["h"]).status_code == 204
    assert client.get("/api/v1/links", headers=bearer(new["key"])).status_code == 401
    assert client.delete(f"/api/v1/keys/{new['id']}", headers=world["h"]).status_code == 404
    ids = [i["id"] for i in client.get("/api/v1/keys", headers=world["h"]).json()["items"]]
    assert ids == [brand_key, mine["id"]]

    # The brand's last write key cannot go: nobody could manage the brand any more.
    r = client.delete(f"/api/v1/keys/{brand_key}", headers=world["h"])
    assert r.status_code == 409, r.text
    # With a second write key it can, and the second one keeps working.
    writer = new_key(client, world, "write")
    assert client.delete(f"/api/v1/keys/{brand_key}", headers=bearer(writer["key"])).status_code == 204
    assert client.get("/api/v1/campaigns", headers=world["h"]).status_code == 401
    assert client.get("/api/v1/campaigns", headers=bearer(writer["key"])).status_code == 200

    actions = [(e["action"], e["object_id"], e["key_id"])
               for e in client.get("/api/v1/audit", headers=bearer(writer["key"])).json()["items"]][:6]
    assert actions == [
        ("key.revoke", brand_key, writer["id"]), ("key.create", writer["id"], brand_key),
        ("key.revoke", new["id"], brand_key), ("key.rotate", read["id"], brand_key),
        ("key.create", mine["id"], brand_key), ("key.create", read["id"], brand_key),
    ]
    log = str(client.get("/api/v1/audit", headers=bearer(writer["key"])).json())
    assert all(k not in log for k in (read["key"], new["key"], writer["key"], mine["key"]))


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"name": "x", "scope": "admin"}, 422, "invalid_field"),
        ({"name": "x"}, 422, "missing_field"),
        ({"scope": "read"}, 422, "missing_field"),
        ({"name": "", "scope": "read"}, 422, "invalid_field"),
        ({"name": "x", "scope": "influencer"}, 422, "missing_field"),
        ({"name": "x", "scope": "read", "influencer_id": "inf_whatever00"}, 422, "invalid_field"),
        ({"name": "x", "scope": "influencer", "influencer_id": "inf_doesnotexist1"}, 422, "unknown_influencer"),
        ({"name": "x", "scope": "write", "extra": 1}, 422, "invalid_field"),
    ],
)
def test_bad_key_bodies(client: TestClient, world: dict[str, Any], body: dict[str, Any], status: int,
                        code: str) -> None:
    r = client.post("/api/v1/keys", json=body, headers=world["h"])
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code


def _fill(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x0", path)


def _calls() -> list[tuple[str, str, tuple[str, ...]]]:
    """Every API route that needs a key: (method, path, who may call it)."""
    return sorted(
        (method, path, tuple(op.security))
        for path, method, op in operations(_routes())
        if path.startswith("/api/") and ("brand" in op.security or "influencer" in op.security)
    )


@pytest.mark.parametrize("scope", ["read", "write", "influencer", "revoked"])
def test_every_route_with_every_scope(client: TestClient, world: dict[str, Any], scope: str) -> None:
    """A read key cannot change anything (403); an influencer key reads only /api/v1/me (403 elsewhere);
    a write key reaches every brand route and no /me route; a revoked key nothing (401)."""
    key = new_key(client, world, "read" if scope == "revoked" else scope)
    if scope == "revoked":
        assert client.delete(f"/api/v1/keys/{key['id']}", headers=world["h"]).status_code == 204
    calls = _calls()
    assert len(calls) >= 30 and any(p == "/api/v1/me" for _, p, _ in calls)
    for method, path, who in set(calls):
        r = client.request(method, _fill(path), headers={**bearer(key["key"]), "Content-Type": "application/json"},
                           content=b"{}" if method in ("POST", "PUT", "PATCH") else None)
        me = "influencer" in who
        if scope == "revoked":
            expected_refusal = 401
        elif scope == "influencer":
            expected_refusal = None if me else 403
        elif me:
            expected_refusal = 403
        else:
            expected_refusal = 403 if scope == "read" and method != "GET" else None
        where = f"{scope} key: {method} {path} -> {r.status_code} {r.text[:200]}"
        if expected_refusal is None:
            assert r.status_code not in (401, 403), where
        else:
            assert r.status_code == expected_refusal, where
            assert r.json()["error"]["code"] in ("insufficient_scope", "invalid_token"), where


def test_read_key_reads_and_cannot_write(client: TestClient, world: dict[str, Any]) -> None:
    read = bearer(new_key(client, world, "read")["key"])
    link = client.post("/api/v1/links", json=link_body(world), headers=world["h"]).json()
    assert client.get("/api/v1/links", headers=read).json()["items"][0]["code"] == link["code"]
    assert client.get(f"/api/v1/links/{link['code']}/qr", headers=read).status_code == 200
    r = client.patch(f"/api/v1/links/{link['code']}", json={"disabled": True}, headers=read)
    assert r.status_code == 403 and "read-only" in r.json()["error"]["message"]
    assert client.get(f"/api/v1/links/{link['code']}", headers=read).json()["disabled"] is False


def test_influencer_key_sees_only_its_influencer(client: TestClient, world: dict[str, Any]) -> None:
    other = new_influencer(client, world["brand"], name="Bob")
    mine = client.post("/api/v1/links", json=link_body(world), headers=world["h"]).json()
    theirs = client.post("/api/v1/links", json=link_body(world, influencer_id=other["id"]), headers=world["h"]).json()
    key = bearer(new_key(client, world, "influencer")["key"])
    me = client.get("/api/v1/me", headers=key).json()
    assert me["influencer"]["id"] == world["influencer"]["id"] and me["via"] == "key"
    assert [i["code"] for i in client.get("/api/v1/me/links", headers=key).json()["items"]] == [mine["code"]]
    assert client.get(f"/api/v1/me/links/{mine['code']}/qr", headers=key).status_code == 200
    assert client.get(f"/api/v1/me/links/{theirs['code']}/qr", headers=key).status_code == 404
    # Brand routes, including those naming the influencer itself, answer 403.
    for path in ("/api/v1/links", f"/api/v1/influencers/{world['influencer']['id']}",
                 f"/api/v1/reports?from=2026-01-01&to=2026-01-02&influencer_id={other['id']}"):
        assert client.get(path, headers=key).status_code == 403, path
    # The brand key is not an influencer's view.
    assert client.get("/api/v1/me", headers=world["h"]).status_code == 403
