"""ClickHouse's HTTP interface over this process's chDB engine, for processes that cannot open it.

chDB allows one owner process per data directory. ``tracker serve --workers N`` in
embedded mode keeps the engine in its main process and lets its HTTP workers reach
it the way production workers reach a ClickHouse server, clickhouse-connect over
HTTP (``tracker.supervisor``). This module answers the part of ClickHouse's HTTP
interface clickhouse-connect uses; the SQL runs on the real engine
(``storage.chdb_engine``), only the transport is ours:

- ``GET /ping`` (and ``GET /``): ``Ok.``, without credentials, as ClickHouse answers.
- A statement in the ``query`` URL parameter and/or the body, or form-encoded in the
  body (as clickhouse-connect sends large bound parameters); ``param_*`` bound
  server-side; ``database``; any other URL parameter is a setting of that statement.
  Answers carry ``X-ClickHouse-Format`` when the statement has a result,
  ``X-ClickHouse-Query-Id`` and ``X-ClickHouse-Summary``.
- ``INSERT ... FORMAT <fmt>`` followed by the data: the data is streamed to a
  private file and inserted with ``FROM INFILE`` (its settings, such as the
  deduplication token, apply).
- Errors carry the engine's text and ``X-ClickHouse-Exception-Code`` (status 500);
  403 (code 516) for credentials; 400 for what this endpoint does not serve
  (sessions, compressed bodies, ``SET``/``USE``); 413 for a body over the limit; 503
  while every engine handle stays busy or the endpoint stops (clickhouse-connect
  retries those).

Hardening: it listens on 127.0.0.1 only (a free port unless one is given); a user
and password are required (HTTP Basic, ``X-ClickHouse-User``/``-Key`` or the
``user``/``password`` parameters, as ClickHouse accepts them) and compared in
constant time; by default the password is made at each start and handed to the
clients in their URL. ``max_queries`` handles bound the statements that run at
once; ``max_connections`` bounds the connection threads (further connections wait
in the listen backlog); an idle keep-alive connection or a stalled body is closed
after ``idle_seconds``. Not served: TLS (loopback only), sessions, compression,
streamed answers (answers are built in memory: the tracker asks for pages and
aggregates).

Why TCP and not a Unix socket: clickhouse-connect's HTTP transport (urllib3) has
no Unix-socket connection; a socket would need a custom pool in every worker,
that is a second client code path, which the design rules out.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import email.parser
import email.policy
import hmac
import logging
import os
import re
import secrets
import tempfile
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from tracker.storage.chdb_engine import Engine, RequestError

log = logging.getLogger("tracker.storage.chdb_http")

_INSERT = re.compile(rb"^\s*(INSERT\s+INTO\s+.+?)\s+FORMAT\s+(\w+)[ \t]*(?:\r?\n|$)", re.IGNORECASE | re.DOTALL)
_HEAD = 64 * 1024  # read this much of a body before deciding whether it carries an insert's data
_SUFFIX = ".chdb-insert"


class ChdbEndpoint:
    """The endpoint: ``start()``, ``url(database)`` for the clients, ``stop()``."""

    def __init__(
        self,
        path: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        user: str = "tracker",
        password: str | None = None,
        max_queries: int = 4,
        max_connections: int = 64,
        idle_seconds: float = 10.0,
        busy_seconds: float = 30.0,
        max_body_bytes: int = 1 << 30,
        max_query_bytes: int = 16 << 20,
        tmp_dir: Path | None = None,
        nice: int = 0,
    ) -> None:
        self.path = path
        self.host = host
        self.port = port
        self.user = user
        self.password = secrets.token_urlsafe(24) if password is None else password
        self.max_queries = max_queries
        self.max_connections = max_connections
        self.idle_seconds = idle_seconds
        self.busy_seconds = busy_seconds
        self.max_body_bytes = max_body_bytes
        self.max_query_bytes = max_query_bytes
        self.tmp_dir = tmp_dir
        self.nice = nice  # of the endpoint's threads (Linux): above 0, they give way to others
        self.engine: Engine | None = None
        self._server: _Server | None = None

    def start(self) -> None:
        self.engine = Engine(self.path, self.max_queries, self.busy_seconds)
        if self.tmp_dir is not None:
            self.tmp_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            for leftover in self.tmp_dir.glob(f"*{_SUFFIX}"):  # an insert's data, left by a crash
                leftover.unlink(missing_ok=True)
        self._server = _Server(self)
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._serve_forever, args=(self._server,), name="chdb-http", daemon=True).start()
        log.info("ClickHouse HTTP endpoint on %s:%d over %s (%d engine handles)",
                 self.host, self.port, self.path, self.max_queries)

    def _serve_forever(self, server: _Server) -> None:
        if self.nice > 0:  # the connection threads it starts inherit it
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
        server.serve_forever()

    def url(self, database: str) -> str:
        """``http://user:password@host:port/database``: it holds the password, keep it out of logs."""
        return f"http://{quote(self.user, safe='')}:{quote(self.password, safe='')}@{self.host}:{self.port}/{database}"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, answer 503 to what still comes, wait for running statements, close the handles."""
        server, self._server = self._server, None
        if server is not None:
            server.stopping.set()
            server.shutdown()
            server.server_close()
        engine, self.engine = self.engine, None
        if engine is not None:
            engine.close(timeout)
            log.info("ClickHouse HTTP endpoint stopped")

    def authorized(self, user: str, password: str) -> bool:
        ok_user = hmac.compare_digest(user.encode(), self.user.encode())
        ok_password = hmac.compare_digest(password.encode(), self.password.encode())
        return ok_user and ok_password

    def insert(self, match: re.Match[bytes], head: bytes, body: _Body, args: dict[str, str]) -> str:
        """Stream the data to a private file, then insert it; the summary JSON."""
        engine = self._engine()
        fd, name = tempfile.mkstemp(suffix=_SUFFIX, prefix="insert-", dir=self.tmp_dir)  # mode 0600
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(head)
                for chunk in body.chunks():
                    fh.write(chunk)
            return engine.insert(match.group(1).decode(), match.group(2).decode(), name, args)
        finally:
            os.unlink(name)

    def query(self, sql: str, args: dict[str, str]) -> tuple[bytes, str | None, str]:
        return self._engine().query(sql, args)

    def _engine(self) -> Engine:
        if self.engine is None:
            raise RequestError(503, 210, "NETWORK_ERROR", "The endpoint is stopping.")
        return self.engine


class _Server(ThreadingMixIn, HTTPServer):
    """One thread per connection, at most ``max_connections`` of them."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, endpoint: ChdbEndpoint) -> None:
        self.endpoint = endpoint
        self.stopping = threading.Event()
        self._slots = threading.BoundedSemaphore(endpoint.max_connections)
        super().__init__((endpoint.host, endpoint.port), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        # Waiting here stops accepting: further connections wait in the kernel's listen backlog.
        while not self._slots.acquire(timeout=0.2):
            if self.stopping.is_set():
                self.shutdown_request(request)
                return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


# A ClickHouse server's default http_max_uri_size.
MAX_URI_BYTES = 1 << 20


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out as two writes: without this, Nagle's algorithm holds the body back
    # until the client's delayed acknowledgement (~40 ms) on a keep-alive connection.
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        # Idle keep-alive connections and stalled reads are closed after this.
        self.request.settimeout(self.server.endpoint.idle_seconds)
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        return

    def handle_one_request(self) -> None:
        """The standard library's, with ClickHouse's URI limit (``http_max_uri_size``, 1 MiB)
        instead of 64 KiB: clickhouse-connect binds query parameters in the URL, and a report's
        or a sync's arrays of ids can outgrow 64 KiB where a ClickHouse server takes them."""
        try:
            self.raw_requestline = self.rfile.readline(MAX_URI_BYTES + 1)
            if len(self.raw_requestline) > MAX_URI_BYTES:
                self.requestline = self.request_version = self.command = ""
                self.send_error(414)
                return
            if not self.raw_requestline:
                self.close_connection = True
                return
            if not self.parse_request():
                return
            method = getattr(self, "do_" + self.command, None)
            if method is None:
                self.send_error(501, f"Unsupported method ({self.command!r})")
                return
            method()
            self.wfile.flush()
        except TimeoutError:
            self.close_connection = True

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-ClickHouse-Timezone", "UTC")
        self.send_header("X-ClickHouse-Server-Display-Name", "tracker-chdb")
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path in ("/ping", "/") and "query" not in dict(parse_qsl(url.query)):
            self._send(200, b"Ok.\n", {})
            return
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        endpoint = self.server.endpoint
        args = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
        query_id = args.get("query_id") or str(uuid.uuid4())
        head_out = {"X-ClickHouse-Query-Id": query_id}
        body: _Body | None = None
        try:
            if self.server.stopping.is_set():
                raise RequestError(503, 210, "NETWORK_ERROR", "The endpoint is stopping.")
            self._authorize(args)
            self._refuse_unsupported(args)
            body = self._body()
            head = body.head(_HEAD)
            form = self._form(head, body)
            if form is not None:
                args.update(form)
                head = b""
            sql = args.get("query", "")
            insert = _INSERT.match(sql.encode() + b"\n") if sql else _INSERT.match(head)
            if insert is not None:
                data = head if sql else head[insert.end():]
                head_out["X-ClickHouse-Summary"] = endpoint.insert(insert, data, body, args)
                self._send(200, b"", head_out)
                return
            text = (head + body.rest(endpoint.max_query_bytes - len(head))).decode()
            result, fmt, head_out["X-ClickHouse-Summary"] = endpoint.query(
                f"{sql}\n{text}" if sql and text else (sql or text), args
            )
            if fmt is not None:
                head_out["X-ClickHouse-Format"] = fmt
            self._send(200, result, head_out)
        except RequestError as exc:
            self._fail(exc, head_out, body)
        except UnicodeDecodeError:
            self._fail(RequestError(400, 27, "CANNOT_PARSE_INPUT", "The statement is not UTF-8."), head_out, body)
        except (OSError, ValueError) as exc:  # the client went away or broke the framing
            log.debug("chdb-http: request dropped: %s", exc)
            self.close_connection = True
        except Exception as exc:
            log.exception("chdb-http: unexpected error")
            self._fail(RequestError(500, 1001, "STD_EXCEPTION", f"Unexpected error: {exc}."), head_out, None)

    def _fail(self, exc: RequestError, headers: dict[str, str], body: _Body | None) -> None:
        headers = {**headers, "X-ClickHouse-Exception-Code": str(exc.code)}
        if body is None or not body.done:  # an unread rest would be taken for the next request
            headers["Connection"] = "close"
            self.close_connection = True
        self._send(exc.status, exc.text.encode() + b"\n", headers)

    def _authorize(self, args: dict[str, str]) -> None:
        user, password = args.get("user", "default"), args.get("password", "")
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(auth[6:], validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                user, password = "", ""
        elif "X-ClickHouse-User" in self.headers:
            user, password = self.headers["X-ClickHouse-User"], self.headers.get("X-ClickHouse-Key", "")
        if not self.server.endpoint.authorized(user, password):
            raise RequestError(
                403, 516, "AUTHENTICATION_FAILED",
                f"{user[:100]}: Authentication failed: password is incorrect, or there is no user with such name.",
            )

    def _refuse_unsupported(self, args: dict[str, str]) -> None:
        if args.get("session_id"):
            raise RequestError(400, 48, "NOT_IMPLEMENTED", "Sessions are not supported by this endpoint.")
        encoding = self.headers.get("Content-Encoding", "identity").lower()
        if encoding not in ("", "identity"):
            raise RequestError(400, 48, "NOT_IMPLEMENTED", f"Content-Encoding {encoding[:50]} is not supported.")

    def _body(self) -> _Body:
        limit = self.server.endpoint.max_body_bytes
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return _Body(self.rfile, None, limit)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            raise RequestError(400, 27, "CANNOT_PARSE_INPUT", "Malformed Content-Length.")
        return _Body(self.rfile, length, limit)

    def _form(self, head: bytes, body: _Body) -> dict[str, str] | None:
        """The fields of a form-encoded body (statement and parameters), else None."""
        ctype = self.headers.get("Content-Type", "")
        if not ctype.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            return None
        raw = head + body.rest(self.server.endpoint.max_query_bytes - len(head))
        if ctype.startswith("application/x-www-form-urlencoded"):
            return dict(parse_qsl(raw.decode(), keep_blank_values=True))
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {ctype}\r\n\r\n".encode() + raw
        )
        fields: dict[str, str] = {}
        for part in msg.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            if isinstance(name, str) and isinstance(payload, bytes):
                fields[name] = payload.decode()
        return fields


class _Body:
    """A request body read in chunks (``Content-Length`` or chunked), never past ``limit`` bytes."""

    def __init__(self, rfile: Any, length: int | None, limit: int) -> None:
        self.rfile = rfile
        self.length = length  # None: chunked
        self.limit = limit
        self.read = 0
        self.done = length == 0
        self._chunk_left = 0
        if length is not None and length > limit:
            raise RequestError(413, 307, "TOO_MANY_BYTES", f"The body has {length} bytes; the limit is {limit}.")

    def chunks(self, size: int = 1 << 20) -> Iterator[bytes]:
        while not self.done:
            data = self._next(size)
            self.read += len(data)
            if self.read > self.limit:
                raise RequestError(413, 307, "TOO_MANY_BYTES", f"The body is over {self.limit} bytes.")
            if data:
                yield data

    def head(self, size: int) -> bytes:
        """The first ``size`` bytes (all of a shorter body)."""
        out = bytearray()
        while len(out) < size and not self.done:
            out += next(self.chunks(size - len(out)), b"")
        return bytes(out)

    def rest(self, limit: int) -> bytes:
        """The rest of the body, refused past ``limit`` bytes."""
        out = bytearray()
        for chunk in self.chunks():
            out += chunk
            if len(out) > limit:
                raise RequestError(413, 307, "TOO_MANY_BYTES", f"The statement is over {limit} bytes.")
        return bytes(out)

    def _next(self, size: int) -> bytes:
        if self.length is not None:
            want = min(size, self.length - self.read)
            data = self.rfile.read(want)
            if len(data) < want:
                raise ValueError("the body ended early")
            self.done = self.read + len(data) >= self.length
            return bytes(data)
        if self._chunk_left == 0:
            line = self.rfile.readline(1024)
            try:
                self._chunk_left = int(line.strip().split(b";")[0], 16)
            except ValueError:
                raise ValueError("malformed chunked encoding") from None
            if self._chunk_left == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                self.done = True
                return b""
        data = self.rfile.read(min(size, self._chunk_left))
        if not data:
            raise ValueError("the body ended early")
        self._chunk_left -= len(data)
        if self._chunk_left == 0:
            self.rfile.readline(1024)  # the CRLF after a chunk
        return bytes(data)
