"""The platform payload fixtures under tests/conversions/fixtures/<platform>/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def raw(platform: str, name: str) -> bytes:
    return (FIXTURES / platform / name).read_bytes()


def data(platform: str, name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(raw(platform, name))
    return loaded


def body(payload: dict[str, Any]) -> bytes:
    """A payload as a platform sends it (compact JSON, UTF-8)."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
