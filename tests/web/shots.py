"""Where browser tests put their screenshots: ``test-artifacts/``, or ``docs/`` (the README's
pictures) when refreshed on purpose with ``TRACKER_SCREENSHOTS=docs``; a plain run never
changes a tracked file."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def shot(name: str) -> str:
    folder = ROOT / ("docs" if os.environ.get("TRACKER_SCREENSHOTS") == "docs" else "test-artifacts")
    folder.mkdir(exist_ok=True)
    return str(folder / name)
