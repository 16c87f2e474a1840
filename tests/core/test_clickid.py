"""Click ids: round trip, uniqueness, forgery and garbling detection, stable format."""

from __future__ import annotations

import base64
import hashlib

import pytest

from tracker.core.clickid import _MAC_LEN, VERSION, ClickIds, ClickRef, _varint, derive_key

SECRET = "test-secret-key-0123456789abcdefghijklmnop"


@pytest.mark.parametrize(
    ("link_id", "ts_ms"),
    [(1, 0), (1, 1_700_000_000_000), (127, 1), (128, 2**48 - 1), (2**32, 1_800_000_000_123), (2**63 - 1, 5)],
)
def test_round_trip(link_id: int, ts_ms: int) -> None:
    ids = ClickIds(SECRET)
    click_id = ids.mint(link_id, ts_ms)
    assert ids.parse(click_id) == ClickRef(link_id=link_id, ts_ms=ts_ms)
    assert click_id.isascii() and "=" not in click_id and "+" not in click_id and "/" not in click_id


def test_format_is_the_documented_one() -> None:
    """An id minted by the optimised code is exactly base64url(version|varint|ts|random|mac)."""
    ids = ClickIds(SECRET)
    click_id = ids.mint(300, 1_700_000_000_123)
    raw = base64.urlsafe_b64decode(click_id + "=" * (-len(click_id) % 4))
    payload, mac = raw[:-_MAC_LEN], raw[-_MAC_LEN:]
    assert payload[:3] == bytes((VERSION,)) + _varint(300)
    assert int.from_bytes(payload[3:9], "big") == 1_700_000_000_123
    assert len(payload) == 3 + 6 + 5
    key = derive_key(SECRET, "click-id")
    assert mac == hashlib.blake2b(payload, key=key, digest_size=_MAC_LEN).digest()


def test_ids_are_unique_across_many_clicks_in_one_millisecond() -> None:
    ids = ClickIds(SECRET)
    minted = {ids.mint(7, 1_700_000_000_000) for _ in range(50_000)}  # crosses random-block refills
    assert len(minted) == 50_000


def test_another_secret_does_not_accept_the_id() -> None:
    click_id = ClickIds(SECRET).mint(9, 1_700_000_000_000)
    assert ClickIds("another-secret-key-0123456789abcdefghijkl").parse(click_id) is None


def _flip(s: str, i: int) -> str:
    c = s[i]
    return s[:i] + ("A" if c != "A" else "B") + s[i + 1 :]


@pytest.mark.parametrize(
    "mangle",
    [
        lambda s: s[:-1],
        lambda s: s + "A",
        lambda s: _flip(s, 0),
        lambda s: _flip(s, 5),
        lambda s: _flip(s, len(s) - 1),
        lambda s: s + "==",
        lambda s: s.replace("-", "+").replace("_", "/") if ("-" in s or "_" in s) else s + "!",
        lambda s: "",
        lambda s: "x" * 100,
        lambda s: "ä" * 20,
        lambda s: s.upper() if s.upper() != s else s + "a",
    ],
)
def test_garbled_or_forged_ids_are_rejected(mangle: object) -> None:
    ids = ClickIds(SECRET)
    click_id = ids.mint(42, 1_700_000_000_000)
    assert callable(mangle)
    bad = mangle(click_id)
    assert bad != click_id
    assert ids.parse(bad) is None


@pytest.mark.parametrize("value", [None, 12, b"AQEB", ["x"], 1.5])
def test_non_strings_are_rejected(value: object) -> None:
    assert ClickIds(SECRET).parse(value) is None
