"""``tracker serve --workers N`` in embedded mode: one process owns the engines, N serve HTTP.

chDB allows one owner process per data directory, so the HTTP workers cannot open
it. The main process, which ``tracker.cli`` has already made the owner of the data
directory (its lock, the embedded Valkey, chDB with the migrations applied), here

- serves chDB to the workers as a ClickHouse HTTP endpoint on 127.0.0.1, with a
  password made for this start (``storage.chdb_http``);
- runs the ingest loop (streams -> chDB, in-process and at nice 10, as one process does)
  and the outbound webhook sender;
- starts N uvicorn workers of the production app (``app.create_worker_app``) with
  ``REDIS_URL`` = the Valkey's Unix socket and ``CLICKHOUSE_URL`` = the endpoint:
  the workers run exactly the production code path (redirects, postbacks, the
  registry, reports), and uvicorn replaces a worker that dies.

Stopping (SIGTERM or SIGINT to the main process): the workers first (in-flight
requests finish, their click logs flush), then ingest (its current batch), then
the endpoint; the caller stops Valkey last. A ``kill -9`` of the main process: the
kernel sends every worker SIGTERM (``die_with_parent``, armed as a worker starts),
and Valkey too, so nothing keeps running or holds the port; the next start
recovers the AOF, the spool and the ingest ranges as after a crash of one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
from pathlib import Path
from typing import Any

from tracker.settings import Settings

log = logging.getLogger("tracker.supervisor")

WORKER_APP = "tracker.app:create_worker_app"
EXIT_UNAVAILABLE = 3
BACKGROUND_NICE = 10  # as the ingest threads of a single embedded process
_PR_SET_PDEATHSIG = 1
# Statements the endpoint runs at once: the workers' reports and registry calls. Each chDB
# query is itself multi-threaded, so more than a few only queue inside the engine.
ENDPOINT_QUERIES = max(2, min(8, 2 * (os.cpu_count() or 1)))


def run(settings: Settings, workers: int, options: dict[str, Any]) -> int:
    """Serve with ``workers`` HTTP processes until SIGTERM/SIGINT; the exit code.

    ``settings`` are the main process's (embedded, ``redis_url`` = the running Valkey);
    ``options`` are uvicorn's (host, port, protocol, logging) as for the production workers.
    """
    import uvicorn

    from tracker.ingest.component import IngestComponent
    from tracker.storage.chdb_http import ChdbEndpoint
    from tracker.storage.clickhouse import ClickHouse, chdb_path
    from tracker.webhooks.component import WebhookComponent

    config = uvicorn.Config(WORKER_APP, factory=True, workers=workers, **options)
    try:
        sock = config.bind_socket()  # before the endpoint, ingest and the workers: a port in use stops here
    except SystemExit:  # uvicorn has logged why
        return EXIT_UNAVAILABLE
    try:
        endpoint = ChdbEndpoint(chdb_path(settings), max_queries=ENDPOINT_QUERIES,
                                tmp_dir=settings.data_dir / "tmp", nice=BACKGROUND_NICE)
        ch = ClickHouse.connect(settings)  # the same engine, for the ingest loop
        ingest = IngestComponent(settings, ch)
        webhooks = WebhookComponent(settings, ch)  # the outbound webhook sender, as one process runs it
        endpoint.start()
        try:
            asyncio.run(ingest.start())
            asyncio.run(webhooks.start())
            try:
                # Spawned workers inherit the environment: what this process decided, they read.
                os.environ.update(worker_environment(settings, endpoint.url(ch.database)))
                log.info("chDB threads at nice %d: %d", BACKGROUND_NICE, engine_threads_priority())
                return _run_workers(config, sock)
            finally:
                asyncio.run(webhooks.stop())
                asyncio.run(ingest.stop())
        finally:
            endpoint.stop()
            ch.close()
    finally:
        sock.close()


def worker_environment(settings: Settings, clickhouse_url: str) -> dict[str, str]:
    """The variables that make a worker a production-mode process on this main process's engines."""
    assert settings.redis_url and settings.secret_key and settings.admin_token and settings.public_url
    return {
        "REDIS_URL": settings.redis_url,
        "CLICKHOUSE_URL": clickhouse_url,
        "TRACKER_DATA_DIR": str(settings.data_dir),  # the spool's default place
        "TRACKER_SECRET_KEY": settings.secret_key,
        "TRACKER_ADMIN_TOKEN": settings.admin_token,
        "TRACKER_PUBLIC_URL": settings.public_url,
    }


def engine_threads_priority(nice: int = BACKGROUND_NICE) -> int:
    """Give way to the workers: chDB's threads in this process to ``nice``; how many changed.

    Nothing in this process answers a follower: the engine's work for ingest and for
    the endpoint (reports, registry) can wait while the workers redirect. chDB names
    its threads (Python's keep the process's name), so only those are changed; the
    endpoint and ingest lower their own threads, and threads any of them start later
    inherit the value. Python threads of this process are left alone: the main thread
    starts the workers, and a thread that starts Valkey, whose children would inherit
    a raised nice value and could not lower it. Threads that set their own priority
    (chDB raises its memory tracker's) are left alone too.
    """
    ours = Path("/proc/self/comm").read_text().strip()
    changed = 0
    for _ in range(2):  # a thread started during the first pass is caught by the second
        for task in Path("/proc/self/task").iterdir():
            with contextlib.suppress(OSError, ValueError):
                tid = int(task.name)
                if (task / "comm").read_text().strip() != ours and 0 <= os.getpriority(os.PRIO_PROCESS, tid) < nice:
                    os.setpriority(os.PRIO_PROCESS, tid, nice)
                    changed += 1
    return changed


def _run_workers(config: Any, sock: Any) -> int:
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors.multiprocess import Multiprocess

    # uvicorn's supervisor: it handles SIGTERM/SIGINT (stop the workers, then return),
    # SIGHUP (replace them one by one), TTIN/TTOU, and restarts a worker that dies.
    supervisor = Multiprocess(config, sockets=[sock])
    supervisor.run()
    if any(p.exitcode == STARTUP_FAILURE for p in supervisor.processes):
        log.error("the HTTP workers failed to start; see the lines above")
        return EXIT_UNAVAILABLE
    return 0


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """In a worker of ``tracker serve --workers N``: have the kernel send ``sig`` when the main
    process dies (Linux), so a ``kill -9`` of it leaves no worker serving or holding the port.

    A no-op in a process that ``multiprocessing`` did not start (one process, tests).
    """
    parent = multiprocessing.parent_process()
    if parent is None or parent.pid is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)
    if os.getppid() != parent.pid:  # it died before the signal was armed
        log.warning("the main process %d is gone; this worker stops", parent.pid)
        raise SystemExit(0)
