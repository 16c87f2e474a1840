"""Credentials: random keys and tokens kept as hashes, store secrets derived from nonces."""

from __future__ import annotations

import hashlib

from tracker.core.credentials import (
    API_KEY_PREFIX,
    POSTBACK_TOKEN_PREFIX,
    derive_key,
    looks_like_api_key,
    new_api_key,
    new_postback_token,
    store_secret,
    token_hash,
)

SECRET = "test-secret-key-0123456789abcdefghijklmnop"


def test_api_keys_are_random_and_hashed_with_sha256() -> None:
    a, b = new_api_key(), new_api_key()
    assert a != b and a.startswith(API_KEY_PREFIX) and len(a) == len(API_KEY_PREFIX) + 43
    assert looks_like_api_key(a) and not looks_like_api_key("trk_short") and not looks_like_api_key(5)
    assert token_hash(a) == hashlib.sha256(a.encode()).hexdigest()


def test_postback_tokens() -> None:
    a, b = new_postback_token(), new_postback_token()
    assert a != b and a.startswith(POSTBACK_TOKEN_PREFIX) and len(a) == len(POSTBACK_TOKEN_PREFIX) + 32


def test_store_secrets_are_derived_per_nonce_and_server_secret() -> None:
    secret = store_secret(SECRET, "nonce-1")
    assert secret == store_secret(SECRET, "nonce-1") and len(secret) == 64
    assert secret != store_secret(SECRET, "nonce-2")
    assert secret != store_secret(SECRET + "x", "nonce-1")


def test_sub_keys_differ_by_purpose() -> None:
    assert derive_key(SECRET, "click-id") != derive_key(SECRET, "store-secret")
    assert len(derive_key(SECRET, "click-id")) == 32
