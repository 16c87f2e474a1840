"""Short codes: hashids round trip, canonical decoding, vanity rules."""

from __future__ import annotations

import pytest
from hashids import Hashids

from tracker.core.codes import MIN_LENGTH, RESERVED, Codes, is_redirect_path, is_reserved, salt_for

CODES = Codes("test-salt")


@pytest.mark.parametrize("link_id", [1, 2, 9, 10, 61, 62, 1000, 123_456, 10**9, 2**40, 2**63 - 1])
def test_round_trip(link_id: int) -> None:
    code = CODES.encode(link_id)
    assert len(code) >= MIN_LENGTH
    assert code.isalnum() and code.isascii()
    assert CODES.decode(code) == link_id


def test_codes_are_distinct_and_unordered_to_the_eye() -> None:
    codes = [CODES.encode(i) for i in range(1, 5001)]
    assert len(set(codes)) == len(codes)
    assert codes != sorted(codes)


@pytest.mark.parametrize("bad", [0, -1, 2**63, True, 1.0, "1", None])
def test_encode_refuses_non_ids(bad: object) -> None:
    with pytest.raises(ValueError, match="Link id"):
        CODES.encode(bad)  # type: ignore[arg-type]


_OTHER = Hashids(salt="test-salt", min_length=MIN_LENGTH)


@pytest.mark.parametrize(
    "code",
    [
        None,
        12345678,
        b"Y3kK3M",
        "",
        "Y3kK3",  # shorter than the minimum length
        "Y3kK3M ",
        " Y3kK3M",
        "Y3kK3M\n",
        "Y3k-3M",
        "Y3k_3M",
        "Y3kK3Ⅿ",  # noqa: RUF001 - a look-alike letter outside the alphabet
        "Y3kK3M%00",
        "x" * 21,
        "abcdef",
        "zzzzzz",
        _OTHER.encode(1, 2),  # two numbers
        _OTHER.encode(0),  # id 0 is never handed out
        Hashids(salt="other-salt", min_length=MIN_LENGTH).encode(12345),
        Hashids(salt="test-salt", min_length=10).encode(5),  # padded differently: not canonical
    ],
)
def test_decode_refuses_non_canonical(code: object) -> None:
    assert CODES.decode(code) is None


def test_decode_is_case_sensitive() -> None:
    code = CODES.encode(777)
    assert CODES.decode(code.swapcase()) != 777
    assert CODES.decode(code.lower()) != 777 or code == code.lower()


def test_salt_changes_codes() -> None:
    assert Codes("a").encode(42) != Codes("b").encode(42)
    assert Codes("a").decode(Codes("b").encode(42)) != 42


def test_salt_for() -> None:
    assert salt_for("explicit", "secret" * 8) == "explicit"
    derived = salt_for(None, "secret" * 8)
    assert derived == salt_for("", "secret" * 8) and len(derived) == 32
    assert derived != salt_for(None, "other" * 8)
    with pytest.raises(ValueError, match="TRACKER_HASHIDS_SALT"):
        salt_for(None, None)


@pytest.mark.parametrize(
    ("code", "ok"),
    [
        ("summer-sale", True),
        ("ann_2026", True),
        ("abc", True),
        ("A" * 64, True),
        ("ab", False),
        ("A" * 65, False),
        ("-abc", False),
        ("_abc", False),
        ("has space", False),
        ("a/b/c", False),
        ("../x", False),
        ("ünï", False),
        ("api", False),
        ("API", False),
        ("healthz", False),
        ("readyz", False),
        ("metrics", False),
        ("openapi.json", False),
        ("dashboard", False),
        ("postback", False),
        ("static", False),
        (CODES.encode(1), False),
        (CODES.encode(99_999_999), False),
    ],
)
def test_vanity_rules(code: str, ok: bool) -> None:
    problem = CODES.vanity_problem(code)
    assert (problem is None) == ok, problem
    if problem:
        assert repr(code) in problem


def test_reserved_paths() -> None:
    for word in ("api", "healthz", "readyz", "metrics", "openapi.json", "dashboard", "postback", "static"):
        assert word in RESERVED and is_reserved(word.upper())
    assert not is_reserved("apis")


@pytest.mark.parametrize(
    ("path", "redirect"),
    [
        ("/abc123", True),
        ("/Zz9", True),
        ("/healthz", False),
        ("/readyz", False),
        ("/metrics", False),
        ("/openapi.json", False),
        ("/dashboard", False),
        ("/postback", False),
        ("/api/v1/links", False),
        ("/api/v1/links/abc", False),
        ("/", False),
        ("/dashboard/app.js", False),
        ("/favicon.ico", False),
        ("/abc123/", False),
        ("//", False),
    ],
)
def test_is_redirect_path(path: str, redirect: bool) -> None:
    assert is_redirect_path(path) is redirect
