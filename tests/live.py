"""An app on a real port (uvicorn in a thread), for the tests a browser or a second server drives."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import uvicorn

from tests.waiting import wait_until
from tracker.app import create_app
from tracker.settings import Settings


@contextmanager
def serving(app: Any, port: int) -> Iterator[str]:
    """``app`` served on 127.0.0.1:``port`` (its lifespan run) until the block ends; yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started or not thread.is_alive(), timeout=30, message="uvicorn did not start")
    assert thread.is_alive(), "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def live_server(settings: Settings, port: int) -> AbstractContextManager[str]:
    """The tracker app of ``settings`` on ``port``."""
    return serving(create_app(settings), port)
