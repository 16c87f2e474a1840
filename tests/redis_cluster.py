"""A real Redis Cluster of Debian's ``redis-server`` on loopback: 3 primaries, 3 replicas.

Made with ``redis-cli --cluster create ... --cluster-replicas 1``, each node with AOF on
and a short ``cluster-node-timeout`` so a killed primary's replica is promoted within a
few seconds. Ports are free ones picked at random (several test processes and
engineers share the machine), or ``base``..``base+5`` when given.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tests.waiting import wait_until

NODE_TIMEOUT_MS = 1000


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port(taken: list[int]) -> int:
    """A free port whose cluster bus port (port + 10000) is free and below 65536 too."""
    rnd = random.Random()
    while True:
        port = rnd.randrange(20_000, 45_000)
        if port not in taken and port + 10_000 not in taken and _free(port) and _free(port + 10_000):
            return port


@dataclass
class Cluster:
    root: Path
    ports: list[int]
    replicas: int = 1
    pids: dict[int, int] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports[:3])

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)

    def _start_node(self, port: int) -> None:
        d = self.root / str(port)
        d.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(d), "--daemonize", "yes",
             "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
             "--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--appendonly", "yes", "--appendfsync", "everysec",
             "--save", "", "--pidfile", str(d / "redis.pid"), "--logfile", str(d / "redis.log")],
            check=True,
        )
        wait_until(lambda: self.node(port).ping(), ignoring=(redis.ConnectionError,), timeout=10,
                   message=f"redis-server on port {port} did not start")
        self.pids[port] = int((d / "redis.pid").read_text())

    def start(self) -> None:
        if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
            raise RuntimeError("Debian's redis-server and redis-cli are needed for the cluster tests.")
        for port in self.ports:
            self._start_node(port)
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            check=True, stdout=subprocess.DEVNULL,
        )
        self.wait_healthy()

    def primaries(self) -> dict[int, list[tuple[int, int]]]:
        """Port of each primary -> its slot ranges, as the cluster sees it now."""
        out: dict[int, list[tuple[int, int]]] = {}
        for port in self.alive():
            try:
                slots = self.node(port).execute_command("CLUSTER", "SLOTS")
            except redis.RedisError:
                continue
            for start, end, primary, *_ in slots:
                out.setdefault(int(primary[1]), []).append((int(start), int(end)))
            return out
        return out

    def alive(self) -> list[int]:
        return [p for p in self.ports if p in self.pids]

    def wait_healthy(self, timeout: float = 30) -> None:
        """Every live node says the cluster is ok and every primary has its replica online."""
        def ok() -> bool:
            for port in self.alive():
                info = self.node(port).execute_command("CLUSTER", "INFO")
                text = info.decode() if isinstance(info, bytes) else str(info)
                if "cluster_state:ok" not in text:
                    return False
            slots = self.node(self.alive()[0]).execute_command("CLUSTER", "SLOTS")
            return len(slots) == 3 and all(len(s) >= 3 + self.replicas for s in slots)

        wait_until(ok, timeout=timeout, interval=0.1, ignoring=(redis.RedisError,),
                   message="the Redis Cluster did not become healthy")

    def kill_primary_of(self, key: str) -> int:
        """``kill -9`` the primary serving ``key``; returns its port."""
        port = 0
        slot = int(self.node(self.alive()[0]).execute_command("CLUSTER", "KEYSLOT", key))
        for primary, ranges in self.primaries().items():
            if any(a <= slot <= b for a, b in ranges):
                port = primary
        os.kill(self.pids.pop(port), signal.SIGKILL)
        return port

    def restart(self, port: int) -> None:
        """Start a killed node again: it rejoins (as a replica of its promoted one) from its nodes.conf."""
        self._start_node(port)
        self.wait_healthy()

    def flush(self) -> None:
        for port in self.primaries():
            self.node(port).flushall()

    def stop(self) -> None:
        for port in list(self.pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pids.pop(port), signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)


def start_cluster(root: Path, base: int | None = None, replicas: int = 1) -> Cluster:
    """3 primaries with ``replicas`` replicas each."""
    n = 3 * (1 + replicas)
    ports: list[int] = [base + i for i in range(n)] if base else []
    while len(ports) < n:
        ports.append(_free_port(ports))
    cluster = Cluster(root, ports, replicas)
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    return cluster
