from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from tests.conversions.world import World, make_world
from tracker.app import create_app
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse


@pytest.fixture
def app_client(ch: ClickHouse, settings: Settings) -> Iterator[TestClient]:
    # Webhook endpoints on loopback are allowed: the payout events are checked in the outbox.
    with TestClient(create_app(settings.with_(webhooks_allow_private=True))) as client:
        yield client


@pytest.fixture
def world(app_client: TestClient, settings: Settings) -> World:
    return make_world(app_client, settings)
