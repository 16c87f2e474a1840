"""Run an embedded `tracker serve` as a subprocess and seed it through the public API.

Shared by the benchmark harness, the locust run and the schemathesis run: a temp
data directory, a free port, the generated admin token read from the data dir,
and helpers that create brands, campaigns, influencers, links and stores the way
a user would (HTTP only, no imports of the server's internals).
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_bytes(pid: int, with_children: bool = True) -> int:
    """Resident memory of a process (and its direct children, e.g. the embedded Valkey)."""
    total = 0
    pids = [pid]
    if with_children:
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            pids += [int(c) for c in children]
        except OSError:
            pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


class ServeError(RuntimeError):
    pass


@dataclass
class EmbeddedServe:
    """`tracker serve --data-dir <dir> --port <free>` with a clean environment."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    # Descriptor limit of the server process (soft and hard), e.g. to test running out of them.
    max_files: int | None = None
    workers: int = 1  # HTTP worker processes (`--workers`); with more than one the main process serves none
    # The module run as `python -m`: a test's fault-injection wrapper of the CLI instead (tests/*/faults_plugin.py).
    module: str = "tracker.cli"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"serve-{self.port}.log"

    def start(self, timeout: float = 60.0) -> EmbeddedServe:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "CLICKHOUSE_", "TRACKER_"))}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        env.update(self.env)
        # Output goes to a file: a pipe nobody reads would block the server once full.
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module, "serve", "--data-dir", str(self.data_dir),
                 "--port", str(self.port), "--workers", str(self.workers)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=None if self.max_files is None else self._limit_files,
            )
        self.wait_healthy(timeout)
        return self

    def _limit_files(self) -> None:  # in the child, before exec
        assert self.max_files is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.max_files, self.max_files))

    def open_files(self) -> int:
        assert self.proc is not None
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise ServeError(f"tracker serve exited with {self.proc.returncode}:\n{self.output()[-3000:]}")
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise ServeError(f"tracker serve did not answer /healthz within {timeout:.0f} s:\n{self.output()[-3000:]}")

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def admin_token(self) -> str:
        return self.env.get("TRACKER_ADMIN_TOKEN") or (self.data_dir / "admin_token").read_text().strip()

    def rss(self) -> int:
        assert self.proc is not None
        return rss_bytes(self.proc.pid)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc is not None else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def __enter__(self) -> EmbeddedServe:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Api:
    """A brand's view of the API, seeded the way a user would."""

    def __init__(self, base: str, token: str) -> None:
        self.http = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30)

    def call(self, method: str, path: str, expect: int, **kw: Any) -> Any:
        r = self.http.request(method, path, **kw)
        if r.status_code != expect:
            raise ServeError(f"{method} {path} answered {r.status_code}, expected {expect}: {r.text[:500]}")
        return r.json() if r.headers.get("content-type", "").startswith("application/json") else r.text

    def close(self) -> None:
        self.http.close()


def create_brand(base: str, admin_token: str, name: str, currency: str = "USD") -> dict[str, Any]:
    admin = Api(base, admin_token)
    try:
        brand: dict[str, Any] = admin.call("POST", "/api/v1/brands", 201, json={"name": name, "currency": currency})
        return brand
    finally:
        admin.close()


@dataclass
class Seed:
    """One brand with campaigns, influencers, a link each, and stores."""

    brand: dict[str, Any]
    campaigns: list[dict[str, Any]]
    influencers: list[dict[str, Any]]
    links: list[dict[str, Any]]
    stores: list[dict[str, Any]]


def seed(
    base: str,
    admin_token: str,
    *,
    influencers: int = 1,
    campaigns: int = 1,
    stores: int = 1,
    name: str = "Bench Brand",
    commission: str = "10",
) -> Seed:
    brand = create_brand(base, admin_token, name)
    api = Api(base, brand["api_key"])
    try:
        camps = [
            api.call(
                "POST",
                "/api/v1/campaigns",
                201,
                json={"name": f"Campaign {i}", "commission": {"type": "percent", "value": commission}},
            )
            for i in range(campaigns)
        ]
        infs = [
            api.call("POST", "/api/v1/influencers", 201, json={"name": f"Influencer {i}", "handle": f"@inf{i}"})
            for i in range(influencers)
        ]
        links = [
            api.call(
                "POST",
                "/api/v1/links",
                201,
                json={
                    "campaign_id": camps[i % len(camps)]["id"],
                    "influencer_id": inf["id"],
                    "destination_url": f"https://shop.example.com/p/{i}?ref=bio",
                    "coupon_code": f"INF{i}SAVE",
                },
            )
            for i, inf in enumerate(infs)
        ]
        sts = [api.call("POST", "/api/v1/stores", 201, json={"name": f"Store {i}"}) for i in range(stores)]
    finally:
        api.close()
    return Seed(brand=brand, campaigns=camps, influencers=infs, links=links, stores=sts)
