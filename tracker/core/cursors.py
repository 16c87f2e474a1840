"""Opaque keyset cursors over (time, conversion id): what the ledger and the portal's list hand out."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime

from tracker.core.errors import Unprocessable
from tracker.core.timeutil import from_ms, to_ms


def encode(at: datetime, conversion_id: str) -> str:
    return base64.urlsafe_b64encode(f"{to_ms(at)}:{conversion_id}".encode()).decode().rstrip("=")


def decode(cursor: str) -> tuple[datetime, str]:
    """The (time, conversion id) of a cursor ``encode`` gave out; 422 ``invalid_cursor`` otherwise."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        ms, _, cid = raw.partition(":")
        if not cid or not ms.isdigit():
            raise ValueError(raw)
        return from_ms(int(ms)), cid
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise Unprocessable(
            f"cursor {cursor[:64]!r} is not a cursor this route gave out.", code="invalid_cursor"
        ) from None
