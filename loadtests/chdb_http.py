"""A ClickHouse HTTP endpoint in front of a chDB directory, for tests and benchmarks.

No ClickHouse server recent enough for clickhouse-connect can be installed on the
development and CI machines, and chDB allows one owner process. To run the
production topology here anyway (several `tracker serve` workers, separate
`tracker ingest` processes, all with `CLICKHOUSE_URL=http://...`), this process
owns the chDB engine and answers the subset of ClickHouse's HTTP interface that
clickhouse-connect uses: `/ping`, queries and commands (SQL in the `query`
parameter and/or the body, or form-encoded in the body as clickhouse-connect does
when the bound parameters are large; `param_*` bound server-side by the engine, other
URL parameters applied as settings) and inserts (`INSERT ... FORMAT <fmt>` followed by
the data, in the body). The SQL runs on the real ClickHouse engine; only the
transport is ours. Not a production server: no auth, no compression, no sessions.

    python -m loadtests.chdb_http --path /tmp/ch --port 8123
"""

from __future__ import annotations

import argparse
import email.parser
import email.policy
import json
import os
import re
import signal
import tempfile
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from clickhouse_connect.driver._backend.chdb_backend import ChdbBackend
from clickhouse_connect.driver._backend.models import QueryRuntime
from clickhouse_connect.driver.exceptions import ClickHouseError

# URL parameters that steer the HTTP transport, not the engine.
_TRANSPORT = {
    "query",
    "database",
    "default_format",
    "session_id",
    "session_timeout",
    "session_check",
    "query_id",
    "user",
    "password",
    "compress",
    "decompress",
    "enable_http_compression",
    "wait_end_of_query",
    "send_progress_in_http_headers",
    "http_headers_progress_interval_ms",
    "client_protocol_version",
    "quota_key",
}
_INSERT = re.compile(rb"^\s*(INSERT\s+INTO\s+.+?)\s+FORMAT\s+(\w+)[ \t]*\r?\n?", re.IGNORECASE | re.DOTALL)
_TRAILING_FORMAT = re.compile(r"\bFORMAT\s+(\w+)\s*;?\s*$", re.IGNORECASE)
_CODE = re.compile(r"Code:\s*(\d+)")


class Engine:
    """The chDB engine of this process, serialized (chDB runs one statement at a time)."""

    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.backend = ChdbBackend(connection_string=os.path.realpath(path))
        self.lock = threading.Lock()

    def query(self, sql: str, params: dict[str, str], settings: dict[str, str], database: str | None) -> bytes:
        runtime = QueryRuntime(database=database, settings=settings)
        with self.lock:
            return self.backend.execute_raw_query(sql, params, None, runtime, None)

    def insert(self, statement: str, fmt: str, data: bytes, settings: dict[str, str], database: str | None) -> None:
        with tempfile.NamedTemporaryFile(suffix=".data", delete=False) as tmp:
            tmp.write(data)
        try:
            clause = ""
            if settings:
                clause = " SETTINGS " + ", ".join(f"{k} = {_literal(v)}" for k, v in settings.items())
            sql = f"{statement} FROM INFILE {_literal(tmp.name)}{clause} FORMAT {fmt}"
            with self.lock:
                self.backend.execute_raw_query(sql, {}, None, QueryRuntime(database=database), None)
        finally:
            os.unlink(tmp.name)


def _literal(value: str) -> str:
    if re.fullmatch(r"-?\d+(\.\d+)?", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _handler(engine: Engine) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-ClickHouse-Timezone", "UTC")
            self.send_header("X-ClickHouse-Server-Display-Name", "chdb-http")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if urlsplit(self.path).path in ("/ping", "/"):
                self._send(200, b"Ok.\n")
                return
            self._handle(b"")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                body = self._read_chunked()
            else:
                body = self.rfile.read(length) if length else b""
            self._handle(body)

        def _read_chunked(self) -> bytes:
            parts = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()

        def _form(self, body: bytes) -> dict[str, str] | None:
            """The fields of a form-encoded body (query and parameters), else None."""
            ctype = self.headers.get("Content-Type", "")
            if ctype.startswith("application/x-www-form-urlencoded"):
                return dict(parse_qsl(body.decode(), keep_blank_values=True))
            if not ctype.startswith("multipart/form-data"):
                return None
            head = f"Content-Type: {ctype}\r\n\r\n".encode()
            msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
            fields: dict[str, str] = {}
            for part in msg.iter_parts():
                name = part.get_param("name", header="content-disposition")
                payload = part.get_payload(decode=True)
                if isinstance(name, str) and isinstance(payload, bytes):
                    fields[name] = payload.decode()
            return fields

        def _handle(self, body: bytes) -> None:
            url = urlsplit(self.path)
            args = dict(parse_qsl(url.query, keep_blank_values=True))
            form = self._form(body)
            if form is not None:
                args.update(form)
                body = b""
            database = args.get("database") or None
            params = {k: v for k, v in args.items() if k.startswith("param_")}
            settings = {k: v for k, v in args.items() if k not in _TRANSPORT and not k.startswith("param_")}
            query_id = args.get("query_id") or str(uuid.uuid4())
            head = {"X-ClickHouse-Query-Id": query_id, "X-ClickHouse-Summary": json.dumps({})}
            try:
                sql = args.get("query", "")
                insert = _INSERT.match(body) if not sql else _INSERT.match(sql.encode() + b"\n")
                if insert is not None:
                    data = body[insert.end() :] if not sql else body
                    engine.insert(insert.group(1).decode(), insert.group(2).decode(), data, settings, database)
                    self._send(200, b"", head)
                    return
                sql = f"{sql}\n{body.decode()}" if sql and body else (sql or body.decode())
                result = engine.query(sql, params, settings, database)
                fmt = _TRAILING_FORMAT.search(sql)
                if fmt is not None:
                    head["X-ClickHouse-Format"] = fmt.group(1)
                elif result:
                    head["X-ClickHouse-Format"] = args.get("default_format", "TabSeparated")
                self._send(200, result, head)
            except ClickHouseError as exc:
                text = str(exc)
                code = _CODE.search(text)
                head["X-ClickHouse-Exception-Code"] = code.group(1) if code else "1001"
                self._send(500, text.encode() + b"\n", head)

    return Handler


def serve(path: Path, host: str = "127.0.0.1", port: int = 8123) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, port), _handler(Engine(path)))
    server.daemon_threads = True
    return server


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--path", type=Path, required=True, help="chDB data directory")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8123)
    args = p.parse_args()
    server = serve(args.path, args.host, args.port)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"chdb-http serving {args.path} on http://{args.host}:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
