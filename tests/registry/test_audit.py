"""The audit log: every registry change with who made it, before and after, newest first."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.registry.helpers import link_body, new_brand


def audit(client: TestClient, brand: dict[str, Any], query: str = "") -> dict[str, Any]:
    r = client.get(f"/api/v1/audit{query}", headers=brand["headers"])
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def test_changes_are_recorded_with_the_acting_key(client: TestClient, world: dict[str, Any]) -> None:
    brand = world["brand"]
    link = client.post("/api/v1/links", json=link_body(world), headers=brand["headers"]).json()
    r = client.patch(f"/api/v1/links/{link['code']}", json={"disabled": True}, headers=brand["headers"])
    assert r.status_code == 200
    store = client.post("/api/v1/stores", json={"name": "Shop"}, headers=brand["headers"]).json()

    items = audit(client, brand)["items"]
    actions = [i["action"] for i in items]
    # Newest first: the world fixture made the brand, a campaign and an influencer before.
    assert actions == [
        "store.create", "link.update", "link.create", "influencer.create", "campaign.create", "brand.create",
    ]
    key_id = "key_" + hashlib.sha256(brand["api_key"].encode()).hexdigest()[:16]
    assert {i["key_id"] for i in items[:-1]} == {key_id}
    assert items[-1]["key_id"] == "admin"  # brands are created with the admin token

    update = items[1]
    assert update["object_id"] == link["code"]
    assert update["before"]["disabled"] is False and update["after"]["disabled"] is True
    created = items[0]
    assert created["before"] is None and created["after"]["id"] == store["id"]
    # Secrets never reach the log.
    text = str(items)
    assert store["secret"] not in text and store["postback_token"] not in text
    assert brand["api_key"] not in text


def test_pages_follow_the_cursor_and_brands_see_only_their_own(client: TestClient, world: dict[str, Any]) -> None:
    brand = world["brand"]
    for n in range(3):
        client.post("/api/v1/influencers", json={"name": f"I{n}"}, headers=brand["headers"])
    other = new_brand(client, name="Other")
    client.post("/api/v1/influencers", json={"name": "Theirs"}, headers=other["headers"])

    everything = audit(client, brand)["items"]
    seen: list[dict[str, Any]] = []
    query = "?limit=2"
    while True:
        page = audit(client, brand, query)
        seen += page["items"]
        if page["next_cursor"] is None:
            break
        query = f"?limit=2&cursor={page['next_cursor']}"
    assert seen == everything and len(seen) == 6
    assert [i["action"] for i in audit(client, other)["items"]] == ["influencer.create", "brand.create"]


@pytest.mark.parametrize(
    ("query", "code"),
    [("?cursor=garbage!", "invalid_cursor"), ("?cursor=MTIzOg", "invalid_cursor"), ("?limit=0", "invalid_field"),
     ("?limit=1001", "invalid_field"), ("?limit=ten", "invalid_field"), ("?sort=at", "invalid_field")],
)
def test_bad_queries(client: TestClient, world: dict[str, Any], query: str, code: str) -> None:
    r = client.get(f"/api/v1/audit{query}", headers=world["brand"]["headers"])
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == code


def test_needs_a_brand_key(client: TestClient) -> None:
    assert client.get("/api/v1/audit").status_code == 401
