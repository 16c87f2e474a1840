"""Random public identifiers (``cmp_3kT9...``): unguessable, sortable by nothing.

Leaf module.
"""

from __future__ import annotations

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


def new_id(kind: str, length: int = 16) -> str:
    # One read of random bytes, not one ``secrets.choice`` a character (ids are made on the postback path).
    chars: list[str] = []
    while len(chars) < length:
        chars.extend(_ALPHABET[b % len(_ALPHABET)] for b in secrets.token_bytes(length + 4) if b < _EVEN)
    return PREFIXES[kind] + "_" + "".join(chars[:length])


def looks_like(kind: str, value: object) -> bool:
    """Cheap shape check before any storage access (a wrong shape answers 404 at once)."""
    if not isinstance(value, str):
        return False
    prefix = PREFIXES[kind] + "_"
    return value.startswith(prefix) and 8 <= len(value) - len(prefix) <= 40 and value[len(prefix):].isalnum()
