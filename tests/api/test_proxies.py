"""The client address behind trusted proxies: the rightmost X-Forwarded-For hop that is not one of ours."""

from __future__ import annotations

import ipaddress
import random

import pytest

from tracker.api.proxies import TrustedProxies, client_ip
from tracker.settings import Settings

TRUSTED = TrustedProxies(
    [
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("2001:db8:ffff::/48"),
    ]
)


@pytest.mark.parametrize(
    ("peer", "xff", "expected"),
    [
        # No header, or a peer we do not trust: the peer is the client, whatever it claims.
        ("203.0.113.9", None, "203.0.113.9"),
        ("203.0.113.9", "198.51.100.1", "203.0.113.9"),
        ("11.0.0.1", "198.51.100.1", "11.0.0.1"),
        ("testclient", "198.51.100.1", "testclient"),  # a peer that is no IP is never trusted
        # One trusted proxy that appends its peer (nginx $proxy_add_x_forwarded_for).
        ("127.0.0.1", "198.51.100.1", "198.51.100.1"),
        ("127.0.0.1", "198.51.100.1, 10.0.0.2", "198.51.100.1"),
        ("10.1.2.3", " 198.51.100.7 ,10.0.0.2", "198.51.100.7"),
        # The client wrote the first entries itself: they are not believed.
        ("127.0.0.1", "6.6.6.6, 198.51.100.1", "198.51.100.1"),
        ("127.0.0.1", "10.9.9.9, 198.51.100.1", "198.51.100.1"),  # even one that names a trusted proxy
        ("127.0.0.1", "unknown, 198.51.100.1", "198.51.100.1"),
        # A chain through several trusted proxies (CDN -> load balancer -> nginx).
        ("10.0.0.3", "6.6.6.6, 198.51.100.1, 10.0.0.1, 10.0.0.2", "198.51.100.1"),
        ("127.0.0.1", "198.51.100.1,10.0.0.1,10.20.30.40,127.0.0.1", "198.51.100.1"),
        # An untrusted hop in the middle is where trust ends: it is the client we can vouch for.
        ("127.0.0.1", "198.51.100.1, 203.0.113.50, 10.0.0.1", "203.0.113.50"),
        # Every hop trusted (an internal caller behind our own proxies): the leftmost.
        ("127.0.0.1", "10.0.0.5, 10.0.0.6", "10.0.0.5"),
        # Ports, IPv6, brackets, case.
        ("127.0.0.1", "198.51.100.1:5555", "198.51.100.1"),
        ("127.0.0.1", "198.51.100.1:5555, 10.0.0.2:443", "198.51.100.1"),
        ("127.0.0.1", "[2001:db8::1]:443", "2001:db8::1"),
        ("127.0.0.1", "[2001:db8::1]", "2001:db8::1"),
        ("127.0.0.1", "2001:db8::1", "2001:db8::1"),
        ("127.0.0.1", "2001:DB8:0::1", "2001:db8::1"),
        ("2001:db8:ffff::1", "198.51.100.1, 2001:db8:ffff::2", "198.51.100.1"),
        ("2001:db8:ffff::1", "6.6.6.6, 2001:db8::1, [2001:db8:ffff::9]:80", "2001:db8::1"),
        # A dual-stack listener reports IPv4 peers as mapped IPv6 addresses.
        ("::ffff:127.0.0.1", "198.51.100.1", "198.51.100.1"),
        ("127.0.0.1", "::ffff:198.51.100.1, ::ffff:10.0.0.1", "198.51.100.1"),
        # Garbage where a trusted proxy should have written the client: the peer stands in.
        ("127.0.0.1", "not-an-ip", "127.0.0.1"),
        ("127.0.0.1", "", "127.0.0.1"),
        ("127.0.0.1", ",", "127.0.0.1"),
        ("127.0.0.1", "198.51.100.1, unknown", "127.0.0.1"),
        ("127.0.0.1", "198.51.100.1, _hidden, 10.0.0.1", "127.0.0.1"),
        ("127.0.0.1", "198.51.100.1:port", "127.0.0.1"),
        ("127.0.0.1", "[2001:db8::1", "127.0.0.1"),
        ("127.0.0.1", "1.2.3.4.5", "127.0.0.1"),
        ("127.0.0.1", "198.51.100.1\x00", "127.0.0.1"),
    ],
)
def test_client_ip(peer: str, xff: str | None, expected: str) -> None:
    assert client_ip(peer, xff, TRUSTED) == expected
    assert client_ip(peer, xff, TRUSTED) == expected  # the second answer comes from the caches


def test_trusted_proxies_from_settings_defaults() -> None:
    trusted = TrustedProxies(Settings().trusted_proxies)
    assert "127.0.0.1" in trusted
    assert "127.0.0.2" not in trusted
    assert "::1" not in trusted


def test_the_caches_stay_bounded() -> None:
    trusted = TrustedProxies([ipaddress.ip_network("127.0.0.1/32")])
    for i in range(30_000):
        client_ip("127.0.0.1", f"198.51.{i // 256 % 256}.{i % 256}, garbage-{i}", trusted)
    assert trusted.cache_size() <= 2 * TrustedProxies.CACHE_LIMIT


def _hop_by_ipaddress(trusted: TrustedProxies, entry: str) -> tuple[str | None, bool]:
    """One hop judged by ``ipaddress`` alone: what the dotted-quad shortcut must agree with."""
    try:
        address = ipaddress.ip_address(entry.strip())
    except ValueError:
        return None, False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address), any(address in net for net in trusted._networks)


def test_the_dotted_quad_shortcut_agrees_with_ipaddress() -> None:
    """Rotating forged addresses miss the cache on every request, so IPv4 hops are read with
    ``inet_pton``; it must accept, spell and trust exactly what ``ipaddress`` does."""
    rng = random.Random(13)
    entries = ["0.0.0.0", "255.255.255.255", "10.0.0.0", "9.255.255.255", "11.0.0.0", "127.0.0.1", "127.0.0.2",
               "01.2.3.4", "1.2.3.04", "1.2.3", "1.2.3.4.5", "256.1.1.1", "1.2.3.-4", "1.2.3.4 ", "0x7f.0.0.1",
               "1..2.3", "", "1.2.3.4/8", "\u0661.\u0662.\u0663.\u0664", "1.2.3.4\x00"]
    entries += [".".join(str(rng.randrange(0, 300)) for _ in range(4)) for _ in range(2_000)]
    entries += [f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}" for _ in range(500)]
    for entry in entries:
        fresh = TrustedProxies(TRUSTED._networks)  # no cache: every entry judged anew
        if entry.strip() and "\x00" not in entry:
            assert fresh.hop(entry) == _hop_by_ipaddress(TRUSTED, entry), entry
        else:
            assert fresh.hop(entry) == (None, False), entry
