"""The servers the redirect benchmarks drive: starting, waiting for, seeding, reading and stopping them.

``tracker`` (its command of this interpreter, the environment it runs with, links to click) and the
bare Starlette app (``loadtests.bare_app``), the baseline every redirect figure is compared with.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

import redis

from tracker.core import keys
from tracker.core.records import LinkRecord

PY = sys.executable
# The ``tracker`` command of this interpreter; ``python -m tracker.cli`` when it has none (an
# interpreter that runs the package from PYTHONPATH, e.g. to compare Python builds).
_SCRIPT = Path(PY).with_name("tracker")
TRACKER = [str(_SCRIPT)] if _SCRIPT.exists() else [PY, "-m", "tracker.cli"]
ADMIN = "tka_bench_admin_token_0123456789"
SECRET = "bench-secret-key-0123456789abcdefghijklmnopqrstuv"
LINKS = 16
_ROOT = Path(__file__).resolve().parent.parent


def server_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment ``tracker`` runs with: this one without its storage URLs, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "CLICKHOUSE_URL")}
    env.update({"TRACKER_ADMIN_TOKEN": ADMIN, "TRACKER_SECRET_KEY": SECRET, "TRACKER_LOG_LEVEL": "WARNING"})
    env.update(extra)
    return env


def start_bare(port: int, workers: int, log: IO[bytes] | int) -> subprocess.Popen[bytes]:
    """``loadtests.bare_app`` under uvicorn as ``tracker serve`` runs (uvloop + httptools)."""
    cmd = [PY, "-m", "uvicorn", "loadtests.bare_app:app", "--port", str(port), "--loop", "uvloop",
           "--http", "httptools", "--no-access-log", "--log-level", "warning"]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    return subprocess.Popen(cmd, stdout=log, stderr=log, cwd=_ROOT)


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    """Until ``url`` answers 200; fails when ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes], name: str) -> None:
    """Until 127.0.0.1:``port`` accepts connections; fails when ``proc`` (``name``) exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.1)
    raise RuntimeError(f"port {port} did not open within {timeout:.0f} s")


def stop(proc: subprocess.Popen[bytes] | None, timeout: float = 20) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def counter(metrics_text: str, name: str, labels: str = "") -> float:
    """One sample of a Prometheus text exposition (0 when absent)."""
    m = re.search(rf"^{re.escape(name + labels)} ([\d.e+]+)$", metrics_text, re.M)
    return float(m.group(1)) if m else 0.0


def redirects_302(base: str) -> int:
    """The 302s the server has answered (its ``tracker_redirects_total{status="302"}``)."""
    with urllib.request.urlopen(base + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return int(counter(text, "tracker_redirects_total", '{status="302"}'))


def entries_added(client: redis.Redis) -> int:
    """Clicks ever added to the click stream (ingest trimming does not lower it)."""
    try:
        info = client.xinfo_stream(keys.CLICK_STREAM)
    except redis.ResponseError:
        return 0  # no stream yet
    return int(info["entries-added"])


def _api(base: str, method: str, path: str, token: str, body: dict[str, Any]) -> dict[str, Any] | None:
    req = urllib.request.Request(
        base + path,
        method=method,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            data: dict[str, Any] = json.loads(resp.read())
            return data
    except urllib.error.HTTPError as exc:
        if exc.code in (404, 405):
            return None  # the API is not there (yet)
        raise RuntimeError(f"{method} {path} answered {exc.code}: {exc.read()[:300]!r}") from None


def create_links(base: str, redis_url: str) -> tuple[list[str], str]:
    """16 links; through the API when it answers, else written where the registry writes them."""
    brand = _api(base, "POST", "/api/v1/brands", ADMIN, {"name": "Bench", "currency": "USD"})
    if brand is not None:
        key = brand["api_key"]
        campaign = _api(base, "POST", "/api/v1/campaigns", key,
                        {"name": "Bench", "commission": {"type": "percent", "value": "10"}})
        influencer = _api(base, "POST", "/api/v1/influencers", key, {"name": "Bench"})
        if campaign is not None and influencer is not None:
            codes = []
            for i in range(LINKS):
                link = _api(base, "POST", "/api/v1/links", key, {
                    "campaign_id": campaign["id"], "influencer_id": influencer["id"],
                    "destination_url": f"https://shop.example/product/{i}?ref=bench",
                })
                assert link is not None
                codes.append(link["code"])
            return codes, "api"
    client = redis.Redis.from_url(redis_url)
    codes = [f"bench{i:02d}" for i in range(LINKS)]
    for i, code in enumerate(codes):
        record = LinkRecord(
            id=1000 + i, code=code, brand_id="brd_bench", campaign_id="cmp_bench", influencer_id="inf_bench",
            destination_url=f"https://shop.example/product/{i}?ref=bench", coupon_code="", disabled=False,
            expires_at_ms=None, click_id_param="click_id", attribution_window_days=30,
        )
        client.set(keys.link(code), record.encode())
    client.close()
    return codes, "redis"
