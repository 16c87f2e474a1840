"""Checks on text that enters the system from a request. Leaf module."""

from __future__ import annotations

import re

# A request id we accept from a proxy (X-Request-Id) and put on log lines.
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def has_control_chars(text: str) -> bool:
    """C0 controls and DEL (CR and LF among them): never in names, URLs or headers we echo."""
    return any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text)


def is_utf8(text: str) -> bool:
    """False for a string holding a lone surrogate (valid JSON, not valid text)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def clip(text: str, limit: int) -> str:
    """At most ``limit`` characters of ``text`` (the last one an ellipsis when cut): what an
    error message may echo of a value a client sent."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"
