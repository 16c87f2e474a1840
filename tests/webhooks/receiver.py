"""A webhook receiver for the tests: a real HTTP server on its own port that verifies every
delivery with the ``standardwebhooks`` package, the way a brand's server would."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from loadtests.serve import free_port


@dataclass
class Received:
    id: str
    type: str
    data: dict[str, Any]
    at: float
    timestamp: str


@dataclass
class Receiver:
    """``answer``: the status it answers (200, or 500 to make deliveries fail)."""

    secret: str = ""
    port: int = field(default_factory=free_port)
    answer: int = 200
    got: list[Received] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    attempts: int = 0
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/tracker"

    async def _hook(self, request: Request) -> PlainTextResponse:
        body = await request.body()
        with self._lock:
            self.attempts += 1
            if self.answer != 200:
                return PlainTextResponse("receiver is failing on purpose", status_code=self.answer)
            try:
                payload = Webhook(self.secret).verify(body, dict(request.headers))
            except WebhookVerificationError as exc:
                self.refused.append(str(exc))
                return PlainTextResponse("bad signature", status_code=400)
            self.got.append(Received(request.headers["webhook-id"], payload["type"], payload["data"], time.time(),
                                     payload["timestamp"]))
        return PlainTextResponse("ok")

    def start(self) -> Receiver:
        app = Starlette(routes=[Route("/hooks/tracker", self._hook, methods=["POST"])])
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                     lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            assert self._thread.is_alive() and time.monotonic() < deadline, "the receiver did not start"
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(20)
        self._server = None

    def ids(self) -> list[str]:
        with self._lock:
            return [r.id for r in self.got]

    def of(self, object_id: str) -> list[Received]:
        with self._lock:
            return [r for r in self.got if r.data.get("conversion_id", r.data.get("id")) == object_id]


def dumps(data: Any) -> str:
    return json.dumps(data)
