"""Credentials as the server keeps them: API keys, postback tokens, store secrets. Leaf module.

API keys and postback tokens carry full entropy and are stored only as their
sha256 hex: a fast unsalted hash is right there, a slow one would protect nothing
against guessing. A store's signing secret cannot be kept as a one-way hash (HMAC
verification needs the key itself), so it is derived from a stored nonce under the
server secret and never stored at all.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

API_KEY_PREFIX = "trk_"
POSTBACK_TOKEN_PREFIX = "pbt_"  # noqa: S105 - a prefix, not a credential


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def looks_like_api_key(value: object) -> bool:
    return isinstance(value, str) and value.startswith(API_KEY_PREFIX) and 20 <= len(value) <= 100


def new_postback_token() -> str:
    return POSTBACK_TOKEN_PREFIX + secrets.token_urlsafe(24)


def token_hash(token: str) -> str:
    """sha256 hex of a credential (API key, postback token): the only form the tables keep."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def derive_key(secret_key: str, purpose: str) -> bytes:
    """A sub-key of the server secret for one purpose (click ids, store secrets, ...)."""
    return hmac.new(secret_key.encode(), b"tracker:" + purpose.encode(), hashlib.sha256).digest()


def store_secret(secret_key: str, nonce: str) -> str:
    """The signing secret of a store: HMAC of its nonce under the server secret (migrations/0006)."""
    return hmac.new(derive_key(secret_key, "store-secret"), nonce.encode("utf-8"), hashlib.sha256).hexdigest()


PORTAL_TOKEN_PREFIX = "pst_"  # noqa: S105 - a prefix, not a credential


def new_portal_token() -> str:
    """A one-time portal sign-in token (stored only as its sha256)."""
    return PORTAL_TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_session_id() -> str:
    return secrets.token_urlsafe(32)


def sign(secret_key: str, purpose: str, message: str) -> str:
    """Hex HMAC-SHA256 of ``message`` under the sub-key of the server secret for ``purpose``."""
    return hmac.new(derive_key(secret_key, purpose), message.encode("utf-8"), hashlib.sha256).hexdigest()


def webhook_secret(secret_key: str, nonce: str) -> bytes:
    """The 32 signing bytes of a webhook endpoint: derived from its nonce, never stored (like store secrets)."""
    return hmac.new(derive_key(secret_key, "webhook-secret"), nonce.encode("utf-8"), hashlib.sha256).digest()
