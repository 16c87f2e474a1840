"""Test-only: run ``tracker`` killed (SIGKILL, sent by itself) right after a payout action commits.

``MONEY_CRASH_AT=after_run python -m tests.money.faults_plugin serve ...`` runs the CLI after wrapping
the payout steps the routes call, so the process is killed the first time it passes that step:

- ``after_run``: a run's payouts are committed in ClickHouse (``payouts.run`` returned); the route
  has not recorded their audit entries nor emitted their events;
- ``after_paid``: a payment is committed (``payouts.mark_paid`` returned), the same.

``MONEY_CRASH_AT=`` (empty) runs it without a kill. Every run shortens the recovery's timers so a
test waits seconds, not minutes: the brand's money lock lapses after 3 s instead of 30 (renewed every
second while held), the sender's maintenance round (which settles what a kill left owed) runs every
2 s instead of 30, and an intent is settled once 1 s old instead of 10. The steps are the same.

Production code knows nothing of this.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import Any

from tracker import cli
from tracker.money import lock, payoutoutbox, payouts
from tracker.webhooks import sender

STEPS = ("after_run", "after_paid")


def _kill(step: str) -> None:
    logging.getLogger("tracker.money").error("fault injection: SIGKILL at %s", step)
    logging.shutdown()
    os.kill(os.getpid(), signal.SIGKILL)


def quick_timers() -> None:
    brand_lock = lock.brand_lock.__wrapped__  # the generator under asynccontextmanager
    brand_lock.__kwdefaults__ = {**brand_lock.__kwdefaults__, "seconds": 3.0}
    payouts.run.__kwdefaults__ = {**(payouts.run.__kwdefaults__ or {}), "lock_seconds": 3.0}
    payoutoutbox.recover.__defaults__ = (1.0,)
    sender.MAINTAIN_SECONDS = 2.0


def install(step: str) -> None:
    quick_timers()
    if not step:
        return
    if step not in STEPS:
        raise SystemExit(f"unknown crash step {step!r}; one of {', '.join(STEPS)}")
    run, mark_paid = payouts.run, payouts.mark_paid

    async def run_and_crash(*args: Any, **kw: Any) -> list[str]:
        made = await run(*args, **kw)
        if step == "after_run" and made:
            _kill(step)
        return made

    async def mark_paid_and_crash(*args: Any, **kw: Any) -> dict[str, Any]:
        paid = await mark_paid(*args, **kw)
        if step == "after_paid":
            _kill(step)
        return paid

    payouts.run = run_and_crash
    payouts.mark_paid = mark_paid_and_crash


def main(argv: list[str] | None = None) -> Any:
    install(os.environ.get("MONEY_CRASH_AT", ""))
    return cli.main(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    raise SystemExit(main())
