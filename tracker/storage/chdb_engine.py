"""Statements of the ClickHouse HTTP endpoint (``storage.chdb_http``) on this process's chDB engine.

chDB allows one engine per process but any number of connection handles to it.
``Engine`` keeps a fixed pool of handles: at most ``size`` statements run at once,
each handle serves one request at a time, and a request's settings are applied to
its handle and reset afterwards (a handle whose reset failed is replaced), so no
request sees another's settings or database. What a request may not do is change
a handle for the ones after it: ``SET`` and ``USE`` need a session, which the
endpoint does not keep, and are refused.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("tracker.storage.chdb_engine")

# URL parameters that steer the HTTP transport, not the engine.
TRANSPORT = frozenset({
    "query", "database", "default_format", "session_id", "session_timeout", "session_check", "query_id",
    "user", "password", "compress", "decompress", "enable_http_compression", "wait_end_of_query",
    "send_progress_in_http_headers", "http_headers_progress_interval_ms", "client_protocol_version",
    "quota_key", "buffer_size", "role",
})
_TRAILING_FORMAT = re.compile(r"\bFORMAT\s+(\w+)\s*;?\s*$", re.IGNORECASE)
_SESSION_STATEMENT = re.compile(r"^(?:\s+|--[^\n]*\n|/\*.*?\*/)*(SET|USE)\b", re.IGNORECASE | re.DOTALL)
_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CODE = re.compile(r"Code:\s*(\d+)")
_WITH_NAMES = {"TabSeparated": "TabSeparatedWithNames", "TSV": "TSVWithNames"}


class RequestError(Exception):
    """A request refused or failed, answered with ``status`` and ClickHouse's error text and code."""

    def __init__(self, status: int, code: int, name: str, message: str, *, text: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.text = text or f"Code: {code}. DB::Exception: {message} ({name})"


def literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


class _Handle:
    """One chDB connection handle and the state the pool keeps of it."""

    def __init__(self, conn_str: str) -> None:
        import chdb

        self.conn = chdb.connect(conn_str)  # type: ignore[no-untyped-call, unused-ignore]  # typed from chdb 4.4
        self.database: str | None = None
        self.dirty = False  # a setting could not be reset: replaced, never reused

    def run(self, sql: str, fmt: str, params: dict[str, str] | None = None) -> Any:
        return self.conn.query(sql, fmt, params=params or {})

    def use(self, database: str) -> None:
        if database != self.database:
            self.run(f"USE {_identifier(database)}", "TabSeparated")
            self.database = database

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:  # at shutdown: nothing more to do about it
            log.debug("closing a chDB handle failed", exc_info=True)


class Engine:
    """A fixed pool of ``size`` handles on the chDB engine at ``path``."""

    def __init__(self, path: Path, size: int, busy_seconds: float = 30.0) -> None:
        from clickhouse_connect.driver._chdbclient import build_connection_string

        path.mkdir(parents=True, exist_ok=True)
        # Spelled as clickhouse-connect's chDB client spells it: chDB compares engine paths literally.
        self.conn_str = build_connection_string(str(path), None)
        self.size = size
        self.busy_seconds = busy_seconds
        self._free: queue.Queue[_Handle] = queue.Queue()
        for _ in range(size):
            self._free.put(_Handle(self.conn_str))

    def close(self, timeout: float) -> None:
        """Close every handle, waiting up to ``timeout`` for the busy ones to come back."""
        deadline = time.monotonic() + timeout
        for _ in range(self.size):
            try:
                self._free.get(timeout=max(0.0, deadline - time.monotonic())).close()
            except queue.Empty:
                log.warning("a chDB handle was still busy when the endpoint stopped")
                return

    def query(self, sql: str, args: dict[str, str]) -> tuple[bytes, str | None, str]:
        """(answer, its format or None when the statement has no result, summary JSON)."""
        if _SESSION_STATEMENT.match(sql):
            raise RequestError(
                400, 48, "NOT_IMPLEMENTED",
                "SET and USE need a session, which this endpoint does not keep: pass settings as URL "
                "parameters and the database as `database`.",
            )
        params = {k[6:]: v for k, v in args.items() if k.startswith("param_")}
        trailing = _TRAILING_FORMAT.search(sql)
        if trailing is not None:  # the statement's own FORMAT wins over the one asked of chDB
            result = self._run(sql, "TabSeparated", params, args)
            return result.bytes() or b"", trailing.group(1), summary(result)
        fmt = args.get("default_format") or "TabSeparated"
        named = _WITH_NAMES.get(fmt)
        result = self._run(sql, named or fmt, params, args)
        body = result.bytes() or b""
        if named is None:
            return body, fmt, summary(result)
        # A statement with a result writes at least its names line, so a result without rows is told
        # from no result (DDL, INSERT), as a server tells them apart by X-ClickHouse-Format.
        if not body:
            return b"", None, summary(result)
        return body.partition(b"\n")[2], fmt, summary(result)

    def insert(self, statement: str, fmt: str, data_file: str, args: dict[str, str]) -> str:
        """``INSERT INTO t (cols)`` of the data in ``data_file``; the summary JSON."""
        result = self._run(f"{statement} FROM INFILE {literal(data_file)} FORMAT {fmt}", "TabSeparated", {}, args)
        return summary(result, written=True)

    def _run(self, sql: str, fmt: str, params: dict[str, str], args: dict[str, str]) -> Any:
        settings = {k: v for k, v in args.items() if k not in TRANSPORT and not k.startswith("param_")}
        for name in settings:
            if not _SETTING_NAME.match(name):
                raise RequestError(400, 115, "UNKNOWN_SETTING", f"{name[:100]!r} is not a setting name.")
        try:
            handle = self._free.get(timeout=self.busy_seconds)
        except queue.Empty:
            raise RequestError(
                503, 202, "TOO_MANY_SIMULTANEOUS_QUERIES",
                f"Every engine handle stayed busy for {self.busy_seconds:g} s; retry.",
            ) from None
        try:
            return self._execute(handle, sql, fmt, params, settings, args.get("database") or "default")
        except Exception as exc:
            raise _engine_error(exc) from None
        finally:
            if handle.dirty:
                handle.close()
                handle = _Handle(self.conn_str)
            self._free.put(handle)

    @staticmethod
    def _execute(
        handle: _Handle, sql: str, fmt: str, params: dict[str, str], settings: dict[str, str], database: str
    ) -> Any:
        handle.use(database)
        applied: list[str] = []
        try:
            for name, value in settings.items():
                handle.run(f"SET {name} = {literal(value)}", "TabSeparated")
                applied.append(name)
            return handle.run(sql, fmt, params)
        finally:
            try:
                for name in applied:
                    handle.run(f"SET {name} = DEFAULT", "TabSeparated")
            except Exception:
                log.warning("resetting a setting of a chDB handle failed; the handle is replaced", exc_info=True)
                handle.dirty = True


def _engine_error(exc: Exception) -> RequestError:
    """The engine's error as ClickHouse words it (``Code: N. DB::Exception: ...``)."""
    text = " ".join(str(exc).split())
    start = text.find("Code: ")
    text = text[start:] if start > 0 else text
    code = _CODE.search(text)
    if code is None:
        return RequestError(500, 1001, "STD_EXCEPTION", text)
    return RequestError(500, int(code.group(1)), "", text, text=text)


def summary(result: Any, written: bool = False) -> str:
    """``X-ClickHouse-Summary`` of a chDB result."""
    try:
        rows, nbytes = int(result.rows_read()), int(result.bytes_read())
        out = {"read_rows": str(rows), "read_bytes": str(nbytes), "elapsed_ns": str(int(result.elapsed() * 1e9))}
    except Exception:
        return "{}"
    if written:  # an INFILE insert reads exactly the rows it writes
        out.update(written_rows=str(rows), written_bytes=str(nbytes))
    return json.dumps(out)
