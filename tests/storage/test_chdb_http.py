"""The ClickHouse HTTP endpoint over chDB (``tracker.storage.chdb_http``), in this process.

It serves the test process's own chDB engine (one per process) on loopback. The
tracker's own client (``storage.clickhouse``, clickhouse-connect over HTTP) talks
to it exactly as the workers of ``tracker serve --workers N`` do; raw HTTP checks
what a client could get wrong: credentials, refused requests, limits.
"""

from __future__ import annotations

import base64
import http.client
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from tests.waiting import wait_until
from tracker.core.errors import QueryError, StorageUnavailable
from tracker.settings import Settings
from tracker.storage.chdb_http import ChdbEndpoint
from tracker.storage.clickhouse import ClickHouse

PASSWORD = "s3cret-for-tests"


@pytest.fixture
def endpoint(chdb_dir: Path, tmp_path: Path) -> Iterator[ChdbEndpoint]:
    ep = ChdbEndpoint(chdb_dir, password=PASSWORD, max_queries=2, idle_seconds=2, busy_seconds=0.5,
                      max_body_bytes=1 << 20, max_query_bytes=64 << 10, tmp_dir=tmp_path / "inserts")
    ep.start()
    try:
        yield ep
    finally:
        ep.stop()


@pytest.fixture
def over_http(endpoint: ChdbEndpoint, settings: Settings) -> Iterator[ClickHouse]:
    """The tracker's ClickHouse client on a fresh database, through the endpoint."""
    client = ClickHouse.connect(settings.with_(clickhouse_url=endpoint.url(settings.clickhouse_database)))
    try:
        yield client
    finally:
        client.command(f"DROP DATABASE IF EXISTS `{client.database}`")
        client.close()


def _post(endpoint: ChdbEndpoint, sql: str, params: dict[str, str] | None = None, **kw: Any) -> httpx.Response:
    kw.setdefault("auth", ("tracker", PASSWORD))
    return httpx.post(f"http://127.0.0.1:{endpoint.port}/", params=params or {}, content=sql.encode(), **kw)


def test_the_tracker_client_round_trips_through_the_endpoint(over_http: ClickHouse, endpoint: ChdbEndpoint) -> None:
    ch = over_http
    ch.command(
        "CREATE TABLE t (id UInt64, name String, amount Decimal(18, 4), at DateTime64(3, 'UTC')) "
        "ENGINE = MergeTree ORDER BY id"
    )
    at = datetime(2026, 12, 4, 10, 30, tzinfo=UTC)
    ch.insert("t", [[1, "a'); DROP TABLE t; --", Decimal("49.9000"), at], [2, "b", Decimal("0.0100"), at]],
              ["id", "name", "amount", "at"])
    # Bound server-side: the quote in the value is data, not SQL.
    rows = ch.query("SELECT id, amount FROM t WHERE name = {name:String}", {"name": "a'); DROP TABLE t; --"})
    assert rows == [(1, Decimal("49.9000"))]
    assert ch.command("SELECT count() FROM t") == 2
    assert ch.query_dicts("SELECT name FROM t WHERE id = {id:UInt64}", {"id": 2}) == [{"name": "b"}]
    assert ch.query("SELECT id FROM t WHERE id > 5") == []
    assert list((endpoint.tmp_dir or Path("/nonexistent")).iterdir()) == []  # insert files are removed


def test_a_retried_insert_with_the_same_token_lands_once(over_http: ClickHouse) -> None:
    ch = over_http
    ch.command("CREATE TABLE d (id UInt64) ENGINE = MergeTree ORDER BY id "
               "SETTINGS non_replicated_deduplication_window = 100")
    for _ in range(2):
        ch.insert("d", [[1], [2], [3]], ["id"], dedup_token="batch-1")
    ch.insert("d", [[1], [2], [3]], ["id"], dedup_token="batch-2")
    assert ch.command("SELECT count() FROM d") == 6


def test_settings_apply_to_their_statement_only(over_http: ClickHouse, endpoint: ChdbEndpoint) -> None:
    ch = over_http
    default = ch.query("SELECT toString(getSetting('max_execution_time'))")
    for _ in range(2 * endpoint.max_queries):  # every handle serves the setting at least once
        set_ = ch.query("SELECT toString(getSetting('max_execution_time'))", settings={"max_execution_time": 17})
        assert set_ == [("17",)]
    # None of them keeps it.
    for _ in range(2 * endpoint.max_queries):
        assert ch.query("SELECT toString(getSetting('max_execution_time'))") == default != [("17",)]


def test_parameters_past_64_kib_bind_as_on_a_clickhouse_server(endpoint: ChdbEndpoint) -> None:
    """clickhouse-connect binds parameters in the URL; a ClickHouse server takes URIs up to 1 MiB."""
    ids = "[" + ",".join(f"'ord_{n:012d}'" for n in range(8000)) + "]"  # ~150 KiB
    auth = "Basic " + base64.b64encode(f"tracker:{PASSWORD}".encode()).decode()

    def get(param: str) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", endpoint.port, timeout=10)
        try:
            path = "/?" + urlencode({"query": "SELECT length({ids:Array(String)})", "param_ids": param})
            conn.request("GET", path, headers={"Authorization": auth})
            r = conn.getresponse()
            return r.status, r.read().decode().strip()
        finally:
            conn.close()

    assert get(ids) == (200, "8000")
    assert get("['" + "y" * (1 << 20) + "']")[0] == 414


def test_a_command_tells_a_result_from_none(over_http: ClickHouse) -> None:
    ch = over_http
    ch.command("CREATE TABLE e (id UInt64) ENGINE = MergeTree ORDER BY id")
    assert ch.command("SELECT count() FROM e") == 0
    assert not isinstance(ch.command("INSERT INTO e VALUES (1)"), (int, str))  # a summary, not a value


def test_engine_errors_keep_their_code(over_http: ClickHouse, endpoint: ChdbEndpoint) -> None:
    with pytest.raises(QueryError, match="UNKNOWN_TABLE"):
        over_http.query("SELECT * FROM no_such_table")
    r = _post(endpoint, "SELECT * FROM no_such_table")
    assert r.status_code == 500
    assert r.headers["X-ClickHouse-Exception-Code"] == "60"
    assert r.text.startswith("Code: 60.")


def test_a_wrong_password_is_refused(endpoint: ChdbEndpoint, settings: Settings) -> None:
    wrong = endpoint.url(settings.clickhouse_database).replace(PASSWORD, "guess")
    with pytest.raises(StorageUnavailable, match="Authentication failed"):
        ClickHouse.connect(settings.with_(clickhouse_url=wrong))


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.mark.parametrize(
    ("headers", "params", "status"),
    [
        ({}, {}, 403),
        (_basic("tracker", "guess"), {}, 403),
        (_basic("default", PASSWORD), {}, 403),
        ({"Authorization": "Basic not-base64!"}, {}, 403),
        (_basic("tracker", PASSWORD), {}, 200),
        ({"X-ClickHouse-User": "tracker", "X-ClickHouse-Key": PASSWORD}, {}, 200),
        ({"X-ClickHouse-User": "tracker"}, {}, 403),
        ({}, {"user": "tracker", "password": PASSWORD}, 200),
    ],
)
def test_credentials(endpoint: ChdbEndpoint, headers: dict[str, str], params: dict[str, str], status: int) -> None:
    r = httpx.post(f"http://127.0.0.1:{endpoint.port}/", params=params, content=b"SELECT 1", headers=headers)
    assert r.status_code == status, r.text
    if status == 403:
        assert r.headers["X-ClickHouse-Exception-Code"] == "516"
        assert PASSWORD not in r.text


def test_ping_needs_no_credentials(endpoint: ChdbEndpoint) -> None:
    r = httpx.get(f"http://127.0.0.1:{endpoint.port}/ping")
    assert (r.status_code, r.text) == (200, "Ok.\n")


@pytest.mark.parametrize(
    ("sql", "params", "headers", "status", "code", "says"),
    [
        (b"SET max_threads = 1", {}, {}, 400, "48", "need a session"),
        (b"  /* x */ use system", {}, {}, 400, "48", "need a session"),
        (b"SELECT 1", {"session_id": "s1"}, {}, 400, "48", "Sessions"),
        (b"SELECT 1", {}, {"Content-Encoding": "gzip"}, 400, "48", "Content-Encoding"),
        (b"SELECT 1", {"max_threads; DROP": "1"}, {}, 400, "115", "not a setting name"),
        (b"SELECT 1", {"no_such_setting_here": "1"}, {}, 500, "115", "no_such_setting_here"),
        (b"SELECT {x:UInt8}", {"param_x": "abc"}, {}, 500, "", "x"),
        (b"SELECT '" + b"x" * (70 << 10) + b"'", {}, {}, 413, "307", "over"),
        (b"SELECT '\xff\xfe'", {}, {}, 400, "27", "UTF-8"),
    ],
    ids=["set", "use", "session", "gzip", "bad-setting-name", "unknown-setting", "bad-parameter", "too-long",
         "not-utf8"],
)
def test_refused_requests(
    endpoint: ChdbEndpoint, sql: bytes, params: dict[str, str], headers: dict[str, str], status: int, code: str,
    says: str,
) -> None:
    r = httpx.post(f"http://127.0.0.1:{endpoint.port}/", params=params, content=sql, headers=headers,
                   auth=("tracker", PASSWORD))
    assert r.status_code == status, r.text[:300]
    if code:
        assert r.headers["X-ClickHouse-Exception-Code"] == code
    assert says in r.text


def test_a_body_over_the_limit_is_refused_before_it_is_read(endpoint: ChdbEndpoint) -> None:
    data = b"INSERT INTO t (id) FORMAT TSV\n" + b"1\n" * (1 << 20)
    r = httpx.post(f"http://127.0.0.1:{endpoint.port}/", content=data, auth=("tracker", PASSWORD))
    assert r.status_code == 413
    assert r.headers["Connection"] == "close"


def test_chunked_and_form_encoded_bodies(endpoint: ChdbEndpoint) -> None:
    # An iterator body goes out chunked (Transfer-Encoding: chunked).
    chunked = httpx.post(f"http://127.0.0.1:{endpoint.port}/", content=iter([b"SELECT 4", b"2"]),
                         auth=("tracker", PASSWORD))
    assert (chunked.status_code, chunked.text, chunked.headers["X-ClickHouse-Format"]) == (200, "42\n", "TabSeparated")
    form = httpx.post(f"http://127.0.0.1:{endpoint.port}/", data={"query": "SELECT {v:String}", "param_v": "ok"},
                      auth=("tracker", PASSWORD))
    assert (form.status_code, form.text) == (200, "ok\n")
    query_param = httpx.post(f"http://127.0.0.1:{endpoint.port}/", params={"query": "SELECT 1 +"},
                             content=b" 1", auth=("tracker", PASSWORD))
    assert query_param.text == "2\n"


def test_statements_beyond_the_handles_wait_then_get_503(endpoint: ChdbEndpoint) -> None:
    slow_done = threading.Event()
    results: list[httpx.Response] = []

    def slow() -> None:
        results.append(_post(endpoint, "SELECT sleepEachRow(0.5) FROM numbers(4) FORMAT Null", timeout=30))
        slow_done.set()

    threads = [threading.Thread(target=slow) for _ in range(endpoint.max_queries)]
    for t in threads:
        t.start()
    # Every handle is busy for ~2 s; a third statement waits busy_seconds (0.5 s), then 503 (retryable).
    busy = wait_until(lambda: (r := _post(endpoint, "SELECT 1")).status_code == 503 and r, timeout=10,
                      message="no 503 while every handle was busy")
    assert busy.headers["X-ClickHouse-Exception-Code"] == "202"
    for t in threads:
        t.join(30)
    assert [r.status_code for r in results] == [200] * endpoint.max_queries
    assert _post(endpoint, "SELECT 1").text == "1\n"


def test_idle_connections_are_closed_and_the_connection_cap_holds(chdb_dir: Path) -> None:
    ep = ChdbEndpoint(chdb_dir, password=PASSWORD, max_connections=1, idle_seconds=1)
    ep.start()
    try:
        idle = http.client.HTTPConnection("127.0.0.1", ep.port, timeout=30)
        idle.request("GET", "/ping")
        assert idle.getresponse().read() == b"Ok.\n"
        # The only connection slot is held by the idle keep-alive connection: the next one waits
        # until the server closes that one (idle_seconds), then is served.
        second = httpx.post(f"http://127.0.0.1:{ep.port}/", content=b"SELECT 7", auth=("tracker", PASSWORD),
                            timeout=30)
        assert second.text == "7\n"
        assert idle.sock is not None
        assert idle.sock.recv(1) == b""  # closed by the server
        idle.close()
    finally:
        ep.stop()


def test_a_stopped_endpoint_refuses_connections(chdb_dir: Path) -> None:
    ep = ChdbEndpoint(chdb_dir, password=PASSWORD)
    ep.start()
    port = ep.port
    ep.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/ping")


def test_insert_files_left_by_a_crash_are_removed_at_start(chdb_dir: Path, tmp_path: Path) -> None:
    leftover = tmp_path / "inserts" / "insert-x.chdb-insert"
    leftover.parent.mkdir()
    leftover.write_bytes(b"1\n")
    other = tmp_path / "inserts" / "keep.txt"
    other.write_text("not ours")
    ep = ChdbEndpoint(chdb_dir, tmp_dir=tmp_path / "inserts")
    ep.start()
    ep.stop()
    assert not leftover.exists()
    assert other.exists()


def test_the_password_is_made_per_start(chdb_dir: Path) -> None:
    a, b = ChdbEndpoint(chdb_dir), ChdbEndpoint(chdb_dir)
    assert a.password != b.password
    assert len(a.password) >= 32
    assert a.host == "127.0.0.1"
