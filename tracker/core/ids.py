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


def new_id(kind: str, length: int = 16) -> str:
    prefix = PREFIXES[kind]
    return prefix + "_" + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def looks_like(kind: str, value: object) -> bool:
    """Cheap shape check before any storage access (a wrong shape answers 404 at once)."""
    if not isinstance(value, str):
        return False
    prefix = PREFIXES[kind] + "_"
    return value.startswith(prefix) and 8 <= len(value) - len(prefix) <= 40 and value[len(prefix):].isalnum()
