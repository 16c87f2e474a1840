"""One payout run in a process of its own (``python -m tests.money.payout_proc``), for the concurrency
and kill -9 tests: prints each stage of the run, and stops forever at ``--pause`` (to be killed there);
``--outbox`` records the run's audit entries and emits its webhook events after it, as the route
does, as the key ``--key``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import date

import redis.asyncio as aioredis

from tracker.core import ids
from tracker.money import payoutoutbox, payouts
from tracker.registry.audit import AuditLog
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse


async def main(args: argparse.Namespace) -> None:
    ch = ClickHouse.connect(Settings(clickhouse_url=args.clickhouse), create_database=False)
    redis = aioredis.Redis.from_url(args.redis)

    async def stage(name: str) -> None:
        print(json.dumps({"stage": name}), flush=True)
        if name == args.pause:
            await asyncio.Event().wait()

    try:
        # --outbox: as the route does, the audit entries and payout.created events owed under a token,
        # written after the run.
        token = ids.new_id("payout") if args.outbox else None
        made = await payouts.run(ch, redis, {"id": args.brand, "currency": "USD"}, date.fromisoformat(args.period_end),
                                 on_stage=stage, lock_seconds=args.lock_seconds, intent=token, key_id=args.key)
        if token:
            await payoutoutbox.finish_created(AuditLog(ch), redis, args.brand, token, args.key,
                                              payoutoutbox.answers(ch, args.brand, made))
        print(json.dumps({"made": made}), flush=True)
    finally:
        await redis.aclose()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--clickhouse", required=True)
    p.add_argument("--redis", required=True)
    p.add_argument("--brand", required=True)
    p.add_argument("--period-end", required=True)
    p.add_argument("--pause", default="")
    p.add_argument("--lock-seconds", type=float, default=30.0)
    p.add_argument("--outbox", action="store_true")
    p.add_argument("--key", default="key_proc")
    asyncio.run(main(p.parse_args()))
    sys.exit(0)
