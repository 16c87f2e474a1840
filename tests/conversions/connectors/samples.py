"""The platform payload fixtures under tests/conversions/fixtures/<platform>/."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def raw(platform: str, name: str) -> bytes:
    return (FIXTURES / platform / name).read_bytes()


def data(platform: str, name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(raw(platform, name))
    return loaded


def b64_hmac(secret: str, body: bytes) -> str:
    """How Shopify (X-Shopify-Hmac-Sha256) and WooCommerce (X-WC-Webhook-Signature,
    ``base64_encode(hash_hmac('sha256', $payload, $secret, true))``) sign a webhook body."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def body(payload: dict[str, Any]) -> bytes:
    """A payload as a platform sends it (compact JSON, UTF-8)."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
