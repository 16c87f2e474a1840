"""Credentials as the server keeps them: API keys, postback tokens, store secrets. Leaf module.

API keys and postback tokens carry full entropy and are stored only as their
sha256 hex: a fast unsalted hash is right there, a slow one would protect nothing
against guessing. A store's signing secret cannot be kept as a one-way hash (HMAC
verification needs the key itself), so it is derived from a stored nonce under the
server secret and never stored at all.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
import time

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


@functools.lru_cache(maxsize=64)
def derive_key(secret_key: str, purpose: str) -> bytes:
    """A sub-key of the server secret for one purpose (click ids, store secrets, ...)."""
    return hmac.new(secret_key.encode(), b"tracker:" + purpose.encode(), hashlib.sha256).digest()


@functools.lru_cache(maxsize=4096)  # checked on every postback
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


def session_cookie(secret_key: str, purpose: str, sid: str, expires_ms: int) -> str:
    """A session cookie value: ``<sid>.<expiry ms>.<signature>``, signed for ``purpose``."""
    return f"{sid}.{expires_ms}.{sign(secret_key, purpose, f'{sid}.{expires_ms}')}"


def session_id_of(secret_key: str, purpose: str, cookie: str) -> str | None:
    """The session id of a well-formed, correctly signed (for ``purpose``), unexpired cookie."""
    sid, _, rest = cookie.partition(".")
    expires, _, mac = rest.partition(".")
    if not sid or not expires.isdigit() or len(cookie) > 200:
        return None
    if not hmac.compare_digest(mac.encode(), sign(secret_key, purpose, f"{sid}.{int(expires)}").encode()):
        return None
    if int(expires) <= int(time.time() * 1000):
        return None
    return sid


def webhook_secret(secret_key: str, nonce: str) -> bytes:
    """The 32 signing bytes of a webhook endpoint: derived from its nonce, never stored (like store secrets)."""
    return hmac.new(derive_key(secret_key, "webhook-secret"), nonce.encode("utf-8"), hashlib.sha256).digest()


# --- platform webhook secrets: kept encrypted, since checking a webhook needs the secret itself -----

_SEALED_PREFIX = "v1."


def seal_webhook_secret(secret_key: str, store_id: str, secret: str) -> str:
    """``secret`` encrypted at rest: AES-256-GCM under a sub-key of the server secret.

    The store id is the associated data, so a sealed secret copied onto another store's
    row does not open. A fresh 96-bit nonce per seal (NIST SP 800-38D's random nonces:
    a store's secret is sealed a handful of times, far below the 2^32 bound).
    """
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = secrets.token_bytes(12)
    sealed = AESGCM(derive_key(secret_key, "webhook-secret")).encrypt(nonce, secret.encode(), store_id.encode())
    return _SEALED_PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode("ascii")


def open_webhook_secret(secret_key: str, store_id: str, sealed: str) -> str | None:
    """The secret ``seal_webhook_secret`` sealed for this store; None for an empty, garbled or foreign value."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if not sealed.startswith(_SEALED_PREFIX):
        return None
    try:
        raw = base64.urlsafe_b64decode(sealed[len(_SEALED_PREFIX):])
        opened = AESGCM(derive_key(secret_key, "webhook-secret")).decrypt(raw[:12], raw[12:], store_id.encode())
        return opened.decode()
    except (ValueError, InvalidTag, UnicodeDecodeError):
        return None


# --- customers: only keyed hashes of their ids and emails are kept ---------------------------------


def customer_hash(secret_key: str, brand_id: str, customer_id: str) -> str:
    """A brand's customer as the tables keep it: HMAC-SHA256 under a server sub-key, 32 hex digits.

    Keyed and per brand: the hash cannot be reversed by trying ids, nor linked across brands.
    """
    message = brand_id.encode() + b"\x00" + customer_id.encode()
    return hmac.new(derive_key(secret_key, "customer"), message, hashlib.sha256).hexdigest()[:32]


def normal_email(email: str) -> str:
    """An email as it is hashed: trimmed and lower-cased."""
    return email.strip().lower()


def email_hash(secret_key: str, brand_id: str, email: str) -> str:
    message = brand_id.encode() + b"\x00" + normal_email(email).encode()
    return hmac.new(derive_key(secret_key, "email"), message, hashlib.sha256).hexdigest()[:32]
