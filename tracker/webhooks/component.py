"""Where the sender runs: a thread of ``tracker serve`` (embedded), or ``tracker webhooks``.

The sender gets its own thread and event loop, with its own Redis connections, so
deliveries (DNS, TLS, slow receivers) never run on the loop that answers redirects.
``tracker webhooks`` runs the same loop as a process (production); any number may run,
they share the work through the consumer group and the queue leases.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import threading

from tracker.money import payoutoutbox
from tracker.money.lifecycle import PAID_IDS_SQL
from tracker.registry.audit import AuditLog
from tracker.registry.cache import Cache
from tracker.settings import Settings
from tracker.storage import redis_client
from tracker.storage.clickhouse import ClickHouse, run_sync
from tracker.webhooks.endpoints import Endpoints
from tracker.webhooks.sender import PaidLookup, Sender

log = logging.getLogger("tracker.webhooks")
STOP_SECONDS = 30.0


def consumer_name(settings: Settings) -> str:
    """Stable per host: after a crash the restarted sender takes its own unacknowledged entries back at once."""
    return "embedded" if settings.embedded else socket.gethostname()


_PAID_SQL = f"SELECT count() AS n FROM ({PAID_IDS_SQL}) WHERE conversion_id = {{cid:String}}"


def paid_lookup(ch: ClickHouse) -> PaidLookup:
    """Whether a conversion's commission is in a paid payout, read from ClickHouse."""
    async def paid(brand_id: str, conversion_id: str) -> bool:
        rows = await run_sync(ch.query_dicts, _PAID_SQL, {"brand": brand_id, "cid": conversion_id})
        return bool(rows and int(rows[0]["n"]))

    return paid


async def run(settings: Settings, ch: ClickHouse, stop: asyncio.Event) -> None:
    assert settings.secret_key is not None
    r = redis_client.connect_async(settings)
    try:
        sender = Sender(settings, r, Endpoints(Cache(ch, r), settings.secret_key), AuditLog(ch),
                        consumer_name(settings), paid=paid_lookup(ch),
                        # At start and every MAINTAIN_SECONDS: payout events a crash left owed.
                        maintenance=lambda: payoutoutbox.recover(ch, r))
        await sender.run(stop)
    finally:
        await r.aclose()


class WebhookComponent:
    """The sender in a background thread of ``tracker serve``."""

    def __init__(self, settings: Settings, ch: ClickHouse) -> None:
        self.settings = settings
        self.ch = ch
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()

    async def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tracker-webhooks", daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._ready.set()
            await run(self.settings, self.ch, self._stop)

        try:
            asyncio.run(main())
        except Exception:
            log.exception("the webhook sender crashed")
        finally:
            self._ready.set()

    async def stop(self) -> None:
        import anyio.to_thread

        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            await anyio.to_thread.run_sync(self._thread.join, STOP_SECONDS)


def run_process(settings: Settings) -> int:
    """``tracker webhooks``: the sender until SIGTERM or SIGINT."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        ch = ClickHouse.connect(settings)
        try:
            await run(settings, ch, stop)
        finally:
            ch.close()

    asyncio.run(main())
    return 0
