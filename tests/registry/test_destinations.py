"""Destinations: which URLs a link may send followers to, and the allowed-domain forms."""

from __future__ import annotations

import pytest

from tracker.core.errors import Unprocessable
from tracker.registry.destinations import check_destination, destination_problem, normalize_domain


@pytest.mark.parametrize(
    ("url", "allowed", "ok"),
    [
        ("https://shop.example/a?b=c", [], True),
        ("http://shop.example", [], True),
        ("https://sub.shop.example/", ["shop.example"], True),
        ("https://shop.example/", ["shop.example"], True),
        ("https://evilshop.example/", ["shop.example"], False),
        ("https://shop.example.evil.test/", ["shop.example"], False),
        ("ftp://shop.example/", [], False),
        ("javascript:alert(1)", [], False),
        ("//shop.example/", [], False),
        ("/relative", [], False),
        ("https://user:pw@shop.example/", [], False),
        ("https://user@shop.example/", [], False),
        ("https://shop.example/\r\nSet-Cookie: x", [], False),
        ("https://shop.example/\n", [], False),
        ("https://shop.example/a b", [], False),
        ("https://", [], False),
        ("https://shop.example:99999/", [], False),
        ("https://shop.example" + "/a" * 1100, [], False),
        ("https:\\\\shop.example", [], False),
        ("https://bücher.example/x", ["xn--bcher-kva.example"], True),
        ("https://bücher.example/x", ["other.example"], False),
    ],
)
def test_check_destination(url: str, allowed: list[str], ok: bool) -> None:
    if ok:
        assert check_destination(url, allowed) == url
    else:
        with pytest.raises(Unprocessable):
            check_destination(url, allowed)


@pytest.mark.parametrize(
    ("url", "allowed", "code"),
    [
        ("https://shop.example/\ud800", [], "invalid_destination"),
        ("https://shop.example/\r\n", [], "invalid_destination"),
        ("https://evil.test/", ["shop.example"], "domain_not_allowed"),
        ("https://bücher.example/x", ["other.example"], "domain_not_allowed"),
    ],
)
def test_each_problem_has_its_code(url: str, allowed: list[str], code: str) -> None:
    problem = destination_problem(url, allowed)
    assert problem is not None and problem.code == code
    with pytest.raises(Unprocessable) as err:
        check_destination(url, allowed)
    assert err.value.code == code and err.value.message == f"destination_url {problem.problem}."


def test_a_destination_must_be_text() -> None:
    with pytest.raises(Unprocessable) as err:
        check_destination(12)
    assert err.value.code == "invalid_field"


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("shop.example", "shop.example"),
        ("Shop.Example.", "shop.example"),
        ("*.other.example", "other.example"),
        ("  sub.shop.example ", "sub.shop.example"),
        ("Bücher.example", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("a-b.example", "a-b.example"),
        ("localhost", None),
        ("not a domain", None),
        ("https://shop.example/", None),
        ("-bad.example", None),
        ("bad-.example", None),
        ("a..example", None),
        ("a" * 64 + ".example", None),
        (".".join(["a" * 60] * 5), None),
        ("", None),
    ],
)
def test_normalize_domain(raw: str, stored: str | None) -> None:
    assert normalize_domain(raw) == stored
