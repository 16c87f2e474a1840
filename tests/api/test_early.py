"""Answers the HTTP protocol writes itself (``api.early``), on a real uvicorn over real sockets.

A small app names its early answers by path; everything else reaches it as ASGI. What
must hold: an early answer reads exactly as uvicorn writes one (default headers, framing,
HEAD, ``connection: close``), a later answer holds its connection's place (pipelined
requests come after it), None hands the request to the app, a failing hook costs the
request nothing, and a client that leaves first costs the server nothing.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from loadtests.serve import free_port
from tests.live import served_as_tracker_serves
from tests.waiting import wait_until
from tracker.api.early import Early, EarlyAnswer, Later
from tracker.settings import Settings

NOW: EarlyAnswer = (404, ((b"content-type", b"text/plain"), (b"content-length", b"3")), b"now")
Connect = Callable[[int], socket.socket]
LATE: EarlyAnswer = (410, ((b"content-type", b"text/plain"), (b"content-length", b"4")), b"late")


class App:
    """``/now`` answered early at once, ``/later`` through ``later`` (the test settles it),
    ``/boom`` a hook that raises; any other path (and ``/later`` settled with None) by the app."""

    def __init__(self) -> None:
        self.pending: list[tuple[asyncio.AbstractEventLoop, Later]] = []
        self.served: list[str] = []
        self.lock = threading.Lock()

    def early_answer(self, scope: dict[str, Any], later: Later) -> EarlyAnswer | Early | None:
        path = scope["path"]
        if path == "/now":
            return NOW
        if path == "/boom":
            raise RuntimeError("boom")
        if path == "/later":
            with self.lock:
                self.pending.append((asyncio.get_running_loop(), later))
            return Early.LATER
        return None

    def settle(self, answer: EarlyAnswer | None) -> None:
        """Settle the oldest waiting request (from the test's thread, on the server's loop)."""
        wait_until(lambda: self.pending, timeout=10, message="no request is waiting for its answer")
        with self.lock:
            loop, later = self.pending.pop(0)
        loop.call_soon_threadsafe(later, answer)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        self.served.append(scope["path"])
        body = b"app " + scope["path"].encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
def served(settings: Settings) -> Iterator[tuple[App, int]]:
    app, port = App(), free_port()
    with served_as_tracker_serves(settings, app, port):
        yield app, port


@pytest.fixture
def connect() -> Iterator[Callable[[int], socket.socket]]:
    """Open connections to a port; all closed when the test ends."""
    opened: list[socket.socket] = []

    def open_one(port: int) -> socket.socket:
        opened.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        return opened[-1]

    yield open_one
    for sock in opened:
        sock.close()


def request(path: str, method: str = "GET", extra: str = "") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode()


def read_response(sock: socket.socket, buffer: bytearray, head: bool = False) -> tuple[bytes, dict[str, str], bytes]:
    """One response off the socket (``buffer`` keeps what belongs to the next): status line, headers, body."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection mid-response: {bytes(buffer)!r}"
        buffer += chunk
    raw, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    status, *lines = raw.split(b"\r\n")
    headers = {k.decode().lower(): v.decode() for k, _, v in (line.partition(b": ") for line in lines)}
    size = 0 if head else int(headers["content-length"])
    while len(rest) < size:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection mid-body"
        rest += chunk
    buffer[:] = rest[size:]
    return status, headers, rest[:size]


def closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except OSError:
        return True


def test_an_early_answer_reads_as_uvicorn_writes_one(served: tuple[App, int], connect: Connect) -> None:
    app, port = served
    sock, buffer = connect(port), bytearray()
    sock.sendall(request("/now"))
    status, headers, body = read_response(sock, buffer)
    assert status == b"HTTP/1.1 404 Not Found"
    assert (headers["content-type"], headers["content-length"], body) == ("text/plain", "3", b"now")
    assert headers["server"] == "uvicorn" and headers["date"].endswith(" GMT")  # uvicorn's default headers
    assert "connection" not in headers  # kept alive: the same connection goes on
    sock.sendall(request("/now", "HEAD"))
    status, headers, body = read_response(sock, buffer, head=True)
    assert (status, headers["content-length"], body) == (b"HTTP/1.1 404 Not Found", "3", b"")
    sock.sendall(request("/app"))
    assert read_response(sock, buffer)[2] == b"app /app"  # the HEAD answer carried no body to trip on
    assert app.served == ["/app"]

    sock.sendall(request("/now", extra="Connection: close\r\n"))
    status, headers, body = read_response(sock, buffer)
    assert (headers["connection"], body) == ("close", b"now")
    assert closed(sock)


def test_a_later_answer_keeps_its_place_and_none_hands_over(served: tuple[App, int], connect: Connect) -> None:
    app, port = served
    sock, buffer = connect(port), bytearray()
    # Three requests in one write: the two behind the waiting one queue behind it.
    sock.sendall(request("/later") + request("/app") + request("/later"))
    app.settle(LATE)
    assert read_response(sock, buffer)[2] == b"late"
    assert read_response(sock, buffer)[2] == b"app /app"
    app.settle(None)  # not mine after all: the app answers
    assert read_response(sock, buffer)[2] == b"app /later"
    assert app.served == ["/app", "/later"]


def test_a_failing_hook_hands_the_request_to_the_app(
    served: tuple[App, int], connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    app, port = served
    sock, buffer = connect(port), bytearray()
    with caplog.at_level(logging.ERROR, logger="tracker.api.early"):
        sock.sendall(request("/boom"))
        assert read_response(sock, buffer)[2] == b"app /boom"
    assert "early answer failed" in caplog.text and app.served == ["/boom"]


def test_a_client_that_leaves_before_its_answer_costs_nothing(served: tuple[App, int], connect: Connect) -> None:
    app, port = served
    gone = connect(port)
    gone.sendall(request("/later"))
    wait_until(lambda: app.pending, timeout=10, message="the request did not arrive")
    gone.close()
    app.settle(LATE)  # written to nobody: dropped
    sock, buffer = connect(port), bytearray()
    sock.sendall(request("/now"))
    assert read_response(sock, buffer)[2] == b"now"
    assert app.served == []
