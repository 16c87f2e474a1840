"""Webhook tests: an app that may post to loopback, a receiver, and the sender in a thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.registry.helpers import ADMIN
from tests.webhooks.receiver import Receiver
from tracker.app import create_app
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse
from tracker.webhooks import component


@pytest.fixture
def wh_settings(settings: Settings) -> Settings:
    # Loopback receivers, and retries in tenths of a second instead of minutes.
    return settings.with_(webhooks_allow_private=True, webhooks_retry_seconds=(0.2, 0.4, 0.6),
                          webhooks_give_up_seconds=3.0, webhooks_timeout_seconds=2.0)


@pytest.fixture
def client(ch: ClickHouse, wh_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(wh_settings)) as c:
        yield c


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    try:
        yield r
    finally:
        r.stop()


class SenderThread:
    """``tracker.webhooks.component.run`` in a thread with its own event loop, as ``tracker serve`` runs it."""

    def __init__(self, settings: Settings, ch: ClickHouse) -> None:
        self.settings, self.ch = settings, ch
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop_event: asyncio.Event | None = None
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self.loop, self.stop_event = asyncio.get_running_loop(), asyncio.Event()
            self.ready.set()
            await component.run(self.settings, self.ch, self.stop_event)

        asyncio.run(main())

    def start(self) -> SenderThread:
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def stop(self) -> None:
        if self.loop is not None and self.stop_event is not None:
            self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(30)
        assert not self.thread.is_alive()


@pytest.fixture
def sender(ch: ClickHouse, wh_settings: Settings) -> Iterator[SenderThread]:
    s = SenderThread(wh_settings, ch).start()
    try:
        yield s
    finally:
        s.stop()


def new_brand(client: TestClient) -> dict[str, Any]:
    r = client.post("/api/v1/brands", json={"name": "Acme", "currency": "USD"}, headers=ADMIN)
    assert r.status_code == 201, r.text
    brand: dict[str, Any] = r.json()
    brand["headers"] = {"Authorization": f"Bearer {brand['api_key']}"}
    return brand
