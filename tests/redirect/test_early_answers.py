"""Unknown short links answered by the HTTP protocol (``Redirector.answer_early``), on the
tracker app served as ``tracker serve`` serves it, with real Redis and chDB.

An unknown code, malformed or not, is answered without reaching ``Redirector.handle``
(no ASGI task: what keeps a flood of them cheap), with the bytes the handler would send;
a link created since the set of codes loaded still redirects at once; the per-address
limit still refuses only unknown codes; with Redis down the handler takes over.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from starlette.applications import Starlette
from starlette.testclient import TestClient

from loadtests.serve import free_port
from tests.live import served_as_tracker_serves
from tests.redirect.test_handler import DEST, put_link
from tests.redirect.test_redis_down import store_link
from tests.test_shutdown import _counter
from tests.waiting import wait_until
from tracker.app import create_app
from tracker.redirect.answers import NOT_FOUND_LIMIT
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse
from tracker.storage.embedded import EmbeddedRedis

BROWSER = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


class Served:
    """The app on a real port; ``handled``: the paths ``Redirector.handle`` was given."""

    def __init__(self, app: Starlette, base: str) -> None:
        self.app, self.base = app, base
        self.handled: list[str] = []
        redirect = app.state.services.redirect
        original = redirect.handle

        async def counting(scope: dict[str, Any], receive: Any, send: Any) -> None:
            self.handled.append(scope["path"])
            await original(scope, receive, send)

        redirect.handle = counting
        wait_until(lambda: redirect.links.codes.loaded, timeout=20, interval=0.02, message="no set of link codes")
        self.http = httpx.Client(base_url=base, timeout=10)

    def metric(self, status: str) -> float:
        return _counter(self.http.get("/metrics").text, f'tracker_redirects_total{{status="{status}"}}')


@pytest.fixture
def serve(settings: Settings, ch: ClickHouse) -> Iterator[Callable[..., Served]]:
    """Start the app (on ``settings``, or the ones given) once the test has stored its links."""
    stack: list[Any] = []

    def start(s: Settings = settings) -> Served:
        app, port = create_app(s), free_port()
        context = served_as_tracker_serves(s, app, port)
        stack.append(context)
        served = Served(app, context.__enter__())
        stack.append(served.http)
        return served

    yield start
    for item in reversed(stack):
        if isinstance(item, httpx.Client):
            item.close()
        else:
            item.__exit__(None, None, None)


def asgi_answer(settings: Settings, path: str, headers: dict[str, str]) -> Any:
    """What the handler answers for ``path`` when it is asked (no early answers: the ASGI road)."""
    with TestClient(create_app(settings), follow_redirects=False) as client:
        return client.get(path, headers=headers)


@pytest.mark.parametrize("path", ["/no.such.link", "/ab", "/" + "x" * 80, "/NoSuchCode1", "/nosuch_code-2"])
def test_unknown_codes_are_answered_before_the_handler_with_its_bytes(
    settings: Settings, serve: Callable[..., Served], path: str
) -> None:
    s = serve()
    before = s.metric("404")
    kinds = (("api", {"Accept": "*/*"}), ("browser", BROWSER))
    early = {kind: s.http.get(path, headers=headers) for kind, headers in kinds}
    head = s.http.head(path, headers={"Accept": "*/*"})
    assert s.metric("404") - before == 3  # counted as the handler counts them
    assert s.handled == []  # never reached the handler
    assert (head.status_code, head.content, head.headers["content-length"]) == (
        404, b"", early["api"].headers["content-length"])
    for kind, headers in kinds:
        resp, expected = early[kind], asgi_answer(settings, path, headers)
        assert resp.status_code == expected.status_code == 404
        assert resp.content == expected.content
        for name in ("content-type", "content-length", "cache-control", "content-security-policy"):
            assert resp.headers.get(name) == expected.headers.get(name)


def test_a_link_newer_than_the_set_of_codes_redirects_at_once(
    serve: Callable[..., Served], redis_client: redis.Redis, ch: ClickHouse
) -> None:
    store_link(ch, "known1", 41)  # in ClickHouse when the set loads
    put_link(redis_client, "known1", link_id=41)
    s = serve()
    put_link(redis_client, "fresh1", link_id=42)  # created since: in Redis only, as the registry writes it first
    for path in ("/known1", "/fresh1", "/fresh1"):
        resp = s.http.get(path)
        assert resp.status_code == 302, (path, resp.text)
        assert resp.headers["location"].startswith(DEST + "&click_id=")
    assert s.handled == ["/known1", "/fresh1", "/fresh1"]
    assert s.http.get("/fresh2").status_code == 404 and len(s.handled) == 3


def test_only_unknown_codes_are_refused_past_the_limit(
    serve: Callable[..., Served], redis_client: redis.Redis, ch: ClickHouse
) -> None:
    store_link(ch, "known1", 41)
    put_link(redis_client, "known1", link_id=41)
    s = serve()
    nat = {"X-Forwarded-For": "198.51.100.99"}  # behind the trusted proxy (127.0.0.1): one address
    before = s.metric("429")
    codes = [s.http.get(f"/nosuch{i:03d}", headers=nat).status_code for i in range(NOT_FOUND_LIMIT + 1)]
    assert codes == [404] * NOT_FOUND_LIMIT + [429]
    refused = s.http.get("/no.such.link", headers=nat)
    assert (refused.status_code, refused.headers["retry-after"]) == (429, "60")
    assert refused.json()["error"]["code"] == "rate_limited"
    assert s.http.get("/known1", headers=nat).status_code == 302  # a link always redirects
    assert s.http.get("/nosuch999", headers={"X-Forwarded-For": "198.51.100.100"}).status_code == 404
    assert s.metric("429") - before == 2
    assert s.handled == ["/known1"]


def test_with_redis_down_the_handler_answers(
    settings: Settings, serve: Callable[..., Served], ch: ClickHouse, own_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    settings = settings.with_(redis_url=own_redis.url, spool_dir=tmp_path / "spool")
    store_link(ch, "stored1", 43)  # in ClickHouse only: Redis lost it, this process never saw it
    s = serve(settings)
    assert s.http.get("/nosuch1").status_code == 404 and s.handled == []
    own_redis.stop()
    assert s.http.get("/nosuch2").status_code == 404  # the probe failed: the handler asked the set alone
    resp = s.http.get("/stored1")
    assert resp.status_code == 302, resp.text
    assert s.handled == ["/nosuch2", "/stored1"]
    assert s.http.get("/no.such.link").status_code == 404  # malformed: still answered early
    assert s.handled == ["/nosuch2", "/stored1"]
