"""The one ClickHouse code path, on both backends: chDB in-process and HTTP."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.chdb_server import ChdbHttpServer
from tests.schema_cache import SchemaCache
from tracker.core.errors import QueryError, StorageUnavailable
from tracker.core.events import CLICK_COLUMNS
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse, database_name, describe


@pytest.fixture(params=["chdb", "http"])
def any_ch(request: pytest.FixtureRequest, settings: Settings, schema: SchemaCache) -> Iterator[ClickHouse]:
    if request.param == "http":
        server: ChdbHttpServer = request.getfixturevalue("http_server")
        settings = settings.with_(clickhouse_url=f"{server.url}/{settings.clickhouse_database}")
    ch = ClickHouse.connect(settings)
    schema.create(ch)
    try:
        yield ch
    finally:
        ch.command(f"DROP DATABASE IF EXISTS `{ch.database}`")
        ch.close()


def _click(i: int, brand: str = "b1") -> list[object]:
    values: dict[str, object] = {c: "" for c in CLICK_COLUMNS}
    values.update(
        click_id=f"c{i}",
        ts=datetime(2026, 11, 1, 12, 30, tzinfo=UTC),
        brand_id=brand,
        link_id=7,
        visitor_hash=i % 3,
        is_bot=0,
    )
    return [values[c] for c in CLICK_COLUMNS]


def test_insert_dedup_token_covers_table_and_rollup(any_ch: ClickHouse) -> None:
    rows = [_click(i) for i in range(10)]
    for token in ("batch-1", "batch-1", "batch-2"):
        any_ch.insert("clicks", rows, CLICK_COLUMNS, dedup_token=token)
    assert any_ch.query("SELECT count() FROM clicks") == [(20,)]
    assert any_ch.query("SELECT count() FROM clicks FINAL") == [(10,)]
    assert any_ch.query("SELECT sum(clicks) FROM clicks_daily") == [(20,)]
    assert any_ch.query("SELECT uniqExact(visitor_hash) FROM clicks") == [(3,)]


@pytest.mark.parametrize("value", ["plain", "it's", "back\\slash", "tab\tnew\nline", "{brace}", "' OR 1=1 --", "ünï"])
def test_parameters_are_bound_server_side(any_ch: ClickHouse, value: str) -> None:
    any_ch.insert("clicks", [_click(1, brand=value)], CLICK_COLUMNS)
    rows = any_ch.query(
        "SELECT brand_id, count() FROM clicks WHERE brand_id = {b:String} GROUP BY brand_id", {"b": value}
    )
    assert rows == [(value, 1)]
    assert any_ch.query("SELECT count() FROM clicks WHERE brand_id != {b:String}", {"b": value}) == [(0,)]


def test_bad_sql_is_a_query_error(any_ch: ClickHouse) -> None:
    with pytest.raises(QueryError) as info:
        any_ch.command("SELEC 1")
    assert "Syntax error" in info.value.message


def test_unreachable_server_is_storage_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = Settings(redis_url="redis://127.0.0.1:1", clickhouse_url=f"http://u:secret@127.0.0.1:{port}/db")
    with pytest.raises(StorageUnavailable) as info:
        ClickHouse.connect(settings)
    assert "secret" not in info.value.message
    assert f"127.0.0.1:{port}" in info.value.message


@pytest.mark.parametrize(
    ("url", "database", "shown"),
    [
        ("http://u:p@h:8123/analytics", "analytics", "http://h:8123/analytics"),
        ("https://h/", "tracker", "https://h:8443/"),
        ("chdb:///srv/ch", "tracker", "chdb:///srv/ch"),
    ],
)
def test_database_and_description(url: str, database: str, shown: str) -> None:
    s = Settings(redis_url="redis://x", clickhouse_url=url)
    assert database_name(s) == database
    assert describe(s) == shown


def test_embedded_chdb_path_is_under_data_dir(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path, embedded=True)
    assert describe(s) == f"chdb://{tmp_path.resolve() / 'clickhouse'}"


def test_insert_arrow_applies_settings_next_to_the_dedup_token(any_ch: ClickHouse) -> None:
    import pyarrow as pa

    def table(ids: list[str]) -> pa.Table:
        rows = [_click(0) for _ in ids]
        for row, click_id in zip(rows, ids, strict=True):
            row[0] = click_id
        types = {
            "ts": pa.timestamp("ms", tz="UTC"),
            "link_id": pa.uint64(),
            "visitor_hash": pa.uint64(),
            "is_bot": pa.uint8(),
        }
        columns = {c: pa.array([r[k] for r in rows], types.get(c, pa.string())) for k, c in enumerate(CLICK_COLUMNS)}
        return pa.table(columns)

    # Two rows with one sort key: folded at insert unless optimize_on_insert is off.
    any_ch.insert_arrow("clicks", table(["a", "a"]), dedup_token="t-1")
    any_ch.insert_arrow("clicks", table(["b", "b"]), dedup_token="t-2", settings={"optimize_on_insert": 0})
    any_ch.insert_arrow("clicks", table(["b", "b"]), dedup_token="t-2", settings={"optimize_on_insert": 0})
    assert any_ch.query("SELECT click_id, count() FROM clicks GROUP BY click_id ORDER BY click_id") == [
        ("a", 1), ("b", 2)
    ]


def test_submitted_statements_run_at_once_each_on_its_own_client(any_ch: ClickHouse) -> None:
    n = 3
    met = threading.Barrier(n, timeout=30)  # broken unless the n calls are under way together

    def where(handle: ClickHouse) -> tuple[int, str]:
        met.wait()
        return id(handle.client), handle.query("SELECT currentDatabase()")[0][0]

    seen = [f.result() for f in [any_ch.submit(where) for _ in range(n)]]
    assert len({client for client, _ in seen} | {id(any_ch.client)}) == n + 1
    assert {database for _, database in seen} == {any_ch.database}
    # The engine runs them side by side too, not one after the other.
    t = time.monotonic()
    for f in [any_ch.submit(ClickHouse.query, "SELECT sleep(0.5)") for _ in range(n)]:
        f.result()
    assert time.monotonic() - t < 0.5 * n - 0.2
    with pytest.raises(QueryError):
        any_ch.submit(ClickHouse.query, "SELEC 1").result()
