"""Slow and idle connections are bounded (issue 13, finding 5): `tracker serve` as a subprocess.

A connection must finish a request's headers within TRACKER_HEADER_TIMEOUT_SECONDS, an
idle keep-alive connection is closed after TRACKER_KEEPALIVE_SECONDS, oversized headers
get a 431, and a slowloris of 1,000 connections against a server with 512 descriptors
neither starves followers of their redirects nor outlives the attack.
"""

from __future__ import annotations

import errno
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from loadtests.serve import EmbeddedServe, Seed, seed
from tests.test_shutdown import _counter
from tests.waiting import wait_until

pytestmark = pytest.mark.slow(seconds=15)

HEADER_TIMEOUT = 2.0


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(65536, socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setblocking(False)
    return sock


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[EmbeddedServe, Seed]]:
    serve = EmbeddedServe(
        tmp_path / "data",
        env={"TRACKER_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT), "TRACKER_KEEPALIVE_SECONDS": "1"},
        max_files=512,
    ).start()
    try:
        yield serve, seed(serve.base, serve.admin_token)
    finally:
        serve.stop()


def test_headers_must_come_in_time_and_idle_connections_close(served: tuple[EmbeddedServe, Seed]) -> None:
    serve, s = served
    silent = connect(serve.port)  # sends nothing at all
    trickle = connect(serve.port)  # sends its headers a line at a time, forever
    trickle.send(b"GET /healthz HTTP/1.1\r\n")
    keepalive = connect(serve.port)  # one request, then idle
    keepalive.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    opened = time.monotonic()
    wait_until(lambda: trickle.send(b"X-Slow: 1\r\n") > 0 and closed_by_server(trickle), timeout=HEADER_TIMEOUT + 10,
               message="the trickling connection was not closed")
    assert time.monotonic() - opened >= HEADER_TIMEOUT - 0.5  # closed by the deadline, not at once
    wait_until(lambda: closed_by_server(silent), timeout=10, message="the silent connection was not closed")
    wait_until(lambda: closed_by_server(keepalive), timeout=10, message="the idle keep-alive connection was not closed")

    big = socket.create_connection(("127.0.0.1", serve.port), timeout=10)
    big.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"a" * 70_000 + b"\r\n\r\n")
    answer = big.recv(4096)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
    for sock in (silent, trickle, keepalive, big):
        sock.close()
    assert httpx.get(f"{serve.base}/{s.links[0]['code']}", timeout=10).status_code == 302
    metrics = httpx.get(f"{serve.base}/metrics", timeout=10).text
    assert 'tracker_http_connections_closed_total{reason="header_timeout"}' in metrics
    assert 'tracker_http_connections_closed_total{reason="headers_too_large"} 1.0' in metrics


class Slowloris:
    """``n`` connections that send a request line and then a header line now and then, never
    finishing; a connection the server closes is opened again."""

    def __init__(self, port: int, n: int) -> None:
        self.port, self.n = port, n
        self.socks: list[socket.socket] = []
        self.opened = self.closed = self.refused = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _open(self) -> socket.socket | None:
        try:
            sock = connect(self.port)
            sock.send(b"GET /slow HTTP/1.1\r\nHost: x\r\n")
        except OSError:
            self.refused += 1
            return None
        self.opened += 1
        return sock

    def _run(self) -> None:
        while not self.stop.is_set():
            while len(self.socks) < self.n and not self.stop.is_set():
                sock = self._open()
                if sock is None:
                    break
                self.socks.append(sock)
            alive = []
            for sock in self.socks:
                if closed_by_server(sock):
                    self.closed += 1
                    sock.close()
                    continue
                try:
                    sock.send(b"X-a: b\r\n")
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                        self.closed += 1
                        sock.close()
                        continue
                alive.append(sock)
            self.socks = alive
            self.stop.wait(0.5)

    def __enter__(self) -> Slowloris:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)
        for sock in self.socks:
            sock.close()


def test_a_slowloris_of_1000_connections_does_not_starve_followers(served: tuple[EmbeddedServe, Seed]) -> None:
    serve, s = served
    code = s.links[0]["code"]
    baseline = serve.open_files()
    with Slowloris(serve.port, 1000) as attack:
        wait_until(lambda: attack.opened >= 1000, timeout=60, message="1,000 slow connections were not opened")
        for _ in range(50):  # followers, each on a new connection, while the attack goes on
            resp = httpx.get(f"{serve.base}/{code}", timeout=10)
            assert resp.status_code == 302
        assert serve.open_files() < 512
        assert attack.closed > 0
        wait_until(lambda: "connection limit reached" in serve.output(), timeout=30,
                   message="no connection-limit log line")
    # The attack is over: its connections are gone and the server is as it was.
    wait_until(lambda: serve.open_files() < baseline + 20, timeout=30, message="the slow connections were not closed")
    assert httpx.get(f"{serve.base}/{code}", timeout=10).status_code == 302
    metrics = httpx.get(f"{serve.base}/metrics", timeout=10).text
    assert _counter(metrics, "tracker_http_connections") < 10
    assert 'tracker_http_connections_closed_total{reason="limit_waiting"}' in metrics
