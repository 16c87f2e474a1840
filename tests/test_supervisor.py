"""Embedded ``tracker serve --workers 2`` end to end, as a real process tree.

The main process owns Valkey, chDB and ingest; two uvicorn workers serve HTTP in
production mode through the main process's ClickHouse endpoint. Each request here
is pinned to a known worker (a keep-alive connection, mapped to the worker that
accepted it through /proc), so "written by one worker, seen by the other" is what
is tested, not what the kernel's balancing happened to do.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import json
import os
import re
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from loadtests.serve import EmbeddedServe, ServeError
from tests.ingest_helpers import audit_url
from tests.test_shutdown import Traffic, stored
from tests.waiting import wait_until

pytestmark = pytest.mark.slow(seconds=25)

BROWSER = {"User-Agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148 Instagram"}


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def workers_of(serve: EmbeddedServe) -> list[int]:
    assert serve.proc is not None
    return sorted(p for p in _children(serve.proc.pid) if "multiprocessing.spawn" in _cmdline(p) and _alive(p))


def tree_of(serve: EmbeddedServe) -> list[int]:
    """The main process's children (workers, Valkey, multiprocessing's resource tracker)."""
    assert serve.proc is not None
    return _children(serve.proc.pid)


def _nice(stat_path: Path) -> int:
    raw = stat_path.read_text()
    return int(raw[raw.rindex(")") + 2:].split()[16])


def _accepting_worker(client_port: int, server_port: int, workers: list[int]) -> int | None:
    """The worker holding the server side of our connection (read from /proc)."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if int(f[1].split(":")[1], 16) == server_port and int(f[2].split(":")[1], 16) == client_port:
            inode = f[9]
    if inode is None:
        return None
    for pid in workers:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                        return pid
    return None


# Keep-alive connections the tests pin to a worker may idle through a long wait on a loaded
# machine (a report that takes 30 s to fill); the server's defaults would close them under it:
# keep-alive 5 s, and the header deadline (10 s, counted from the previous response).
ENV = {"TRACKER_INGEST_BATCH_SECONDS": "0.2", "TRACKER_KEEPALIVE_SECONDS": "300",
       "TRACKER_HEADER_TIMEOUT_SECONDS": "300"}


class Pinned:
    """A keep-alive connection, and the worker process that serves it."""

    opened: list[Pinned] = []  # closed by the serve fixture, whatever the test did

    def __init__(self, serve: EmbeddedServe) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", serve.port, timeout=30)
        Pinned.opened.append(self)
        try:
            self.call("GET", "/healthz")
        except BaseException:
            self.conn.close()
            raise
        assert self.conn.sock is not None
        self.worker = _accepting_worker(self.conn.sock.getsockname()[1], serve.port, workers_of(serve))

    def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
             raw: bytes | None = None) -> tuple[int, dict[str, str], Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        self.conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        r = self.conn.getresponse()
        text = r.read()
        head = {k.lower(): v for k, v in r.getheaders()}
        parsed = json.loads(text) if head.get("content-type", "").startswith("application/json") else text.decode()
        return r.status, head, parsed

    def close(self) -> None:
        self.conn.close()


def one_per_worker(serve: EmbeddedServe, timeout: float = 60.0) -> tuple[Pinned, Pinned]:
    """Two connections served by different workers.

    /readyz answers once one worker serves; on a loaded machine the other may still be starting
    (a spawned interpreter importing the app), so this tries until a deadline, not a count.
    """
    found: dict[int, Pinned] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        p = Pinned(serve)
        if p.worker is not None and p.worker not in found:
            found[p.worker] = p
            if len(found) == 2:
                a, b = found.values()
                return a, b
        else:
            p.close()
    for p in found.values():
        p.close()
    raise AssertionError(f"every connection went to the same worker: {list(found)}")


def click_id(location: str) -> str:
    return parse_qs(urlsplit(location).query)["click_id"][0]


def _metric(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} ([\d.e+]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[EmbeddedServe]:
    # Migrated first with the audit of inserted rows, so "once" counts inserts, not rows after merges.
    audit_url(f"chdb://{(tmp_path / 'data' / 'clickhouse').resolve()}")
    server = EmbeddedServe(tmp_path / "data", workers=2, env=ENV)
    try:
        yield server.start(timeout=120)
    finally:
        while Pinned.opened:
            Pinned.opened.pop().close()
        pids = tree_of(server) if server.proc is not None and server.proc.poll() is None else []
        server.stop(signal.SIGKILL)
        for pid in pids:  # whatever the test did, leave nothing running
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_two_workers_share_the_registry_the_streams_and_the_reports(serve: EmbeddedServe) -> None:
    wait_until(lambda: httpx.get(f"{serve.base}/readyz", timeout=10).status_code == 200, timeout=60,
               message="never ready")
    assert serve.output().count("generated an admin token") == 1
    assert len(workers_of(serve)) == 2
    # Followers first: chDB's threads in the main process give way; the workers, Valkey and the
    # main thread (which starts workers, and they inherit its value) keep the normal priority.
    assert serve.proc is not None
    main = serve.proc.pid
    comm = Path(f"/proc/{main}/comm").read_text().strip()
    engine = [t for t in Path(f"/proc/{main}/task").iterdir() if (t / "comm").read_text().strip() != comm]
    assert engine and all(_nice(t / "stat") >= 10 or _nice(t / "stat") < 0 for t in engine)
    assert _nice(Path(f"/proc/{main}/task/{main}/stat")) == 0
    assert [_nice(Path(f"/proc/{pid}/stat")) for pid in tree_of(serve)] == [0] * len(tree_of(serve))
    a, b = one_per_worker(serve)
    admin = {"Authorization": f"Bearer {serve.admin_token}"}

    # Registry writes on worker a, reads on worker b (Redis cache and ClickHouse through the endpoint).
    status, _, brand = a.call("POST", "/api/v1/brands", {"name": "Acme", "currency": "USD"}, admin)
    assert status == 201, brand
    auth = {"Authorization": f"Bearer {brand['api_key']}"}
    _, _, campaign = a.call("POST", "/api/v1/campaigns", {"name": "Spring", "commission": {
        "type": "percent", "value": "10"}}, auth)
    _, _, influencer = a.call("POST", "/api/v1/influencers", {"name": "Ana"}, auth)
    status, _, link = a.call("POST", "/api/v1/links", {
        "campaign_id": campaign["id"], "influencer_id": influencer["id"],
        "destination_url": "https://shop.example/p?x=1"}, auth)
    assert status == 201, link
    status, _, listed = b.call("GET", f"/api/v1/links?campaign_id={campaign['id']}", headers=auth)
    assert status == 200
    assert [item["code"] for item in listed["items"]] == [link["code"]]
    status, _, store = b.call("POST", "/api/v1/stores", {"name": "Shop"}, auth)
    assert status == 201, store

    # Redirects on both workers; every click id that got a 302 is kept.
    clicks: list[str] = []

    def redirect(pinned: Pinned) -> str:
        status, head, _ = pinned.call("GET", f"/{link['code']}?n={len(clicks)}", headers=BROWSER)
        assert status == 302
        clicks.append(click_id(head["location"]))
        return head["location"]

    for pinned in (a, b):
        for _ in range(20):
            redirect(pinned)
    assert len(set(clicks)) == 40

    # A change made through b reaches a's redirects (link cache, at most 5 s).
    status, _, _ = b.call("PATCH", f"/api/v1/links/{link['code']}",
                          {"destination_url": "https://shop.example/new"}, auth)
    assert status == 200
    wait_until(lambda: redirect(a).startswith("https://shop.example/new"), timeout=10, interval=0.2,
               message="worker a kept the old destination")

    # A postback on b, attributed to a click a answered.
    body = json.dumps({"order_id": "o-1", "amount": "80.00", "currency": "USD", "click_id": clicks[0]}).encode()
    t = int(time.time())
    sig = hmac.new(store["secret"].encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    status, _, conv = b.call("POST", "/api/v1/conversions", raw=body,
                             headers={"X-Store-Id": store["id"], "X-Signature": f"t={t},v1={sig}"})
    assert status == 202, conv
    assert (conv["attribution"], conv["commission"]) == ("click", "8.00")

    # The main process's ingest brings both into ClickHouse; a's report shows them.
    today = datetime.now(UTC).date().isoformat()

    def report(via: Pinned = a) -> dict[str, Any] | None:
        status, _, rep = via.call("GET", f"/api/v1/reports?from={today}&to={today}&group_by=influencer",
                                  headers=auth)
        assert status == 200, rep
        return rep if rep["totals"]["clicks"] == len(clicks) and rep["totals"]["conversions"] == 1 else None

    rep = wait_until(report, timeout=30, interval=0.3, message="the clicks and the order never reached the report")
    assert rep["totals"]["revenue"] == "80.00"
    assert rep["rows"][0]["influencer_name"] == "Ana"

    # One scrape sees every process: both workers' redirects and the main process's ingest.
    metrics = b.call("GET", "/metrics")[2]
    assert _metric(metrics, 'tracker_redirects_total{status="302"}') == len(clicks)
    assert _metric(metrics, 'tracker_ingest_rows_total{stream="clicks"}') >= len(clicks)
    status, _, ready = b.call("GET", "/readyz")
    assert (status, ready["checks"]["clickhouse"]) == (200, "ok")

    # A worker that dies is replaced; the service goes on.
    assert a.worker is not None
    os.kill(a.worker, signal.SIGKILL)
    wait_until(lambda: len(workers_of(serve)) == 2 and a.worker not in workers_of(serve), timeout=60,
               message="the killed worker was not replaced")
    a.close()

    def fresh_redirect() -> str:
        pinned = Pinned(serve)
        try:
            return redirect(pinned)
        finally:
            pinned.close()

    wait_until(fresh_redirect, timeout=30, ignoring=(OSError, http.client.HTTPException))
    wait_until(lambda: report(b), timeout=30, interval=0.3, message="the last clicks never reached the report")

    # SIGTERM: workers first, then ingest, then the endpoint; nothing is left running.
    b.close()
    tree = tree_of(serve)
    assert serve.stop(signal.SIGTERM) == 0
    # multiprocessing's resource tracker leaves when its pipe closes, a moment after the main process.
    wait_until(lambda: not any(_alive(p) for p in tree), timeout=10,
               message=lambda: f"left running: {[(p, _cmdline(p)) for p in tree if _alive(p)]}")
    log = serve.output()
    workers_done = max(m.end() for m in re.finditer(r"Finished server process", log))
    ingest_done = re.search(r"ingest worker \S+ stopped", log)
    assert ingest_done is not None
    assert workers_done < ingest_done.start() < log.index("ClickHouse HTTP endpoint stopped")

    # Every click that got a 302 was inserted into ClickHouse once.
    held = stored(serve.data_dir)["clicks"]
    assert {c: held.get(c) for c in clicks} == dict.fromkeys(clicks, 1)


def test_kill_9_of_the_main_process_leaves_nothing_running_and_the_next_start_recovers(
    serve: EmbeddedServe, tmp_path: Path
) -> None:
    from loadtests.serve import seed

    seeded = seed(serve.base, serve.admin_token)
    code = seeded.links[0]["code"]
    tree = tree_of(serve)
    assert len(workers_of(serve)) == 2
    with Traffic(serve.base, code) as traffic:
        traffic.wait_for(300)
        assert serve.proc is not None
        serve.proc.kill()  # kill -9 of the main process, under traffic
        serve.proc.wait(10)
        # The kernel's parent-death signal stops every worker, and Valkey; the port is free again.
        wait_until(lambda: not any(_alive(p) for p in tree), timeout=30,
                   message=lambda: f"left running: {[(p, _cmdline(p)) for p in tree if _alive(p)]}")
    answered = [cid for status, cid in traffic.answers if status == 302 and cid]
    assert len(answered) >= 300
    assert {status for status, _ in traffic.answers} == {302}

    again = EmbeddedServe(serve.data_dir, port=serve.port, workers=2, env=ENV)
    again.start(timeout=120)
    api = None
    try:
        assert "generated an admin token" not in again.output()
        api = Pinned(again)
        auth = {"Authorization": f"Bearer {seeded.brand['api_key']}"}
        today = datetime.now(UTC).date().isoformat()

        def all_counted() -> bool:
            status, _, rep = api.call("GET", f"/api/v1/reports?from={today}&to={today}", headers=auth)
            return status == 200 and rep["totals"]["clicks"] >= len(answered)

        wait_until(all_counted, timeout=90, interval=0.5, message="the clicks of before the crash never all arrived")
    finally:
        if api is not None:
            api.close()
        assert again.stop(signal.SIGTERM) == 0
    held = stored(again.data_dir)["clicks"]
    missing = [c for c in answered if c not in held]
    twice = {c: n for c, n in held.items() if n != 1}
    assert not missing and not twice, (len(missing), twice)


def test_one_worker_stays_one_process(tmp_path: Path) -> None:
    server = EmbeddedServe(tmp_path / "data").start(timeout=120)
    try:
        children = tree_of(server)
        assert [_cmdline(p) for p in children if "valkey" not in _cmdline(p)] == []
        assert httpx.get(f"{server.base}/readyz", timeout=10).json()["checks"]["ingest"]  # in this process
    finally:
        assert server.stop(signal.SIGTERM) == 0


def test_a_port_in_use_stops_the_start_with_exit_3(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = EmbeddedServe(tmp_path / "data", port=taken.getsockname()[1], workers=2)
        with pytest.raises(ServeError, match="exited with 3"):
            server.start(timeout=120)
    assert "address already in use" in server.output().lower()
    assert not any(_alive(p) for p in _valkey_pids(server))


def _valkey_pids(server: EmbeddedServe) -> list[int]:
    pidfile = server.data_dir / "redis" / "valkey.pid"
    return [int(pidfile.read_text())] if pidfile.exists() else []
