"""Where webhooks may go: public addresses only, unless ``TRACKER_WEBHOOKS_ALLOW_PRIVATE=1``.

A webhook URL is chosen by a brand, so without a guard the server could be made to
post into its own network (Redis, ClickHouse, a cloud metadata service at
169.254.169.254). The host is resolved and every address it resolves to must be a
public one: loopback (127/8, ::1), private (10/8, 172.16/12, 192.168/16, fc00::/7),
link-local (169.254/16, fe80::/10), CGNAT, multicast, reserved and unspecified
addresses are refused, IPv4-mapped IPv6 addresses included. The check runs when an
endpoint is saved and again before every delivery, and the delivery connects to the
address that was checked (``Target.address``), so a name that resolves elsewhere a
moment later (DNS rebinding) cannot slip through.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

Resolver = Callable[[str, int], Awaitable[list[str]]]
MAX_URL = 2000


class Refused(Exception):
    """The URL may not be called; the message says why in a full sentence."""


@dataclass(frozen=True, slots=True)
class Target:
    url: str
    scheme: str
    host: str
    port: int
    address: str  # the checked address to connect to

    @property
    def pinned_url(self) -> str:
        """The URL with the host replaced by the checked address (Host header and TLS name stay the host)."""
        parts = urlsplit(self.url)
        ip = f"[{self.address}]" if ":" in self.address else self.address
        path = parts.path or "/"
        query = f"?{parts.query}" if parts.query else ""
        return f"{self.scheme}://{ip}:{self.port}{path}{query}"

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


def url_problem(url: str) -> str | None:
    """Why ``url`` is not a webhook URL (shape only), or None."""
    if len(url) > MAX_URL:
        return f"is {len(url)} characters long; the limit is {MAX_URL}"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an absolute http(s) URL with a host"
    if parts.username is not None or parts.password is not None:
        return "must not carry credentials (user:password@)"
    if parts.fragment:
        return "must not have a #fragment"
    if port == 0:
        return "has port 0"
    if any(ord(c) < 33 or ord(c) == 127 for c in url):
        return "contains spaces or control characters"
    return None


def public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def check(url: str, *, allow_private: bool, resolve: Resolver = system_resolver) -> Target:
    """The URL's target with a checked address; ``Refused`` says why not."""
    problem = url_problem(url)
    if problem is not None:
        raise Refused(f"The URL {problem}.")
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        literal = False
    else:
        literal = True
    try:
        addresses = [host] if literal else await resolve(host, port)
    except (OSError, UnicodeError) as exc:
        raise Refused(f"The host {host!r} does not resolve ({exc}).") from None
    if not addresses:
        raise Refused(f"The host {host!r} does not resolve.")
    if not allow_private:
        private = [a for a in addresses if not public(a)]
        if private:
            raise Refused(
                f"The host {host!r} resolves to {private[0]}, a loopback, private or link-local address; "
                "webhooks go to public addresses only (TRACKER_WEBHOOKS_ALLOW_PRIVATE=1 allows others)."
            )
    return Target(url, parts.scheme, host, port, addresses[0])
