"""Random public identifiers (``cmp_3kT9...``): unguessable, sortable by nothing.

Leaf module.
"""

from __future__ import annotations

import os
import secrets
import string

_ALPHABET = string.ascii_letters + string.digits

PREFIXES = {
    "brand": "brd",
    "campaign": "cmp",
    "influencer": "inf",
    "store": "sto",
    "fee": "fee",
    "conversion": "cnv",
    "audit": "aud",
    "webhook": "whk",
    "payout": "pay",
}


# Random bytes below this map evenly onto the alphabet (4 x 62); the others are drawn again.
_EVEN = 4 * len(_ALPHABET)


# Random bytes are read from the OS 4 KiB at a time (an ``os.urandom`` call per id was a syscall on
# every postback) and never shared with a forked child, which would then mint the parent's ids.
_POOL_BYTES = 4096
_pool = bytearray()


def _forget_pool() -> None:
    _pool.clear()


os.register_at_fork(after_in_child=_forget_pool)


def _random_bytes(n: int) -> bytes:
    if len(_pool) < n:
        _pool.extend(secrets.token_bytes(_POOL_BYTES))
    out = bytes(_pool[-n:])
    del _pool[-n:]
    return out


def request_id() -> str:
    """A new request id: 16 hex digits (``secrets.token_hex(8)``'s form), from the pool, not a syscall."""
    return _random_bytes(8).hex()


def new_id(kind: str, length: int = 16) -> str:
    # One read of random bytes, not one ``secrets.choice`` a character (ids are made on the postback path).
    chars: list[str] = []
    while len(chars) < length:
        chars.extend(_ALPHABET[b % len(_ALPHABET)] for b in _random_bytes(length + 4) if b < _EVEN)
    return PREFIXES[kind] + "_" + "".join(chars[:length])


def looks_like(kind: str, value: object) -> bool:
    """Cheap shape check before any storage access (a wrong shape answers 404 at once)."""
    if not isinstance(value, str):
        return False
    prefix = PREFIXES[kind] + "_"
    return value.startswith(prefix) and 8 <= len(value) - len(prefix) <= 40 and value[len(prefix):].isalnum()
