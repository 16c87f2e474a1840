"""A ClickHouse HTTP endpoint in front of a chDB directory, for tests and benchmarks.

No ClickHouse server recent enough for clickhouse-connect can be installed on the
development and CI machines, and chDB allows one owner process. To run the
production topology here anyway (several `tracker serve` workers, separate
`tracker ingest` processes, all with `CLICKHOUSE_URL=http://...`), this process
owns the chDB engine and serves it with the package's endpoint
(`tracker.storage.chdb_http`, which `tracker serve --workers N` runs in embedded
mode). By default it accepts the user `default` with no password, as a fresh
ClickHouse server does, so `CLICKHOUSE_URL=http://127.0.0.1:PORT/db` works as is.

    python -m loadtests.chdb_http --path /tmp/ch --port 8123 [--user U --password P]
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path

from tracker.storage.chdb_http import ChdbEndpoint


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--path", type=Path, required=True, help="chDB data directory")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8123)
    p.add_argument("--user", default="default")
    p.add_argument("--password", default="")
    p.add_argument("--max-queries", type=int, default=4, help="statements that run at once")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    endpoint = ChdbEndpoint(args.path.resolve(), host=args.host, port=args.port, user=args.user,
                            password=args.password, max_queries=args.max_queries)
    endpoint.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"chdb-http serving {args.path} on http://{args.host}:{endpoint.port}", flush=True)
    stop.wait()
    endpoint.stop()


if __name__ == "__main__":
    main()
