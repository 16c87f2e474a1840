"""Start `loadtests.chdb_http` (a ClickHouse HTTP endpoint over its own chDB dir) as a subprocess."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import httpx

from tests.waiting import wait_until


class ChdbHttpServer:
    def __init__(self, path: Path) -> None:
        self.path = path
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        log = open(self.path.parent / f"chdb-http-{self.port}.log", "wb")  # noqa: SIM115
        with log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "loadtests.chdb_http", "--path", str(self.path), "--port", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        proc = self.proc

        def answers() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"chdb_http exited with {proc.returncode}")
            return httpx.get(f"{self.url}/ping", timeout=1).status_code == 200

        wait_until(answers, timeout=timeout, ignoring=(httpx.HTTPError,), message="chdb_http did not answer /ping")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
