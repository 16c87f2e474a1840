"""The one ClickHouse code path: clickhouse-connect over HTTP, or its chDB backend.

The backend choice lives here and nowhere else. Everything above talks to a
``ClickHouse`` object: ``command``, ``query`` (rows as dicts or tuples) and
``insert`` with explicit column names. Parameters are always bound server-side
(``{name:Type}`` placeholders), never formatted into SQL.

chDB is the full ClickHouse engine in-process, with two limits that shape this
module: one engine (one data directory) per process, and a synchronous client.
Callers on the event loop must use ``anyio.to_thread`` (``run_sync`` below).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import anyio.to_thread
import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from tracker.core.errors import QueryError, StorageUnavailable
from tracker.settings import Settings

T = TypeVar("T")

# Threads that run one ClickHouse object's submitted statements (``ClickHouse.submit``), each on
# a connection of its own. A report submits up to ~7 statements at once; more threads than that
# would only queue in the engine on a small box.
SUBMIT_THREADS = 4

_chdb_lock = threading.Lock()
_chdb_path: str | None = None


def chdb_path(settings: Settings) -> Path:
    """The chDB data directory of these settings (embedded default or chdb:// URL)."""
    if settings.clickhouse_url is None:
        return (settings.data_dir / "clickhouse").resolve()
    return Path(urlsplit(settings.clickhouse_url).path)


def is_chdb(settings: Settings) -> bool:
    return settings.clickhouse_url is None or settings.clickhouse_url.startswith("chdb:")


def database_name(settings: Settings) -> str:
    if settings.clickhouse_url and not is_chdb(settings):
        path = urlsplit(settings.clickhouse_url).path.strip("/")
        if path:
            return path
    return settings.clickhouse_database


# Every query on a cluster (TRACKER_CLICKHOUSE_CLUSTER) carries these; one node gets none.
# Why they keep ingest exact and FINAL reads exact: tracker/storage/cluster.py.
CLUSTER_SETTINGS: dict[str, Any] = {
    # An INSERT into a Distributed table returns once every shard holds its rows, and each
    # shard's insert carries the query's settings, the deduplication token among them
    # (named insert_distributed_sync until late 2023, ClickHouse #55978).
    "distributed_foreground_insert": 1,
    # One batch is one insert with one token: not queued and merged with others, which
    # ClickHouse 26.x does by default.
    "async_insert": 0,
    # Inserts and the reads that check them go to the same replica of each shard (the
    # first live one), so a check right after an insert sees it.
    "load_balancing": "in_order",
}


def _raw_client(settings: Settings, database: str | None) -> Client:
    if is_chdb(settings):
        global _chdb_path
        path = str(chdb_path(settings))
        with _chdb_lock:
            # chDB allows one engine per process; a second path would fail deep inside chDB.
            if _chdb_path is not None and _chdb_path != path:
                raise StorageUnavailable(
                    f"chDB is already open at {_chdb_path} in this process; it cannot also open {path}."
                )
            Path(path).mkdir(parents=True, exist_ok=True)
            client = clickhouse_connect.get_client(interface="chdb", path=path, database=database)
            _chdb_path = path
            return client
    url = urlsplit(settings.clickhouse_url or "")
    return clickhouse_connect.get_client(
        interface=url.scheme,
        host=url.hostname or "localhost",
        port=url.port or (8443 if url.scheme == "https" else 8123),
        username=unquote(url.username or "default"),
        password=unquote(url.password or ""),
        database=database,
        connect_timeout=5,
        send_receive_timeout=60,
        autogenerate_session_id=False,
        compress=False,
        settings=dict(CLUSTER_SETTINGS) if settings.clickhouse_cluster else None,
    )


class Columns(dict[str, Sequence[Any]]):
    """A result by column. One without rows may come without its column names (chDB's Native
    output has no block then): each of its columns reads as empty."""

    def __missing__(self, name: str) -> Sequence[Any]:
        if self:
            raise KeyError(name)
        return ()


class ClickHouse:
    """A thin wrapper that binds the database and translates driver errors once."""

    def __init__(
        self, client: Client, database: str, cluster: str | None = None, opener: Callable[[], Client] | None = None,
    ) -> None:
        self.client = client
        self.database = database
        self.cluster = cluster  # the ClickHouse cluster's name when the schema is on one
        self._opener = opener  # a new client like ``client`` (``submit``); None: statements run one at a time
        self._pool: ThreadPoolExecutor | None = None
        self._own = threading.local()  # a pool thread's ClickHouse on its own client
        self._handles: list[ClickHouse] = []
        self._guard = threading.Lock()

    @classmethod
    def connect(cls, settings: Settings, *, create_database: bool = True) -> ClickHouse:
        database = database_name(settings)
        try:
            if create_database:
                bootstrap = _raw_client(settings, None)
                bootstrap.command(f"CREATE DATABASE IF NOT EXISTS `{database}`")
                if not is_chdb(settings):
                    bootstrap.close()
            return cls(
                _raw_client(settings, database), database, settings.clickhouse_cluster,
                opener=lambda: _raw_client(settings, database),
            )
        except (DatabaseError, OperationalError, OSError) as exc:
            raise StorageUnavailable(f"ClickHouse at {describe(settings)} is unreachable: {_short(exc)}") from exc

    def command(self, sql: str, parameters: dict[str, Any] | None = None, **kw: Any) -> Any:
        return self._call(self.client.command, sql, parameters=parameters, **kw)

    def query(self, sql: str, parameters: dict[str, Any] | None = None, **kw: Any) -> list[tuple[Any, ...]]:
        result = self._call(self.client.query, sql, parameters=parameters, **kw)
        return [tuple(row) for row in result.result_rows]

    def query_dicts(self, sql: str, parameters: dict[str, Any] | None = None, **kw: Any) -> list[dict[str, Any]]:
        result = self._call(self.client.query, sql, parameters=parameters, **kw)
        names = result.column_names
        return [dict(zip(names, row, strict=True)) for row in result.result_rows]

    def query_columns(self, sql: str, parameters: dict[str, Any] | None = None, **kw: Any) -> Columns:
        """Column name -> its values: the driver decodes by column, so no object per row is made."""
        result = self._call(self.client.query, sql, parameters=parameters, **kw)
        columns = result.result_columns
        if not columns or not columns[0]:
            return Columns()
        return Columns(zip(result.column_names, columns, strict=True))

    def insert(
        self,
        table: str,
        rows: Sequence[Sequence[Any]],
        column_names: Sequence[str],
        *,
        dedup_token: str | None = None,
    ) -> None:
        settings = _dedup_settings(dedup_token)
        self._call(self.client.insert, table, rows, column_names=list(column_names), settings=settings)

    def insert_arrow(
        self,
        table: str,
        arrow_table: Any,
        *,
        dedup_token: str | None = None,
        settings: dict[str, Any] | None = None,
    ) -> None:
        """Insert a pyarrow Table (its column names are the explicit column list).

        Several times faster than ``insert`` for large batches: pyarrow encodes the
        columns in C, where ``insert`` encodes every value in Python. ``settings`` are
        further insert settings; the deduplication token's settings always apply.
        """
        merged = {**(settings or {}), **(_dedup_settings(dedup_token) or {})}
        self._call(self.client.insert_arrow, table, arrow_table, settings=merged or None)

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Start ``fn(handle, *args)`` on a thread of this object's pool, ``handle`` a ClickHouse on a
        client of that thread's own, and return its future: the independent statements of one
        request run at once. One client runs one statement at a time (clickhouse-connect's chDB
        backend locks its engine handle per call), while chDB serves separate handles to its one
        engine side by side and releases the GIL inside a query, as separate HTTP clients are
        served by the server. Without an opener (a ClickHouse made around a given client) ``fn``
        runs here and now. ``fn`` must not wait on another submitted call (the pool is small)."""
        if self._opener is None:
            done: Future[T] = Future()
            try:
                done.set_result(fn(self, *args))
            except BaseException as exc:
                done.set_exception(exc)
            return done
        with self._guard:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(SUBMIT_THREADS, thread_name_prefix="clickhouse")
            pool = self._pool
        return pool.submit(self._on_own_client, fn, args)

    def _on_own_client(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        handle: ClickHouse | None = getattr(self._own, "handle", None)
        if handle is None:
            assert self._opener is not None
            try:
                client = self._opener()
            except (DatabaseError, OperationalError, OSError) as exc:
                raise StorageUnavailable(f"ClickHouse is unreachable: {_short(exc)}") from exc
            handle = self._own.handle = ClickHouse(client, self.database, self.cluster)
            with self._guard:
                self._handles.append(handle)
        return fn(handle, *args)

    def ping(self) -> bool:
        try:
            return self.client.ping()
        except Exception:
            return False

    def close(self) -> None:
        with self._guard:
            pool, self._pool = self._pool, None
            handles, self._handles = self._handles, []
        if pool is not None:
            pool.shutdown(wait=True)
        for handle in handles:
            handle.close()
        # A chDB engine lives as long as the process (it cannot be reopened at another path).
        if not self.client.uri.startswith("chdb:"):
            self.client.close()

    @staticmethod
    def _call(fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        try:
            return fn(*args, **kw)
        except OperationalError as exc:
            raise StorageUnavailable(f"ClickHouse is unreachable: {_short(exc)}") from exc
        except DatabaseError as exc:
            raise QueryError(f"ClickHouse rejected the statement: {_short(exc)}") from exc


def _dedup_settings(dedup_token: str | None) -> dict[str, Any] | None:
    """Insert settings for a deduplication token: a retried block becomes a no-op (the daily rollup
    is a projection inside the same part, so it follows)."""
    if not dedup_token:
        return None
    return {"insert_deduplication_token": dedup_token}


async def run_sync(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking ClickHouse call off the event loop."""
    return await anyio.to_thread.run_sync(fn, *args)


def describe(settings: Settings) -> str:
    """The ClickHouse location without credentials, for messages and logs."""
    if is_chdb(settings):
        return f"chdb://{chdb_path(settings)}"
    url = urlsplit(settings.clickhouse_url or "")
    port = url.port or (8443 if url.scheme == "https" else 8123)
    return f"{url.scheme}://{url.hostname}:{port}{url.path}"


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:500]
