"""Fixtures of the registry tests: the registry over the test Redis and chDB, and the app."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.registry.helpers import new_brand, new_campaign, new_influencer
from tracker.app import create_app
from tracker.registry import Registry
from tracker.settings import Settings
from tracker.storage import redis_client as rc
from tracker.storage.clickhouse import ClickHouse


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def reg(settings: Settings, ch: ClickHouse) -> AsyncIterator[Registry]:
    client = rc.connect_async(settings)
    try:
        yield Registry(settings, ch, client)
    finally:
        await client.aclose()


@pytest.fixture
def client(ch: ClickHouse, settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture
def world(client: TestClient) -> dict[str, Any]:
    """A brand with a campaign limited to shop.example and an influencer, made through the API."""
    brand = new_brand(client)
    campaign = new_campaign(client, brand, allowed_domains=["shop.example"])
    influencer = new_influencer(client, brand)
    return {"brand": brand, "h": brand["headers"], "campaign": campaign, "influencer": influencer}
