"""Stores on a platform: the webhook secret sealed at rest, the webhook URL, rotation, the audit trail."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from tracker.core.credentials import open_webhook_secret, seal_webhook_secret
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse

SECRET = "shpss_first_secret_0123456789"


def _create(client: TestClient, world: dict[str, Any], **body: Any) -> dict[str, Any]:
    r = client.post("/api/v1/stores", json={"name": "Shop", **body}, headers=world["h"])
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()
    return created


@pytest.mark.parametrize(
    ("platform", "secret"),
    [("shopify", SECRET), ("woocommerce", "wc-secret-1234"), ("stripe", "whsec_abcdefgh12345678")],
)
def test_a_platform_store_gets_its_webhook_url_and_never_shows_the_secret(
    client: TestClient, world: dict[str, Any], ch: ClickHouse, settings: Settings, platform: str, secret: str
) -> None:
    store = _create(client, world, platform=platform, webhook_secret=secret)
    assert store["platform"] == platform
    assert store["webhook_url"] == f"http://testserver/api/v1/integrations/{platform}/{store['id']}"
    assert secret not in str(store)
    one = client.get(f"/api/v1/stores/{store['id']}", headers=world["h"])
    assert one.status_code == 200 and secret not in one.text
    assert one.json()["webhook_url"] == store["webhook_url"]
    # At rest: sealed, not the secret, and bound to this store (another store's id does not open it).
    (sealed,) = ch.query("SELECT webhook_secret FROM stores FINAL WHERE id = {id:String}", {"id": store["id"]})[0]
    assert secret not in sealed and sealed.startswith("v1.")
    assert open_webhook_secret(str(settings.secret_key), store["id"], sealed) == secret
    assert open_webhook_secret(str(settings.secret_key), "sto_someoneelse0000", sealed) is None
    assert open_webhook_secret("another-server-secret-0123456789abcdef", store["id"], sealed) is None
    audit = client.get("/api/v1/audit", headers=world["h"]).json()["items"]
    assert audit[0]["action"] == "store.create" and secret not in str(audit)


def test_sealing_is_randomised_and_refuses_garbage(settings: Settings) -> None:
    key = str(settings.secret_key)
    a = seal_webhook_secret(key, "sto_a1234567", "s3cret-value")
    b = seal_webhook_secret(key, "sto_a1234567", "s3cret-value")
    assert a != b
    for bad in ("", "v1.", "v1.!!!", "v2." + a[3:], a[:-4]):
        assert open_webhook_secret(key, "sto_a1234567", bad) is None


def test_rotating_the_webhook_secret(client: TestClient, world: dict[str, Any], ch: ClickHouse,
                                     settings: Settings) -> None:
    store = _create(client, world, platform="shopify", webhook_secret=SECRET)
    r = client.patch(f"/api/v1/stores/{store['id']}", json={"webhook_secret": "shpss_second_secret_98765"},
                     headers=world["h"])
    assert r.status_code == 200, r.text
    assert r.json()["webhook_secret_rotated_at"] is not None and "shpss" not in r.text
    rec = client.portal.call(client.app.state.services.registry.get_store, store["id"])  # type: ignore[attr-defined]
    assert rec is not None
    key = str(settings.secret_key)
    assert open_webhook_secret(key, store["id"], rec["webhook_secret"]) == "shpss_second_secret_98765"
    assert open_webhook_secret(key, store["id"], rec["previous_webhook_secret"]) == SECRET
    audit = client.get("/api/v1/audit", headers=world["h"]).json()["items"]
    assert audit[0]["action"] == "store.rotate_webhook_secret" and "shpss" not in str(audit)
    renamed = client.patch(f"/api/v1/stores/{store['id']}", json={"name": "Renamed"}, headers=world["h"])
    assert renamed.json()["name"] == "Renamed"
    assert client.get("/api/v1/audit", headers=world["h"]).json()["items"][0]["action"] == "store.update"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"webhook_secret": "abcdefghijk"}, 422, "invalid_field"),  # a custom store has none
        ({}, 422, "invalid_field"),
        ({"platform": "shopify"}, 422, "invalid_field"),  # the platform is fixed at creation
    ],
)
def test_refused_patches(client: TestClient, world: dict[str, Any], body: dict[str, Any], status: int,
                         code: str) -> None:
    store = _create(client, world)
    r = client.patch(f"/api/v1/stores/{store['id']}", json=body, headers=world["h"])
    assert r.status_code == status and r.json()["error"]["code"] == code, r.text


def test_other_brands_store_is_not_found(client: TestClient, world: dict[str, Any]) -> None:
    from tests.registry.helpers import new_brand

    other = new_brand(client, name="Other")
    store = _create(client, world, platform="stripe", webhook_secret="whsec_abcdefgh12345678")
    r = client.patch(f"/api/v1/stores/{store['id']}", json={"name": "x"}, headers=other["headers"])
    assert r.status_code == 404
