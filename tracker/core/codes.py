"""Short codes: hashids over the link sequence, and the rules for vanity codes.

A code is the hashids encoding of the link id (minimum length 6) with a salt
from the settings, so codes are short, not sequential to the eye, and cheap to
map back to the id. ``decode`` accepts only canonical codes: a string that
hashids would decode but that does not re-encode to itself (another alphabet
order, padding variants) answers None, so one link has exactly one code.

Vanity codes (chosen by the brand) live in the same URL space: they must not be
decodable as a hashids code (or they could shadow a future link) and must not
be one of the server's own paths. No I/O here.
"""

from __future__ import annotations

import hashlib
import re

from hashids import Hashids

MIN_LENGTH = 6
# The first path segment of every non-redirect route, and names kept for later ones: the
# redirect never answers them and no code, generated or vanity, may take one.
RESERVED = frozenset(
    {
        "api",
        "healthz",
        "readyz",
        "metrics",
        "openapi.json",
        "dashboard",
        "postback",
        "static",
        "favicon.ico",
        "robots.txt",
        "docs",
        "admin",
        "login",
        "logout",
        "assets",
        "portal",
        "t.js",
        "app",
    }
)
_RESERVED_PATHS = frozenset("/" + name for name in RESERVED)
# Vanity codes: 3 to 64 letters, digits, '-' and '_', starting with a letter or digit.
VANITY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{2,63}$")
_MAX_ID = 2**63 - 1


def salt_for(hashids_salt: str | None, secret_key: str | None) -> str:
    """The configured salt, else one derived from the server secret (stable across restarts)."""
    if hashids_salt:
        return hashids_salt
    if not secret_key:
        raise ValueError("Short codes need TRACKER_HASHIDS_SALT or TRACKER_SECRET_KEY.")
    return hashlib.sha256(b"tracker:hashids:" + secret_key.encode()).hexdigest()[:32]


def is_reserved(code: str) -> bool:
    return code.lower() in RESERVED


def is_redirect_path(path: str) -> bool:
    """True for ``/{code}``: one path segment that is not a server path; the redirect answers it.

    The one place that decides it (the app's dispatch, the request-id middleware);
    a test checks that every route's first segment is in ``RESERVED``.
    """
    return len(path) > 1 and path.find("/", 1) == -1 and path not in _RESERVED_PATHS


class Codes:
    def __init__(self, salt: str) -> None:
        self._hashids = Hashids(salt=salt, min_length=MIN_LENGTH)
        self._alphabet = frozenset(Hashids.ALPHABET)

    def encode(self, link_id: int) -> str:
        if isinstance(link_id, bool) or not isinstance(link_id, int) or not 1 <= link_id <= _MAX_ID:
            raise ValueError(f"Link id {link_id!r} is not a positive 63-bit integer.")
        code: str = self._hashids.encode(link_id)
        return code

    def decode(self, code: object) -> int | None:
        """The link id of a canonical code, else None (never raises)."""
        if not isinstance(code, str) or not MIN_LENGTH <= len(code) <= 20:
            return None
        if not self._alphabet.issuperset(code):
            return None
        numbers = self._hashids.decode(code)
        if len(numbers) != 1:
            return None
        link_id = int(numbers[0])
        if not 1 <= link_id <= _MAX_ID or self._hashids.encode(link_id) != code:
            return None
        return link_id

    def vanity_problem(self, code: str) -> str | None:
        """Why ``code`` cannot be a vanity code, or None when it can."""
        if not VANITY.match(code):
            return (
                f"Code {code!r} is not a valid custom code: use 3 to 64 letters, digits, '-' or '_', "
                "starting with a letter or digit."
            )
        if is_reserved(code):
            return f"Code {code!r} is reserved for the server's own paths."
        if self.decode(code) is not None:
            return f"Code {code!r} has the shape of a generated code; choose another one."
        return None
