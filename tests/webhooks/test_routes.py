"""``/api/v1/webhooks``: endpoints made, listed, changed and deleted; bad input refused."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.webhooks.conftest import new_brand
from tracker.app import create_app
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse

URL = "http://127.0.0.1:9/hook"


def test_crud_and_audit(client: TestClient) -> None:
    brand = new_brand(client)
    h = brand["headers"]
    r = client.post("/api/v1/webhooks", json={"url": URL, "events": ["conversion.created", "payout.paid",
                                                                     "conversion.created"]}, headers=h)
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["id"].startswith("whk_") and made["events"] == ["conversion.created", "payout.paid"]
    assert made["secret"].startswith("whsec_") and 24 <= len(base64.b64decode(made["secret"][6:])) <= 32
    assert made["enabled"] and made["disabled_reason"] is None

    listed = client.get("/api/v1/webhooks", headers=h)
    assert [i["id"] for i in listed.json()["items"]] == [made["id"]] and "secret" not in listed.json()["items"][0]
    r = client.patch(f"/api/v1/webhooks/{made['id']}", json={"events": ["payout.created"], "enabled": False},
                     headers=h)
    assert r.status_code == 200 and r.json()["events"] == ["payout.created"] and r.json()["enabled"] is False
    assert r.json()["disabled_reason"] == "Disabled through the API."
    assert client.patch(f"/api/v1/webhooks/{made['id']}", json={}, headers=h).status_code == 422
    assert client.get(f"/api/v1/webhooks/{made['id']}/deliveries", headers=h).json() == {"items": [],
                                                                                       "next_cursor": None}

    other = new_brand(client)
    assert client.get(f"/api/v1/webhooks/{made['id']}", headers=other["headers"]).status_code == 404
    assert client.delete(f"/api/v1/webhooks/{made['id']}", headers=other["headers"]).status_code == 404
    assert client.delete(f"/api/v1/webhooks/{made['id']}", headers=h).status_code == 204
    assert client.get(f"/api/v1/webhooks/{made['id']}", headers=h).status_code == 404
    assert client.get("/api/v1/webhooks", headers=h).json()["items"] == []

    audit = client.get("/api/v1/audit", headers=h).json()["items"]
    assert [a["action"] for a in audit[:3]] == ["webhook.delete", "webhook.update", "webhook.create"]
    assert made["secret"] not in str(audit) and "secret_nonce" not in str(audit)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"url": "ftp://x.example/", "events": ["conversion.created"]}, "invalid_url"),
        ({"url": "https://u:p@x.example/", "events": ["conversion.created"]}, "invalid_url"),
        ({"url": URL, "events": []}, "invalid_field"),
        ({"url": URL, "events": ["order.created"]}, "invalid_field"),
        ({"url": URL}, "missing_field"),
        ({"events": ["payout.paid"]}, "missing_field"),
        ({"url": URL, "events": ["payout.paid"], "secret": "mine"}, "invalid_field"),
        ({"url": 5, "events": ["payout.paid"]}, "invalid_field"),
    ],
)
def test_bad_bodies(client: TestClient, body: dict[str, Any], code: str) -> None:
    r = client.post("/api/v1/webhooks", json=body, headers=new_brand(client)["headers"])
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == code


@pytest.fixture
def strict_client(ch: ClickHouse, settings: Settings) -> Iterator[TestClient]:
    """The default: TRACKER_WEBHOOKS_ALLOW_PRIVATE unset."""
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/", "http://localhost/hook", "http://[::1]/",
                                 "http://169.254.169.254/latest/meta-data/", "https://10.0.0.8/", "http://0.0.0.0/"])
def test_private_destinations_are_refused_by_default(strict_client: TestClient, url: str) -> None:
    h = new_brand(strict_client)["headers"]
    r = strict_client.post("/api/v1/webhooks", json={"url": url, "events": ["payout.paid"]}, headers=h)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "url_refused" and "TRACKER_WEBHOOKS_ALLOW_PRIVATE" in error["message"]


def test_a_read_key_lists_but_cannot_change(client: TestClient) -> None:
    brand = new_brand(client)
    made = client.post("/api/v1/webhooks", json={"url": URL, "events": ["payout.paid"]}, headers=brand["headers"])
    key = client.post("/api/v1/keys", json={"name": "ro", "scope": "read"}, headers=brand["headers"]).json()["key"]
    ro = {"Authorization": f"Bearer {key}"}
    assert client.get("/api/v1/webhooks", headers=ro).status_code == 200
    assert client.post("/api/v1/webhooks", json={"url": URL, "events": ["payout.paid"]}, headers=ro).status_code == 403
    assert client.delete(f"/api/v1/webhooks/{made.json()['id']}", headers=ro).status_code == 403
