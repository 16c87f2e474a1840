"""The client address behind trusted proxies, shared by every route that needs it.

Only a peer listed in ``TRACKER_TRUSTED_PROXIES`` may speak for the client
through ``X-Forwarded-For``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from tracker.settings import IPNetwork


class TrustedProxies:
    """Decides whether a peer is a trusted proxy; answers are cached per peer address."""

    def __init__(self, networks: Iterable[IPNetwork]) -> None:
        self._networks = tuple(networks)
        self._cache: dict[str, bool] = {}

    def __contains__(self, peer: str) -> bool:
        hit = self._cache.get(peer)
        if hit is not None:
            return hit
        try:
            addr = ipaddress.ip_address(peer)
        except ValueError:
            trusted = False
        else:
            trusted = any(addr in net for net in self._networks)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[peer] = trusted
        return trusted


def client_ip(peer: str, forwarded_for: str | None, trusted: TrustedProxies) -> str:
    """The peer address, or the first X-Forwarded-For address when the peer is a trusted proxy.

    A malformed forwarded address is ignored (the peer stands in for it): a proxy we
    trust would not send one, so it was injected by the client.
    """
    if forwarded_for and peer in trusted:
        first = forwarded_for.split(",", 1)[0].strip()
        if first.startswith("[") and "]" in first:  # [v6]:port
            first = first[1 : first.index("]")]
        elif first.count(":") == 1:  # v4:port
            first = first.split(":", 1)[0]
        try:
            return str(ipaddress.ip_address(first))
        except ValueError:
            return peer
    return peer
