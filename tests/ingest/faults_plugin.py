"""Test-only: run ``tracker`` with the ingest worker exiting hard at a chosen step.

``INGEST_CRASH_AT=after_insert:3 python -m tests.ingest.faults_plugin ingest --once`` runs
the CLI after wrapping the worker's steps, so the process calls ``os._exit(137)`` (no
cleanup, no flush: as a kill would leave it) the 3rd time it reaches that step:

- ``mid_batch``: a read brought entries (their ranges are recorded), nothing decoded yet;
- ``before_insert``: a batch is about to be written to ClickHouse;
- ``after_insert``: its rows are in ClickHouse, its ranges not yet dropped.

Several steps may be given, comma-separated. Production code knows nothing of this.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from tracker import cli
from tracker.ingest.batch import Batch
from tracker.ingest.reader import Reader
from tracker.ingest.writer import Writer

STEPS = ("mid_batch", "before_insert", "after_insert")


def parse(spec: str) -> dict[str, int]:
    points: dict[str, int] = {}
    for item in filter(None, (p.strip() for p in spec.split(","))):
        name, _, count = item.partition(":")
        if name not in STEPS:
            raise SystemExit(f"unknown crash step {name!r}; one of {', '.join(STEPS)}")
        points[name] = int(count or "1")
    return points


def install(points: dict[str, int]) -> None:
    """Wrap the step methods so that reaching a step the n-th time exits the process."""

    def reached(step: str) -> None:
        left = points.get(step)
        if left is None:
            return
        if left <= 1:
            logging.getLogger("tracker.ingest.worker").error("fault injection: exiting hard at %s", step)
            logging.shutdown()
            os._exit(137)
        points[step] = left - 1

    write: Callable[[Writer, Batch], None] = Writer.write
    prefetch: Callable[[Reader], None] = Reader.prefetch

    def write_and_crash(self: Writer, batch: Batch) -> None:
        reached("before_insert")
        write(self, batch)
        reached("after_insert")

    def prefetch_and_crash(self: Reader) -> None:
        reached("mid_batch")  # a read absorbed entries: the next step decodes them
        prefetch(self)

    Writer.write = write_and_crash  # type: ignore[method-assign]
    Reader.prefetch = prefetch_and_crash  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> Any:
    install(parse(os.environ.get("INGEST_CRASH_AT", "")))
    return cli.main(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    raise SystemExit(main())
