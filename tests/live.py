"""An app on a real port (uvicorn in a thread), for the tests a browser or a second server drives.

The tracker app is served with the HTTP protocol ``tracker serve`` runs
(``api.connections.GuardedHttpToolsProtocol``: its bounds and its early answers), so
what a browser gets here is what a follower gets."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import uvicorn

from tests.waiting import wait_until
from tracker.api.connections import GuardedHttpToolsProtocol
from tracker.app import create_app
from tracker.settings import Settings


@contextmanager
def serving(app: Any, port: int, **options: Any) -> Iterator[str]:
    """``app`` served on 127.0.0.1:``port`` (its lifespan run) until the block ends; yields its base URL.
    ``options``: more of ``uvicorn.Config``'s."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", **options)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started or not thread.is_alive(), timeout=30, message="uvicorn did not start")
    assert thread.is_alive(), "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def served_as_tracker_serves(settings: Settings, app: Any, port: int) -> AbstractContextManager[str]:
    """``app`` on ``port`` over ``tracker serve``'s HTTP protocol, with its uvicorn options."""
    GuardedHttpToolsProtocol.configure(settings)
    return serving(app, port, http=GuardedHttpToolsProtocol, proxy_headers=False)


def live_server(settings: Settings, port: int) -> AbstractContextManager[str]:
    """The tracker app of ``settings`` on ``port``, served as ``tracker serve`` serves it."""
    return served_as_tracker_serves(settings, create_app(settings), port)
