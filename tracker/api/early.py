"""Answers the HTTP protocol writes itself, before uvicorn starts an ASGI task for a request.

A request costs uvicorn a task, the app's call and two ASGI messages (each a write),
several times what deciding a 404 costs. The cheapest answers need none of that: before it
starts the task, the protocol (``EarlyAnswering``, the base of ``connections``'s
protocol) asks the app's ``early_answer(scope, later)`` for an answer it can write itself,
``(status, headers, body)``:

- an answer: written by the protocol;
- None: the app answers, as it always does;
- ``Early.LATER``: the hook calls ``later`` once, after it has returned (the answer, or
  None for the app), e.g. from a batched storage read's reply.

The redirect answers unknown short links so (``redirect.handler.Redirector.answer_early``),
which is what keeps a flood of unknown codes from slowing real clicks.

A request waiting for its answer holds its connection's cycle as one the app serves:
pipelined requests queue behind it, and a graceful shutdown closes the connection once
it is answered. The answer goes out as uvicorn would write it (its default headers,
``connection: close`` when the request does not keep the connection alive, no body for
HEAD) and completes the request as uvicorn's own ``send`` does (keep-alive timer,
pipelined requests started). Answers decided in one turn of the loop are written together
at its end (``_write_due``).

It relies on uvicorn's ``HttpToolsProtocol._start_asgi_task``, which uvicorn calls for
every request, pipelined ones included, since 0.45 (the version ``pyproject.toml``
requires); a test fails if a release stops calling it (the app would answer everything).
"""

from __future__ import annotations

import enum
import functools
import logging
import weakref
from asyncio import AbstractEventLoop
from collections.abc import Callable, Sequence
from http import HTTPStatus
from typing import Any

from starlette.types import ASGIApp, Scope
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

log = logging.getLogger("tracker.api.early")

# status, headers (content-length included), body
EarlyAnswer = tuple[int, Sequence[tuple[bytes, bytes]], bytes]
# Called once, later, with the answer, or None for the app to answer after all.
Later = Callable[[EarlyAnswer | None], None]


class Early(enum.Enum):
    LATER = "later"  # what ``early_answer`` returns when it will call its ``Later``


# ``early_answer(scope, later)``: an answer now, None (the app answers), or ``Early.LATER``.
EarlyHook = Callable[[Scope, Later], EarlyAnswer | Early | None]

# Per loop: the connections whose answers are due at the end of the loop's turn.
_due: weakref.WeakKeyDictionary[AbstractEventLoop, list[tuple[EarlyAnswering, EarlyAnswer | None]]] = (
    weakref.WeakKeyDictionary()
)


@functools.cache
def _status_line(status: int) -> bytes:
    return b"HTTP/1.1 %d %s\r\n" % (status, HTTPStatus(status).phrase.encode("ascii"))


class EarlyAnswering(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._early: tuple[RequestResponseCycle, ASGIApp] | None = None  # the request waiting for its answer

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGIApp) -> None:  # type: ignore[override]
        """uvicorn calls this for every request it hands to the app, in order."""
        hook: EarlyHook | None = getattr(app, "early_answer", None)
        if hook is not None:
            try:
                answer = hook(cycle.scope, self._answer_later)  # type: ignore[arg-type]
            except Exception:
                log.exception("early answer failed; the app answers")
                answer = None
            if answer is not None:
                # One request at a time waits for its answer: the next ones queue behind its cycle.
                self._early = (cycle, app)
                if answer is not Early.LATER:
                    self._answer_later(answer)
                return
        HttpToolsProtocol._start_asgi_task(self, cycle, app)  # type: ignore[arg-type]

    def _answer_later(self, answer: EarlyAnswer | None) -> None:
        """Queue the answer: the loop's turn ends by writing every answer queued in it."""
        due = _due.get(self.loop)
        if due is None:
            due = _due[self.loop] = []
            self.loop.call_soon(_write_due, self.loop)
        due.append((self, answer))

    def _write_answer(self, answer: EarlyAnswer | None) -> None:
        pending, self._early = self._early, None
        if pending is None:
            return
        cycle, app = pending
        if cycle.disconnected:
            return
        if answer is None:
            HttpToolsProtocol._start_asgi_task(self, cycle, app)  # type: ignore[arg-type]
            return
        status, headers, body = answer
        parts = [_status_line(status)]
        for name, value in (*cycle.default_headers, *headers):
            parts += (name, b": ", value, b"\r\n")
        if not cycle.keep_alive:
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        if cycle.scope["method"] != "HEAD":
            parts.append(body)
        cycle.response_started = cycle.response_complete = True
        self.transport.write(b"".join(parts))
        cycle.message_event.set()
        if not cycle.keep_alive:
            self.transport.close()
        cycle.on_response()


def _write_due(loop: AbstractEventLoop) -> None:
    """Write a turn's early answers together. Measured under a flood of 1,000 lone requests a
    second: real clicks lose a few percent less than with each answer written as soon as it
    is decided (the flood's clients are woken in one burst a turn, not one by one)."""
    for conn, answer in _due.pop(loop, ()):
        conn._write_answer(answer)
