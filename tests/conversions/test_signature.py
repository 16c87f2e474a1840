from __future__ import annotations

import hashlib
import hmac

import pytest

from tracker.conversions import signature
from tracker.conversions.signature import SignatureError

SECRET = "whsec_test_0123456789abcdef"
BODY = b'{"order_id":"A-1","amount":"49.90","currency":"USD"}'
NOW = 1_764_000_000


def test_compute_is_hmac_sha256_of_timestamp_dot_body() -> None:
    expected = hmac.new(SECRET.encode(), b"1764000000." + BODY, hashlib.sha256).hexdigest()
    assert signature.compute(SECRET, NOW, BODY) == expected
    assert signature.sign(SECRET, NOW, BODY) == f"t={NOW},v1={expected}"


def test_valid_signature_passes() -> None:
    signature.verify(signature.sign(SECRET, NOW, BODY), SECRET, BODY, now=NOW)


@pytest.mark.parametrize("skew", [-300, -1, 0, 1, 300])
def test_timestamp_inside_tolerance_passes(skew: int) -> None:
    signature.verify(signature.sign(SECRET, NOW + skew, BODY), SECRET, BODY, now=NOW)


def test_rotated_secret_any_v1_may_match() -> None:
    good = signature.compute(SECRET, NOW, BODY)
    header = f"t={NOW},v1={'0' * 64},v1={good}"
    signature.verify(header, SECRET, BODY, now=NOW)


def test_uppercase_hex_and_spaces_accepted() -> None:
    good = signature.compute(SECRET, NOW, BODY).upper()
    signature.verify(f"t={NOW}, v1={good}", SECRET, BODY, now=NOW)


def test_unknown_schemes_ignored() -> None:
    good = signature.compute(SECRET, NOW, BODY)
    signature.verify(f"t={NOW},v0=abc,v1={good}", SECRET, BODY, now=NOW)


def _tamper(body: bytes) -> bytes:
    return body.replace(b"49.90", b"49.91")


@pytest.mark.parametrize(
    ("header", "secret", "body", "now", "message"),
    [
        # wrong secret
        (signature.sign("another-secret", NOW, BODY), SECRET, BODY, NOW, "does not match"),
        # tampered body
        (signature.sign(SECRET, NOW, BODY), SECRET, _tamper(BODY), NOW, "does not match"),
        # whitespace added to the body (raw bytes are signed, not the JSON value)
        (signature.sign(SECRET, NOW, BODY), SECRET, BODY + b" ", NOW, "does not match"),
        # old timestamp
        (signature.sign(SECRET, NOW - 301, BODY), SECRET, BODY, NOW, "more than 300 seconds"),
        (signature.sign(SECRET, NOW - 86_400, BODY), SECRET, BODY, NOW, "more than 300 seconds"),
        # future timestamp
        (signature.sign(SECRET, NOW + 301, BODY), SECRET, BODY, NOW, "more than 300 seconds"),
        # timestamp changed after signing
        (
            signature.sign(SECRET, NOW, BODY).replace(f"t={NOW}", f"t={NOW + 1}"),
            SECRET,
            BODY,
            NOW,
            "does not match",
        ),
        # missing or empty header
        (None, SECRET, BODY, NOW, "missing"),
        ("", SECRET, BODY, NOW, "missing"),
        ("   ", SECRET, BODY, NOW, "missing"),
        # malformed headers
        ("garbage", SECRET, BODY, NOW, "must read"),
        (f"v1={signature.compute(SECRET, NOW, BODY)}", SECRET, BODY, NOW, "no timestamp"),
        (f"t={NOW}", SECRET, BODY, NOW, "no v1"),
        (f"t=abc,v1={'0' * 64}", SECRET, BODY, NOW, "unix time"),
        (f"t=-5,v1={'0' * 64}", SECRET, BODY, NOW, "unix time"),
        (f"t=1e9,v1={'0' * 64}", SECRET, BODY, NOW, "unix time"),
        (f"t={NOW},t={NOW},v1={'0' * 64}", SECRET, BODY, NOW, "unix time"),
        (f"t={NOW},v1=", SECRET, BODY, NOW, "does not match"),
        (f"t={NOW},v1=zz", SECRET, BODY, NOW, "does not match"),
        (f"t={NOW},v1=\u00e9\u00e9", SECRET, BODY, NOW, "does not match"),
        ("t=" + "1" * 2000, SECRET, BODY, NOW, "too long"),
    ],
)
def test_bad_signatures_rejected(
    header: str | None, secret: str, body: bytes, now: int, message: str
) -> None:
    with pytest.raises(SignatureError, match=message):
        signature.verify(header, secret, body, now=now)


def test_signature_error_is_a_value_error() -> None:
    assert issubclass(SignatureError, ValueError)
