"""What the registry tests share: a brand's campaign and influencer, through the API or the registry."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from starlette.testclient import TestClient

from tests.conftest import ADMIN_TOKEN
from tracker.core.records import LinkRecord
from tracker.registry import Registry

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
JSON = {"Content-Type": "application/json"}


def as_json(body: dict[str, Any]) -> bytes:
    """ASCII JSON, so lone surrogates travel as escapes the way a hostile client sends them."""
    return json.dumps(body).encode()


# --- through the API -------------------------------------------------------------------------------


def new_brand(client: TestClient, currency: str = "USD", name: str = "Acme") -> dict[str, Any]:
    r = client.post("/api/v1/brands", json={"name": name, "currency": currency}, headers=ADMIN)
    assert r.status_code == 201, r.text
    brand: dict[str, Any] = r.json()
    brand["headers"] = {"Authorization": f"Bearer {brand['api_key']}"}
    return brand


def new_campaign(client: TestClient, brand: dict[str, Any], **fields: Any) -> dict[str, Any]:
    body = {"name": "Spring", "commission": {"type": "percent", "value": "10"}, **fields}
    r = client.post("/api/v1/campaigns", json=body, headers=brand["headers"])
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


def new_influencer(client: TestClient, brand: dict[str, Any], name: str = "Ann") -> dict[str, Any]:
    r = client.post("/api/v1/influencers", json={"name": name, "handle": "@ann"}, headers=brand["headers"])
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


def link_body(world: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "campaign_id": world["campaign"]["id"],
        "influencer_id": world["influencer"]["id"],
        "destination_url": "https://shop.example/p/1?ref=x",
        **fields,
    }


def registry(client: TestClient) -> Registry:
    reg: Registry = client.app.state.services.registry  # type: ignore[attr-defined]
    return reg


def link_record(client: TestClient, code: str) -> LinkRecord | None:
    assert client.portal is not None
    return client.portal.call(registry(client).link_by_code, code)


# --- through the registry --------------------------------------------------------------------------


async def setup(reg: Registry, **campaign: object) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A brand (USD), a campaign (10 % unless told) and an influencer."""
    brand, _ = await reg.create_brand("Acme", "USD")
    c = await reg.create_campaign(
        str(brand["id"]),
        name="Spring",
        commission_type=str(campaign.get("commission_type", "percent")),
        commission_value=Decimal(str(campaign.get("commission_value", "10"))),
        attribution_window_days=int(str(campaign.get("window", 30))),
        click_id_param=str(campaign.get("click_id_param", "click_id")),
        allowed_domains=list(campaign.get("allowed_domains", [])),  # type: ignore[call-overload]
    )
    i = await reg.create_influencer(str(brand["id"]), name="Ann", handle="@ann", platform="instagram")
    return brand, c, i


def link_args(c: dict[str, Any], i: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"campaign_id": str(c["id"]), "influencer_id": str(i["id"]), "destination_url": "https://a.example/",
            **more}
