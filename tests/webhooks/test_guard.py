"""Where webhooks may go: public addresses only, checked at save and at send time."""

from __future__ import annotations

import asyncio

import pytest

from tracker.webhooks import guard


def resolver(*answers: list[str]) -> guard.Resolver:
    """A resolver that gives each answer in turn (the second call may differ: DNS rebinding)."""
    calls = iter(answers)

    async def resolve(host: str, port: int) -> list[str]:
        return next(calls)

    return resolve


def check(url: str, *answers: list[str], allow_private: bool = False) -> guard.Target:
    return asyncio.run(guard.check(url, allow_private=allow_private, resolve=resolver(*answers)))


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "127.8.9.10", "::1", "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1", "fc00::1",
     "fd12:3456::1", "169.254.169.254", "fe80::1", "0.0.0.0", "100.64.0.1", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
     "224.0.0.1", "255.255.255.255", "::"],
)
def test_private_addresses_are_refused(address: str) -> None:
    with pytest.raises(guard.Refused, match="public addresses only"):
        check("https://hooks.example/x", [address])
    # ... unless the setting allows them.
    assert check("https://hooks.example/x", [address], allow_private=True).address == address


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111", "172.32.0.1"])
def test_public_addresses_pass(address: str) -> None:
    target = check("https://hooks.example:8443/in?x=1", [address])
    assert target.address == address and target.host == "hooks.example" and target.port == 8443
    assert target.host_header == "hooks.example:8443"
    ip = f"[{address}]" if ":" in address else address
    assert target.pinned_url == f"https://{ip}:8443/in?x=1"


def test_one_private_answer_among_public_ones_is_enough_to_refuse() -> None:
    with pytest.raises(guard.Refused):
        check("https://hooks.example/", ["93.184.215.14", "10.0.0.5"])


def test_rebinding_is_caught_at_send_time() -> None:
    """Public when saved, private a moment later: the second check (before the send) refuses it."""
    resolve = resolver(["93.184.215.14"], ["127.0.0.1"])
    assert asyncio.run(guard.check("https://hooks.example/", allow_private=False, resolve=resolve))
    with pytest.raises(guard.Refused, match=r"127\.0\.0\.1"):
        asyncio.run(guard.check("https://hooks.example/", allow_private=False, resolve=resolve))


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://hooks.example/", "absolute http(s) URL"),
        ("/relative", "absolute http(s) URL"),
        ("https://user:pw@hooks.example/", "credentials"),
        ("https://hooks.example/#frag", "fragment"),
        ("https://hooks.example:99999/", "not a valid URL"),
        ("https://hooks.example/a b", "spaces"),
        ("https://hooks.example/" + "a" * 2000, "limit is 2000"),
    ],
)
def test_url_shapes(url: str, problem: str) -> None:
    found = guard.url_problem(url)
    assert found is not None and problem in found


def test_a_name_that_does_not_resolve_is_refused() -> None:
    async def fail(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    with pytest.raises(guard.Refused, match="does not resolve"):
        asyncio.run(guard.check("https://nowhere.invalid/", allow_private=False, resolve=fail))
