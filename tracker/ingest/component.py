"""Ingest in the shell: the embedded server's ingest thread, its readiness, ``tracker ingest``."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

import prometheus_client
import redis
import tenacity

from tracker.core import keys
from tracker.core.errors import SettingsError, StorageUnavailable
from tracker.ingest import delivery
from tracker.ingest.retry import BACKOFF_MAX_SECONDS, GRACE_SECONDS, Abandon
from tracker.ingest.worker import Worker
from tracker.settings import Settings
from tracker.storage import redis_client
from tracker.storage.clickhouse import ClickHouse

log = logging.getLogger("tracker.ingest.worker")

# Readiness: reports are stale when the oldest entry not yet in ClickHouse is older than this.
LAG_PROBLEM_SECONDS = 60.0
# Nice value of the ingest threads inside `tracker serve` (embedded): below the event loop's.
EMBEDDED_NICE = 10


async def stream_stats_async(r: Any, stream: str) -> dict[str, Any]:
    return delivery.gauges(await delivery.stats_async(r, stream, keys.INGEST_GROUP))


class IngestComponent:
    """The ingest loop in a background thread of ``tracker serve`` (embedded mode)."""

    def __init__(self, settings: Settings, ch: ClickHouse) -> None:
        self.settings = settings
        self.ch = ch
        self.worker: Worker | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._redis: redis.Redis | None = None

    async def start(self) -> None:
        self._redis = redis_client.connect_sync(self.settings)
        self.worker = Worker(self.settings, self._redis, self.ch, nice=EMBEDDED_NICE)
        self._thread = threading.Thread(target=self._run, name="tracker-ingest", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        assert self.worker is not None
        try:
            self.worker.run(self._stop)
        except Exception:
            log.exception("the ingest loop crashed")

    async def stop(self) -> None:
        import anyio.to_thread

        self._stop.set()
        if self._thread is not None:
            await anyio.to_thread.run_sync(self._thread.join, GRACE_SECONDS + 5)
        if self._redis is not None:
            self._redis.close()


async def ingest_status(settings: Settings, redis: Any, component: IngestComponent) -> dict[str, Any]:
    """Readiness: lag and pending per stream, and a ``problem`` when reports go stale."""
    streams = [*keys.click_streams(settings.stream_shards), *keys.conversion_streams()]
    out: dict[str, Any] = {"streams": {}}
    worst = 0.0
    for stream in streams:
        st = await stream_stats_async(redis, stream)
        st.pop("trim_below")
        out["streams"][stream] = st
        worst = max(worst, st["oldest_pending_seconds"], st["oldest_undelivered_seconds"])
    problems = []
    if component.worker is not None:
        ws = component.worker.status()
        out["worker"] = ws
        if ws["clickhouse_error"] and ws["clickhouse_failing_seconds"] >= 5:
            problems.append(f"Ingest cannot write to ClickHouse: {ws['clickhouse_error']}")
        # Only the embedded server owns its ingest; a production HTTP worker stays ready
        # while a separate ingest fleet catches up (redirects do not need it).
        if worst > LAG_PROBLEM_SECONDS:
            problems.append(f"Ingest is {worst:.0f} s behind: clicks reach reports late.")
    if problems:
        out["problem"] = " ".join(problems)
    return out


def run_worker(settings: Settings, once: bool) -> int:
    """``tracker ingest [--once]``: one worker until SIGTERM/SIGINT (or until drained)."""
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        log.info("signal %d: finishing the batch and stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        ch = _connect(settings, stop)
    except _Stopped:
        return 0
    r = redis_client.connect_sync(settings)
    worker = Worker(settings, r, ch)
    server = None
    if settings.ingest_metrics is not None and not once:
        # This process's counters (rows, batches, retries, repairs, dead letters) and the stream
        # gauges its maintenance refreshes every few seconds, for a Prometheus on another host.
        host, port = settings.ingest_metrics
        try:
            server, _ = prometheus_client.start_http_server(port, addr=host)
        except OSError as exc:
            r.close()
            ch.close()
            raise SettingsError(f"TRACKER_INGEST_METRICS={host}:{port} cannot be served: {exc.strerror}.") from None
        log.info("ingest metrics on http://%s:%d/metrics", host, port)
    try:
        if once:
            n = worker.drain(stop)
            log.info("drained %d rows", n)
        else:
            worker.run(stop)
    except Abandon:
        return 0
    finally:
        if server is not None:
            server.shutdown()
        r.close()
        ch.close()
    return 0


class _Stopped(Exception):
    pass


def _connect(settings: Settings, stop: threading.Event) -> ClickHouse:
    """Connect to ClickHouse, waiting while it is unreachable (a deploy may start us first)."""

    def wait(seconds: float) -> None:
        if stop.wait(seconds):
            raise _Stopped

    def failed(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, StorageUnavailable) and (state.attempt_number == 1 or state.attempt_number % 10 == 0):
            log.warning("%s Retrying.", exc.message)

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(StorageUnavailable),
        wait=tenacity.wait_exponential(multiplier=0.4, max=BACKOFF_MAX_SECONDS),
        sleep=wait,
        before_sleep=failed,
        reraise=True,
    )
    return retrying(ClickHouse.connect, settings)
