"""Command line: ``tracker serve | ingest | webhooks | migrate | verify-statement``.

Errors a user can fix (a bad setting, an unreachable service, a failed
migration) print one line and exit non-zero (2 for settings), never a traceback.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tracker import __version__
from tracker.core.errors import MigrationError, SettingsError, StorageUnavailable, TrackerError
from tracker.settings import Settings

if TYPE_CHECKING:
    from tracker.storage.embedded import EmbeddedRedis

EXIT_SETTINGS = 2
EXIT_UNAVAILABLE = 3
EXIT_MIGRATION = 4


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tracker",
        description="Self-hosted affiliate-link and conversion tracking server.",
        epilog="Configuration comes from the environment; see README.md. "
        "With neither REDIS_URL nor CLICKHOUSE_URL set, serve runs everything embedded.",
    )
    p.add_argument("--version", action="version", version=f"tracker {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="{serve,ingest,webhooks,migrate,verify-statement}")

    serve = sub.add_parser("serve", help="Run the HTTP server (and, embedded, Redis, chDB and ingest).")
    serve.add_argument("--host", default="127.0.0.1", help="Address to bind (default 127.0.0.1).")
    serve.add_argument("--port", type=int, default=8000, help="Port to bind (default 8000).")
    serve.add_argument(
        "--workers", type=int, default=1,
        help="HTTP worker processes (default 1). Embedded, with N > 1 the main process keeps Valkey, chDB "
        "and ingest, and N workers serve HTTP.",
    )
    serve.add_argument("--data-dir", type=Path, default=None, help="Embedded data directory (default ./var).")

    ingest = sub.add_parser("ingest", help="Move clicks and conversions from Redis streams into ClickHouse.")
    ingest.add_argument("--once", action="store_true", help="Drain what is in the streams now and exit.")

    sub.add_parser("webhooks", help="Send outbound webhooks (production; embedded serve sends them itself).")

    migrate = sub.add_parser("migrate", help="Apply pending ClickHouse migrations.")
    migrate.add_argument(
        "--cluster",
        metavar="NAME",
        help="Apply them to this ClickHouse cluster as Replicated + Distributed tables "
        "(default: TRACKER_CLICKHOUSE_CLUSTER).",
    )
    verify = sub.add_parser("verify-statement", help="Check the hash chain of a saved statement (JSON or CSV).")
    verify.add_argument("file", type=Path, help="A statement saved from the API or the portal.")
    return p


def verify_statement(path: Path) -> int:
    """Exit 0 and print the head hash when the chain holds; 1 with one line naming the broken entry."""
    from tracker.money import chain

    try:
        entries, head = chain.load(path.read_text(encoding="utf-8"))
        head_hash = chain.verify(entries, head)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"tracker: {path}: statement does not verify: {exc}", file=sys.stderr)
        return 1
    print(f"ok: {len(entries)} entries, head hash {head_hash}")
    return 0


def _settings(data_dir: Path | None = None) -> Settings:
    settings = Settings.from_env()
    if data_dir is not None:
        settings = settings.with_(data_dir=data_dir)
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            return serve(args)
        if args.command == "ingest":
            return ingest(args)
        if args.command == "webhooks":
            return webhooks()
        if args.command == "verify-statement":
            return verify_statement(args.file)
        return migrate_cmd(args)
    except SettingsError as exc:
        print(f"tracker: {exc.message}", file=sys.stderr)
        return EXIT_SETTINGS
    except MigrationError as exc:
        print(f"tracker: {exc.message}", file=sys.stderr)
        return EXIT_MIGRATION
    except StorageUnavailable as exc:
        print(f"tracker: {exc.message}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except TrackerError as exc:
        print(f"tracker: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from tracker import startup
    from tracker.conversions import seen
    from tracker.ops import logs

    if not 0 < args.port < 65536:
        raise SettingsError(f"--port {args.port} is not a TCP port.")
    if args.workers < 1:
        raise SettingsError(f"--workers {args.workers} must be at least 1.")
    settings = _settings(args.data_dir)
    log_config = logs.setup(settings.log_level)
    if settings.public_url is None:
        settings = settings.with_(public_url=f"http://{args.host}:{args.port}")

    if not settings.embedded:
        startup.run_checks(settings)
        if args.workers > 1:
            # Each worker process re-reads the environment; pass what the flags decided.
            os.environ["TRACKER_PUBLIC_URL"] = settings.public_url or ""
            seen.share_across_workers(_multiprocess_metrics_dir())
            _connection_limits(settings)
            uvicorn.run(
                "tracker.app:create_worker_app", factory=True, workers=args.workers,
                **_uvicorn_options(args, log_config, settings),
            )
            return 0
        return _run_single(settings, args, log_config)

    shared: Path | None = None
    if args.workers > 1:
        # Before anything imports prometheus-client: the main process's ingest counters then
        # land in the directory every worker's /metrics reads.
        shared = _multiprocess_metrics_dir()
    from tracker.storage.embedded import DataDirLock, EmbeddedRedis, prepare_data_dir

    first_start = settings.admin_token is None and not (settings.data_dir.resolve() / "admin_token").exists()
    settings = prepare_data_dir(settings)
    if first_start:
        print(next_steps(settings), file=sys.stderr, flush=True)
    lock = DataDirLock(settings.data_dir)
    lock.acquire()
    redis_server = EmbeddedRedis(settings.data_dir)
    try:
        redis_server.start()
        settings = settings.with_(redis_url=redis_server.url)
        startup.run_checks(settings)
        redis_server.supervise()
        if args.workers > 1:
            from tracker import supervisor

            _connection_limits(settings)
            assert shared is not None
            seen.share_across_workers(shared)
            return supervisor.run(settings, args.workers, _uvicorn_options(args, log_config, settings))
        return _run_single(settings, args, log_config, redis_server)
    finally:
        redis_server.stop()
        lock.release()


def next_steps(settings: Settings) -> str:
    """What a newcomer does after the first start (printed once, under the generated admin token)."""
    url = (settings.public_url or "http://127.0.0.1:8000").rstrip("/")
    return (
        "\nNext steps:\n"
        f"  1. Open {url}/app, choose \"First time here?\", paste the admin token above and create your brand;\n"
        "     the app shows the brand's API key once and signs you in with it.\n"
        "  2. Or with curl:\n"
        f"       ADMIN=$(cat {settings.data_dir / 'admin_token'})\n"
        f"       curl -s -X POST {url}/api/v1/brands -H \"Authorization: Bearer $ADMIN\" "
        "-d '{\"name\":\"Acme\",\"currency\":\"USD\"}'\n"
        "  3. The README's quickstart goes on from there to a click and a sale in a report.\n"
    )


_PROTOCOL = "tracker.api.connections:GuardedHttpToolsProtocol"


def _connection_limits(settings: Settings) -> None:
    """Raise the descriptor limit as far as allowed (before workers start: they inherit it) and say
    how many connections a process takes."""
    import logging

    from tracker.api.connections import Limits, raise_descriptor_limit

    soft, _ = raise_descriptor_limit()
    limits = Limits.from_settings(settings)
    logging.getLogger("tracker.cli").info(
        "each process takes up to %d connections (descriptor limit %d), headers within %g s, keep-alive %d s",
        limits.max_connections, soft, limits.header_timeout, settings.keepalive_seconds,
    )


def _uvicorn_options(args: argparse.Namespace, log_config: dict[str, object], settings: Settings) -> dict[str, Any]:
    """uvicorn's options for every server process (one, or each of ``--workers N``)."""
    return {
        "host": args.host,
        "port": args.port,
        "loop": "uvloop",
        # uvicorn's httptools protocol plus header deadline, header size bound and connection cap.
        "http": _PROTOCOL,
        "timeout_keep_alive": settings.keepalive_seconds,
        # X-Forwarded-For is judged by the app against TRACKER_TRUSTED_PROXIES, not by uvicorn.
        "proxy_headers": False,
        "log_config": log_config,
        "access_log": False,
        "timeout_graceful_shutdown": 10,
    }


def _multiprocess_metrics_dir() -> Path:
    """Point prometheus-client of every worker at one directory, emptied first.

    Must run before the workers start: prometheus-client picks its storage when a
    process imports it. Workers are spawned fresh, so they inherit the variable.
    Leftover files of an earlier run would add its counts to this one's.
    """
    import atexit
    import shutil
    import tempfile

    configured = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if configured:
        path = Path(configured)
        path.mkdir(parents=True, exist_ok=True)
        for old in path.glob("*.db"):
            old.unlink()
    else:
        path = Path(tempfile.mkdtemp(prefix="tracker-metrics-"))
        atexit.register(shutil.rmtree, path, ignore_errors=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    return path


def _run_single(
    settings: Settings, args: argparse.Namespace, log_config: dict[str, object],
    embedded_redis: EmbeddedRedis | None = None,
) -> int:
    import uvicorn

    from tracker.api.connections import GuardedHttpToolsProtocol
    from tracker.app import create_app

    _connection_limits(settings)
    GuardedHttpToolsProtocol.configure(settings)
    options = {**_uvicorn_options(args, log_config, settings), "http": GuardedHttpToolsProtocol}
    config = uvicorn.Config(
        create_app(settings, checked=True, embedded_redis=embedded_redis), lifespan="on", **options
    )
    server = uvicorn.Server(config)
    stopped_by: list[int] = []

    def _note(signum: int, frame: object) -> None:
        stopped_by.append(signum)

    # uvicorn re-raises the signal that stopped it once it has shut down; with these
    # handlers in place that only records it, so the embedded services are stopped
    # in order by our caller instead of the process dying mid-cleanup.
    previous = {sig: signal.signal(sig, _note) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if server.started else EXIT_UNAVAILABLE


def ingest(args: argparse.Namespace) -> int:
    from tracker.ops import logs

    settings = _settings()
    logs.setup(settings.log_level)
    if settings.embedded:
        raise SettingsError(
            "tracker ingest needs REDIS_URL and CLICKHOUSE_URL; in embedded mode `tracker serve` runs ingest itself."
        )
    from tracker.ingest.component import run_worker
    from tracker.storage import cluster
    from tracker.storage.clickhouse import ClickHouse

    # A cluster schema needs the cluster's insert settings. Checked when ClickHouse answers
    # now; when it does not, the worker waits for it as before (the streams hold the rows).
    try:
        ch = ClickHouse.connect(settings)
    except StorageUnavailable:
        pass
    else:
        cluster.check_mode(ch)
        ch.close()
    code: int = run_worker(settings, once=args.once)
    return code


def webhooks() -> int:
    from tracker.ops import logs
    from tracker.webhooks.component import run_process

    settings = _settings()
    logs.setup(settings.log_level)
    if settings.embedded:
        raise SettingsError(
            "tracker webhooks needs REDIS_URL and CLICKHOUSE_URL; in embedded mode `tracker serve` sends "
            "webhooks itself."
        )
    if not settings.secret_key:
        raise SettingsError("tracker webhooks needs TRACKER_SECRET_KEY (the same as the servers') to sign deliveries.")
    return run_process(settings)


def migrate_cmd(args: argparse.Namespace) -> int:
    from tracker.storage import migrate, version
    from tracker.storage.clickhouse import ClickHouse, describe

    # --cluster stands for TRACKER_CLICKHOUSE_CLUSTER and is validated the same way.
    cluster = {"TRACKER_CLICKHOUSE_CLUSTER": args.cluster} if args.cluster is not None else {}
    settings = Settings.from_env({**os.environ, **cluster})
    ch = ClickHouse.connect(settings)
    version.require(ch)
    applied = migrate.migrate(ch, retention_months=settings.click_retention_months)
    where = describe(settings) + (f" (cluster {settings.clickhouse_cluster})" if settings.clickhouse_cluster else "")
    if applied:
        print(f"Applied {len(applied)} migration(s) to {where}: {', '.join(applied)}")
    else:
        print(f"{where} is up to date.")
    ch.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
