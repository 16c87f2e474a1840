"""Postback signatures: ``X-Signature: t=<unix>,v1=<hex>`` over the raw body.

``v1 = hex(HMAC-SHA256(store_secret, f"{t}.{raw_body}"))``, the scheme Stripe
uses for webhooks: the timestamp inside the MAC stops replays of an old body
outside the tolerance window, and the raw bytes (not re-serialised JSON) are
what is signed, so key order and whitespace never matter. Several ``v1`` values
may be sent (a store rotating its secret); one matching is enough. Comparisons
are constant-time.

Leaf module: imports nothing of the project.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

TOLERANCE_SECONDS = 300
_MAX_HEADER = 1024


class SignatureError(ValueError):
    """The header is missing, malformed, out of the time window, or does not match."""


@dataclass(frozen=True, slots=True)
class SignatureHeader:
    timestamp: int
    signatures: tuple[str, ...]


def compute(secret: str, timestamp: int, body: bytes) -> str:
    """The hex ``v1`` value of ``body`` signed at ``timestamp``."""
    message = str(timestamp).encode("ascii") + b"." + body
    # One-shot C HMAC: the same digest as hmac.new(...).hexdigest() without building an HMAC object.
    return hmac.digest(secret.encode("utf-8"), message, "sha256").hex()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The whole ``X-Signature`` header value (what a store sends)."""
    return f"t={timestamp},v1={compute(secret, timestamp, body)}"


def parse_header(header: str | None) -> SignatureHeader:
    if header is None or not header.strip():
        raise SignatureError("The X-Signature header is missing.")
    if len(header) > _MAX_HEADER:
        raise SignatureError("The X-Signature header is too long.")
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            raise SignatureError("The X-Signature header must read t=<unix seconds>,v1=<hex>.")
        if key == "t":
            if timestamp is not None or not value.isascii() or not value.isdigit() or len(value) > 12:
                raise SignatureError("The X-Signature timestamp t must be one unix time in seconds.")
            timestamp = int(value)
        elif key == "v1":
            signatures.append(value.lower())
        # Other schemes (v0, future v2) are ignored, as Stripe does, so they can be added.
    if timestamp is None:
        raise SignatureError("The X-Signature header has no timestamp t=<unix seconds>.")
    if not signatures:
        raise SignatureError("The X-Signature header has no v1=<hex> signature.")
    return SignatureHeader(timestamp, tuple(signatures))


def check_timestamp(parsed: SignatureHeader, now: float, tolerance: int = TOLERANCE_SECONDS) -> None:
    """The signing time must lie within ``tolerance`` seconds of ``now``, either side."""
    if abs(now - parsed.timestamp) > tolerance:
        raise SignatureError(
            f"The X-Signature timestamp t={parsed.timestamp} is more than {tolerance} seconds "
            f"from the server time {int(now)}; sign each request when it is sent."
        )


def matches(parsed: SignatureHeader, secret: str, body: bytes) -> bool:
    expected = compute(secret, parsed.timestamp, body).encode("ascii")
    ok = False
    for candidate in parsed.signatures:
        # No early exit: every candidate is compared, each in constant time. Bytes,
        # because compare_digest refuses non-ASCII str (a garbled header must not raise).
        ok |= hmac.compare_digest(expected, candidate.encode("utf-8", "replace"))
    return ok


def verify(
    header: str | None, secret: str, body: bytes, now: float, tolerance: int = TOLERANCE_SECONDS
) -> None:
    """Raise SignatureError unless ``header`` signs ``body`` with ``secret`` recently enough."""
    parsed = parse_header(header)
    check_timestamp(parsed, now, tolerance)
    if not matches(parsed, secret, body):
        raise SignatureError("The X-Signature does not match the body and the store secret.")
